"""Account ledger (frozen values) and the pure state transitions of fills, transfers, marks.

The ledger holds what is stored: wallet balances per settle asset and positions per
symbol + positionSide. Everything derived (notional, margins, uPnL, liquidation price,
risk state) comes from :func:`handlers.core.valuation.value`. Transitions return a new
ledger or raise :class:`Rejected` with a state-dependent reason code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal, localcontext
from operator import attrgetter
from typing import Literal

from handlers.core.catalog import Instrument
from handlers.core.contracts import Fill, Transfer
from handlers.core.decimals import (
    MONEY,
    m_abs,
    m_add,
    m_div,
    m_minus,
    m_mul,
    m_sub,
    stored,
)

__all__ = [
    "RISK_ORDER",
    "Ledger",
    "Position",
    "Rejected",
    "RiskState",
    "Wallet",
    "apply_fill",
    "apply_mark",
    "apply_transfer",
    "stored",
]

RiskState = Literal["NORMAL", "MARGIN_CALL", "LIQUIDATION"]
RISK_ORDER: Mapping[str, int] = {"NORMAL": 0, "MARGIN_CALL": 1, "LIQUIDATION": 2}
ZERO = Decimal(0)


class Rejected(Exception):
    """A transition refused by the account's state; ``code`` is the contract reason code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Position:
    """One symbol + positionSide of an account, open or closed (kept for realized PnL)."""

    symbol: str
    position_side: str
    margin_mode: str
    quantity: Decimal
    entry_price: Decimal
    leverage: int
    isolated_margin: Decimal
    realized_pnl: Decimal
    last_fill_price: Decimal
    mark_price: Decimal | None
    mark_time: datetime | None
    risk_state: RiskState
    updated_at: datetime

    def __hash__(self) -> int:
        # Consistent with the generated __eq__ (equal positions agree on these fields), and
        # fewer objects to read than all thirteen fields: the valuation memo hashes positions.
        return hash(
            (self.symbol, self.position_side, self.quantity, self.mark_price, self.updated_at)
        )

    @property
    def key(self) -> tuple[str, str]:
        return (self.symbol, self.position_side)

    @property
    def is_open(self) -> bool:
        return self.quantity != 0

    @property
    def effective_mark(self) -> Decimal:
        """The stored mark, or the last fill price while the symbol has no mark."""
        return self.mark_price if self.mark_price is not None else self.last_fill_price


@dataclass(frozen=True, slots=True)
class Wallet:
    """One settle asset's wallet: its balance and the cross wallet's last risk state."""

    asset: str
    balance: Decimal
    risk_state: RiskState = "NORMAL"


@dataclass(frozen=True)
class Ledger:
    """The financial state of one account."""

    wallets: Mapping[str, Wallet] = field(default_factory=dict)
    positions: tuple[Position, ...] = ()

    def position(self, symbol: str, side: str) -> Position | None:
        for p in self.positions:
            if p.symbol == symbol and p.position_side == side:
                return p
        return None

    def wallet(self, asset: str) -> Wallet:
        return self.wallets.get(asset) or Wallet(asset, ZERO)

    def with_wallet(self, wallet: Wallet) -> Ledger:
        return Ledger({**self.wallets, wallet.asset: wallet}, self.positions)

    def with_position(self, position: Position) -> Ledger:
        return Ledger(self.wallets, _placed(self.positions, position))


_by_key = attrgetter("symbol", "position_side")


def _placed(positions: tuple[Position, ...], position: Position) -> tuple[Position, ...]:
    """``positions`` with ``position`` in place of the one of its key, ordered by key."""
    symbol, side = position.symbol, position.position_side
    rest = [p for p in positions if p.symbol != symbol or p.position_side != side]
    rest.append(position)
    rest.sort(key=_by_key)
    return tuple(rest)


def _signed(fill: Fill) -> Decimal:
    quantity: Decimal = fill.quantity
    return quantity if fill.side == "BUY" else m_minus(quantity)


def _check_mode(ledger: Ledger, fill: Fill) -> None:
    hedge = fill.positionSide != "BOTH"
    for p in ledger.positions:
        if p.symbol != fill.symbol or not p.is_open:
            continue
        if (p.position_side != "BOTH") != hedge:
            raise Rejected(
                "POSITION_SIDE_MISMATCH",
                f"{fill.symbol} is open in {'hedge' if not hedge else 'one-way'} mode",
            )
        if p.margin_mode != fill.marginMode:
            raise Rejected(
                "POSITION_SIDE_MISMATCH", f"{fill.symbol} is open in {p.margin_mode} margin mode"
            )


def _entry_after_increase(
    instrument: Instrument, qty: Decimal, entry: Decimal, add: Decimal, price: Decimal
) -> Decimal:
    a, b = m_abs(qty), m_abs(add)
    if a == 0:
        return price
    if instrument.is_inverse:  # harmonic: Σ contracts / Σ (contracts / price)
        return m_div(m_add(a, b), m_add(m_div(a, entry), m_div(b, price)))
    return m_div(m_add(m_mul(a, entry), m_mul(b, price)), m_add(a, b))


def apply_fill(
    ledger: Ledger,
    fill: Fill,
    instrument: Instrument,
    mark: tuple[Decimal, datetime] | None,
) -> Ledger:
    """Apply one execution. ``mark`` is the stored mark of the symbol, if any.

    Raises:
        Rejected: ``POSITION_SIDE_MISMATCH`` (mode or margin mode differs from the open
            position on the symbol) or ``REDUCE_ONLY_VIOLATION`` (a reduce-only fill that
            would open or flip; a hedge-mode close beyond the held quantity).
    """
    symbol = fill.symbol
    side = fill.positionSide
    hedge = side != "BOTH"
    current: Position | None = None
    for p in ledger.positions:  # _check_mode and Ledger.position in one pass
        if p.symbol != symbol:
            continue
        mismatch = (p.position_side != "BOTH") != hedge or p.margin_mode != fill.marginMode
        if mismatch and p.quantity != 0:
            _check_mode(ledger, fill)  # raises, worded as ever
        if current is None and p.position_side == side:
            current = p
    delta = _signed(fill)
    qty = current.quantity if current else ZERO
    entry = current.entry_price if current else fill.price
    iso = current.isolated_margin if current else ZERO
    realized_total = current.realized_pnl if current else ZERO
    leverage = current.leverage if current else fill.leverage
    price = fill.price

    # Every operation in MONEY (m_*): the thread's own context is never used.
    if side == "BOTH":
        increasing = qty == 0 or (qty > 0) == (delta > 0)
        if fill.reduceOnly and (increasing or m_abs(delta) > m_abs(qty)):
            raise Rejected(
                "REDUCE_ONLY_VIOLATION",
                "a reduce-only fill would open or flip the position",
            )
    else:
        increasing = (side == "LONG") == (delta > 0)
        if increasing and fill.reduceOnly:
            raise Rejected("REDUCE_ONLY_VIOLATION", "a reduce-only fill would open a position")
        if not increasing and m_abs(delta) > m_abs(qty):
            raise Rejected(
                "REDUCE_ONLY_VIOLATION",
                f"closing {m_abs(delta)} of {side} {fill.symbol} holding {m_abs(qty)}",
            )

    realized = ZERO
    if increasing:
        entry = _entry_after_increase(instrument, qty, entry, delta, price)
        qty = m_add(qty, delta)
        leverage = fill.leverage
        if fill.marginMode == "ISOLATED":
            iso = m_add(iso, m_div(instrument.notional(delta, price), fill.leverage))
    else:
        closing = min(m_abs(delta), m_abs(qty))
        closing_signed = closing if qty > 0 else m_minus(closing)
        realized = instrument.pnl(closing_signed, entry, price)
        released = m_div(m_mul(iso, closing), m_abs(qty))
        iso = m_sub(iso, released)
        remainder = m_sub(m_abs(delta), closing)
        qty = m_add(qty, m_minus(closing_signed))
        if remainder > 0:  # one-way flip: close, then open the rest at the fill price
            qty = remainder if delta > 0 else m_minus(remainder)
            entry = price
            leverage = fill.leverage
            iso = (
                m_div(instrument.notional(remainder, price), fill.leverage)
                if fill.marginMode == "ISOLATED"
                else ZERO
            )
        if qty == 0:
            iso = ZERO
    wallet = ledger.wallet(instrument.settle_asset)
    balance = m_sub(m_add(wallet.balance, realized), fill.fee)

    mark_price, mark_time = mark if mark is not None else (None, None)
    position = Position(
        fill.symbol,
        side,
        fill.marginMode,
        stored(qty),
        stored(entry) if qty != 0 else ZERO,
        leverage,
        stored(iso),
        stored(m_add(realized_total, realized)),
        price,
        mark_price,
        mark_time,
        current.risk_state if current else "NORMAL",
        fill.executedAt,
    )
    wallets = {
        **ledger.wallets,
        wallet.asset: Wallet(wallet.asset, stored(balance), wallet.risk_state),
    }
    return Ledger(wallets, _placed(ledger.positions, position))


def apply_transfer(ledger: Ledger, transfer: Transfer, available: Decimal | None) -> Ledger:
    """Apply a transfer; a WITHDRAWAL beyond ``available`` (the asset's available balance)
    is refused.

    Raises:
        Rejected: ``INSUFFICIENT_AVAILABLE_BALANCE``.
    """
    wallet = ledger.wallet(transfer.asset)
    if transfer.reason == "WITHDRAWAL":
        have = available if available is not None else wallet.balance
        if -transfer.amount > have:
            raise Rejected(
                "INSUFFICIENT_AVAILABLE_BALANCE",
                f"withdrawal of {-transfer.amount} {transfer.asset} exceeds the available {have}",
            )
    with localcontext(MONEY):
        balance = wallet.balance + transfer.amount
    return ledger.with_wallet(replace(wallet, balance=stored(balance)))


def apply_mark(ledger: Ledger, symbol: str, price: Decimal, when: datetime) -> Ledger:
    """Store a newer mark on every position of ``symbol`` (older marks change nothing)."""
    positions = tuple(
        replace(p, mark_price=price, mark_time=when)
        if p.symbol == symbol and (p.mark_time is None or when > p.mark_time)
        else p
        for p in ledger.positions
    )
    return replace(ledger, positions=positions)
