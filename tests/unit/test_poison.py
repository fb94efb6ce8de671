"""The poison flow (handlers.flows.poison) over in-memory fakes."""

from __future__ import annotations

import pytest

from handlers.core.alerts import alert_id
from handlers.errors import UnreadableDocument
from handlers.flows import Deps, note_failure
from tests.aio import process_poison, run
from tests.events import as_body, load_event
from tests.unit.fakes import FakeClock, FakeSink, FakeStore, SinkDown
from tests.unit.flowkit import (
    ACCT,
    FILL_ID,
    MARK_ID,
    digest,
    event,
    funded,
    make_deps,
    mark_at,
    marks,
    trade,
)


def test_poison_deadletters_once_and_counts_repeats(
    deps: Deps, store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    raw = as_body(load_event("fill_btcusdt_long"))
    run(note_failure(deps, raw, RuntimeError("cosmos down"), "trades"))
    outcome = process_poison(raw, deps, "trades")
    assert (outcome.kind, outcome.source_id, outcome.account_id) == ("DEADLETTERED", FILL_ID, ACCT)
    d = digest(raw)
    letter = store.deadletters[("trades", d)]
    assert letter["id"] == d
    assert letter["queue"] == "trades"
    assert letter["type"] == "deadletter"
    assert letter["schemaVersion"] == 1
    assert letter["count"] == 1
    assert letter["bodyDigest"] == d
    assert letter["rawBody"] == raw.decode()
    assert letter["accountId"] == ACCT
    assert letter["sourceId"] == FILL_ID
    assert letter["lastError"] == "RuntimeError: cosmos down"
    [alert] = sink.sent
    assert alert.type == "POISON_MESSAGE"
    assert alert.severity == "CRITICAL"
    assert alert.alertId == alert_id(FILL_ID, "POISON_MESSAGE", ACCT, None)

    clock.advance(60)
    again = process_poison(raw, deps, "trades")
    assert again.kind == "DEADLETTERED"
    assert store.deadletters[("trades", d)]["count"] == 2
    assert store.deadletters[("trades", d)]["lastSeen"] == "2024-10-01T14:01:00.000Z"
    assert store.deadletters[("trades", d)]["firstSeen"] == "2024-10-01T14:00:00.000Z"
    assert len(sink.of_type("POISON_MESSAGE")) == 1
    assert store.accounts == {}


def test_poison_keeps_at_most_8_kib_of_the_body(deps: Deps, store: FakeStore) -> None:
    raw = b"x" * 20_000
    process_poison(raw, deps, "trades")
    assert len(store.deadletters[("trades", digest(raw))]["rawBody"]) == 8192


def test_poison_of_an_applied_event_is_a_duplicate(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    funded(deps)
    trade(deps, load_event("fill_btcusdt_long"))
    outcome = process_poison(as_body(load_event("fill_btcusdt_long")), deps, "trades")
    assert outcome.kind == "DUPLICATE"
    assert store.deadletters == {}
    assert sink.sent == []


def test_poison_completes_an_applied_event_whose_record_is_missing(
    deps: Deps, store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    sink.fail_sends = 1
    with pytest.raises(SinkDown):
        trade(deps, load_event("fill_btcusdt_long"))
    clock.advance(600)
    outcome = process_poison(as_body(load_event("fill_btcusdt_long")), deps, "trades")
    assert outcome.kind == "DUPLICATE"
    assert store.deadletters == {}
    assert (ACCT, FILL_ID) in store.records
    assert {a.type for a in sink.sent} == {"INSUFFICIENT_MARGIN", "LIQUIDATION_RISK"}


def test_poison_of_a_rejected_event_is_a_duplicate(deps: Deps, store: FakeStore) -> None:
    body = as_body(event("fill_btcusdt_long", price="60000.05"))
    assert trade(deps, body).kind == "REJECTED"
    assert process_poison(body, deps, "trades").kind == "DUPLICATE"
    assert store.deadletters == {}


def test_poison_of_an_already_rejected_malformed_body_is_a_duplicate(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    raw = b"%%% not a message %%%"
    assert trade(deps, raw).kind == "REJECTED"
    outcome = process_poison(raw, deps, "trades")
    assert outcome.kind == "DUPLICATE"
    assert store.deadletters == {}
    assert [a.type for a in sink.sent] == ["TRADE_REJECTED"]


def test_poison_with_an_unreadable_account_is_deadlettered(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    funded(deps)
    store.accounts[ACCT]["wallets"] = "broken"
    raw = as_body(load_event("fill_btcusdt_long"))
    assert process_poison(raw, deps, "trades").kind == "DEADLETTERED"
    assert store.deadletters[("trades", digest(raw))]["count"] == 1
    assert store.accounts[ACCT]["wallets"] == "broken"
    assert [a.type for a in sink.sent] == ["POISON_MESSAGE"]


def test_poison_of_a_mark_uses_the_mark_id(deps: Deps, store: FakeStore, sink: FakeSink) -> None:
    """A MARK that cannot be applied (here a negative price) and whose rejection was never
    recorded is dead-lettered under its mark id (a MARK that can be applied is applied:
    test_marks_under_load)."""
    raw = as_body(event("mark_btcusdt", markPrice="-1"))
    outcome = process_poison(raw, deps, "marks")
    assert outcome.source_id == MARK_ID
    letter = store.deadletters[("marks", digest(raw))]
    assert letter["sourceId"] == MARK_ID
    assert letter["accountId"] is None
    assert sink.sent[0].alertId == alert_id(MARK_ID, "POISON_MESSAGE", None, None)


def test_poison_of_an_unattributable_body_uses_the_digest(deps: Deps, store: FakeStore) -> None:
    raw = as_body(event("fill_btcusdt_long", accountId="no spaces allowed"))
    outcome = process_poison(raw, deps, "trades")
    assert (outcome.source_id, outcome.account_id) == (digest(raw), None)


def test_a_rejection_whose_alert_failed_every_try_is_alerted_by_the_poison_path(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    """The rejection record (the claim) exists from the first try, but the alerts queue was
    down for every try: the poison path finds it unmarked and sends the alert, once."""
    body = as_body(event("fill_btcusdt_long", price="60000.05"))  # PRICE_TICK
    sink.fail_sends = 5
    for n in range(1, 6):
        with pytest.raises(SinkDown):
            trade(make_deps(store, sink, clock), body, dequeue_count=n)
    outcome = process_poison(body, make_deps(store, sink, clock), "trades")
    assert (outcome.kind, outcome.detail) == ("DUPLICATE", "rejection alert re-sent")
    assert [a.type for a in sink.sent] == ["TRADE_REJECTED"]
    assert store.deadletters == {}
    again = process_poison(body, make_deps(store, sink, clock), "trades")
    assert (again.kind, again.detail) == ("DUPLICATE", "rejection exists")
    assert len(sink.sent) == 1


def test_a_poisoned_mark_that_meets_an_unreadable_stored_mark_is_dead_lettered(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    marks(deps, mark_at("60000", "2024-10-01T12:00:00Z"))
    store.marks["BTCUSDT"]["timestamp"] = "yesterday"  # a stored document it cannot read
    raw = as_body(mark_at("61000"))
    with pytest.raises(UnreadableDocument):
        marks(deps, raw)
    outcome = process_poison(raw, deps, "marks")
    assert outcome.kind == "DEADLETTERED"
    letter = store.deadletters[("marks", digest(raw))]
    assert letter["lastError"].startswith("UnreadableDocument")
    assert [a.type for a in sink.sent] == ["POISON_MESSAGE"]
    assert store.marks["BTCUSDT"]["timestamp"] == "yesterday"  # never overwritten
