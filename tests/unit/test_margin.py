"""Margin mathematics: valuation numbers, liquidation prices, risk states (by hand)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal, localcontext

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from handlers.core.catalog import Catalog, Instrument
from handlers.core.decimals import MONEY
from handlers.core.margin import Leg, Liquidation, initial_margin, liquidation_price, maint_margin
from handlers.core.state import Ledger, Position, apply_fill
from handlers.core.valuation import Valuation

from .builders import T0, D, deposit, fill, marked, valued


def exact(numerator: int | str | Decimal, denominator: int | str | Decimal) -> Decimal:
    with localcontext(MONEY):
        return Decimal(numerator) / Decimal(denominator)


def open_(ledger: Ledger, inst: Instrument, **changes: object) -> Ledger:
    return apply_fill(ledger, fill(symbol=inst.symbol, **changes), inst, None)


def lp_of(valuation: Valuation, symbol: str = "BTCUSDT", side: str = "BOTH") -> Liquidation | None:
    view = valuation.position(symbol, side)
    assert view is not None
    return view.liquidation


# --- maintenance / initial margin -----------------------------------------------------


def test_maint_margin_uses_the_bracket_of_the_notional(btcusdt: Instrument) -> None:
    assert maint_margin(btcusdt, D(0)) == 0
    assert maint_margin(btcusdt, D(6000)) == D(24)  # 6000 × 0.4 %
    assert maint_margin(btcusdt, D(100000)) == D(450)  # 100000 × 0.5 % − 50
    assert maint_margin(btcusdt, D(600000)) == D(600000) * D("0.0065") - 950


def test_initial_margin() -> None:
    assert initial_margin(D(6000), 10) == D(600)
    assert initial_margin(D(100), 3) == exact(100, 3)


# --- valuation by hand ----------------------------------------------------------------


def test_cross_and_isolated_wallet_numbers(
    catalog: Catalog, btcusdt: Instrument, ethusdt: Instrument
) -> None:
    ledger = deposit(Ledger(), "1000")
    ledger = open_(ledger, btcusdt, quantity="0.1", price="60000", leverage=10)
    ledger = open_(
        ledger, ethusdt, side="SELL", quantity="1", price="2500", leverage=5, marginMode="ISOLATED"
    )
    ledger = marked(marked(ledger, "BTCUSDT", "61000"), "ETHUSDT", "2600")
    v = valued(ledger, catalog)
    w = v.wallets["USDT"]
    assert w.wallet_balance == D(1000)
    assert w.cross_wallet_balance == D(500)  # 1000 − 500 isolated (2500 / 5)
    assert w.cross_margin_balance == D(600)  # 500 + 0.1 × (61000 − 60000)
    assert w.cross_initial_margin == D(610)  # 6100 / 10
    assert w.available_balance == D(-10)  # 600 − 610, may be negative
    assert w.cross_maint_margin == D("24.4")  # 6100 × 0.004
    assert w.margin_ratio == exact("24.4", 600)
    assert w.margin_balance == D(1000)  # 1000 + 100 − 100 (all positions)
    assert w.total_initial_margin == D(610) + D(520)
    assert w.total_maint_margin == D("24.4") + D("10.4")
    assert w.has_cross_position
    assert w.risk_state == "NORMAL"

    btc = v.position("BTCUSDT", "BOTH")
    assert btc is not None
    assert (btc.notional, btc.unrealized_pnl, btc.initial_margin, btc.maint_margin) == (
        D(6100),
        D(100),
        D(610),
        D("24.4"),
    )
    assert btc.margin_ratio is None  # cross: the wallet's ratio
    eth = v.position("ETHUSDT", "BOTH")
    assert eth is not None
    assert eth.notional == D(2600)
    assert eth.unrealized_pnl == D(-100)  # −1 × (2600 − 2500)
    assert eth.margin_balance == D(400)  # 500 − 100
    assert eth.maint_margin == D("10.4")
    assert eth.margin_ratio == exact("10.4", 400)
    assert eth.risk_state == "NORMAL"
    # cross LP of BTC: the cross wallet is 500 (the isolated margin is not in it)
    assert btc.liquidation == Liquidation(exact(500 - 6000, D("0.0004") - D("0.1")), True)
    # isolated short LP: (500 + 1 × 2500) / (1 × 0.004 + 1)
    assert eth.liquidation == Liquidation(exact(3000, "1.004"), False)


def test_valuation_without_mark_uses_the_fill_price(catalog: Catalog, btcusdt: Instrument) -> None:
    ledger = open_(deposit(Ledger(), "1000"), btcusdt, quantity="0.1", price="60000")
    view = valued(ledger, catalog).position("BTCUSDT", "BOTH")
    assert view is not None
    assert view.mark == D(60000)
    assert view.unrealized_pnl == 0


def test_wallet_without_positions(catalog: Catalog) -> None:
    w = valued(deposit(Ledger(), "250"), catalog).wallets["USDT"]
    assert w.wallet_balance == w.cross_wallet_balance == w.available_balance == D(250)
    assert w.margin_ratio == 0
    assert w.risk_state == "NORMAL"
    assert not w.has_cross_position


def test_closed_positions_are_not_valued(catalog: Catalog, btcusdt: Instrument) -> None:
    ledger = open_(deposit(Ledger(), "1000"), btcusdt, quantity="0.1", price="60000")
    ledger = open_(ledger, btcusdt, side="SELL", quantity="0.1", price="61000")
    v = valued(ledger, catalog)
    assert v.position("BTCUSDT", "BOTH") is None
    assert v.wallets["USDT"].wallet_balance == D(1100)


# --- liquidation price: Binance USDⓈ-M ------------------------------------------------

BINANCE_CROSS_LONG = "50200.80321285140562248995983935742971887550200803212851405622"


def test_cross_long_one_way_example(catalog: Catalog, btcusdt: Instrument) -> None:
    # LP = (WB − TMM + UPNL + cum − q·EP) / (|q|·MMR − q) = (1000 − 6000)/(0.0004 − 0.1)
    ledger = open_(deposit(Ledger(), "1000"), btcusdt, quantity="0.1", price="60000")
    liq = lp_of(valued(ledger, catalog))
    assert liq is not None
    assert liq.falls_to
    assert liq.price == exact(-5000, "-0.0996")
    assert str(liq.price)[:50] == BINANCE_CROSS_LONG[:50]
    assert abs(liq.price - D(BINANCE_CROSS_LONG)) < D("1e-50")


def test_isolated_long_example(catalog: Catalog, btcusdt: Instrument) -> None:
    ledger = open_(
        deposit(Ledger(), "1000"),
        btcusdt,
        quantity="0.1",
        price="60000",
        leverage=10,
        marginMode="ISOLATED",
    )
    liq = lp_of(valued(ledger, catalog))
    # (600 − 6000) / (0.0004 − 0.1): the wallet is the isolated margin
    assert liq == Liquidation(exact(-5400, "-0.0996"), True)
    assert str(liq.price).startswith("54216.867469879518072289156626506024096385542168674")


def test_cross_short_example(catalog: Catalog, btcusdt: Instrument) -> None:
    ledger = open_(deposit(Ledger(), "1000"), btcusdt, side="SELL", quantity="0.1", price="60000")
    liq = lp_of(valued(ledger, catalog))
    # (1000 + 6000) / (0.0004 + 0.1)
    assert liq == Liquidation(exact(7000, "0.1004"), False)
    assert str(liq.price).startswith("69721.1155378486055776892430278884462151394422310")


def test_cross_other_symbols_enter_with_mm_and_upnl(
    catalog: Catalog, btcusdt: Instrument, ethusdt: Instrument
) -> None:
    ledger = deposit(Ledger(), "1000")
    ledger = open_(ledger, btcusdt, quantity="0.1", price="60000")
    ledger = open_(ledger, ethusdt, quantity="1", price="2500")
    ledger = marked(ledger, "ETHUSDT", "2400")
    v = valued(ledger, catalog)
    # ETH: MM 2400 × 0.004 = 9.6, uPnL −100 → BTC LP = (1000 − 9.6 − 100 − 6000) / (0.0004 − 0.1)
    assert lp_of(v) == Liquidation(exact("-5109.6", "-0.0996"), True)
    # BTC at its fill price: MM 24, uPnL 0 → ETH LP = (1000 − 24 + 0 − 2500) / (0.004 − 1)
    assert lp_of(v, "ETHUSDT") == Liquidation(exact(-1524, "-0.996"), True)


def test_hedge_pair_shares_one_liquidation_price(catalog: Catalog, btcusdt: Instrument) -> None:
    ledger = deposit(Ledger(), "1000")
    ledger = open_(ledger, btcusdt, positionSide="LONG", quantity="0.2", price="60000")
    ledger = open_(
        ledger, btcusdt, positionSide="SHORT", side="SELL", quantity="0.1", price="61000"
    )
    v = valued(ledger, catalog)
    # (1000 − (0.2×60000 − 0.1×61000)) / (0.2×0.004 + 0.1×0.004 − (0.2 − 0.1))
    expected = Liquidation(exact(-4900, "-0.0988"), True)
    assert lp_of(v, side="LONG") == expected
    assert lp_of(v, side="SHORT") == expected


def test_net_short_hedge_pair_liquidates_as_the_price_rises(
    catalog: Catalog, btcusdt: Instrument
) -> None:
    ledger = deposit(Ledger(), "1000")
    ledger = open_(ledger, btcusdt, positionSide="LONG", quantity="0.1", price="60000")
    ledger = open_(
        ledger, btcusdt, positionSide="SHORT", side="SELL", quantity="0.3", price="60000"
    )
    v = valued(ledger, catalog)
    # (1000 − (0.1×60000 − 0.3×60000)) / (0.4×0.004 − (0.1 − 0.3)): the denominator is > 0
    expected = Liquidation(exact(13000, "0.2016"), False)
    assert lp_of(v, side="LONG") == expected
    assert lp_of(v, side="SHORT") == expected
    assert not expected.reached_by(D(60000))
    assert v.wallets["USDT"].risk_state == "NORMAL"
    at_lp = valued(marked(ledger, "BTCUSDT", "64484.2"), catalog)
    assert at_lp.wallets["USDT"].risk_state == "LIQUIDATION"


def test_bracket_is_the_one_at_the_liquidation_price(btcusdt: Instrument) -> None:
    # 10 BTC at 60000: 600000 at the mark (bracket 3), but at the LP the notional is in
    # bracket 2: LP = (20000 + 50 − 600000) / (10 × 0.005 − 10)
    liq = liquidation_price(btcusdt, [Leg(D(10), D(60000))], D(60000), D(20000))
    assert liq == Liquidation(exact(-579950, "-9.95"), True)
    assert btcusdt.bracket_for(btcusdt.notional(D(10), liq.price)).bracket == 2
    with_bracket_3 = exact(20000 + 950 - 600000, D(10) * D("0.0065") - 10)
    assert liq.price != with_bracket_3


def test_over_collateralized_linear_long_has_no_liquidation_price(
    catalog: Catalog, btcusdt: Instrument
) -> None:
    ledger = open_(deposit(Ledger(), "10000"), btcusdt, quantity="0.1", price="60000")
    assert lp_of(valued(ledger, catalog)) is None
    assert liquidation_price(btcusdt, [Leg(D("0.1"), D(60000))], D(60000), D(6000)) is None
    isolated_1x = open_(
        deposit(Ledger(), "10000"), btcusdt, quantity="0.1", leverage=1, marginMode="ISOLATED"
    )
    assert lp_of(valued(isolated_1x, catalog)) is None


def test_no_open_quantity_has_no_liquidation_price(btcusdt: Instrument) -> None:
    assert liquidation_price(btcusdt, [], D(60000), D(1000)) is None
    assert liquidation_price(btcusdt, [Leg(D(0), D(60000))], D(60000), D(1000)) is None


# --- liquidation price: Binance COIN-M ------------------------------------------------
# From handlers/core/margin.py: P = (Σ|q|·cs·MMR + Σ q·cs) / (WB − TMM + UPNL + Σcum + Σ q·cs/EP)


def test_coin_m_cross_long(catalog: Catalog, btcusd_perp: Instrument) -> None:
    ledger = open_(deposit(Ledger(), "0.01", "BTC"), btcusd_perp, quantity="100", price="50000")
    liq = lp_of(valued(ledger, catalog), "BTCUSD_PERP")
    # (100×100×0.004 + 100×100) / (0.01 + 100×100/50000) = 10040 / 0.21
    assert liq == Liquidation(exact(10040, "0.21"), True)
    assert str(liq.price).startswith("47809.523809523809523809523809523809523809523")


def test_coin_m_isolated_long(catalog: Catalog, btcusd_perp: Instrument) -> None:
    ledger = open_(
        deposit(Ledger(), "1", "BTC"),
        btcusd_perp,
        quantity="100",
        price="50000",
        leverage=10,
        marginMode="ISOLATED",
    )
    liq = lp_of(valued(ledger, catalog), "BTCUSD_PERP")
    # isolated margin 0.02 BTC: 10040 / (0.02 + 0.2)
    assert liq == Liquidation(exact(10040, "0.22"), True)


def test_coin_m_cross_short(catalog: Catalog, btcusd_perp: Instrument) -> None:
    ledger = open_(
        deposit(Ledger(), "0.01", "BTC"), btcusd_perp, side="SELL", quantity="100", price="50000"
    )
    liq = lp_of(valued(ledger, catalog), "BTCUSD_PERP")
    # (40 − 10000) / (0.01 − 0.2)
    assert liq == Liquidation(exact(-9960, "-0.19"), False)


def test_coin_m_margin_balance_equals_maintenance_at_the_price(btcusd_perp: Instrument) -> None:
    liq = liquidation_price(btcusd_perp, [Leg(D(100), D(50000))], D(50000), D("0.01"))
    assert liq is not None
    with localcontext(MONEY):
        balance = D("0.01") + btcusd_perp.pnl(D(100), D(50000), liq.price)
        maint = maint_margin(btcusd_perp, btcusd_perp.notional(D(100), liq.price))
        assert abs(balance - maint) < D("1e-50")


# --- reached_by -----------------------------------------------------------------------


def test_reached_by_falling() -> None:
    liq = Liquidation(D(100), falls_to=True)
    assert liq.reached_by(D(100))
    assert liq.reached_by(D(99))
    assert not liq.reached_by(D("100.0000001"))


def test_reached_by_rising() -> None:
    liq = Liquidation(D(100), falls_to=False)
    assert liq.reached_by(D(100))
    assert liq.reached_by(D(101))
    assert not liq.reached_by(D("99.9999999"))


# --- risk states ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mark", "state"),
    [
        ("60000", "NORMAL"),
        ("50300", "NORMAL"),  # ratio 20.12/30 = 0.67
        ("50250", "MARGIN_CALL"),  # ratio 20.1/25 = 0.804
        ("50200.9", "MARGIN_CALL"),  # just above the LP
        ("50200.8", "LIQUIDATION"),  # at or beyond the LP
        ("50000", "LIQUIDATION"),  # cross margin balance 0: ratio null
        ("40000", "LIQUIDATION"),  # negative balance
    ],
)
def test_cross_risk_states(catalog: Catalog, btcusdt: Instrument, mark: str, state: str) -> None:
    ledger = open_(deposit(Ledger(), "1000"), btcusdt, quantity="0.1", price="60000")
    w = valued(marked(ledger, "BTCUSDT", mark), catalog).wallets["USDT"]
    assert w.risk_state == state
    if D(mark) <= 50000:
        assert w.margin_ratio is None


@pytest.mark.parametrize(
    ("mark", "state"),
    [
        ("60000", "NORMAL"),
        ("54240", "MARGIN_CALL"),
        ("54216.8", "LIQUIDATION"),
        ("53000", "LIQUIDATION"),
    ],
)
def test_isolated_risk_states(catalog: Catalog, btcusdt: Instrument, mark: str, state: str) -> None:
    ledger = open_(
        deposit(Ledger(), "1000"),
        btcusdt,
        quantity="0.1",
        price="60000",
        leverage=10,
        marginMode="ISOLATED",
    )
    v = valued(marked(ledger, "BTCUSDT", mark), catalog)
    view = v.position("BTCUSDT", "BOTH")
    assert view is not None
    assert view.risk_state == state
    assert v.wallets["USDT"].risk_state == "NORMAL"  # no cross position
    assert v.risk_state == state  # the account's worst state


# --- property: the liquidation price is where the margin ratio reaches 1 ---------------

LINEAR_QTY = st.integers(min_value=1, max_value=50_000).map(lambda n: Decimal(n) / 1000)
INVERSE_QTY = st.integers(min_value=1, max_value=200_000).map(Decimal)
PRICE = st.integers(min_value=10_000, max_value=1_000_000).map(lambda n: Decimal(n) / 10)


@settings(max_examples=300, deadline=None)
@given(
    symbol=st.sampled_from(["BTCUSDT", "ETHUSDT", "BTCUSD_PERP"]),
    long=st.booleans(),
    linear_qty=LINEAR_QTY,
    inverse_qty=INVERSE_QTY,
    entry=PRICE,
    leverage=st.integers(min_value=1, max_value=125),
    move=st.integers(min_value=-30, max_value=30),
)
def test_isolated_margin_ratio_is_one_at_the_liquidation_price(
    catalog: Catalog,
    symbol: str,
    long: bool,
    linear_qty: Decimal,
    inverse_qty: Decimal,
    entry: Decimal,
    leverage: int,
    move: int,
) -> None:
    inst = catalog.instruments[symbol]
    size = inverse_qty if inst.inverse else linear_qty
    quantity = size if long else -size
    with localcontext(MONEY):
        iso = inst.notional(quantity, entry) / leverage
        mark = entry * (1 + Decimal(move) / 100)
    position = Position(
        symbol=symbol,
        position_side="BOTH",
        margin_mode="ISOLATED",
        quantity=quantity,
        entry_price=entry,
        leverage=leverage,
        isolated_margin=iso,
        realized_pnl=Decimal(0),
        last_fill_price=entry,
        mark_price=mark,
        mark_time=T0,
        risk_state="NORMAL",
        updated_at=T0,
    )
    ledger = Ledger(positions=(position,))
    view = valued(ledger, catalog).position(symbol, "BOTH")
    assert view is not None
    liq = view.liquidation
    assume(liq is not None)
    assert liq is not None
    # only when the bracket at the LP is the bracket the LP was computed with
    again = liquidation_price(inst, [Leg(quantity, entry)], liq.price, iso)
    assume(again is not None and again.price == liq.price)
    at_lp = Ledger(positions=(replace(position, mark_price=liq.price),))
    view_at_lp = valued(at_lp, catalog).position(symbol, "BOTH")
    assert view_at_lp is not None
    assert view_at_lp.margin_ratio is not None
    assert abs(view_at_lp.margin_ratio - 1) <= Decimal("1e-12")
    assert view_at_lp.risk_state == "LIQUIDATION"
