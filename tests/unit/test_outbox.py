"""The one exactly-once mechanism (handlers.flows.outbox) over in-memory fakes: every crash
point of an entry and what redelivery does there, sweeps and takeovers, and what a process
remembers (nothing the cost or the outcome depends on)."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from handlers import flows
from handlers.core.documents import HolderEntry
from handlers.flows import Deps, note_failure
from handlers.flows.outbox import LEASE, SWEEP_AT
from tests.aio import check_stale_marks, process_poison, run
from tests.events import as_body, load_event
from tests.unit.fakes import CountingStore, FakeClock, FakeSink, FakeStore, SinkDown, StoreDown
from tests.unit.flowkit import (
    ACCT,
    FILL_ID,
    M2,
    MARK_ID,
    digest,
    event,
    funded,
    holders_of,
    make_deps,
    mark_at,
    marks,
    open_btc,
    pending_ids,
    stored_elsewhere,
    trade,
)

LEASE_SECONDS = LEASE.total_seconds()


def deposit(deps: Deps, n: int, account: str = ACCT) -> None:
    body = event("transfer_deposit_usdt", accountId=account, transferId=f"X-{n:04d}", amount="1")
    assert trade(deps, body).kind == "APPLIED"


# --- sweeps: entries leave the document only once their records are seen ----------------


def test_entries_stay_until_a_sweep_sees_their_records(deps: Deps, store: FakeStore) -> None:
    funded(deps)
    assert pending_ids(store) == ["X-DEP-0001"]
    for n in range(1, SWEEP_AT):
        deposit(deps, n)
    assert len(pending_ids(store)) == SWEEP_AT  # finished, but nobody has seen it yet
    assert store.record_queries == 0  # and no request was made to know
    trade(deps, load_event("fill_btcusdt_long"))
    assert store.record_queries == 1  # one query for all of them
    assert pending_ids(store) == [FILL_ID]
    balance = Decimal("997.6") + SWEEP_AT - 1  # 1000 − fee 2.4, then 1 a deposit
    assert store.account(ACCT)["wallets"]["USDT"]["walletBalance"] == str(balance)


def test_an_entry_whose_owner_is_gone_is_adopted_by_a_sweep(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    """The invocation that applied the fill died before sending its alerts, and its message
    never came back (stuck). Once the entry is older than the lease, the sweep of any later
    write finishes it: alerts sent, record written, entry gone."""
    sink.fail_sends = 1
    with pytest.raises(SinkDown):
        trade(make_deps(store, sink, clock), load_event("fill_btcusdt_long"))
    clock.advance(LEASE_SECONDS + 1)
    other = make_deps(store, sink, clock)  # another process
    for n in range(SWEEP_AT):
        deposit(other, n)
    assert {a.type for a in sink.sent} == {"INSUFFICIENT_MARGIN", "LIQUIDATION_RISK"}
    assert (ACCT, FILL_ID) in store.records
    assert FILL_ID not in pending_ids(store)


def test_a_young_entry_of_an_owner_in_flight_is_left_by_a_sweep(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    sink.fail_sends = 1
    with pytest.raises(SinkDown):  # as if still in flight: its record does not exist yet
        trade(make_deps(store, sink, clock), load_event("fill_btcusdt_long"))
    other = make_deps(store, sink, clock)
    for n in range(SWEEP_AT):
        deposit(other, n)
    assert sink.sent == []
    assert FILL_ID in pending_ids(store)
    assert trade(make_deps(store, sink, clock), load_event("fill_btcusdt_long"), 2).detail == (
        "record repaired"  # its own retry finishes it
    )
    assert {a.type for a in sink.sent} == {"INSUFFICIENT_MARGIN", "LIQUIDATION_RISK"}


def test_a_restarted_process_costs_what_a_warm_one_does(clock: FakeClock) -> None:
    """Twenty holders with a finished entry each, older than the lease; then a mark and a
    fill. On two identical stores: the process that wrote them (warm) and a new one
    (restarted) make the same requests (neither reads a record to learn what the other
    remembers). Before: the restarted one read every holder's record."""

    def setup() -> tuple[FakeStore, Deps]:
        store, sink = FakeStore(), FakeSink()
        deps = make_deps(store, sink, clock)
        for n in range(20):
            open_btc(deps, f"acct-{n:02d}")
        return store, deps

    def cost(store: FakeStore, deps: Deps) -> Counter[str]:
        counting = CountingStore(store)
        counted = Deps(**{**deps.__dict__, "store": counting})
        marks(counted, mark_at("60100", "2024-10-01T14:00:00Z"))
        body = event("fill_btcusdt_long", accountId="acct-07", tradeId="T-NEXT", fee="0")
        assert trade(counted, body).kind == "APPLIED"
        return counting.calls

    warm_store, warm = setup()
    cold_store, wrote = setup()
    clock.advance(LEASE_SECONDS + 60)
    warm_cost = cost(warm_store, warm)
    restarted = make_deps(cold_store, wrote.sink, clock)  # type: ignore[arg-type]
    restarted_cost = cost(cold_store, restarted)
    assert restarted_cost == warm_cost
    assert restarted_cost["read_record"] == 0 and restarted_cost["existing_records"] == 0


# --- crash by crash: an account entry ---------------------------------------------------


def crash_at(point: str, store: FakeStore, sink: FakeSink) -> type[Exception] | None:
    """Arm one failure of an opening fill that raises alerts: after the commit [1] (the
    index write fails), after indexing [2] (the send fails), after the send [3] (the record
    write fails), or none [4]."""
    if point == "1":
        index = store.index_holders

        async def fail_once(*_: Any) -> Any:
            store.index_holders = index  # type: ignore[method-assign]
            raise StoreDown("index write failed (injected)")

        store.index_holders = fail_once  # type: ignore[method-assign]
        return StoreDown
    if point == "2":
        sink.fail_sends = 1
        return SinkDown
    if point == "3":
        store.fail_record_creates = 1
        return StoreDown
    return None


@pytest.mark.parametrize(
    ("point", "sends"),
    [("1", 1), ("2", 1), ("3", 2), ("4", 1)],
    ids=["after-commit", "after-index", "after-send", "after-record"],
)
def test_each_crash_point_of_an_entry(
    store: FakeStore, sink: FakeSink, clock: FakeClock, point: str, sends: int
) -> None:
    """A fill that opens BTCUSDT without margin: INSUFFICIENT_MARGIN and LIQUIDATION_RISK.
    At each crash point, a first-delivery copy changes and sends nothing; the retry
    finishes the entry (holder indexed, alerts sent with the same ids, record written); a
    third delivery finds it done. Each alert goes out once, twice only after a crash that
    came after the send."""
    body = load_event("fill_btcusdt_long")
    failure = crash_at(point, store, sink)
    if failure is None:
        assert trade(make_deps(store, sink, clock), body).kind == "APPLIED"
    else:
        with pytest.raises(failure):
            trade(make_deps(store, sink, clock), body)
    sent = list(sink.ids)
    copy = trade(make_deps(store, sink, clock), body)  # a copy, first delivery
    assert copy.kind == "DUPLICATE" and sink.ids == sent
    retry = trade(make_deps(store, sink, clock), body, dequeue_count=2)
    assert retry.kind == "DUPLICATE"
    assert trade(make_deps(store, sink, clock), body, dequeue_count=3).alerts == ()
    assert (ACCT, FILL_ID) in store.records
    assert holders_of(store, "BTCUSDT") == [ACCT]
    ids = Counter(sink.ids)
    assert len(ids) == 2 and set(ids.values()) == {sends}
    assert store.account(ACCT)["positions"][0]["quantity"] == "0.1"


def test_a_mark_entry_crashed_before_its_send_is_finished_by_the_retry_only(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    open_btc(make_deps(store, sink, clock))
    sink.fail_sends = 1
    with pytest.raises(SinkDown):
        marks(make_deps(store, sink, clock), mark_at("50000"))
    [copy] = marks(make_deps(store, sink, clock), mark_at("50000"))  # first delivery
    assert (copy.kind, sink.sent) == ("IGNORED", [])
    [retry] = marks(make_deps(store, sink, clock), mark_at("50000"), dequeue_count=2)
    assert retry.kind == "APPLIED"
    assert [(a.type, a.sourceId) for a in sink.sent] == [("LIQUIDATION_RISK", MARK_ID)]


# --- claims: a rejection has no document to change ----------------------------------------


def test_a_rejection_crashed_before_its_send_is_re_sent_by_the_retry_only(
    deps: Deps, sink: FakeSink
) -> None:
    raw = b"%%% not a message %%%"
    sink.fail_sends = 1
    with pytest.raises(SinkDown):
        trade(deps, raw)  # the record is created, the alert not sent
    assert trade(deps, raw).detail == "already rejected"  # a copy
    assert sink.sent == []
    assert trade(deps, raw, dequeue_count=2).detail == "rejection alert re-sent"
    assert [a.type for a in sink.sent] == ["TRADE_REJECTED"]


# --- deadletters: the document is the alert's outbox -------------------------------------


def test_two_concurrent_poison_copies_send_one_poison_message(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    """Both copies read "no deadletter" before either writes: one creates it (and sends),
    the other meets the create's 409 and counts a repeat. Before the outbox: both sent."""
    raw = as_body(load_event("fill_btcusdt_long"))
    read = store.read_deadletter

    async def slow_read(queue: str, deadletter_id: str) -> Any:
        found = await read(queue, deadletter_id)
        await asyncio.sleep(0)  # let the other copy read too
        return found

    store.read_deadletter = slow_read  # type: ignore[method-assign]

    async def both() -> list[Any]:
        one, two = make_deps(store, sink, clock), make_deps(store, sink, clock)
        return list(
            await asyncio.gather(
                flows.process_poison(raw, one, "trades"), flows.process_poison(raw, two, "trades")
            )
        )

    run(both())
    assert [a.type for a in sink.sent] == ["POISON_MESSAGE"]
    assert store.deadletters[("trades", digest(raw))]["count"] == 2


def test_a_deadletter_crashed_before_its_send_is_sent_by_its_redelivery(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    raw = as_body(load_event("fill_btcusdt_long"))
    sink.fail_sends = 1
    with pytest.raises(SinkDown):
        process_poison(raw, make_deps(store, sink, clock), "trades")
    letter = store.deadletters[("trades", digest(raw))]
    assert len(letter["pending"]) == 1  # committed, not sent
    process_poison(raw, make_deps(store, sink, clock), "trades")  # another poisoning: a repeat
    assert sink.sent == []
    process_poison(raw, make_deps(store, sink, clock), "trades", dequeue_count=2)  # the retry
    assert [a.type for a in sink.sent] == ["POISON_MESSAGE"]
    assert "pending" not in store.deadletters[("trades", digest(raw))]


def test_the_last_error_survives_another_instance_poisoning_the_body(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    raw = as_body(load_event("fill_btcusdt_long"))
    failing = make_deps(store, sink, clock)
    run(note_failure(failing, raw, RuntimeError("cosmos down"), "trades"))
    process_poison(raw, make_deps(store, sink, clock), "trades")  # another instance
    assert store.deadletters[("trades", digest(raw))]["lastError"] == "RuntimeError: cosmos down"


def test_a_catch_up_dead_letters_an_unreadable_account_under_the_fill_body(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    """The fill's catch-up meets the account unreadable: the deadletter names the fill's
    body (``<digest>:<accountId>`` in the trades partition), not an empty one."""
    deps = make_deps(store, sink, clock, MARK_CACHE_SECONDS="1")
    marks(deps, mark_at("60000", "2024-10-01T12:00:00Z"))
    funded(deps)
    stored_elsewhere(store, "50000", "2024-10-01T12:30:00.000Z")  # the copy is behind
    index = store.index_holders

    async def break_the_account(
        symbol: str, shard: int, puts: list[HolderEntry], drops: list[HolderEntry], read: bool
    ) -> Any:
        for entry in puts:
            store.accounts[entry.account_id]["schemaVersion"] = 99
        return await index(symbol, shard, puts, drops, read)

    store.index_holders = break_the_account  # type: ignore[method-assign]
    raw = as_body(event("fill_btcusdt_long", fee="0"))
    assert trade(deps, raw).kind == "APPLIED"
    letter = store.deadletters[("trades", f"{digest(raw)}:{ACCT}")]
    assert (letter["bodyDigest"], letter["sourceId"]) == (digest(raw), M2)


# --- the stale-mark watch: the watch document is the alert's outbox -----------------------


def test_a_stale_mark_alert_crashed_before_its_send_goes_out_on_the_next_tick(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    deps = make_deps(store, sink, clock)
    open_btc(deps)
    clock.advance(3600)  # no mark at all, and positions open
    sink.fail_sends = 1
    with pytest.raises(SinkDown):
        check_stale_marks(deps)
    assert sink.sent == []
    check_stale_marks(make_deps(store, sink, clock))
    assert [(a.type, a.sourceId) for a in sink.sent] == [("STALE_MARK", "BTCUSDT@none")]
    check_stale_marks(make_deps(store, sink, clock))
    assert len(sink.sent) == 1


def test_an_event_without_alerts_keeps_only_its_record_id(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    """A fill that raised no alert carries no record in its entry (the account stays
    small); when its record write failed, the retry — or the poison path — rebuilds the
    record from the message, as it would have been written (same createdAt)."""
    deps = make_deps(store, sink, clock)
    funded(deps)
    body = load_event("fill_btcusdt_long")
    store.fail_record_creates = 1
    with pytest.raises(StoreDown):
        trade(deps, body)
    [entry] = [e for e in store.account(ACCT)["pending"] if e["eventId"] == FILL_ID]
    assert (entry["recordId"], "record" in entry) == (FILL_ID, False)
    clock.advance(30)
    assert trade(make_deps(store, sink, clock), body).detail == "in flight elsewhere"
    assert (ACCT, FILL_ID) not in store.records
    raw = as_body(body)
    assert process_poison(raw, make_deps(store, sink, clock), "trades").kind == "DUPLICATE"
    record = store.records[(ACCT, FILL_ID)]
    assert (record["type"], record["alerts"]) == ("trade", [])
    assert record["createdAt"] == entry["committedAt"]
    assert sink.sent == []
