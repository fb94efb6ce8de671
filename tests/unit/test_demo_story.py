"""The demo's story (demo/story.py, demo/*.jsonl) through the real flows over the in-memory
fakes: every step does what it says (alerts, order decisions, states, open orders), in any
order of the messages within a step (devhost processes a file's messages concurrently), and
the figures its text quotes are the core's."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import pytest

from demo.story import STEPS, Step, check
from handlers.flows import process_order_message
from tests.aio import run
from tests.unit.fakes import FakeClock, FakeDecisions, FakeSink, FakeStore
from tests.unit.flowkit import make_deps, marks, trade

StepResult = tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]
ORDERS = {"ORDER", "ORDER_DONE", "ACCOUNT_CONTROL"}


class Teller:
    """The app over the fakes, told the story's files one step at a time."""

    def __init__(self) -> None:
        self.store, self.sink, self.clock = FakeStore(), FakeSink(), FakeClock()
        self.decisions = FakeDecisions()
        self.deps = make_deps(self.store, self.sink, self.clock, decisions=self.decisions)
        self.decided: list[dict[str, Any]] = []  # the decisions of the last step

    def send(self, line: str) -> None:
        body = base64.b64encode(line.encode("utf-8"))  # what `devhost send` writes
        kind = json.loads(line)["type"]
        if kind in {"MARK", "MARKS"}:
            marks(self.deps, body)
        elif kind in ORDERS:
            run(process_order_message(body, self.deps))
        else:
            trade(self.deps, body)
        self.clock.advance(1)

    def step(self, step: Step, reverse: bool = False) -> StepResult:
        """The step's alerts and the account documents after it."""
        before, decided = len(self.sink.sent), len(self.decisions.sent)
        lines = [line for line in step.path.read_text(encoding="utf-8").splitlines() if line]
        for line in reversed(lines) if reverse else lines:
            self.send(line)
        alerts = [a.model_dump(mode="json") for a in self.sink.sent[before:]]
        self.decided = [d.model_dump(mode="json") for d in self.decisions.sent[decided:]]
        return alerts, json.loads(json.dumps(self.store.accounts))


def tell(reverse: bool = False) -> list[StepResult]:
    """Each step's alerts and the account documents after it."""
    teller = Teller()
    return [teller.step(step, reverse) for step in STEPS]


@pytest.mark.parametrize("reverse", [False, True], ids=["file order", "reversed"])
def test_every_step_does_what_it_says(reverse: bool) -> None:
    teller = Teller()
    for step in STEPS:
        alerts, accounts = teller.step(step, reverse)
        assert check(step, alerts, list(accounts.values()), teller.decided) == [], step.title


def test_the_story_walks_a_cross_wallet_through_every_risk_state_and_back() -> None:
    results = tell()
    states = [accounts["alice"]["wallets"]["USDT"]["riskState"] for _, accounts in results[1:8]]
    walk = ["NORMAL", "NORMAL", "NORMAL", "MARGIN_CALL", "LIQUIDATION", "NORMAL", "NORMAL"]
    assert states == walk  # after steps 2..8
    kinds = [(a["type"], a["accountId"], a["scope"]) for alerts, _ in results for a in alerts]
    assert kinds == [
        ("TRADE_REJECTED", "alice", None),
        ("TRADE_REJECTED", "bob", None),
        ("MARGIN_CALL", "alice", "USDT"),
        ("LIQUIDATION_RISK", "alice", "USDT"),
        ("RISK_RECOVERED", "alice", "USDT"),
        ("MARGIN_CALL", "bob", "ETHUSDT:BOTH"),
    ]
    bob = results[-1][1]["bob"]
    assert bob["positions"][0]["marginMode"] == "ISOLATED"
    assert bob["wallets"]["USDT"]["riskState"] == "NORMAL"  # the isolated position alone


def position(accounts: dict[str, dict[str, Any]], account: str) -> dict[str, Any]:
    [only] = accounts[account]["positions"]
    return dict(only)


def test_the_figures_the_story_quotes_are_the_cores() -> None:
    results = tell()
    by_file = {step.file: result for step, result in zip(STEPS, results, strict=True)}

    steps: dict[str, Step] = {step.file: step for step in STEPS}

    def text(step: Step) -> str:
        return f"{step.why} {step.then}"

    # Step 2: "alice would be liquidated at 60240.96, 5.9 % below".
    alice = position(by_file["02-open.jsonl"][1], "alice")
    liq = Decimal(alice["liquidationPrice"])
    assert round(liq, 2) == Decimal("60240.96") and "60240.96" in text(steps["02-open.jsonl"])
    assert round((64000 - liq) / 64000 * 100, 1) == Decimal("5.9")
    # Step 3: bob's 1000 USDT of isolated margin (step 2) is still all there is.
    bob = position(by_file["03-duplicate.jsonl"][1], "bob")
    assert (bob["quantity"], bob["isolatedMargin"]) == ("-4", "1000")
    # Step 5: "loses 1860 USDT, leaving a margin balance of 140 against 120.56".
    accounts = by_file["05-btc-falls.jsonl"][1]
    wallet = accounts["alice"]["wallets"]["USDT"]
    assert position(accounts, "alice")["unrealizedPnl"] == "-1860"
    assert (wallet["marginBalance"], wallet["totalMaintMargin"]) == ("140", "120.56")
    assert all(f" {n}" in text(steps["05-btc-falls.jsonl"]) for n in ("1860", "140", "120.56"))
    # Step 6: 60200 is "40.96 below alice's liquidation price" (rounded).
    assert round(liq - 60200, 2) == Decimal("40.96")
    assert "40.96 below" in text(steps["06-btc-falls-further.jsonl"])
    # Step 7: "ratio falls back to 0.08".
    ratio = Decimal(by_file["07-btc-rebounds.jsonl"][1]["alice"]["wallets"]["USDT"]["marginRatio"])
    assert round(ratio, 2) == Decimal("0.08")
    # Step 8: "bob's short loses 950 of its 1000 USDT of isolated margin".
    bob = position(by_file["08-eth-rallies.jsonl"][1], "bob")
    assert (bob["unrealizedPnl"], bob["isolatedMargin"]) == ("-950", "1000")
    assert "loses 950 of its 1000 USDT" in text(steps["08-eth-rallies.jsonl"])
    # Step 9: bob "has 500 available", his order costs 315 and leaves 185; alice's costs
    # 63 against -75.
    wallets = by_file["08-eth-rallies.jsonl"][1]
    assert wallets["bob"]["wallets"]["USDT"]["availableBalance"] == "500"
    assert wallets["alice"]["wallets"]["USDT"]["availableBalance"] == "-75"
    teller = Teller()
    for step in STEPS[:8]:
        teller.step(step)
    _, accounts = teller.step(steps["09-orders.jsonl"])
    decided = {d["accountId"]: d for d in teller.decided}
    assert decided["bob"]["metrics"]["cost"] == "315"
    assert decided["bob"]["metrics"]["availableForOrders"] == "500"
    assert decided["bob"]["metrics"]["availableForOrdersAfter"] == "185"
    assert accounts["bob"]["wallets"]["USDT"]["availableBalance"] == "185"
    assert (
        decided["alice"]["metrics"]["cost"],
        decided["alice"]["metrics"]["availableForOrders"],
    ) == (
        "63",
        "-75",
    )
    orders = text(steps["09-orders.jsonl"])
    assert all(
        n in orders for n in ("cost 315", "500 available", "falls to\n185", "cost 63", "-75")
    )
    _, accounts = teller.step(steps["10-order-done.jsonl"])
    assert accounts["bob"]["wallets"]["USDT"]["availableBalance"] == "500"
    assert teller.decided == []  # ORDER_DONE sends nothing


def test_a_step_that_did_something_else_is_reported() -> None:
    step = STEPS[4]  # BTC falls: alice MARGIN_CALL
    alerts, accounts = tell()[3]  # what the step before left: no risk alert, alice NORMAL
    problems = check(step, alerts, list(accounts.values()))
    assert any(p.startswith("alerts: expected [('MARGIN_CALL'") for p in problems)
    assert "alice USDT: expected MARGIN_CALL, got NORMAL" in problems


@pytest.mark.parametrize(
    ("symbol", "price", "account", "scope", "state"),
    [
        ("BTCUSDT", "60301.6", "alice", "USDT", "NORMAL"),
        ("BTCUSDT", "60301.5", "alice", "USDT", "MARGIN_CALL"),
        ("BTCUSDT", "60241", "alice", "USDT", "MARGIN_CALL"),
        ("BTCUSDT", "60240.9", "alice", "USDT", "LIQUIDATION"),
        ("ETHUSDT", "2736.31", "bob", "ETHUSDT:BOTH", "NORMAL"),
        ("ETHUSDT", "2736.33", "bob", "ETHUSDT:BOTH", "MARGIN_CALL"),
        ("ETHUSDT", "2739.05", "bob", "ETHUSDT:BOTH", "LIQUIDATION"),
    ],
)
def test_the_margin_call_bands_docs_demo_md_quotes(
    symbol: str, price: str, account: str, scope: str, state: str
) -> None:
    """alice: MARGIN_CALL from 60301.51 down to 60240.96; bob: from 2736.32 up to 2739.04."""
    teller = Teller()
    for step in STEPS[:4]:  # funded, opened, no mark yet
        teller.step(step)
    mark = {"type": "MARK", "schemaVersion": 1, "symbol": symbol, "markPrice": price}
    teller.send(json.dumps({**mark, "timestamp": "2024-10-01T00:05:00Z"}))
    document = teller.store.accounts[account]
    assert check(Step("", "", "", "", states={(account, scope): state}), [], [document]) == []
