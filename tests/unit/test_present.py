"""devhost.present: alerts as one readable line, positions and wallets as rounded tables."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from devhost import present

CALL = Decimal("0.80")


def margin_call(**changes: Any) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "schemaVersion": 1,
        "alertId": "a" * 64,
        "type": "MARGIN_CALL",
        "severity": "WARNING",
        "accountId": "alice",
        "symbol": None,
        "scope": "USDT",
        "sourceId": "BTCUSDT@2024-10-01T00:05:00.000Z",
        "correlationId": None,
        "reasons": [{"code": "MARGIN_CALL", "message": "cross USDT wallet: NORMAL → MARGIN_CALL"}],
        "metrics": {
            "marginRatio": "0.861142857142857143",
            "marginBalance": "140",
            "maintMargin": "120.56",
            "initialMargin": "1507",
        },
        "createdAt": "2026-12-03T14:00:00.000Z",
    }
    alert.update(changes)
    return alert


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("54282.730923694779116466", "54282.73"),
        ("60240.963855421686746988", "60240.96"),
        ("64000", "64000.00"),
        ("79680", "79680.00"),
        ("0.50744047619047619", "0.50744"),
        ("0.000012345678", "0.0000123457"),
        ("-75", "-75.00"),
        ("0", "0.00"),
        ("2500.005", "2500.00"),  # six significant digits, half-even
        (None, "-"),
        ("not a number", "-"),
    ],
)
def test_prices_and_amounts_keep_six_significant_digits_and_two_decimals(
    value: str | None, shown: str
) -> None:
    assert present.price(value) == shown
    assert present.amount(value) == shown


def test_ratios_quantities_and_percentages() -> None:
    assert present.ratio("0.861142857142857143") == "0.8611"
    assert present.ratio("1.204") == "1.2040"
    assert present.ratio(None) == "-"
    assert present.quantity("-4") == "4"
    assert present.quantity("0.500") == "0.5"
    assert present.quantity("300") == "300"
    assert present.percent(Decimal("0.0438")) == "4.38 %"
    assert present.percent(Decimal("-0.00068")) == "-0.07 %"
    assert present.percent(None) == "-"


def test_a_ratio_is_shown_against_the_threshold_that_judges_it() -> None:
    assert present.ratio_against("0.084", CALL) == "0.0840 < 0.80"
    assert present.ratio_against("0.8611", CALL) == "0.8611 ≥ 0.80"
    assert present.ratio_against("0.8", CALL) == "0.8000 ≥ 0.80"
    assert present.ratio_against("1.204", CALL) == "1.2040 ≥ 1"
    assert present.ratio_against("0.5", Decimal("0.5")) == "0.5000 ≥ 0.5"
    assert present.ratio_against(None, CALL, "LIQUIDATION") == "none (margin balance ≤ 0)"
    assert present.call_ratio_setting({"RISK_MARGIN_CALL_RATIO": "0.9"}) == Decimal("0.9")
    assert present.call_ratio_setting({}) == Decimal("0.80")
    assert present.call_ratio_setting({"RISK_MARGIN_CALL_RATIO": "x"}) == Decimal("0.80")


def test_a_risk_alert_is_one_line_with_its_figures_rounded_and_no_escapes() -> None:
    line = present.alert_line(margin_call(), CALL)

    assert "\n" not in line
    assert "\\u" not in line and "{" not in line
    assert line.split()[:5] == [
        "WARNING",
        "MARGIN_CALL",
        "alice",
        "USDT",
        "BTCUSDT@2024-10-01T00:05:00.000Z",
    ]
    assert "cross USDT wallet: NORMAL → MARGIN_CALL" in line
    assert "margin ratio 0.8611 ≥ 0.80" in line
    assert "margin balance 140.00" in line and "maint. margin 120.56" in line
    assert "0.861142857142857143" not in line


def test_an_isolated_alert_shows_mark_and_liquidation_price() -> None:
    alert = margin_call(
        scope="ETHUSDT:BOTH",
        accountId="bob",
        reasons=[{"code": "MARGIN_CALL", "message": "isolated ETHUSDT:BOTH: NORMAL → MARGIN_CALL"}],
        metrics={
            "markPrice": "2737.5",
            "liquidationPrice": "2739.043824701195219124",
            "marginRatio": "0.876",
            "marginBalance": "50",
            "maintMargin": "43.8",
        },
    )
    line = present.alert_line(alert, CALL)
    assert "mark 2737.50 · liq. price 2739.04 · margin ratio 0.8760 ≥ 0.80" in line


def test_a_liquidation_alert_without_a_ratio_says_why() -> None:
    alert = margin_call(
        type="LIQUIDATION_RISK", severity="CRITICAL", metrics={"marginBalance": "-3"}
    )
    assert "margin ratio none (margin balance ≤ 0) · margin balance -3.00" in present.alert_line(
        alert
    )


def test_a_rejection_keeps_the_input_it_echoes_exactly() -> None:
    alert = margin_call(
        type="TRADE_REJECTED",
        scope=None,
        sourceId="bob-2",
        metrics={},
        reasons=[
            {"code": "PRICE_TICK", "message": "price 2500.0000001 is not a multiple of 0.01"},
            {"code": "QTY_STEP", "message": "quantity 1.00000005 is not a multiple of 0.001"},
        ],
    )
    line = present.alert_line(alert)
    assert line.split()[:5] == ["WARNING", "TRADE_REJECTED", "alice", "-", "bob-2"]
    assert "PRICE_TICK: price 2500.0000001 is not a multiple of 0.01" in line
    assert "; " not in line and " · QTY_STEP: quantity 1.00000005" in line


def test_other_alerts_round_long_decimals_in_their_messages() -> None:
    alert = margin_call(
        type="INSUFFICIENT_MARGIN",
        severity="CRITICAL",
        reasons=[
            {
                "code": "INSUFFICIENT_MARGIN",
                "message": "cross initial margin 1280.123456789 > cross margin balance 1000 USDT",
            }
        ],
    )
    line = present.alert_line(alert)
    assert "cross initial margin 1280.12 > cross margin balance 1000 USDT" in line
    assert "margin ratio" not in line  # only risk-state alerts list the ratio


def test_non_ascii_text_is_printed_as_is_and_control_characters_escaped() -> None:
    alert = margin_call(
        type="TRADE_REJECTED",
        accountId="ünï",
        reasons=[{"code": "SCHEMA_INVALID", "message": "side must be BUY → or SELL\n\x1b[31mred"}],
    )
    line = present.alert_line(alert)
    assert "ünï" in line and "→" in line
    assert "\n" not in line and "\x1b" not in line
    assert "\\x0a\\x1b[31mred" in line
    assert "\\u" not in line


def test_a_long_message_is_cut_and_a_body_that_is_no_alert_is_shown_as_text() -> None:
    alert = margin_call(type="POISON_MESSAGE", reasons=[{"code": "X", "message": "y" * 500}])
    assert present.alert_line(alert).endswith("y…")
    assert len(present.alert_line(alert)) < 320
    assert present.alert_line({"raw": True}) == "(not an alert) {'raw': True}"
    assert present.alert_line("plain text") == "(not an alert) plain text"


def account(account_id: str, wallets: dict[str, Any], *positions: dict[str, Any]) -> dict[str, Any]:
    return {"accountId": account_id, "wallets": wallets, "positions": list(positions)}


def position(symbol: str, qty: str, **changes: Any) -> dict[str, Any]:
    out = {
        "symbol": symbol,
        "positionSide": "BOTH",
        "marginMode": "CROSS",
        "quantity": qty,
        "entryPrice": "64000",
        "markPrice": "60280",
        "lastFillPrice": "64000",
        "liquidationPrice": "60240.963855421686746988",
        "isolatedMargin": "0",
        "maintMargin": "120.56",
        "unrealizedPnl": "-1860",
        "riskState": "MARGIN_CALL",
    }
    out.update(changes)
    return out


WALLET = {
    "walletBalance": "2000",
    "marginBalance": "140",
    "availableBalance": "-1367",
    "marginRatio": "0.861142857142857143",
    "riskState": "MARGIN_CALL",
}


def test_the_positions_table_rounds_and_judges_cross_by_the_wallet_isolated_by_itself() -> None:
    docs = [
        account(
            "bob",
            {"USDT": {**WALLET, "marginRatio": "0", "riskState": "NORMAL"}},
            position(
                "ETHUSDT",
                "-4",
                marginMode="ISOLATED",
                entryPrice="2500",
                markPrice="2737.5",
                liquidationPrice="2739.043824701195219124",
                isolatedMargin="1000",
                unrealizedPnl="-950",
                maintMargin="43.8",
            ),
        ),
        account("alice", {"USDT": WALLET}, position("BTCUSDT", "0.5")),
        account("carol", {"BTC": WALLET}, position("BTCUSD_PERP", "0", riskState="NORMAL")),
    ]

    lines = present.positions_table(docs, CALL, {"BTCUSDT": "USDT", "ETHUSDT": "USDT"})

    assert lines[0].split() == [
        "account",
        "symbol",
        "side",
        "mode",
        "qty",
        "entry",
        "mark",
        "liq.",
        "price",
        "to",
        "liq.",
        "margin",
        "ratio",
        "state",
    ]
    assert set(lines[1]) <= {"-", " "}
    assert len(lines) == 4  # carol's closed position is not shown
    alice, bob = lines[2].split(), lines[3].split()
    assert alice[:4] == ["alice", "BTCUSDT", "LONG", "cross"]
    assert alice[4:8] == ["0.5", "64000.00", "60280.00", "60240.96"]
    assert alice[8:] == ["0.06", "%", "0.8611", "≥", "0.80", "MARGIN_CALL"]
    assert bob[:8] == ["bob", "ETHUSDT", "SHORT", "isolated", "4", "2500.00", "2737.50", "2739.04"]
    assert bob[8:] == ["0.06", "%", "0.8760", "≥", "0.80", "MARGIN_CALL"]
    assert lines[0].index("state") == lines[2].index("MARGIN_CALL") == lines[3].index("MARGIN")
    assert lines[0].index("entry") + len("entry") == lines[2].index("64000.00") + 8  # right


def test_distance_to_liquidation_is_signed_by_side_and_negative_beyond() -> None:
    assert present.distance_to_liquidation("63000", "60240.96", Decimal("0.5")) == (
        Decimal("63000") - Decimal("60240.96")
    ) / Decimal("63000")
    beyond = present.distance_to_liquidation("60200", "60240.96", Decimal(1))
    short = present.distance_to_liquidation("2500", "2739.04", Decimal(-4))
    assert beyond is not None and beyond < 0
    assert short is not None and short > 0
    assert present.distance_to_liquidation("2500", None, Decimal(-4)) is None


def test_a_position_without_a_mark_is_valued_at_its_fill_price_and_says_so() -> None:
    doc = account("alice", {"USDT": WALLET}, position("BTCUSDT", "0.5", markPrice=None))
    lines = present.positions_table([doc], CALL)
    assert "64000.00*" in lines[2]
    assert lines[-1].startswith("* no mark yet")


def test_the_wallets_table() -> None:
    docs = [
        account("alice", {"USDT": WALLET}),
        account("z", {"BTC": {**WALLET, "marginRatio": None, "riskState": "LIQUIDATION"}}),
    ]
    lines = present.wallets_table(docs, CALL)
    assert lines[2].split() == [
        "alice",
        "USDT",
        "2000.00",
        "140.00",
        "-1367.00",
        "0.8611",
        "≥",
        "0.80",
        "MARGIN_CALL",
    ]
    assert "none (margin balance ≤ 0)" in lines[3]
    assert json.dumps(lines, ensure_ascii=False).count("\\u") == 0


def order_decision(**changes: Any) -> dict[str, Any]:
    decision: dict[str, Any] = {
        "schemaVersion": 1,
        "type": "ORDER_DECISION",
        "decisionId": "d" * 64,
        "orderId": "O-1",
        "accountId": "alice",
        "symbol": "BTCUSDT",
        "decision": "APPROVED",
        "reasons": [],
        "metrics": {
            "markPrice": "63000",
            "price": "63031.5",
            "openingQuantity": "0.010",
            "cost": "63.0630000000001",
            "availableForOrders": "1000",
            "availableForOrdersAfter": "936.9369999999999",
            "marginRatioAfter": "0.1234567",
        },
        "correlationId": None,
        "decidedAt": "2026-12-03T14:00:00.000Z",
    }
    decision.update(changes)
    return decision


def test_an_approved_decision_is_one_line_with_its_figures_rounded() -> None:
    line = present.decision_line(order_decision())
    assert line.split()[:4] == ["APPROVED", "alice", "O-1", "BTCUSDT"]
    assert line.endswith(
        "price 63031.50 · opening qty 0.01 · cost 63.063 · available 1000.00 · "
        "after 936.937 · margin ratio after 0.1235"
    )


def test_a_rejected_decision_shows_every_reason_and_what_it_could_compute() -> None:
    line = present.decision_line(
        order_decision(
            decision="REJECTED",
            reasons=[
                {"code": "INSUFFICIENT_MARGIN", "message": "cost 63.0630000000001 > 50"},
                {"code": "RATE_LIMITED", "message": "51 orders\nwithin 1 s"},
            ],
            metrics={"price": "63031.5"},
        )
    )
    assert line.split()[:2] == ["REJECTED", "alice"]
    assert "INSUFFICIENT_MARGIN: cost 63.063 > 50 · RATE_LIMITED: 51 orders\\x0awithin 1 s" in line
    assert line.endswith("· price 63031.50")
    assert "\n" not in line


def test_a_body_that_is_no_decision_is_shown_as_text() -> None:
    assert present.decision_line({"raw": True}) == "(not a decision) {'raw': True}"
    assert present.decision_line(margin_call()).startswith("(not a decision) ")
