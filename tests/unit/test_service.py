"""The service (handlers.service) over in-memory fakes of its ports."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from handlers import service
from handlers.core.alerts import alert_id
from handlers.core.catalog import load_catalog
from handlers.core.decimals import format_decimal
from handlers.core.documents import ACCOUNT_ID, MAX_RECENT_IDS, UNATTRIBUTED
from handlers.errors import StaleAccountState, UnreadableDocument
from handlers.service import (
    MAX_WRITE_ATTEMPTS,
    Deps,
    Outcome,
    note_failure,
)
from handlers.settings import load_settings
from tests.aio import process_mark_message, process_poison, process_trade_message, run
from tests.events import as_body, load_event

from .fakes import FakeClock, FakeSink, FakeStore, SinkDown, StoreDown

ACCT = "acct-0001"
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
FILL_ID = "T-BTC-0001"
MARK_ID = "BTCUSDT@2024-10-01T12:30:00.000Z"


def make_deps(store: FakeStore, sink: FakeSink, clock: FakeClock, **env: str) -> Deps:
    settings = load_settings(env)
    return Deps(
        settings=settings,
        catalog=load_catalog(settings.instruments_file),
        store=store,
        sink=sink,
        clock=clock,
        sleep=clock.sleep,
    )


@pytest.fixture
def deps(store: FakeStore, sink: FakeSink, clock: FakeClock) -> Deps:
    return make_deps(store, sink, clock)


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


# --- FILL / TRANSFER applied ----------------------------------------------------------


def test_fill_is_applied(deps: Deps, store: FakeStore, sink: FakeSink) -> None:
    funded(deps)
    outcome = trade(deps, load_event("fill_btcusdt_long"))
    assert (outcome.kind, outcome.source_id, outcome.account_id) == ("APPLIED", FILL_ID, ACCT)
    assert sink.sent == []  # a plain fill on a funded account raises nothing

    doc = store.account(ACCT)
    assert (doc["id"], doc["accountId"], doc["type"], doc["schemaVersion"]) == (
        ACCOUNT_ID,
        ACCT,
        "account",
        1,
    )
    usdt = doc["wallets"]["USDT"]
    assert usdt["walletBalance"] == "997.6"  # 1000 − fee 2.4
    assert usdt["crossWalletBalance"] == "997.6"
    assert usdt["availableBalance"] == "397.6"  # 997.6 − 6000/10
    assert usdt["totalInitialMargin"] == "600"
    assert usdt["totalMaintMargin"] == "24"
    assert usdt["marginRatio"] == format_decimal(Decimal(24) / Decimal("997.6"))
    assert usdt["riskState"] == "NORMAL"
    assert doc["riskState"] == "NORMAL"
    [position] = doc["positions"]
    assert position["symbol"] == "BTCUSDT"
    assert position["positionSide"] == "BOTH"
    assert position["marginMode"] == "CROSS"
    assert position["quantity"] == "0.1"
    assert position["entryPrice"] == "60000"
    assert position["leverage"] == 10
    assert position["notional"] == "6000"
    assert position["initialMargin"] == "600"
    assert position["maintMargin"] == "24"
    assert position["unrealizedPnl"] == "0"
    assert position["isolatedMargin"] == "0"
    assert position["markPrice"] is None  # no mark yet: the fill price stands in
    assert position["liquidationPrice"] == format_decimal(
        (Decimal("997.6") - 6000) / Decimal("-0.0996")
    )
    assert doc["recentEventIds"] == ["X-DEP-0001", FILL_ID]

    record = store.records[(ACCT, FILL_ID)]
    assert record["type"] == "trade"
    assert record["id"] == FILL_ID
    assert record["accountId"] == ACCT
    assert record["quantity"] == "0.1"
    assert record["price"] == "60000"
    assert record["executedAt"] == "2024-10-01T12:00:00.000Z"
    assert record["alerts"] == []
    assert store.records[(ACCT, "X-DEP-0001")]["type"] == "transfer"


def test_pending_is_cleared_on_the_next_event(deps: Deps, store: FakeStore) -> None:
    funded(deps)
    assert pending_ids(store) == ["X-DEP-0001"]
    trade(deps, load_event("fill_btcusdt_long"))
    assert pending_ids(store) == [FILL_ID]
    trade(deps, load_event("transfer_withdrawal"))
    assert pending_ids(store) == ["X-WDR-0001"]
    assert store.account(ACCT)["wallets"]["USDT"]["walletBalance"] == "897.6"


def test_pending_left_by_another_process_is_cleared_once_its_record_exists(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    funded(make_deps(store, sink, clock))
    clock.advance(601)  # older than PENDING_GRACE (the queue lease)
    trade(make_deps(store, sink, clock), load_event("fill_btcusdt_long"))  # another process
    assert pending_ids(store) == [FILL_ID]


def test_same_fill_twice_is_applied_once(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    deps = make_deps(store, sink, clock, RISK_LARGE_TRADE_NOTIONAL="USDT:5000")
    funded(deps)
    first = trade(deps, load_event("fill_btcusdt_long"))
    assert first.kind == "APPLIED"
    assert [a.type for a in sink.sent] == ["LARGE_TRADE"]
    writes = store.account_writes
    # the same event again, as raw JSON this time (another digest, the same tradeId)
    again = trade(deps, as_body(load_event("fill_btcusdt_long"), base64=False))
    assert (again.kind, again.alerts) == ("DUPLICATE", ())
    # and once more in a fresh process
    clock.advance(1)
    third = trade(make_deps(store, sink, clock), load_event("fill_btcusdt_long"))
    assert third.kind == "DUPLICATE"
    assert [a.type for a in sink.sent] == ["LARGE_TRADE"]
    assert store.account_writes == writes
    doc = store.account(ACCT)
    assert doc["wallets"]["USDT"]["walletBalance"] == "997.6"
    assert doc["positions"][0]["quantity"] == "0.1"


def test_large_trade_alert_identity(store: FakeStore, sink: FakeSink, clock: FakeClock) -> None:
    deps = make_deps(store, sink, clock, RISK_LARGE_TRADE_NOTIONAL="USDT:5000")
    funded(deps)
    trade(deps, load_event("fill_btcusdt_long"))
    [alert] = sink.sent
    assert alert.alertId == alert_id(FILL_ID, "LARGE_TRADE", ACCT, "BTCUSDT:BOTH")
    assert alert.severity == "INFO"
    assert alert.sourceId == FILL_ID
    assert alert.accountId == ACCT
    assert alert.correlationId == "corr-btc-0001"
    assert alert.symbol == "BTCUSDT"
    assert alert.metrics["notional"] == "6000"
    assert store.records[(ACCT, FILL_ID)]["alerts"] == [alert.model_dump(mode="json")]


def test_duplicate_with_missing_record_resends_the_same_alerts(
    deps: Deps, store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    # no deposit: the fill raises INSUFFICIENT_MARGIN and LIQUIDATION_RISK
    sink.fail_sends = 1
    with pytest.raises(SinkDown):
        trade(deps, load_event("fill_btcusdt_long"))
    assert sink.sent == []
    assert (ACCT, FILL_ID) not in store.records  # crashed after the state write
    stored = store.account(ACCT)["pending"][0]["record"]["alerts"]
    assert {a["type"] for a in stored} == {"INSUFFICIENT_MARGIN", "LIQUIDATION_RISK"}

    clock.advance(30)
    outcome = trade(deps, load_event("fill_btcusdt_long"), dequeue_count=2)  # the retry
    assert outcome.kind == "DUPLICATE"
    assert sorted(sink.ids) == sorted(a["alertId"] for a in stored)
    assert sorted(sink.ids) == sorted(
        [
            alert_id(FILL_ID, "INSUFFICIENT_MARGIN", ACCT, "USDT"),
            alert_id(FILL_ID, "LIQUIDATION_RISK", ACCT, "USDT"),
        ]
    )
    assert store.records[(ACCT, FILL_ID)]["alerts"] == stored
    # the position was applied once
    assert store.account(ACCT)["positions"][0]["quantity"] == "0.1"
    # and once the record exists, another copy sends nothing
    sent = len(sink.sent)
    assert trade(deps, load_event("fill_btcusdt_long")).kind == "DUPLICATE"
    assert len(sink.sent) == sent


def test_crash_before_the_record_repeats_identical_alerts(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    deps = make_deps(store, sink, clock)
    store.fail_record_creates = 1
    with pytest.raises(StoreDown):
        trade(deps, load_event("fill_btcusdt_long"))
    first = [a.model_dump(mode="json") for a in sink.sent]
    assert len(first) == 2
    # the host's retry (dequeue count 2) at once, in another process: it repairs
    outcome = trade(make_deps(store, sink, clock), load_event("fill_btcusdt_long"), 2)
    assert (outcome.kind, outcome.detail) == ("DUPLICATE", "record repaired")
    assert [a.model_dump(mode="json") for a in sink.sent] == first + first
    assert (ACCT, FILL_ID) in store.records


def test_a_concurrent_first_copy_does_not_double_send(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    deps = make_deps(store, sink, clock)
    sink.fail_sends = 1
    with pytest.raises(SinkDown):
        trade(deps, load_event("fill_btcusdt_long"))
    # another copy's first delivery within the grace period leaves it to the retry
    copy = trade(make_deps(store, sink, clock), load_event("fill_btcusdt_long"))
    assert (copy.kind, copy.detail) == ("DUPLICATE", "in flight elsewhere")
    assert sink.sent == []
    assert (ACCT, FILL_ID) not in store.records
    retry = trade(deps, load_event("fill_btcusdt_long"), dequeue_count=2)
    assert retry.detail == "record repaired"
    assert len(sink.sent) == 2
    assert (ACCT, FILL_ID) in store.records


def test_transfer_records(deps: Deps, store: FakeStore) -> None:
    funded(deps)
    assert trade(deps, load_event("transfer_withdrawal")).kind == "APPLIED"
    record = store.records[(ACCT, "X-WDR-0001")]
    assert record["type"] == "transfer"
    assert record["amount"] == "-100"
    assert record["reason"] == "WITHDRAWAL"
    assert store.account(ACCT)["wallets"]["USDT"]["walletBalance"] == "900"


@pytest.mark.parametrize("reason", ["FUNDING", "ADJUSTMENT"])
def test_funding_may_take_the_wallet_negative(deps: Deps, store: FakeStore, reason: str) -> None:
    funded(deps, "10")
    t = event("transfer_withdrawal", transferId="X-F-1", amount="-25", reason=reason)
    assert trade(deps, t).kind == "APPLIED"
    assert store.account(ACCT)["wallets"]["USDT"]["walletBalance"] == "-15"


# --- stateless rejections -------------------------------------------------------------


def rejection(store: FakeStore, partition: str, source_id: str) -> dict[str, Any]:
    return store.records[(partition, f"rejection:{source_id}")]


def test_malformed_body(deps: Deps, store: FakeStore, sink: FakeSink) -> None:
    raw = b"\x00\x01 this is not a message"
    outcome = trade(deps, raw)
    d = digest(raw)
    assert (outcome.kind, outcome.source_id, outcome.account_id) == ("REJECTED", d, None)
    record = rejection(store, UNATTRIBUTED, d)
    assert record["id"] == f"rejection:{d}"
    assert record["accountId"] == UNATTRIBUTED
    assert record["type"] == "rejection"
    assert record["sourceId"] == d
    assert record["bodyDigest"] == d
    assert [r["code"] for r in record["reasons"]] == ["MALFORMED"]
    [alert] = sink.sent
    assert alert.type == "TRADE_REJECTED"
    assert alert.severity == "WARNING"
    assert alert.accountId is None
    assert alert.scope is None
    assert alert.sourceId == d
    assert alert.reasons[0].code == "MALFORMED"
    assert alert.alertId == alert_id(d, "TRADE_REJECTED", None, None)
    assert record["alerts"] == [alert.model_dump(mode="json")]
    assert store.accounts == {}


def test_rejected_body_twice_is_rejected_once(deps: Deps, sink: FakeSink) -> None:
    raw = b"not base64!"
    assert trade(deps, raw).kind == "REJECTED"
    assert trade(deps, raw).kind == "DUPLICATE"
    assert len(sink.sent) == 1


@pytest.mark.parametrize(
    "raw",
    [
        as_body({"a": 1})[:-2] + b"==",
        b'{"type":"FILL","tradeId":"T-1","tradeId":"T-1","accountId":"acct-0001"}',
        as_body({"x": [1]}).replace(b"=", b"") + b" ",
    ],
    ids=["bad-base64", "duplicate-key", "unpadded"],
)
def test_undecodable_bodies_are_attributed_to_their_digest(
    deps: Deps, store: FakeStore, sink: FakeSink, raw: bytes
) -> None:
    outcome = trade(deps, raw)
    assert outcome.kind == "REJECTED"
    assert outcome.source_id == digest(raw)
    assert (UNATTRIBUTED, f"rejection:{digest(raw)}") in store.records
    assert sink.sent[0].accountId is None


def test_json_array_is_schema_invalid(deps: Deps, store: FakeStore) -> None:
    raw = as_body([load_event("fill_btcusdt_long")])  # type: ignore[arg-type]
    outcome = trade(deps, raw)
    assert (outcome.kind, outcome.detail) == ("REJECTED", "SCHEMA_INVALID")
    assert outcome.source_id == digest(raw)


def test_schema_invalid_with_well_formed_ids(deps: Deps, store: FakeStore, sink: FakeSink) -> None:
    outcome = trade(deps, event("fill_btcusdt_long", quantity="-0.1"))
    assert (outcome.kind, outcome.detail, outcome.source_id) == (
        "REJECTED",
        "SCHEMA_INVALID",
        FILL_ID,
    )
    record = rejection(store, ACCT, FILL_ID)
    assert record["accountId"] == ACCT
    assert record["reasons"][0]["code"] == "SCHEMA_INVALID"
    [alert] = sink.sent
    assert (alert.accountId, alert.sourceId, alert.correlationId, alert.symbol) == (
        ACCT,
        FILL_ID,
        "corr-btc-0001",
        "BTCUSDT",
    )
    assert alert.alertId == alert_id(FILL_ID, "TRADE_REJECTED", ACCT, None)
    assert store.accounts == {}  # nothing changes in any position or balance


def test_schema_invalid_with_a_bad_trade_id_uses_the_digest(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    raw = as_body(event("fill_btcusdt_long", tradeId="sha256:not-an-id"))
    outcome = trade(deps, raw)
    assert outcome.source_id == digest(raw)
    assert (ACCT, f"rejection:{digest(raw)}") in store.records  # the accountId is well formed
    assert sink.sent[0].accountId == ACCT


def test_schema_invalid_with_a_bad_account_id_is_unattributed(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    raw = as_body(event("fill_btcusdt_long", accountId="acct 0001", side="buy"))
    outcome = trade(deps, raw)
    assert (outcome.source_id, outcome.account_id) == (digest(raw), None)
    assert (UNATTRIBUTED, f"rejection:{digest(raw)}") in store.records
    assert sink.sent[0].accountId is None


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"symbol": "DOGEUSDT"}, "UNKNOWN_SYMBOL"),
        ({"price": "60000.05"}, "PRICE_TICK"),
        ({"quantity": "0.1005"}, "QTY_STEP"),
        ({"quantity": "1001"}, "QTY_BOUNDS"),
        ({"quantity": "0.001", "price": "60000"}, "MIN_NOTIONAL"),
    ],
)
def test_catalog_rejections(
    deps: Deps, store: FakeStore, sink: FakeSink, changes: dict[str, Any], code: str
) -> None:
    outcome = trade(deps, event("fill_btcusdt_long", **changes))
    assert (outcome.kind, outcome.detail, outcome.source_id) == ("REJECTED", code, FILL_ID)
    assert rejection(store, ACCT, FILL_ID)["reasons"][0]["code"] == code
    assert [(a.type, a.reasons[0].code) for a in sink.sent] == [("TRADE_REJECTED", code)]
    assert store.accounts == {}


@pytest.mark.parametrize(
    "changes",
    [
        {"asset": "EUR"},
        {"asset": "usdt"},
        {"amount": "-5"},  # a DEPOSIT must be positive
        {"reason": "WITHDRAWAL", "amount": "5"},  # a WITHDRAWAL negative
    ],
)
def test_transfer_schema_rules(deps: Deps, store: FakeStore, changes: dict[str, Any]) -> None:
    outcome = trade(deps, event("transfer_deposit_usdt", **changes))
    assert (outcome.kind, outcome.detail) == ("REJECTED", "SCHEMA_INVALID")
    assert (ACCT, "rejection:X-DEP-0001") in store.records


def test_a_mark_on_the_trades_queue_is_rejected(deps: Deps, store: FakeStore) -> None:
    outcome = trade(deps, load_event("mark_btcusdt"))
    assert (outcome.kind, outcome.detail) == ("REJECTED", "SCHEMA_INVALID")
    assert store.marks == {}


# --- state-dependent rejections -------------------------------------------------------


def test_state_rejection_is_final(deps: Deps, store: FakeStore, sink: FakeSink) -> None:
    outcome = trade(deps, load_event("transfer_withdrawal"))  # an account with nothing
    assert (outcome.kind, outcome.detail) == ("REJECTED", "INSUFFICIENT_AVAILABLE_BALANCE")
    doc = store.account(ACCT)  # an empty account document was created
    assert doc["recentEventIds"] == ["X-WDR-0001"]
    assert doc["wallets"] == {}
    assert doc["positions"] == []
    record = rejection(store, ACCT, "X-WDR-0001")
    assert record["reasons"][0]["code"] == "INSUFFICIENT_AVAILABLE_BALANCE"
    [alert] = sink.sent
    assert alert.alertId == alert_id("X-WDR-0001", "TRADE_REJECTED", ACCT, None)

    funded(deps)
    again = trade(deps, load_event("transfer_withdrawal"))  # a copy, now affordable
    assert again.kind == "DUPLICATE"
    assert store.account(ACCT)["wallets"]["USDT"]["walletBalance"] == "1000"
    assert len(sink.sent) == 1


def test_withdrawal_is_checked_against_available_balance(deps: Deps, store: FakeStore) -> None:
    funded(deps)
    trade(deps, load_event("fill_btcusdt_long"))  # available 397.6 of 997.6
    too_much = event("transfer_withdrawal", amount="-397.7")
    assert trade(deps, too_much).detail == "INSUFFICIENT_AVAILABLE_BALANCE"
    ok = event("transfer_withdrawal", transferId="X-WDR-0002", amount="-397.6")
    assert trade(deps, ok).kind == "APPLIED"
    assert store.account(ACCT)["wallets"]["USDT"]["availableBalance"] == "0"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"reduceOnly": True}, "REDUCE_ONLY_VIOLATION"),
        ({"positionSide": "LONG"}, "POSITION_SIDE_MISMATCH"),
        ({"marginMode": "ISOLATED"}, "POSITION_SIDE_MISMATCH"),
    ],
)
def test_fill_state_rejections(
    deps: Deps, store: FakeStore, sink: FakeSink, changes: dict[str, Any], code: str
) -> None:
    funded(deps)
    trade(deps, load_event("fill_btcusdt_long"))
    second = event("fill_btcusdt_long", tradeId="T-BTC-0002", **changes)
    outcome = trade(deps, second)
    assert (outcome.kind, outcome.detail) == ("REJECTED", code)
    doc = store.account(ACCT)
    assert "T-BTC-0002" in doc["recentEventIds"]
    assert doc["positions"][0]["quantity"] == "0.1"
    assert (ACCT, "rejection:T-BTC-0002") in store.records
    assert [a.type for a in sink.sent] == ["TRADE_REJECTED"]
    assert trade(deps, second).kind == "DUPLICATE"


# --- concurrency ----------------------------------------------------------------------


def test_etag_conflict_is_retried(deps: Deps, store: FakeStore) -> None:
    funded(deps)
    conflicts = iter([True])

    def fail_once(_doc: Any, _etag: str | None) -> None:
        if next(conflicts, False):
            raise StaleAccountState("412 (injected)")

    store.before_account_write = fail_once
    assert trade(deps, load_event("fill_btcusdt_long")).kind == "APPLIED"
    doc = store.account(ACCT)
    assert doc["wallets"]["USDT"]["walletBalance"] == "997.6"
    assert doc["recentEventIds"] == ["X-DEP-0001", FILL_ID]


def test_concurrent_writer_is_not_lost(deps: Deps, store: FakeStore) -> None:
    funded(deps)

    # Another process (its own account locks) writes between our read and our write.
    other_process = dataclasses.replace(deps, account_locks=service._AccountLocks())

    async def concurrent_deposit(_doc: Any, _etag: str | None) -> None:
        store.before_account_write = None
        other = event("transfer_deposit_usdt", transferId="X-DEP-0002", amount="500")
        outcome = await service.process_trade_message(as_body(other), other_process)
        assert outcome.kind == "APPLIED"  # lands between our read and write

    store.before_account_write = concurrent_deposit
    assert trade(deps, load_event("fill_btcusdt_long")).kind == "APPLIED"
    doc = store.account(ACCT)
    assert doc["wallets"]["USDT"]["walletBalance"] == "1497.6"
    assert doc["recentEventIds"] == ["X-DEP-0001", "X-DEP-0002", FILL_ID]
    assert doc["positions"][0]["quantity"] == "0.1"


def test_endless_conflicts_fail_the_message(deps: Deps, store: FakeStore, sink: FakeSink) -> None:
    funded(deps)
    attempts: list[str | None] = []

    def always(_doc: Any, etag: str | None) -> None:
        attempts.append(etag)
        raise StaleAccountState("412 (injected)")

    store.before_account_write = always
    with pytest.raises(StaleAccountState):
        trade(deps, load_event("fill_btcusdt_long"))
    assert len(attempts) == MAX_WRITE_ATTEMPTS
    assert (ACCT, FILL_ID) not in store.records
    assert sink.sent == []


def test_unreadable_account_is_never_overwritten(deps: Deps, store: FakeStore) -> None:
    funded(deps)
    store.accounts[ACCT]["schemaVersion"] = 2
    before = json.dumps(store.accounts[ACCT], sort_keys=True)
    with pytest.raises(UnreadableDocument):
        trade(deps, load_event("fill_btcusdt_long"))
    assert json.dumps(store.accounts[ACCT], sort_keys=True) == before


# --- poison ---------------------------------------------------------------------------


def test_poison_deadletters_once_and_counts_repeats(
    deps: Deps, store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    raw = as_body(load_event("fill_btcusdt_long"))
    note_failure(deps, raw, RuntimeError("cosmos down"))
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
    raw = as_body(load_event("mark_btcusdt"))
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


# --- MARK / MARKS ---------------------------------------------------------------------


def mark_at(
    price: str, timestamp: str = "2024-10-01T12:30:00Z", symbol: str = "BTCUSDT"
) -> dict[str, Any]:
    return event("mark_btcusdt", symbol=symbol, markPrice=price, timestamp=timestamp)


def test_mark_is_stored(deps: Deps, store: FakeStore, sink: FakeSink) -> None:
    [outcome] = marks(deps, load_event("mark_btcusdt"))
    assert (outcome.kind, outcome.source_id) == ("APPLIED", MARK_ID)
    doc = store.marks["BTCUSDT"]
    assert doc["symbol"] == "BTCUSDT"
    assert doc["type"] == "mark"
    assert doc["schemaVersion"] == 1
    assert doc["markPrice"] == "60500.5"
    assert doc["timestamp"] == "2024-10-01T12:30:00.000Z"
    assert doc["markId"] == MARK_ID
    assert sink.sent == []


@pytest.mark.parametrize(
    ("timestamp", "kind", "price"),
    [
        ("2024-10-01T12:29:59.999Z", "IGNORED", "60500.5"),
        ("2024-10-01T12:30:00.000Z", "IGNORED", "60500.5"),  # equal is not newer
        ("2024-10-01T14:30:00.0001+02:00", "IGNORED", "60500.5"),  # the same instant in UTC
        ("2024-10-01T12:30:00.001Z", "APPLIED", "1"),
    ],
)
def test_older_marks_are_ignored(
    deps: Deps, store: FakeStore, timestamp: str, kind: str, price: str
) -> None:
    marks(deps, load_event("mark_btcusdt"))
    [outcome] = marks(deps, mark_at("1", timestamp))
    assert outcome.kind == kind
    assert store.marks["BTCUSDT"]["markPrice"] == price


def test_mark_of_an_unknown_symbol_is_rejected(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    [outcome] = marks(deps, mark_at("0.1", symbol="DOGEUSDT"))
    source = "DOGEUSDT@2024-10-01T12:30:00.000Z"
    assert (outcome.kind, outcome.detail, outcome.source_id) == (
        "REJECTED",
        "UNKNOWN_SYMBOL",
        source,
    )
    assert rejection(store, UNATTRIBUTED, source)["reasons"][0]["code"] == "UNKNOWN_SYMBOL"
    [alert] = sink.sent
    assert (alert.type, alert.sourceId, alert.accountId) == ("TRADE_REJECTED", source, None)
    assert store.marks == {}


def test_invalid_mark_with_a_mark_id_uses_it(deps: Deps, store: FakeStore) -> None:
    [outcome] = marks(deps, mark_at("0"))
    assert (outcome.kind, outcome.detail, outcome.source_id) == (
        "REJECTED",
        "SCHEMA_INVALID",
        MARK_ID,
    )
    assert (UNATTRIBUTED, f"rejection:{MARK_ID}") in store.records


def test_invalid_mark_without_a_mark_id_uses_the_digest(deps: Deps) -> None:
    raw = as_body(mark_at("60000", "2024-10-01T12:30:00"))
    [outcome] = marks(deps, raw)
    assert (outcome.kind, outcome.source_id) == ("REJECTED", digest(raw))


def test_a_fill_on_the_marks_queue_is_rejected(deps: Deps, store: FakeStore) -> None:
    [outcome] = marks(deps, load_event("fill_btcusdt_long"))
    assert (outcome.kind, outcome.detail) == ("REJECTED", "SCHEMA_INVALID")
    assert store.accounts == {}


def test_marks_batch_is_stored(deps: Deps, store: FakeStore) -> None:
    outcomes = marks(deps, load_event("marks_batch"))
    assert [o.kind for o in outcomes] == ["APPLIED"] * 3
    assert store.marks["ETHUSDT"]["markPrice"] == "2510.25"
    assert store.marks["BTCUSD_PERP"]["markId"] == "BTCUSD_PERP@2024-10-01T12:30:00.000Z"


def test_marks_entries_stand_alone(deps: Deps, store: FakeStore, sink: FakeSink) -> None:
    ts = "2024-10-01T12:30:00Z"
    batch = event(
        "marks_batch",
        marks=[
            {"symbol": "BTCUSDT", "markPrice": "60000", "timestamp": ts},
            {"symbol": "ETHUSDT", "markPrice": "0", "timestamp": ts},
            {"symbol": "DOGEUSDT", "markPrice": "0.1", "timestamp": ts},
            {"symbol": "BTCUSD_PERP", "markPrice": "60000", "timestamp": "yesterday"},
            "junk",
            {"symbol": "BTC USDT", "markPrice": "60000", "timestamp": ts},
            {"symbol": "BTCUSD_PERP", "markPrice": "61000", "timestamp": ts},
        ],
    )
    raw = as_body(batch)
    d = digest(raw)
    outcomes = marks(deps, raw)
    got = sorted((o.kind, o.source_id, o.detail if o.kind == "REJECTED" else "") for o in outcomes)
    assert got == sorted(
        [
            ("APPLIED", "BTCUSDT@2024-10-01T12:30:00.000Z", ""),
            ("REJECTED", "ETHUSDT@2024-10-01T12:30:00.000Z", "SCHEMA_INVALID"),
            ("REJECTED", "DOGEUSDT@2024-10-01T12:30:00.000Z", "UNKNOWN_SYMBOL"),
            ("REJECTED", f"{d}:3", "SCHEMA_INVALID"),
            ("REJECTED", f"{d}:4", "SCHEMA_INVALID"),
            ("REJECTED", f"{d}:5", "UNKNOWN_SYMBOL"),
            ("APPLIED", "BTCUSD_PERP@2024-10-01T12:30:00.000Z", ""),
        ]
    )
    rejected = [o.source_id for o in outcomes if o.kind == "REJECTED"]
    for source in rejected:
        assert (UNATTRIBUTED, f"rejection:{source}") in store.records
    assert sorted(a.sourceId for a in sink.sent) == sorted(rejected)
    assert all(a.type == "TRADE_REJECTED" and a.accountId is None for a in sink.sent)
    assert set(store.marks) == {"BTCUSDT", "BTCUSD_PERP"}
    # redelivery of the whole batch changes and sends nothing
    again = marks(deps, raw)
    assert sorted(o.kind for o in again) == ["DUPLICATE"] * 5 + ["IGNORED"] * 2
    assert len(sink.sent) == 5


@pytest.mark.parametrize("count", [0, 501])
def test_marks_batch_of_wrong_size_is_rejected_whole(
    deps: Deps, store: FakeStore, count: int
) -> None:
    entry = {"symbol": "BTCUSDT", "markPrice": "60000", "timestamp": "2024-10-01T12:30:00Z"}
    raw = as_body(event("marks_batch", marks=[entry] * count))
    [outcome] = marks(deps, raw)
    assert (outcome.kind, outcome.detail, outcome.source_id) == (
        "REJECTED",
        "SCHEMA_INVALID",
        digest(raw),
    )
    assert store.marks == {}


def test_a_fill_uses_the_stored_mark(deps: Deps, store: FakeStore, sink: FakeSink) -> None:
    funded(deps, "10000")
    marks(deps, mark_at("50000"))
    trade(deps, load_event("fill_btcusdt_long"))  # at 60000: 20 % from the mark
    assert [a.type for a in sink.sent] == ["PRICE_DEVIATION"]
    assert sink.sent[0].metrics["markPrice"] == "50000"
    position = store.account(ACCT)["positions"][0]
    assert position["markPrice"] == "50000"
    assert position["unrealizedPnl"] == "-1000"


# --- marks re-value holder accounts ---------------------------------------------------


def open_btc(deps: Deps, account: str = ACCT, **changes: Any) -> None:
    funded_event = event("transfer_deposit_usdt", accountId=account)
    assert trade(deps, funded_event).kind == "APPLIED"
    fill = event("fill_btcusdt_long", accountId=account, fee="0", **changes)
    assert trade(deps, fill).kind == "APPLIED"


def test_opening_a_position_indexes_the_holder(deps: Deps, store: FakeStore) -> None:
    open_btc(deps)
    assert [a for a, _ in run(store.list_holders("BTCUSDT"))] == [ACCT]
    assert run(store.list_holders("ETHUSDT")) == []


def test_a_mark_revalues_open_positions(deps: Deps, store: FakeStore, sink: FakeSink) -> None:
    open_btc(deps)  # cross long 0.1 at 60000 with 1000: LP ≈ 50200.8
    assert sink.sent == []
    [outcome] = marks(deps, mark_at("50000"))
    assert outcome.kind == "APPLIED"
    doc = store.account(ACCT)
    position = doc["positions"][0]
    assert position["markPrice"] == "50000"
    assert position["unrealizedPnl"] == "-1000"
    assert doc["wallets"]["USDT"]["riskState"] == "LIQUIDATION"
    assert doc["riskState"] == "LIQUIDATION"
    [alert] = sink.sent
    assert (alert.type, alert.severity, alert.scope, alert.sourceId, alert.accountId) == (
        "LIQUIDATION_RISK",
        "CRITICAL",
        "USDT",
        MARK_ID,
        ACCT,
    )
    assert alert.alertId == alert_id(MARK_ID, "LIQUIDATION_RISK", ACCT, "USDT")
    assert [a.alertId for a in outcome.alerts] == [alert.alertId]
    assert store.marks["BTCUSDT"]["markPrice"] == "50000"

    # the same message again changes and sends nothing
    [again] = marks(deps, mark_at("50000"))
    assert again.kind == "IGNORED"
    assert len(sink.sent) == 1

    # a newer mark back at 60000 recovers, alerted under its own mark id
    later = "2024-10-01T12:31:00Z"
    marks(deps, mark_at("60000", later))
    assert [(a.type, a.sourceId) for a in sink.sent[1:]] == [
        ("RISK_RECOVERED", "BTCUSDT@2024-10-01T12:31:00.000Z")
    ]
    assert store.account(ACCT)["wallets"]["USDT"]["riskState"] == "NORMAL"


def test_a_mark_without_a_risk_change_updates_silently(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    open_btc(deps)
    marks(deps, mark_at("61000"))
    assert sink.sent == []
    position = store.account(ACCT)["positions"][0]
    assert (position["markPrice"], position["unrealizedPnl"]) == ("61000", "100")


def test_each_mark_of_a_batch_alerts_under_its_own_id(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    open_btc(deps)
    batch = event(
        "marks_batch",
        marks=[
            {"symbol": "BTCUSDT", "markPrice": "50000", "timestamp": "2024-10-01T12:31:00Z"},
            {"symbol": "BTCUSDT", "markPrice": "50250", "timestamp": "2024-10-01T12:30:00Z"},
        ],
    )
    marks(deps, batch)
    # in timestamp order: NORMAL → MARGIN_CALL (ratio 0.804) → LIQUIDATION
    assert [(a.type, a.sourceId) for a in sink.sent] == [
        ("MARGIN_CALL", "BTCUSDT@2024-10-01T12:30:00.000Z"),
        ("LIQUIDATION_RISK", "BTCUSDT@2024-10-01T12:31:00.000Z"),
    ]
    assert store.marks["BTCUSDT"]["markPrice"] == "50000"  # the newest is stored


def test_isolated_position_alerts_with_its_scope(deps: Deps, sink: FakeSink) -> None:
    open_btc(deps, marginMode="ISOLATED")  # isolated margin 600: LP ≈ 54216.9
    marks(deps, mark_at("54240"))  # ratio 0.904
    assert [(a.type, a.scope, a.symbol) for a in sink.sent] == [
        ("MARGIN_CALL", "BTCUSDT:BOTH", "BTCUSDT")
    ]


def test_every_holder_is_revalued(deps: Deps, store: FakeStore, sink: FakeSink) -> None:
    open_btc(deps, "acct-a")
    open_btc(deps, "acct-b", tradeId="T-B-1")
    marks(deps, mark_at("50000"))
    assert sorted((a.accountId, a.type) for a in sink.sent) == [
        ("acct-a", "LIQUIDATION_RISK"),
        ("acct-b", "LIQUIDATION_RISK"),
    ]
    for account in ("acct-a", "acct-b"):
        assert store.account(account)["positions"][0]["markPrice"] == "50000"


def test_a_closed_holder_leaves_the_index(deps: Deps, store: FakeStore, sink: FakeSink) -> None:
    open_btc(deps)
    close = event("fill_btcusdt_long", tradeId="T-BTC-0002", side="SELL", fee="0")
    assert trade(deps, close).kind == "APPLIED"
    writes = store.account_writes
    marks(deps, mark_at("50000"))
    assert run(store.list_holders("BTCUSDT")) == []
    assert store.account_writes == writes  # nothing open to re-value
    assert sink.sent == []


def test_mark_crash_before_alerts_is_completed_by_the_retry(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    open_btc(deps)
    sink.fail_sends = 1
    with pytest.raises(SinkDown):
        marks(deps, mark_at("50000"))
    assert "BTCUSDT" not in store.marks  # the marks document is written last
    stored = store.account(ACCT)["pending"][-1]["record"]["alerts"]
    assert [a["type"] for a in stored] == ["LIQUIDATION_RISK"]
    [outcome] = marks(deps, mark_at("50000"), dequeue_count=2)
    assert outcome.kind == "APPLIED"
    assert sink.ids == [stored[0]["alertId"]]
    assert store.marks["BTCUSDT"]["markPrice"] == "50000"
    assert store.account(ACCT)["wallets"]["USDT"]["riskState"] == "LIQUIDATION"


def test_mark_alerts_survive_a_concurrent_copy(
    store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    first = make_deps(store, sink, clock)
    open_btc(first)
    sink.fail_sends = 1
    with pytest.raises(SinkDown):
        marks(first, mark_at("50000"))  # account written, alert not sent
    marks(make_deps(store, sink, clock), mark_at("50000"))  # a duplicate copy, first delivery
    marks(first, mark_at("50000"), dequeue_count=2)  # the host retries the failed one
    clock.advance(60)
    trade(first, event("transfer_deposit_usdt", transferId="X-DEP-0002", amount="1"))
    assert [a.type for a in sink.sent] == ["LIQUIDATION_RISK"]


def test_mark_alerts_survive_a_newer_mark(
    deps: Deps, store: FakeStore, sink: FakeSink, clock: FakeClock
) -> None:
    open_btc(deps)
    sink.fail_sends = 1
    with pytest.raises(SinkDown):
        marks(deps, mark_at("50000"))  # NORMAL → LIQUIDATION written, alert not sent
    clock.advance(1)
    marks(deps, mark_at("49990", "2024-10-01T12:30:01Z"))  # the next mark, 1 s later
    clock.advance(1)
    marks(deps, mark_at("50000"), dequeue_count=2)  # the host retries the failed message
    clock.advance(60)
    trade(deps, event("transfer_deposit_usdt", transferId="X-DEP-0002", amount="1"))
    assert [a.type for a in sink.sent] == ["LIQUIDATION_RISK"]


def test_unreadable_holder_is_skipped_and_deadlettered(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    open_btc(deps, "acct-a")
    open_btc(deps, "acct-b", tradeId="T-B-1")
    store.accounts["acct-a"]["schemaVersion"] = 99
    raw = as_body(mark_at("50000"))
    marks(deps, raw)
    d = digest(raw)
    letter = store.deadletters[("marks", f"{d}:acct-a")]
    assert letter["sourceId"] == MARK_ID
    assert letter["accountId"] == "acct-a"
    assert letter["bodyDigest"] == d
    assert letter["count"] == 1
    assert store.accounts["acct-a"]["schemaVersion"] == 99  # never overwritten
    poison = sink.of_type("POISON_MESSAGE")
    assert [(a.sourceId, a.accountId) for a in poison] == [(MARK_ID, "acct-a")]
    # the mark went on: the other account is re-valued and the mark stored
    assert [a.accountId for a in sink.of_type("LIQUIDATION_RISK")] == ["acct-b"]
    assert store.marks["BTCUSDT"]["markPrice"] == "50000"


def test_account_deadletter_keeps_the_raw_body(deps: Deps, store: FakeStore) -> None:
    open_btc(deps)
    store.accounts[ACCT]["schemaVersion"] = 99
    raw = as_body(mark_at("50000"))
    marks(deps, raw)
    assert store.deadletters[("marks", f"{digest(raw)}:{ACCT}")]["rawBody"] == raw.decode()


def test_evicted_ids_are_caught_by_their_records(deps: Deps, store: FakeStore) -> None:
    total = MAX_RECENT_IDS + 5
    for i in range(total):
        trade(deps, event("transfer_deposit_usdt", transferId=f"X-{i}", amount="1"))
    doc = store.account(ACCT)
    assert len(doc["recentEventIds"]) == MAX_RECENT_IDS
    assert "X-0" not in doc["recentEventIds"]
    assert doc["recentIdsEvicted"] is True
    again = trade(deps, event("transfer_deposit_usdt", transferId="X-0", amount="1"))
    assert again.kind == "DUPLICATE"
    assert store.account(ACCT)["wallets"]["USDT"]["walletBalance"] == str(total)


def test_large_balances_stay_readable(deps: Deps, store: FakeStore) -> None:
    funded(deps, "1000000000000000000000000")  # 25 digits: a valid amount
    adjustment = event(
        "transfer_deposit_usdt", transferId="X-ADJ-1", reason="ADJUSTMENT", amount="-1e-18"
    )
    assert trade(deps, adjustment).kind == "APPLIED"
    balance = store.account(ACCT)["wallets"]["USDT"]["walletBalance"]
    assert balance == "999999999999999999999999.999999999999999999"  # 42 digits, as written
    later = event("transfer_deposit_usdt", transferId="X-DEP-0002", amount="1")
    assert trade(deps, later).kind == "APPLIED"


def test_a_large_exponent_amount_keeps_the_account_readable(deps: Deps, store: FakeStore) -> None:
    funded(deps, "1e200")
    assert len(store.account(ACCT)["wallets"]["USDT"]["walletBalance"]) == 201
    later = event("transfer_deposit_usdt", transferId="X-DEP-0002", amount="1")
    assert trade(deps, later).kind == "APPLIED"  # actual: UnreadableDocument


def test_a_large_exponent_mark_keeps_fills_working(deps: Deps, store: FakeStore) -> None:
    [outcome] = marks(deps, mark_at("1e200"))
    assert outcome.kind == "APPLIED"
    funded(deps)
    assert trade(deps, load_event("fill_btcusdt_long")).kind == "APPLIED"  # actual: raises


# --- the process's cached account copy ------------------------------------------------


def test_a_stale_cached_copy_costs_a_conflict_never_an_update(deps: Deps, store: FakeStore) -> None:
    funded(deps)
    stale = run(store.read_account(ACCT))
    assert stale is not None
    trade(deps, event("transfer_deposit_usdt", transferId="X-DEP-0002", amount="500"))
    writes = store.account_writes
    store.stale_reads.append(stale)  # the fill's first read gets the copy before X-DEP-0002
    assert trade(deps, load_event("fill_btcusdt_long")).kind == "APPLIED"
    assert store.stale_reads == []  # the copy was used...
    assert store.account_writes == writes + 1  # ...its write refused (412), the retry landed
    doc = store.account(ACCT)
    assert doc["recentEventIds"] == ["X-DEP-0001", "X-DEP-0002", FILL_ID]
    assert doc["wallets"]["USDT"]["walletBalance"] == "1497.6"


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
    assert [a for a, _ in run(store.list_holders("BTCUSDT"))] == [ACCT]  # still indexed


def interleave(store: FakeStore, act: Callable[[list[str]], Awaitable[None]]) -> list[str]:
    """Make each holder listing run ``act(symbols listed so far)`` after it has taken its
    rows (a fill landing while a mark is in flight). Returns those symbols; ``del
    store.list_holders`` undoes it."""
    listed = store.list_holders
    listings: list[str] = []

    async def racing(symbol: str) -> list[tuple[str, str]]:
        listings.append(symbol)
        found = await listed(symbol)
        await act(listings)
        return found

    store.list_holders = racing  # type: ignore[method-assign]
    return listings


async def applied_now(deps: Deps, name: str, **changes: Any) -> None:
    """A fill applied from inside another message's processing."""
    outcome = await service.process_trade_message(as_body(event(name, **changes)), deps)
    assert outcome.kind == "APPLIED"


BTC_ETH_MARKS = event(
    "marks_batch",
    marks=[
        {"symbol": "BTCUSDT", "markPrice": "50000", "timestamp": "2024-10-01T12:30:00Z"},
        {"symbol": "ETHUSDT", "markPrice": "3000", "timestamp": "2024-10-01T12:30:00Z"},
    ],
)


def test_a_fill_that_opens_while_a_mark_is_in_flight_is_revalued_by_it(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    """The mark lists BTCUSDT's holders; before it is stored, a fill opens BTCUSDT on an
    account that was not listed (valued at the old mark, indexed, its catch-up read still
    seeing the old mark). The mark lists the holders again once stored: it reaches it."""
    marks(deps, mark_at("60000", "2024-10-01T12:00:00Z"))
    funded(deps)

    async def open_now(listings: list[str]) -> None:
        if len(listings) == 1:  # the mark is in flight: the fill opens now
            await applied_now(deps, "fill_btcusdt_long", fee="0")
            assert store.account(ACCT)["positions"][0]["markPrice"] == "60000"

    listings = interleave(store, open_now)
    [outcome] = marks(deps, mark_at("50000"))
    assert outcome.kind == "APPLIED"
    assert listings == ["BTCUSDT", "BTCUSDT"]
    position = store.account(ACCT)["positions"][0]
    assert (position["markPrice"], position["unrealizedPnl"]) == ("50000", "-1000")
    assert [(a.type, a.sourceId) for a in sink.sent] == [("LIQUIDATION_RISK", MARK_ID)]
    assert [a.alertId for a in outcome.alerts] == [sink.sent[0].alertId]


def test_a_holder_that_opens_another_marked_symbol_in_flight_gets_both_marks(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    """A MARKS message for BTCUSDT and ETHUSDT: a BTCUSDT holder opens ETHUSDT after the
    ETHUSDT holders were listed. The first pass applies BTCUSDT (and stores its alert as
    this message's pending entry); the second listing finds the ETHUSDT holder and
    applies ETHUSDT under its own record key (the message's, plus a digest of ETHUSDT)."""
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
    eth_id = "ETHUSDT@2024-10-01T12:30:00.000Z"
    assert [(a.type, a.scope, a.sourceId) for a in sink.sent] == [
        ("LIQUIDATION_RISK", "USDT", MARK_ID),
        ("LIQUIDATION_RISK", "ETHUSDT:BOTH", eth_id),
    ]
    eth = hashlib.sha256(b"ETHUSDT").hexdigest()[:16]
    first, late = f"@marks:{digest(raw)}", f"@marks:{digest(raw)}:{eth}"
    records = {k[1]: v for k, v in store.records.items() if v["type"] == "revaluation"}
    assert sorted(records) == [first, late]
    assert [a["sourceId"] for a in records[late]["alerts"]] == [eth_id]
    loaded = [json.loads(f.read_text("utf-8")) for f in sorted(SCHEMAS.glob("*.schema.json"))]
    registry: Registry[Any] = Registry().with_resources(
        [(s["$id"], Resource.from_contents(s)) for s in loaded]
    )
    schema = next(s for s in loaded if s["$id"].endswith("/revaluation-record.schema.json"))
    for record in records.values():
        Draft202012Validator(schema, registry=registry).validate(record)


M2 = "BTCUSDT@2024-10-01T12:30:00.000Z"


def stored_elsewhere(store: FakeStore, price: str, timestamp: str) -> None:
    """Another instance stores a newer BTCUSDT mark (this process does not see it)."""
    current = store.marks["BTCUSDT"]
    newer = {
        **current,
        "markPrice": price,
        "timestamp": timestamp,
        "markId": f"BTCUSDT@{timestamp}",
    }
    run(store.write_mark({k: v for k, v in newer.items() if k != "_etag"}, current["_etag"]))


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
    cache = service._MarkCache()
    newer = {"markPrice": "2", "timestamp": "2024-10-01T12:30:00.000Z"}
    older = {"markPrice": "1", "timestamp": "2024-10-01T12:00:00.000Z"}
    cache.put("BTCUSDT", newer, clock())
    cache.put("BTCUSDT", older, clock())  # a slow read overtaken by a write
    cache.put("BTCUSDT", None, clock())
    assert cache.get("BTCUSDT", clock(), 1.0) == (newer,)
    assert cache.get("BTCUSDT", clock.now + timedelta(seconds=2), 1.0) is None
    assert cache.get("BTCUSDT", clock.now - timedelta(seconds=2), 1.0) is None  # clock stepped back
    assert cache.get("ETHUSDT", clock(), 1.0) is None


def test_a_retry_sends_the_alerts_of_a_second_write_that_failed_to_send(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    """As above, but sending the alert of the second write (ETHUSDT) fails, after the
    marks were stored. The retry ignores the stored marks, and still finishes both of the
    message's entries on the account: the ETHUSDT alert is sent, once."""
    open_btc(deps)

    async def open_eth_then_fail_a_send(listings: list[str]) -> None:
        if listings == ["BTCUSDT", "ETHUSDT"]:
            await applied_now(deps, "fill_ethusdt_short", quantity="0.1")
        if len(listings) == 4:  # the second listing of ETHUSDT: the next send fails
            sink.fail_sends = 1

    interleave(store, open_eth_then_fail_a_send)
    raw = as_body(BTC_ETH_MARKS)
    with pytest.raises(SinkDown):
        marks(deps, raw)
    assert [a.sourceId for a in sink.sent] == [MARK_ID]  # the BTCUSDT alert only
    del store.list_holders
    again = marks(deps, raw, dequeue_count=2)
    assert [o.kind for o in again] == ["IGNORED", "IGNORED"]  # both marks are stored
    eth_id = "ETHUSDT@2024-10-01T12:30:00.000Z"
    assert [(a.type, a.sourceId) for a in sink.sent] == [
        ("LIQUIDATION_RISK", MARK_ID),
        ("LIQUIDATION_RISK", eth_id),
    ]
    eth = hashlib.sha256(b"ETHUSDT").hexdigest()[:16]
    assert (ACCT, f"@marks:{digest(raw)}:{eth}") in store.records
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
            copy.append(asyncio.ensure_future(service.process_trade_message(body, two)))
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


def test_a_stale_cached_duplicate_is_still_a_duplicate(
    deps: Deps, store: FakeStore, sink: FakeSink
) -> None:
    funded(deps)
    assert trade(deps, load_event("fill_btcusdt_long")).kind == "APPLIED"
    current = run(store.read_account(ACCT))
    assert current is not None
    sent = len(sink.sent)
    store.stale_reads.append(current)
    assert trade(deps, load_event("fill_btcusdt_long")).kind == "DUPLICATE"
    assert len(sink.sent) == sent


def test_events_of_one_account_in_one_process_take_turns(deps: Deps, store: FakeStore) -> None:
    funded(deps)
    attempts: list[str | None] = []

    async def slow_write(_doc: Any, etag: str | None) -> None:
        attempts.append(etag)
        await asyncio.sleep(0)  # let the other event run meanwhile

    store.before_account_write = slow_write
    bodies = [
        as_body(event("transfer_deposit_usdt", transferId=f"X-DEP-01{n}", amount="1"))
        for n in range(5)
    ]

    async def together() -> list[Outcome]:
        return list(await asyncio.gather(*(service.process_trade_message(b, deps) for b in bodies)))

    outcomes = run(together())
    assert [o.kind for o in outcomes] == ["APPLIED"] * 5
    assert len(attempts) == 5  # one write each: none lost an ETag race to its neighbour
    assert len(deps.account_locks) == 0  # nothing left behind
    assert store.account(ACCT)["wallets"]["USDT"]["walletBalance"] == "1005"
