"""Risk bands are sound: re-valuing an account only when a mark leaves its band raises
exactly the alerts, and ends in exactly the states, of re-valuing every account at every
mark (hypothesis, over random portfolios and mark walks with jumps).

Both paths take :func:`handlers.core.revalue.revalue_at`, the step of a real mark pass.
``TRADEGUARD_BANDS_EXAMPLES`` sets the number of examples (docs/marks.md, "Risk bands").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from handlers.core.alerts import AlertSpec
from handlers.core.bands import Band, band_box, box_holds, outside
from handlers.core.catalog import Catalog, Instrument, load_catalog
from handlers.core.contracts import Fill, Transfer
from handlers.core.revalue import MarkAt, revalue_at
from handlers.core.state import Ledger, Rejected, apply_fill, apply_transfer
from handlers.core.valuation import value
from handlers.settings import SHIPPED_CATALOG

CATALOG: Catalog = load_catalog(SHIPPED_CATALOG)
RATIO = Decimal("0.80")
T0 = datetime(2024, 10, 1, tzinfo=UTC)
SYMBOLS = ("BTCUSDT", "ETHUSDT", "BTCUSD_PERP")
#: a price range per symbol (whole units), drawn from
PRICES = {"BTCUSDT": (20_000, 100_000), "ETHUSDT": (800, 5_000), "BTCUSD_PERP": (20_000, 100_000)}

settings.register_profile(
    "bands",
    max_examples=int(os.environ.get("TRADEGUARD_BANDS_EXAMPLES", "1500")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BANDS = settings.get_profile("bands")


def _inst(symbol: str) -> Instrument:
    inst = CATALOG.get(symbol)
    assert inst is not None
    return inst


def _grid(value: Decimal, step: Decimal) -> Decimal:
    """``value`` rounded up to a positive multiple of ``step``."""
    return max((value / step).to_integral_value(ROUND_CEILING), Decimal(1)) * step


def _fill(n: int, symbol: str, side: str, qty: Decimal, price: Decimal, **kw: object) -> Fill:
    return Fill.model_validate(
        {
            "type": "FILL",
            "schemaVersion": 1,
            "tradeId": f"t{n}",
            "accountId": "acct",
            "symbol": symbol,
            "side": side,
            "quantity": qty,
            "price": price,
            "executedAt": T0 + timedelta(seconds=n),
            **kw,
        }
    )


def _transfer(n: int, asset: str, amount: Decimal) -> Transfer:
    return Transfer.model_validate(
        {
            "type": "TRANSFER",
            "schemaVersion": 1,
            "transferId": f"x{n}",
            "accountId": "acct",
            "asset": asset,
            "amount": amount,
            "reason": "ADJUSTMENT",
            "occurredAt": T0,
        }
    )


@st.composite
def quantities(draw: st.DrawFn, inst: Instrument, price: Decimal) -> Decimal:
    """A quantity whose notional is near a bracket boundary, or anywhere up to bracket 4."""
    caps = inst.caps
    if draw(st.booleans()):
        cap = caps[draw(st.integers(0, 3))]
        target = cap * (1 + Decimal(draw(st.integers(-300, 300))) / 10_000)
    else:
        target = caps[3] * Decimal(draw(st.integers(1, 10_000))) / 10_000
    raw = target * price / inst.contract_size if inst.inverse else target / price
    return min(_grid(raw, inst.step_size), inst.max_qty)


@st.composite
def accounts(draw: st.DrawFn, prices: dict[str, Decimal]) -> Ledger:
    """An account built by real fills and transfers: 1-3 symbols, each one-way or a hedge
    pair, cross or isolated; its wallets then set near a risk threshold (or not)."""
    held = draw(st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=3, unique=True))
    ledger = Ledger()
    n = 0
    for asset in ("USDT", "BTC"):
        ledger = apply_transfer(ledger, _transfer(n, asset, Decimal(10**9)), None)
        n += 1
    for symbol in held:
        inst = _inst(symbol)
        price = prices[symbol]
        mode = draw(st.sampled_from(["CROSS", "ISOLATED"]))
        legs = (
            [("BUY", "LONG"), ("SELL", "SHORT")]
            if draw(st.booleans())
            else [(draw(st.sampled_from(["BUY", "SELL"])), "BOTH")]
        )
        for side, position_side in legs:
            entry = _grid(
                price * (1 + Decimal(draw(st.integers(-500, 500))) / 10_000), inst.tick_size
            )
            fill = _fill(
                n,
                symbol,
                side,
                draw(quantities(inst, entry)),
                entry,
                leverage=draw(st.integers(1, 100)),
                marginMode=mode,
                positionSide=position_side,
            )
            n += 1
            try:
                ledger = apply_fill(ledger, fill, inst, None)
            except Rejected:  # pragma: no cover - the legs above never conflict
                raise
    # Put each cross wallet near a threshold: margin balance ≈ factor · maintenance margin.
    valued = value(ledger, CATALOG, RATIO)
    for asset, wallet in valued.wallets.items():
        if not wallet.has_cross_position:
            continue
        mm = wallet.cross_maint_margin
        factor = Decimal(draw(st.sampled_from([95, 100, 110, 120, 125, 130, 150, 300, 2000]))) / 100
        factor *= 1 + Decimal(draw(st.integers(-200, 200))) / 10_000
        target = mm * factor
        change = (target - wallet.cross_margin_balance).quantize(Decimal("1e-8"))
        if change != 0:
            ledger = apply_transfer(ledger, _transfer(n, asset, change), None)
            n += 1
    return ledger


#: ("MARK", symbol, price) or ("ADJUST", account index, asset, amount)
Step = tuple[str, str, Decimal] | tuple[str, int, str, Decimal]


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[dict[str, Decimal], list[Ledger], list[Step], Decimal, Decimal]:
    """Start marks, accounts, a walk of marks (small steps, occasional jumps, several
    symbols) with a few wallet adjustments, the band width, and how much wider than
    :func:`band_box` a box is offered to :func:`box_holds`."""
    prices = {s: _grid(Decimal(draw(st.integers(*PRICES[s]))), _inst(s).tick_size) for s in SYMBOLS}
    ledgers = draw(st.lists(accounts(prices), min_size=1, max_size=3))
    scale = [
        {a: w.cross_maint_margin for a, w in value(lg, CATALOG, RATIO).wallets.items()}
        for lg in ledgers
    ]
    walk: list[Step] = []
    now = dict(prices)
    for _ in range(draw(st.integers(1, 40))):
        if draw(st.integers(0, 9)) == 0:  # an account change: ±0.1 % … 20 % of its margin
            a = draw(st.integers(0, len(ledgers) - 1))
            asset = draw(st.sampled_from(["USDT", "BTC"]))
            share = Decimal(draw(st.integers(-2_000, 2_000))) / 10_000
            amount = (scale[a].get(asset, Decimal(0)) * share).quantize(Decimal("1e-8"))
            if amount != 0:
                walk.append(("ADJUST", a, asset, amount))
            continue
        symbol = draw(st.sampled_from(SYMBOLS))
        if draw(st.integers(0, 9)) == 0:  # a jump: 1 % to 25 %
            move = Decimal(draw(st.integers(100, 2_500))) / 10_000
        else:  # a small step: up to 0.4 %
            move = Decimal(draw(st.integers(0, 40))) / 10_000
        sign = draw(st.sampled_from([1, -1]))
        price = _grid(now[symbol] * (1 + sign * move), _inst(symbol).tick_size)
        now[symbol] = price
        walk.append(("MARK", symbol, price))
    width = draw(st.sampled_from([Decimal("0.01"), Decimal("0.05"), Decimal("0.10")]))
    wider = draw(st.sampled_from([Decimal(0), Decimal("0.001"), Decimal("0.01"), Decimal("0.05")]))
    return prices, ledgers, walk, width, wider


def _held(ledger: Ledger) -> list[str]:
    return sorted({p.symbol for p in ledger.positions if p.quantity != 0})


def _states(ledger: Ledger) -> tuple[object, ...]:
    return (
        tuple(sorted((a, w.risk_state) for a, w in ledger.wallets.items())),
        tuple((p.key, p.risk_state) for p in ledger.positions),
    )


class Banded:
    """The band-driven path's accounts: ledgers, boxes, and how often they re-valued."""

    def __init__(self, width: Decimal, wider: Decimal, catalog: Catalog) -> None:
        self.width = width
        self.wider = wider
        self.catalog = catalog
        self.revaluations = 0

    def box(self, ledger: Ledger, kept: dict[str, Band] | None) -> dict[str, Band]:
        """``kept`` if it holds for ``ledger``; else a box :func:`box_holds` accepts: the
        one :func:`band_box` finds, or that box made ``wider`` when that one holds too."""
        catalog = self.catalog
        if kept is not None and box_holds(ledger, catalog, RATIO, kept):
            return kept
        box = band_box(ledger, catalog, RATIO, self.width)
        assert box_holds(ledger, catalog, RATIO, box)
        if self.wider:
            wide = {
                s: (lo * (1 - self.wider), hi * (1 + self.wider)) for s, (lo, hi) in box.items()
            }
            if box_holds(ledger, catalog, RATIO, wide):
                return wide
        return box


def run_paths(
    prices: dict[str, Decimal],
    ledgers: Sequence[Ledger],
    walk: Sequence[Step],
    width: Decimal,
    wider: Decimal = Decimal(0),
    catalog: Catalog = CATALOG,
) -> tuple[int, int]:
    """Play ``walk`` over ``ledgers`` both ways and assert they agree, per (step,
    account) and at the end; return (alerts, re-valuations of the band-driven path)."""
    start = T0 + timedelta(hours=1)
    path = Banded(width, wider, catalog)
    ref: list[Ledger] = []
    banded: list[Ledger] = []
    boxes: list[dict[str, Band]] = []
    for ledger in ledgers:
        first: list[MarkAt] = [(s, prices[s], start) for s in _held(ledger)]
        settled, _, _ = revalue_at(ledger, first, catalog, RATIO)
        ref.append(settled)
        banded.append(settled)
        boxes.append(path.box(settled, None))
    latest: dict[str, MarkAt] = {s: (s, p, start) for s, p in prices.items()}
    alerts = 0

    def catch_up(a: int) -> list[AlertSpec]:
        marks = sorted((latest[s] for s in _held(banded[a])), key=lambda m: m[2])
        banded[a], got, _ = revalue_at(banded[a], marks, catalog, RATIO)
        path.revaluations += 1
        boxes[a] = path.box(banded[a], boxes[a])
        return got

    for i, step in enumerate(walk):
        if step[0] == "ADJUST":
            _, a, asset, amount = step
            assert isinstance(a, int) and isinstance(amount, Decimal)
            change = _transfer(1000 + i, str(asset), amount)
            ref[a], expected, _ = revalue_at(
                apply_transfer(ref[a], change, None), [], catalog, RATIO
            )
            banded[a] = apply_transfer(banded[a], change, None)
            got = catch_up(a)
            assert got == expected, (i, a, step, boxes[a])
            alerts += len(expected)
            continue
        _, symbol, price = step
        assert isinstance(symbol, str)
        mark: MarkAt = (symbol, price, start + timedelta(seconds=i + 1))
        latest[symbol] = mark
        for a in range(len(ledgers)):
            ref[a], expected, _ = revalue_at(ref[a], [mark], catalog, RATIO)
            band = boxes[a].get(symbol)
            got = catch_up(a) if band is not None and outside(band, price) else []
            assert got == expected, (i, a, mark, boxes[a])
            alerts += len(expected)
    for a in range(len(ledgers)):
        assert _states(banded[a]) == _states(ref[a]), a
    return alerts, path.revaluations


@BANDS
@given(scenarios())
def test_band_driven_revaluation_raises_what_revaluing_every_mark_raises(
    scenario: tuple[dict[str, Decimal], list[Ledger], list[Step], Decimal, Decimal],
) -> None:
    _, ledgers, walk, _, _ = scenario
    alerts, revaluations = run_paths(*scenario)
    event(f"alerts: {min(alerts, 3)}{'+' if alerts >= 3 else ''}")
    event(f"re-valued at {revaluations * 10 // max(1, len(walk) * len(ledgers)) * 10}% of marks")
