"""Group 4 of an ORDER's checks — risk: the exposure it adds, the ledger as if it had
filled, and the reasons INSUFFICIENT_MARGIN, LEVERAGE_BRACKET_EXCEEDED,
POSITION_LIMIT_EXCEEDED, WOULD_LIQUIDATE or else MARGIN_RATIO_LIMIT
(:func:`handlers.core.order_checks.decide_order` runs them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from handlers.core.catalog import Instrument
from handlers.core.contracts import Fill
from handlers.core.decimals import format_decimal, m_abs, m_add
from handlers.core.orders import Cost, OpenOrder, OrderSettings, OrderTerms, faces_position
from handlers.core.state import Ledger, Rejected, RiskState, apply_fill
from handlers.core.valuation import Valuation

__all__ = ["Target", "after_reasons", "exposure", "if_filled", "limit_reasons", "target_of"]

Reason = tuple[str, str]
#: A symbol's stored mark: (markPrice, timestamp), as :func:`state.apply_fill` takes it.
StoredMark = tuple[Decimal, datetime]
ZERO = Decimal(0)


def _f(value: Decimal) -> str:
    return format_decimal(value)


@dataclass(frozen=True, slots=True)
class Target:
    """The wallet (cross) or isolated position an order adds to, valued."""

    risk_state: RiskState
    margin_ratio: Decimal | None
    liquidation_price: Decimal | None


def target_of(valuation: Valuation, inst: Instrument, terms: OrderTerms) -> Target:
    view = valuation.position(terms.symbol, terms.position_side)
    liq = view.liquidation.price if view is not None and view.liquidation else None
    if terms.margin_mode == "CROSS":
        wallet = valuation.wallets.get(inst.settle_asset)
        if wallet is None:
            return Target("NORMAL", None, liq)
        return Target(wallet.risk_state, wallet.margin_ratio, liq)
    if view is None:
        return Target("NORMAL", None, None)
    return Target(view.risk_state, view.margin_ratio, liq)


def if_filled(
    ledger: Ledger,
    terms: OrderTerms,
    inst: Instrument,
    price: Decimal,
    mark: StoredMark,
    opening: Decimal,
) -> Ledger | None:
    """The ledger as if ``opening`` had filled at ``price``; None when no fill can open it
    (a hedge close beyond the position, a mode mismatch: reported in group 3).

    One-way, against the position: the position is taken as closed at P (by this order's
    reducing part and the other open orders that reduce it), then ``opening`` opened.
    """
    position = ledger.position(terms.symbol, terms.position_side)
    held = position.quantity if position is not None else ZERO
    quantity = opening
    if faces_position(terms.position_side, terms.side, held):
        if terms.position_side != "BOTH":
            return None
        quantity = m_add(m_abs(held), opening)
    fill = Fill.model_construct(  # terms already validated: no second validation
        type="FILL",
        schemaVersion=1,
        tradeId=terms.order_id,
        accountId=terms.account_id,
        symbol=terms.symbol,
        side=terms.side,
        quantity=quantity,
        price=price,
        leverage=terms.leverage,
        marginMode=terms.margin_mode,
        positionSide=terms.position_side,
        reduceOnly=False,
        fee=ZERO,
        executedAt=terms.submitted_at,
        correlationId=None,
    )
    try:
        return apply_fill(ledger, fill, inst, mark)
    except Rejected:
        return None


def exposure(
    ledger: Ledger, open_orders: tuple[OpenOrder, ...], terms: OrderTerms, opening: Decimal
) -> Decimal:
    """Quantity of the position the order adds to, plus its opening quantity, plus the
    opening quantities of the account's other open orders on the same symbol, side and
    positionSide (a one-way position the order faces is closed first: it counts 0)."""
    position = ledger.position(terms.symbol, terms.position_side)
    held = position.quantity if position is not None else ZERO
    total = ZERO if faces_position(terms.position_side, terms.side, held) else m_abs(held)
    total = m_add(total, opening)
    for o in open_orders:
        if (
            o.symbol == terms.symbol
            and o.side == terms.side
            and o.position_side == terms.position_side
            and o.order_id != terms.order_id
        ):
            total = m_add(total, o.opening_quantity)
    return total


def after_reasons(target: Target, settings: OrderSettings) -> list[Reason]:
    """WOULD_LIQUIDATE, or else MARGIN_RATIO_LIMIT (one cause at two thresholds)."""
    if target.risk_state == "LIQUIDATION":
        return [("WOULD_LIQUIDATE", "filled, the order would leave its margin in LIQUIDATION")]
    ratio = target.margin_ratio
    if ratio is not None and ratio >= settings.max_margin_ratio:
        msg = f"margin ratio {_f(ratio)} after the order ≥ {_f(settings.max_margin_ratio)}"
        return [("MARGIN_RATIO_LIMIT", msg)]
    return []


def limit_reasons(
    terms: OrderTerms,
    inst: Instrument,
    ledger: Ledger,
    open_orders: tuple[OpenOrder, ...],
    available: Decimal,
    settings: OrderSettings,
    price: Decimal,
    opening: Decimal,
    cost: Cost,
) -> list[Reason]:
    """INSUFFICIENT_MARGIN, LEVERAGE_BRACKET_EXCEEDED, POSITION_LIMIT_EXCEEDED."""
    out: list[Reason] = []
    asset = inst.settle_asset
    if cost.cost > available:
        msg = f"cost {_f(cost.cost)} {asset} > available for orders {_f(available)}"
        out.append(("INSUFFICIENT_MARGIN", msg))
    held = exposure(ledger, open_orders, terms, opening)
    notional = inst.notional(held, price)
    cap = inst.leverage_cap(terms.leverage)
    if notional >= cap:
        msg = f"notional {_f(notional)} {asset} ≥ {_f(cap)}, the cap at {terms.leverage}x"
        out.append(("LEVERAGE_BRACKET_EXCEEDED", msg))
    limit = settings.position_limit(asset)
    if limit is not None and notional > limit:
        msg = f"notional {_f(notional)} {asset} > the position limit {_f(limit)}"
        out.append(("POSITION_LIMIT_EXCEEDED", msg))
    return out
