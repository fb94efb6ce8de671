"""Mark prices through devhost on the real services: re-valuation, risk-state alerts,
replays, stale marks, the holder index and its cost."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_pipeline import deposit, fill, ran_ok
from tests.support import AppUnderTest

pytestmark = pytest.mark.services


def mark(symbol: str, price: str, second: int) -> dict[str, Any]:
    return {
        "type": "MARK",
        "schemaVersion": 1,
        "symbol": symbol,
        "markPrice": price,
        "timestamp": f"2024-10-01T00:{second // 60:02d}:{second % 60:02d}Z",
    }


def test_account_walks_through_risk_states_with_three_alerts(app: AppUnderTest) -> None:
    # Cross long 0.1 BTCUSDT at 60000 on a 1000 USDT wallet: margin ratio
    # 0.0004·P / (0.1·P − 5000); MARGIN_CALL from P ≈ 50251.26, liquidation at
    # (1000 − 6000) / (0.1·0.004 − 0.1) = 50200.80…
    app.send([deposit("walker", "1000", "dep-w")])
    ran_ok(app)
    app.send([fill("walker", "t-w")])
    ran_ok(app)
    assert app.alerts() == []

    steps = [("50250", 10, "MARGIN_CALL"), ("50200", 20, "LIQUIDATION"), ("60000", 30, "NORMAL")]
    for price, second, state in steps:
        app.send([mark("BTCUSDT", price, second)], queue="MARKS_QUEUE")
        ran_ok(app)
        account = app.account("walker")
        assert account is not None
        assert account["wallets"]["USDT"]["riskState"] == state
        assert account["riskState"] == state
        assert account["positions"][0]["markPrice"] == price
    alerts = app.alerts()
    assert [(a["type"], a["sourceId"], a["scope"]) for a in alerts] == [
        ("MARGIN_CALL", "BTCUSDT@2024-10-01T00:00:10.000Z", "USDT"),
        ("LIQUIDATION_RISK", "BTCUSDT@2024-10-01T00:00:20.000Z", "USDT"),
        ("RISK_RECOVERED", "BTCUSDT@2024-10-01T00:00:30.000Z", "USDT"),
    ]
    assert alerts[0]["severity"] == "WARNING"
    assert alerts[1]["severity"] == "CRITICAL"
    assert alerts[2]["severity"] == "INFO"

    # A replay of the same marks, and an older mark, change nothing and send nothing.
    before = app.account("walker")
    app.send([mark("BTCUSDT", p, s) for p, s, _ in steps], queue="MARKS_QUEUE")
    app.send([mark("BTCUSDT", "40000", 5)], queue="MARKS_QUEUE")
    ran_ok(app)
    after = app.account("walker")
    assert after is not None and before is not None
    assert after["positions"] == before["positions"]
    assert after["wallets"] == before["wallets"]
    assert app.alerts() == []
    stored = app.read("marks", "@mark", "BTCUSDT")
    assert stored is not None and stored["markPrice"] == "60000"
    assert stored["timestamp"] == "2024-10-01T00:00:30.000Z"


def test_fill_uses_the_stored_mark_and_flags_deviation(app: AppUnderTest) -> None:
    app.send([mark("ETHUSDT", "2500", 1)], queue="MARKS_QUEUE")
    ran_ok(app)
    app.send([deposit("dev", "100000", "dep-d")])
    ran_ok(app)
    app.send([fill("dev", "t-d", symbol="ETHUSDT", quantity="1", price="2700", leverage=5)])
    ran_ok(app)
    (alert,) = app.alerts()
    assert alert["type"] == "PRICE_DEVIATION"
    assert alert["scope"] == "ETHUSDT:BOTH"
    assert alert["metrics"]["markPrice"] == "2500"
    position = app.account("dev")["positions"][0]  # type: ignore[index]
    assert position["markPrice"] == "2500"
    assert position["markSource"] == "MARK"
    assert position["unrealizedPnl"] == "-200"


def test_fill_without_a_mark_uses_the_fill_price_and_says_so(app: AppUnderTest) -> None:
    app.send([deposit("nomark", "100000", "dep-n")])
    app.send([fill("nomark", "t-n", symbol="ETHUSDT", quantity="1", price="2700", leverage=5)])
    ran_ok(app)
    position = app.account("nomark")["positions"][0]  # type: ignore[index]
    assert position["markPrice"] is None
    assert position["markSource"] == "FILL_PRICE"
    assert position["notional"] == "2700"


def test_stale_mark_alerts_once_per_stale_mark(app: AppUnderTest) -> None:
    from dataclasses import replace as dc_replace
    from datetime import UTC, datetime

    from tests.aio import check_stale_marks, process_mark_message, process_trade_message
    from tests.integration.test_marks_scale import body, in_process

    deps, _store = in_process(app)
    assert process_trade_message(body(fill("stale", "t-s")), deps).kind == "APPLIED"
    # BTCUSDT is held but has no mark at all: stale from the start.
    (first,) = check_stale_marks(deps)
    assert first.source_id == "BTCUSDT@none"

    process_mark_message(body(mark("BTCUSDT", "60000", 0)), deps)
    fresh = dc_replace(deps, clock=lambda: datetime(2024, 10, 1, 0, 4, 0, tzinfo=UTC))
    assert check_stale_marks(fresh) == []  # 4 minutes old: within the default 300 s
    late = dc_replace(deps, clock=lambda: datetime(2024, 10, 1, 0, 5, 1, tzinfo=UTC))
    (stale,) = check_stale_marks(late)
    assert stale.source_id == "BTCUSDT@2024-10-01T00:00:00.000Z"
    assert check_stale_marks(late) == []  # once per stale mark, not once per tick

    alerts = [a for a in app.alerts() if a["type"] == "STALE_MARK"]
    assert [a["sourceId"] for a in alerts] == ["BTCUSDT@none", "BTCUSDT@2024-10-01T00:00:00.000Z"]
    assert {a["scope"] for a in alerts} == {"BTCUSDT"}
    assert {a["severity"] for a in alerts} == {"WARNING"}
    # ETHUSDT has no holder: never stale, whatever its mark.
    assert all(a["symbol"] == "BTCUSDT" for a in alerts)
