"""The pipeline end to end on the real local services: Azurite → devhost → Cosmos → alerts.

``deposit`` and ``fill`` are :mod:`bench.workload`'s (the bench sends the same messages);
the other integration tests import them from here too."""

from __future__ import annotations

import base64
import hashlib
import json
from decimal import Decimal

import pytest

from bench.workload import deposit, fill
from tests.support import AppUnderTest, free_port

pytestmark = pytest.mark.services


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def ran_ok(app: AppUnderTest) -> str:
    result = app.run()
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_fill_through_devhost_becomes_position_record_and_no_alert(app: AppUnderTest) -> None:
    app.send([deposit("acc-1", "10000", "dep-1")])
    ran_ok(app)
    app.send([fill("acc-1", "t-1", correlationId="order-1")])
    ran_ok(app)

    account = app.account("acc-1")
    assert account is not None
    assert account["type"] == "account" and account["schemaVersion"] == 2
    (position,) = account["positions"]
    assert position["symbol"] == "BTCUSDT"
    assert position["positionSide"] == "BOTH"
    assert position["quantity"] == "0.1"
    assert position["entryPrice"] == "60000"
    assert position["notional"] == "6000"
    assert position["initialMargin"] == "600"
    assert position["maintMargin"] == "24"  # 6000 × 0.004 − 0
    # Cross long: (WB − q·entry) / (|q|·MMR − q) = (10000 − 6000) / (0.0004 − 0.1) < 0 → none
    assert position["liquidationPrice"] is None
    wallet = account["wallets"]["USDT"]
    assert wallet["walletBalance"] == "10000"
    assert wallet["availableBalance"] == "9400"
    assert Decimal(wallet["marginRatio"]) == Decimal("24") / Decimal("10000")
    assert account["riskState"] == "NORMAL"
    assert set(account["recentEventIds"]) == {"dep-1", "t-1"}

    record = app.record("acc-1", "t-1")
    assert record is not None and record["type"] == "trade" and record["schemaVersion"] == 1
    assert record["alerts"] == []
    assert app.record("acc-1", "dep-1")["type"] == "transfer"  # type: ignore[index]
    assert app.alerts() == []


def test_fill_without_funds_raises_insufficient_margin(app: AppUnderTest) -> None:
    app.send([fill("acc-2", "t-2", correlationId="c-9")])
    ran_ok(app)
    alerts = {a["type"]: a for a in app.alerts()}
    # No wallet at all: initial margin 600 > cross margin balance 0, and a cross margin
    # balance ≤ 0 with an open cross position is LIQUIDATION (contract: risk states).
    assert set(alerts) == {"INSUFFICIENT_MARGIN", "LIQUIDATION_RISK"}
    assert alerts["LIQUIDATION_RISK"]["scope"] == "USDT"
    assert alerts["LIQUIDATION_RISK"]["metrics"].get("marginRatio") is None
    alert = alerts["INSUFFICIENT_MARGIN"]
    assert alert["severity"] == "CRITICAL"
    assert alert["scope"] == "USDT"
    assert alert["accountId"] == "acc-2"
    assert alert["sourceId"] == "t-2"
    assert alert["correlationId"] == "c-9"
    expected_id = hashlib.sha256(
        json.dumps(["t-2", "INSUFFICIENT_MARGIN", "acc-2", "USDT"], separators=(",", ":")).encode()
    ).hexdigest()
    assert alert["alertId"] == expected_id
    assert alert["metrics"]["initialMargin"] == "600"
    record = app.record("acc-2", "t-2")
    assert record is not None
    assert {a["alertId"] for a in record["alerts"]} == {a["alertId"] for a in alerts.values()}


def test_malformed_and_schema_invalid_bodies_are_rejected(app: AppUnderTest) -> None:
    garbage = "this is neither json nor base64!"
    invalid = fill("acc-3", "t-3", side="HOLD")
    app.send([garbage], encode=False)
    app.send([invalid])
    app.send([json.dumps(fill("acc-3", "t-4", quantity="-1"))], encode=False)  # raw JSON body
    ran_ok(app)

    alerts = {a["sourceId"]: a for a in app.alerts()}
    assert set(alerts) == {digest(garbage), "t-3", "t-4"}
    for alert in alerts.values():
        assert alert["type"] == "TRADE_REJECTED"
        assert alert["severity"] == "WARNING"
        assert alert["scope"] is None
    assert alerts[digest(garbage)]["accountId"] is None
    assert alerts[digest(garbage)]["reasons"][0]["code"] == "MALFORMED"
    assert alerts["t-3"]["reasons"][0]["code"] == "SCHEMA_INVALID"
    assert alerts["t-3"]["accountId"] == "acc-3"

    malformed = app.record("_unattributed", f"rejection:{digest(garbage)}")
    assert malformed is not None and malformed["reasons"][0]["code"] == "MALFORMED"
    schema = app.record("acc-3", "rejection:t-3")
    assert schema is not None and schema["type"] == "rejection"
    assert schema["alerts"][0]["alertId"] == alerts["t-3"]["alertId"]
    assert app.account("acc-3") is None  # a stateless rejection changes no account


def test_same_fill_twice_is_applied_once(app: AppUnderTest) -> None:
    app.send([deposit("acc-4", "100", "dep-4")])
    ran_ok(app)
    message = fill("acc-4", "t-5")  # under-funded: raises one INSUFFICIENT_MARGIN
    app.send([message, message])
    ran_ok(app)
    app.send([message])
    ran_ok(app)
    account = app.account("acc-4")
    assert account is not None
    assert account["positions"][0]["quantity"] == "0.1"
    assert account["recentEventIds"].count("t-5") == 1
    alerts = app.alerts()
    assert [a["type"] for a in alerts] == ["INSUFFICIENT_MARGIN"]


def test_unreadable_account_poisons_then_deadletters(app: AppUnderTest) -> None:
    # A stored document the app cannot read is never overwritten: the event fails
    # maxDequeueCount times, the host moves it to trades-poison, and the poison function
    # (which cannot tell whether it was applied) dead-letters it with one alert.
    app.send([deposit("acc-5", "100", "dep-5")])
    ran_ok(app)
    planted = app.account("acc-5")
    assert planted is not None
    planted = {k: v for k, v in planted.items() if not k.startswith("_")}
    planted["schemaVersion"] = 99
    app.container("ledger").upsert_item(planted)

    message = fill("acc-5", "t-6")
    text = base64.b64encode(json.dumps(message).encode()).decode()
    app.send([text], encode=False)
    out = ran_ok(app)
    assert out.count("on_trade message=") >= 5  # five failed tries before the poison copy
    assert app.peek_count("TRADES_QUEUE") == 0
    assert app.peek_count(f"{app.settings['TRADES_QUEUE']}-poison") == 0

    letter = app.read("deadletters", digest(text), app.settings["TRADES_QUEUE"])
    assert letter is not None
    assert letter["type"] == "deadletter" and letter["schemaVersion"] == 1
    assert letter["count"] == 1
    assert letter["sourceId"] == "t-6"
    assert letter["accountId"] == "acc-5"
    assert letter["bodyDigest"] == digest(text)
    assert letter["rawBody"] == text
    assert "UnreadableDocument" in letter["lastError"]
    (alert,) = app.alerts()
    assert alert["type"] == "POISON_MESSAGE"
    assert alert["severity"] == "CRITICAL"
    assert alert["sourceId"] == "t-6"
    assert alert["accountId"] == "acc-5"
    assert app.account("acc-5")["schemaVersion"] == 99  # type: ignore[index]  # untouched

    # The same body poisoned again increments the count and sends no second alert.
    app.send([text], queue=f"{app.settings['TRADES_QUEUE']}-poison", encode=False)
    ran_ok(app)
    again = app.read("deadletters", digest(text), app.settings["TRADES_QUEUE"])
    assert again is not None and again["count"] == 2
    assert app.alerts() == []


def test_cosmos_unreachable_leaves_the_body_on_the_poison_queue(app: AppUnderTest) -> None:
    # With Cosmos down, the trades message fails maxDequeueCount times and moves to
    # trades-poison; the poison function fails there too and, as the real host does, the
    # message is left on the poison queue; --drain exits non-zero naming it.
    down = AppUnderTest(
        app.services,
        app.workdir,
        overrides={
            **{
                k: app.settings[k]
                for k in ("TRADES_QUEUE", "MARKS_QUEUE", "ALERTS_QUEUE", "COSMOS_DATABASE")
            },
            "COSMOS_ENDPOINT": f"https://127.0.0.1:{free_port()}/",
        },
    )
    app.send([fill("acc-6", "t-7")])
    result = down.run(timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{app.settings['TRADES_QUEUE']}-poison" in output
    assert app.peek_count("TRADES_QUEUE") == 0
    assert app.peek_count(f"{app.settings['TRADES_QUEUE']}-poison") == 1
