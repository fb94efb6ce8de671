"""The pure core of the pre-trade ORDER check (handlers.core.orders, handlers.core.order_checks).

Every reason code is tested next to its neighbour that passes; the ledgers are built with
the same transitions the service applies (apply_fill, apply_transfer), on the shipped
catalog. docs/orders.md quotes the worked examples run here.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal, localcontext
from typing import Any

import pytest

from handlers.core.catalog import Catalog, Instrument
from handlers.core.decimals import MONEY
from handlers.core.order_checks import (
    AccountView,
    OrderDecision,
    StoredMark,
    decide_order,
    to_open_order,
)
from handlers.core.orders import (
    OpenOrder,
    OrderSettings,
    OrderTerms,
    open_order_margin,
    opening_quantity,
    order_cost,
    order_price,
    release_on_fill,
    release_on_fills,
)
from handlers.core.state import Ledger, apply_fill
from handlers.core.valuation import value

from .builders import CALL_RATIO, T0, D, deposit, fill

MARK_AT = T0 - timedelta(seconds=10)
MARK: StoredMark = (D("60000"), MARK_AT)
SETTINGS = OrderSettings(position_limits={"USDT": D("10000000"), "BTC": D("200")})


# --- builders ----------------------------------------------------------------------------


def order(**changes: Any) -> OrderTerms:
    """A LIMIT BUY of 0.1 BTCUSDT at 60,000, 10x, cross, one-way, submitted at T0."""
    base = OrderTerms(
        order_id="O-1",
        account_id="acct-0001",
        symbol="BTCUSDT",
        side="BUY",
        order_type="LIMIT",
        quantity=D("0.1"),
        price=D("60000"),
        leverage=10,
        submitted_at=T0,
    )
    return replace(base, **changes)


def held(
    open_orders: tuple[OpenOrder, ...] = (), *, order_id: str = "O-0", **changes: Any
) -> tuple[OpenOrder, ...]:
    """``open_orders`` plus one open order (a BUY of 0.1 BTCUSDT at 60,000 reserving 600)."""
    base = OpenOrder(
        order_id=order_id,
        symbol="BTCUSDT",
        side="BUY",
        position_side="BOTH",
        margin_mode="CROSS",
        order_type="LIMIT",
        price=D("60000"),
        leverage=10,
        quantity=D("0.1"),
        opening_quantity=D("0.1"),
        reserved=D("600"),
        submitted_at=T0 - timedelta(minutes=1),
    )
    return (*open_orders, replace(base, **changes))


def funded(amount: str = "10000", asset: str = "USDT") -> Ledger:
    return deposit(Ledger(), amount, asset)


def with_position(
    ledger: Ledger, catalog: Catalog, mark: str = "60000", **fill_changes: Any
) -> Ledger:
    """``ledger`` after a fill (builders.fill defaults: BUY 0.1 BTCUSDT at 60,000, 10x)."""
    f = fill(**fill_changes)
    inst = catalog.get(f.symbol)
    assert inst is not None
    return apply_fill(ledger, f, inst, (D(mark), MARK_AT))


def account(
    ledger: Ledger, catalog: Catalog, open_orders: tuple[OpenOrder, ...] = (), **changes: Any
) -> AccountView:
    """The account as the caller builds it: availableBalance net of open-order margin."""
    valuation = value(ledger, catalog, CALL_RATIO)
    available = {
        asset: w.available_balance - open_order_margin(open_orders, asset, catalog)
        for asset, w in valuation.wallets.items()
    }
    base = AccountView(
        exists=True,
        has_wallet=bool(ledger.wallets),
        ledger=ledger,
        open_orders=open_orders,
        available_for_orders=available,
    )
    return replace(base, **changes)


def decide(
    catalog: Catalog,
    terms: OrderTerms | None = None,
    ledger: Ledger | None = None,
    mark: StoredMark | None = MARK,
    settings: OrderSettings = SETTINGS,
    open_orders: tuple[OpenOrder, ...] = (),
    **account_changes: Any,
) -> OrderDecision:
    view = account(
        ledger if ledger is not None else funded(), catalog, open_orders, **account_changes
    )
    return decide_order(terms or order(), catalog, mark, view, settings)


def codes(decision: OrderDecision) -> list[str]:
    return list(decision.codes)


def cents(value: Decimal) -> Decimal:
    return value.quantize(D("0.01"), rounding=ROUND_DOWN)


# --- cost ----------------------------------------------------------------------------------


def test_the_published_binance_example(btcusdt: Instrument) -> None:
    """Binance "cost required to open a position": 1 BTC BTCUSDT at 9,253.30, 20x, mark
    9,259.84.

    BUY:  initial margin 9,253.30 / 20 = 462.665; open loss 1 × |min(0, 9,259.84 − 9,253.30)|
          = 0 → 462.665.
    SELL: initial margin 462.665; open loss 1 × |min(0, −(9,259.84 − 9,253.30))| = 6.54 →
          469.205.
    The published figures, 462.66 and 469.20, are these exact values cut to cents.
    """
    price, mark = D("9253.30"), D("9259.84")
    buy = order_cost(btcusdt, D(1), price, mark, "BUY", 20)
    sell = order_cost(btcusdt, D(1), price, mark, "SELL", 20)
    assert (buy.initial_margin, buy.open_loss, buy.cost) == (D("462.665"), D(0), D("462.665"))
    assert (sell.initial_margin, sell.open_loss, sell.cost) == (
        D("462.665"),
        D("6.54"),
        D("469.205"),
    )
    assert (cents(buy.cost), cents(sell.cost)) == (D("462.66"), D("469.20"))


def test_an_inverse_example(btcusd_perp: Instrument) -> None:
    """10 contracts of BTCUSD_PERP (100 USD each) at 50,000 with the mark at 49,000, 20x.

    Initial margin: 10 × 100 / 50,000 / 20 = 0.02 BTC / 20 = 0.001 BTC.
    BUY:  d = +1; 1/50,000 − 1/49,000 = −1,000 / 2,450,000,000 < 0, so the open loss is
          10 × 100 × 1,000 / 2,450,000,000 = 1/2,450 = 0.000408163265306122… BTC (buying
          above the mark); cost 0.001408163265306122… BTC.
    SELL: d = −1; −(1/50,000 − 1/49,000) > 0, no open loss; cost 0.001 BTC.
    """
    price, mark = D("50000"), D("49000")
    buy = order_cost(btcusd_perp, D(10), price, mark, "BUY", 20)
    sell = order_cost(btcusd_perp, D(10), price, mark, "SELL", 20)
    assert buy.initial_margin == D("0.001")
    with localcontext(MONEY):  # equal to 1/2,450 but for the last of MONEY's 60 digits
        loss = D(1) / D(2450)
        assert abs(buy.open_loss - loss) < D("1e-55")
        assert abs(buy.cost - (D("0.001") + loss)) < D("1e-55")
    assert str(buy.cost)[:20] == "0.001408163265306122"
    assert (sell.initial_margin, sell.open_loss, sell.cost) == (D("0.001"), D(0), D("0.001"))


def test_an_inverse_order_is_decided_in_its_settle_asset(catalog: Catalog) -> None:
    ledger = funded("1", "BTC")
    terms = order(symbol="BTCUSD_PERP", quantity=D(10), price=D("50000"), leverage=20)
    decision = decide(catalog, terms, ledger, mark=(D("49000"), MARK_AT))
    assert decision.approved
    assert decision.metrics["initialMargin"] == D("0.001")
    assert decision.metrics["availableForOrders"] == D(1)
    assert decision.reserved == D("0.001408163265306122")  # stored: 18 places
    # the same order from a USDT-only account has no BTC to pay with (nor to carry the
    # open loss: filled, its BTC margin balance would be negative)
    poor = decide(catalog, terms, funded(), mark=(D("49000"), MARK_AT))
    assert codes(poor) == ["INSUFFICIENT_MARGIN", "WOULD_LIQUIDATE"]


# --- price P -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mark", "side", "expected"),
    [
        ("60000", "BUY", "60030"),  # 60,030 is on the tick: nothing to round
        ("60000", "SELL", "59970"),
        ("60000.04", "BUY", "60030.1"),  # 60,030.04002 → up
        ("60000.04", "SELL", "59970"),  # 59,970.03998 → down
        ("60000.2", "SELL", "59970.1"),  # 59,970.1899 → down
    ],
)
def test_a_market_price_is_the_mark_with_slippage_rounded_away(
    btcusdt: Instrument, mark: str, side: str, expected: str
) -> None:
    price = order_price(btcusdt, "MARKET", side, None, D(mark), D("0.0005"))  # type: ignore[arg-type]
    assert price == D(expected)


def test_order_price_limit_and_missing_mark(btcusdt: Instrument) -> None:
    assert order_price(btcusdt, "LIMIT", "BUY", D("61000"), None, D("0.0005")) == D("61000")
    assert order_price(btcusdt, "MARKET", "BUY", None, None, D("0.0005")) is None
    with pytest.raises(ValueError):
        order_price(btcusdt, "LIMIT", "BUY", None, D("60000"), D("0.0005"))
    with pytest.raises(ValueError):
        order_price(btcusdt, "MARKET", "BUY", D("61000"), D("60000"), D("0.0005"))


def test_a_market_decision_is_valued_at_its_price(catalog: Catalog) -> None:
    decision = decide(catalog, order(order_type="MARKET", price=None))
    assert decision.approved
    assert decision.price == D("60030")
    # initial margin 0.1 × 60,030 / 10; open loss 0.1 × (60,030 − 60,000)
    assert decision.metrics["initialMargin"] == D("600.3")
    assert decision.metrics["openLoss"] == D("3")
    assert decision.reserved == D("603.3")


# --- opening quantity ----------------------------------------------------------------------


def test_opening_quantity_one_way(catalog: Catalog) -> None:
    long_one = with_position(funded(), catalog, quantity="1")
    assert opening_quantity(Ledger(), (), order(quantity=D("0.4"))) == D("0.4")
    assert opening_quantity(long_one, (), order(side="BUY", quantity=D("0.4"))) == D("0.4")
    assert opening_quantity(long_one, (), order(side="SELL", quantity=D("0.4"))) == 0
    assert opening_quantity(long_one, (), order(side="SELL", quantity=D(1))) == 0
    assert opening_quantity(long_one, (), order(side="SELL", quantity=D("1.5"))) == D("0.5")


def test_opening_quantity_less_what_other_orders_reduce(catalog: Catalog) -> None:
    long_one = with_position(funded(), catalog, quantity="1")
    # SELL 0.7 reducing (0.7 of it) and SELL 1 opening 0.7 (0.3 reducing): 1 reduced already
    others = held(side="SELL", quantity=D("0.7"), opening_quantity=D(0), reserved=D(0))
    assert opening_quantity(long_one, others, order(side="SELL", quantity=D("0.5"))) == D("0.2")
    others = held(others, order_id="O-00", side="SELL", quantity=D(1), opening_quantity=D("0.7"))
    assert opening_quantity(long_one, others, order(side="SELL", quantity=D("0.5"))) == D("0.5")
    # orders on another side, symbol or positionSide, and the order itself, do not count
    mixed = (
        *held(order_id="A", side="BUY", opening_quantity=D(0)),
        *held(order_id="B", symbol="ETHUSDT", side="SELL", opening_quantity=D(0)),
        *held(order_id="O-1", side="SELL", opening_quantity=D(0)),
    )
    assert opening_quantity(long_one, mixed, order(side="SELL", quantity=D("0.5"))) == 0


def test_opening_quantity_hedge(catalog: Catalog) -> None:
    ledger = with_position(funded(), catalog, quantity="1", positionSide="LONG")
    ledger = with_position(ledger, catalog, quantity="0.3", side="SELL", positionSide="SHORT")
    long = {"position_side": "LONG"}
    assert opening_quantity(ledger, (), order(side="BUY", quantity=D("0.4"), **long)) == D("0.4")
    assert opening_quantity(ledger, (), order(side="SELL", quantity=D("0.4"), **long)) == 0
    assert opening_quantity(ledger, (), order(side="SELL", quantity=D("1.2"), **long)) == D("0.2")
    short = {"position_side": "SHORT"}
    assert opening_quantity(ledger, (), order(side="BUY", quantity=D("0.3"), **short)) == 0
    assert opening_quantity(ledger, (), order(side="SELL", quantity=D("0.3"), **short)) == D("0.3")
    others = held(side="SELL", position_side="LONG", quantity=D("0.8"), opening_quantity=D(0))
    assert opening_quantity(ledger, others, order(side="SELL", quantity=D("0.4"), **long)) == D(
        "0.2"
    )


# --- group 1 -------------------------------------------------------------------------------


def test_a_good_order_is_approved_with_its_metrics(catalog: Catalog) -> None:
    decision = decide(catalog, ledger=funded("1000"))
    assert decision.approved and decision.reasons == ()
    assert decision.reserved == D("600")
    assert set(decision.metrics) == {
        "markPrice",
        "price",
        "openingQuantity",
        "initialMargin",
        "openLoss",
        "cost",
        "availableForOrders",
        "availableForOrdersAfter",
        "liquidationPriceAfter",
        "marginRatioAfter",
    }
    assert decision.metrics["availableForOrdersAfter"] == D("400")
    # long 0.1 from 60,000 on 1,000 USDT: liquidated near 50,200
    assert 50000 < decision.metrics["liquidationPriceAfter"] < 50400
    # on 10,000 USDT the position has no liquidation price: the metric is left out
    assert "liquidationPriceAfter" not in decide(catalog).metrics
    kept = to_open_order(order(), decision)
    assert (kept.reserved, kept.opening_quantity, kept.price) == (D(600), D("0.1"), D(60000))


def test_unknown_symbol(catalog: Catalog) -> None:
    decision = decide(catalog, order(symbol="DOGEUSDT"), mark=None, exists=False)
    assert codes(decision) == ["UNKNOWN_SYMBOL"]
    assert decision.metrics == {}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"price": D("60000.05")}, ["PRICE_TICK"]),
        ({"price": D("60000.1")}, []),
        ({"quantity": D("0.1015")}, ["QTY_STEP"]),
        ({"quantity": D("1000.001")}, ["QTY_BOUNDS"]),
        ({"quantity": D("0.001"), "leverage": 125}, ["MIN_NOTIONAL"]),  # 60 < 100 USDT
        ({"quantity": D("0.002"), "price": D(50000), "leverage": 125}, []),  # exactly 100
    ],
)
def test_group_one_codes(catalog: Catalog, changes: dict[str, Any], expected: list[str]) -> None:
    assert codes(decide(catalog, order(**changes))) == expected


def test_min_notional_of_a_market_order_is_at_its_price(catalog: Catalog) -> None:
    # 0.002 at the mark 50,000 is exactly 100, but a MARKET SELL is valued at 49,975
    market_sell = order(order_type="MARKET", price=None, side="SELL", quantity=D("0.002"))
    assert codes(decide(catalog, market_sell, mark=(D(50000), MARK_AT))) == ["MIN_NOTIONAL"]
    market_buy = replace(market_sell, side="BUY")
    assert codes(decide(catalog, market_buy, mark=(D(50000), MARK_AT))) == []


def test_leverage_above_max(catalog: Catalog, btcusdt: Instrument) -> None:
    tight = Catalog({**catalog.instruments, "BTCUSDT": replace(btcusdt, max_leverage=20)})
    assert codes(decide(tight, order(leverage=21))) == ["LEVERAGE_ABOVE_MAX"]
    assert codes(decide(tight, order(leverage=20))) == []


def test_group_one_reports_all_and_skips_the_rest(catalog: Catalog, btcusdt: Instrument) -> None:
    tight = Catalog({**catalog.instruments, "BTCUSDT": replace(btcusdt, max_leverage=20)})
    bad = order(price=D("60000.05"), quantity=D("0.0005"), leverage=50)
    decision = decide(tight, bad, mark=None, trading_state="HALTED", exists=False)
    assert codes(decision) == [
        "PRICE_TICK",
        "QTY_STEP",
        "QTY_BOUNDS",
        "MIN_NOTIONAL",
        "LEVERAGE_ABOVE_MAX",
    ]
    assert decision.metrics == {"price": D("60000.05")}
    assert decision.opening_quantity is None


# --- group 2 -------------------------------------------------------------------------------


def test_mark_unavailable_without_a_mark(catalog: Catalog) -> None:
    decision = decide(catalog, mark=None, trading_state="HALTED")
    # group 3 still checked; group 4 skipped (no cost in the metrics)
    assert codes(decision) == ["MARK_UNAVAILABLE", "ACCOUNT_HALTED"]
    assert decision.metrics == {"price": D(60000), "openingQuantity": D("0.1")}


def test_mark_unavailable_when_stale(catalog: Catalog) -> None:
    edge = T0 - timedelta(seconds=300)
    assert codes(decide(catalog, mark=(D(60000), edge))) == []
    stale = (D(60000), edge - timedelta(milliseconds=1))
    assert codes(decide(catalog, mark=stale)) == ["MARK_UNAVAILABLE"]
    shorter = replace(SETTINGS, stale_mark_after_seconds=5)
    assert codes(decide(catalog, mark=MARK, settings=shorter)) == ["MARK_UNAVAILABLE"]


def test_mark_unavailable_skips_what_needs_the_mark(catalog: Catalog) -> None:
    # a MARKET order's MIN_NOTIONAL cannot be priced; a LIMIT order's still is
    market = order(order_type="MARKET", price=None, quantity=D("0.001"))
    assert codes(decide(catalog, market, mark=None)) == ["MARK_UNAVAILABLE"]
    limit = order(quantity=D("0.001"))
    assert codes(decide(catalog, limit, mark=None)) == ["MIN_NOTIONAL"]
    # PRICE_OUT_OF_BAND and group 4 (no money at all) are skipped
    far = order(price=D(90000))
    assert codes(decide(catalog, far, ledger=funded("1"), mark=None)) == ["MARK_UNAVAILABLE"]


@pytest.mark.parametrize(
    ("side", "price", "expected"),
    [
        ("BUY", "63000", []),  # mark × 1.05 exactly
        ("BUY", "63000.1", ["PRICE_OUT_OF_BAND"]),
        ("SELL", "57000", []),
        ("SELL", "56999.9", ["PRICE_OUT_OF_BAND"]),
        ("SELL", "63000.1", []),  # a SELL above the band is only a good price
    ],
)
def test_price_out_of_band(catalog: Catalog, side: str, price: str, expected: list[str]) -> None:
    ledger = funded("100000")
    assert codes(decide(catalog, order(side=side, price=D(price)), ledger)) == expected


# --- group 3 -------------------------------------------------------------------------------


def test_unknown_account_skips_group_four(catalog: Catalog) -> None:
    missing = decide(catalog, ledger=Ledger(), exists=False)
    assert codes(missing) == ["UNKNOWN_ACCOUNT"]
    assert "cost" not in missing.metrics
    unfunded = decide(catalog, ledger=Ledger(), exists=True, done_order_ids=frozenset({"O-1"}))
    assert codes(unfunded) == ["UNKNOWN_ACCOUNT", "ORDER_ALREADY_DONE"]


def test_account_halted(catalog: Catalog) -> None:
    ledger = with_position(funded(), catalog)
    closing = order(side="SELL", reduce_only=True)
    assert codes(decide(catalog, closing, ledger, trading_state="HALTED")) == ["ACCOUNT_HALTED"]
    assert codes(decide(catalog, closing, ledger, trading_state="ACTIVE")) == []


def test_account_reducing(catalog: Catalog) -> None:
    ledger = with_position(funded(), catalog)
    assert codes(decide(catalog, order(), ledger, trading_state="REDUCING")) == ["ACCOUNT_REDUCING"]
    closing = order(side="SELL")
    decision = decide(catalog, closing, ledger, trading_state="REDUCING")
    assert decision.approved and decision.reserved == 0


def _in_liquidation(catalog: Catalog) -> Ledger:
    """Long 1 BTC at 60,000, 20x, on 3,500 USDT; mark 56,700: margin balance 200 <
    maintenance 56,700 × 0.005 − 50 = 233.5."""
    return with_position(funded("3500"), catalog, mark="56700", quantity="1", leverage=20)


def test_account_in_liquidation(catalog: Catalog) -> None:
    ledger = _in_liquidation(catalog)
    mark = (D(56700), MARK_AT)
    wallet = value(ledger, catalog, CALL_RATIO).wallets["USDT"]
    assert wallet.risk_state == "LIQUIDATION"
    adding = decide(catalog, order(price=D(56700), quantity=D("0.01")), ledger, mark)
    assert codes(adding)[0] == "ACCOUNT_IN_LIQUIDATION"
    # an order that only reduces needs no margin and passes group 4
    closing = decide(catalog, order(side="SELL", price=D(56700)), ledger, mark)
    assert closing.approved and closing.metrics["cost"] == 0
    # an isolated order adds to its own (new, NORMAL) position: only the money is short
    isolated = order(symbol="ETHUSDT", price=D(3000), quantity=D(1), margin_mode="ISOLATED")
    decision = decide(catalog, isolated, ledger, (D(3000), MARK_AT))
    assert codes(decision) == ["INSUFFICIENT_MARGIN"]


@pytest.mark.parametrize(
    ("changes", "position", "expected"),
    [
        ({"reduce_only": True}, None, ["REDUCE_ONLY_VIOLATION"]),  # nothing to reduce
        (
            {"reduce_only": True, "side": "SELL", "quantity": D("0.15")},
            {},
            ["REDUCE_ONLY_VIOLATION"],
        ),
        ({"reduce_only": True, "side": "SELL", "quantity": D("0.1")}, {}, []),
        ({"side": "SELL", "quantity": D("0.15")}, {}, []),  # a one-way flip is allowed
        (
            {"side": "SELL", "quantity": D("0.15"), "position_side": "LONG"},
            {"positionSide": "LONG"},
            ["REDUCE_ONLY_VIOLATION"],  # a hedge close beyond the position
        ),
        ({"side": "SELL", "position_side": "LONG"}, {"positionSide": "LONG"}, []),
    ],
)
def test_reduce_only_violation(
    catalog: Catalog,
    changes: dict[str, Any],
    position: dict[str, Any] | None,
    expected: list[str],
) -> None:
    ledger = funded() if position is None else with_position(funded(), catalog, **position)
    assert codes(decide(catalog, order(**changes), ledger)) == expected


def test_reduce_only_counts_other_reducing_orders(catalog: Catalog) -> None:
    ledger = with_position(funded(), catalog, positionSide="LONG")
    others = held(side="SELL", position_side="LONG", quantity=D("0.06"), opening_quantity=D(0))
    closing = order(side="SELL", position_side="LONG", quantity=D("0.05"))
    assert codes(decide(catalog, closing, ledger, open_orders=others)) == ["REDUCE_ONLY_VIOLATION"]
    closing = replace(closing, quantity=D("0.04"))
    assert codes(decide(catalog, closing, ledger, open_orders=others)) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"position_side": "LONG"}, ["POSITION_SIDE_MISMATCH"]),
        ({"margin_mode": "ISOLATED"}, ["POSITION_SIDE_MISMATCH"]),
        ({}, []),
        ({"symbol": "ETHUSDT", "price": D(3000), "position_side": "LONG"}, []),
    ],
)
def test_position_side_mismatch(
    catalog: Catalog, changes: dict[str, Any], expected: list[str]
) -> None:
    ledger = with_position(funded(), catalog)  # one-way, cross
    marks = MARK if changes.get("symbol") != "ETHUSDT" else (D(3000), MARK_AT)
    assert codes(decide(catalog, order(**changes), ledger, mark=marks)) == expected


@pytest.mark.parametrize(
    ("decided", "expected"),
    [
        ((), []),
        ((T0 - timedelta(milliseconds=999),), ["RATE_LIMITED"]),  # inside (t − 1 s, t]
        ((T0,), ["RATE_LIMITED"]),  # the same instant counts
        ((T0 - timedelta(seconds=1),), []),  # exactly 1 s before: outside
        ((T0 + timedelta(milliseconds=1),), []),  # after this one: outside
    ],
)
def test_rate_limited_window(
    catalog: Catalog, decided: tuple[datetime, ...], expected: list[str]
) -> None:
    one = replace(SETTINGS, rate_limit_per_second=1)
    assert codes(decide(catalog, settings=one, decided_times=decided)) == expected


def test_rate_limit_counts_this_order_and_zero_is_off(catalog: Catalog) -> None:
    two = replace(SETTINGS, rate_limit_per_second=2)
    one_before = (T0 - timedelta(milliseconds=500),)
    assert codes(decide(catalog, settings=two, decided_times=one_before)) == []
    two_before = (*one_before, T0 - timedelta(milliseconds=1))
    assert codes(decide(catalog, settings=two, decided_times=two_before)) == ["RATE_LIMITED"]
    off = replace(SETTINGS, rate_limit_per_second=0)
    assert codes(decide(catalog, settings=off, decided_times=two_before * 50)) == []


def test_order_already_done(catalog: Catalog) -> None:
    assert codes(decide(catalog, done_order_ids=frozenset({"O-1"}))) == ["ORDER_ALREADY_DONE"]
    assert codes(decide(catalog, done_order_ids=frozenset({"O-2"}))) == []


# --- group 4 -------------------------------------------------------------------------------


def test_insufficient_margin(catalog: Catalog) -> None:
    assert codes(decide(catalog, ledger=funded("600"))) == []  # cost 600 = available
    assert codes(decide(catalog, ledger=funded("599.99"))) == ["INSUFFICIENT_MARGIN"]
    # margin reserved by an open order is not available
    reserving = held(symbol="ETHUSDT", reserved=D("0.01"))
    decision = decide(catalog, ledger=funded("600"), open_orders=reserving)
    assert codes(decision) == ["INSUFFICIENT_MARGIN"]
    assert decision.metrics["availableForOrders"] == D("599.99")


def test_leverage_bracket_exceeded(catalog: Catalog) -> None:
    # 125x: the cap of the highest bracket allowing it is 50,000 USDT
    big = {"leverage": 125}
    assert codes(decide(catalog, order(quantity=D("0.833"), **big))) == []  # 49,980
    assert codes(decide(catalog, order(quantity=D("0.834"), **big))) == [
        "LEVERAGE_BRACKET_EXCEEDED"
    ]
    # the position (0.5) + other open BUYs opening (0.3) + this order, at P
    ledger = with_position(funded(), catalog, quantity="0.5", leverage=125)
    others = held(opening_quantity=D("0.3"), quantity=D("0.3"), leverage=125)
    others = held(others, order_id="S", side="SELL", quantity=D(5), opening_quantity=D("4.5"))
    fits = order(quantity=D("0.033"), **big)  # 0.833 × 60,000 = 49,980
    assert codes(decide(catalog, fits, ledger, open_orders=others)) == []
    over = order(quantity=D("0.034"), **big)  # 50,040
    assert codes(decide(catalog, over, ledger, open_orders=others)) == ["LEVERAGE_BRACKET_EXCEEDED"]


def test_position_limit_exceeded(catalog: Catalog) -> None:
    terms = order(quantity=D("0.833"), leverage=20)  # 49,980 USDT at P
    at_limit = replace(SETTINGS, position_limits={"USDT": D(49980)})
    assert codes(decide(catalog, terms, settings=at_limit)) == []
    below = replace(SETTINGS, position_limits={"USDT": D("49979.9")})
    assert codes(decide(catalog, terms, settings=below)) == ["POSITION_LIMIT_EXCEEDED"]
    unchecked = replace(SETTINGS, position_limits={"BTC": D(1)})
    assert codes(decide(catalog, terms, settings=unchecked)) == []


def _isolated_at(price: str) -> OrderTerms:
    """An isolated BUY of 0.1 at ``price`` and 125x with the mark at 60,000: isolated
    margin 0.1 × P / 125, uPnL 0.1 × (60,000 − P), maintenance 6,000 × 0.004 = 24."""
    return order(price=D(price), leverage=125, margin_mode="ISOLATED")


def test_margin_ratio_limit(catalog: Catalog) -> None:
    # P 60,200: margin balance 48.16 − 20 = 28.16; ratio 24 / 28.16 = 0.852…
    decision = decide(catalog, _isolated_at("60200"))
    assert codes(decision) == ["MARGIN_RATIO_LIMIT"]
    assert D("0.852") < decision.metrics["marginRatioAfter"] < D("0.853")
    assert "liquidationPriceAfter" in decision.metrics
    looser = replace(SETTINGS, max_margin_ratio=D("0.9"))
    assert codes(decide(catalog, _isolated_at("60200"), settings=looser)) == []
    assert codes(decide(catalog, _isolated_at("60100"))) == []  # 24 / 38.08 = 0.63


def test_would_liquidate_is_reported_alone_when_both_hold(catalog: Catalog) -> None:
    # P 60,250: margin balance 48.2 − 25 = 23.2 < 24: LIQUIDATION (ratio ≥ 1 as well)
    decision = decide(catalog, _isolated_at("60250"))
    assert codes(decision) == ["WOULD_LIQUIDATE"]
    assert decision.metrics["marginRatioAfter"] > 1  # 24 / 23.2
    # a cross order that leaves the wallet in LIQUIDATION is short of money as well
    cross = order(price=D(63000), leverage=125)
    assert codes(decide(catalog, cross, funded("100"))) == [
        "INSUFFICIENT_MARGIN",
        "WOULD_LIQUIDATE",
    ]


def test_the_order_of_reasons_when_several_fail(catalog: Catalog) -> None:
    ledger = _in_liquidation(catalog)
    mark = (D(56700), MARK_AT)
    terms = order(price=D(63000), quantity=D(2), leverage=125, reduce_only=True)
    decision = decide(
        catalog,
        terms,
        ledger,
        mark,
        settings=replace(SETTINGS, rate_limit_per_second=1, position_limits={"USDT": D(1)}),
        trading_state="REDUCING",
        decided_times=(T0,),
        done_order_ids=frozenset({"O-1"}),
    )
    assert codes(decision) == [
        "PRICE_OUT_OF_BAND",
        "ACCOUNT_REDUCING",
        "ACCOUNT_IN_LIQUIDATION",
        "REDUCE_ONLY_VIOLATION",
        "RATE_LIMITED",
        "ORDER_ALREADY_DONE",
        "INSUFFICIENT_MARGIN",
        "LEVERAGE_BRACKET_EXCEEDED",
        "POSITION_LIMIT_EXCEEDED",
        "WOULD_LIQUIDATE",
    ]
    assert decision.reserved == 0
    with pytest.raises(ValueError):
        to_open_order(terms, decision)


def test_a_one_way_flip_is_valued_as_closed_then_opened(catalog: Catalog) -> None:
    ledger = with_position(funded(), catalog)  # long 0.1 at 60,000
    flip = order(side="SELL", quantity=D("0.3"))
    decision = decide(catalog, flip, ledger)
    assert decision.approved
    assert decision.opening_quantity == D("0.2")
    assert decision.metrics["initialMargin"] == D("1200")  # 0.2 × 60,000 / 10
    # the position the order faces is closed first: only 0.2 (12,000 USDT) counts
    limit = replace(SETTINGS, position_limits={"USDT": D(12000)})
    assert codes(decide(catalog, flip, ledger, settings=limit)) == []
    limit = replace(SETTINGS, position_limits={"USDT": D("11999.9")})
    assert codes(decide(catalog, flip, ledger, settings=limit)) == ["POSITION_LIMIT_EXCEEDED"]


# --- reservation ---------------------------------------------------------------------------


def test_release_on_fill_is_pro_rata() -> None:
    (o,) = held(reserved=D(600), quantity=D("0.1"), opening_quantity=D("0.1"))
    after = release_on_fill(o, D("0.025"))
    assert after is not None
    assert (after.quantity, after.reserved, after.opening_quantity) == (
        D("0.075"),
        D(450),
        D("0.075"),
    )
    assert release_on_fill(after, D("0.075")) is None
    assert release_on_fill(o, D(1)) is None  # more than remains: all released
    with pytest.raises(ValueError):
        release_on_fill(o, D(0))


def test_release_keeps_the_opening_part_up_to_what_remains() -> None:
    (o,) = held(quantity=D("1.5"), opening_quantity=D("0.5"), reserved=D(100))
    after = release_on_fill(o, D("1.2"))
    assert after is not None
    assert (after.quantity, after.opening_quantity, after.reserved) == (D("0.3"), D("0.3"), D(20))
    third = release_on_fill(held(reserved=D(100), quantity=D(3))[0], D(1))
    assert third is not None and third.reserved == D("66.666666666666666667")


def test_release_on_fills_and_open_order_margin(catalog: Catalog) -> None:
    orders = held(order_id="A", reserved=D(600))
    orders = held(orders, order_id="B", symbol="BTCUSD_PERP", reserved=D("0.01"))
    orders = held(orders, order_id="C", symbol="GONE", reserved=D(5))
    assert open_order_margin(orders, "USDT", catalog) == D(600)
    assert open_order_margin(orders, "BTC", catalog) == D("0.01")
    assert release_on_fills(orders, "X", D(1)) == orders  # not held: nothing changes
    after = release_on_fills(orders, "A", D("0.05"))
    assert [o.reserved for o in after] == [D(300), D("0.01"), D(5)]
    assert [o.order_id for o in release_on_fills(orders, "A", D("0.1"))] == ["B", "C"]


@pytest.mark.parametrize(
    "changes",
    [
        {"max_margin_ratio": D(0)},
        {"max_margin_ratio": D("1.01")},
        {"market_slippage": D(1)},
        {"rate_limit_per_second": -1},
        {"margin_call_ratio": D(1)},
    ],
)
def test_settings_refuse_values_they_cannot_use(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        OrderSettings(**changes)
    assert OrderSettings(max_margin_ratio=D(1)).max_margin_ratio == 1
