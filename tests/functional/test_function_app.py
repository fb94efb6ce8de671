"""function_app.py as the Functions worker indexes it: names, triggers and binding JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
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
    # ORDERS_QUEUE is not set here (tests/functional/conftest.py): the literal default.
    "on_order": [
        {
            "direction": "IN",
            "type": "queueTrigger",
            "name": "msg",
            "queueName": "orders",
            "connection": "AzureWebJobsStorage",
        }
    ],
    "on_order_poison": [
        {
            "direction": "IN",
            "type": "queueTrigger",
            "name": "msg",
            "queueName": "orders-poison",
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


#: The one literal queue name: the orders queue's default while ORDERS_QUEUE is not set
#: (handlers.settings.orders_queue_expression), with its poison queue.
ORDERS_DEFAULTS = {"on_order": "orders", "on_order_poison": "orders-poison"}


def test_queue_names_come_from_settings_not_literals(functions: dict[str, Any]) -> None:
    for name, f in functions.items():
        (binding,) = [json.loads(raw) for raw in f.get_raw_bindings()]
        if binding["type"] == "queueTrigger" and name not in ORDERS_DEFAULTS:
            assert binding["queueName"].startswith("%"), name


def _queue_names_indexed_with(env: dict[str, str]) -> dict[str, str]:
    """Index function_app afresh in a subprocess with ``env``: each queue trigger's
    queueName (``get_functions()`` indexes an app object once, so not in this process)."""
    probe = (
        "import json, function_app\n"
        "print(json.dumps({f.get_function_name(): json.loads(f.get_raw_bindings()[0])"
        ".get('queueName') for f in function_app.app.get_functions()}))"
    )
    root = Path(function_app.__file__).resolve().parent
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return names


def _app_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ORDERS_QUEUE"}
    return env | {"PYTHONDONTWRITEBYTECODE": "1"} | settings


def test_orders_queue_is_the_setting_when_it_is_set() -> None:
    names = _queue_names_indexed_with(_app_env(ORDERS_QUEUE="or-1"))
    assert names["on_order"] == "%ORDERS_QUEUE%"
    assert names["on_order_poison"] == "%ORDERS_QUEUE%-poison"
    assert names["on_trade"] == "%TRADES_QUEUE%"


def test_orders_queue_defaults_to_orders_when_the_setting_is_unset_or_blank() -> None:
    for env in (_app_env(), _app_env(ORDERS_QUEUE=" ")):
        names = _queue_names_indexed_with(env)
        assert {n: names[n] for n in ORDERS_DEFAULTS} == ORDERS_DEFAULTS


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
