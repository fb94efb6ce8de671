"""Margin mathematics, Binance USDⓈ-M / COIN-M conventions, over Decimal only.

Quantities are signed (long > 0, short < 0). Every function here is pure and computes in
:data:`handlers.core.decimals.MONEY` (60 significant digits, half-even). docs/margin.md
writes each formula out with its source.

- linear:  notional = |q|·cs·P,   uPnL = q·cs·(P − entry)
- inverse: notional = |q|·cs / P, uPnL = q·cs·(1/entry − 1/P)
- maintenance margin = notional·MMR − maintAmount (bracket of the notional)
- initial margin = notional / leverage
- liquidation price: see :func:`liquidation_price`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from handlers.core.catalog import Bracket, Instrument
from handlers.core.decimals import m_abs, m_add, m_div, m_mul, m_sub

__all__ = [
    "MAX_BRACKET_ITERATIONS",
    "Leg",
    "Liquidation",
    "initial_margin",
    "liquidation_price",
    "maint_margin",
    "one_leg_liquidation",
]

MAX_BRACKET_ITERATIONS = 10
ZERO = Decimal(0)


def maint_margin(instrument: Instrument, notional: Decimal) -> Decimal:
    """Maintenance margin of a position of ``notional`` (settle asset), bracket by notional."""
    if notional == 0:
        return ZERO
    bracket = instrument.bracket_for(notional)
    return m_sub(m_mul(notional, bracket.maint_margin_ratio), bracket.maint_amount)


def initial_margin(notional: Decimal, leverage: int) -> Decimal:
    """Initial margin: notional at the mark / leverage."""
    return m_div(notional, leverage)


@dataclass(frozen=True, slots=True)
class Leg:
    """One open position entering a liquidation-price formula (same symbol)."""

    quantity: Decimal
    entry_price: Decimal


@dataclass(frozen=True, slots=True)
class Liquidation:
    """A liquidation price and the side beyond it.

    ``falls_to`` is True when the position is liquidated as the mark FALLS to the price
    (mark ≤ price is "at or beyond"), False when it is liquidated as the mark rises.
    """

    price: Decimal
    falls_to: bool

    def reached_by(self, mark: Decimal) -> bool:
        """True when ``mark`` is at or beyond the liquidation price."""
        return mark <= self.price if self.falls_to else mark >= self.price


def _solve(
    instrument: Instrument,
    legs: Sequence[Leg],
    brackets: Sequence[Bracket],
    wallet: Decimal,
    other_maint: Decimal,
    other_upnl: Decimal,
) -> tuple[Decimal, Decimal]:
    """Return (numerator, denominator) of the closed form for the given brackets."""
    return _Legs(instrument, legs).solve(brackets, wallet, other_maint, other_upnl)


class _Legs:
    """The legs' terms that do not depend on the brackets, computed once per price (the
    same MONEY operations, in the same order, as writing the formula out each time)."""

    __slots__ = ("base_terms", "inverse", "scaled", "sizes")

    def __init__(self, instrument: Instrument, legs: Sequence[Leg]) -> None:
        cs = instrument.contract_size
        self.inverse = instrument.is_inverse
        #: |q|·cs per leg
        self.sizes = [m_mul(m_abs(leg.quantity), cs) for leg in legs]
        #: q·cs per leg
        self.scaled = [m_mul(leg.quantity, cs) for leg in legs]
        # linear: q·cs·entry; inverse: q·cs / entry
        if self.inverse:
            self.base_terms = [
                m_div(qcs, leg.entry_price) for qcs, leg in zip(self.scaled, legs, strict=True)
            ]
        else:
            self.base_terms = [
                m_mul(qcs, leg.entry_price) for qcs, leg in zip(self.scaled, legs, strict=True)
            ]

    def solve(
        self,
        brackets: Sequence[Bracket],
        wallet: Decimal,
        other_maint: Decimal,
        other_upnl: Decimal,
    ) -> tuple[Decimal, Decimal]:
        cum = ZERO
        for b in brackets:
            cum = m_add(cum, b.maint_amount)
        base = m_add(m_add(m_sub(wallet, other_maint), other_upnl), cum)
        terms = ZERO
        for term in self.base_terms:
            terms = m_add(terms, term)
        margins = ZERO
        if self.inverse:
            # P = (Σ|q|·cs·MMR + Σ q·cs) / (WB − TMM + UPNL + Σcum + Σ q·cs / entry)
            for size, qcs, b in zip(self.sizes, self.scaled, brackets, strict=True):
                margins = m_add(margins, m_add(m_mul(size, b.maint_margin_ratio), qcs))
            return margins, m_add(base, terms)
        # P = (WB − TMM + UPNL + Σcum − Σ q·cs·entry) / (Σ|q|·cs·MMR − Σ q·cs)
        for size, qcs, b in zip(self.sizes, self.scaled, brackets, strict=True):
            margins = m_add(margins, m_sub(m_mul(size, b.maint_margin_ratio), qcs))
        return m_sub(base, terms), margins


def liquidation_price(
    instrument: Instrument,
    legs: Sequence[Leg],
    mark: Decimal,
    wallet: Decimal,
    other_maint: Decimal = ZERO,
    other_upnl: Decimal = ZERO,
) -> Liquidation | None:
    """The Binance liquidation price of ``legs`` (one leg, or a hedge LONG+SHORT pair).

    ``wallet`` is the isolated margin (isolated) or the cross wallet balance (cross);
    ``other_maint``/``other_upnl`` are the maintenance margin and uPnL of the cross
    positions of OTHER symbols of the same settle asset (0 for isolated).

    The bracket is the one holding each leg's notional AT the liquidation price: start
    from the bracket at ``mark`` and recompute, at most 10 times; when a bracket repeats,
    the result of the higher bracket wins (for a pair, the larger bracket number of the
    two legs); after 10 tries, the last result. None when there is no positive price
    (the position cannot be liquidated) or no open quantity. The first check usually
    ends it: the bracket at the price is the one at the mark.
    """
    open_legs = [leg for leg in legs if leg.quantity != 0]
    if not open_legs:
        return None
    if len(open_legs) == 1:
        return _one_leg(instrument, open_legs[0], mark, wallet, other_maint, other_upnl)
    return _legs(instrument, open_legs, mark, wallet, other_maint, other_upnl)


def _legs(
    instrument: Instrument,
    open_legs: Sequence[Leg],
    mark: Decimal,
    wallet: Decimal,
    other_maint: Decimal,
    other_upnl: Decimal,
) -> Liquidation | None:
    """:func:`liquidation_price` of any number of open legs."""
    terms = _Legs(instrument, open_legs)
    inverse = terms.inverse
    sizes = terms.sizes
    bracket_for = instrument.bracket_for

    def at(price: Decimal) -> tuple[Bracket, ...]:
        # notional(q, P) = |q|·cs / P (inverse) or |q|·cs·P (linear), per leg
        if inverse:
            return tuple(bracket_for(m_div(size, price)) for size in sizes)
        return tuple(bracket_for(m_mul(size, price)) for size in sizes)

    brackets = at(mark)
    seen: dict[tuple[int, ...], Liquidation | None] = {}
    result: Liquidation | None = None
    for _ in range(MAX_BRACKET_ITERATIONS):
        key = tuple(b.bracket for b in brackets)
        num, den = terms.solve(brackets, wallet, other_maint, other_upnl)
        if den == 0:
            result = None
        else:
            price = m_div(num, den)
            # falls_to: margin minus maintenance grows with the price. Linear: d/dP = −den;
            # inverse (in 1/P): d/dx = −num, so it grows with P when num > 0.
            falls_to = den < 0 if not inverse else num > 0
            result = Liquidation(price, falls_to) if price > 0 else None
        seen[key] = result
        if result is None:
            return None
        nxt = at(result.price)
        next_key = tuple(b.bracket for b in nxt)
        if next_key == key:
            return result
        if next_key in seen:
            # A cycle: take the result computed with the higher bracket.
            winner = max((key, next_key), key=max)
            return seen[winner]
        brackets = nxt
    return result


def _one_leg(
    instrument: Instrument,
    leg: Leg,
    mark: Decimal,
    wallet: Decimal,
    other_maint: Decimal,
    other_upnl: Decimal,
) -> Liquidation | None:
    """:func:`liquidation_price` of one leg (:func:`one_leg_liquidation`)."""
    return one_leg_liquidation(
        instrument, leg.quantity, leg.entry_price, mark, wallet, other_maint, other_upnl
    )


def one_leg_liquidation(
    instrument: Instrument,
    quantity: Decimal,
    entry_price: Decimal,
    mark: Decimal,
    wallet: Decimal,
    other_maint: Decimal = ZERO,
    other_upnl: Decimal = ZERO,
) -> Liquidation | None:
    """:func:`liquidation_price` of one open leg (``quantity`` ≠ 0): the same operations
    in the same order, on the instrument's compiled bracket tables."""
    cs = instrument.contract_size
    inverse = instrument.is_inverse
    caps = instrument.inner_caps  # bisect_right over them: the bracket's index
    ratios = instrument.maint_ratios
    amounts = instrument.maint_terms  # 0 + maintAmount
    size = m_mul(m_abs(quantity), cs)
    qcs = m_mul(quantity, cs)
    terms = m_add(ZERO, m_div(qcs, entry_price) if inverse else m_mul(qcs, entry_price))
    base = m_add(m_sub(wallet, other_maint), other_upnl)
    index = bisect_right(caps, m_div(size, mark) if inverse else m_mul(size, mark))
    seen: dict[int, tuple[Decimal, bool]] = {}  # (price, falls_to) by bracket index
    result: tuple[Decimal, bool] | None = None
    for _ in range(MAX_BRACKET_ITERATIONS):
        full = m_add(base, amounts[index])
        if inverse:
            num = m_add(ZERO, m_add(m_mul(size, ratios[index]), qcs))
            den = m_add(full, terms)
        else:
            num = m_sub(full, terms)
            den = m_add(ZERO, m_sub(m_mul(size, ratios[index]), qcs))
        if den == 0:
            return None
        price = m_div(num, den)
        if not price > 0:
            return None
        result = seen[index] = (price, num > 0 if inverse else den < 0)
        next_index = bisect_right(caps, m_div(size, price) if inverse else m_mul(size, price))
        if next_index == index:
            break
        if next_index in seen:  # a cycle: the result of the higher bracket
            numbers = instrument.brackets
            higher = numbers[index].bracket > numbers[next_index].bracket
            result = seen[index if higher else next_index]
            break
        index = next_index
    return Liquidation(*result) if result is not None else None
