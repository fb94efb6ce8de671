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
from typing import Literal

from handlers.core.catalog import Instrument
from handlers.core.contracts import Fill, Transfer
from handlers.core.decimals import MONEY, stored

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
            if p.key == (symbol, side):
                return p
        return None

    def wallet(self, asset: str) -> Wallet:
        return self.wallets.get(asset) or Wallet(asset, ZERO)

    def with_wallet(self, wallet: Wallet) -> Ledger:
        return replace(self, wallets={**self.wallets, wallet.asset: wallet})

    def with_position(self, position: Position) -> Ledger:
        rest = tuple(p for p in self.positions if p.key != position.key)
        ordered = tuple(sorted((*rest, position), key=lambda p: p.key))
        return replace(self, positions=ordered)


def _signed(fill: Fill) -> Decimal:
    quantity: Decimal = fill.quantity
    return quantity if fill.side == "BUY" else -quantity


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
    with localcontext(MONEY):
        a, b = abs(qty), abs(add)
        if a == 0:
            return price
        if instrument.inverse:  # harmonic: Σ contracts / Σ (contracts / price)
            return (a + b) / (a / entry + b / price)
        return (a * entry + b * price) / (a + b)


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
    _check_mode(ledger, fill)
    side = fill.positionSide
    delta = _signed(fill)
    current = ledger.position(fill.symbol, side)
    qty = current.quantity if current else ZERO
    entry = current.entry_price if current else fill.price
    iso = current.isolated_margin if current else ZERO
    realized_total = current.realized_pnl if current else ZERO
    leverage = current.leverage if current else fill.leverage

    with localcontext(MONEY):
        if side == "BOTH":
            increasing = qty == 0 or (qty > 0) == (delta > 0)
            if fill.reduceOnly and (increasing or abs(delta) > abs(qty)):
                raise Rejected(
                    "REDUCE_ONLY_VIOLATION",
                    "a reduce-only fill would open or flip the position",
                )
        else:
            increasing = (side == "LONG") == (delta > 0)
            if increasing and fill.reduceOnly:
                raise Rejected("REDUCE_ONLY_VIOLATION", "a reduce-only fill would open a position")
            if not increasing and abs(delta) > abs(qty):
                raise Rejected(
                    "REDUCE_ONLY_VIOLATION",
                    f"closing {abs(delta)} of {side} {fill.symbol} holding {abs(qty)}",
                )

        realized = ZERO
        if increasing:
            entry = _entry_after_increase(instrument, qty, entry, delta, fill.price)
            qty = qty + delta
            leverage = fill.leverage
            if fill.marginMode == "ISOLATED":
                iso = iso + instrument.notional(delta, fill.price) / fill.leverage
        else:
            closing = min(abs(delta), abs(qty))
            closing_signed = closing if qty > 0 else -closing
            realized = instrument.pnl(closing_signed, entry, fill.price)
            released = iso * closing / abs(qty)
            iso = iso - released
            remainder = abs(delta) - closing
            qty = qty + (-closing_signed)
            if remainder > 0:  # one-way flip: close, then open the rest at the fill price
                qty = remainder if delta > 0 else -remainder
                entry = fill.price
                leverage = fill.leverage
                iso = (
                    instrument.notional(remainder, fill.price) / fill.leverage
                    if fill.marginMode == "ISOLATED"
                    else ZERO
                )
            if qty == 0:
                iso = ZERO
        wallet = ledger.wallet(instrument.settle_asset)
        balance = wallet.balance + realized - fill.fee

    mark_price, mark_time = mark if mark is not None else (None, None)
    position = Position(
        symbol=fill.symbol,
        position_side=side,
        margin_mode=fill.marginMode,
        quantity=stored(qty),
        entry_price=stored(entry) if qty != 0 else ZERO,
        leverage=leverage,
        isolated_margin=stored(iso),
        realized_pnl=stored(realized_total + realized),
        last_fill_price=fill.price,
        mark_price=mark_price,
        mark_time=mark_time,
        risk_state=current.risk_state if current else "NORMAL",
        updated_at=fill.executedAt,
    )
    out = ledger.with_position(position).with_wallet(replace(wallet, balance=stored(balance)))
    return out


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
