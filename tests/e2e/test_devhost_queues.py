"""devhost against a real Azurite: the Functions host's queue semantics, end to end."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import time
from pathlib import Path

from devhost_support import REPO_ROOT, AppEnv, Azurite, make_app


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def unb64(text: str) -> str:
    return base64.b64decode(text).decode("utf-8")


def test_drain_of_empty_queues_exits_zero_and_creates_trigger_queues(recorder: AppEnv) -> None:
    run = recorder.run()

    assert run.returncode == 0, run.stderr
    assert "drained" in run.stderr
    service = recorder.azurite.service()
    names = {queue.name for queue in service.list_queues()}
    assert {recorder.in_queue, recorder.poison_queue, recorder.async_queue} <= names
    assert "not running timer hourly with --drain (schedule '0 0 * * * *')" in run.stderr


def test_success_writes_list_output_one_message_each_with_parent_id(recorder: AppEnv) -> None:
    outputs = ['{"a": 1, "b": [1, 2]}', "plain text", "[1, 2]", "{}"]
    message_id = recorder.send(recorder.in_queue, b64(json.dumps({"out": outputs})))

    run = recorder.run()

    assert run.returncode == 0, run.stderr
    (invocation,) = recorder.records("main")
    assert invocation["id"] == message_id
    assert invocation["dequeue_count"] == 1
    assert invocation["has_times"] is True
    assert json.loads(invocation["body"]) == {"out": outputs}
    assert recorder.count(recorder.in_queue) == 0
    bodies = [unb64(m.content) for m in recorder.peek(recorder.out_queue)]
    assert len(bodies) == 4
    parent = invocation["invocation_id"]
    assert json.loads(bodies[0]) == {"a": 1, "b": [1, 2], "$AzureWebJobsParentId": parent}
    assert bodies[0].startswith('{"a": 1, "b": [1, 2],')  # the rest of the text is kept
    assert bodies[1:3] == ["plain text", "[1, 2]"]
    assert json.loads(bodies[3]) == {"$AzureWebJobsParentId": parent}
    assert re.search(rf"main message={message_id} dequeueCount=1 Succeeded", run.stderr)


def test_message_encoding_none_passes_and_writes_raw_text(tmp_path: Path, azurite: Azurite) -> None:
    app = make_app("recorder", tmp_path, azurite, {"messageEncoding": "none"})
    raw = json.dumps({"out": ['{"k": "v"}', "raw out"]})
    app.send(app.in_queue, raw)
    app.send(app.in_queue, "not json, not base64 either!")

    run = app.run()

    assert run.returncode == 0, run.stderr
    assert sorted(r["body"] for r in app.records("main")) == sorted(
        [raw, "not json, not base64 either!"]
    )
    bodies = [m.content for m in app.peek(app.out_queue)]
    assert json.loads(bodies[0])["k"] == "v"
    assert "$AzureWebJobsParentId" in json.loads(bodies[0])
    assert bodies[1] == "raw out"


def test_async_function_with_str_trigger_and_return_binding(recorder: AppEnv) -> None:
    recorder.send(recorder.async_queue, b64("hello"))

    run = recorder.run()

    assert run.returncode == 0, run.stderr
    assert [r["text"] for r in recorder.records("echo")] == ["hello"]
    assert [unb64(m.content) for m in recorder.peek(recorder.out_queue)] == ["HELLO"]


def test_failures_increment_the_dequeue_count_until_success(recorder: AppEnv) -> None:
    message_id = recorder.send(recorder.in_queue, b64(json.dumps({"fail_until": 3})))

    run = recorder.run()

    assert run.returncode == 0, run.stderr
    tries = [r for r in recorder.records("main") if r["id"] == message_id]
    assert [r["dequeue_count"] for r in tries] == [1, 2, 3]
    assert [r["id"] for r in recorder.records("main_done")] == [message_id]
    assert recorder.records("poison") == []
    assert "Failed: RuntimeError: told to fail" in run.stderr
    assert recorder.count(recorder.in_queue) == 0


def test_poison_after_max_dequeue_count_copies_the_body_only(recorder: AppEnv) -> None:
    body = json.dumps({"fail": "always", "note": "keep me"})
    message_id = recorder.send(recorder.in_queue, b64(body))

    run = recorder.run()

    assert run.returncode == 0, run.stderr
    tries = recorder.records("main")
    assert [r["dequeue_count"] for r in tries] == [1, 2, 3]  # maxDequeueCount 3
    (poisoned,) = recorder.records("poison")
    assert poisoned["body"] == body  # the base64 text was copied as it sat on the queue
    assert poisoned["id"] != message_id  # a new message: the body only
    assert poisoned["dequeue_count"] == 1
    assert recorder.count(recorder.in_queue) == 0
    assert recorder.count(recorder.poison_queue) == 0
    assert f"'{recorder.poison_queue}'" in run.stderr
    assert "Poisoned" in run.stderr


def test_poison_copy_is_the_raw_body(tmp_path: Path, azurite: Azurite) -> None:
    app = make_app("recorder", tmp_path, azurite, {"messageEncoding": "none"})
    app.send(app.in_queue, '{"fail": "always", "poison_fail": true}')

    run = app.run()

    assert run.returncode == 1
    (left,) = app.peek(app.poison_queue)
    assert left.content == '{"fail": "always", "poison_fail": true}'


def test_message_above_max_dequeue_count_goes_to_poison_without_invocation(
    recorder: AppEnv,
) -> None:
    body = json.dumps({"seen": "before"})
    recorder.send(recorder.in_queue, b64(body))
    queue = recorder.azurite.service().get_queue_client(recorder.in_queue)
    for _ in range(3):  # dequeue count 3 = maxDequeueCount; the host's receive makes it 4
        (message,) = list(queue.receive_messages(max_messages=1, visibility_timeout=30))
        queue.update_message(message.id, message.pop_receipt, visibility_timeout=0)

    run = recorder.run()

    assert run.returncode == 0, run.stderr
    assert recorder.records("main") == []
    assert [r["body"] for r in recorder.records("poison")] == [body]
    assert "dequeueCount=4 Poisoned (dequeue count above maxDequeueCount 3" in run.stderr
    (line,) = [line for line in run.stderr.splitlines() if "Poisoned" in line]
    assert line.endswith(
        f"; fix the cause, then run `python -m devhost replay-poison --queue {recorder.in_queue}`"
    )


def test_non_base64_body_is_poisoned_without_invocation_and_then_stuck(recorder: AppEnv) -> None:
    recorder.send(recorder.in_queue, "{not base64}")

    run = recorder.run()

    assert run.returncode == 1
    assert recorder.records() == []  # neither function was invoked
    assert recorder.count(recorder.in_queue) == 0
    (stuck,) = recorder.peek(recorder.poison_queue)
    assert stuck.content == "{not base64}"
    assert f"not drained: message {stuck.id} is stuck on queue '{recorder.poison_queue}'" in (
        run.stderr
    )


def test_drain_exits_nonzero_naming_a_message_that_keeps_failing_on_poison(
    recorder: AppEnv,
) -> None:
    recorder.send(recorder.in_queue, b64(json.dumps({"fail": "always", "poison_fail": True})))

    run = recorder.run()

    assert run.returncode == 1
    poison_tries = recorder.records("poison")
    assert [r["dequeue_count"] for r in poison_tries] == [1, 2, 3]
    message_id = poison_tries[0]["id"]
    assert f"message {message_id} is stuck on queue '{recorder.poison_queue}'" in run.stderr
    (stuck,) = [line for line in run.stderr.splitlines() if "not drained: message" in line]
    assert stuck.endswith(
        f"; fix the cause, then run `python -m devhost replay-poison --queue {recorder.in_queue}`"
    )
    (left,) = recorder.peek(recorder.poison_queue)  # left there, visible again after exit
    assert left.id == message_id


def test_batch_size_and_new_batch_threshold_bound_parallelism(
    tmp_path: Path, azurite: Azurite
) -> None:
    app = make_app("recorder", tmp_path, azurite, {"batchSize": 2, "newBatchThreshold": 1})
    for index in range(10):
        app.send(app.in_queue, b64(json.dumps({"sleep": 0.15 if index % 2 else 0.35})))

    run = app.run("--verbose")

    assert run.returncode == 0, run.stderr
    records = app.records("main")
    assert len(records) == 10
    peak = max(r["concurrent"] for r in records)
    assert 2 <= peak <= 3  # batchSize + newBatchThreshold
    received = [int(n) for n in re.findall(r"received (\d+) message\(s\) from 'in-", run.stderr)]
    assert received
    assert max(received) <= 2
    assert sum(received) == 10


def test_one_at_a_time_with_batch_size_one_and_threshold_zero(
    tmp_path: Path, azurite: Azurite
) -> None:
    app = make_app("recorder", tmp_path, azurite, {"batchSize": 1, "newBatchThreshold": 0})
    for _ in range(4):
        app.send(app.in_queue, b64(json.dumps({"sleep": 0.05})))

    run = app.run()

    assert run.returncode == 0, run.stderr
    assert [r["concurrent"] for r in app.records("main")] == [1, 1, 1, 1]


def test_lease_is_renewed_while_a_function_runs(recorder: AppEnv) -> None:
    message_id = recorder.send(recorder.in_queue, b64(json.dumps({"sleep": 2.5})))

    run = recorder.run("--verbose", DEVHOST_MESSAGE_LEASE_SECONDS="2")

    assert run.returncode == 0, run.stderr
    assert [r["id"] for r in recorder.records("main")] == [message_id]  # never redelivered
    assert "renewed the lease" in run.stderr
    assert recorder.count(recorder.in_queue) == 0


def test_settings_file_is_read_and_the_environment_wins(recorder: AppEnv, tmp_path: Path) -> None:
    settings_file = tmp_path / "other.settings.json"
    values = dict(recorder.settings, IN_QUEUE="from-file-queue", OUT_QUEUE="from-file-out")
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    env = recorder.env()
    del env["OUT_QUEUE"]  # comes from the file; IN_QUEUE is in both and the environment wins

    done = subprocess.run(
        [*recorder.command("--drain", "--settings", str(settings_file))],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert f"main <- queue '{recorder.in_queue}'" in done.stderr
    assert "output out -> 'from-file-out'" in done.stderr


def test_sigterm_finishes_in_flight_invocations_and_exits_zero(recorder: AppEnv) -> None:
    message_id = recorder.send(recorder.in_queue, b64(json.dumps({"sleep": 1.0})))
    process = subprocess.Popen(
        recorder.command(),
        cwd=REPO_ROOT,
        env=recorder.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not recorder.records("main") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert recorder.records("main"), "the function never started"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0, stderr
    assert [r["id"] for r in recorder.records("main_done")] == [message_id]
    assert recorder.count(recorder.in_queue) == 0


def test_failed_message_is_retried_after_visibility_timeout(
    tmp_path: Path, azurite: Azurite
) -> None:
    app = make_app("recorder", tmp_path, azurite, {"visibilityTimeout": "00:00:01"})
    app.send(app.in_queue, b64(json.dumps({"fail_until": 2})))

    run = app.run()

    assert run.returncode == 0, run.stderr
    first, second = app.records("main")
    assert (first["dequeue_count"], second["dequeue_count"]) == (1, 2)
    assert second["t"] - first["t"] >= 0.9
