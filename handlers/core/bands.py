"""Risk bands: per held symbol, a range of its mark over which no risk state can change.

A band is a closed range ``(lo, hi)`` of one symbol's mark; the bands of an account form a
box (one band per open symbol that has an instrument). A box *holds* when, for every
vector of marks inside it, every risk state of the account — each cross wallet with cross
positions, each isolated position — is the one at the current marks (the positions'
effective marks). It is a proof, never an estimate: a mark that stays inside its band
cannot change any state while the other symbols stay inside theirs, so the account need
not be re-valued for it.

The proof (docs/marks.md, "Risk bands") bounds, over the closed box, exactly the values
:func:`handlers.core.valuation.value` computes: uPnL and notional are monotone in the
mark, and so are their correctly rounded MONEY computations, so the values at a band's
ends bound the values inside; maintenance margin is piecewise linear in the notional,
bounded by its values at the ends and at every bracket boundary between them; the sums
and the ratio are monotone in their terms. The liquidation-price criterion, whatever
brackets its iteration settles on, is ruled out by ``margin balance > Σ max-over-brackets
maintenance margin`` (plus a rounding slack) everywhere in the box.

:func:`band_box` searches a box with float arithmetic (cheap), then verifies it once with
the exact bounds; :func:`box_holds` is that exact check alone.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping
from decimal import Context, Decimal, Inexact
from typing import NamedTuple

from handlers.core.catalog import Catalog, Instrument
from handlers.core.decimals import m_abs, m_add, m_div, m_mul, m_sub
from handlers.core.state import Ledger, Position, RiskState

__all__ = ["Band", "band_box", "box_holds", "outside"]

#: (lo, hi) of a symbol's mark, both included, 0 < lo <= hi.
Band = tuple[Decimal, Decimal]

ZERO = Decimal(0)
ONE = Decimal(1)
#: The slack against the 60-digit rounding of the liquidation-price formula, relative to
#: the magnitudes it involves (its error is below 1e-56 of them; see docs/marks.md).
_SLACK = Decimal("1e-38")
#: The share of a float-estimated margin the search spends (the exact check decides).
_SPEND = 0.99
#: The factor a side's width shrinks by when the exact check refuses the first box.
_SHRINK = 0.25
_EXACT = Context(prec=1000, traps=[Inexact])
#: 1/x in MONEY by x (entry prices and band ends of inverse contracts), a bounded memo.
_RECIPROCALS: dict[Decimal, Decimal] = {}
_RECIPROCALS_SIZE = 8192


def _reciprocal(x: Decimal) -> Decimal:
    """``m_div(1, x)``, remembered (the same value: MONEY's division is deterministic)."""
    found = _RECIPROCALS.get(x)
    if found is None:
        found = m_div(ONE, x)
        if len(_RECIPROCALS) >= _RECIPROCALS_SIZE:
            _RECIPROCALS.clear()
        _RECIPROCALS[x] = found
    return found


class _Spec(NamedTuple):
    """Per-instrument constants (cached by :func:`_spec`)."""

    instrument: Instrument
    #: brackets ordered by cap, with non-decreasing maintenance ratio, and continuous
    #: at every cap: maintenance margin is then the maximum of all bracket lines.
    regular: bool
    caps: tuple[Decimal, ...]
    #: (maint_margin_ratio, maint_amount) per bracket
    lines: tuple[tuple[Decimal, Decimal], ...]
    #: the largest |maint_amount| (bounds the Σ cum of a liquidation formula)
    amount_top: Decimal
    inverse: bool
    contract_size: float
    caps_f: tuple[float, ...]
    mmr_f: tuple[float, ...]
    amount_f: tuple[float, ...]
    tick: Decimal
    tick_f: float


_SPECS: dict[int, _Spec] = {}
_SPECS_SIZE = 1024


def _is_regular(inst: Instrument) -> bool:
    brackets = inst.brackets
    caps = inst.caps
    if brackets[0].maint_amount != 0 or brackets[0].maint_margin_ratio < 0:
        return False
    try:
        for prev, cur, floor in zip(brackets, brackets[1:], caps, strict=False):
            if not floor < cur.notional_cap or cur.maint_margin_ratio < prev.maint_margin_ratio:
                return False
            expected = _EXACT.add(
                prev.maint_amount,
                _EXACT.multiply(
                    floor, _EXACT.subtract(cur.maint_margin_ratio, prev.maint_margin_ratio)
                ),
            )
            if cur.maint_amount != expected:
                return False
    except Inexact:
        return False
    return True


def _spec(inst: Instrument) -> _Spec:
    found = _SPECS.get(id(inst))
    if found is not None and found.instrument is inst:
        return found
    lines = tuple((b.maint_margin_ratio, b.maint_amount) for b in inst.brackets)
    spec = _Spec(
        inst,
        _is_regular(inst),
        inst.caps,
        lines,
        max(m_abs(a) for _, a in lines),
        inst.is_inverse,
        float(inst.contract_size),
        tuple(float(c) for c in inst.caps),
        tuple(float(r) for r, _ in lines),
        tuple(float(a) for _, a in lines),
        inst.tick_size,
        float(inst.tick_size),
    )
    if len(_SPECS) >= _SPECS_SIZE:
        _SPECS.clear()
    _SPECS[id(inst)] = spec
    return spec


_Row = tuple[Position, _Spec]


class _Unit(NamedTuple):
    """One risk state: a cross wallet (its cross positions) or an isolated position."""

    wallet: Decimal  # cross wallet balance, or the isolated margin
    rows: tuple[_Row, ...]  # in the order valuation sums them


def _units(ledger: Ledger, catalog: Catalog) -> tuple[list[_Unit], dict[str, Band]]:
    """The account's risk units and, per open symbol, (min, max) of its effective marks."""
    instruments = catalog.instruments
    groups: dict[str, list[_Row]] = {}
    marks: dict[str, Band] = {}
    for p in ledger.positions:
        inst = instruments.get(p.symbol)
        if inst is None or p.quantity == 0:
            continue
        spec = _SPECS.get(id(inst))
        if spec is None or spec.instrument is not inst:
            spec = _spec(inst)
        row = (p, spec)
        mine = groups.get(inst.settle_asset)
        if mine is None:
            groups[inst.settle_asset] = [row]
        else:
            mine.append(row)
        mark = p.mark_price if p.mark_price is not None else p.last_fill_price
        held = marks.get(p.symbol)
        if held is None:
            marks[p.symbol] = (mark, mark)
        elif not held[0] <= mark <= held[1]:
            marks[p.symbol] = (min(held[0], mark), max(held[1], mark))
    units: list[_Unit] = []
    wallets = ledger.wallets
    for asset, rows in groups.items():
        cross = tuple(r for r in rows if r[0].margin_mode == "CROSS")
        if cross:
            held_wallet = wallets.get(asset)
            wallet = held_wallet.balance if held_wallet is not None else ZERO
            iso_sum = ZERO
            for r in rows:
                if r[0].margin_mode == "ISOLATED":
                    iso_sum = m_add(iso_sum, r[0].isolated_margin)
            units.append(_Unit(m_sub(wallet, iso_sum), cross))
        if len(cross) != len(rows):
            units.extend(
                _Unit(r[0].isolated_margin, (r,)) for r in rows if r[0].margin_mode != "CROSS"
            )
    return units, marks


def _mm_range(spec: _Spec, n_min: Decimal, n_max: Decimal) -> tuple[Decimal, Decimal]:
    """Bounds of the computed maintenance margin over notionals in [n_min, n_max] (> 0):
    its values at both ends and both bracket lines at every boundary between them."""
    lines = spec.lines
    if not spec.regular:  # every line is monotone: the extremes of all lines at both ends
        values = [m_sub(m_mul(n, r), a) for r, a in lines for n in (n_min, n_max)]
        return min(values), max(values)
    caps = spec.caps
    top = len(lines) - 1
    k_lo = bisect_right(caps, n_min)
    if k_lo > top:
        k_lo = top
    r, a = lines[k_lo]
    low = m_sub(m_mul(n_min, r), a)
    if n_max is n_min:
        return low, low
    if k_lo == top or n_max < caps[k_lo]:  # one bracket
        return low, m_sub(m_mul(n_max, r), a)
    k_hi = min(bisect_right(caps, n_max), top)
    r, a = lines[k_hi]
    high = m_sub(m_mul(n_max, r), a)
    for k in range(k_lo, k_hi):  # boundaries inside (n_min, n_max]: both lines at each
        cap = caps[k]
        below = m_sub(m_mul(cap, lines[k][0]), lines[k][1])
        above = m_sub(m_mul(cap, lines[k + 1][0]), lines[k + 1][1])
        low, high = min(low, below, above), max(high, below, above)
    return low, high


def _state(ratio: Decimal, call: Decimal) -> RiskState:
    if ratio >= 1:
        return "LIQUIDATION"
    return "MARGIN_CALL" if ratio >= call else "NORMAL"


def _proven(unit: _Unit, box: Mapping[str, Band], call: Decimal) -> bool:
    """True when the unit's risk state is provably constant over ``box`` (bands present).

    Every bound below is computed with the operations, in the order, that
    :func:`handlers.core.valuation.value` uses, so it bounds the computed values.
    """
    up_lo = up_hi = mm_lo = mm_hi = ZERO  # Σ uPnL and Σ MM bounds, in valuation's order
    scale = m_abs(unit.wallet)  # the magnitudes the rounding slack is relative to
    point = True
    for p, spec in unit.rows:
        lo, hi = box[p.symbol]
        q = p.quantity
        cs = spec.instrument.contract_size
        size = m_mul(m_abs(q), cs)
        qcs = m_mul(q, cs)
        if spec.inverse:  # notional |q|·cs/P falls with P; uPnL q·cs·(1/entry − 1/P)
            inv_entry = _reciprocal(p.entry_price)
            n_max = m_div(size, lo)
            u_at_lo = m_mul(qcs, m_sub(inv_entry, _reciprocal(lo)))
            if lo == hi:
                n_min, u_at_hi = n_max, u_at_lo
            else:
                point = False
                n_min = m_div(size, hi)
                u_at_hi = m_mul(qcs, m_sub(inv_entry, _reciprocal(hi)))
        else:  # notional |q|·cs·P rises with P; uPnL q·cs·(P − entry)
            n_min = m_mul(size, lo)
            u_at_lo = m_mul(qcs, m_sub(lo, p.entry_price))
            if lo == hi:
                n_max, u_at_hi = n_min, u_at_lo
            else:
                point = False
                n_max = m_mul(size, hi)
                u_at_hi = m_mul(qcs, m_sub(hi, p.entry_price))
        if q > 0:
            up_lo = m_add(up_lo, u_at_lo)
            up_hi = m_add(up_hi, u_at_hi)
        else:
            up_lo = m_add(up_lo, u_at_hi)
            up_hi = m_add(up_hi, u_at_lo)
        if size == 0:  # maint_margin's own case: a zero notional has no margin
            low = high = ZERO
        else:
            low, high = _mm_range(spec, n_min, n_max)
        mm_lo = m_add(mm_lo, low)
        mm_hi = m_add(mm_hi, high)
        scale = m_add(
            m_add(scale, m_add(n_max, spec.amount_top)), m_add(m_abs(u_at_lo), m_abs(u_at_hi))
        )
    if point:  # every band is the current mark: nothing can move
        return True
    if mm_lo < 0:  # (a catalog whose lines go negative: the ratio is not monotone)
        return False
    mb_hi = m_add(unit.wallet, up_hi)
    if not mb_hi > 0:  # margin balance ≤ 0 everywhere: LIQUIDATION throughout
        return True
    mb_lo = m_add(unit.wallet, up_lo)
    r_lo = m_div(mm_lo, mb_hi)
    if not mb_lo > 0:  # ≤ 0 somewhere: LIQUIDATION only if the ratio is ≥ 1 elsewhere
        return r_lo >= 1
    if r_lo >= 1:  # ratio ≥ 1 everywhere: LIQUIDATION whatever the liquidation prices
        return True
    if _state(r_lo, call) != _state(m_div(mm_hi, mb_lo), call):
        return False
    # No liquidation price reachable: margin balance > Σ max-over-brackets maintenance
    # margin (= mm_hi: the maximum of the bracket lines) + the formula's rounding slack.
    return m_sub(mb_lo, mm_hi) > m_mul(scale, _SLACK)


def _check(band: Band | None, marks: Band) -> bool:
    if band is None:
        return False
    lo, hi = band
    return lo > 0 and lo <= marks[0] and marks[1] <= hi


def box_holds(
    ledger: Ledger, catalog: Catalog, margin_call_ratio: Decimal, box: Mapping[str, Band]
) -> bool:
    """True when ``box`` has a band for every open symbol that has an instrument, each
    containing that symbol's effective marks, and every risk state of the account is
    provably constant over the closed box (docs/marks.md, "Risk bands").

    False means "not proven", not "a state changes": the caller then computes a new box
    with :func:`band_box`. Bands of other symbols are ignored.

    Raises:
        decimal.InvalidOperation: a band or a position holds NaN or an infinity.
    """
    units, marks = _units(ledger, catalog)
    get = box.get
    for symbol, held in marks.items():
        if not _check(get(symbol), held):
            return False
    return all(_proven(unit, box, margin_call_ratio) for unit in units)


def outside(band: Band, price: Decimal) -> bool:
    """True when ``price`` is below or above the closed ``band``."""
    return price < band[0] or price > band[1]


# --- the search ------------------------------------------------------------------------


def _bracket_f(spec: _Spec, notional: float) -> int:
    return min(bisect_right(spec.caps_f, notional), len(spec.caps_f) - 1)


def _spread(
    budget: float,
    rates: list[tuple[tuple[str, int], float]],
    caps: dict[tuple[str, int], float],
    width: float,
    widths: dict[tuple[str, int], float],
) -> None:
    """Share ``budget`` between the sides of ``rates`` (a side's float loss per unit of
    relative width) so that Σ rate·t ≤ budget, sides that need less than an equal share
    giving the rest to the others; lower each side's width in ``widths`` to its share."""
    if budget <= 0:
        for key, _ in rates:
            widths[key] = 0.0
        return
    get = caps.get
    ranked = sorted([(rate * get(key, width), key, rate) for key, rate in rates])
    left = budget
    count = len(ranked)
    for i, (full, key, rate) in enumerate(ranked):
        share = left / (count - i)
        if full <= share:  # the side's whole width (its cap) costs less than a share
            t = full / rate if rate > 0 else width
            left -= full
        else:
            t = share / rate
            left -= share
        if t < widths.get(key, width):
            widths[key] = t


def _search(
    units: list[_Unit], call: float, width: float, *, settle: bool = True
) -> tuple[dict[tuple[str, int], float], list[list[str]]]:
    """Float estimate of each side's relative width (side 0: down, 1: up) and the symbols
    of each unit. With ``settle``, the rounds stop at a fixed point (the same result as
    running them all, which ``settle=False`` does, for the tests).

    Each state's conditions are margins G > 0 (or ≥ 0) at the current marks; widening a
    side by t costs at most rate·t of each, from the first-order change of uPnL and
    notional at the far end of the widest band (bracket ratio included).
    """
    constraints: list[tuple[float, list[tuple[tuple[str, int], float]]]] = []
    symbols: list[list[str]] = []
    c = min(call, 1.0)
    stretch = 1.0 / (1.0 - width)
    for unit in units:
        mb = float(unit.wallet)
        mm = 0.0
        # per symbol, per side (0 down, 1 up): uPnL loss, uPnL gain, MM rise, MM fall
        acc: dict[str, list[float]] = {}
        for p, spec in unit.rows:
            qf = float(p.quantity)
            mark = float(p.mark_price if p.mark_price is not None else p.last_fill_price)
            scaled = qf * spec.contract_size
            if spec.inverse:
                n0 = abs(scaled) / mark
                mb += scaled * (1.0 / float(p.entry_price) - 1.0 / mark)
                far = n0 * stretch
                grows = 0  # the notional grows as the mark falls
                rise = far
            else:
                n0 = abs(scaled) * mark
                mb += scaled * (mark - float(p.entry_price))
                far = n0 * (1.0 + width)
                grows = 1
                rise = n0
            caps_f = spec.caps_f
            top = len(caps_f) - 1
            k0 = min(bisect_right(caps_f, n0), top)
            mmr0 = spec.mmr_f[k0]
            mm += n0 * mmr0 - spec.amount_f[k0]
            mmr_far = spec.mmr_f[min(bisect_right(caps_f, far), top)] if spec.regular else 1.0
            rates = acc.get(p.symbol)
            if rates is None:
                rates = acc[p.symbol] = [0.0] * 8
            loses = 0 if qf > 0 else 1  # the side where uPnL falls
            rates[loses] += rise if loses == grows else n0
            rates[3 - loses] += rise if loses != grows else n0
            rates[4 + grows] += rise * mmr_far
            rates[7 - grows] += n0 * mmr0
        symbols.append(list(acc))
        if mb <= 0 or mm >= mb:  # LIQUIDATION: Σ MM_min − MB_max ≥ 0
            constraints.append(
                (
                    _SPEND * (mm - mb),
                    [((s, d), r[6 + d] + r[2 + d]) for s, r in acc.items() for d in (0, 1)],
                )
            )
            continue
        # not LIQUIDATION: MB_min − Σ MM_max > 0 (no liquidation price reachable)
        constraints.append(
            (
                _SPEND * (mb - mm),
                [((s, d), r[d] + r[4 + d]) for s, r in acc.items() for d in (0, 1)],
            )
        )
        if mm >= call * mb:  # MARGIN_CALL: Σ MM_min − call·MB_max ≥ 0
            constraints.append(
                (
                    _SPEND * (mm - call * mb),
                    [((s, d), r[6 + d] + call * r[2 + d]) for s, r in acc.items() for d in (0, 1)],
                )
            )
        else:  # NORMAL: c·MB_min − Σ MM_max > 0
            constraints.append(
                (
                    _SPEND * (c * mb - mm),
                    [((s, d), c * r[d] + r[4 + d]) for s, r in acc.items() for d in (0, 1)],
                )
            )
    # Each condition shares its budget between its sides; in later rounds a side that
    # other conditions keep narrower is capped there, leaving its share to the others.
    # Each condition's last allocation keeps within its budget, so does their minimum.
    # A round that changes no allocation is a fixed point: the next would repeat it.
    allocs: list[dict[tuple[str, int], float]] = [{} for _ in constraints]
    for round_ in range(3 if len(constraints) > 1 else 1):
        if round_ and not any(allocs):  # every side at full width: nothing to share
            break
        changed = False
        for j, (budget, sides) in enumerate(constraints):
            caps: dict[tuple[str, int], float] = {}
            if round_:
                for key, _ in sides:
                    cap = width
                    for i, other in enumerate(allocs):
                        if i != j:
                            cap = min(cap, other.get(key, width))
                    caps[key] = cap
            alloc: dict[tuple[str, int], float] = {}
            _spread(budget, sides, caps, width, alloc)
            if alloc != allocs[j]:
                changed = True
            allocs[j] = alloc
        if settle and not changed:
            break
    widths: dict[tuple[str, int], float] = {}
    for alloc in allocs:
        for key, t in alloc.items():
            if t < widths.get(key, width):
                widths[key] = t
    return widths, symbols


def _band(spec: _Spec, held: Band, down: float, up: float) -> Band:
    """``held`` widened by ``down``/``up`` (relative), snapped inwards to the tick grid."""
    m_lo, m_hi = held
    lo, hi = m_lo, m_hi
    tick_f = spec.tick_f
    if down > 0:
        ticks = math.ceil(float(m_lo) * (1.0 - down) / tick_f)
        if ticks >= 1:
            snapped = m_mul(Decimal(ticks), spec.tick)
            if snapped < m_lo:
                lo = snapped
    if up > 0:
        ticks = math.floor(float(m_hi) * (1.0 + up) / tick_f)
        snapped = m_mul(Decimal(ticks), spec.tick)
        if snapped > m_hi:
            hi = snapped
    return (lo, hi)


def band_box(
    ledger: Ledger, catalog: Catalog, margin_call_ratio: Decimal, width: Decimal
) -> dict[str, Band]:
    """A box that holds (see :func:`box_holds`), each band within ``mark·(1 − width)`` ..
    ``mark·(1 + width)`` of its symbol's effective mark, each side as wide as a cheap
    search finds.

    Symbols without an instrument or without an open position get no band. A symbol
    whose widened band cannot be verified gets a narrower one, and at last the
    degenerate band (mark, mark). The result always holds, except when the positions
    of one symbol carry different effective marks (a hedge pair before the symbol's
    first mark) and nothing wider verifies: that symbol's band is then (min, max) of
    its marks and :func:`box_holds` says False.

    Raises:
        ValueError: ``width`` is not in [0, 1).
        decimal.InvalidOperation: a position holds NaN or an infinity.
    """
    if not 0 <= width < 1:
        raise ValueError(f"a band width is in [0, 1), not {width}")
    units, marks = _units(ledger, catalog)
    if not marks or width == 0:
        return dict(marks)
    w = float(width)
    try:  # figures beyond a float's range (a hostile catalog or fill) get the marks alone
        widths, symbols = _search(units, float(margin_call_ratio), w)
        specs = {p.symbol: spec for unit in units for p, spec in unit.rows}
        box = {
            s: _band(specs[s], held, widths.get((s, 0), w), widths.get((s, 1), w))
            for s, held in marks.items()
        }
    except (OverflowError, ZeroDivisionError, ValueError):
        return dict(marks)
    pending = list(zip(units, symbols, strict=True))
    for attempt in (0, 1):  # shrink what the exact check refuses; then the marks alone
        pending = [(u, mine) for u, mine in pending if not _proven(u, box, margin_call_ratio)]
        for _, mine in pending:
            for s in mine:
                if attempt == 0:
                    box[s] = _band(
                        specs[s],
                        marks[s],
                        widths.get((s, 0), w) * _SHRINK,
                        widths.get((s, 1), w) * _SHRINK,
                    )
                else:
                    box[s] = marks[s]
    return box
