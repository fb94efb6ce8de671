"""Every rejection reason code and every fill-raised alert, end to end on the real services.

One message in → the record in Cosmos and the alert on the alerts queue out, through
``python -m devhost run --drain``. Three isolated apps, each driven once per module by a
fixture that groups many independent accounts into a few devhost runs (messages of one run
are processed concurrently, so dependent steps get their own run):

- ``rejections``: every reason code (contract: "What happens to each message", 1.),
- ``risk``: INSUFFICIENT_MARGIN, LEVERAGE_BRACKET_BREACH, PRICE_DEVIATION, an isolated
  position walked through MARGIN_CALL → LIQUIDATION_RISK → RISK_RECOVERED by marks, and a
  hedge pair's shared liquidation price,
- ``thresholds``: LARGE_TRADE and POSITION_LIMIT with small configured thresholds.

Every expected number is worked out in a comment next to its assertion.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devhost.services import LocalServices
from handlers.settings import SHIPPED_CATALOG
from tests.integration.test_pipeline import deposit, digest, fill, ran_ok
from tests.support import AppUnderTest, body_of

pytestmark = pytest.mark.services

UNATTRIBUTED = "_unattributed"


# --- helpers -----------------------------------------------------------------------------


def alert_id(source_id: str, kind: str, account: str | None, scope: str | None) -> str:
    """The contract's alertId: SHA-256 hex of the compact JSON [sourceId, type, accountId, scope]."""
    text = json.dumps([source_id, kind, account, scope], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def transfer(
    account: str, transfer_id: str, amount: str, reason: str, asset: str = "USDT"
) -> dict[str, Any]:
    return {
        "type": "TRANSFER",
        "schemaVersion": 1,
        "transferId": transfer_id,
        "accountId": account,
        "asset": asset,
        "amount": amount,
        "reason": reason,
        "occurredAt": "2024-10-01T00:00:30Z",
    }


def mark(symbol: str, price: str, minute: int) -> dict[str, Any]:
    return {
        "type": "MARK",
        "schemaVersion": 1,
        "symbol": symbol,
        "markPrice": price,
        "timestamp": f"2024-10-01T00:{minute:02d}:00Z",
    }


def mark_id(symbol: str, minute: int) -> str:
    return f"{symbol}@2024-10-01T00:{minute:02d}:00.000Z"


def by_source(alerts: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for a in alerts:
        out.setdefault(a["sourceId"], []).append(a)
    return out


def by_account(alerts: list[dict[str, Any]]) -> dict[str | None, list[dict[str, Any]]]:
    out: dict[str | None, list[dict[str, Any]]] = {}
    for a in alerts:
        out.setdefault(a["accountId"], []).append(a)
    return out


def ledger_state(doc: Mapping[str, Any] | None) -> tuple[Any, Any]:
    """What a rejection must not change: the wallets and the positions."""
    if doc is None:
        return ({}, [])
    return (doc["wallets"], doc["positions"])


def run_and_collect(app: AppUnderTest) -> list[dict[str, Any]]:
    """One devhost run (must exit 0), then every alert it sent (consumed)."""
    ran_ok(app)
    return app.alerts()


def new_app(services: LocalServices, workdir: Path, **overrides: str) -> AppUnderTest:
    return AppUnderTest(services, workdir, overrides=overrides)


# --- rejections --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One message that must be rejected with ``codes`` (in that order)."""

    name: str
    text: str  # the queue text, exactly as sent
    source_id: str
    account: str | None  # the alert's accountId; the record's partition is this or _unattributed
    codes: tuple[str, ...]
    symbol: str | None = None  # the alert's symbol: a FILL body's symbol


def _case(
    name: str, message: Mapping[str, Any] | str, codes: tuple[str, ...], attributed: bool = True
) -> Case:
    """A case from a message (sent as base64 of its JSON) or an exact queue text. A message
    with well-formed ids is attributed: sourceId its tradeId/transferId, partition its
    accountId; anything else has sourceId = the text's digest and no accountId."""
    if isinstance(message, str):
        return Case(name, message, digest(message), None, codes)
    text = body_of(message)
    symbol = message.get("symbol")
    if not attributed:
        return Case(name, text, digest(text), None, codes, symbol)
    source_id = message.get("tradeId") or message.get("transferId")
    return Case(name, text, source_id, message["accountId"], codes, symbol)


# The shipped catalog allows leverage 125 on every symbol, which is also the schema's
# maximum (leverage 126 is SCHEMA_INVALID), so LEVERAGE_ABOVE_MAX needs an instrument capped
# lower: the rejections app runs on the shipped catalog plus CAPUSDT, a copy of ETHUSDT's
# rules (tick 0.01, step 0.001, minQty 0.001, minNotional 20) with maxLeverage 20.
CAPPED = "CAPUSDT"

_garbage = "this is neither json nor base64!"
# Valid base64 of a valid FILL, broken by a line feed inside: whitespace inside base64 is
# MALFORMED, and nothing of the body can be read, so the sourceId is the digest.
_b64 = body_of(fill("rj-ws", "t-ws"))
_b64_ws = _b64[:20] + "\n" + _b64[20:]

STATELESS: tuple[Case, ...] = (
    _case("malformed", _garbage, ("MALFORMED",)),
    _case("malformed-base64-with-whitespace", _b64_ws, ("MALFORMED",)),
    # Valid JSON that is not an object (base64 of "[1,2,3]") is SCHEMA_INVALID as a whole.
    _case("json-not-an-object", body_of(b"[1,2,3]"), ("SCHEMA_INVALID",)),
    _case("schema-fill-side", fill("rj-schema", "t-schema", side="HOLD"), ("SCHEMA_INVALID",)),
    # A badly formed accountId: no attribution, so sourceId = digest, partition _unattributed.
    _case(
        "schema-bad-account-id",
        fill("bad account!", "t-badacc"),
        ("SCHEMA_INVALID",),
        attributed=False,
    ),
    # TRANSFER to an asset that is no settle asset of the catalog (USDT, BTC).
    _case(
        "schema-transfer-asset",
        transfer("rj-asset", "x-asset", "5", "DEPOSIT", asset="ETH"),
        ("SCHEMA_INVALID",),
    ),
    # A DEPOSIT with a negative amount: the sign contradicts the reason.
    _case(
        "schema-deposit-negative", transfer("rj-neg", "x-neg", "-5", "DEPOSIT"), ("SCHEMA_INVALID",)
    ),
    _case("unknown-symbol", fill("rj-sym", "t-sym", symbol="DOGEUSDT"), ("UNKNOWN_SYMBOL",)),
    # 60000.05 / 0.1 is not an integer; 0.1 × 60000.05 = 6000.005 ≥ 100 (only PRICE_TICK).
    _case("price-tick", fill("rj-tick", "t-tick", price="60000.05"), ("PRICE_TICK",)),
    # 0.1005 / 0.001 = 100.5; 0.1005 × 60000 = 6030 ≥ 100 (only QTY_STEP).
    _case("qty-step", fill("rj-step", "t-step", quantity="0.1005"), ("QTY_STEP",)),
    # 1001 is a multiple of 0.001 but above maxQty 1000 (only QTY_BOUNDS).
    _case("qty-bounds", fill("rj-bounds", "t-bounds", quantity="1001"), ("QTY_BOUNDS",)),
    # 0.001 × 60000 = 60 USDT < minNotional 100.
    _case("min-notional", fill("rj-notional", "t-notional", quantity="0.001"), ("MIN_NOTIONAL",)),
    # CAPUSDT: leverage 21 > maxLeverage 20; 1 × 2500 = 2500 ≥ 20.
    _case(
        "leverage-above-max",
        fill("rj-lev", "t-lev", symbol=CAPPED, quantity="1", price="2500", leverage=21),
        ("LEVERAGE_ABOVE_MAX",),
    ),
    # Every stateless rule at once, reported in the documented order: leverage 21 > 20;
    # 2500.005 not a multiple of 0.01; 0.0005 not a multiple of 0.001 and below minQty
    # 0.001; 0.0005 × 2500.005 = 1.2500025 < 20.
    _case(
        "all-stateless-rules-in-order",
        fill("rj-all", "t-all", symbol=CAPPED, quantity="0.0005", price="2500.005", leverage=21),
        ("LEVERAGE_ABOVE_MAX", "PRICE_TICK", "QTY_STEP", "QTY_BOUNDS", "MIN_NOTIONAL"),
    ),
)

# Rejections on account state. Setup: a DEPOSIT of 10000 USDT each (run 1), the opening
# fill (run 2); the rejected message comes in run 3 and again (a duplicate) in run 4.
STATE_SETUP: Mapping[str, dict[str, Any]] = {
    # one-way long 0.1 BTCUSDT @ 60000
    "rj-ro-flip": fill("rj-ro-flip", "o-ro-flip"),
    # hedge LONG 0.1 BTCUSDT @ 60000
    "rj-hedge-close": fill("rj-hedge-close", "o-hedge-close", positionSide="LONG"),
    # one-way long 0.1 BTCUSDT
    "rj-mode": fill("rj-mode", "o-mode"),
    # CROSS long 1 ETHUSDT @ 2500, leverage 10
    "rj-margin": fill("rj-margin", "o-margin", symbol="ETHUSDT", quantity="1", price="2500"),
    # hedge SHORT 0.1 BTCUSDT @ 60000
    "rj-mode-rev": fill("rj-mode-rev", "o-mode-rev", side="SELL", positionSide="SHORT"),
    # ISOLATED long 1 ETHUSDT @ 2500, leverage 10 (isolated margin 250)
    "rj-margin-rev": fill(
        "rj-margin-rev",
        "o-margin-rev",
        symbol="ETHUSDT",
        quantity="1",
        price="2500",
        marginMode="ISOLATED",
    ),
    # long 0.1 BTCUSDT @ 60000, leverage 10: IM 600, so availableBalance = 10000 − 600 = 9400
    "rj-wd": fill("rj-wd", "o-wd"),
    # the same, for the boundary: a withdrawal of exactly 9400 is applied
    "rj-wd-edge": fill("rj-wd-edge", "o-wd-edge"),
}
# Applied in run 3 next to the rejections: a WITHDRAWAL equal to availableBalance.
WITHDRAW_EDGE = transfer("rj-wd-edge", "t-wd-edge", "-9400", "WITHDRAWAL")
STATEFUL: tuple[Case, ...] = (
    # A reduce-only fill on an account with no position would open one (no setup at all:
    # the rejection creates an empty account document holding the id).
    _case(
        "reduce-only-would-open",
        fill("rj-ro-open", "t-ro-open", reduceOnly=True),
        ("REDUCE_ONLY_VIOLATION",),
    ),
    # Long 0.1, reduce-only SELL 0.2 would flip to short 0.1.
    _case(
        "reduce-only-would-flip",
        fill("rj-ro-flip", "t-ro-flip", side="SELL", quantity="0.2", reduceOnly=True),
        ("REDUCE_ONLY_VIOLATION",),
    ),
    # Hedge mode, fresh account: a reduce-only BUY on LONG would open the LONG leg.
    _case(
        "hedge-reduce-only-would-open",
        fill("rj-hedge-ro", "t-hedge-ro", positionSide="LONG", reduceOnly=True),
        ("REDUCE_ONLY_VIOLATION",),
    ),
    # Hedge LONG holds 0.1; SELL 0.2 on LONG closes beyond the held quantity.
    _case(
        "hedge-close-beyond-held",
        fill("rj-hedge-close", "t-hedge-close", side="SELL", quantity="0.2", positionSide="LONG"),
        ("REDUCE_ONLY_VIOLATION",),
    ),
    # A hedge (LONG) fill while the one-way position on BTCUSDT is open.
    _case(
        "hedge-fill-on-one-way",
        fill("rj-mode", "t-mode", positionSide="LONG"),
        ("POSITION_SIDE_MISMATCH",),
    ),
    # A one-way (BOTH) fill while the hedge SHORT on BTCUSDT is open.
    _case(
        "one-way-fill-on-hedge",
        fill("rj-mode-rev", "t-mode-rev"),
        ("POSITION_SIDE_MISMATCH",),
    ),
    # A CROSS fill while the ISOLATED position on ETHUSDT is open.
    _case(
        "cross-fill-on-isolated",
        fill("rj-margin-rev", "t-margin-rev", symbol="ETHUSDT", quantity="1", price="2500"),
        ("POSITION_SIDE_MISMATCH",),
    ),
    # An ISOLATED fill while the CROSS position on ETHUSDT is open.
    _case(
        "isolated-fill-on-cross",
        fill(
            "rj-margin",
            "t-margin",
            symbol="ETHUSDT",
            quantity="1",
            price="2500",
            marginMode="ISOLATED",
        ),
        ("POSITION_SIDE_MISMATCH",),
    ),
    # availableBalance 9400 (walletBalance 10000): withdrawing 9400.01 is refused.
    _case(
        "withdrawal-beyond-available",
        transfer("rj-wd", "t-wd", "-9400.01", "WITHDRAWAL"),
        ("INSUFFICIENT_AVAILABLE_BALANCE",),
    ),
)


@dataclass
class RejectionRun:
    app: AppUnderTest
    stateless_alerts: list[dict[str, Any]]
    setup_alerts: list[dict[str, Any]]
    stateful_alerts: list[dict[str, Any]]
    repeat_alerts: list[dict[str, Any]]
    before: dict[str, Any] = field(default_factory=dict)  # accounts before the rejections
    after: dict[str, Any] = field(default_factory=dict)  # … after them
    after_repeat: dict[str, Any] = field(default_factory=dict)  # … after the duplicates


@pytest.fixture(scope="module")
def rejections(
    local_services: LocalServices, tmp_path_factory: pytest.TempPathFactory
) -> RejectionRun:
    workdir = tmp_path_factory.mktemp("reason-codes")
    catalog = json.loads(SHIPPED_CATALOG.read_text(encoding="utf-8"))
    eth = next(i for i in catalog["instruments"] if i["symbol"] == "ETHUSDT")
    catalog["instruments"].append({**eth, "symbol": CAPPED, "baseAsset": "CAP", "maxLeverage": 20})
    catalog_file = workdir / "instruments-capped.json"
    catalog_file.write_text(json.dumps(catalog), encoding="utf-8")
    app = new_app(local_services, workdir, INSTRUMENTS_FILE=str(catalog_file))

    # Run 1: every stateless rejection, and the deposits of the stateful accounts.
    app.send([c.text for c in STATELESS], encode=False)
    app.send([deposit(acc, "10000", f"dep-{acc}") for acc in STATE_SETUP])
    stateless_alerts = run_and_collect(app)
    # Run 2: the opening fills.
    app.send(list(STATE_SETUP.values()))
    setup_alerts = run_and_collect(app)
    accounts = sorted({c.account for c in STATEFUL if c.account} | set(STATE_SETUP))
    before = {acc: app.account(acc) for acc in accounts}
    # Run 3: the rejections on account state.
    app.send([c.text for c in STATEFUL], encode=False)
    app.send([WITHDRAW_EDGE])
    stateful_alerts = run_and_collect(app)
    after = {acc: app.account(acc) for acc in accounts}
    # Run 4: every rejected message again, byte for byte.
    app.send([c.text for c in STATELESS + STATEFUL], encode=False)
    repeat_alerts = run_and_collect(app)
    after_repeat = {acc: app.account(acc) for acc in accounts}
    return RejectionRun(
        app,
        stateless_alerts,
        setup_alerts,
        stateful_alerts,
        repeat_alerts,
        before,
        after,
        after_repeat,
    )


def assert_rejected(run: RejectionRun, alerts: list[dict[str, Any]], case: Case) -> None:
    """Exactly one TRADE_REJECTED alert for the case, and its rejection record."""
    mine = by_source(alerts).get(case.source_id, [])
    assert len(mine) == 1, f"{case.name}: alerts {mine}"
    (alert,) = mine
    assert alert["type"] == "TRADE_REJECTED"
    assert alert["schemaVersion"] == 1
    assert alert["severity"] == "WARNING"
    assert alert["scope"] is None
    assert alert["accountId"] == case.account
    assert alert["alertId"] == alert_id(case.source_id, "TRADE_REJECTED", case.account, None)
    assert [r["code"] for r in alert["reasons"]] == list(case.codes)
    assert all(r["message"] for r in alert["reasons"])
    assert alert.get("symbol") == case.symbol

    partition = case.account or UNATTRIBUTED
    record = run.app.record(partition, f"rejection:{case.source_id}")
    assert record is not None, f"{case.name}: no record rejection:{case.source_id} in {partition}"
    assert record["type"] == "rejection"
    assert record["schemaVersion"] == 1
    assert record["accountId"] == partition
    assert record["sourceId"] == case.source_id
    assert record["reasons"][0]["code"] == case.codes[0]
    assert [r["code"] for r in record["reasons"]] == list(case.codes)
    assert record["bodyDigest"] == digest(case.text)
    assert [a["alertId"] for a in record["alerts"]] == [alert["alertId"]]


def test_stateless_rejections_send_exactly_one_alert_each(rejections: RejectionRun) -> None:
    # Deposits raise nothing; every stateless case raises exactly one alert.
    assert sorted(a["sourceId"] for a in rejections.stateless_alerts) == sorted(
        c.source_id for c in STATELESS
    )


@pytest.mark.parametrize("case", STATELESS, ids=[c.name for c in STATELESS])
def test_stateless_rejection(rejections: RejectionRun, case: Case) -> None:
    assert_rejected(rejections, rejections.stateless_alerts, case)
    # A stateless rejection touches no account document.
    if case.account is not None:
        assert rejections.app.account(case.account) is None


def test_stateful_setup_raises_nothing(rejections: RejectionRun) -> None:
    assert rejections.setup_alerts == []
    for acc in STATE_SETUP:
        assert rejections.before[acc] is not None
        assert rejections.before[acc]["riskState"] == "NORMAL"
    # rj-wd: walletBalance 10000, IM 0.1 × 60000 / 10 = 600 → availableBalance 9400.
    wallet = rejections.before["rj-wd"]["wallets"]["USDT"]
    assert (wallet["walletBalance"], wallet["availableBalance"]) == ("10000", "9400")


@pytest.mark.parametrize("case", STATEFUL, ids=[c.name for c in STATEFUL])
def test_state_dependent_rejection(rejections: RejectionRun, case: Case) -> None:
    assert case.account is not None
    assert_rejected(rejections, rejections.stateful_alerts, case)
    before, after = rejections.before[case.account], rejections.after[case.account]
    # Nothing changed in any position or balance …
    assert after is not None
    assert ledger_state(after) == ledger_state(before)
    # … but the rejected id is final: it is in the account's recent ids.
    assert case.source_id in after["recentEventIds"]
    assert after["recentEventIds"].count(case.source_id) == 1
    # No trade/transfer record was written under the event id.
    assert rejections.app.record(case.account, case.source_id) is None


def test_stateful_rejections_send_exactly_one_alert_each(rejections: RejectionRun) -> None:
    # The withdrawal of exactly availableBalance sends nothing.
    assert sorted(a["sourceId"] for a in rejections.stateful_alerts) == sorted(
        c.source_id for c in STATEFUL
    )


def test_withdrawal_of_exactly_available_balance_is_applied(rejections: RejectionRun) -> None:
    # 10000 − 9400 = 600 = IM, so availableBalance 600 − 600 = 0; margin ratio 24 / 600 =
    # 0.04 and liquidation (600 − 6000) / (0.0004 − 0.1) = 54216.87… < 60000 → NORMAL.
    record = rejections.app.record("rj-wd-edge", "t-wd-edge")
    assert record is not None and record["type"] == "transfer"
    assert rejections.app.record("rj-wd-edge", "rejection:t-wd-edge") is None
    wallet = rejections.app.account("rj-wd-edge")["wallets"]["USDT"]  # type: ignore[index]
    assert wallet["walletBalance"] == "600"
    assert wallet["availableBalance"] == "0"
    assert wallet["riskState"] == "NORMAL"


def test_reduce_only_on_a_fresh_account_creates_an_empty_account(rejections: RejectionRun) -> None:
    doc = rejections.after["rj-ro-open"]
    assert rejections.before["rj-ro-open"] is None
    assert doc is not None
    assert doc["positions"] == []
    assert doc["wallets"] == {}
    assert doc["recentEventIds"] == ["t-ro-open"]


def test_rejected_messages_sent_again_send_nothing(rejections: RejectionRun) -> None:
    assert rejections.repeat_alerts == []
    for acc, doc in rejections.after_repeat.items():
        assert doc is not None
        assert ledger_state(doc) == ledger_state(rejections.after[acc])
        assert doc["recentEventIds"] == rejections.after[acc]["recentEventIds"]
    # Still one rejection record per case (records are immutable; a re-create would fail).
    rows = rejections.app.query("ledger", "SELECT c.id FROM c WHERE c.type = 'rejection'")
    assert sorted(r["id"] for r in rows) == sorted(
        f"rejection:{c.source_id}" for c in STATELESS + STATEFUL
    )


# --- alerts raised by applied fills, and risk states driven by marks --------------------


@dataclass
class RiskRun:
    app: AppUnderTest
    runs: list[list[dict[str, Any]]]  # alerts of each devhost run
    iso: list[Any] = field(default_factory=list)  # the "iso" account after each run

    def of(self, run: int, account: str) -> list[dict[str, Any]]:
        return by_account(self.runs[run]).get(account, [])


@pytest.fixture(scope="module")
def risk(local_services: LocalServices, tmp_path_factory: pytest.TempPathFactory) -> RiskRun:
    app = new_app(local_services, tmp_path_factory.mktemp("risk"))
    runs: list[list[dict[str, Any]]] = []
    iso: list[Any] = []
    # Run 0: the ETHUSDT mark 2500 and the deposits.
    app.send([mark("ETHUSDT", "2500", 0)], queue="MARKS_QUEUE")
    funds = {
        "im": "500",
        "bb": "100000",
        "bb-below": "100000",
        "dev": "100000",
        "dev-edge": "100000",
        "iso": "2000",
        "hp": "10000",
    }
    app.send([deposit(acc, amount, f"dep-{acc}") for acc, amount in funds.items()])
    runs.append(run_and_collect(app))
    iso.append(app.account("iso"))
    # Run 1: the fills (one account each).
    app.send(
        [
            fill("im", "t-im", correlationId="c-im"),
            fill("bb", "t-bb", quantity="10", leverage=100),
            fill("bb-below", "t-bb-below", quantity="9.999", leverage=100),
            fill("dev", "t-dev", symbol="ETHUSDT", quantity="1", price="2700", leverage=5),
            fill(
                "dev-edge", "t-dev-edge", symbol="ETHUSDT", quantity="1", price="2625", leverage=5
            ),
            fill(
                "iso", "t-iso", symbol="ETHUSDT", quantity="4", price="2500", marginMode="ISOLATED"
            ),
            fill("hp", "t-hp-long", quantity="0.3", positionSide="LONG"),
        ]
    )
    runs.append(run_and_collect(app))
    iso.append(app.account("iso"))
    # Run 2: the hedge pair's SHORT leg, and the first ETHUSDT mark of the isolated walk.
    app.send(
        [fill("hp", "t-hp-short", side="SELL", quantity="0.1", price="62000", positionSide="SHORT")]
    )
    app.send([mark("ETHUSDT", "2261", 2)], queue="MARKS_QUEUE")
    runs.append(run_and_collect(app))
    iso.append(app.account("iso"))
    # Run 3: ETHUSDT 2259, and a BTCUSDT mark at 60000 (every BTCUSDT position here was
    # filled at 60000 except the SHORT leg, so nothing but that leg's mark moves).
    app.send([mark("ETHUSDT", "2259", 3), mark("BTCUSDT", "60000", 3)], queue="MARKS_QUEUE")
    runs.append(run_and_collect(app))
    iso.append(app.account("iso"))
    # Run 4: ETHUSDT back to 2500.
    app.send([mark("ETHUSDT", "2500", 4)], queue="MARKS_QUEUE")
    runs.append(run_and_collect(app))
    iso.append(app.account("iso"))
    return RiskRun(app, runs, iso)


def test_deposits_and_first_mark_raise_nothing(risk: RiskRun) -> None:
    assert risk.runs[0] == []


def test_insufficient_margin(risk: RiskRun) -> None:
    # Cross long 0.1 BTCUSDT @ 60000, leverage 10, on a 500 USDT wallet (no mark: the fill
    # price is the mark). Notional 6000; IM 6000 / 10 = 600; MM 6000 × 0.004 − 0 = 24
    # (bracket 1); cross margin balance 500 + uPnL 0 = 500 < IM 600 → INSUFFICIENT_MARGIN.
    # Margin ratio 24 / 500 = 0.048 → NORMAL; liquidation price
    # (500 − 0.1·60000) / (0.1·0.004 − 0.1) = −5500 / −0.0996 = 55220.88… < 60000, not reached.
    (alert,) = risk.of(1, "im")
    assert alert["type"] == "INSUFFICIENT_MARGIN"
    assert alert["severity"] == "CRITICAL"
    assert alert["scope"] == "USDT"
    assert alert["sourceId"] == "t-im"
    assert alert["correlationId"] == "c-im"
    assert alert["alertId"] == alert_id("t-im", "INSUFFICIENT_MARGIN", "im", "USDT")
    metrics = alert["metrics"]
    assert metrics["initialMargin"] == "600"
    assert metrics["marginBalance"] == "500"
    assert metrics["maintMargin"] == "24"
    assert metrics["marginRatio"] == "0.048"
    account = risk.app.account("im")
    assert account is not None
    wallet = account["wallets"]["USDT"]
    assert wallet["availableBalance"] == "-100"  # 500 − 600, may be negative
    assert wallet["riskState"] == "NORMAL"
    assert account["positions"][0]["liquidationPrice"] == "55220.883534136546184739"
    record = risk.app.record("im", "t-im")
    assert record is not None and [a["alertId"] for a in record["alerts"]] == [alert["alertId"]]


def test_leverage_bracket_breach(risk: RiskRun) -> None:
    # BTCUSDT leverage 100: the highest bracket with maxLeverage ≥ 100 is bracket 2, cap
    # 600000. Long 10 @ 60000 → notional 600000 ≥ 600000 → breach.
    # IM 600000 / 100 = 6000; bracket of 600000 is 3 ([600000, 3000000)): MM 600000 ×
    # 0.0065 − 950 = 2950. Liquidation price (cross long, wallet 100000): bracket 3 gives
    # (100000 + 950 − 600000) / (10·0.0065 − 10) = 50231.50…, whose notional 502315 is in
    # bracket 2; bracket 2 gives (100000 + 50 − 600000) / (10·0.005 − 10) = 499950 / 9.95
    # = 50246.231155778894472361809…, notional 502462.31 still bracket 2 → that one.
    (alert,) = risk.of(1, "bb")
    assert alert["type"] == "LEVERAGE_BRACKET_BREACH"
    assert alert["severity"] == "WARNING"
    assert alert["scope"] == "BTCUSDT:BOTH"
    assert alert["symbol"] == "BTCUSDT"
    assert alert["alertId"] == alert_id("t-bb", "LEVERAGE_BRACKET_BREACH", "bb", "BTCUSDT:BOTH")
    metrics = alert["metrics"]
    assert metrics["notional"] == "600000"
    assert metrics["leverage"] == "100"
    assert metrics["markPrice"] == "60000"
    assert metrics["initialMargin"] == "6000"
    assert metrics["maintMargin"] == "2950"
    assert metrics["liquidationPrice"] == "50246.231155778894472362"
    (position,) = risk.app.account("bb")["positions"]  # type: ignore[index]
    assert position["maintMargin"] == "2950"
    assert position["liquidationPrice"] == "50246.231155778894472362"
    # 9.999 × 60000 = 599940 < 600000: no breach (and nothing else).
    assert risk.of(1, "bb-below") == []


def test_price_deviation(risk: RiskRun) -> None:
    # Stored ETHUSDT mark 2500, band 5 %: |2700 − 2500| / 2500 = 0.08 > 0.05 → alert.
    (alert,) = risk.of(1, "dev")
    assert alert["type"] == "PRICE_DEVIATION"
    assert alert["severity"] == "INFO"
    assert alert["scope"] == "ETHUSDT:BOTH"
    assert alert["alertId"] == alert_id("t-dev", "PRICE_DEVIATION", "dev", "ETHUSDT:BOTH")
    assert alert["metrics"]["markPrice"] == "2500"
    # |2625 − 2500| / 2500 = 0.05 exactly: not MORE than the band, no alert.
    assert risk.of(1, "dev-edge") == []


def test_isolated_fill_raises_nothing(risk: RiskRun) -> None:
    # Isolated long 4 ETHUSDT @ 2500, leverage 10 (mark 2500): isolated margin 10000 / 10
    # = 1000; cross wallet 2000 − 1000 = 1000 with no cross position → no alert.
    assert risk.of(1, "iso") == []
    (position,) = risk.app.account("iso")["positions"]  # type: ignore[index]
    assert position["isolatedMargin"] == "1000"
    assert position["riskState"] == "NORMAL"


# Isolated long 4 ETHUSDT @ 2500, isolated margin 1000 (bracket 1 throughout: notional <
# 50000, MMR 0.004, maintAmount 0). At mark P: notional 4P, MM 0.016P, margin balance
# 1000 + 4(P − 2500) = 4P − 9000, ratio 0.016P / (4P − 9000). Liquidation price
# (1000 + 0 − 4·2500) / (4·0.004 − 4) = 9000 / 3.984 = 2259.0361445783132530120481…;
# MARGIN_CALL (ratio ≥ 0.80) from P ≤ 7200 / 3.184 = 2261.3065….
ISO_SCOPE = "ETHUSDT:BOTH"
ISO_LIQ = "2259.036144578313253012"
ISO_WALK = [
    # run, minute, type, severity, riskState, metrics
    (
        2,
        2,
        "MARGIN_CALL",
        "WARNING",
        "MARGIN_CALL",
        {
            # 4 × 2261 = 9044; IM 904.4; MM 36.176; MB 9044 − 9000 = 44;
            # ratio 36.176 / 44 = 0.8221818181… ≥ 0.8, and 2261 > 2259.036… (not reached)
            "markPrice": "2261",
            "notional": "9044",
            "leverage": "10",
            "initialMargin": "904.4",
            "maintMargin": "36.176",
            "marginBalance": "44",
            "marginRatio": "0.822181818181818182",
            "liquidationPrice": ISO_LIQ,
        },
    ),
    (
        3,
        3,
        "LIQUIDATION_RISK",
        "CRITICAL",
        "LIQUIDATION",
        {
            # 4 × 2259 = 9036; IM 903.6; MM 36.144; MB 36; ratio 36.144 / 36 = 1.004 ≥ 1 and
            # 2259 ≤ 2259.036… (at or beyond the liquidation price)
            "markPrice": "2259",
            "notional": "9036",
            "leverage": "10",
            "initialMargin": "903.6",
            "maintMargin": "36.144",
            "marginBalance": "36",
            "marginRatio": "1.004",
            "liquidationPrice": ISO_LIQ,
        },
    ),
    (
        4,
        4,
        "RISK_RECOVERED",
        "INFO",
        "NORMAL",
        {
            # back at 2500: notional 10000; IM 1000; MM 40; MB 1000; ratio 0.04
            "markPrice": "2500",
            "notional": "10000",
            "leverage": "10",
            "initialMargin": "1000",
            "maintMargin": "40",
            "marginBalance": "1000",
            "marginRatio": "0.04",
            "liquidationPrice": ISO_LIQ,
        },
    ),
]


@pytest.mark.parametrize(
    ("run", "minute", "kind", "severity", "state", "metrics"),
    ISO_WALK,
    ids=[w[2] for w in ISO_WALK],
)
def test_isolated_position_walks_through_risk_states(
    risk: RiskRun,
    run: int,
    minute: int,
    kind: str,
    severity: str,
    state: str,
    metrics: dict[str, str],
) -> None:
    source = mark_id("ETHUSDT", minute)
    (alert,) = risk.of(run, "iso")
    assert alert["type"] == kind
    assert alert["severity"] == severity
    assert alert["scope"] == ISO_SCOPE
    assert alert["symbol"] == "ETHUSDT"
    assert alert["sourceId"] == source
    assert alert["alertId"] == alert_id(source, kind, "iso", ISO_SCOPE)
    for key, expected in metrics.items():
        assert alert["metrics"].get(key) == expected, key
    # The state is stored on the isolated position and is the account's worst; the USDT
    # cross wallet (no cross position) stays NORMAL.
    doc = risk.iso[run]
    (position,) = doc["positions"]
    assert position["riskState"] == state
    assert position["markPrice"] == metrics["markPrice"]
    assert position["marginMode"] == "ISOLATED"
    assert doc["riskState"] == state
    assert doc["wallets"]["USDT"]["riskState"] == "NORMAL"
    # The mark runs raise nothing for any other account (dev, dev-edge: cross ETHUSDT on
    # 100000 USDT; the BTCUSDT holders at 60000).
    assert {a["accountId"] for a in risk.runs[run]} == {"iso"}


def test_isolated_walk_leaves_the_account_normal(risk: RiskRun) -> None:
    account = risk.app.account("iso")
    assert account is not None
    (position,) = account["positions"]
    assert position["riskState"] == "NORMAL"
    assert position["liquidationPrice"] == ISO_LIQ
    assert account["wallets"]["USDT"]["riskState"] == "NORMAL"
    assert account["riskState"] == "NORMAL"


def test_hedge_pair_shares_one_liquidation_price(risk: RiskRun) -> None:
    # CROSS hedge pair on BTCUSDT, wallet 10000, mark 60000: LONG +0.3 @ 60000, SHORT −0.1
    # @ 62000 (notionals 18000 and 6000, both bracket 1: MMR 0.004, maintAmount 0).
    # One formula for both legs:
    #   (WB + Σcum − Σ q·entry) / (Σ |q|·MMR − Σ q)
    #   = (10000 − (0.3·60000 − 0.1·62000)) / (0.4·0.004 − 0.2) = −1800 / −0.1984
    #   = 9072.5806451612903225806451… (notionals at it 2721.77 / 907.26: bracket 1 still)
    # Check: equity 10000 + 0.3(P − 60000) − 0.1(P − 62000) = 0.2P − 1800 = MM 0.0016P.
    assert risk.of(1, "hp") == []
    assert risk.of(2, "hp") == []
    account = risk.app.account("hp")
    assert account is not None
    legs = {p["positionSide"]: p for p in account["positions"]}
    assert set(legs) == {"LONG", "SHORT"}
    assert (legs["LONG"]["quantity"], legs["SHORT"]["quantity"]) == ("0.3", "-0.1")
    assert legs["LONG"]["markPrice"] == legs["SHORT"]["markPrice"] == "60000"
    assert legs["SHORT"]["unrealizedPnl"] == "200"  # −0.1 × (60000 − 62000)
    assert legs["LONG"]["liquidationPrice"] == "9072.580645161290322581"
    assert legs["SHORT"]["liquidationPrice"] == "9072.580645161290322581"
    # IM 1800 + 600 = 2400; cross margin balance 10000 + 200 = 10200; available 7800;
    # MM 72 + 24 = 96; ratio 96 / 10200 = 0.0094117647058823529411…
    wallet = account["wallets"]["USDT"]
    assert wallet["availableBalance"] == "7800"
    assert wallet["marginRatio"] == "0.009411764705882353"


# --- LARGE_TRADE and POSITION_LIMIT with small thresholds ------------------------------


@pytest.fixture(scope="module")
def thresholds(local_services: LocalServices, tmp_path_factory: pytest.TempPathFactory) -> RiskRun:
    app = new_app(
        local_services,
        tmp_path_factory.mktemp("thresholds"),
        RISK_LARGE_TRADE_NOTIONAL="USDT:1000",
        RISK_POSITION_LIMIT_NOTIONAL="USDT:5000",
    )
    runs: list[list[dict[str, Any]]] = []
    app.send([deposit(acc, "10000", f"dep-{acc}") for acc in ("lt", "lt-below", "pl")])
    runs.append(run_and_collect(app))
    app.send(
        [
            # 0.02 × 50000 = 1000 ≥ 1000 → LARGE_TRADE (position 1000 ≤ 5000)
            fill("lt", "t-lt", quantity="0.02", price="50000", correlationId="c-lt"),
            # 0.019 × 50000 = 950 < 1000 → nothing
            fill("lt-below", "t-lt-below", quantity="0.019", price="50000"),
            # 0.1 × 50000 = 5000: LARGE_TRADE, and position 5000 is not ABOVE 5000
            fill("pl", "t-pl-1", quantity="0.1", price="50000"),
        ]
    )
    runs.append(run_and_collect(app))
    # 0.002 × 50000 = 100 (< 1000, ≥ minNotional 100); position 0.102 × 50000 = 5100 > 5000
    app.send([fill("pl", "t-pl-2", quantity="0.002", price="50000")])
    runs.append(run_and_collect(app))
    return RiskRun(app, runs)


def test_large_trade(thresholds: RiskRun) -> None:
    assert thresholds.runs[0] == []
    (alert,) = thresholds.of(1, "lt")
    assert alert["type"] == "LARGE_TRADE"
    assert alert["severity"] == "INFO"
    assert alert["scope"] == "BTCUSDT:BOTH"
    assert alert["sourceId"] == "t-lt"
    assert alert["correlationId"] == "c-lt"
    assert alert["alertId"] == alert_id("t-lt", "LARGE_TRADE", "lt", "BTCUSDT:BOTH")
    assert alert["metrics"]["notional"] == "1000"
    assert alert["metrics"]["leverage"] == "10"
    assert thresholds.of(1, "lt-below") == []
    # The first fill of "pl" (5000) is a large trade, but its position is not above the limit.
    assert [a["type"] for a in thresholds.of(1, "pl")] == ["LARGE_TRADE"]


def test_position_limit(thresholds: RiskRun) -> None:
    # Long 0.102 @ 50000 (no mark: the fill price), leverage 10: notional 5100 > 5000;
    # IM 510; MM 5100 × 0.004 = 20.4; liquidation (10000 − 5100) / (0.102·0.004 − 0.102) < 0
    # → none.
    (alert,) = thresholds.runs[2]
    assert alert["type"] == "POSITION_LIMIT"
    assert alert["severity"] == "WARNING"
    assert alert["scope"] == "BTCUSDT:BOTH"
    assert alert["accountId"] == "pl"
    assert alert["sourceId"] == "t-pl-2"
    assert alert["alertId"] == alert_id("t-pl-2", "POSITION_LIMIT", "pl", "BTCUSDT:BOTH")
    metrics = alert["metrics"]
    assert metrics["notional"] == "5100"
    assert metrics["markPrice"] == "50000"
    assert metrics["leverage"] == "10"
    assert metrics["initialMargin"] == "510"
    assert metrics["maintMargin"] == "20.4"
    assert metrics.get("liquidationPrice") is None
