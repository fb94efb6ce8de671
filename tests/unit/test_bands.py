"""Risk bands (handlers/core/bands.py): boxes that hold, boxes that cross a threshold,
inverse and hedge positions, bracket boundaries, the degenerate fallback, outside()."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from handlers.core import bands
from handlers.core.bands import band_box, box_holds, outside
from handlers.core.catalog import Catalog
from handlers.core.state import Ledger, apply_fill
from handlers.core.valuation import value

from .builders import CALL_RATIO, D, deposit, fill, marked

WIDTH = D("0.10")


def _open(catalog: Catalog, ledger: Ledger, symbol: str, **changes: object) -> Ledger:
    inst = catalog.get(symbol)
    assert inst is not None
    return apply_fill(ledger, fill(symbol=symbol, **changes), inst, None)


def _states(ledger: Ledger, catalog: Catalog, symbol: str, price: Decimal) -> tuple[str, ...]:
    valued = value(marked(ledger, symbol, str(price)), catalog, CALL_RATIO)
    wallets = tuple(w.risk_state for _, w in sorted(valued.wallets.items()))
    isolated = [v for v in valued.positions if v.position.margin_mode == "ISOLATED"]
    return wallets + tuple(v.risk_state for v in isolated)


def _constant_on_a_grid(
    ledger: Ledger, catalog: Catalog, symbol: str, band: tuple[Decimal, Decimal]
) -> None:
    lo, hi = band
    here = _states(ledger, catalog, symbol, lo)
    for k in range(1, 41):
        assert _states(ledger, catalog, symbol, lo + (hi - lo) * k / 40) == here


@pytest.fixture
def btc_long(catalog: Catalog) -> Ledger:
    """docs/margin.md example 1: 1000 USDT, cross long 0.1 BTCUSDT at 60000, mark 60000
    (margin ratio 0.024; MARGIN_CALL from 50251.26 down, liquidation at 50200.80)."""
    ledger = deposit(Ledger(), "1000")
    ledger = _open(catalog, ledger, "BTCUSDT", side="BUY", quantity="0.1", price="60000")
    return marked(ledger, "BTCUSDT", "60000")


def test_a_box_far_from_every_threshold_takes_the_whole_width(
    catalog: Catalog, btc_long: Ledger
) -> None:
    box = band_box(btc_long, catalog, CALL_RATIO, WIDTH)
    assert box == {"BTCUSDT": (D("54000"), D("66000"))}
    assert box_holds(btc_long, catalog, CALL_RATIO, box)
    _constant_on_a_grid(btc_long, catalog, "BTCUSDT", box["BTCUSDT"])


def test_a_box_that_crosses_margin_call_does_not_hold_and_the_search_stops_short_of_it(
    catalog: Catalog, btc_long: Ledger
) -> None:
    assert not box_holds(btc_long, catalog, CALL_RATIO, {"BTCUSDT": (D("50000"), D("60000"))})
    assert _states(btc_long, catalog, "BTCUSDT", D("50251.2")) == ("MARGIN_CALL",)
    assert _states(btc_long, catalog, "BTCUSDT", D("50251.3")) == ("NORMAL",)
    lo, hi = band_box(btc_long, catalog, CALL_RATIO, D("0.25"))["BTCUSDT"]
    assert D("50251.3") <= lo < D("50500")  # within 0.5 % of the threshold
    assert hi == D("75000")  # the other side takes the whole width
    assert box_holds(btc_long, catalog, CALL_RATIO, {"BTCUSDT": (lo, hi)})
    assert not box_holds(btc_long, catalog, CALL_RATIO, {"BTCUSDT": (D("50251.2"), hi)})


def test_a_margin_call_box_holds_between_normal_and_liquidation(
    catalog: Catalog, btc_long: Ledger
) -> None:
    ledger = marked(btc_long, "BTCUSDT", "50230")
    assert _states(ledger, catalog, "BTCUSDT", D("50230")) == ("MARGIN_CALL",)
    lo, hi = band_box(ledger, catalog, CALL_RATIO, WIDTH)["BTCUSDT"]
    # Between the liquidation price 50200.80 and the margin-call boundary 50251.26, less
    # what bounding margin balance and maintenance margin separately costs near ratio 1.
    assert D("50200.9") <= lo < D("50210") and D("50230") < hi <= D("50251.2")
    assert box_holds(ledger, catalog, CALL_RATIO, {"BTCUSDT": (lo, hi)})
    assert not box_holds(ledger, catalog, CALL_RATIO, {"BTCUSDT": (D("50200.8"), hi)})
    assert not box_holds(ledger, catalog, CALL_RATIO, {"BTCUSDT": (lo, D("50251.3"))})
    _constant_on_a_grid(ledger, catalog, "BTCUSDT", (lo, hi))


def test_a_liquidation_box_holds_while_the_ratio_stays_at_or_above_one(
    catalog: Catalog, btc_long: Ledger
) -> None:
    ledger = marked(btc_long, "BTCUSDT", "48000")
    lo, hi = band_box(ledger, catalog, CALL_RATIO, WIDTH)["BTCUSDT"]
    assert lo == D("43200") and D("49900") < hi <= D("50200.8")
    _constant_on_a_grid(ledger, catalog, "BTCUSDT", (lo, hi))


def test_inverse_short_isolated(catalog: Catalog) -> None:
    """docs/margin.md example 5: isolated short 300 BTCUSD_PERP at 64000, liquidation at
    79680; the notional |q|·cs/P falls as the mark rises."""
    ledger = _open(
        catalog,
        Ledger(),
        "BTCUSD_PERP",
        side="SELL",
        quantity="300",
        price="64000",
        leverage=5,
        marginMode="ISOLATED",
    )
    ledger = marked(ledger, "BTCUSD_PERP", "64000")
    lo, hi = band_box(ledger, catalog, CALL_RATIO, D("0.5"))["BTCUSD_PERP"]
    assert lo == D("32000") and D("74000") < hi < D("79680")
    assert box_holds(ledger, catalog, CALL_RATIO, {"BTCUSD_PERP": (lo, hi)})
    assert not box_holds(ledger, catalog, CALL_RATIO, {"BTCUSD_PERP": (lo, D("79680"))})
    _constant_on_a_grid(ledger, catalog, "BTCUSD_PERP", (lo, hi))


def test_a_hedge_pair_is_bounded_leg_by_leg(catalog: Catalog) -> None:
    ledger = deposit(Ledger(), "200")
    for side, position_side, qty in (("BUY", "LONG", "0.3"), ("SELL", "SHORT", "0.2")):
        ledger = _open(
            catalog,
            ledger,
            "BTCUSDT",
            side=side,
            positionSide=position_side,
            quantity=qty,
            price="60000",
        )
    ledger = marked(ledger, "BTCUSDT", "60000")
    box = band_box(ledger, catalog, CALL_RATIO, WIDTH)
    lo, hi = box["BTCUSDT"]
    # Each leg bounded at its own worst end (an outer bound): narrower than the net
    # long 0.1 alone would need, and sound.
    assert lo < D("60000") < hi
    assert box_holds(ledger, catalog, CALL_RATIO, box)
    _constant_on_a_grid(ledger, catalog, "BTCUSDT", (lo, hi))


def test_a_band_across_a_bracket_boundary_counts_both_brackets(catalog: Catalog) -> None:
    """0.85 BTCUSDT: notional 50000 (the bracket 1 → 2 boundary) at 58823.53."""
    ledger = deposit(Ledger(), "2000")
    ledger = _open(catalog, ledger, "BTCUSDT", side="SELL", quantity="0.85", price="58500")
    ledger = marked(ledger, "BTCUSDT", "58500")
    lo, hi = band_box(ledger, catalog, CALL_RATIO, WIDTH)["BTCUSDT"]
    assert hi > D("58823.53")
    assert box_holds(ledger, catalog, CALL_RATIO, {"BTCUSDT": (lo, hi)})
    _constant_on_a_grid(ledger, catalog, "BTCUSDT", (lo, hi))


def test_two_cross_symbols_of_one_asset_share_the_wallet(catalog: Catalog) -> None:
    ledger = deposit(Ledger(), "5000")
    ledger = _open(catalog, ledger, "BTCUSDT", side="BUY", quantity="0.5", price="64000")
    ledger = _open(catalog, ledger, "ETHUSDT", side="SELL", quantity="2", price="2500")
    ledger = marked(marked(ledger, "BTCUSDT", "64000"), "ETHUSDT", "2500")
    box = band_box(ledger, catalog, CALL_RATIO, WIDTH)
    assert set(box) == {"BTCUSDT", "ETHUSDT"}
    assert box_holds(ledger, catalog, CALL_RATIO, box)
    (b_lo, _), (_, e_hi) = box["BTCUSDT"], box["ETHUSDT"]
    # Both at their worst corner of the box: still NORMAL (the corner bounds the box).
    worst = marked(marked(ledger, "BTCUSDT", str(b_lo)), "ETHUSDT", str(e_hi))
    assert value(worst, catalog, CALL_RATIO).risk_state == "NORMAL"


def test_the_degenerate_band_is_the_last_resort(
    catalog: Catalog, btc_long: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = bands._proven

    def nothing_wider(unit: bands._Unit, box: dict[str, bands.Band], call: Decimal) -> bool:
        if any(lo != hi for lo, hi in box.values()):
            return False
        return real(unit, box, call)

    monkeypatch.setattr(bands, "_proven", nothing_wider)
    box = band_box(btc_long, catalog, CALL_RATIO, WIDTH)
    assert box == {"BTCUSDT": (D("60000"), D("60000"))}
    assert box_holds(btc_long, catalog, CALL_RATIO, box)


def test_a_state_exactly_at_a_threshold_gets_the_degenerate_band(catalog: Catalog) -> None:
    # 1025 USDT, long 0.1 from 60000: at 50000 the ratio is 20 / 25 = 0.8 exactly.
    ledger = deposit(Ledger(), "1025")
    ledger = _open(catalog, ledger, "BTCUSDT", side="BUY", quantity="0.1", price="60000")
    ledger = marked(ledger, "BTCUSDT", "50000")
    wallet = value(ledger, catalog, CALL_RATIO).wallets["USDT"]
    assert wallet.margin_ratio == D("0.8") and wallet.risk_state == "MARGIN_CALL"
    # Margin balance and maintenance margin are bounded each at its own worst end, so
    # no band around a point exactly on the threshold verifies: the degenerate band.
    assert band_box(ledger, catalog, CALL_RATIO, WIDTH) == {"BTCUSDT": (D("50000"), D("50000"))}


def test_zero_width_symbols_without_instrument_and_closed_positions(
    catalog: Catalog, btc_long: Ledger
) -> None:
    assert band_box(btc_long, catalog, CALL_RATIO, D(0)) == {"BTCUSDT": (D("60000"), D("60000"))}
    only_eth = Catalog({"ETHUSDT": catalog.instruments["ETHUSDT"]})
    assert band_box(btc_long, only_eth, CALL_RATIO, WIDTH) == {}
    assert box_holds(btc_long, only_eth, CALL_RATIO, {})
    closed = _open(catalog, btc_long, "BTCUSDT", side="SELL", quantity="0.1", price="61000")
    assert band_box(closed, catalog, CALL_RATIO, WIDTH) == {}
    with pytest.raises(ValueError, match="width"):
        band_box(btc_long, catalog, CALL_RATIO, D(1))


def test_a_box_must_cover_every_open_symbol_and_its_mark(
    catalog: Catalog, btc_long: Ledger
) -> None:
    assert not box_holds(btc_long, catalog, CALL_RATIO, {})
    assert not box_holds(btc_long, catalog, CALL_RATIO, {"BTCUSDT": (D("60001"), D("61000"))})
    assert not box_holds(btc_long, catalog, CALL_RATIO, {"BTCUSDT": (D("0"), D("61000"))})
    assert box_holds(btc_long, catalog, CALL_RATIO, {"BTCUSDT": (D("60000"), D("60000"))})
    extra = {"BTCUSDT": (D("59000"), D("61000")), "ETHUSDT": (D("1"), D("2"))}
    assert box_holds(btc_long, catalog, CALL_RATIO, extra)


def test_an_irregular_bracket_table_is_bounded_by_all_its_lines(catalog: Catalog) -> None:
    """A table the loader would refuse (a jump of 50 in maintenance margin at 50000):
    every line at both ends bounds it, and the box still holds on a grid."""
    inst = catalog.instruments["BTCUSDT"]
    jump = replace(inst.brackets[1], maint_amount=D(0))
    irregular = replace(inst, brackets=(inst.brackets[0], jump, *inst.brackets[2:]))
    assert bands._spec(inst).regular and not bands._spec(irregular).regular
    odd = Catalog({"BTCUSDT": irregular})
    ledger = deposit(Ledger(), "700")
    ledger = _open(odd, ledger, "BTCUSDT", side="SELL", quantity="0.85", price="58500")
    ledger = marked(ledger, "BTCUSDT", "58500")
    box = band_box(ledger, odd, CALL_RATIO, WIDTH)
    assert box_holds(ledger, odd, CALL_RATIO, box)
    _constant_on_a_grid(ledger, odd, "BTCUSDT", box["BTCUSDT"])


@pytest.mark.parametrize(
    ("price", "expected"),
    [("99.9", True), ("100", False), ("105", False), ("110", False), ("110.01", True)],
)
def test_outside(price: str, expected: bool) -> None:
    assert outside((D("100"), D("110")), D(price)) is expected
