"""Every document the flows write, and the fan-out unit they send, matches its JSON Schema
in schemas/ (the shapes users and dashboards rely on)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from handlers.flows import note_failure
from tests.aio import check_stale_marks, process_poison, run
from tests.events import as_body, load_event
from tests.unit.fakes import FakeClock, FakeFanout, FakeSink, FakeStore, SinkDown
from tests.unit.flowkit import (
    event,
    make_deps,
    mark_at,
    marks,
    open_btc,
    stored_elsewhere,
    trade,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def validator(name: str) -> Draft202012Validator:
    loaded = [json.loads(f.read_text("utf-8")) for f in sorted(SCHEMAS.glob("*.schema.json"))]
    registry: Registry[Any] = Registry().with_resources(
        [(s["$id"], Resource.from_contents(s)) for s in loaded]
    )
    schema = next(s for s in loaded if s["$id"].endswith("/" + name))
    return Draft202012Validator(schema, registry=registry)


def valid(name: str, document: dict[str, Any]) -> None:
    errors = [e.message for e in validator(name).iter_errors(document)]
    assert errors == [], (name, errors)


def test_every_written_document_matches_its_schema(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    fanout = FakeFanout()
    deps = make_deps(store, sink, clock, fanout, MARKS_FANOUT_BATCH="1")
    open_btc(deps, "acct-a")
    open_btc(deps, "acct-b", tradeId="T-B-1")
    trade(deps, event("fill_btcusdt_long", accountId="acct-a", tradeId="T-X", reduceOnly=True))
    trade(deps, b"%%% not a message %%%")
    marks(deps, mark_at("50000"))  # one holder here, one handed on: a pass and a unit
    raw = as_body(load_event("fill_ethusdt_short"))
    sink.fail_sends = 1
    with pytest.raises(SinkDown):  # the deadletter keeps its alert pending
        process_poison(raw, deps, "trades")
    clock.advance(3600)
    sink.fail_sends = 1
    with pytest.raises(SinkDown):  # the watch keeps its alert pending
        check_stale_marks(make_deps(store, sink, clock))
    run(note_failure(deps, raw, RuntimeError("x"), deps.settings.trades_queue))
    # a fill that decides at this process's copy of the mark, then catches up on a newer
    # one stored meanwhile: a revaluation record
    copying = make_deps(store, sink, clock, MARK_CACHE_SECONDS="1")
    marks(copying, mark_at("60000", "2024-10-01T13:00:00Z"))
    stored_elsewhere(store, "40000", "2024-10-01T13:30:00.000Z")
    clock.advance(0.5)
    open_btc(copying, "acct-c", tradeId="T-C-1")

    kinds = {"trade": "trade-record", "transfer": "transfer-record"}
    kinds |= {"rejection": "rejection-record", "revaluation": "revaluation-record"}
    kinds |= {"sentMarker": "sent-marker", "passSent": "pass-sent"}
    seen = set()
    for doc in store.accounts.values():
        valid("account.schema.json", doc)
        assert doc["pending"]
    for doc in store.records.values():
        valid(f"{kinds[doc['type']]}.schema.json", doc)
        seen.add(doc["type"])
    assert seen == set(kinds)
    for doc in store.marks.values():
        valid("mark.schema.json", doc)
    for doc in store.watches.values():
        valid("stale-watch.schema.json", doc)
        assert doc["pending"]
    for doc in store.passes.values():
        valid("mark-pass.schema.json", doc)
    for doc in store.deadletters.values():
        valid("deadletter.schema.json", doc)
        assert doc["pending"]
    for doc in store.failures.values():
        valid("failure.schema.json", doc)
    assert fanout.texts
    for text in fanout.texts:
        valid("mark-fanout-unit.message.schema.json", json.loads(text))
        assert base64.b64decode(base64.b64encode(text.encode())).decode() == text
