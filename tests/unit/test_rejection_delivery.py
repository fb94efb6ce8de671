"""Delivery of stateless rejections: the record is the idempotency key; copies never
double-send; a retry after a crash between the record and the send re-sends the same id."""

from __future__ import annotations

from typing import Any

import pytest

from handlers.core.catalog import load_catalog
from handlers.flows import Deps
from handlers.settings import load_settings
from tests.aio import process_trade_message
from tests.events import as_body, load_event

from .fakes import FakeClock, FakeSink, FakeStore, SinkDown


def deps(store: FakeStore, sink: FakeSink, clock: FakeClock) -> Deps:
    settings = load_settings({})
    return Deps(
        settings=settings,
        catalog=load_catalog(settings.instruments_file),
        store=store,  # type: ignore[arg-type]
        sink=sink,  # type: ignore[arg-type]
        clock=clock,
        sleep=clock.sleep,
    )


def bad_fill() -> bytes:
    event: dict[str, Any] = dict(load_event("fill_btcusdt_long"))
    event["price"] = "64000.05"  # PRICE_TICK
    return as_body(event)


def test_copies_of_a_rejected_message_send_one_alert(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    d = deps(store, sink, clock)
    body = bad_fill()
    outcomes = [process_trade_message(body, d).kind for _ in range(3)]
    assert outcomes == ["REJECTED", "DUPLICATE", "DUPLICATE"]
    assert len(sink.ids) == 1


def test_a_retry_after_the_send_failed_resends_the_same_alert(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    d = deps(store, sink, clock)
    body = bad_fill()
    sink.fail_sends = 1
    with pytest.raises(SinkDown):
        process_trade_message(body, d)
    assert process_trade_message(body, d, dequeue_count=1).alerts == ()  # a copy: nothing
    retried = process_trade_message(body, d, dequeue_count=2)  # the failed one, retried
    assert retried.kind == "DUPLICATE" and len(retried.alerts) == 1
    assert len(sink.ids) == 1
