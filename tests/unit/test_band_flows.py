"""The band-driven mark flow against the exhaustive reference, through the real flows on
the fakes: the same alerts (ids, types, scopes, metrics) as re-valuing every holder at
every mark, while a mark that changes nothing writes no account."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest

from handlers.adapters import mapping
from handlers.core.alerts import alert_id
from handlers.core.contracts import mark_id, parse_timestamp
from handlers.core.decimals import format_decimal
from handlers.core.revalue import revalue_at
from handlers.core.state import Ledger
from handlers.flows import Deps, banding
from tests.unit.fakes import FakeClock, FakeSink, FakeStore
from tests.unit.flowkit import event, make_deps, marks, trade

#: The default width: these tests are about real bands.
WIDTH = "0.05"


def setup_accounts(deps: Deps, rng: random.Random, count: int) -> list[str]:
    """Accounts with BTCUSDT and ETHUSDT positions (cross and isolated, long and short),
    funded from thin to thick so that marks move some across the thresholds."""
    marks(deps, event("mark_btcusdt", markPrice="60000", timestamp="2024-10-01T12:00:00Z"))
    marks(
        deps,
        event(
            "mark_btcusdt",
            symbol="ETHUSDT",
            markPrice="2500",
            timestamp="2024-10-01T12:00:00Z",
        ),
    )
    accounts = []
    for n in range(count):
        account = f"band-{n:03d}"
        accounts.append(account)
        deposit = str(rng.choice([300, 600, 1200, 2500, 10000]))
        dep = event("transfer_deposit_usdt", accountId=account, transferId=f"d-{n}", amount=deposit)
        assert trade(deps, dep).kind == "APPLIED"
        mode = rng.choice(["CROSS", "CROSS", "ISOLATED"])
        btc: dict[str, Any] = {
            "accountId": account,
            "tradeId": f"b-{n}",
            "side": rng.choice(["BUY", "SELL"]),
            "quantity": rng.choice(["0.05", "0.1", "0.2"]),
            "price": "60000",
            "leverage": rng.choice([10, 20]),
            "marginMode": mode,
            "fee": "0",
        }
        trade(deps, event("fill_btcusdt_long", **btc))
        if rng.random() < 0.5:
            eth = {
                "accountId": account,
                "tradeId": f"e-{n}",
                "quantity": rng.choice(["0.5", "1"]),
                "price": "2500",
                "marginMode": mode,
                "fee": "0",
            }
            trade(deps, event("fill_ethusdt_short", **eth))
    return accounts


def walk(rng: random.Random, steps: int) -> list[tuple[str, Decimal, str]]:
    """Marks of BTCUSDT and ETHUSDT: small steps, now and then a jump."""
    prices = {"BTCUSDT": Decimal(60000), "ETHUSDT": Decimal(2500)}
    out = []
    for step in range(steps):
        symbol = rng.choice(sorted(prices))
        move = Decimal(rng.choice([-3, -1, 1, 3]) if rng.random() < 0.8 else rng.choice([-12, 9]))
        prices[symbol] = (prices[symbol] * (1 + move / 100)).quantize(Decimal("0.1"))
        minute, second = divmod(step + 1, 60)
        out.append((symbol, prices[symbol], f"2024-10-01T13:{minute:02d}:{second:02d}Z"))
    return out


def reference(
    deps: Deps, ledgers: dict[str, Ledger], steps: list[tuple[str, Decimal, str]]
) -> dict[str, tuple[str, str | None, dict[str, str]]]:
    """Every holder re-valued at every mark: alertId → (type, scope, metrics)."""
    out: dict[str, tuple[str, str | None, dict[str, str]]] = {}
    ratio = deps.settings.margin_call_ratio
    for symbol, price, stamp in steps:
        when = parse_timestamp(stamp)
        source = mark_id(symbol, stamp)
        assert source is not None
        for account, ledger in sorted(ledgers.items()):
            if not any(p.is_open and p.symbol == symbol for p in ledger.positions):
                continue
            moved, specs, _ = revalue_at(ledger, [(symbol, price, when)], deps.catalog, ratio)
            ledgers[account] = moved
            for spec in specs:
                metrics = {k: format_decimal(v) for k, v in spec.metrics.items() if v is not None}
                key = alert_id(source, spec.type, account, spec.scope)
                out[key] = (spec.type, spec.scope, metrics)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_the_band_path_sends_what_re_valuing_every_holder_sends(
    store: FakeStore, sink: FakeSink, clock: FakeClock, seed: int
) -> None:
    rng = random.Random(seed)
    deps = make_deps(store, sink, clock, RISK_BAND_WIDTH=WIDTH)
    accounts = setup_accounts(deps, rng, 24)
    ledgers = {a: mapping.account_from_document(store.account(a)).ledger for a in accounts}
    sink.sent.clear()
    steps = walk(rng, 40)
    writes_before = store.account_writes
    for symbol, price, stamp in steps:
        body = event("mark_btcusdt", symbol=symbol, markPrice=str(price), timestamp=stamp)
        marks(deps, body)
    sent = {a.alertId: (a.type, a.scope, dict(a.metrics)) for a in sink.sent}
    assert sent == reference(deps, ledgers, steps)
    holders = sum(
        1 for a in accounts for symbol, _, _ in steps if symbol in ledgers_symbols(ledgers[a])
    )
    assert store.account_writes - writes_before < holders  # fewer writes than holders


def ledgers_symbols(ledger: Ledger) -> set[str]:
    return {p.symbol for p in ledger.positions if p.is_open}


def test_a_mark_that_changes_nothing_writes_no_account(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    deps = make_deps(store, sink, clock, RISK_BAND_WIDTH=WIDTH)
    rng = random.Random(7)
    accounts = setup_accounts(deps, rng, 10)
    writes, queries = store.account_writes, dict(store.index)
    body = event("mark_btcusdt", markPrice="60010", timestamp="2024-10-01T12:05:00Z")
    [outcome] = marks(deps, body)
    assert outcome.kind == "APPLIED"
    assert store.account_writes == writes
    assert store.index.keys() == queries.keys()
    for account in accounts:  # the figures stay as of valuedAt, the older mark
        doc = store.account(account)
        assert doc["valuedAt"] == "2024-10-01T12:00:00.000Z"


def test_a_hedge_pair_opened_before_any_mark_gets_a_band_every_mark_leaves_unless_one_holds(
    store: FakeStore, sink: FakeSink, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its legs carry different fill prices as marks. No mark has reached the symbol, so
    every mark leaves the band it gets — even when nothing verifies a box (patched here) —
    and the first mark moves both legs."""
    deps = make_deps(store, sink, clock, RISK_BAND_WIDTH=WIDTH)
    trade(deps, event("transfer_deposit_usdt", amount="100000"))
    long = {"positionSide": "LONG", "tradeId": "h-1", "price": "60000"}
    short = {"positionSide": "SHORT", "side": "SELL", "tradeId": "h-2", "price": "60100"}
    assert trade(deps, event("fill_btcusdt_long", **long)).kind == "APPLIED"
    monkeypatch.setattr(banding, "box_holds", lambda *_: False)  # nothing verifies
    assert trade(deps, event("fill_btcusdt_long", **short)).kind == "APPLIED"
    monkeypatch.undo()
    doc = store.account("acct-0001")
    low, high = (Decimal(v) for v in doc["riskBands"]["BTCUSDT"])
    assert low > high  # every mark leaves it
    writes = store.account_writes
    marks(deps, event("mark_btcusdt", markPrice="60050", timestamp="2024-10-01T12:30:00Z"))
    assert store.account_writes == writes + 1
    doc = store.account("acct-0001")
    assert {p["markPrice"] for p in doc["positions"]} == {"60050"}
    low, high = (Decimal(v) for v in doc["riskBands"]["BTCUSDT"])
    assert low <= Decimal(60050) <= high
