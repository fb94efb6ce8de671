"""The function bodies' logs carry the invocation's ids (handlers.observability through
handlers.entrypoints, over fakes): the outcome line, the service's own records, failures."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from handlers import bootstrap, entrypoints, observability
from handlers.core.catalog import load_catalog
from handlers.flows import Deps
from handlers.settings import load_settings
from tests import aio
from tests.events import as_body, load_event

from .fakes import Capture, FakeClock, FakeSink, FakeStore
from .fakes import FakeContext as Ctx
from .fakes import FakeMessage as Message


@pytest.fixture
def deps(monkeypatch: pytest.MonkeyPatch) -> Deps:
    settings = load_settings({})
    clock = FakeClock()
    made = Deps(
        settings=settings,
        catalog=load_catalog(settings.instruments_file),
        store=FakeStore(),
        sink=FakeSink(),
        clock=clock,
        sleep=clock.sleep,
    )
    monkeypatch.setattr(bootstrap, "deps", lambda: made)
    return made


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    observability.reset()
    handler = Capture()
    loggers = [logging.getLogger(name) for name in ("tradeguard", "handlers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
        observability.reset()


def ids(record: logging.LogRecord) -> dict[str, Any]:
    return {k: record.__dict__[k] for k in observability.FIELDS if k in record.__dict__}


def outcome_lines(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.name == "tradeguard" and " outcome=" in r.getMessage()]


def test_an_applied_fill_logs_every_id(deps: Deps, records: list[logging.LogRecord]) -> None:
    aio.run(entrypoints.trade(Message("m-1", 1, as_body(load_event("transfer_deposit_usdt")))))
    records.clear()
    fill = load_event("fill_btcusdt_long")
    aio.run(entrypoints.trade(Message("m-2", 1, as_body(fill)), Ctx("inv-42")))
    (line,) = outcome_lines(records)
    assert "outcome=APPLIED" in line.getMessage()
    assert ids(line) == {
        "invocationId": "inv-42",
        "functionName": "on_trade",
        "messageId": "m-2",
        "dequeueCount": 1,
        "eventId": "T-BTC-0001",
        "accountId": "acct-0001",
        "correlationId": "corr-btc-0001",
    }
    # Every record of the invocation (the service's and the sink's too) has the same ids.
    assert records and all(ids(r).get("invocationId") == "inv-42" for r in records)
    assert all(ids(r).get("eventId") == "T-BTC-0001" for r in records)


def test_a_rejection_logs_the_rejections_source(
    deps: Deps, records: list[logging.LogRecord]
) -> None:
    bad = {**load_event("fill_btcusdt_long"), "tradeId": "T-BAD-1", "side": "SIDEWAYS"}
    aio.run(entrypoints.trade(Message("m-3", 1, as_body(bad)), Ctx("inv-43")))
    (line,) = outcome_lines(records)
    assert "outcome=REJECTED" in line.getMessage()
    assert ids(line)["eventId"] == "T-BAD-1"
    assert ids(line)["accountId"] == "acct-0001"
    assert ids(line)["correlationId"] == "corr-btc-0001"


def test_a_failure_logs_the_bodys_ids(deps: Deps, records: list[logging.LogRecord]) -> None:
    assert isinstance(deps.store, FakeStore)
    deps.store.accounts["acct-broken"] = {
        "id": "@account",
        "accountId": "acct-broken",
        "schemaVersion": 99,
        "_etag": '"e"',
    }
    broken = {**load_event("fill_btcusdt_long"), "accountId": "acct-broken"}
    with pytest.raises(Exception):
        aio.run(entrypoints.trade(Message("m-4", 3, as_body(broken)), Ctx("inv-44")))
    (failed,) = [r for r in records if r.name == "tradeguard" and " failed: " in r.getMessage()]
    assert failed.levelno == logging.WARNING
    assert ids(failed) == {
        "invocationId": "inv-44",
        "functionName": "on_trade",
        "messageId": "m-4",
        "dequeueCount": 3,
        "eventId": "T-BTC-0001",
        "accountId": "acct-broken",
        "correlationId": "corr-btc-0001",
    }


def test_each_mark_of_a_batch_is_its_own_event(
    deps: Deps, records: list[logging.LogRecord]
) -> None:
    aio.run(entrypoints.mark(Message("m-5", 1, as_body(load_event("marks_batch"))), Ctx("i-5")))
    lines = outcome_lines(records)
    assert len(lines) == len(load_event("marks_batch")["marks"])
    assert len({ids(r)["eventId"] for r in lines}) == len(lines)
    assert all("@" in ids(r)["eventId"] and "accountId" not in ids(r) for r in lines)


def test_without_a_context_there_is_no_invocation_id(
    deps: Deps, records: list[logging.LogRecord]
) -> None:
    aio.run(entrypoints.trade(Message("m-6", 1, as_body(load_event("transfer_deposit_usdt")))))
    (line,) = outcome_lines(records)
    assert "invocationId" not in ids(line)
    assert ids(line)["functionName"] == "on_trade"


def test_no_record_outlives_its_invocation(deps: Deps, records: list[logging.LogRecord]) -> None:
    aio.run(
        entrypoints.trade(Message("m-7", 1, as_body(load_event("fill_btcusdt_long"))), Ctx("x"))
    )
    logging.getLogger("tradeguard").info("after")
    assert ids(records[-1]) == {}
