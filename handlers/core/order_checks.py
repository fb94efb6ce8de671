"""The decision on an ``ORDER``: every reason code of the contract's four groups, in order.

1. as a FILL: UNKNOWN_SYMBOL, PRICE_TICK, QTY_STEP, QTY_BOUNDS, MIN_NOTIONAL (at P),
   LEVERAGE_ABOVE_MAX — any of them skips groups 2-4 (SCHEMA_INVALID is the edge's);
2. market: MARK_UNAVAILABLE (skips a MARKET order's MIN_NOTIONAL, PRICE_OUT_OF_BAND and
   group 4), PRICE_OUT_OF_BAND;
3. account: UNKNOWN_ACCOUNT (skips group 4), ACCOUNT_HALTED, ACCOUNT_REDUCING,
   ACCOUNT_IN_LIQUIDATION, REDUCE_ONLY_VIOLATION, POSITION_SIDE_MISMATCH, RATE_LIMITED,
   ORDER_ALREADY_DONE;
4. risk: INSUFFICIENT_MARGIN, LEVERAGE_BRACKET_EXCEEDED, POSITION_LIMIT_EXCEEDED,
   WOULD_LIQUIDATE or else MARGIN_RATIO_LIMIT — passed by an opening quantity of 0.

Every failing reason of a group that runs is reported. The prices, quantities and cost are
those of :mod:`handlers.core.orders`, group 4's reasons :mod:`handlers.core.order_risk`'s;
docs/orders.md is the prose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from handlers.core.catalog import Catalog, Instrument
from handlers.core.contracts import format_timestamp
from handlers.core.decimals import format_decimal, m_add, m_mul, m_sub, stored
from handlers.core.order_risk import after_reasons, if_filled, limit_reasons, target_of
from handlers.core.orders import (
    Cost,
    OpenOrder,
    OrderSettings,
    OrderTerms,
    faces_position,
    opening_quantity,
    order_cost,
    order_price,
)
from handlers.core.state import Ledger, apply_mark
from handlers.core.validation import is_multiple
from handlers.core.valuation import Valuation, value

__all__ = [
    "AccountView",
    "OrderDecision",
    "StoredMark",
    "TradingState",
    "decide_order",
    "to_open_order",
]

TradingState = Literal["ACTIVE", "REDUCING", "HALTED"]
#: A symbol's stored mark: (markPrice, timestamp), as :func:`state.apply_fill` takes it.
StoredMark = tuple[Decimal, datetime]
Reason = tuple[str, str]
ZERO = Decimal(0)
ONE = Decimal(1)
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class AccountView:
    """What an order decision reads of the account.

    ``ledger`` is at the latest stored marks; ``decided_times`` are the ``submittedAt`` of
    the account's orders already decided (either way); ``available_for_orders`` is per
    settle asset the wallet's availableBalance net of open-order margin (an asset absent:
    0). ``exists`` is False when there is no account document; ``has_wallet`` False when
    nothing ever funded it.
    """

    exists: bool
    has_wallet: bool
    trading_state: TradingState = "ACTIVE"
    ledger: Ledger = field(default_factory=Ledger)
    open_orders: tuple[OpenOrder, ...] = ()
    decided_times: tuple[datetime, ...] = ()
    done_order_ids: frozenset[str] = frozenset()
    available_for_orders: Mapping[str, Decimal] = field(default_factory=dict)

    def available(self, asset: str) -> Decimal:
        return self.available_for_orders.get(asset, ZERO)


@dataclass(frozen=True)
class OrderDecision:
    """The decision: reasons (code, message) in the contract's order, empty when approved;
    metrics named as in ``ORDER_DECISION``; ``reserved`` the cost when approved, else 0."""

    decision: Literal["APPROVED", "REJECTED"]
    reasons: tuple[Reason, ...]
    metrics: Mapping[str, Decimal]
    price: Decimal | None = None
    opening_quantity: Decimal | None = None
    reserved: Decimal = ZERO

    @property
    def approved(self) -> bool:
        return self.decision == "APPROVED"

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(code for code, _ in self.reasons)


def _f(value: Decimal) -> str:
    """A figure of a message, written as the contract writes decimals."""
    return format_decimal(value)


def _usable_mark(mark: StoredMark | None, submitted_at: datetime, stale_after: int) -> bool:
    return mark is not None and mark[1] >= submitted_at - timedelta(seconds=stale_after)


def _terms_reasons(terms: OrderTerms, inst: Instrument, price: Decimal | None) -> list[Reason]:
    """Group 1 after the symbol: the rules of a FILL (MIN_NOTIONAL only with a price)."""
    out: list[Reason] = []
    if terms.price is not None and not is_multiple(terms.price, inst.tick_size):
        out.append(
            ("PRICE_TICK", f"price {_f(terms.price)} is not a multiple of {_f(inst.tick_size)}")
        )
    if not is_multiple(terms.quantity, inst.step_size):
        msg = f"quantity {_f(terms.quantity)} is not a multiple of {_f(inst.step_size)}"
        out.append(("QTY_STEP", msg))
    if not inst.min_qty <= terms.quantity <= inst.max_qty:
        msg = f"quantity {_f(terms.quantity)} outside {_f(inst.min_qty)}..{_f(inst.max_qty)}"
        out.append(("QTY_BOUNDS", msg))
    if price is not None:
        notional = inst.notional(terms.quantity, price)
        if notional < inst.min_notional:
            msg = f"notional {_f(notional)} {inst.settle_asset} < {_f(inst.min_notional)}"
            out.append(("MIN_NOTIONAL", msg))
    if terms.leverage > inst.max_leverage:
        msg = f"leverage {terms.leverage} > {inst.max_leverage} for {inst.symbol}"
        out.append(("LEVERAGE_ABOVE_MAX", msg))
    return out


def _out_of_band(terms: OrderTerms, inst: Instrument, mark: Decimal) -> Reason | None:
    if terms.order_type != "LIMIT" or terms.price is None:
        return None
    if terms.side == "BUY":
        bound = m_mul(mark, m_add(ONE, inst.price_band))
        if terms.price > bound:
            return ("PRICE_OUT_OF_BAND", f"BUY at {_f(terms.price)} above {_f(bound)}")
    else:
        bound = m_mul(mark, m_sub(ONE, inst.price_band))
        if terms.price < bound:
            return ("PRICE_OUT_OF_BAND", f"SELL at {_f(terms.price)} below {_f(bound)}")
    return None


def _mode_mismatch(ledger: Ledger, terms: OrderTerms) -> Reason | None:
    """As for a FILL: the mode or margin mode of an open position on the symbol differs."""
    hedge = terms.position_side != "BOTH"
    for p in ledger.positions:
        if p.symbol != terms.symbol or not p.is_open:
            continue
        if (p.position_side != "BOTH") != hedge:
            mode = "one-way" if hedge else "hedge"
            return ("POSITION_SIDE_MISMATCH", f"{terms.symbol} is open in {mode} mode")
        if p.margin_mode != terms.margin_mode:
            msg = f"{terms.symbol} is open in {p.margin_mode} margin mode"
            return ("POSITION_SIDE_MISMATCH", msg)
    return None


def _rate(terms: OrderTerms, decided: tuple[datetime, ...]) -> int:
    """Orders in (t − 1 s, t], this one included."""
    t = terms.submitted_at
    return 1 + sum(1 for s in decided if t - _SECOND < s <= t)


def decide_order(
    terms: OrderTerms,
    catalog: Catalog,
    mark: StoredMark | None,
    account: AccountView,
    settings: OrderSettings,
) -> OrderDecision:
    """Decide one ``ORDER`` at the symbol's stored ``mark`` (None: none stored).

    ``account.ledger`` should hold the latest stored marks of its other symbols; the
    order's own symbol is moved to ``mark`` here.

    Raises nothing for any input the wire model accepts.
    """
    inst = catalog.get(terms.symbol)
    if inst is None:
        msg = f"{terms.symbol} is not in the instrument catalog"
        return OrderDecision("REJECTED", (("UNKNOWN_SYMBOL", msg),), {})
    usable = _usable_mark(mark, terms.submitted_at, settings.stale_mark_after_seconds)
    mark_price = mark[0] if mark is not None and usable else None
    price = order_price(
        inst, terms.order_type, terms.side, terms.price, mark_price, settings.market_slippage
    )
    metrics: dict[str, Decimal] = {}
    if mark_price is not None:
        metrics["markPrice"] = mark_price
    if price is not None:
        metrics["price"] = price
    reasons = _terms_reasons(terms, inst, price)  # 1.
    if reasons:
        return OrderDecision("REJECTED", tuple(reasons), metrics, price)
    reasons += _market_reasons(terms, inst, mark, mark_price, settings)  # 2.
    ledger = account.ledger
    if mark is not None:
        ledger = apply_mark(ledger, terms.symbol, mark[0], mark[1])
    opening = opening_quantity(ledger, account.open_orders, terms)
    metrics["openingQuantity"] = opening
    before = value(ledger, catalog, settings.margin_call_ratio)
    reasons += _account_reasons(terms, inst, account, ledger, before, opening, settings)  # 3.
    known = account.exists and account.has_wallet
    if not known or mark is None or mark_price is None or price is None:
        return OrderDecision("REJECTED", tuple(reasons), metrics, price, opening)
    # 4.
    available = account.available(inst.settle_asset)
    cost = Cost(ZERO, ZERO, ZERO)
    after: Valuation | None = before  # an opening quantity of 0 changes nothing
    if opening > 0:
        cost = order_cost(inst, opening, price, mark_price, terms.side, terms.leverage)
        available = account.available(inst.settle_asset)
        reasons += limit_reasons(
            terms, inst, ledger, account.open_orders, available, settings, price, opening, cost
        )
        filled = if_filled(ledger, terms, inst, price, (mark_price, mark[1]), opening)
        after = value(filled, catalog, settings.margin_call_ratio) if filled is not None else None
    target = target_of(after, inst, terms) if after is not None else None
    if opening > 0 and target is not None:
        reasons += after_reasons(target, settings)
    metrics.update(
        initialMargin=cost.initial_margin,
        openLoss=cost.open_loss,
        cost=cost.cost,
        availableForOrders=available,
        availableForOrdersAfter=m_sub(available, cost.cost),
    )
    if target is not None and target.liquidation_price is not None:
        metrics["liquidationPriceAfter"] = target.liquidation_price
    if target is not None and target.margin_ratio is not None:
        metrics["marginRatioAfter"] = target.margin_ratio
    if reasons:
        return OrderDecision("REJECTED", tuple(reasons), metrics, price, opening)
    return OrderDecision("APPROVED", (), metrics, price, opening, stored(cost.cost))


def _market_reasons(
    terms: OrderTerms,
    inst: Instrument,
    mark: StoredMark | None,
    mark_price: Decimal | None,
    settings: OrderSettings,
) -> list[Reason]:
    """Group 2: MARK_UNAVAILABLE (no mark, or a stale one), else PRICE_OUT_OF_BAND."""
    if mark is None:
        return [("MARK_UNAVAILABLE", f"no mark stored for {terms.symbol}")]
    if mark_price is None:
        msg = (
            f"the mark of {terms.symbol} ({format_timestamp(mark[1])}) is more than "
            f"{settings.stale_mark_after_seconds} s older than the order"
        )
        return [("MARK_UNAVAILABLE", msg)]
    band = _out_of_band(terms, inst, mark_price)
    return [band] if band is not None else []


def _account_reasons(
    terms: OrderTerms,
    inst: Instrument,
    account: AccountView,
    ledger: Ledger,
    before: Valuation,
    opening: Decimal,
    settings: OrderSettings,
) -> list[Reason]:
    """Group 3, in the contract's order."""
    out: list[Reason] = []
    account_id = terms.account_id
    if not (account.exists and account.has_wallet):
        out.append(("UNKNOWN_ACCOUNT", f"account {account_id} has no funded wallet"))
    if account.trading_state == "HALTED":
        out.append(("ACCOUNT_HALTED", f"account {account_id} is halted"))
    if account.trading_state == "REDUCING" and opening > 0:
        msg = f"account {account_id} may only reduce; the order opens {_f(opening)}"
        out.append(("ACCOUNT_REDUCING", msg))
    if opening > 0 and target_of(before, inst, terms).risk_state == "LIQUIDATION":
        where = (
            f"the {inst.settle_asset} cross wallet"
            if terms.margin_mode == "CROSS"
            else f"the isolated {terms.symbol} {terms.position_side} position"
        )
        out.append(("ACCOUNT_IN_LIQUIDATION", f"{where} is in LIQUIDATION"))
    position = ledger.position(terms.symbol, terms.position_side)
    held = position.quantity if position is not None else ZERO
    hedge_close = terms.position_side != "BOTH" and faces_position(
        terms.position_side, terms.side, held
    )
    if opening > 0 and (terms.reduce_only or hedge_close):
        msg = (
            f"the order would open {_f(opening)} beyond {terms.symbol} {terms.position_side} "
            f"{_f(held)} less what other open orders reduce"
        )
        out.append(("REDUCE_ONLY_VIOLATION", msg))
    mismatch = _mode_mismatch(ledger, terms)
    if mismatch is not None:
        out.append(mismatch)
    limit = settings.rate_limit_per_second
    count = _rate(terms, account.decided_times)
    if limit > 0 and count > limit:
        out.append(("RATE_LIMITED", f"{count} orders within one second, more than {limit}"))
    if terms.order_id in account.done_order_ids:
        out.append(("ORDER_ALREADY_DONE", f"order {terms.order_id} is already done"))
    return out


def to_open_order(terms: OrderTerms, decision: OrderDecision) -> OpenOrder:
    """The ``openOrders`` entry of an approved order (valued at its price P).

    Raises:
        ValueError: the decision is not APPROVED.
    """
    if not decision.approved or decision.price is None or decision.opening_quantity is None:
        raise ValueError("only an approved order is held open")
    return OpenOrder(
        order_id=terms.order_id,
        symbol=terms.symbol,
        side=terms.side,
        position_side=terms.position_side,
        margin_mode=terms.margin_mode,
        order_type=terms.order_type,
        price=decision.price,
        leverage=terms.leverage,
        quantity=terms.quantity,
        opening_quantity=decision.opening_quantity,
        reserved=decision.reserved,
        submitted_at=terms.submitted_at,
    )
