"""The orders flow (handlers.flows.orders) over in-memory fakes: decisions, reservations
and their release, trading state, redelivery and crash points."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from handlers.flows import Deps, Outcome, process_order_message
from handlers.flows.orders import decision_id
from tests.aio import run
from tests.events import as_body
from tests.unit.fakes import FakeClock, FakeDecisions, FakeSink, FakeStore, SinkDown
from tests.unit.flowkit import ACCT, event, funded, make_deps, mark_at, marks, trade

ORDER_ID = "O-0001"


@pytest.fixture
def decisions() -> FakeDecisions:
    return FakeDecisions()


@pytest.fixture
def deps(store: FakeStore, sink: FakeSink, clock: FakeClock, decisions: FakeDecisions) -> Deps:
    made = replace(make_deps(store, sink, clock), decisions=decisions)
    marks(made, mark_at("60000"))
    return made


def order(deps: Deps, dequeue_count: int = 1, **changes: Any) -> Outcome:
    body = event("order_btcusdt_limit", **changes)
    return run(process_order_message(as_body(body), deps, dequeue_count=dequeue_count))


def send(deps: Deps, name: str, dequeue_count: int = 1, **changes: Any) -> Outcome:
    body = event(name, **changes)
    return run(process_order_message(as_body(body), deps, dequeue_count=dequeue_count))


def wallet(store: FakeStore, asset: str = "USDT") -> dict[str, Any]:
    return dict(store.account(ACCT)["wallets"][asset])


def codes(decisions: FakeDecisions, n: int = -1) -> list[str]:
    return [r.code for r in decisions.sent[n].reasons]


def test_an_order_that_fits_is_approved_and_its_margin_reserved(
    deps: Deps, store: FakeStore, decisions: FakeDecisions
) -> None:
    """1,000 USDT, a LIMIT BUY of 0.01 BTCUSDT at 60,000 with 10x: cost 60 (no open loss
    at the mark), reserved; availableBalance net of it."""
    funded(deps)
    outcome = order(deps)
    assert (outcome.kind, outcome.source_id) == ("APPLIED", f"@order:{ORDER_ID}")
    [decision] = decisions.sent
    assert decision.decision == "APPROVED"
    assert decision.decisionId == decision_id(ACCT, ORDER_ID)
    assert decision.metrics["cost"] == "60"
    assert decision.metrics["availableForOrders"] == "1000"
    assert decision.metrics["availableForOrdersAfter"] == "940"
    [held] = store.account(ACCT)["openOrders"]
    assert (held["orderId"], held["reserved"], held["quantity"]) == (ORDER_ID, "60", "0.01")
    assert wallet(store)["openOrderMargin"] == "60"
    assert wallet(store)["availableBalance"] == "940"
    assert (ACCT, f"@order:{ORDER_ID}") in store.records


def test_two_orders_that_each_fit_but_not_together(deps: Deps, decisions: FakeDecisions) -> None:
    funded(deps, "100")  # 100 USDT: one cost of 60 fits, two do not
    assert order(deps).kind == "APPLIED"
    assert order(deps, orderId="O-0002").kind == "REJECTED"
    assert codes(decisions) == ["INSUFFICIENT_MARGIN"]


def test_a_fill_of_the_order_releases_its_reservation_pro_rata(
    deps: Deps, store: FakeStore
) -> None:
    funded(deps)
    order(deps)
    fill = event(
        "fill_btcusdt_long",
        schemaVersion=2,
        orderId=ORDER_ID,
        quantity="0.004",
        price="60000",
        leverage=10,
        fee="0",
    )
    assert trade(deps, fill).kind == "APPLIED"
    [held] = store.account(ACCT)["openOrders"]
    assert (held["quantity"], held["reserved"]) == ("0.006", "36")  # 60 × 0.006 / 0.01
    assert wallet(store)["openOrderMargin"] == "36"


def test_order_done_releases_the_rest_and_sends_nothing(
    deps: Deps, store: FakeStore, decisions: FakeDecisions
) -> None:
    funded(deps)
    order(deps)
    outcome = send(deps, "order_done")
    assert outcome.kind == "APPLIED"
    assert store.account(ACCT)["openOrders"] == []
    assert wallet(store)["openOrderMargin"] == "0"
    assert len(decisions.sent) == 1  # the order's own
    assert send(deps, "order_done").kind == "DUPLICATE"


def test_order_done_before_its_order(deps: Deps, decisions: FakeDecisions) -> None:
    funded(deps)
    assert send(deps, "order_done").kind == "APPLIED"
    assert order(deps).kind == "REJECTED"
    assert codes(decisions) == ["ORDER_ALREADY_DONE"]


def test_a_withdrawal_cannot_take_reserved_margin(deps: Deps, store: FakeStore) -> None:
    funded(deps)
    order(deps)  # 60 reserved of 1,000
    too_much = event("transfer_withdrawal", amount="-941")
    assert trade(deps, too_much).kind == "REJECTED"
    assert trade(deps, event("transfer_withdrawal", transferId="X-W-2", amount="-940")).kind == (
        "APPLIED"
    )


def test_a_reducing_order_needs_no_margin(deps: Deps, decisions: FakeDecisions) -> None:
    funded(deps, "100")
    fill = event("fill_btcusdt_long", quantity="0.01", price="60000", leverage=10, fee="0")
    assert trade(deps, fill).kind == "APPLIED"  # 60 of the 100 in the position
    sell = order(deps, side="SELL", orderId="O-SELL", reduceOnly=True)
    assert sell.kind == "APPLIED"
    assert decisions.sent[-1].metrics["openingQuantity"] == "0"
    assert decisions.sent[-1].metrics["cost"] == "0"


def test_a_redelivered_order_sends_its_decision_again_and_reserves_once(
    deps: Deps, store: FakeStore, decisions: FakeDecisions, clock: FakeClock
) -> None:
    funded(deps)
    order(deps)
    clock.advance(5)
    assert order(deps).kind == "DUPLICATE"
    assert order(deps, dequeue_count=2).kind == "DUPLICATE"
    first, *again = decisions.sent
    assert len(again) == 2
    for other in again:
        assert other.model_dump(exclude={"decidedAt"}) == first.model_dump(exclude={"decidedAt"})
    assert len(store.account(ACCT)["openOrders"]) == 1


def test_the_decision_lost_in_flight_is_sent_by_the_retry(
    store: FakeStore, sink: FakeSink, clock: FakeClock, decisions: FakeDecisions
) -> None:
    """The account is written with the decision (and its record), then the send fails: the
    retry sends the recorded decision; the reservation is made once."""
    deps = replace(make_deps(store, sink, clock), decisions=decisions)
    marks(deps, mark_at("60000"))
    funded(deps)
    decisions.fail_sends = 1
    with pytest.raises(SinkDown):
        order(deps)
    assert decisions.sent == []
    assert order(deps, dequeue_count=2).kind == "DUPLICATE"
    [decision] = decisions.sent
    assert decision.decision == "APPROVED"
    assert len(store.account(ACCT)["openOrders"]) == 1


def test_a_broken_order_naming_its_account_is_decided_and_alerted(
    deps: Deps, sink: FakeSink, decisions: FakeDecisions, store: FakeStore
) -> None:
    funded(deps)
    outcome = order(deps, quantity="-1")
    assert (outcome.kind, outcome.detail) == ("REJECTED", "SCHEMA_INVALID")
    assert codes(decisions) == ["SCHEMA_INVALID"]
    [alert] = sink.of_type("TRADE_REJECTED")
    assert alert.sourceId == f"@order:{ORDER_ID}"
    assert f"@order:{ORDER_ID}" in store.account(ACCT)["recentEventIds"]


def test_an_unreadable_order_is_rejected_without_a_decision(
    deps: Deps, sink: FakeSink, decisions: FakeDecisions
) -> None:
    outcome = run(process_order_message(as_body(event("order_btcusdt_limit", orderId="b@d")), deps))
    assert outcome.kind == "REJECTED"
    assert decisions.sent == []
    [alert] = sink.of_type("TRADE_REJECTED")
    assert alert.sourceId.startswith("sha256:")


def test_an_order_for_an_account_never_funded(
    deps: Deps, store: FakeStore, decisions: FakeDecisions
) -> None:
    assert order(deps).kind == "REJECTED"
    assert codes(decisions) == ["UNKNOWN_ACCOUNT"]
    assert f"@order:{ORDER_ID}" in store.account(ACCT)["recentEventIds"]  # created, recorded


def test_trading_state_controls(deps: Deps, sink: FakeSink, decisions: FakeDecisions) -> None:
    funded(deps)
    assert send(deps, "account_control").kind == "APPLIED"
    [alert] = sink.of_type("TRADING_STATE_CHANGED")
    assert (alert.severity, alert.scope, alert.sourceId) == ("INFO", None, "@control:C-0001")
    assert order(deps).kind == "REJECTED"
    assert codes(decisions) == ["ACCOUNT_HALTED"]
    older = send(
        deps, "account_control", controlId="C-0000", tradingState="ACTIVE",
        occurredAt="2024-10-01T11:00:00.000Z",
    )  # fmt: skip
    assert (older.kind, older.detail) == ("APPLIED", "older than the state held")
    assert order(deps, orderId="O-0002").kind == "REJECTED"  # still halted
    active = send(
        deps, "account_control", controlId="C-0002", tradingState="ACTIVE",
        occurredAt="2024-10-01T12:10:00.000Z",
    )  # fmt: skip
    assert active.kind == "APPLIED"
    assert order(deps, orderId="O-0003").kind == "APPLIED"
    assert len(sink.of_type("TRADING_STATE_CHANGED")) == 2
    assert send(deps, "account_control").kind == "DUPLICATE"  # C-0001 again


def test_reserved_margin_is_exact_after_every_message_three_times(
    deps: Deps, store: FakeStore, decisions: FakeDecisions
) -> None:
    funded(deps)
    bodies = [
        event("order_btcusdt_limit", orderId=f"O-{n}", quantity="0.002") for n in range(5)
    ] + [event("order_done", orderId="O-1"), event("order_done", orderId="O-3")]
    for _ in range(3):
        for body in bodies:
            run(process_order_message(as_body(body), deps))
    held = store.account(ACCT)["openOrders"]
    assert sorted(o["orderId"] for o in held) == ["O-0", "O-2", "O-4"]
    assert wallet(store)["openOrderMargin"] == "36"  # 3 × 12
    assert {d.decisionId for d in decisions.sent} == {decision_id(ACCT, f"O-{n}") for n in range(5)}
    assert Decimal(wallet(store)["availableBalance"]) == Decimal(1000 - 36)
