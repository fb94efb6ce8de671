"""The orders queue's wiring, over fakes: the order-decisions sink (its queue text), the
dependencies bootstrap builds, the entry points of on_order / on_order_poison, and the
poison flow's routing of an orders body."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError

from handlers import bootstrap, entrypoints, flows, observability
from handlers.adapters.queues import QueueDecisionSink, encode_decision
from handlers.core.contracts import OrderDecision, Reason
from handlers.flows import Deps
from handlers.settings import load_settings
from tests.aio import process_poison, run
from tests.events import as_body

from .fakes import Capture, FakeClock, FakeDecisions, FakeSink, FakeStore, SinkDown
from .fakes import FakeContext as Ctx
from .fakes import FakeMessage as Message
from .flowkit import ACCT, digest, event, make_deps, trade

STORAGE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
ORDER: dict[str, Any] = {
    "type": "ORDER",
    "schemaVersion": 1,
    "orderId": "O-1",
    "accountId": ACCT,
    "symbol": "BTCUSDT",
    "side": "BUY",
    "orderType": "LIMIT",
    "price": "60000",
    "quantity": "0.010",
    "leverage": 10,
    "marginMode": "CROSS",
    "positionSide": "BOTH",
    "reduceOnly": False,
    "submittedAt": "2024-10-01T12:00:00Z",
}


def decision(order_id: str = "O-1", verdict: str = "APPROVED") -> OrderDecision:
    reasons = () if verdict == "APPROVED" else (Reason(code="RATE_LIMITED", message="busy"),)
    return OrderDecision(
        decisionId=("a" if verdict == "APPROVED" else "b") * 64,
        orderId=order_id,
        accountId=ACCT,
        symbol="BTCUSDT",
        decision=verdict,  # type: ignore[arg-type]
        reasons=reasons,
        metrics={"price": "60000", "cost": "60.5"},
        correlationId="corr-1",
        decidedAt=datetime(2024, 10, 1, 12, 0, tzinfo=UTC),
    )


# -- the sink ------------------------------------------------------------------------


def test_a_decision_is_base64_of_its_compact_json() -> None:
    d = decision()
    text = encode_decision(d)
    raw = base64.b64decode(text, validate=True)
    assert raw == d.model_dump_json().encode("utf-8")
    assert b" " not in raw  # compact, as alerts
    body = json.loads(raw)
    assert body["type"] == "ORDER_DECISION"
    assert body["schemaVersion"] == 1
    assert body["decidedAt"] == "2024-10-01T12:00:00.000Z"
    assert body["metrics"] == {"price": "60000", "cost": "60.5"}
    assert OrderDecision.model_validate_json(raw, strict=False) == d


class RecordingQueue:
    """What the sink uses of the asyncio QueueClient."""

    def __init__(self, exists: bool = False) -> None:
        self.exists = exists
        self.creates = 0
        self.messages: list[str] = []
        self.fail = False

    async def create_queue(self) -> None:
        self.creates += 1
        if self.exists:
            raise ResourceExistsError("QueueAlreadyExists")
        self.exists = True

    async def send_message(self, content: str) -> None:
        if self.fail:
            raise SinkDown("queue down")
        self.messages.append(content)

    async def close(self) -> None:
        pass


def sink_over(queue: RecordingQueue) -> QueueDecisionSink:
    sink = QueueDecisionSink(STORAGE, "AzureWebJobsStorage", "od-1")
    sink._client = queue  # type: ignore[assignment]
    return sink


def test_the_sink_sends_one_message_per_decision_and_creates_the_queue_once() -> None:
    queue = RecordingQueue()

    async def go() -> None:
        sink = sink_over(queue)
        await sink.send([decision("O-1"), decision("O-2", "REJECTED")])
        await sink.send([decision("O-3")])
        await sink.send([])
        await sink._service.close()

    run(go())
    assert queue.creates == 1
    assert [json.loads(base64.b64decode(m))["orderId"] for m in queue.messages] == [
        "O-1",
        "O-2",
        "O-3",
    ]
    assert queue.messages[0] == encode_decision(decision("O-1"))


def test_the_sink_takes_an_existing_queue_and_raises_what_the_queue_raises() -> None:
    queue = RecordingQueue(exists=True)

    async def go() -> None:
        sink = sink_over(queue)
        await sink.send([decision()])
        queue.fail = True
        with pytest.raises(SinkDown):
            await sink.send([decision("O-2")])
        await sink._service.close()

    run(go())
    assert len(queue.messages) == 1


def test_nothing_to_send_touches_no_queue() -> None:
    queue = RecordingQueue()

    async def go() -> None:
        sink = sink_over(queue)
        await sink.send(())
        await sink._service.close()

    run(go())
    assert (queue.creates, queue.messages) == (0, [])


def test_the_fake_keeps_what_the_sink_would_write_and_fails_on_demand() -> None:
    fake = FakeDecisions()
    fake.fail_sends = 1
    with pytest.raises(SinkDown):
        run(fake.send([decision()]))
    run(fake.send([decision("O-1"), decision("O-2", "REJECTED")]))
    assert [d.orderId for d in fake.sent] == ["O-1", "O-2"]
    assert [d.decision for d in fake.of_order("O-2")] == ["REJECTED"]
    assert fake.ids == ["a" * 64, "b" * 64]


def test_make_deps_gives_a_decisions_fake(store: FakeStore, sink: FakeSink) -> None:
    mine = FakeDecisions()
    assert make_deps(store, sink, FakeClock(), decisions=mine).decisions is mine
    assert isinstance(make_deps(store, sink, FakeClock()).decisions, FakeDecisions)


# -- bootstrap -----------------------------------------------------------------------


def test_bootstrap_builds_the_decisions_sink_on_its_setting() -> None:
    settings = load_settings(
        {
            **STORAGE,
            "COSMOS_ENDPOINT": "https://127.0.0.1:8081/",
            "COSMOS_KEY": "a2V5",
            "ORDER_DECISIONS_QUEUE": "od-7",
        }
    )
    catalog = object()

    async def go() -> Deps:
        built = bootstrap._build(settings, catalog)  # type: ignore[arg-type]
        await bootstrap._close_clients(built)
        return built

    built = run(go())
    assert isinstance(built.decisions, QueueDecisionSink)
    assert built.decisions._client.queue_name == "od-7"


# -- the entry points ------------------------------------------------------------------


@pytest.fixture
def app_deps(monkeypatch: pytest.MonkeyPatch) -> Deps:
    clock = FakeClock()
    made = make_deps(FakeStore(), FakeSink(), clock, ORDERS_QUEUE="or-9")
    monkeypatch.setattr(bootstrap, "deps", lambda: made)
    return made


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    observability.reset()
    handler = Capture()
    logger = logging.getLogger("tradeguard")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        observability.reset()


def test_order_runs_the_orders_flow_on_the_orders_queue(
    app_deps: Deps, monkeypatch: pytest.MonkeyPatch, records: list[logging.LogRecord]
) -> None:
    calls: list[tuple[bytes, Deps, str | None, int]] = []

    async def flow(raw: bytes, deps: Deps, queue: str | None = None, dequeue: int = 1) -> Any:
        calls.append((raw, deps, queue, dequeue))
        return flows.Outcome("APPLIED", "@order:O-1", ACCT)

    monkeypatch.setattr(flows, "process_order_message", flow)
    body = as_body(ORDER)
    run(entrypoints.order(Message("m-1", 2, body), Ctx("inv-1")))
    assert calls == [(body, app_deps, "or-9", 2)]
    (line,) = [r for r in records if " outcome=" in r.getMessage()]
    assert line.getMessage().startswith("on_order message=m-1 dequeueCount=2 outcome=APPLIED")
    assert line.__dict__["functionName"] == "on_order"


def test_a_failing_order_is_noted_and_raised_for_the_host(
    app_deps: Deps, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def flow(raw: bytes, deps: Deps, queue: str | None = None, dequeue: int = 1) -> Any:
        raise RuntimeError("cosmos down")

    monkeypatch.setattr(flows, "process_order_message", flow)
    body = as_body(ORDER)
    with pytest.raises(RuntimeError, match="cosmos down"):
        run(entrypoints.order(Message("m-1", 1, body)))
    store = app_deps.store
    assert isinstance(store, FakeStore)
    assert run(store.read_failure("or-9", digest(body))) == "RuntimeError: cosmos down"


@pytest.mark.parametrize(
    ("source", "function"),
    [
        ("orders", "on_order_poison"),
        ("trades", "on_trade_poison"),
        ("marks", "on_mark_poison"),
        ("marks-fanout", "on_mark_fanout_poison"),
    ],
)
def test_poison_runs_the_poison_flow_for_its_source_under_its_function_name(
    app_deps: Deps,
    monkeypatch: pytest.MonkeyPatch,
    records: list[logging.LogRecord],
    source: entrypoints.Source,
    function: str,
) -> None:
    calls: list[str] = []

    async def flow(raw: bytes, deps: Deps, queue: str, dequeue: int = 1) -> list[flows.Outcome]:
        calls.append(queue)
        return [flows.Outcome("DEADLETTERED", digest(raw))]

    monkeypatch.setattr(flows, "process_poison", flow)
    run(entrypoints.poison(Message("m-1", 1, b"{}"), source))
    settings = app_deps.settings
    queues = {
        "orders": settings.orders_queue,
        "trades": settings.trades_queue,
        "marks": settings.marks_queue,
        "marks-fanout": settings.marks_fanout_queue,
    }
    assert calls == [queues[source]]
    (line,) = [r for r in records if " outcome=" in r.getMessage()]
    assert line.__dict__["functionName"] == function


# -- the poison flow on an orders body -----------------------------------------------


def test_a_poisoned_order_is_dead_lettered_under_the_orders_queue(
    deps: Deps, store: FakeStore, sink: FakeSink, decisions: FakeDecisions
) -> None:
    raw = as_body(ORDER)
    outcome = process_poison(raw, deps, "orders")
    assert (outcome.kind, outcome.account_id) == ("DEADLETTERED", ACCT)
    letter = store.deadletters[("orders", digest(raw))]
    assert letter["queue"] == "orders"
    assert letter["rawBody"] == raw.decode()
    assert [a.type for a in sink.sent] == ["POISON_MESSAGE"]
    assert decisions.sent == []  # never decided from the poison queue
    assert store.accounts == {}

    again = process_poison(raw, deps, "orders")
    assert again.kind == "DEADLETTERED"
    assert store.deadletters[("orders", digest(raw))]["count"] == 2
    assert len(sink.of_type("POISON_MESSAGE")) == 1


def test_a_poisoned_unreadable_orders_body_is_dead_lettered(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    raw = b"%%% not a message %%%"
    outcome = process_poison(raw, deps, "orders")
    assert (outcome.kind, outcome.source_id, outcome.account_id) == (
        "DEADLETTERED",
        digest(raw),
        None,
    )
    assert ("orders", digest(raw)) in store.deadletters


def test_a_poisoned_orders_body_whose_rejection_exists_is_a_duplicate(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    raw = b"%%% not a message %%%"
    assert trade(deps, raw).kind == "REJECTED"  # its rejection:<digest> exists
    outcome = process_poison(raw, deps, "orders")
    assert outcome.kind == "DUPLICATE"
    assert store.deadletters == {}
    assert [a.type for a in sink.sent] == ["TRADE_REJECTED"]


def test_a_fill_poisoned_from_the_orders_queue_is_not_completed_as_a_trade(
    deps: Deps, store: FakeStore
) -> None:
    """The orders queue's poison path never runs the trades flow's completion, whatever
    the body's type."""
    raw = as_body(event("fill_btcusdt_long"))
    assert process_poison(raw, deps, "orders").kind == "DEADLETTERED"
    assert ("orders", digest(raw)) in store.deadletters


def test_the_poison_flow_follows_the_configured_orders_queue(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    deps = make_deps(store, sink, clock, ORDERS_QUEUE="or-3")
    raw = as_body(event("fill_btcusdt_long"))
    assert process_poison(raw, deps, "or-3").kind == "DEADLETTERED"
    assert ("or-3", digest(raw)) in store.deadletters
