"""function_app.py as the Functions worker indexes it: names, triggers and binding JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

import function_app

EXPECTED: dict[str, list[dict[str, Any]]] = {
    "on_trade": [
        {
            "direction": "IN",
            "type": "queueTrigger",
            "name": "msg",
            "queueName": "%TRADES_QUEUE%",
            "connection": "AzureWebJobsStorage",
        }
    ],
    "on_mark": [
        {
            "direction": "IN",
            "type": "queueTrigger",
            "name": "msg",
            "queueName": "%MARKS_QUEUE%",
            "connection": "AzureWebJobsStorage",
        }
    ],
    "on_trade_poison": [
        {
            "direction": "IN",
            "type": "queueTrigger",
            "name": "msg",
            "queueName": "%TRADES_QUEUE%-poison",
            "connection": "AzureWebJobsStorage",
        }
    ],
    "on_mark_poison": [
        {
            "direction": "IN",
            "type": "queueTrigger",
            "name": "msg",
            "queueName": "%MARKS_QUEUE%-poison",
            "connection": "AzureWebJobsStorage",
        }
    ],
    "on_mark_fanout": [
        {
            "direction": "IN",
            "type": "queueTrigger",
            "name": "msg",
            "queueName": "%MARKS_QUEUE%-fanout",
            "connection": "AzureWebJobsStorage",
        }
    ],
    "on_mark_fanout_poison": [
        {
            "direction": "IN",
            "type": "queueTrigger",
            "name": "msg",
            "queueName": "%MARKS_QUEUE%-fanout-poison",
            "connection": "AzureWebJobsStorage",
        }
    ],
    "check_stale_marks": [
        {
            "direction": "IN",
            "type": "timerTrigger",
            "name": "timer",
            "schedule": "0 */1 * * * *",
            "runOnStartup": False,
        }
    ],
}


@pytest.fixture(scope="module")
def functions() -> dict[str, Any]:
    # get_functions() may be called once per app object (a second call raises).
    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def test_every_function_and_its_binding_json(functions: dict[str, Any]) -> None:
    actual = {
        name: [json.loads(raw) for raw in f.get_raw_bindings()] for name, f in functions.items()
    }
    assert actual == EXPECTED


def test_queue_names_come_from_settings_not_literals(functions: dict[str, Any]) -> None:
    for f in functions.values():
        (binding,) = [json.loads(raw) for raw in f.get_raw_bindings()]
        if binding["type"] == "queueTrigger":
            assert binding["queueName"].startswith("%")


def test_parameters_match_bindings(functions: dict[str, Any]) -> None:
    import inspect

    for f in functions.values():
        names = {json.loads(raw)["name"] for raw in f.get_raw_bindings()}
        params = set(inspect.signature(f.get_user_function()).parameters)
        # ``context`` is the worker's own argument (the invocation id for the logs), never
        # a binding.
        assert "context" in params
        assert names == params - {"context"}


def test_host_json_decodes_bodies_in_the_app() -> None:
    from pathlib import Path

    host = json.loads((Path(function_app.__file__).parent / "host.json").read_text())
    queues = host["extensions"]["queues"]
    assert queues["messageEncoding"] == "none"
    assert queues["maxDequeueCount"] == 5
    assert host["version"] == "2.0"
