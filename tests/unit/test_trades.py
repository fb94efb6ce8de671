"""The trades flow (handlers.flows.trades) over in-memory fakes of its ports: FILL and
TRANSFER applied, rejected, duplicated, raced."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from decimal import Decimal
from typing import Any

import pytest

from handlers import flows
from handlers.core.alerts import alert_id
from handlers.core.decimals import format_decimal
from handlers.core.documents import ACCOUNT_ID, MAX_RECENT_IDS, UNATTRIBUTED
from handlers.errors import StaleAccountState, UnreadableDocument
from handlers.flows import MAX_WRITE_ATTEMPTS, Deps, Outcome, Runtime
from tests.aio import run
from tests.events import as_body, load_event
from tests.unit.fakes import FakeClock, FakeSink, FakeStore, SinkDown, StoreDown
from tests.unit.flowkit import (
    ACCT,
    FILL_ID,
    digest,
    event,
    funded,
    make_deps,
    rejection,
    trade,
)


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
        2,
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
    other_process = dataclasses.replace(deps, runtime=Runtime())

    async def concurrent_deposit(_doc: Any, _etag: str | None) -> None:
        store.before_account_write = None
        other = event("transfer_deposit_usdt", transferId="X-DEP-0002", amount="500")
        outcome = await flows.process_trade_message(as_body(other), other_process)
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
    store.accounts[ACCT]["schemaVersion"] = 3
    before = json.dumps(store.accounts[ACCT], sort_keys=True)
    with pytest.raises(UnreadableDocument):
        trade(deps, load_event("fill_btcusdt_long"))
    assert json.dumps(store.accounts[ACCT], sort_keys=True) == before


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
        return list(await asyncio.gather(*(flows.process_trade_message(b, deps) for b in bodies)))

    outcomes = run(together())
    assert [o.kind for o in outcomes] == ["APPLIED"] * 5
    assert len(attempts) == 5  # one write each: none lost an ETag race to its neighbour
    assert len(deps.runtime.account_locks) == 0  # nothing left behind
    assert store.account(ACCT)["wallets"]["USDT"]["walletBalance"] == "1005"
