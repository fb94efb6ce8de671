"""The orders queue's functions through devhost on the local services: devhost serves
on_order and on_order_poison on ORDERS_QUEUE (or on ``orders`` when it is not set), and a
body poisoned from the orders queue is dead-lettered under that queue."""

from __future__ import annotations

import hashlib

import pytest

from tests.support import AppUnderTest

pytestmark = pytest.mark.services


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_a_body_on_the_orders_poison_queue_is_dead_lettered_once(app: AppUnderTest) -> None:
    orders = app.settings["ORDERS_QUEUE"]
    app.send(["%%% not an order %%%"], queue=f"{orders}-poison", encode=False)
    result = app.run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "on_order_poison" in result.stderr

    letter = app.read("deadletters", digest("%%% not an order %%%"), orders)
    assert letter is not None
    assert (letter["queue"], letter["count"]) == (orders, 1)
    assert [a["type"] for a in app.alerts()] == ["POISON_MESSAGE"]
    assert app.peek_count(f"{orders}-poison") == 0
    assert app.peek_count("ORDER_DECISIONS_QUEUE") == 0


def test_without_the_setting_devhost_serves_the_orders_queue(app: AppUnderTest) -> None:
    unset = AppUnderTest(app.services, app.workdir, overrides={"ORDERS_QUEUE": ""})
    result = unset.run()
    assert result.returncode == 0, result.stdout + result.stderr
    names = {q.name for q in unset.queues.list_queues()}
    assert {"orders", "orders-poison"} <= names
