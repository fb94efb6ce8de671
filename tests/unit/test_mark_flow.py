"""The marks flow (handlers.flows.marks) over in-memory fakes: storing marks and
re-valuing their holders."""

from __future__ import annotations

from typing import Any

import pytest

from handlers.core.alerts import alert_id
from handlers.core.documents import UNATTRIBUTED
from handlers.flows import Deps
from tests.events import as_body, load_event
from tests.support import entry_done
from tests.unit.fakes import CountingStore, FakeClock, FakeSink, FakeStore, SinkDown, StoreDown
from tests.unit.flowkit import (
    ACCT,
    MARK_ID,
    digest,
    event,
    holders_of,
    make_deps,
    mark_at,
    marks,
    open_btc,
    rejection,
    trade,
)


def test_mark_is_stored(deps: Deps, store: FakeStore, sink: FakeSink) -> None:
    [outcome] = marks(deps, load_event("mark_btcusdt"))
    assert (outcome.kind, outcome.source_id) == ("APPLIED", MARK_ID)
    doc = store.marks["BTCUSDT"]
    assert doc["symbol"] == "BTCUSDT"
    assert doc["type"] == "mark"
    assert doc["schemaVersion"] == 1
    assert doc["markPrice"] == "60500.5"
    assert doc["timestamp"] == "2024-10-01T12:30:00.000Z"
    assert doc["markId"] == MARK_ID
    assert sink.sent == []


@pytest.mark.parametrize(
    ("timestamp", "kind", "price"),
    [
        ("2024-10-01T12:29:59.999Z", "IGNORED", "60500.5"),
        ("2024-10-01T12:30:00.000Z", "IGNORED", "60500.5"),  # equal is not newer
        ("2024-10-01T14:30:00.0001+02:00", "IGNORED", "60500.5"),  # the same instant in UTC
        ("2024-10-01T12:30:00.001Z", "APPLIED", "1"),
    ],
)
def test_older_marks_are_ignored(
    deps: Deps, store: FakeStore, timestamp: str, kind: str, price: str
) -> None:
    marks(deps, load_event("mark_btcusdt"))
    [outcome] = marks(deps, mark_at("1", timestamp))
    assert outcome.kind == kind
    assert store.marks["BTCUSDT"]["markPrice"] == price


def test_mark_of_an_unknown_symbol_is_rejected(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    [outcome] = marks(deps, mark_at("0.1", symbol="DOGEUSDT"))
    source = "DOGEUSDT@2024-10-01T12:30:00.000Z"
    assert (outcome.kind, outcome.detail, outcome.source_id) == (
        "REJECTED",
        "UNKNOWN_SYMBOL",
        source,
    )
    assert rejection(store, UNATTRIBUTED, source)["reasons"][0]["code"] == "UNKNOWN_SYMBOL"
    [alert] = sink.sent
    assert (alert.type, alert.sourceId, alert.accountId) == ("TRADE_REJECTED", source, None)
    assert store.marks == {}


def test_invalid_mark_with_a_mark_id_uses_it(deps: Deps, store: FakeStore) -> None:
    [outcome] = marks(deps, mark_at("0"))
    assert (outcome.kind, outcome.detail, outcome.source_id) == (
        "REJECTED",
        "SCHEMA_INVALID",
        MARK_ID,
    )
    assert (UNATTRIBUTED, f"rejection:{MARK_ID}") in store.records


def test_invalid_mark_without_a_mark_id_uses_the_digest(deps: Deps) -> None:
    raw = as_body(mark_at("60000", "2024-10-01T12:30:00"))
    [outcome] = marks(deps, raw)
    assert (outcome.kind, outcome.source_id) == ("REJECTED", digest(raw))


def test_a_fill_on_the_marks_queue_is_rejected(deps: Deps, store: FakeStore) -> None:
    [outcome] = marks(deps, load_event("fill_btcusdt_long"))
    assert (outcome.kind, outcome.detail) == ("REJECTED", "SCHEMA_INVALID")
    assert store.accounts == {}


def test_marks_batch_is_stored(deps: Deps, store: FakeStore) -> None:
    outcomes = marks(deps, load_event("marks_batch"))
    assert [o.kind for o in outcomes] == ["APPLIED"] * 3
    assert store.marks["ETHUSDT"]["markPrice"] == "2510.25"
    assert store.marks["BTCUSD_PERP"]["markId"] == "BTCUSD_PERP@2024-10-01T12:30:00.000Z"


def test_marks_entries_stand_alone(deps: Deps, store: FakeStore, sink: FakeSink) -> None:
    ts = "2024-10-01T12:30:00Z"
    batch = event(
        "marks_batch",
        marks=[
            {"symbol": "BTCUSDT", "markPrice": "60000", "timestamp": ts},
            {"symbol": "ETHUSDT", "markPrice": "0", "timestamp": ts},
            {"symbol": "DOGEUSDT", "markPrice": "0.1", "timestamp": ts},
            {"symbol": "BTCUSD_PERP", "markPrice": "60000", "timestamp": "yesterday"},
            "junk",
            {"symbol": "BTC USDT", "markPrice": "60000", "timestamp": ts},
            {"symbol": "BTCUSD_PERP", "markPrice": "61000", "timestamp": ts},
        ],
    )
    raw = as_body(batch)
    d = digest(raw)
    outcomes = marks(deps, raw)
    got = sorted((o.kind, o.source_id, o.detail if o.kind == "REJECTED" else "") for o in outcomes)
    assert got == sorted(
        [
            ("APPLIED", "BTCUSDT@2024-10-01T12:30:00.000Z", ""),
            ("REJECTED", "ETHUSDT@2024-10-01T12:30:00.000Z", "SCHEMA_INVALID"),
            ("REJECTED", "DOGEUSDT@2024-10-01T12:30:00.000Z", "UNKNOWN_SYMBOL"),
            ("REJECTED", f"{d}:3", "SCHEMA_INVALID"),
            ("REJECTED", f"{d}:4", "SCHEMA_INVALID"),
            ("REJECTED", f"{d}:5", "UNKNOWN_SYMBOL"),
            ("APPLIED", "BTCUSD_PERP@2024-10-01T12:30:00.000Z", ""),
        ]
    )
    rejected = [o.source_id for o in outcomes if o.kind == "REJECTED"]
    for source in rejected:
        assert (UNATTRIBUTED, f"rejection:{source}") in store.records
    assert sorted(a.sourceId for a in sink.sent) == sorted(rejected)
    assert all(a.type == "TRADE_REJECTED" and a.accountId is None for a in sink.sent)
    assert set(store.marks) == {"BTCUSDT", "BTCUSD_PERP"}
    # redelivery of the whole batch changes and sends nothing
    again = marks(deps, raw)
    assert sorted(o.kind for o in again) == ["DUPLICATE"] * 5 + ["IGNORED"] * 2
    assert len(sink.sent) == 5


@pytest.mark.parametrize("count", [0, 501])
def test_marks_batch_of_wrong_size_is_rejected_whole(
    deps: Deps, store: FakeStore, count: int
) -> None:
    entry = {"symbol": "BTCUSDT", "markPrice": "60000", "timestamp": "2024-10-01T12:30:00Z"}
    raw = as_body(event("marks_batch", marks=[entry] * count))
    [outcome] = marks(deps, raw)
    assert (outcome.kind, outcome.detail, outcome.source_id) == (
        "REJECTED",
        "SCHEMA_INVALID",
        digest(raw),
    )
    assert store.marks == {}


def test_opening_a_position_indexes_the_holder(deps: Deps, store: FakeStore) -> None:
    open_btc(deps)
    assert holders_of(store, "BTCUSDT") == [ACCT]
    assert holders_of(store, "ETHUSDT") == []


def test_a_mark_revalues_open_positions(deps: Deps, store: FakeStore, sink: FakeSink) -> None:
    open_btc(deps)  # cross long 0.1 at 60000 with 1000: LP ≈ 50200.8
    assert sink.sent == []
    [outcome] = marks(deps, mark_at("50000"))
    assert outcome.kind == "APPLIED"
    doc = store.account(ACCT)
    position = doc["positions"][0]
    assert position["markPrice"] == "50000"
    assert position["unrealizedPnl"] == "-1000"
    assert doc["wallets"]["USDT"]["riskState"] == "LIQUIDATION"
    assert doc["riskState"] == "LIQUIDATION"
    [alert] = sink.sent
    assert (alert.type, alert.severity, alert.scope, alert.sourceId, alert.accountId) == (
        "LIQUIDATION_RISK",
        "CRITICAL",
        "USDT",
        MARK_ID,
        ACCT,
    )
    assert alert.alertId == alert_id(MARK_ID, "LIQUIDATION_RISK", ACCT, "USDT")
    assert [a.alertId for a in outcome.alerts] == [alert.alertId]
    assert store.marks["BTCUSDT"]["markPrice"] == "50000"

    # the same message again changes and sends nothing
    [again] = marks(deps, mark_at("50000"))
    assert again.kind == "IGNORED"
    assert len(sink.sent) == 1

    # a newer mark back at 60000 recovers, alerted under its own mark id
    later = "2024-10-01T12:31:00Z"
    marks(deps, mark_at("60000", later))
    assert [(a.type, a.sourceId) for a in sink.sent[1:]] == [
        ("RISK_RECOVERED", "BTCUSDT@2024-10-01T12:31:00.000Z")
    ]
    assert store.account(ACCT)["wallets"]["USDT"]["riskState"] == "NORMAL"


def test_a_mark_without_a_risk_change_updates_silently(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    open_btc(deps)
    marks(deps, mark_at("61000"))
    assert sink.sent == []
    position = store.account(ACCT)["positions"][0]
    assert (position["markPrice"], position["unrealizedPnl"]) == ("61000", "100")


def test_each_mark_of_a_batch_alerts_under_its_own_id(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    open_btc(deps)
    batch = event(
        "marks_batch",
        marks=[
            {"symbol": "BTCUSDT", "markPrice": "50000", "timestamp": "2024-10-01T12:31:00Z"},
            {"symbol": "BTCUSDT", "markPrice": "50250", "timestamp": "2024-10-01T12:30:00Z"},
        ],
    )
    marks(deps, batch)
    # in timestamp order: NORMAL → MARGIN_CALL (ratio 0.804) → LIQUIDATION
    assert [(a.type, a.sourceId) for a in sink.sent] == [
        ("MARGIN_CALL", "BTCUSDT@2024-10-01T12:30:00.000Z"),
        ("LIQUIDATION_RISK", "BTCUSDT@2024-10-01T12:31:00.000Z"),
    ]
    assert store.marks["BTCUSDT"]["markPrice"] == "50000"  # the newest is stored


def test_isolated_position_alerts_with_its_scope(deps: Deps, sink: FakeSink) -> None:
    open_btc(deps, marginMode="ISOLATED")  # isolated margin 600: LP ≈ 54216.9
    marks(deps, mark_at("54240"))  # ratio 0.904
    assert [(a.type, a.scope, a.symbol) for a in sink.sent] == [
        ("MARGIN_CALL", "BTCUSDT:BOTH", "BTCUSDT")
    ]


def test_every_holder_is_revalued(deps: Deps, store: FakeStore, sink: FakeSink) -> None:
    open_btc(deps, "acct-a")
    open_btc(deps, "acct-b", tradeId="T-B-1")
    marks(deps, mark_at("50000"))
    assert sorted((a.accountId, a.type) for a in sink.sent) == [
        ("acct-a", "LIQUIDATION_RISK"),
        ("acct-b", "LIQUIDATION_RISK"),
    ]
    for account in ("acct-a", "acct-b"):
        assert store.account(account)["positions"][0]["markPrice"] == "50000"


def test_a_closed_holder_leaves_the_index(deps: Deps, store: FakeStore, sink: FakeSink) -> None:
    open_btc(deps)
    close = event("fill_btcusdt_long", tradeId="T-BTC-0002", side="SELL", fee="0")
    assert trade(deps, close).kind == "APPLIED"
    writes = store.account_writes
    marks(deps, mark_at("50000"))
    assert holders_of(store, "BTCUSDT") == []
    assert store.account_writes == writes  # nothing open to re-value
    assert sink.sent == []


def test_mark_crash_before_alerts_is_completed_by_the_retry(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    open_btc(deps)
    sink.fail_sends = 1
    with pytest.raises(SinkDown):
        marks(deps, mark_at("50000"))
    assert store.marks["BTCUSDT"]["markPrice"] == "50000"  # stored first, before its pass (v2)
    stored = store.account(ACCT)["pending"][-1]["alerts"]  # (a mark pass's entry keeps them)
    assert [a["type"] for a in stored] == ["LIQUIDATION_RISK"]
    [outcome] = marks(deps, mark_at("50000"), dequeue_count=2)
    assert outcome.kind == "APPLIED"
    assert sink.ids == [stored[0]["alertId"]]
    assert store.marks["BTCUSDT"]["markPrice"] == "50000"
    assert store.account(ACCT)["wallets"]["USDT"]["riskState"] == "LIQUIDATION"


def test_mark_alerts_survive_a_concurrent_copy(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    first = make_deps(store, sink, clock)
    open_btc(first)
    sink.fail_sends = 1
    with pytest.raises(SinkDown):
        marks(first, mark_at("50000"))  # account written, alert not sent
    marks(make_deps(store, sink, clock), mark_at("50000"))  # a duplicate copy, first delivery
    marks(first, mark_at("50000"), dequeue_count=2)  # the host retries the failed one
    clock.advance(60)
    trade(first, event("transfer_deposit_usdt", transferId="X-DEP-0002", amount="1"))
    assert [a.type for a in sink.sent] == ["LIQUIDATION_RISK"]


def test_mark_alerts_survive_a_newer_mark(
    deps: Deps, store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    open_btc(deps)
    sink.fail_sends = 1
    with pytest.raises(SinkDown):
        marks(deps, mark_at("50000"))  # NORMAL → LIQUIDATION written, alert not sent
    clock.advance(1)
    marks(deps, mark_at("49990", "2024-10-01T12:30:01Z"))  # the next mark, 1 s later
    clock.advance(1)
    marks(deps, mark_at("50000"), dequeue_count=2)  # the host retries the failed message
    clock.advance(60)
    trade(deps, event("transfer_deposit_usdt", transferId="X-DEP-0002", amount="1"))
    assert [a.type for a in sink.sent] == ["LIQUIDATION_RISK"]


def test_unreadable_holder_is_skipped_and_deadlettered(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    open_btc(deps, "acct-a")
    open_btc(deps, "acct-b", tradeId="T-B-1")
    store.accounts["acct-a"]["schemaVersion"] = 99
    raw = as_body(mark_at("50000"))
    marks(deps, raw)
    d = digest(raw)
    letter = store.deadletters[("marks", f"{d}:acct-a")]
    assert letter["sourceId"] == MARK_ID
    assert letter["accountId"] == "acct-a"
    assert letter["bodyDigest"] == d
    assert letter["count"] == 1
    assert store.accounts["acct-a"]["schemaVersion"] == 99  # never overwritten
    poison = sink.of_type("POISON_MESSAGE")
    assert [(a.sourceId, a.accountId) for a in poison] == [(MARK_ID, "acct-a")]
    # the mark went on: the other account is re-valued and the mark stored
    assert [a.accountId for a in sink.of_type("LIQUIDATION_RISK")] == ["acct-b"]
    assert store.marks["BTCUSDT"]["markPrice"] == "50000"


def test_account_deadletter_keeps_the_raw_body(deps: Deps, store: FakeStore) -> None:
    open_btc(deps)
    store.accounts[ACCT]["schemaVersion"] = 99
    raw = as_body(mark_at("50000"))
    marks(deps, raw)
    assert store.deadletters[("marks", f"{digest(raw)}:{ACCT}")]["rawBody"] == raw.decode()


# --- a pass's invocation finishes its accounts together --------------------------------


#: The scope of a cross wallet's alert: its settle asset.
SCOPE = "USDT"


def _fail_index_once(store: FakeStore) -> None:
    index = store.index_holders

    async def fail_once(*args: Any) -> Any:
        store.index_holders = index  # type: ignore[method-assign]
        raise StoreDown("index write failed (injected)")

    store.index_holders = fail_once  # type: ignore[method-assign]


@pytest.mark.parametrize(
    ("point", "repeats"),
    [("index", 0), ("send", 0), ("marker", 12), ("none", 0)],
    ids=["after-commits", "one-send-fails", "after-sends", "finished"],
)
def test_each_crash_point_of_a_pass(
    store: FakeStore, sink: FakeSink, clock: FakeClock, point: str, repeats: int
) -> None:
    """Twelve holders, one mark that liquidates every one. The invocation writes them all,
    then indexes their new bands, sends their alerts and writes ONE sent marker. Wherever
    it fails, the retry leaves every account re-valued, indexed at its current bands and
    alerted — once, or a second time (same ids) only for alerts sent before the marker
    was lost; a third delivery sends nothing; no account is written twice."""
    deps = make_deps(store, sink, clock)
    accounts = [f"acct-{n:02d}" for n in range(12)]
    for account in accounts:
        open_btc(deps, account, tradeId=f"T-{account}")
    sink.sent.clear()
    failure: type[Exception] | None = StoreDown
    if point == "index":
        _fail_index_once(store)
    elif point == "send":
        sink.fail_sends = 1
        failure = SinkDown
    elif point == "marker":
        store.fail_record_creates = 1
    else:
        failure = None
    writes = store.account_writes
    if failure is None:
        marks(deps, mark_at("50000"))
    else:
        with pytest.raises(failure):
            marks(deps, mark_at("50000"))
        marks(make_deps(store, sink, clock), mark_at("50000"), dequeue_count=2)
    expected = {alert_id(MARK_ID, "LIQUIDATION_RISK", a, SCOPE) for a in accounts}
    assert set(sink.ids) == expected
    assert len(sink.ids) == len(expected) + repeats
    assert store.account_writes == writes + len(accounts)
    for account in accounts:
        doc = store.account(account)
        assert all(entry_done(account, e, store.records) for e in doc["pending"]), account
        entry = f"holder:{account}:{doc['bandsVersion']}"
        assert [i for p in store.index.values() for i in p if account in i] == [entry]
    sent = len(sink.ids)
    marks(make_deps(store, sink, clock), mark_at("50000"), dequeue_count=3)
    assert len(sink.ids) == sent


def test_a_pass_costs_a_read_and_a_write_per_account_it_changes(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    """Forty holders, a mark that liquidates every one: each is read and written once;
    their index entries go in one batch per shard, the marker is one record for all."""
    deps = make_deps(store, sink, clock)
    for n in range(40):
        open_btc(deps, f"acct-{n:02d}", tradeId=f"T-{n}")
    counting = CountingStore(store)
    marks(Deps(**{**deps.__dict__, "store": counting}), mark_at("50000"))
    shards = deps.settings.marks_index_shards
    assert counting.calls["read_account"] == 40
    assert counting.calls["write_account"] == 40
    assert counting.calls["index_holders"] == shards
    assert counting.calls["create_record"] == 1
    assert counting.calls["read_marks"] + counting.calls["read_mark"] <= 2  # the post-check
