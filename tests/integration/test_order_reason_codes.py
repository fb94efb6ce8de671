"""Every reason code of the ORDER contract end to end, and the reservations an order makes.

One ORDER in → its ``ORDER_DECISION`` on the order-decisions queue, its ``@order:`` record
and the account document (``openOrders``, each wallet's ``openOrderMargin`` and
``availableBalance``) in Cosmos, through ``python -m devhost run --drain``. One isolated app,
driven once per module by a fixture: every scenario has accounts of its own, and all their
messages are built up front and sent in five batches, one devhost run each (messages of one
run are processed concurrently, so what depends on an earlier message waits for the next):

1. funding (DEPOSITs) and the marks: BTCUSDT 60,000 and ETHUSDT 2,500 at 00:00:00;
2. positions (FILLs), trading-state controls, and an ORDER_DONE that comes before its order;
3. the orders (submitted at 00:01:00 unless a scenario says otherwise);
4. what follows an order: a second order, a FILL v2 of an order, WITHDRAWALs, the third
   order of a second, and redeliveries of decided orders;
5. the ORDER_DONE of the partly filled order.

The app runs on the shipped catalog plus CAPUSDT (ETHUSDT's rules capped at 20x: the
shipped catalog allows 125x everywhere, the schema's maximum), with
``ORDER_RATE_LIMIT_PER_SECOND`` = 2; every other setting is its default (position limit
10,000,000 USDT, margin-call ratio and ``ORDER_MAX_MARGIN_RATIO`` 0.80, stale marks after
300 s). Every expected figure is worked out next to its scenario (docs/orders.md has the
rules).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from devhost.services import LocalServices
from handlers.settings import SHIPPED_CATALOG
from tests.integration.test_pipeline import deposit, digest, fill, ran_ok
from tests.integration.test_reason_codes import alert_id, mark, transfer
from tests.support import AppUnderTest, body_of

pytestmark = pytest.mark.services

SUBMITTED = "2024-10-01T00:01:00.000Z"
CAPPED = "CAPUSDT"

# --- messages --------------------------------------------------------------------------


def order(account: str, order_id: str, **fields: Any) -> dict[str, Any]:
    """An ORDER: a LIMIT BUY of 0.1 BTCUSDT at 60,000, 10x, cross, one-way, submitted at
    00:01:00, unless ``fields`` say otherwise (a field set to None is left out)."""
    message: dict[str, Any] = {
        "type": "ORDER",
        "schemaVersion": 1,
        "orderId": order_id,
        "accountId": account,
        "symbol": "BTCUSDT",
        "side": "BUY",
        "orderType": "LIMIT",
        "quantity": "0.1",
        "price": "60000",
        "leverage": 10,
        "marginMode": "CROSS",
        "positionSide": "BOTH",
        "reduceOnly": False,
        "submittedAt": SUBMITTED,
    }
    message.update(fields)
    return {k: v for k, v in message.items() if v is not None}


def order_done(account: str, order_id: str, status: str = "CANCELED") -> dict[str, Any]:
    return {
        "type": "ORDER_DONE",
        "schemaVersion": 1,
        "orderId": order_id,
        "accountId": account,
        "status": status,
        "occurredAt": "2024-10-01T00:02:00.000Z",
    }


def control(account: str, state: str) -> dict[str, Any]:
    return {
        "type": "ACCOUNT_CONTROL",
        "schemaVersion": 1,
        "controlId": f"ctl-{account}",
        "accountId": account,
        "tradingState": state,
        "reason": "risk desk",
        "occurredAt": "2024-10-01T00:00:30.000Z",
    }


def decision_id(account: str, order_id: str) -> str:
    """The contract's decisionId: SHA-256 hex of the compact JSON [accountId, orderId]."""
    text = json.dumps([account, order_id], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# --- the reason codes, in the contract's order -----------------------------------------


@dataclass(frozen=True)
class Case:
    """One ORDER and the decision it must get: ``codes`` in that order (empty: APPROVED),
    ``metrics`` exactly (None: only the keys in ``metric_keys`` are checked)."""

    name: str
    message: dict[str, Any]
    codes: tuple[str, ...]
    metrics: Mapping[str, str] | None = None
    metric_keys: frozenset[str] = frozenset()
    funding: tuple[dict[str, Any], ...] = ()  # run 1 (trades queue)
    setup: tuple[dict[str, Any], ...] = ()  # run 2 (FILLs on trades, the rest on orders)
    run: int = 3  # the run the ORDER goes in

    @property
    def account(self) -> str:
        return str(self.message["accountId"])

    @property
    def order_id(self) -> str:
        return str(self.message["orderId"])


def _usdt(account: str, amount: str = "10000") -> tuple[dict[str, Any], ...]:
    return (deposit(account, amount, f"dep-{account}"),)


#: What a decision that reached group 4 carries (with liquidationPriceAfter /
#: marginRatioAfter where they exist).
GROUP4 = frozenset(
    {
        "markPrice",
        "price",
        "openingQuantity",
        "initialMargin",
        "openLoss",
        "cost",
        "availableForOrders",
        "availableForOrdersAfter",
    }
)
# Group 1 fails at the mark 60,000 (usable: 60 s old), before the account is looked at.
AT_MARK = {"markPrice": "60000", "price": "60000"}

CASES: tuple[Case, ...] = (
    # A broken field (quantity < 0) of an ORDER that names its account and order: decided
    # REJECTED with SCHEMA_INVALID and nothing computed, plus a TRADE_REJECTED alert.
    Case("SCHEMA_INVALID", order("oc-schema", "o-schema", quantity="-1"), ("SCHEMA_INVALID",), {}),
    Case(
        "UNKNOWN_SYMBOL", order("oc-symbol", "o-symbol", symbol="DOGEUSDT"), ("UNKNOWN_SYMBOL",), {}
    ),
    # 60000.05 / 0.1 is no integer. The account was never funded, yet no UNKNOWN_ACCOUNT:
    # a group-1 failure skips groups 2-4.
    Case(
        "PRICE_TICK",
        order("oc-tick", "o-tick", price="60000.05"),
        ("PRICE_TICK",),
        {"markPrice": "60000", "price": "60000.05"},
    ),
    # 0.1005 / 0.001 = 100.5; 0.1005 × 60,000 = 6,030 ≥ 100.
    Case("QTY_STEP", order("oc-step", "o-step", quantity="0.1005"), ("QTY_STEP",), AT_MARK),
    # 1001 is on the step but above maxQty 1,000.
    Case("QTY_BOUNDS", order("oc-bounds", "o-bounds", quantity="1001"), ("QTY_BOUNDS",), AT_MARK),
    # 0.001 × 60,000 = 60 USDT < minNotional 100.
    Case(
        "MIN_NOTIONAL",
        order("oc-notional", "o-notional", quantity="0.001"),
        ("MIN_NOTIONAL",),
        AT_MARK,
    ),
    # CAPUSDT: 21 > maxLeverage 20 (1 × 2,500 ≥ 20). CAPUSDT has no mark: P only.
    Case(
        "LEVERAGE_ABOVE_MAX",
        order("oc-lev", "o-lev", symbol=CAPPED, quantity="1", price="2500", leverage=21),
        ("LEVERAGE_ABOVE_MAX",),
        {"price": "2500"},
    ),
    # BTCUSD_PERP has no stored mark: group 3 is checked (the BTC-funded account passes
    # it), PRICE_OUT_OF_BAND and group 4 are skipped; P is the LIMIT price.
    Case(
        "MARK_UNAVAILABLE",
        order("oc-nomark", "o-nomark", symbol="BTCUSD_PERP", quantity="10", price="50000"),
        ("MARK_UNAVAILABLE",),
        {"price": "50000", "openingQuantity": "10"},
        funding=(deposit("oc-nomark", "1", "dep-oc-nomark", asset="BTC"),),
    ),
    # LIMIT BUY above mark × (1 + 0.05) = 63,000. Group 4 still runs (and passes):
    # initial margin 0.1 × 63,000.1 / 10 = 630.001, open loss 0.1 × |60,000 − 63,000.1| =
    # 300.01, cost 930.011 of 10,000. Filled, the cross long has no liquidation price
    # ((10,000 − 6,300.01) / (0.0004 − 0.1) < 0) and a margin ratio of 24 / (10,000 −
    # 300.01) = 0.002474229354875623583…
    Case(
        "PRICE_OUT_OF_BAND",
        order("oc-band", "o-band", price="63000.1"),
        ("PRICE_OUT_OF_BAND",),
        {
            "markPrice": "60000",
            "price": "63000.1",
            "openingQuantity": "0.1",
            "initialMargin": "630.001",
            "openLoss": "300.01",
            "cost": "930.011",
            "availableForOrders": "10000",
            "availableForOrdersAfter": "9069.989",
            "marginRatioAfter": "0.002474229354875624",
        },
        funding=_usdt("oc-band"),
    ),
    # No account document at all: fail closed, group 4 skipped.
    Case(
        "UNKNOWN_ACCOUNT",
        order("oc-nobody", "o-nobody"),
        ("UNKNOWN_ACCOUNT",),
        {**AT_MARK, "openingQuantity": "0.1"},
    ),
    Case(
        "ACCOUNT_HALTED",
        order("oc-halted", "o-halted"),
        ("ACCOUNT_HALTED",),
        metric_keys=GROUP4,
        funding=_usdt("oc-halted"),
        setup=(control("oc-halted", "HALTED"),),
    ),
    # REDUCING, long 0.1: a BUY opens 0.1.
    Case(
        "ACCOUNT_REDUCING",
        order("oc-reducing", "o-reducing"),
        ("ACCOUNT_REDUCING",),
        metric_keys=GROUP4,
        funding=_usdt("oc-reducing"),
        setup=(fill("oc-reducing", "t-oc-reducing"), control("oc-reducing", "REDUCING")),
    ),
    # Long 1 BTCUSDT filled at 63,000 (20x) on 3,100 USDT; at the mark 60,000: notional
    # 60,000 (bracket 2), maintenance 60,000 × 0.005 − 50 = 250, uPnL −3,000, cross margin
    # balance 100 < 250 → the USDT cross wallet is in LIQUIDATION. A cross BUY of 0.01 adds
    # to it; every failing reason is reported: available 100 − 3,000 (initial margin) =
    # −2,900 < cost 60 → INSUFFICIENT_MARGIN; filled, still LIQUIDATION → WOULD_LIQUIDATE.
    Case(
        "ACCOUNT_IN_LIQUIDATION",
        order("oc-liq", "o-liq", quantity="0.01"),
        ("ACCOUNT_IN_LIQUIDATION", "INSUFFICIENT_MARGIN", "WOULD_LIQUIDATE"),
        metric_keys=GROUP4 | {"marginRatioAfter"},
        funding=_usdt("oc-liq", "3100"),
        setup=(fill("oc-liq", "t-oc-liq", quantity="1", price="63000", leverage=20),),
    ),
    # Long 0.1: a reduce-only SELL of 0.2 would flip (it opens 0.1; cost 600 of 9,400).
    Case(
        "REDUCE_ONLY_VIOLATION",
        order("oc-ro", "o-ro", side="SELL", quantity="0.2", reduceOnly=True),
        ("REDUCE_ONLY_VIOLATION",),
        metric_keys=GROUP4,
        funding=_usdt("oc-ro"),
        setup=(fill("oc-ro", "t-oc-ro"),),
    ),
    # One-way long 0.1 open: a hedge (LONG) order.
    Case(
        "POSITION_SIDE_MISMATCH",
        order("oc-mode", "o-mode", positionSide="LONG"),
        ("POSITION_SIDE_MISMATCH",),
        metric_keys=GROUP4,
        funding=_usdt("oc-mode"),
        setup=(fill("oc-mode", "t-oc-mode"),),
    ),
    # Limit 2 a second: o-rate-1 and o-rate-2 (run 3, 00:01:00.000, 0.01 each) are
    # approved; this third at 00:01:00.500 makes 3 in (00:00:59.500, 00:01:00.500].
    Case(
        "RATE_LIMITED",
        order("oc-rate", "o-rate-3", quantity="0.01", submittedAt="2024-10-01T00:01:00.500Z"),
        ("RATE_LIMITED",),
        metric_keys=GROUP4,
        funding=_usdt("oc-rate"),
        run=4,
    ),
    # Its ORDER_DONE came (run 2) before it.
    Case(
        "ORDER_ALREADY_DONE",
        order("oc-done-first", "o-done-first"),
        ("ORDER_ALREADY_DONE",),
        metric_keys=GROUP4,
        funding=_usdt("oc-done-first"),
        setup=(order_done("oc-done-first", "o-done-first"),),
    ),
    # 500 USDT: cost 0.1 × 60,000 / 10 = 600 > 500. Filled, the wallet would not be at
    # risk: maintenance 24, ratio 24 / 500 = 0.048, liquidation (500 − 6,000) / (0.0004 −
    # 0.1) = 55,220.88353413654618473895…
    Case(
        "INSUFFICIENT_MARGIN",
        order("oc-im", "o-im"),
        ("INSUFFICIENT_MARGIN",),
        {
            **AT_MARK,
            "openingQuantity": "0.1",
            "initialMargin": "600",
            "openLoss": "0",
            "cost": "600",
            "availableForOrders": "500",
            "availableForOrdersAfter": "-100",
            "liquidationPriceAfter": "55220.883534136546184739",
            "marginRatioAfter": "0.048",
        },
        funding=_usdt("oc-im", "500"),
    ),
    # 125x: the highest bracket allowing it caps at 50,000; 0.834 × 60,000 = 50,040.
    Case(
        "LEVERAGE_BRACKET_EXCEEDED",
        order("oc-bracket", "o-bracket", quantity="0.834", leverage=125),
        ("LEVERAGE_BRACKET_EXCEEDED",),
        metric_keys=GROUP4 | {"marginRatioAfter"},
        funding=_usdt("oc-bracket"),
    ),
    # 170 × 60,000 = 10,200,000 > the default limit 10,000,000 USDT (20x: cap 100,000,000;
    # cost 510,000 of 1,000,000).
    Case(
        "POSITION_LIMIT_EXCEEDED",
        order("oc-limit", "o-limit", quantity="170", leverage=20),
        ("POSITION_LIMIT_EXCEEDED",),
        metric_keys=GROUP4 | {"marginRatioAfter"},
        funding=_usdt("oc-limit", "1000000"),
    ),
    # ISOLATED BUY 0.1 at 60,250, 125x, mark 60,000: isolated margin 6,025 / 125 = 48.2,
    # open loss 0.1 × 250 = 25, margin balance 23.2 < maintenance 6,000 × 0.004 = 24 →
    # LIQUIDATION (ratio 24 / 23.2 ≥ 0.80 as well: only WOULD_LIQUIDATE is reported).
    Case(
        "WOULD_LIQUIDATE",
        order("oc-wl", "o-wl", price="60250", leverage=125, marginMode="ISOLATED"),
        ("WOULD_LIQUIDATE",),
        {
            **AT_MARK,
            "price": "60250",
            "openingQuantity": "0.1",
            "initialMargin": "48.2",
            "openLoss": "25",
            "cost": "73.2",
            "availableForOrders": "10000",
            "availableForOrdersAfter": "9926.8",
            "marginRatioAfter": "1.034482758620689655",  # 24 / 23.2 = 1.03448275862068965517…
        },
        metric_keys=frozenset({"liquidationPriceAfter"}),
        funding=_usdt("oc-wl"),
    ),
    # The same at 60,200: isolated margin 48.16, open loss 20, margin balance 28.16,
    # ratio 24 / 28.16 = 0.852272727… ≥ 0.80.
    Case(
        "MARGIN_RATIO_LIMIT",
        order("oc-mr", "o-mr", price="60200", leverage=125, marginMode="ISOLATED"),
        ("MARGIN_RATIO_LIMIT",),
        {
            **AT_MARK,
            "price": "60200",
            "openingQuantity": "0.1",
            "initialMargin": "48.16",
            "openLoss": "20",
            "cost": "68.16",
            "availableForOrders": "10000",
            "availableForOrdersAfter": "9931.84",
            "marginRatioAfter": "0.852272727272727273",
        },
        metric_keys=frozenset({"liquidationPriceAfter"}),
        funding=_usdt("oc-mr"),
    ),
    # 1,000 USDT, BUY 0.1 at 60,000, 10x: initial margin 600, no open loss (at the mark),
    # cost 600 → 400 left. Filled: maintenance 24, ratio 24 / 1,000 = 0.024; cross long
    # liquidation (1,000 − 6,000) / (0.1 × 0.004 − 0.1) = 50,200.803212851405622489959…
    Case(
        "APPROVED",
        order("oc-ok", "o-ok", correlationId="c-ok"),
        (),
        {
            **AT_MARK,
            "openingQuantity": "0.1",
            "initialMargin": "600",
            "openLoss": "0",
            "cost": "600",
            "availableForOrders": "1000",
            "availableForOrdersAfter": "400",
            "liquidationPriceAfter": "50200.80321285140562249",
            "marginRatioAfter": "0.024",
        },
        funding=_usdt("oc-ok", "1000"),
    ),
)

#: More scenarios that are not one code each (asserted by their own tests below).
EXTRA: tuple[Case, ...] = (
    # Every group-1 rule at once, in the contract's order (PRICE_TICK … LEVERAGE_ABOVE_MAX,
    # unlike a FILL's alert): 2,500.005 off the 0.01 tick; 0.0005 off the 0.001 step and
    # below minQty; 0.0005 × 2,500.005 = 1.25 < 20; 21 > 20. The account is HALTED and
    # never funded: group 3 is not reached.
    Case(
        "group-1-all",
        order("oc-g1", "o-g1", symbol=CAPPED, quantity="0.0005", price="2500.005", leverage=21),
        ("PRICE_TICK", "QTY_STEP", "QTY_BOUNDS", "MIN_NOTIONAL", "LEVERAGE_ABOVE_MAX"),
        {"price": "2500.005"},
        setup=(control("oc-g1", "HALTED"),),
    ),
    # A mark 300.001 s older than the order is stale; group 3 still runs (HALTED).
    Case(
        "stale-mark",
        order("oc-stale", "o-stale", submittedAt="2024-10-01T00:05:00.001Z"),
        ("MARK_UNAVAILABLE", "ACCOUNT_HALTED"),
        {"price": "60000", "openingQuantity": "0.1"},
        funding=_usdt("oc-stale"),
        setup=(control("oc-stale", "HALTED"),),
    ),
    # An account a control created and nothing funded is unknown too (UNKNOWN_ACCOUNT:
    # no wallet), and group 3 goes on (HALTED).
    Case(
        "unfunded",
        order("oc-unfunded", "o-unfunded"),
        ("UNKNOWN_ACCOUNT", "ACCOUNT_HALTED"),
        {**AT_MARK, "openingQuantity": "0.1"},
        setup=(control("oc-unfunded", "HALTED"),),
    ),
    # At mark × 1.05 exactly: inside the band.
    Case(
        "band-edge",
        order("oc-band-edge", "o-band-edge", price="63000"),
        (),
        funding=_usdt("oc-band-edge"),
    ),
    # 0.833 × 60,000 = 49,980 < 50,000 at 125x.
    Case(
        "bracket-edge",
        order("oc-bracket-edge", "o-bracket-edge", quantity="0.833", leverage=125),
        (),
        funding=_usdt("oc-bracket-edge"),
    ),
    # MARKET BUY: P = 60,000 × 1.0005 = 60,030 (on the tick); initial margin 600.3, open
    # loss 0.1 × 30 = 3, cost 603.3.
    Case(
        "market",
        order("oc-market", "o-market", orderType="MARKET", price=None),
        (),
        metric_keys=GROUP4,
        funding=_usdt("oc-market", "1000"),
    ),
    # Two orders that each fit 1,000 USDT (cost 600) but not together: the second (run 4)
    # sees 400 available.
    Case("two-first", order("oc-two", "o-two-1"), (), funding=_usdt("oc-two", "1000")),
    Case(
        "two-second",
        order("oc-two", "o-two-2", submittedAt="2024-10-01T00:01:05.000Z"),
        ("INSUFFICIENT_MARGIN",),
        metric_keys=GROUP4,
        run=4,
    ),
    # Partly filled by a FILL v2 (run 4), then done (run 5).
    Case("fill-release", order("oc-fill", "o-fill"), (), funding=_usdt("oc-fill", "1000")),
    # Reserves 600 of 1,000, then WITHDRAWALs (run 4).
    Case("withdrawal", order("oc-wd", "o-wd"), (), funding=_usdt("oc-wd", "1000")),
    # 600 USDT all in a long 0.1 (initial margin 600: available 0); a reduce-only SELL
    # of it opens nothing and needs nothing.
    Case(
        "reducing",
        order("oc-reduce", "o-reduce", side="SELL", reduceOnly=True),
        (),
        {
            **AT_MARK,
            "openingQuantity": "0",
            "initialMargin": "0",
            "openLoss": "0",
            "cost": "0",
            "availableForOrders": "0",
            "availableForOrdersAfter": "0",
            # the account as it is: (600 − 6,000) / (0.0004 − 0.1) = 54,216.8674698795…;
            # ratio 24 / 600
            "liquidationPriceAfter": "54216.867469879518072289",
            "marginRatioAfter": "0.04",
        },
        funding=_usdt("oc-reduce", "600"),
        setup=(fill("oc-reduce", "t-oc-reduce"),),
    ),
    # The two orders of the second that RATE_LIMITED's third follows, and a fourth at
    # 00:01:01.000: (00:01:00.000, 00:01:01.000] holds the third (rate-limited ones count)
    # and itself, 2 ≤ 2.
    Case("rate-1", order("oc-rate", "o-rate-1", quantity="0.01"), ()),
    Case("rate-2", order("oc-rate", "o-rate-2", quantity="0.01"), ()),
    Case(
        "rate-4",
        order("oc-rate", "o-rate-4", quantity="0.01", submittedAt="2024-10-01T00:01:01.000Z"),
        (),
        run=4,
    ),
)
ALL = CASES + EXTRA
EXTRA_BY_NAME = {c.name: c for c in EXTRA}

#: An ORDER whose orderId is not well formed cannot be decided: a rejection record and a
#: TRADE_REJECTED alert with the body's digest, no decision.
UNREADABLE = body_of(order("oc-unreadable", "bad order id!"))
#: FILL v2 of 0.04 of o-fill (run 4).
FILL_V2 = fill("oc-fill", "t-oc-fill", schemaVersion=2, orderId="o-fill", quantity="0.04", fee="0")
WITHDRAW_TOO_MUCH = transfer("oc-wd", "w-oc-wd-over", "-400.01", "WITHDRAWAL")
WITHDRAW_ALL = transfer("oc-wd", "w-oc-wd-all", "-400", "WITHDRAWAL")
#: Sent again, byte for byte, in run 4.
REDELIVERED = ("APPROVED", "INSUFFICIENT_MARGIN", "SCHEMA_INVALID")
BY_NAME = {c.name: c for c in CASES}


# --- the run -------------------------------------------------------------------------------


def _decode(text: str) -> dict[str, Any]:
    value = json.loads(base64.b64decode(text))
    assert isinstance(value, dict)
    return value


@dataclass
class OrdersRun:
    app: AppUnderTest
    texts: dict[str, str]  # case name → the ORDER's queue text
    alerts: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # by run
    decisions: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # by run
    accounts: dict[int, dict[str, Any]] = field(default_factory=dict)  # by run, after it

    def decision(self, case: Case, run: int | None = None) -> dict[str, Any]:
        """The one decision the case's order got in its run (or ``run``)."""
        mine = [
            d
            for d in self.decisions[run or case.run]
            if (d["accountId"], d["orderId"]) == (case.account, case.order_id)
        ]
        assert len(mine) == 1, f"{case.name}: {mine}"
        return mine[0]

    def account(self, account: str, run: int = 5) -> dict[str, Any]:
        doc = self.accounts[run].get(account)
        assert doc is not None, f"no account document {account} after run {run}"
        return doc


def _step(app: AppUnderTest, run: int, result: OrdersRun, accounts: list[str]) -> None:
    ran_ok(app)
    result.alerts[run] = app.alerts()
    result.decisions[run] = [_decode(t) for t in app.drain_queue("ORDER_DECISIONS_QUEUE")]
    result.accounts[run] = {acc: app.account(acc) for acc in accounts}


@pytest.fixture(scope="module")
def orders_run(
    local_services: LocalServices, tmp_path_factory: pytest.TempPathFactory
) -> OrdersRun:
    workdir = tmp_path_factory.mktemp("order-reason-codes")
    catalog = json.loads(SHIPPED_CATALOG.read_text(encoding="utf-8"))
    eth = next(i for i in catalog["instruments"] if i["symbol"] == "ETHUSDT")
    catalog["instruments"].append({**eth, "symbol": CAPPED, "baseAsset": "CAP", "maxLeverage": 20})
    catalog_file = workdir / "instruments-capped.json"
    catalog_file.write_text(json.dumps(catalog), encoding="utf-8")
    app = AppUnderTest(
        local_services,
        workdir,
        overrides={"INSTRUMENTS_FILE": str(catalog_file), "ORDER_RATE_LIMIT_PER_SECOND": "2"},
    )
    texts = {c.name: body_of(c.message) for c in ALL}
    result = OrdersRun(app, texts)
    accounts = sorted({c.account for c in ALL} | {"oc-unreadable"})

    def is_trade(message: Mapping[str, Any]) -> bool:
        return message["type"] in ("FILL", "TRANSFER")

    # 1. funding and marks
    app.send([m for c in ALL for m in c.funding])
    app.send([mark("BTCUSDT", "60000", 0), mark("ETHUSDT", "2500", 0)], queue="MARKS_QUEUE")
    _step(app, 1, result, accounts)
    # 2. positions, controls, an ORDER_DONE before its order
    app.send([m for c in ALL for m in c.setup if is_trade(m)])
    app.send([m for c in ALL for m in c.setup if not is_trade(m)], queue="ORDERS_QUEUE")
    _step(app, 2, result, accounts)
    # 3. the orders, and one that cannot be read
    app.send([texts[c.name] for c in ALL if c.run == 3] + [UNREADABLE], "ORDERS_QUEUE", False)
    _step(app, 3, result, accounts)
    # 4. what follows an order
    app.send([texts[c.name] for c in ALL if c.run == 4], "ORDERS_QUEUE", False)
    app.send([texts[name] for name in REDELIVERED], "ORDERS_QUEUE", False)
    app.send([FILL_V2, WITHDRAW_TOO_MUCH, WITHDRAW_ALL])
    _step(app, 4, result, accounts)
    # 5. the partly filled order is done
    app.send([order_done("oc-fill", "o-fill")], queue="ORDERS_QUEUE")
    _step(app, 5, result, accounts)
    return result


# --- every reason code ---------------------------------------------------------------------


def assert_decided(run: OrdersRun, case: Case) -> dict[str, Any]:
    """The case's decision as the contract shapes it, its record, and its key on the
    account; the decision."""
    decision = run.decision(case)
    approved = not case.codes
    assert decision["schemaVersion"] == 1
    assert decision["type"] == "ORDER_DECISION"
    assert decision["decisionId"] == decision_id(case.account, case.order_id)
    assert decision["symbol"] == case.message["symbol"]
    assert decision["correlationId"] == case.message.get("correlationId")
    assert decision["decision"] == ("APPROVED" if approved else "REJECTED")
    assert [r["code"] for r in decision["reasons"]] == list(case.codes)
    assert all(r["message"] for r in decision["reasons"])
    if case.metrics is not None:
        expected = dict(case.metrics)
        optional = case.metric_keys  # present, value not checked
        assert {k: v for k, v in decision["metrics"].items() if k not in optional} == expected
        assert optional <= set(decision["metrics"])
    else:
        assert case.metric_keys <= set(decision["metrics"]), decision["metrics"]

    key = f"@order:{case.order_id}"
    record = run.app.record(case.account, key)
    assert record is not None, f"{case.name}: no record {key}"
    assert (record["type"], record["orderId"]) == ("order", case.order_id)
    assert record["decision"] == decision  # what was sent is what was recorded
    account = run.account(case.account, case.run)
    assert key in account["recentEventIds"]
    held = [o for o in account["openOrders"] if o["orderId"] == case.order_id]
    assert len(held) == (1 if approved else 0)
    return decision


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reason_code(orders_run: OrdersRun, case: Case) -> None:
    decision = assert_decided(orders_run, case)
    if case.codes:
        # A rejected order reserves nothing and moves nothing (the accounts of the run-3
        # cases hold no other order; RATE_LIMITED's is asserted by its own test).
        account = orders_run.account(case.account, case.run)
        if case.run == 3:
            for wallet in account["wallets"].values():
                assert wallet["openOrderMargin"] == "0"
            before = orders_run.accounts[2][case.account] or {"positions": [], "wallets": {}}
            assert account["positions"] == before["positions"]
            assert {a: w["walletBalance"] for a, w in account["wallets"].items()} == {
                a: w["walletBalance"] for a, w in before["wallets"].items()
            }
    else:
        assert decision["reasons"] == []


def test_every_order_is_decided_once_per_run(orders_run: OrdersRun) -> None:
    """Nothing but the orders are decided: not the ORDER_DONEs (runs 2 and 5), not the
    unreadable body; run 4 re-sends the redelivered ones."""
    assert orders_run.decisions[1] == orders_run.decisions[2] == orders_run.decisions[5] == []
    got = sorted((d["accountId"], d["orderId"]) for d in orders_run.decisions[3])
    assert got == sorted((c.account, c.order_id) for c in ALL if c.run == 3)
    again = [BY_NAME[n] for n in REDELIVERED]
    got = sorted((d["accountId"], d["orderId"]) for d in orders_run.decisions[4])
    assert got == sorted((c.account, c.order_id) for c in ALL if c.run == 4 or c in again)


def test_schema_invalid_also_sends_one_trade_rejected_alert(orders_run: OrdersRun) -> None:
    case = BY_NAME["SCHEMA_INVALID"]
    source = f"@order:{case.order_id}"
    mine = [a for a in orders_run.alerts[3] if a["accountId"] == case.account]
    assert len(mine) == 1, mine
    (alert,) = mine
    assert (alert["type"], alert["severity"], alert["scope"]) == ("TRADE_REJECTED", "WARNING", None)
    assert alert["sourceId"] == source
    assert alert["symbol"] == "BTCUSDT"
    assert alert["alertId"] == alert_id(source, "TRADE_REJECTED", case.account, None)
    assert [r["code"] for r in alert["reasons"]] == ["SCHEMA_INVALID"]
    record = orders_run.app.record(case.account, source)
    assert record is not None and [a["alertId"] for a in record["alerts"]] == [alert["alertId"]]
    # The account document was created (empty) to hold the decided id.
    account = orders_run.account(case.account, 3)
    assert (account["wallets"], account["positions"], account["openOrders"]) == ({}, [], [])


def test_an_order_that_cannot_be_read_gets_no_decision(orders_run: OrdersRun) -> None:
    source = digest(UNREADABLE)
    (alert,) = [a for a in orders_run.alerts[3] if a["sourceId"] == source]
    assert alert["type"] == "TRADE_REJECTED"
    assert alert["accountId"] == "oc-unreadable"
    assert alert["alertId"] == alert_id(source, "TRADE_REJECTED", "oc-unreadable", None)
    assert [r["code"] for r in alert["reasons"]] == ["SCHEMA_INVALID"]
    record = orders_run.app.record("oc-unreadable", f"rejection:{source}")
    assert record is not None and record["type"] == "rejection"
    assert all(d["accountId"] != "oc-unreadable" for d in orders_run.decisions[3])
    assert orders_run.accounts[3]["oc-unreadable"] is None


def test_orders_raise_no_other_alert(orders_run: OrdersRun) -> None:
    schema = BY_NAME["SCHEMA_INVALID"]
    sources = sorted(a["sourceId"] for a in orders_run.alerts[3])
    assert sources == sorted([f"@order:{schema.order_id}", digest(UNREADABLE)])
    # Run 4: the withdrawal beyond what the reservation leaves; a redelivered broken
    # order re-sends its decision, not its alert.
    assert [(a["type"], a["sourceId"]) for a in orders_run.alerts[4]] == [
        ("TRADE_REJECTED", "w-oc-wd-over")
    ]
    assert orders_run.alerts[5] == []


def test_controls_set_the_trading_state_and_say_so(orders_run: OrdersRun) -> None:
    changed = {
        a["accountId"]: a for a in orders_run.alerts[2] if a["type"] == "TRADING_STATE_CHANGED"
    }
    assert set(changed) == {"oc-halted", "oc-reducing", "oc-g1", "oc-stale", "oc-unfunded"}
    for account, alert in changed.items():
        source = f"@control:ctl-{account}"
        assert (alert["severity"], alert["scope"], alert["sourceId"]) == ("INFO", None, source)
        assert alert["alertId"] == alert_id(source, "TRADING_STATE_CHANGED", account, None)
    assert orders_run.account("oc-reducing", 2)["tradingState"] == "REDUCING"
    assert orders_run.account("oc-halted", 2)["tradingState"] == "HALTED"


def test_the_liquidation_scenario_starts_in_liquidation(orders_run: OrdersRun) -> None:
    account = orders_run.account("oc-liq", 2)
    wallet = account["wallets"]["USDT"]
    # 3,100 − 3,000 uPnL = 100 < maintenance 250; ratio 250 / 100.
    assert (wallet["riskState"], wallet["marginBalance"], wallet["marginRatio"]) == (
        "LIQUIDATION",
        "100",
        "2.5",
    )


@pytest.mark.parametrize(
    "name", ["group-1-all", "stale-mark", "unfunded", "band-edge", "bracket-edge", "reducing"]
)
def test_more_decisions(orders_run: OrdersRun, name: str) -> None:
    assert_decided(orders_run, EXTRA_BY_NAME[name])


def test_the_approved_order_is_held_with_its_reservation(orders_run: OrdersRun) -> None:
    case = BY_NAME["APPROVED"]
    account = orders_run.account(case.account, 3)
    (held,) = account["openOrders"]
    assert held == {
        "orderId": "o-ok",
        "symbol": "BTCUSDT",
        "side": "BUY",
        "positionSide": "BOTH",
        "marginMode": "CROSS",
        "orderType": "LIMIT",
        "price": "60000",
        "leverage": 10,
        "quantity": "0.1",
        "openingQuantity": "0.1",
        "reserved": "600",
        "submittedAt": SUBMITTED,
    }
    wallet = account["wallets"]["USDT"]
    assert (wallet["walletBalance"], wallet["openOrderMargin"], wallet["availableBalance"]) == (
        "1000",
        "600",
        "400",
    )
    assert account["tradingState"] == "ACTIVE"
    assert account["orderTimes"] == [SUBMITTED]


def test_a_market_order_is_valued_beyond_the_mark(orders_run: OrdersRun) -> None:
    case = EXTRA_BY_NAME["market"]
    decision = assert_decided(orders_run, case)
    metrics = decision["metrics"]
    assert (metrics["price"], metrics["initialMargin"], metrics["openLoss"]) == (
        "60030",
        "600.3",
        "3",
    )
    assert (metrics["cost"], metrics["availableForOrdersAfter"]) == ("603.3", "396.7")
    (held,) = orders_run.account(case.account, 3)["openOrders"]
    assert (held["orderType"], held["price"], held["reserved"]) == ("MARKET", "60030", "603.3")


# --- reservations --------------------------------------------------------------------------


def test_two_orders_that_each_fit_but_not_together(orders_run: OrdersRun) -> None:
    assert_decided(orders_run, EXTRA_BY_NAME["two-first"])
    second = assert_decided(orders_run, EXTRA_BY_NAME["two-second"])
    # 1,000 − 600 reserved by the first = 400 < 600.
    assert second["metrics"]["availableForOrders"] == "400"
    assert second["metrics"]["cost"] == "600"
    account = orders_run.account("oc-two", 4)
    assert [o["orderId"] for o in account["openOrders"]] == ["o-two-1"]
    assert account["wallets"]["USDT"]["openOrderMargin"] == "600"
    assert account["wallets"]["USDT"]["availableBalance"] == "400"


def test_a_fill_of_the_order_releases_pro_rata_and_its_done_the_rest(
    orders_run: OrdersRun,
) -> None:
    assert_decided(orders_run, EXTRA_BY_NAME["fill-release"])
    assert orders_run.account("oc-fill", 3)["wallets"]["USDT"]["openOrderMargin"] == "600"
    # FILL v2 of 0.04 of the 0.1: 600 × 0.04 / 0.1 = 240 released, 360 stays on the 0.06
    # left; the position's initial margin 0.04 × 60,000 / 10 = 240; available
    # 1,000 − 240 − 360 = 400.
    after_fill = orders_run.account("oc-fill", 4)
    (held,) = after_fill["openOrders"]
    assert (held["quantity"], held["openingQuantity"], held["reserved"]) == ("0.06", "0.06", "360")
    (position,) = after_fill["positions"]
    assert (position["quantity"], position["initialMargin"]) == ("0.04", "240")
    wallet = after_fill["wallets"]["USDT"]
    assert (wallet["openOrderMargin"], wallet["availableBalance"]) == ("360", "400")
    assert orders_run.app.record("oc-fill", "t-oc-fill") is not None
    # ORDER_DONE: the rest released, the position stays; 1,000 − 240 = 760.
    done = orders_run.account("oc-fill", 5)
    assert done["openOrders"] == []
    wallet = done["wallets"]["USDT"]
    assert (wallet["openOrderMargin"], wallet["availableBalance"]) == ("0", "760")
    assert done["positions"] == after_fill["positions"]
    record = orders_run.app.record("oc-fill", "@order-done:o-fill")
    assert record is not None


def test_order_done_before_its_order(orders_run: OrdersRun) -> None:
    # Run 2: recorded and kept on the account, nothing sent.
    before = orders_run.account("oc-done-first", 2)
    assert "@order-done:o-done-first" in before["recentEventIds"]
    assert before["openOrders"] == []
    assert orders_run.app.record("oc-done-first", "@order-done:o-done-first") is not None
    # Run 3: the order is rejected (asserted by test_reason_code[ORDER_ALREADY_DONE]).
    assert orders_run.decision(BY_NAME["ORDER_ALREADY_DONE"])["decision"] == "REJECTED"


def test_a_withdrawal_cannot_take_reserved_margin(orders_run: OrdersRun) -> None:
    assert_decided(orders_run, EXTRA_BY_NAME["withdrawal"])
    # 1,000 with 600 reserved: 400 available. 400.01 is refused, 400 is applied (whichever
    # came first).
    rejection = orders_run.app.record("oc-wd", "rejection:w-oc-wd-over")
    assert rejection is not None
    assert [r["code"] for r in rejection["reasons"]] == ["INSUFFICIENT_AVAILABLE_BALANCE"]
    assert orders_run.app.record("oc-wd", "w-oc-wd-all") is not None
    account = orders_run.account("oc-wd", 4)
    wallet = account["wallets"]["USDT"]
    assert (wallet["walletBalance"], wallet["openOrderMargin"], wallet["availableBalance"]) == (
        "600",
        "600",
        "0",
    )
    (held,) = account["openOrders"]
    assert held["reserved"] == "600"


def test_a_reducing_order_needs_no_margin(orders_run: OrdersRun) -> None:
    case = EXTRA_BY_NAME["reducing"]
    assert orders_run.account(case.account, 2)["wallets"]["USDT"]["availableBalance"] == "0"
    assert_decided(orders_run, case)
    account = orders_run.account(case.account, 3)
    (held,) = account["openOrders"]
    assert (held["side"], held["openingQuantity"], held["reserved"]) == ("SELL", "0", "0")
    wallet = account["wallets"]["USDT"]
    assert (wallet["openOrderMargin"], wallet["availableBalance"]) == ("0", "0")


def test_rate_limit_counts_decided_orders_in_the_second_before(orders_run: OrdersRun) -> None:
    for name in ("rate-1", "rate-2", "rate-4"):
        assert_decided(orders_run, EXTRA_BY_NAME[name])
    account = orders_run.account("oc-rate", 4)
    assert sorted(o["orderId"] for o in account["openOrders"]) == [
        "o-rate-1",
        "o-rate-2",
        "o-rate-4",
    ]
    assert account["wallets"]["USDT"]["openOrderMargin"] == "180"  # 3 × 0.01 × 60,000 / 10
    assert len(account["orderTimes"]) == 4  # the rate-limited one is counted too


@pytest.mark.parametrize("name", REDELIVERED)
def test_a_redelivered_order_sends_the_same_decision_again(
    orders_run: OrdersRun, name: str
) -> None:
    case = BY_NAME[name]
    first = orders_run.decision(case, 3)
    again = orders_run.decision(case, 4)
    assert again["decisionId"] == first["decisionId"]
    assert {k: v for k, v in again.items() if k != "decidedAt"} == {
        k: v for k, v in first.items() if k != "decidedAt"
    }
    # decided once: nothing reserved twice, not counted again by the rate limit
    before, after = orders_run.account(case.account, 3), orders_run.account(case.account, 4)
    assert after["openOrders"] == before["openOrders"]
    assert after["orderTimes"] == before["orderTimes"]
    assert after["wallets"] == before["wallets"]
