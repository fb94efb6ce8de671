"""Every document the flows write, and the fan-out unit they send, matches its JSON Schema
in schemas/ (the shapes users and dashboards rely on); so do the orders queue's messages,
the ORDER_DECISION, the account document with its order fields and the order records, as
the mapping writes them; and schemas/ is what the models generate."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from handlers.adapters.mapping import account_to_document, record_to_document
from handlers.core.catalog import Catalog
from handlers.core.contracts import OrderDecision, validate_order_message
from handlers.core.documents import AccountDoc, OrderEventRecord, OrderRecord
from handlers.core.orders import OpenOrder
from handlers.core.state import Ledger
from handlers.flows import note_failure
from handlers.schemas import main as schemas_main
from tests.aio import check_stale_marks, process_poison, run
from tests.events import as_body, load_event
from tests.unit.builders import deposit, valued
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


def invalid(name: str, document: dict[str, Any]) -> None:
    assert list(validator(name).iter_errors(document)), (name, document)


def test_the_committed_schemas_are_what_the_models_generate() -> None:
    assert schemas_main(["--check"]) == 0


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


# --- the orders queue ----------------------------------------------------------------------

AT = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
ORDER = {
    "type": "ORDER",
    "schemaVersion": 1,
    "orderId": "O-1",
    "accountId": "acct-o",
    "symbol": "BTCUSDT",
    "side": "BUY",
    "orderType": "LIMIT",
    "quantity": "1",
    "price": "9253.3",
    "leverage": 20,
    "marginMode": "CROSS",
    "positionSide": "BOTH",
    "reduceOnly": False,
    "submittedAt": "2026-12-03T09:30:00.125+01:00",
    "correlationId": "corr-1",
}
ORDER_DONE = {
    "type": "ORDER_DONE",
    "schemaVersion": 1,
    "orderId": "O-1",
    "accountId": "acct-o",
    "status": "CANCELED",
    "occurredAt": "2026-12-03T09:31:00Z",
}
CONTROL = {
    "type": "ACCOUNT_CONTROL",
    "schemaVersion": 1,
    "controlId": "C-1",
    "accountId": "acct-o",
    "tradingState": "REDUCING",
    "reason": "risk desk",
    "occurredAt": "2026-12-03T09:29:00.5Z",
}


def decision(verdict: str = "APPROVED", **changes: Any) -> OrderDecision:
    text = json.dumps(["acct-o", "O-1"], separators=(",", ":"))
    fields: dict[str, Any] = {
        "decisionId": hashlib.sha256(text.encode()).hexdigest(),
        "orderId": "O-1",
        "accountId": "acct-o",
        "symbol": "BTCUSDT",
        "decision": verdict,
        "metrics": {"markPrice": "9259.84", "price": "9253.3", "cost": "462.66"},
        "correlationId": "corr-1",
        "decidedAt": AT,
    }
    return OrderDecision.model_validate(fields | changes, strict=False)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("order.schema.json", ORDER),
        ("order.schema.json", {**ORDER, "orderType": "MARKET", "price": None}),
        (
            "order.schema.json",
            {k: v for k, v in ORDER.items() if k != "price"} | {"orderType": "MARKET"},
        ),
        ("order.schema.json", {**ORDER, "$AzureWebJobsParentId": "x"}),
        ("order-done.schema.json", ORDER_DONE),
        ("account-control.schema.json", CONTROL),
    ],
)
def test_orders_queue_messages_match_their_schemas(name: str, message: dict[str, Any]) -> None:
    validate_order_message(message)  # the model takes them
    valid(name, message)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("order.schema.json", {**ORDER, "orderType": "MARKET"}),  # a MARKET order has no price
        ("order.schema.json", {k: v for k, v in ORDER.items() if k != "price"}),
        ("order.schema.json", {**ORDER, "price": None}),
        ("order.schema.json", {**ORDER, "schemaVersion": 2}),
        ("order.schema.json", {**ORDER, "timeInForce": "GTC"}),
        ("order-done.schema.json", {**ORDER_DONE, "status": "PARTIALLY_FILLED"}),
        ("account-control.schema.json", {**CONTROL, "tradingState": "PAUSED"}),
        ("account-control.schema.json", {**CONTROL, "reason": "x" * 201}),
    ],
)
def test_orders_queue_messages_the_model_refuses_are_refused(
    name: str, message: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        validate_order_message(message)
    invalid(name, message)


def test_a_fill_carries_an_order_id_from_version_2() -> None:
    fill = load_event("fill_btcusdt_long")
    valid("fill.schema.json", {**fill, "schemaVersion": 2, "orderId": "O-1"})
    valid("fill.schema.json", {**fill, "schemaVersion": 2})
    invalid("fill.schema.json", {**fill, "orderId": "O-1"})  # version 1


def test_order_decisions_match_their_schema() -> None:
    for sent in (
        decision(),
        decision(
            "REJECTED",
            reasons=[{"code": "INSUFFICIENT_MARGIN", "message": "cost 462.66 > 100"}],
            correlationId=None,
        ),
        decision("REJECTED", symbol=None, metrics={}),
    ):
        valid("order-decision.schema.json", sent.model_dump(mode="json"))
    invalid("order-decision.schema.json", {**decision().model_dump(mode="json"), "decision": "OK"})


def _open(order_id: str, symbol: str, reserved: str, order_type: str = "LIMIT") -> OpenOrder:
    return OpenOrder(
        order_id=order_id,
        symbol=symbol,
        side="SELL",
        position_side="SHORT",
        margin_mode="ISOLATED",
        order_type=order_type,  # type: ignore[arg-type]
        price=Decimal("2599.5"),
        leverage=10,
        quantity=Decimal("2"),
        opening_quantity=Decimal("1.5"),
        reserved=Decimal(reserved),
        submitted_at=AT,
    )


def test_account_documents_with_orders_match_the_schema(catalog: Catalog) -> None:
    ledger = deposit(deposit(Ledger(), "1000"), "0.5", "BTC")
    account = AccountDoc(
        "acct-o",
        ledger,
        updated_at=AT,
        trading_state="HALTED",
        trading_state_at=AT - timedelta(minutes=1),
        open_orders=(
            _open("O-1", "ETHUSDT", "260.1"),
            _open("O-2", "BTCUSD_PERP", "0.0004", "MARKET"),
        ),
        order_times=(AT, AT + timedelta(milliseconds=3)),
    )
    doc = json.loads(json.dumps(account_to_document(account, valued(ledger, catalog))))
    valid("account.schema.json", doc)
    assert {a: w["openOrderMargin"] for a, w in doc["wallets"].items()} == {
        "BTC": "0.0004",
        "USDT": "260.1",
    }
    plain = replace(account, trading_state="ACTIVE", trading_state_at=None, open_orders=())
    valid("account.schema.json", account_to_document(plain, valued(ledger, catalog)))
    invalid("account.schema.json", {**doc, "tradingState": "PAUSED"})
    invalid("account.schema.json", {**doc, "orderTimes": ["2026-12-03T09:30:00Z"]})
    broken = json.loads(json.dumps(doc))
    del broken["openOrders"][0]["reserved"]
    invalid("account.schema.json", broken)
    broken = json.loads(json.dumps(doc))
    broken["wallets"]["USDT"]["openOrderMargin"] = 260.1
    invalid("account.schema.json", broken)


def test_order_records_match_their_schemas() -> None:
    done = validate_order_message(ORDER_DONE)
    control = validate_order_message(CONTROL)
    records = [
        OrderRecord("O-1", "acct-o", decision(), (), AT),
        OrderRecord("O-2", "acct-o", decision("REJECTED", orderId="O-2"), (), AT),
        OrderEventRecord(
            "@order-done:O-1",
            "acct-o",
            "orderDone",
            done.model_dump(mode="json", exclude={"type"}),
            (),
            AT,
        ),
        OrderEventRecord(
            "@control:C-1",
            "acct-o",
            "control",
            control.model_dump(mode="json", exclude={"type"}),
            (),
            AT,
        ),
    ]
    kinds = {"order": "order-record", "orderDone": "order-done-record", "control": "control-record"}
    seen = set()
    for record in records:
        doc = json.loads(json.dumps(record_to_document(record)))
        valid(f"{kinds[doc['type']]}.schema.json", doc)
        seen.add(doc["type"])
    assert seen == set(kinds)
    order = record_to_document(records[0])
    invalid("order-record.schema.json", {**order, "id": "O-1"})
    invalid("order-record.schema.json", {**order, "decision": {**order["decision"], "type": "X"}})
    invalid("control-record.schema.json", {**record_to_document(records[3]), "tradingState": "X"})
