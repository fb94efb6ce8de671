"""devhost refuses, like the real Python worker and host, apps that would not load in Azure:
exit code 2 and a message, before any queue is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from devhost_support import AppEnv, Azurite, make_app


@pytest.mark.parametrize(
    ("app", "message"),
    [
        (
            "refuse_out_int",
            "cannot load the main function: 'out' binding type \"queue\" and dataType "
            '"None" in function.json do not match the corresponding function parameter\'s '
            'Python type annotation "int"',
        ),
        (
            "refuse_extra_param",
            "cannot load the main function: the following parameters are declared in Python "
            "but not in function.json: {'extra'}",
        ),
        (
            "refuse_extra_binding",
            "cannot load the main function: the following parameters are declared in "
            "function.json but not in Python: {'alerts'}",
        ),
        (
            "refuse_trigger_annotation",
            "cannot load the main function: 'msg' binding type \"queueTrigger\" and dataType "
            '"None" in function.json do not match the corresponding function parameter\'s '
            'Python type annotation "int"',
        ),
    ],
)
def test_mismatched_apps_are_refused_before_polling(
    app: str, message: str, tmp_path: Path, azurite: Azurite
) -> None:
    env = make_app(app, tmp_path, azurite)

    run = env.run()

    assert run.returncode == 2
    assert "refusing to start" in run.stderr
    assert message in run.stderr
    assert env.in_queue not in {q.name for q in azurite.service().list_queues()}


def test_unresolvable_setting_in_a_queue_name_is_refused(recorder: AppEnv) -> None:
    del recorder.settings["ASYNC_QUEUE"]

    run = recorder.run()

    assert run.returncode == 2
    assert "cannot load the echo function: '%ASYNC_QUEUE%' does not resolve to a value" in (
        run.stderr
    )


def test_invalid_queue_name_is_refused(recorder: AppEnv) -> None:
    run = recorder.run(IN_QUEUE="Bad_Queue")

    assert run.returncode == 2
    assert "Invalid queue name: Bad_Queue" in run.stderr


def test_missing_storage_connection_is_refused(recorder: AppEnv) -> None:
    del recorder.settings["AzureWebJobsStorage"]

    run = recorder.run()

    assert run.returncode == 2
    assert "storage connection 'AzureWebJobsStorage' is not set" in run.stderr


def test_invalid_host_json_option_is_refused(tmp_path: Path, azurite: Azurite) -> None:
    app = make_app("recorder", tmp_path, azurite, {"batchSize": 64})

    run = app.run()

    assert run.returncode == 2
    assert "extensions.queues.batchSize must be 1..32, got 64" in run.stderr
