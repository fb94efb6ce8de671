"""Helpers shared by the flow tests: deps over the fakes, canonical messages, and the
interleave() hook that runs an action while a mark queries its holders."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from handlers import flows
from handlers.core.catalog import load_catalog
from handlers.core.contracts import parse_timestamp
from handlers.core.documents import HolderEntry, MarkDoc
from handlers.flows import Deps, Outcome
from handlers.settings import load_settings
from tests.aio import process_mark_message, process_trade_message, run
from tests.events import as_body, load_event
from tests.unit.fakes import FakeClock, FakeDecisions, FakeFanout, FakeSink, FakeStore

ACCT = "acct-0001"
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
FILL_ID = "T-BTC-0001"
MARK_ID = "BTCUSDT@2024-10-01T12:30:00.000Z"
M2 = "BTCUSDT@2024-10-01T12:30:00.000Z"
#: The index shards of the unit flows (the default).
SHARDS = 4
#: The unit flows run with hair-thin risk bands, so that every mark in them re-values its
#: holders as the mechanics tests expect (exactly-once, races, crash points); the tests
#: of bands themselves set their own width.
THIN_BANDS = "0.000001"


def make_deps(
    store: FakeStore,
    sink: FakeSink,
    clock: FakeClock,
    fanout: FakeFanout | None = None,
    decisions: FakeDecisions | None = None,
    **env: str,
) -> Deps:
    """A process's deps over the shared fakes (a new runtime each call: a new process);
    ``RISK_BAND_WIDTH`` is :data:`THIN_BANDS` unless ``env`` says otherwise; ``decisions``
    defaults to a new :class:`FakeDecisions` (pass one to read what a flow sent)."""
    settings = load_settings({"RISK_BAND_WIDTH": THIN_BANDS, **env})
    return Deps(
        settings=settings,
        catalog=load_catalog(settings.instruments_file),
        store=store,
        sink=sink,
        fanout=fanout or FakeFanout(),
        clock=clock,
        sleep=clock.sleep,
        decisions=decisions or FakeDecisions(),
    )


def event(name: str, **changes: Any) -> dict[str, Any]:
    out = load_event(name)
    out.update(changes)
    return out


def trade(deps: Deps, body: dict[str, Any] | bytes, dequeue_count: int = 1) -> Outcome:
    raw = body if isinstance(body, bytes) else as_body(body)
    return process_trade_message(raw, deps, dequeue_count=dequeue_count)


def marks(deps: Deps, body: dict[str, Any] | bytes, dequeue_count: int = 1) -> list[Outcome]:
    raw = body if isinstance(body, bytes) else as_body(body)
    return process_mark_message(raw, deps, dequeue_count=dequeue_count)


def digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def funded(deps: Deps, amount: str = "1000") -> None:
    assert trade(deps, event("transfer_deposit_usdt", amount=amount)).kind == "APPLIED"


def pending_ids(store: FakeStore, account: str = ACCT) -> list[str]:
    return [p["eventId"] for p in store.account(account)["pending"]]


def rejection(store: FakeStore, partition: str, source_id: str) -> dict[str, Any]:
    return store.records[(partition, f"rejection:{source_id}")]


def mark_at(
    price: str, timestamp: str = "2024-10-01T12:30:00Z", symbol: str = "BTCUSDT"
) -> dict[str, Any]:
    return event("mark_btcusdt", symbol=symbol, markPrice=price, timestamp=timestamp)


def open_btc(deps: Deps, account: str = ACCT, **changes: Any) -> None:
    funded_event = event("transfer_deposit_usdt", accountId=account)
    assert trade(deps, funded_event).kind == "APPLIED"
    fill = event("fill_btcusdt_long", accountId=account, fee="0", **changes)
    assert trade(deps, fill).kind == "APPLIED"


def interleave(
    store: FakeStore, act: Callable[[list[str]], Awaitable[None]], shards: int = SHARDS
) -> list[str]:
    """Make each holder listing run ``act(symbols listed so far)`` once it has taken the
    rows of every shard (a fill landing while a mark is in flight; the fake's queries do
    not suspend, so the shards are queried in order). Returns those symbols; ``del
    store.query_holders`` undoes it."""
    listed = store.query_holders
    listings: list[str] = []

    async def racing(symbol: str, shard: int, low: Decimal, high: Decimal) -> list[HolderEntry]:
        found = await listed(symbol, shard, low, high)
        if shard == shards - 1:
            listings.append(symbol)
            await act(listings)
        return found

    store.query_holders = racing  # type: ignore[method-assign]
    return listings


def holders_of(store: FakeStore, symbol: str) -> list[str]:
    """The accounts the index lists under ``symbol`` (any shard, any version)."""
    return sorted(store.holders.get(symbol, {}))


async def applied_now(deps: Deps, name: str, **changes: Any) -> None:
    """A fill applied from inside another message's processing."""
    outcome = await flows.process_trade_message(as_body(event(name, **changes)), deps)
    assert outcome.kind == "APPLIED"


BTC_ETH_MARKS = event(
    "marks_batch",
    marks=[
        {"symbol": "BTCUSDT", "markPrice": "50000", "timestamp": "2024-10-01T12:30:00Z"},
        {"symbol": "ETHUSDT", "markPrice": "3000", "timestamp": "2024-10-01T12:30:00Z"},
    ],
)


def stored_elsewhere(store: FakeStore, price: str, timestamp: str) -> None:
    """Another instance stores a newer BTCUSDT mark (this process does not see it)."""
    current = store.marks["BTCUSDT"]
    stamp = parse_timestamp(timestamp)
    newer = MarkDoc("BTCUSDT", f"BTCUSDT@{timestamp}", Decimal(price), stamp, stamp)
    run(store.write_mark(newer, current["_etag"]))
