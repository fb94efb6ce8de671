"""What devhost says about messages it cannot finish: one that another consumer holds while
``--drain`` waits, one a running host holds on a poison queue while ``replay-poison`` runs,
the hint that ends every give-up line; and an invocation that returns a value without a
``$return`` binding, which fails as in the Python worker."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from devhost_support import REPO_ROOT, AppEnv, Azurite, make_app

from devhost.drain import wait_drained
from devhost.hostjson import QueuesOptions
from devhost.ledger import Ledger
from devhost.queues import OutageLog


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _replay(app: AppEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "devhost",
            "replay-poison",
            "--app-dir",
            str(app.app_dir),
            "--queue",
            app.in_queue,
            *args,
        ],
        cwd=REPO_ROOT,
        env=app.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_drain_says_which_queue_holds_messages_another_consumer_took(
    recorder: AppEnv,
) -> None:
    recorder.send(recorder.in_queue, b64("{}"))
    other = recorder.azurite.service().get_queue_client(recorder.in_queue)
    taken = list(other.receive_messages(max_messages=1, visibility_timeout=120))
    assert len(taken) == 1

    run = recorder.run("--timeout", "6")

    assert run.returncode == 1
    waiting = [line for line in run.stderr.splitlines() if "waiting for" in line]
    assert waiting, run.stderr
    assert len(waiting) <= 2  # at most one line every 10 s
    assert (
        f"waiting for 1 invisible message(s) on '{recorder.in_queue}' (of 1 there) that "
        "another consumer holds"
    ) in waiting[0]
    assert (
        f"not drained after 6 s: 1 invisible message(s) on '{recorder.in_queue}' held by "
        "another consumer"
    ) in run.stderr
    assert recorder.records() == []


def test_drain_does_not_blame_others_for_its_own_retries(tmp_path: Path, azurite: Azurite) -> None:
    app = make_app("recorder", tmp_path, azurite, {"visibilityTimeout": "00:00:03"})
    app.send(app.in_queue, b64(json.dumps({"fail_until": 2})))

    run = app.run()

    assert run.returncode == 0, run.stderr
    assert "another consumer" not in run.stderr


def test_replay_poison_names_the_host_that_holds_a_message_and_until_when(
    recorder: AppEnv,
) -> None:
    body = json.dumps({"fail": "always", "poison_fail": True})
    recorder.send(recorder.in_queue, b64(body))
    poison = recorder.azurite.service().get_queue_client(recorder.poison_queue)
    replayed: list[subprocess.CompletedProcess[str]] = []

    held_files = recorder.app_dir / ".run" / "devhost" / "held"

    def held_then_replay() -> bool:
        if len(recorder.records("poison")) < 3 or not list(held_files.glob("*.json")):
            return False
        if list(poison.peek_messages(max_messages=1)):
            return False  # not yet held
        replayed.append(_replay(recorder))
        return True

    run = recorder.serve(held_then_replay, timeout=60)

    assert run.returncode == 0, run.stderr
    (while_held,) = replayed
    assert while_held.returncode == 1, while_held.stderr
    match = re.search(
        rf"1 message\(s\) on '{recorder.poison_queue}' are held by a running host "
        r"\(devhost, pid (\d+)\) until about (\d\d:\d\d:\d\d); stop it or wait",
        while_held.stdout,
    )
    assert match, while_held.stdout
    assert f"{recorder.in_queue}: 0 message(s) moved back" in while_held.stdout
    # the host's give-up line ends with what to do
    (stuck,) = [line for line in run.stderr.splitlines() if "stuck (" in line]
    assert "dequeueCount=3 Failed: RuntimeError: poison handler told to fail; stuck " in stuck
    assert re.search(
        r"has no poison queue: left there, not invoked again\) \(\d+ ms\); fix the cause, "
        rf"then run `python -m devhost replay-poison --queue {recorder.in_queue}`$",
        stuck,
    )

    # Once that host has stopped (and let the message go), the replay moves it back.
    after = _replay(recorder)

    assert after.returncode == 0, after.stdout + after.stderr
    assert f"{recorder.in_queue}: 1 message(s) moved back from {recorder.poison_queue}" in (
        after.stdout
    )
    (moved,) = recorder.peek(recorder.in_queue)
    assert base64.b64decode(moved.content).decode() == body
    assert not list(held_files.glob("*.json"))  # removed when the host let it go


def test_replay_poison_without_a_record_gives_the_latest_time(recorder: AppEnv) -> None:
    recorder.send(recorder.poison_queue, b64("{}"))
    poison = recorder.azurite.service().get_queue_client(recorder.poison_queue)
    assert len(list(poison.receive_messages(max_messages=1, visibility_timeout=120))) == 1

    replay = _replay(recorder)

    assert replay.returncode == 1
    assert re.search(
        rf"1 message\(s\) on '{recorder.poison_queue}' are held by a running host until about "
        r"\d\d:\d\d:\d\d at the latest \(a host holds a message for up to 10 minutes\); stop it "
        "or wait",
        replay.stdout,
    ), replay.stdout


def test_a_return_value_without_a_return_binding_fails_then_poisons(
    tmp_path: Path, azurite: Azurite
) -> None:
    app = make_app("returns_value", tmp_path, azurite)
    app.send(app.in_queue, b64("{}"))

    run = app.run()

    assert run.returncode == 0, run.stderr
    assert [r["dequeue_count"] for r in app.records("main")] == [1, 2, 3]
    assert (
        "Failed: RuntimeError: function 'main' without a $return binding returned a non-None value"
    ) in run.stderr
    assert "Succeeded" not in run.stderr
    poisoned = [line for line in run.stderr.splitlines() if "Poisoned" in line]
    assert len(poisoned) == 1
    assert re.search(
        rf"-> '{app.poison_queue}' \(\d+ ms\); fix the cause, then run `python -m devhost "
        rf"replay-poison --queue {app.in_queue}`$",
        poisoned[0],
    )
    assert len(app.peek(app.poison_queue)) == 1


class _UnreachableQueue:
    queue_name = "trades"

    async def get_queue_properties(self, **_: Any) -> Any:
        raise ConnectionError("Cannot connect to host 127.0.0.1:10009")


def test_a_failing_drain_check_is_not_reported_as_a_queue_named_drain(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener: Any = SimpleNamespace(
        function=SimpleNamespace(queue_name="trades"), queue=_UnreachableQueue()
    )

    async def drain() -> bool:
        return await wait_drained(
            [listener],
            Ledger(),
            QueuesOptions(),
            stop=asyncio.Event(),
            outages=OutageLog(),
            timeout=0.5,
        )

    with caplog.at_level(logging.INFO, logger="devhost.host"):
        drained = asyncio.run(drain())

    assert drained is False
    messages = [record.getMessage() for record in caplog.records]
    assert (
        "counting the messages on the trigger queues failed (retrying): Cannot connect to "
        "host 127.0.0.1:10009"
    ) in messages
    assert not any("'drain'" in message for message in messages)
    assert "not drained after 0.5 s" in messages
