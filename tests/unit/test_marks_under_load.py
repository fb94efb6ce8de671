"""Marks under load, deterministically: fills that land while a mark passes over its
holders, marks killed part-way and poisoned, and a mark's pass handed out in fan-out units.

After each: every open position at the stored mark of its symbol, no entry without its
record, every alert sent once (repeats identical), no mark dead-lettered that could apply.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from typing import Any

import pytest

from handlers.flows import Deps
from handlers.flows.banding import shard_of
from tests.aio import process_mark_fanout, process_poison_all, run
from tests.events import as_body
from tests.support import entry_done
from tests.unit.fakes import FakeClock, FakeFanout, FakeSink, FakeStore, StoreDown
from tests.unit.flowkit import (
    MARK_ID,
    event,
    interleave,
    make_deps,
    mark_at,
    marks,
    open_btc,
    trade,
)


def holders_of(n: int) -> list[str]:
    return [f"acct-{i:03d}" for i in range(n)]


def opened(deps: Deps, accounts: list[str]) -> None:
    for account in accounts:
        open_btc(deps, account, tradeId=f"T-{account}")


def settled(store: FakeStore, sink: FakeSink) -> None:
    """The invariants after a drain: positions at the stored mark, every entry's record
    written, each alertId sent with one content."""
    stored = {s: m["timestamp"] for s, m in store.marks.items()}
    for account_id, doc in store.accounts.items():
        for p in doc["positions"]:
            if p["quantity"] != "0" and p["symbol"] in stored:
                assert p["markTime"] == stored[p["symbol"]], (account_id, p["symbol"])
        for entry in doc["pending"]:
            assert entry_done(account_id, entry, store.records), (account_id, entry)
    contents: dict[str, set[str]] = {}
    for alert in sink.sent:
        contents.setdefault(alert.alertId, set()).add(alert.model_dump_json(exclude={"createdAt"}))
    assert all(len(c) == 1 for c in contents.values())


# --- fills that land while a mark passes over the holders --------------------------------


def test_a_position_that_closes_and_reopens_while_a_mark_passes_ends_at_that_mark(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    """acct-000 closes BTCUSDT just after the mark listed the holders (so the pass finds
    nothing open there) and reopens while the pass writes acct-001. Before: the reopening
    fill read the older stored mark and the second listing skipped the account, which the
    first listing had: it stayed at 60000 for good."""
    marks(deps, mark_at("60000", "2024-10-01T12:00:00Z"))
    a, b = holders_of(2)
    opened(deps, [a, b])
    close = event("fill_btcusdt_long", accountId=a, tradeId="T-close", side="SELL", fee="0")
    reopen = event("fill_btcusdt_long", accountId=a, tradeId="T-reopen", fee="0")

    async def close_now(listings: list[str]) -> None:
        if len(listings) == 1:
            outcome = await trade_now(deps, close)
            assert outcome == "APPLIED"

    async def reopen_while_b_is_written(document: Any, _etag: str | None) -> None:
        if document["accountId"] == b and not reopened:
            reopened.append(await trade_now(deps, reopen))

    reopened: list[str] = []
    interleave(store, close_now)
    store.before_account_write = reopen_while_b_is_written
    [outcome] = marks(deps, mark_at("61000"))
    assert outcome.kind == "APPLIED" and reopened == ["APPLIED"]
    for account in (a, b):
        assert store.account(account)["positions"][0]["markPrice"] == "61000", account
    settled(store, sink)


async def trade_now(deps: Deps, body: dict[str, Any]) -> str:
    from handlers import flows

    return (await flows.process_trade_message(as_body(body), deps)).kind


def test_a_fill_between_a_marks_account_writes_and_the_end_of_its_pass_ends_at_that_mark(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    """While the pass writes one holder, another account opens the symbol (it was not
    listed): it decides at the mark being applied, or catches up on it."""
    marks(deps, mark_at("60000", "2024-10-01T12:00:00Z"))
    a, b = holders_of(2)
    opened(deps, [a])
    newcomer = event("fill_btcusdt_long", accountId=b, tradeId="T-new", fee="0")
    assert trade(deps, event("transfer_deposit_usdt", accountId=b)).kind == "APPLIED"
    done: list[str] = []

    async def open_while_a_is_written(document: Any, _etag: str | None) -> None:
        if document["accountId"] == a and not done:
            done.append(await trade_now(deps, newcomer))

    store.before_account_write = open_while_a_is_written
    marks(deps, mark_at("61000"))
    assert done == ["APPLIED"]
    for account in (a, b):
        assert store.account(account)["positions"][0]["markPrice"] == "61000", account
    settled(store, sink)


# --- marks killed part-way, then poisoned ------------------------------------------------


class Killed(Exception):
    """The process running the invocation died (injected)."""


def kill_after(store: FakeStore, writes: int) -> None:
    """The process dies right after its ``writes``-th account write has committed: that
    write's entry stays unfinished and nothing after it runs (every later store call
    raises) until :func:`revive`."""
    count = [0]
    originals = {name: getattr(store, name) for name in ("write_account", "create_record")}

    async def write_account(*args: Any) -> Any:
        if count[0] >= writes:
            raise Killed("dead")
        etag = await originals["write_account"](*args)
        count[0] += 1
        if count[0] == writes:
            raise Killed("killed after the write")
        return etag

    async def create_record(*args: Any) -> Any:
        if count[0] >= writes:
            raise Killed("dead")
        return await originals["create_record"](*args)

    store.write_account = write_account  # type: ignore[method-assign]
    store.create_record = create_record  # type: ignore[method-assign]


def revive(store: FakeStore) -> None:
    for name in ("write_account", "create_record"):
        store.__dict__.pop(name, None)


def test_a_mark_killed_part_way_twice_then_poisoned_finishes_everything(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    """Twelve holders that all go into LIQUIDATION at the mark. The first delivery dies
    after 4 account writes, the second (a retry) after 5 more; the host then poisons it.
    Before: the poison function dead-lettered the newest mark (POISON_MESSAGE), the
    entries the kills left were never finished (alerts never sent) and the holders the
    kills never reached stayed at the older mark."""
    opened(make_deps(store, sink, clock), holders_of(12))
    raw = as_body(mark_at("50000"))
    for dequeue_count, writes in ((1, 4), (2, 5)):
        kill_after(store, writes)
        with pytest.raises(Killed):
            marks(make_deps(store, sink, clock), raw, dequeue_count=dequeue_count)
        revive(store)
    outcomes = process_poison_all(raw, make_deps(store, sink, clock), "marks")
    assert [(o.kind, o.source_id) for o in outcomes] == [("APPLIED", MARK_ID)]
    assert store.deadletters == {}
    assert sink.of_type("POISON_MESSAGE") == []
    # One alert per account; one the kills caught between its send and its record may
    # repeat (same alertId: the contract's "after a failure it may repeat").
    ids: dict[str | None, set[str]] = {}
    for alert in sink.of_type("LIQUIDATION_RISK"):
        ids.setdefault(alert.accountId, set()).add(alert.alertId)
    assert sorted(ids) == holders_of(12)
    assert all(len(found) == 1 for found in ids.values())
    assert store.marks["BTCUSDT"]["markPrice"] == "50000"
    settled(store, sink)


def test_a_poisoned_mark_still_the_newest_is_applied_not_dead_lettered(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    """Every delivery failed before the mark was stored (the index could not be read):
    the poison function applies it, as the newest mark of its symbol."""
    opened(make_deps(store, sink, clock), holders_of(3))
    raw = as_body(mark_at("50000"))
    listed = store.query_holders

    async def down(*_: Any) -> Any:
        raise StoreDown("index unavailable (injected)")

    store.query_holders = down  # type: ignore[method-assign]
    for n in (1, 2):
        with pytest.raises(StoreDown):
            marks(make_deps(store, sink, clock), raw, dequeue_count=n)
    store.query_holders = listed  # type: ignore[method-assign]
    [outcome] = process_poison_all(raw, make_deps(store, sink, clock), "marks")
    assert outcome.kind == "APPLIED"
    assert store.deadletters == {}
    assert len(sink.of_type("LIQUIDATION_RISK")) == 3
    settled(store, sink)


def test_a_poisoned_mark_a_newer_one_superseded_finishes_its_entries_only(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    """The first delivery dies after 1 of 3 writes; a newer mark is stored and passes;
    then the older body is poisoned: no deadletter, its one entry finished (its alert sent
    once), and nothing moved back."""
    opened(make_deps(store, sink, clock), holders_of(3))
    raw = as_body(mark_at("50000"))
    kill_after(store, 1)
    with pytest.raises(Killed):
        marks(make_deps(store, sink, clock), raw)
    revive(store)
    marks(make_deps(store, sink, clock), mark_at("50100", "2024-10-01T12:31:00Z"))
    [outcome] = process_poison_all(raw, make_deps(store, sink, clock), "marks")
    assert outcome.kind == "IGNORED"
    assert store.deadletters == {}
    by_source = Counter(a.sourceId for a in sink.of_type("LIQUIDATION_RISK"))
    assert by_source == Counter({MARK_ID: 1, "BTCUSDT@2024-10-01T12:31:00.000Z": 2})
    assert store.marks["BTCUSDT"]["markPrice"] == "50100"
    settled(store, sink)


# --- the fan-out: a mark's pass in units --------------------------------------------------


def units(fanout: FakeFanout) -> list[bytes]:
    return [base64.b64encode(t.encode()) for t in fanout.texts]


def test_a_pass_over_more_holders_than_the_batch_goes_out_in_units(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    """MARKS_FANOUT_BATCH=4, 10 holders: the mark invocation re-values 4 and hands 6 on in
    units of one index shard each (at most 4 accounts); once the units ran, the alerts are
    those of one pass (same ids), once each."""
    fanout = FakeFanout()
    deps = make_deps(store, sink, clock, fanout, MARKS_FANOUT_BATCH="4")
    opened(deps, holders_of(10))
    [outcome] = marks(deps, mark_at("50000"))
    shards = deps.settings.marks_index_shards
    by_shard = Counter(shard_of(a, shards) for a in holders_of(10))
    handed = sorted(holders_of(10), key=lambda a: (shard_of(a, shards), a))[4:]
    expected = Counter(shard_of(a, shards) for a in handed)
    assert (outcome.kind, outcome.detail) == (
        "APPLIED",
        f"4 account(s) re-valued; 6 handed on in {sum(-(-n // 4) for n in expected.values())} unit(s)",
    )
    assert len(by_shard) > 1  # (the test shows something only over several shards)
    for text in fanout.texts:
        accounts = [row[0] for row in json.loads(text)["accounts"]]
        assert len({shard_of(a, shards) for a in accounts}) == 1, accounts
    assert len(sink.of_type("LIQUIDATION_RISK")) == 4
    for unit in units(fanout):
        assert process_mark_fanout(unit, deps).kind == "APPLIED"
        process_mark_fanout(unit, deps)  # a unit delivered twice changes nothing more
    assert sorted(a.accountId for a in sink.sent) == holders_of(10)
    assert {a.sourceId for a in sink.sent} == {MARK_ID}
    settled(store, sink)


def test_a_poisoned_unit_is_applied_when_its_mark_is_the_newest(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    fanout = FakeFanout()
    deps = make_deps(store, sink, clock, fanout, MARKS_FANOUT_BATCH="2")
    opened(deps, holders_of(4))
    marks(deps, mark_at("50000"))
    [unit] = units(fanout)
    [outcome] = process_poison_all(unit, deps, deps.settings.marks_fanout_queue)
    assert outcome.kind == "APPLIED"
    assert store.deadletters == {}
    assert len(sink.of_type("LIQUIDATION_RISK")) == 4
    settled(store, sink)


def test_a_unit_that_is_not_one_is_rejected(deps: Deps, store: FakeStore, sink: FakeSink) -> None:
    outcome = process_mark_fanout(b'{"type":"MARK_PASS","schemaVersion":1}', deps)
    assert outcome.kind == "REJECTED"
    assert [a.type for a in sink.sent] == ["TRADE_REJECTED"]


def test_a_retry_of_a_mark_whose_units_went_out_sends_nothing_twice(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    """The mark invocation dies after handing its units on: its retry re-values what it had
    not, hands the units on again, and the duplicate units change nothing."""
    fanout = FakeFanout()
    deps = make_deps(store, sink, clock, fanout, MARKS_FANOUT_BATCH="3")
    opened(deps, holders_of(7))
    raw = as_body(mark_at("50000"))
    kill_after(store, 1)
    with pytest.raises(Killed):
        marks(deps, raw)
    revive(store)
    marks(make_deps(store, sink, clock, fanout, MARKS_FANOUT_BATCH="3"), raw, dequeue_count=2)
    for unit in units(fanout):
        process_mark_fanout(unit, deps)
    assert sorted(a.accountId for a in sink.sent) == holders_of(7)
    assert run(store.read_pass(next(iter(store.passes)))) is not None
    settled(store, sink)


def test_a_retry_hands_on_units_that_finish_what_the_failed_try_left(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    """The first try re-values acct-001 and acct-002 itself and dies right after acct-002's
    write. A new holder (acct-000) opens meanwhile, so the retry's listing hands acct-002 to
    a unit: that unit is the retry's, and finishes the young entry the failed try left."""
    setup = make_deps(store, sink, clock)
    marks(setup, mark_at("60000", "2024-10-01T12:00:00Z"))
    opened(setup, ["acct-001", "acct-002", "acct-003"])
    raw = as_body(mark_at("50000"))
    first, second = FakeFanout(), FakeFanout()
    kill_after(store, 2)
    with pytest.raises(Killed):
        marks(make_deps(store, sink, clock, first, MARKS_FANOUT_BATCH="2"), raw)
    revive(store)
    opened(setup, ["acct-000"])  # decides at the stored mark: no alert of the mark's
    retry = make_deps(store, sink, clock, second, MARKS_FANOUT_BATCH="2")
    marks(retry, raw, dequeue_count=2)
    for unit in units(first) + units(second):
        process_mark_fanout(unit, make_deps(store, sink, clock))
    by_mark = sorted(a.accountId or "" for a in sink.of_type("LIQUIDATION_RISK"))
    assert "acct-002" in by_mark
    settled(store, sink)


def test_a_second_write_of_one_message_on_an_account_keeps_its_own_alerts(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    """The first try of a BTC+ETH MARKS commits acct-0001's BTC write (MARGIN_CALL) and
    dies. The account then opens ETH at an older copy of its mark and dies before its
    catch-up. The retry finishes the BTC entry and writes ETH under a key of its own
    (``marks:<digest>:~<hex>``) — and dies before sending. A later delivery finishes that
    one too: LIQUIDATION_RISK is sent, not lost behind the first entry's record."""
    from handlers.flows.stored_marks import read_mark

    p0 = make_deps(store, sink, clock)
    marks(p0, event("marks_batch", marks=[
        {"symbol": "BTCUSDT", "markPrice": "60000", "timestamp": "2024-10-01T12:00:00Z"},
        {"symbol": "ETHUSDT", "markPrice": "3000", "timestamp": "2024-10-01T12:00:00Z"},
    ]))  # fmt: skip
    open_btc(p0, "acct-0001")
    copying = make_deps(store, sink, clock, MARK_CACHE_SECONDS="60")
    run(read_mark(copying, "ETHUSDT"))  # its copy of ETHUSDT: 3000 at 12:00
    raw = as_body(event("marks_batch", marks=[
        {"symbol": "BTCUSDT", "markPrice": "50250", "timestamp": "2024-10-01T12:30:00Z"},
        {"symbol": "ETHUSDT", "markPrice": "2500", "timestamp": "2024-10-01T12:30:00Z"},
    ]))  # fmt: skip
    kill_after(store, 1)
    with pytest.raises(Killed):
        marks(make_deps(store, sink, clock), raw)
    revive(store)

    def no_catch_up(document: Any, _etag: Any) -> None:
        if any(e["eventId"].startswith("mark:") for e in document["pending"]):
            raise Killed("died before the catch-up's write")

    store.before_account_write = no_catch_up
    eth = event(
        "fill_ethusdt_short",
        side="BUY",
        quantity="0.01",
        price="3000",
        leverage=10,
        marginMode="CROSS",
        tradeId="T-ETH-X",
    )
    with pytest.raises(Killed):
        trade(copying, eth)
    store.before_account_write = None
    kill_after(store, 1)
    with pytest.raises(Killed):
        marks(make_deps(store, sink, clock), raw, dequeue_count=2)
    revive(store)
    keys = [e["eventId"] for e in store.account("acct-0001")["pending"]]
    assert len([k for k in keys if k.startswith("marks:")]) == 2, keys
    marks(make_deps(store, sink, clock), raw, dequeue_count=3)
    assert store.account("acct-0001")["riskState"] == "LIQUIDATION"
    assert len(sink.of_type("LIQUIDATION_RISK")) == 1
    settled(store, sink)
