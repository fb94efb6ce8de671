"""Alert decisions: fill_alerts, risk_alerts, severities and ids (handlers.core.alerts)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from handlers.core.alerts import (
    SEVERITY,
    AlertSpec,
    Thresholds,
    build_alert,
    fill_alerts,
    risk_alerts,
)
from handlers.core.catalog import Catalog, Instrument
from handlers.core.contracts import Fill
from handlers.core.state import Ledger, RiskState, apply_fill
from handlers.core.valuation import Valuation

from .builders import T0, D, deposit, fill, marked, valued

NO_LIMITS = Thresholds()


def after_fill(
    catalog: Catalog, inst: Instrument, ledger: Ledger, f: Fill, mark: Decimal | None = None
) -> Valuation:
    return valued(apply_fill(ledger, f, inst, (mark, T0) if mark is not None else None), catalog)


def types(specs: list[AlertSpec]) -> list[str]:
    return [s.type for s in specs]


def decide(
    catalog: Catalog,
    inst: Instrument,
    f: Fill,
    *,
    wallet: str = "1000",
    mark: Decimal | None = None,
    thresholds: Thresholds = NO_LIMITS,
    ledger: Ledger | None = None,
) -> list[AlertSpec]:
    base = ledger if ledger is not None else deposit(Ledger(), wallet, inst.settle_asset)
    after = after_fill(catalog, inst, base, f, mark)
    return fill_alerts(f, inst, mark, after, thresholds)


# --- fill_alerts ----------------------------------------------------------------------


def test_a_plain_fill_raises_nothing(catalog: Catalog, btcusdt: Instrument) -> None:
    assert decide(catalog, btcusdt, fill()) == []


def test_insufficient_margin(catalog: Catalog, btcusdt: Instrument) -> None:
    # 0.1 × 60000 / 10 = 600 initial margin > 500 cross margin balance
    specs = decide(catalog, btcusdt, fill(leverage=10), wallet="500")
    assert types(specs) == ["INSUFFICIENT_MARGIN"]
    spec = specs[0]
    assert spec.scope == "USDT"
    assert spec.symbol == "BTCUSDT"
    assert spec.metrics["initialMargin"] == D(600)
    assert spec.metrics["marginBalance"] == D(500)
    assert decide(catalog, btcusdt, fill(leverage=10), wallet="600") == []  # equal is enough


def test_insufficient_margin_is_for_the_fills_settle_asset(
    catalog: Catalog, btcusdt: Instrument, btcusd_perp: Instrument
) -> None:
    ledger = deposit(Ledger(), "1", "BTC")  # no USDT at all
    coin = fill(symbol="BTCUSD_PERP", quantity="100", price="50000", leverage=10)
    assert decide(catalog, btcusd_perp, coin, ledger=ledger) == []
    specs = decide(catalog, btcusdt, fill(), ledger=ledger)
    assert [(s.type, s.scope) for s in specs] == [("INSUFFICIENT_MARGIN", "USDT")]


@pytest.mark.parametrize(
    ("leverage", "quantity", "breach"),
    [
        (125, "0.833", False),  # 49980 < 50000, the cap of bracket 1 (the only one allowing 125x)
        (125, "1", True),  # 60000 ≥ 50000
        (101, "1", True),
        (100, "1", False),  # brackets 1-2 allow 100x: cap 600000
        (100, "10", True),  # 600000 ≥ 600000
        (75, "10", False),  # cap 3000000
    ],
)
def test_leverage_bracket_breach(
    catalog: Catalog, btcusdt: Instrument, leverage: int, quantity: str, breach: bool
) -> None:
    specs = decide(catalog, btcusdt, fill(leverage=leverage, quantity=quantity), wallet="100000000")
    assert ("LEVERAGE_BRACKET_BREACH" in types(specs)) is breach
    if breach:
        spec = next(s for s in specs if s.type == "LEVERAGE_BRACKET_BREACH")
        assert spec.scope == "BTCUSDT:BOTH"
        assert spec.metrics["leverage"] == D(leverage)


def test_leverage_bracket_breach_at_exactly_the_cap(catalog: Catalog, btcusdt: Instrument) -> None:
    f = fill(leverage=125, quantity="1", price="50000")
    assert "LEVERAGE_BRACKET_BREACH" in types(decide(catalog, btcusdt, f, wallet="100000"))
    f = fill(leverage=125, quantity="1", price="49999.9")
    assert "LEVERAGE_BRACKET_BREACH" not in types(decide(catalog, btcusdt, f, wallet="100000"))


def test_leverage_bracket_breach_uses_the_notional_at_the_mark(
    catalog: Catalog, btcusdt: Instrument
) -> None:
    f = fill(leverage=125, quantity="0.8", price="60000")  # 48000 at the fill price
    assert types(decide(catalog, btcusdt, f, wallet="100000")) == []
    specs = decide(catalog, btcusdt, f, wallet="100000", mark=D(62500))  # 50000 at the mark
    assert "LEVERAGE_BRACKET_BREACH" in types(specs)


@pytest.mark.parametrize(
    ("price", "deviates"),
    [("63000", False), ("63000.1", True), ("57000", False), ("56999.9", True), ("60000", False)],
)
def test_price_deviation(catalog: Catalog, btcusdt: Instrument, price: str, deviates: bool) -> None:
    specs = decide(catalog, btcusdt, fill(price=price), mark=D(60000))  # band 5 % = 3000
    assert ("PRICE_DEVIATION" in types(specs)) is deviates
    if deviates:
        spec = next(s for s in specs if s.type == "PRICE_DEVIATION")
        assert spec.scope == "BTCUSDT:BOTH"
        assert spec.metrics["markPrice"] == D(60000)


def test_price_deviation_is_skipped_without_a_mark(catalog: Catalog, btcusdt: Instrument) -> None:
    assert "PRICE_DEVIATION" not in types(decide(catalog, btcusdt, fill(price="90000")))


@pytest.mark.parametrize(("limit", "raised"), [("6000", False), ("5999.99", True)])
def test_position_limit(catalog: Catalog, btcusdt: Instrument, limit: str, raised: bool) -> None:
    thresholds = Thresholds(position_limit_notional={"USDT": D(limit)})
    specs = decide(catalog, btcusdt, fill(), thresholds=thresholds)
    assert ("POSITION_LIMIT" in types(specs)) is raised
    if raised:
        spec = next(s for s in specs if s.type == "POSITION_LIMIT")
        assert spec.scope == "BTCUSDT:BOTH"
        assert spec.metrics["notional"] == D(6000)


def test_position_limit_counts_the_whole_position(catalog: Catalog, btcusdt: Instrument) -> None:
    thresholds = Thresholds(position_limit_notional={"USDT": D(10000)})
    ledger = apply_fill(deposit(Ledger(), "10000"), fill(quantity="0.1"), btcusdt, None)
    f = fill(quantity="0.1", tradeId="T-2")  # 12000 in all after this fill
    assert "POSITION_LIMIT" in types(
        decide(catalog, btcusdt, f, thresholds=thresholds, ledger=ledger)
    )


@pytest.mark.parametrize(("threshold", "raised"), [("6000", True), ("6000.01", False)])
def test_large_trade(catalog: Catalog, btcusdt: Instrument, threshold: str, raised: bool) -> None:
    thresholds = Thresholds(large_trade_notional={"USDT": D(threshold)})
    specs = decide(catalog, btcusdt, fill(), thresholds=thresholds)
    assert ("LARGE_TRADE" in types(specs)) is raised
    if raised:
        spec = next(s for s in specs if s.type == "LARGE_TRADE")
        assert spec.scope == "BTCUSDT:BOTH"
        assert spec.metrics["notional"] == D(6000)


def test_large_trade_is_per_settle_asset(catalog: Catalog, btcusd_perp: Instrument) -> None:
    coin = fill(symbol="BTCUSD_PERP", quantity="10000", price="50000")  # 20 BTC
    usdt_only = Thresholds(large_trade_notional={"USDT": D(1)})
    assert "LARGE_TRADE" not in types(
        decide(catalog, btcusd_perp, coin, wallet="100", thresholds=usdt_only)
    )
    btc = Thresholds(large_trade_notional={"BTC": D(20)})
    specs = decide(catalog, btcusd_perp, coin, wallet="100", thresholds=btc)
    assert "LARGE_TRADE" in types(specs)


def test_a_closing_fill_raises_no_position_alerts(catalog: Catalog, btcusdt: Instrument) -> None:
    thresholds = Thresholds(position_limit_notional={"USDT": D(1)})
    ledger = apply_fill(deposit(Ledger(), "1000"), fill(), btcusdt, None)
    close = fill(side="SELL", tradeId="T-2")
    assert types(decide(catalog, btcusdt, close, thresholds=thresholds, ledger=ledger)) == []


def test_hedge_scope_names_the_position_side(catalog: Catalog, btcusdt: Instrument) -> None:
    thresholds = Thresholds(large_trade_notional={"USDT": D(1)})
    specs = decide(catalog, btcusdt, fill(positionSide="SHORT", side="SELL"), thresholds=thresholds)
    assert [s.scope for s in specs] == ["BTCUSDT:SHORT"]


# --- risk_alerts ----------------------------------------------------------------------
# cross long 0.1 BTCUSDT at 60000 with 1000 USDT: NORMAL at 60000, MARGIN_CALL at 50250
# (ratio 0.804), LIQUIDATION at 50000 (cross margin balance 0).

STATE_MARK = {"NORMAL": "60000", "MARGIN_CALL": "50250", "LIQUIDATION": "50000"}
TRANSITIONS: list[tuple[RiskState, RiskState, str | None]] = [
    ("NORMAL", "MARGIN_CALL", "MARGIN_CALL"),
    ("NORMAL", "LIQUIDATION", "LIQUIDATION_RISK"),
    ("MARGIN_CALL", "LIQUIDATION", "LIQUIDATION_RISK"),
    ("MARGIN_CALL", "NORMAL", "RISK_RECOVERED"),
    ("LIQUIDATION", "NORMAL", "RISK_RECOVERED"),
    ("LIQUIDATION", "MARGIN_CALL", None),
    ("NORMAL", "NORMAL", None),
    ("MARGIN_CALL", "MARGIN_CALL", None),
    ("LIQUIDATION", "LIQUIDATION", None),
]


def cross_before(btcusdt: Instrument, state: RiskState) -> Ledger:
    ledger = apply_fill(deposit(Ledger(), "1000"), fill(), btcusdt, None)
    wallet = replace(ledger.wallet("USDT"), risk_state=state)
    return ledger.with_wallet(wallet)


@pytest.mark.parametrize(("old", "new", "expected"), TRANSITIONS)
def test_cross_wallet_transitions(
    catalog: Catalog, btcusdt: Instrument, old: RiskState, new: RiskState, expected: str | None
) -> None:
    before = cross_before(btcusdt, old)
    after = valued(marked(before, "BTCUSDT", STATE_MARK[new]), catalog)
    assert after.wallets["USDT"].risk_state == new
    specs = risk_alerts(before, after)
    assert types(specs) == ([expected] if expected else [])
    if expected:
        assert specs[0].scope == "USDT"
        assert (
            SEVERITY[expected]
            == {
                "MARGIN_CALL": "WARNING",
                "LIQUIDATION_RISK": "CRITICAL",
                "RISK_RECOVERED": "INFO",
            }[expected]
        )


# isolated long 0.1 at 60000, 10x (margin 600): MARGIN_CALL at 54240, LIQUIDATION at 54000
ISO_MARK = {"NORMAL": "60000", "MARGIN_CALL": "54240", "LIQUIDATION": "54000"}


def isolated_before(btcusdt: Instrument, state: RiskState) -> Ledger:
    ledger = apply_fill(deposit(Ledger(), "1000"), fill(marginMode="ISOLATED"), btcusdt, None)
    p = ledger.position("BTCUSDT", "BOTH")
    assert p is not None
    return ledger.with_position(replace(p, risk_state=state))


@pytest.mark.parametrize(("old", "new", "expected"), TRANSITIONS)
def test_isolated_position_transitions(
    catalog: Catalog, btcusdt: Instrument, old: RiskState, new: RiskState, expected: str | None
) -> None:
    before = isolated_before(btcusdt, old)
    after = valued(marked(before, "BTCUSDT", ISO_MARK[new]), catalog)
    view = after.position("BTCUSDT", "BOTH")
    assert view is not None
    assert view.risk_state == new
    specs = risk_alerts(before, after)
    assert types(specs) == ([expected] if expected else [])
    if expected:
        assert specs[0].scope == "BTCUSDT:BOTH"
        assert specs[0].symbol == "BTCUSDT"


@pytest.mark.parametrize("old", ["MARGIN_CALL", "LIQUIDATION"])
def test_isolated_position_closing_while_at_risk_recovers(
    catalog: Catalog, btcusdt: Instrument, old: RiskState
) -> None:
    before = isolated_before(btcusdt, old)
    closed = apply_fill(before, fill(side="SELL", marginMode="ISOLATED"), btcusdt, None)
    specs = risk_alerts(before, valued(closed, catalog))
    assert [(s.type, s.scope) for s in specs] == [("RISK_RECOVERED", "BTCUSDT:BOTH")]


def test_isolated_position_closing_while_normal_sends_nothing(
    catalog: Catalog, btcusdt: Instrument
) -> None:
    before = isolated_before(btcusdt, "NORMAL")
    closed = apply_fill(before, fill(side="SELL", marginMode="ISOLATED"), btcusdt, None)
    assert risk_alerts(before, valued(closed, catalog)) == []


def test_new_wallet_starts_normal(catalog: Catalog, btcusdt: Instrument) -> None:
    # no USDT at all: the fill's cross wallet goes straight to LIQUIDATION (balance ≤ 0)
    before = Ledger()
    after = valued(apply_fill(before, fill(), btcusdt, None), catalog)
    assert [(s.type, s.scope) for s in risk_alerts(before, after)] == [("LIQUIDATION_RISK", "USDT")]


# --- severities and build_alert --------------------------------------------------------

CONTRACT_SEVERITY = {
    "TRADE_REJECTED": "WARNING",
    "POISON_MESSAGE": "CRITICAL",
    "INSUFFICIENT_MARGIN": "CRITICAL",
    "LEVERAGE_BRACKET_BREACH": "WARNING",
    "POSITION_LIMIT": "WARNING",
    "PRICE_DEVIATION": "INFO",
    "LARGE_TRADE": "INFO",
    "MARGIN_CALL": "WARNING",
    "LIQUIDATION_RISK": "CRITICAL",
    "RISK_RECOVERED": "INFO",
}


def test_severity_table() -> None:
    # The contract's table, plus STALE_MARK (an addition: docs/marks.md) and v2's
    # TRADING_STATE_CHANGED (INFO).
    added = {"STALE_MARK": "WARNING", "TRADING_STATE_CHANGED": "INFO"}
    assert dict(SEVERITY) == {**CONTRACT_SEVERITY, **added}


@pytest.mark.parametrize(("kind", "severity"), sorted(CONTRACT_SEVERITY.items()))
def test_build_alert(kind: str, severity: str) -> None:
    spec = AlertSpec(
        kind,  # type: ignore[arg-type]
        scope="BTCUSDT:BOTH",
        symbol="BTCUSDT",
        reasons=((kind, "why"),),
        metrics={"notional": D("6000.000"), "marginRatio": None, "leverage": D(10)},
    )
    alert = build_alert(
        spec, source_id="T-1", account_id="acct-1", correlation_id="c-1", created_at=T0
    )
    assert alert.severity == severity
    assert alert.type == kind
    assert alert.schemaVersion == 1
    assert alert.sourceId == "T-1"
    assert alert.accountId == "acct-1"
    assert alert.correlationId == "c-1"
    assert alert.metrics == {"notional": "6000", "leverage": "10"}  # nulls left out
    assert alert.reasons[0].code == kind
    dumped = alert.model_dump(mode="json")
    assert dumped["createdAt"] == "2024-10-01T12:00:00.000Z"
    assert dumped["scope"] == "BTCUSDT:BOTH"
