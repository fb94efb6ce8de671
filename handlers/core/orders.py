"""Pre-trade orders: their terms, the price they are valued at, the quantity that opens
exposure, what opening it costs, and what an open order reserves and releases.

The checks of an ``ORDER`` (reason codes, their order and skipping rules) are in
:mod:`handlers.core.order_checks`; docs/orders.md writes everything out with the worked
examples the tests run. Pure: no clock, no I/O; every operation computes in
:data:`handlers.core.decimals.MONEY`.

- price P: a LIMIT order's own price; a MARKET order's is mark × (1 + slippage) rounded up
  to the tick (BUY), mark × (1 − slippage) rounded down (SELL).
- opening quantity: the part of the order that does not reduce the position it faces,
  after what the account's other open orders already reduce.
- cost of opening q at P (Binance "cost required to open a position"), d = +1 BUY, −1 SELL:
  linear  q·cs·P / leverage + q·cs·|min(0, d·(mark − P))|;
  inverse q·cs / P / leverage + q·cs·|min(0, d·(1/P − 1/mark))|.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Literal

from handlers.core.catalog import Catalog, Instrument
from handlers.core.decimals import m_abs, m_add, m_div, m_minus, m_mul, m_sub, stored
from handlers.core.state import Ledger

__all__ = [
    "Cost",
    "MarginMode",
    "OpenOrder",
    "OrderSettings",
    "OrderTerms",
    "OrderType",
    "PositionSide",
    "Side",
    "already_reducing",
    "faces_position",
    "open_order_margin",
    "opening_quantity",
    "order_cost",
    "order_price",
    "release_on_fill",
    "release_on_fills",
]

Side = Literal["BUY", "SELL"]
OrderType = Literal["LIMIT", "MARKET"]
MarginMode = Literal["CROSS", "ISOLATED"]
PositionSide = Literal["BOTH", "LONG", "SHORT"]
ZERO = Decimal(0)
ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class OrderTerms:
    """One ``ORDER`` as validated at the edge (quantities in base units or contracts).

    ``price`` is the LIMIT price and None for a MARKET order; ``submitted_at`` is UTC.
    """

    order_id: str
    account_id: str
    symbol: str
    side: Side
    order_type: OrderType
    quantity: Decimal
    price: Decimal | None
    leverage: int
    submitted_at: datetime
    margin_mode: MarginMode = "CROSS"
    position_side: PositionSide = "BOTH"
    reduce_only: bool = False


@dataclass(frozen=True, slots=True)
class OpenOrder:
    """An approved order the account holds open (an entry of the document's ``openOrders``).

    ``quantity`` is what remains unfilled; ``opening_quantity`` the part of it that opens
    exposure (the rest reduces the position it faces); ``reserved`` the margin it holds;
    ``price`` the price it was valued at (a MARKET order's P).
    """

    order_id: str
    symbol: str
    side: Side
    position_side: PositionSide
    margin_mode: MarginMode
    order_type: OrderType
    price: Decimal
    leverage: int
    quantity: Decimal
    opening_quantity: Decimal
    reserved: Decimal
    submitted_at: datetime

    @property
    def reducing_quantity(self) -> Decimal:
        """The part of the remaining quantity that reduces the position it faces."""
        return max(ZERO, m_sub(self.quantity, self.opening_quantity))


@dataclass(frozen=True, slots=True)
class OrderSettings:
    """The settings an order decision reads (names as in the contract).

    ``position_limits`` maps a settle asset to ``RISK_POSITION_LIMIT_NOTIONAL``; an asset
    absent from it is not checked.

    Raises:
        ValueError: ``market_slippage`` outside [0, 1), ``rate_limit_per_second`` or
            ``stale_mark_after_seconds`` negative, ``max_margin_ratio`` outside (0, 1], or
            ``margin_call_ratio`` outside (0, 1).
    """

    market_slippage: Decimal = Decimal("0.0005")
    rate_limit_per_second: int = 50
    max_margin_ratio: Decimal = Decimal("0.80")
    stale_mark_after_seconds: int = 300
    margin_call_ratio: Decimal = Decimal("0.80")
    position_limits: Mapping[str, Decimal] | None = None

    def __post_init__(self) -> None:
        if not ZERO <= self.market_slippage < ONE:
            raise ValueError("ORDER_MARKET_SLIPPAGE must be in [0, 1)")
        if self.rate_limit_per_second < 0:
            raise ValueError("ORDER_RATE_LIMIT_PER_SECOND must be ≥ 0 (0 = off)")
        if not ZERO < self.max_margin_ratio <= ONE:
            raise ValueError("ORDER_MAX_MARGIN_RATIO must be in (0, 1]")
        if self.stale_mark_after_seconds < 0:
            raise ValueError("STALE_MARK_AFTER_SECONDS must be ≥ 0")
        if not ZERO < self.margin_call_ratio < ONE:
            raise ValueError("RISK_MARGIN_CALL_RATIO must be in (0, 1)")

    def position_limit(self, asset: str) -> Decimal | None:
        """The position limit of ``asset``, or None when it is not checked."""
        return (self.position_limits or {}).get(asset)


@dataclass(frozen=True, slots=True)
class Cost:
    """What opening a quantity costs, in the settle asset: ``cost`` = the two parts."""

    initial_margin: Decimal
    open_loss: Decimal
    cost: Decimal


def _to_tick(value: Decimal, tick: Decimal, rounding: str) -> Decimal:
    steps = m_div(value, tick).to_integral_value(rounding=rounding)
    return m_mul(steps, tick)


def order_price(
    instrument: Instrument,
    order_type: OrderType,
    side: Side,
    limit_price: Decimal | None,
    mark: Decimal | None,
    slippage: Decimal,
) -> Decimal | None:
    """The price P an order is valued at, or None when a MARKET order has no mark.

    LIMIT: its own price (off-tick prices are the checks' concern). MARKET: mark × (1 +
    ``slippage``) rounded up to the tick for BUY, mark × (1 − ``slippage``) rounded down
    for SELL, never below one tick.

    Raises:
        ValueError: a LIMIT order without a price, or a MARKET order with one.
    """
    if order_type == "LIMIT":
        if limit_price is None:
            raise ValueError("a LIMIT order has a price")
        return limit_price
    if limit_price is not None:
        raise ValueError("a MARKET order has no price")
    if mark is None:
        return None
    tick = instrument.tick_size
    if side == "BUY":
        return _to_tick(m_mul(mark, m_add(ONE, slippage)), tick, ROUND_CEILING)
    return max(tick, _to_tick(m_mul(mark, m_sub(ONE, slippage)), tick, ROUND_FLOOR))


def faces_position(position_side: str, side: str, held: Decimal) -> bool:
    """True when an order of ``side`` reduces the position it meets on ``position_side``
    (signed ``held``): one-way, against a non-zero position; hedge, a SELL on LONG or a
    BUY on SHORT (whatever is held)."""
    if position_side == "BOTH":
        return held > 0 if side == "SELL" else held < 0
    return (position_side == "LONG") == (side == "SELL")


def _held(ledger: Ledger, symbol: str, position_side: str) -> Decimal:
    position = ledger.position(symbol, position_side)
    return position.quantity if position is not None else ZERO


def already_reducing(
    open_orders: Iterable[OpenOrder],
    symbol: str,
    position_side: str,
    side: str,
    exclude: str | None = None,
) -> Decimal:
    """Σ the reducing part of the open orders on ``symbol`` + ``position_side`` of
    ``side`` (the order ``exclude`` left out)."""
    total = ZERO
    for o in open_orders:
        if (
            o.symbol == symbol
            and o.position_side == position_side
            and o.side == side
            and o.order_id != exclude
        ):
            total = m_add(total, o.reducing_quantity)
    return total


def opening_quantity(
    ledger: Ledger, open_orders: Iterable[OpenOrder], terms: OrderTerms
) -> Decimal:
    """The part of ``terms.quantity`` that does not reduce the position it faces.

    An order that faces its position (one-way: against a non-zero position; hedge: a
    SELL on LONG or a BUY on SHORT) reduces it up to its size less what the account's
    other open orders facing it (same symbol, positionSide and side) already reduce; the
    rest opens. Any other order opens its whole quantity. (In hedge mode a positive
    opening quantity of a closing order is a close beyond the position: the checks reject
    it ``REDUCE_ONLY_VIOLATION``.)
    """
    held = _held(ledger, terms.symbol, terms.position_side)
    if not faces_position(terms.position_side, terms.side, held):
        return terms.quantity
    others = already_reducing(
        open_orders, terms.symbol, terms.position_side, terms.side, exclude=terms.order_id
    )
    room = max(ZERO, m_sub(m_abs(held), others))
    return max(ZERO, m_sub(terms.quantity, room))


def order_cost(
    instrument: Instrument,
    quantity: Decimal,
    price: Decimal,
    mark: Decimal,
    side: Side,
    leverage: int,
) -> Cost:
    """The cost of opening ``quantity`` at ``price`` with the symbol's ``mark``.

    Linear: initial margin q·cs·P / leverage, open loss q·cs·|min(0, d·(mark − P))|.
    Inverse: initial margin q·cs / P / leverage, open loss q·cs·|min(0, d·(1/P − 1/mark))|.
    d is +1 for BUY and −1 for SELL; cs the contract size (1 for linear contracts).

    Raises:
        decimal.DivisionByZero: ``price`` or ``mark`` is 0 (inverse), or ``leverage`` is 0.
    """
    size = m_mul(quantity, instrument.contract_size)
    if instrument.is_inverse:
        margin = m_div(m_div(size, price), leverage)
        move = m_sub(m_div(ONE, price), m_div(ONE, mark))
    else:
        margin = m_div(m_mul(size, price), leverage)
        move = m_sub(mark, price)
    signed = move if side == "BUY" else m_minus(move)
    loss = m_mul(size, m_abs(min(ZERO, signed)))
    return Cost(margin, loss, m_add(margin, loss))


def release_on_fill(open_order: OpenOrder, fill_quantity: Decimal) -> OpenOrder | None:
    """The open order after a fill of ``fill_quantity`` of it (FILL v2 with its orderId);
    None when nothing remains (the whole reservation is released).

    The reservation is released pro rata (reserved × fill / remaining, the rest stays).
    The part that reduces the position fills first, so the opening quantity is kept up to
    what remains.

    Raises:
        ValueError: ``fill_quantity`` is not positive.
    """
    if fill_quantity <= 0:
        raise ValueError("a fill quantity is positive")
    remaining = m_sub(open_order.quantity, fill_quantity)
    if remaining <= 0:
        return None
    released = m_div(m_mul(open_order.reserved, fill_quantity), open_order.quantity)
    return replace(
        open_order,
        quantity=remaining,
        opening_quantity=min(open_order.opening_quantity, remaining),
        reserved=stored(m_sub(open_order.reserved, released)),
    )


def release_on_fills(
    open_orders: Iterable[OpenOrder], order_id: str, fill_quantity: Decimal
) -> tuple[OpenOrder, ...]:
    """``open_orders`` after a fill of ``fill_quantity`` of order ``order_id`` (unchanged
    when the account does not hold it: fills are facts).

    Raises:
        ValueError: ``fill_quantity`` is not positive.
    """
    out: list[OpenOrder] = []
    for o in open_orders:
        if o.order_id != order_id:
            out.append(o)
            continue
        after = release_on_fill(o, fill_quantity)
        if after is not None:
            out.append(after)
    return tuple(out)


def open_order_margin(
    open_orders: Iterable[OpenOrder], settle_asset: str, catalog: Catalog
) -> Decimal:
    """Σ reserved of the open orders whose symbol settles in ``settle_asset`` (a wallet's
    ``openOrderMargin``). An order whose symbol left the catalog counts nowhere, as
    :func:`handlers.core.valuation.value` skips such positions."""
    total = ZERO
    for o in open_orders:
        instrument = catalog.get(o.symbol)
        if instrument is not None and instrument.settle_asset == settle_asset:
            total = m_add(total, o.reserved)
    return total
