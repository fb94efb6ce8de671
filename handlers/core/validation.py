"""Stateless checks of a FILL against its instrument (reason codes of the contract)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation, localcontext

from handlers.core.catalog import Instrument
from handlers.core.contracts import Fill
from handlers.core.decimals import MONEY, format_decimal, m_div, m_integral

__all__ = ["check_fill", "is_multiple"]

_PREC = MONEY.prec


def is_multiple(value: Decimal, step: Decimal) -> bool:
    """True when ``value`` is an exact integer multiple of ``step``.

    Raises:
        decimal.DivisionByZero: ``step`` is 0 (and ``value`` is not).
    """
    if value.adjusted() - step.adjusted() + 5 <= _PREC:
        # The precision below is MONEY's own: the same operations in its context's methods,
        # without switching the thread's context.
        try:
            ratio = m_div(value, step)
            return ratio == m_integral(ratio)
        except InvalidOperation:
            return False
    with localcontext(MONEY) as ctx:
        ctx.prec = max(MONEY.prec, value.adjusted() - step.adjusted() + 5)
        try:
            ratio = value / step
            return ratio == ratio.to_integral_value()
        except InvalidOperation:
            return False


def check_fill(fill: Fill, instrument: Instrument) -> list[tuple[str, str]]:
    """Every stateless rule a FILL breaks, in a fixed order (empty when it passes).

    Codes: LEVERAGE_ABOVE_MAX, PRICE_TICK, QTY_STEP, QTY_BOUNDS, MIN_NOTIONAL (every
    fill, reduce-only ones included, as the contract lists no exemption).
    """
    out: list[tuple[str, str]] = []
    inst = instrument
    if fill.leverage > inst.max_leverage:
        out.append(
            (
                "LEVERAGE_ABOVE_MAX",
                f"leverage {fill.leverage} > {inst.max_leverage} for {inst.symbol}",
            )
        )
    if not is_multiple(fill.price, inst.tick_size):
        out.append(
            (
                "PRICE_TICK",
                f"price {format_decimal(fill.price)} is not a multiple of {format_decimal(inst.tick_size)}",
            )
        )
    if not is_multiple(fill.quantity, inst.step_size):
        out.append(
            (
                "QTY_STEP",
                f"quantity {format_decimal(fill.quantity)} is not a multiple of {format_decimal(inst.step_size)}",
            )
        )
    if not inst.min_qty <= fill.quantity <= inst.max_qty:
        out.append(
            (
                "QTY_BOUNDS",
                f"quantity {format_decimal(fill.quantity)} outside "
                f"{format_decimal(inst.min_qty)}..{format_decimal(inst.max_qty)}",
            )
        )
    notional = inst.notional(fill.quantity, fill.price)
    if notional < inst.min_notional:
        out.append(
            (
                "MIN_NOTIONAL",
                f"notional {format_decimal(notional)} {inst.settle_asset} < "
                f"{format_decimal(inst.min_notional)}",
            )
        )
    return out
