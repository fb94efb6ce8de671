"""bench.orders' mix is what its plan says: every message passes the app's wire model, an
ORDER_DONE ends an approved order sent at least DONE_LAG_S before it, and the decisions
are checked against the plan (no timing here: benchmarks are not tests)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from bench.orders import DONE_LAG_S, REJECTIONS, check_decisions, make_orders, make_setup
from handlers.core.contracts import Order, OrderDone, validate_order_message


def test_the_mix_is_valid_and_ends_only_earlier_approved_orders() -> None:
    setup = make_setup(20, seed=1, now=datetime(2026, 12, 3, tzinfo=UTC))
    rate = 100.0
    planned = make_orders(1500, setup.accounts, random.Random(2), "t-", datetime.now(UTC), rate)
    kinds = {p.kind for p in planned}
    assert kinds == {"LIMIT", "MARKET", "REJECTED", "DONE"}
    assert {p.reason for p in planned if p.kind == "REJECTED"} == set(REJECTIONS)
    position = {p.message["orderId"]: n for n, p in enumerate(planned) if p.kind != "DONE"}
    for n, p in enumerate(planned):
        message = validate_order_message(p.message)
        if p.kind == "DONE":
            assert isinstance(message, OrderDone)
            ended = planned[position[message.orderId]]
            assert ended.decision == "APPROVED"
            assert ended.message["accountId"] == message.accountId
            assert n - position[message.orderId] >= DONE_LAG_S * rate
        else:
            assert isinstance(message, Order)
            assert (message.orderType == "MARKET") == ("price" not in p.message)
    done_ids = [p.message["orderId"] for p in planned if p.kind == "DONE"]
    assert len(done_ids) == len(set(done_ids))


def test_decisions_are_checked_against_the_plan() -> None:
    setup = make_setup(5, seed=1, now=datetime(2026, 12, 3, tzinfo=UTC))
    planned = make_orders(40, setup.accounts, random.Random(3), "t-", datetime.now(UTC), 10.0)
    decisions = [
        {
            "decisionId": p.message["orderId"],
            "orderId": p.message["orderId"],
            "decision": p.decision,
            "reasons": [{"code": p.reason}] if p.reason else [],
        }
        for p in planned
        if p.kind != "DONE"
    ]
    wrong = dict(decisions[0], decision="REJECTED", reasons=[{"code": "RATE_LIMITED"}])
    if decisions[0]["decision"] == "REJECTED":
        wrong = dict(decisions[0], decision="APPROVED", reasons=[])
    report = check_decisions(planned, [wrong, *decisions[1:], decisions[1]])
    assert report["decisions"] == report["decisions_expected"] == len(decisions)
    assert report["as_planned"] == len(decisions) - 1
    assert report["repeated_decision_messages"] == 1
    assert [e["orderId"] for e in report["not_as_planned_examples"]] == [wrong["orderId"]]
