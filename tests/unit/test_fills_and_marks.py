"""Fills and marks in flight together: which mark a fill decides at, catch-ups, and the
interleavings of a fill with a mark's pass (the interleave() hook)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from handlers import flows
from handlers.core.documents import MarkDoc
from handlers.flows import Deps, Outcome
from handlers.flows.deps import MarkCopies
from tests.aio import run
from tests.events import as_body, load_event
from tests.unit.fakes import FakeClock, FakeSink, FakeStore, SinkDown, StoreDown
from tests.unit.flowkit import (
    ACCT,
    BTC_ETH_MARKS,
    FILL_ID,
    M2,
    MARK_ID,
    SCHEMAS,
    applied_now,
    digest,
    event,
    funded,
    holders_of,
    interleave,
    make_deps,
    mark_at,
    marks,
    open_btc,
    stored_elsewhere,
    trade,
)


def test_a_fill_uses_the_stored_mark(deps: Deps, store: FakeStore, sink: FakeSink) -> None:
    funded(deps, "10000")
    marks(deps, mark_at("50000"))
    trade(deps, load_event("fill_btcusdt_long"))  # at 60000: 20 % from the mark
    assert [a.type for a in sink.sent] == ["PRICE_DEVIATION"]
    assert sink.sent[0].metrics["markPrice"] == "50000"
    position = store.account(ACCT)["positions"][0]
    assert position["markPrice"] == "50000"
    assert position["unrealizedPnl"] == "-1000"


def test_a_stale_cached_copy_cannot_hide_a_holder_from_a_mark(deps: Deps, store: FakeStore) -> None:
    funded(deps)
    before_fill = run(store.read_account(ACCT))  # no position yet: "nothing to re-value"
    assert before_fill is not None
    assert trade(deps, load_event("fill_btcusdt_long")).kind == "APPLIED"
    store.stale_reads.append(before_fill)
    [outcome] = marks(deps, mark_at("61000", "2024-10-01T15:00:00Z"))
    assert outcome.kind == "APPLIED"
    assert store.stale_reads == []
    (position,) = store.account(ACCT)["positions"]
    assert position["markPrice"] == "61000"  # re-valued from a fresh read
    assert holders_of(store, "BTCUSDT") == [ACCT]  # still indexed


def test_a_fill_that_opens_while_a_mark_is_in_flight_decides_at_that_mark(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    """The mark is stored before its pass lists the holders. A fill that opens BTCUSDT on
    an account the listing did not see decides at that mark (its own alerts say so), and
    nothing is left for the pass or a catch-up to do: one listing, the position at it."""
    marks(deps, mark_at("60000", "2024-10-01T12:00:00Z"))
    funded(deps)

    async def open_now(listings: list[str]) -> None:
        if len(listings) == 1:  # the mark is in flight: the fill opens now
            await applied_now(deps, "fill_btcusdt_long", fee="0")
            assert store.account(ACCT)["positions"][0]["markPrice"] == "50000"

    listings = interleave(store, open_now)
    [outcome] = marks(deps, mark_at("50000"))
    assert outcome.kind == "APPLIED"
    assert listings == ["BTCUSDT"]
    position = store.account(ACCT)["positions"][0]
    assert (position["markPrice"], position["unrealizedPnl"]) == ("50000", "-1000")
    assert [(a.type, a.sourceId) for a in sink.sent] == [
        ("INSUFFICIENT_MARGIN", FILL_ID),
        ("PRICE_DEVIATION", FILL_ID),
        ("LIQUIDATION_RISK", FILL_ID),
    ]
    assert outcome.alerts == ()  # the mark itself changed no risk state


def test_a_holder_that_opens_another_marked_symbol_in_flight_gets_both_marks(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    """A MARKS message for BTCUSDT and ETHUSDT, both stored before the pass: a BTCUSDT
    holder opens ETHUSDT after the ETHUSDT holders were listed. The fill decides at the
    stored ETHUSDT mark — and, as every event does, at the stored mark of every other
    symbol it values: BTCUSDT's 50000 too, so the cross wallet's liquidation is the fill's
    own, and the pass finds nothing left to do on the account."""
    open_btc(deps)

    async def open_eth(listings: list[str]) -> None:
        if listings == ["BTCUSDT", "ETHUSDT"]:
            await applied_now(deps, "fill_ethusdt_short", quantity="0.1")

    interleave(store, open_eth)
    raw = as_body(BTC_ETH_MARKS)
    outcomes = marks(deps, raw)
    assert [o.kind for o in outcomes] == ["APPLIED", "APPLIED"]
    by_symbol = {p["symbol"]: p for p in store.account(ACCT)["positions"]}
    assert by_symbol["BTCUSDT"]["markPrice"] == "50000"
    assert (by_symbol["ETHUSDT"]["markPrice"], by_symbol["ETHUSDT"]["unrealizedPnl"]) == (
        "3000",
        "-50",
    )
    assert [(a.type, a.scope, a.sourceId) for a in sink.sent] == [
        ("INSUFFICIENT_MARGIN", "USDT", "T-ETH-0001"),
        ("PRICE_DEVIATION", "ETHUSDT:BOTH", "T-ETH-0001"),
        ("LIQUIDATION_RISK", "USDT", "T-ETH-0001"),
        ("LIQUIDATION_RISK", "ETHUSDT:BOTH", "T-ETH-0001"),
    ]
    records = {k[1]: v for k, v in store.records.items() if v["type"] == "revaluation"}
    assert sorted(records) == []
    loaded = [json.loads(f.read_text("utf-8")) for f in sorted(SCHEMAS.glob("*.schema.json"))]
    registry: Registry[Any] = Registry().with_resources(
        [(s["$id"], Resource.from_contents(s)) for s in loaded]
    )
    schema = next(s for s in loaded if s["$id"].endswith("/revaluation-record.schema.json"))
    for record in records.values():
        Draft202012Validator(schema, registry=registry).validate(record)


@pytest.mark.parametrize("cache", ["1", "0"])
def test_a_fill_first_looks_at_a_recent_copy_of_the_mark_then_catches_up(
    store: FakeStore, sink: FakeSink, clock: FakeClock, cache: str
) -> None:
    """MARK_CACHE_SECONDS: an opening fill's first look at the mark may be this process's
    copy (at most that old); the read that follows indexing always sees the stored one,
    and the position ends valued at it either way."""
    deps = make_deps(store, sink, clock, MARK_CACHE_SECONDS=cache)
    marks(deps, mark_at("60000", "2024-10-01T12:00:00Z"))
    funded(deps)
    stored_elsewhere(store, "50000", "2024-10-01T12:30:00.000Z")
    clock.advance(0.5)
    assert trade(deps, event("fill_btcusdt_long", fee="0")).kind == "APPLIED"
    position = store.account(ACCT)["positions"][0]
    assert (position["markPrice"], position["unrealizedPnl"]) == ("50000", "-1000")
    if cache == "1":  # judged at the copy (60000): no deviation; the catch-up liquidates
        assert [(a.type, a.sourceId) for a in sink.sent] == [("LIQUIDATION_RISK", M2)]
    else:  # judged at the stored mark: 20 % away, and liquidated by the fill itself
        assert [(a.type, a.sourceId) for a in sink.sent] == [
            ("INSUFFICIENT_MARGIN", FILL_ID),
            ("PRICE_DEVIATION", FILL_ID),
            ("LIQUIDATION_RISK", FILL_ID),
        ]


def test_a_copy_older_than_mark_cache_seconds_is_read_again(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    deps = make_deps(store, sink, clock, MARK_CACHE_SECONDS="1")
    marks(deps, mark_at("60000", "2024-10-01T12:00:00Z"))
    funded(deps)
    stored_elsewhere(store, "50000", "2024-10-01T12:30:00.000Z")
    clock.advance(1.5)
    assert trade(deps, event("fill_btcusdt_long", fee="0")).kind == "APPLIED"
    assert [a.type for a in sink.sent] == [
        "INSUFFICIENT_MARGIN",
        "PRICE_DEVIATION",
        "LIQUIDATION_RISK",
    ]


def test_the_mark_copy_never_goes_back_in_time(clock: FakeClock) -> None:
    cache = MarkCopies()
    newer = MarkDoc("BTCUSDT", "n", Decimal(2), clock.now, clock.now)
    older = MarkDoc("BTCUSDT", "o", Decimal(1), clock.now - timedelta(minutes=30), clock.now)
    cache.put("BTCUSDT", newer, clock())
    cache.put("BTCUSDT", older, clock())  # a slow read overtaken by a write
    cache.put("BTCUSDT", None, clock())
    assert cache.get("BTCUSDT", clock(), 1.0) == (newer,)
    assert cache.get("BTCUSDT", clock.now + timedelta(seconds=2), 1.0) is None
    assert cache.get("BTCUSDT", clock.now - timedelta(seconds=2), 1.0) is None  # clock stepped back
    assert cache.get("ETHUSDT", clock(), 1.0) is None


def test_a_retry_sends_the_alerts_of_a_write_that_failed_to_send(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    """A MARKS message for BTCUSDT and ETHUSDT: sending the alert of its second account
    write (the ETHUSDT holder's) fails, after both marks were stored. The retry finds its
    own marks stored, runs the pass again and finishes the message's entry on that
    account: the ETHUSDT alert is sent, once; the BTCUSDT one is not repeated."""
    open_btc(deps)
    eth_holder = "acct-0002"
    assert trade(deps, event("transfer_deposit_usdt", accountId=eth_holder)).kind == "APPLIED"
    eth_fill = event("fill_ethusdt_short", accountId=eth_holder, quantity="0.1", price="3000")
    assert trade(deps, eth_fill).kind == "APPLIED"
    eth_id = "ETHUSDT@2024-10-01T12:30:00.000Z"
    send = sink.send
    failed: list[str] = []

    async def fail_the_ethusdt_alert(alerts: Any) -> None:
        if any(a.sourceId == eth_id for a in alerts) and not failed:
            failed.append(eth_id)
            raise SinkDown("alerts queue unavailable (injected)")
        await send(alerts)

    raw = as_body(
        event(
            "marks_batch",
            marks=[
                {"symbol": "BTCUSDT", "markPrice": "50000", "timestamp": "2024-10-01T12:30:00Z"},
                {"symbol": "ETHUSDT", "markPrice": "4500", "timestamp": "2024-10-01T12:30:00Z"},
            ],
        )
    )
    sink.send = fail_the_ethusdt_alert  # type: ignore[method-assign]
    sink.sent.clear()
    with pytest.raises(SinkDown):
        marks(deps, raw)
    assert [a.sourceId for a in sink.sent] == [MARK_ID]  # the BTCUSDT alert only
    sink.send = send  # type: ignore[method-assign]
    again = marks(deps, raw, dequeue_count=2)
    assert [o.kind for o in again] == ["APPLIED", "APPLIED"]  # its own marks: the pass again
    assert [(a.type, a.sourceId) for a in sink.sent] == [
        ("LIQUIDATION_RISK", MARK_ID),
        ("LIQUIDATION_RISK", eth_id),
    ]
    # the retry finished the ETHUSDT holder's entry: a sent marker in its partition (the
    # failed invocation's own marker lists the BTCUSDT holder only)
    done = f"@sent:marks:{digest(raw)}:"
    assert [p for p, k in store.records if k.startswith(done)] == [
        f"@marks:{digest(raw)}",
        eth_holder,
    ]
    marks(deps, raw, dequeue_count=3)
    assert len(sink.sent) == 2


def test_a_redelivered_opening_fill_catches_up_when_the_first_delivery_died(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    """The first delivery writes the account and indexes the holder, then dies writing
    its record (before its catch-up). A newer mark is stored meanwhile by an instance
    whose listings missed the account. The redelivery finishes the event and catches up."""
    marks(deps, mark_at("60000", "2024-10-01T12:00:00Z"))
    funded(deps)
    store.fail_record_creates = 1
    with pytest.raises(StoreDown):
        trade(deps, event("fill_btcusdt_long", fee="0"))
    stored_elsewhere(store, "50000", "2024-10-01T12:30:00.000Z")
    assert store.account(ACCT)["positions"][0]["markPrice"] == "60000"
    assert trade(deps, event("fill_btcusdt_long", fee="0"), dequeue_count=2).kind == "DUPLICATE"
    position = store.account(ACCT)["positions"][0]
    assert (position["markPrice"], position["unrealizedPnl"]) == ("50000", "-1000")
    assert [(a.type, a.sourceId) for a in sink.sent] == [("LIQUIDATION_RISK", M2)]
    assert (ACCT, FILL_ID) in store.records


class _PausingStore:
    """Instance 2's view of the shared FakeStore: its second account read waits until
    ``go`` is set (so instance 1 can write in between)."""

    def __init__(self, inner: FakeStore, go: asyncio.Event) -> None:
        self._inner = inner
        self._go = go
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def read_account(self, account_id: str, *, fresh: bool = True) -> Any:
        self.reads += 1
        if self.reads == 2:
            await self._go.wait()
        return await self._inner.read_account(account_id, fresh=fresh)


def test_a_first_delivery_copy_leaves_a_young_catch_up_entry_to_its_owner(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    """Instance 1 values an opening fill at its (older) copy of the mark, so it catches
    up on the stored one. A copy of the fill reaches instance 2 as a FIRST delivery: it
    reads the account before instance 1's catch-up write and again after it, before
    instance 1 sends the catch-up's alert. The young entry is instance 1's to finish: the
    alert goes out once (the contract: without failures, each alertId exactly once)."""
    one = make_deps(store, sink, clock, MARK_CACHE_SECONDS="1")
    go = asyncio.Event()
    paused = _PausingStore(store, go)
    two = dataclasses.replace(make_deps(store, sink, clock), store=paused)  # type: ignore[arg-type]
    marks(one, mark_at("60000", "2024-10-01T12:00:00Z"))
    funded(one)
    stored_elsewhere(store, "50000", "2024-10-01T12:30:00.000Z")
    body = as_body(event("fill_btcusdt_long", fee="0"))
    copy: list[asyncio.Task[Outcome]] = []
    send = sink.send

    async def start_copy(document: Any, etag: str | None) -> None:
        if any(p["eventId"].startswith("mark:") for p in document["pending"]) and not copy:
            # instance 1 is about to write its catch-up: the copy reads once, then ends or
            # waits before its next read
            copy.append(asyncio.ensure_future(flows.process_trade_message(body, two)))
            while paused.reads < 2 and not copy[0].done():
                await asyncio.sleep(0)

    async def let_copy_run_first(alerts: Any) -> None:
        if any(a.sourceId == M2 for a in alerts) and not go.is_set():
            go.set()  # instance 1 wrote its entry and is about to send: the copy reads now
            while not copy[0].done():
                await asyncio.sleep(0)
        await send(alerts)

    store.before_account_write = start_copy
    sink.send = let_copy_run_first  # type: ignore[method-assign]
    assert trade(one, body).kind == "APPLIED"
    assert copy and copy[0].result().kind == "DUPLICATE"
    position = store.account(ACCT)["positions"][0]
    assert (position["markPrice"], position["unrealizedPnl"]) == ("50000", "-1000")
    assert [(a.type, a.sourceId) for a in sink.sent] == [("LIQUIDATION_RISK", M2)]


def test_a_large_exponent_mark_keeps_fills_working(deps: Deps, store: FakeStore) -> None:
    [outcome] = marks(deps, mark_at("1e200"))
    assert outcome.kind == "APPLIED"
    funded(deps)
    assert trade(deps, load_event("fill_btcusdt_long")).kind == "APPLIED"  # actual: raises


def test_a_withdrawal_during_a_pass_decides_at_the_stored_mark(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    """The 50000 mark is stored and its pass has not reached the account yet: a withdrawal
    that would leave nothing available at 50000 is refused, though the position still
    carries 60000 (money leaves only on the latest stored marks)."""
    marks(deps, mark_at("60000", "2024-10-01T12:00:00Z"))
    open_btc(deps)  # 1000 USDT, long 0.1 at 60000: 400 available at 60000, none at 50000
    withdraw = event("transfer_withdrawal", amount="-300")
    got: list[str] = []

    async def during(listings: list[str]) -> None:
        if not got:
            got.append((await flows.process_trade_message(as_body(withdraw), deps)).kind)

    interleave(store, during)
    marks(deps, mark_at("50000"))
    assert got == ["REJECTED"]
    assert sink.of_type("TRADE_REJECTED")[0].reasons[0].code == "INSUFFICIENT_AVAILABLE_BALANCE"
    assert store.account(ACCT)["wallets"]["USDT"]["walletBalance"] == "1000"
