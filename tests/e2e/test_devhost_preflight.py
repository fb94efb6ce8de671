"""devhost run refuses, within seconds and in one line that names the setting and where its
value came from, a storage connection or Cosmos DB endpoint that is wrong: a port nothing
listens on, an endpoint that never answers, a key that is refused, a setting that is missing.
Timings are generous upper bounds: they tell seconds from the minute of retries there was."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from devhost_support import AppEnv, Azurite, Run, free_port, make_app

from devhost import services
from devhost.services import AZURITE_ACCOUNT_KEY, WELL_KNOWN_COSMOS_KEY

#: Far more than a check takes (5 s at most per request), far less than the 66 s there was.
SECONDS = 20


def _storage(port: int, key: str = AZURITE_ACCOUNT_KEY) -> str:
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={key};QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )


def _timed_run(app: AppEnv, *args: str, **extra: str) -> tuple[Run, float]:
    started = time.monotonic()
    run = app.run(*args, timeout=60, **extra)
    return run, time.monotonic() - started


def _one_refusal(run: Run) -> str:
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if "refusing to start" in line]
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert "<?xml" not in run.stderr
    return lines[0]


def test_a_storage_port_nothing_listens_on_from_the_settings_file(
    recorder: AppEnv, tmp_path: Path
) -> None:
    port = free_port()
    settings = tmp_path / "wrong.settings.json"
    values = dict(recorder.settings, AzureWebJobsStorage=_storage(port))
    settings.write_text(json.dumps({"Values": values}))
    del recorder.settings["AzureWebJobsStorage"]  # so it comes from the file only

    run, seconds = _timed_run(recorder, "--settings", str(settings), "--timeout", "5")

    line = _one_refusal(run)
    assert (
        f"refusing to start: AzureWebJobsStorage (from {settings}): cannot reach "
        f"http://127.0.0.1:{port} within 5 s (connection refused)"
    ) in line
    assert line.endswith("; to start the local services: python -m devhost services start")
    assert seconds < SECONDS
    assert "'drain'" not in run.stderr


def test_a_storage_port_from_the_environment_and_local_settings_json(
    recorder: AppEnv,
) -> None:
    port = free_port()
    (recorder.app_dir / "local.settings.json").write_text(
        json.dumps({"Values": {"AzureWebJobsStorage": _storage(port)}})
    )

    from_env, _ = _timed_run(recorder, AzureWebJobsStorage=_storage(free_port()))
    del recorder.settings["AzureWebJobsStorage"]
    from_file, seconds = _timed_run(recorder)

    assert "AzureWebJobsStorage (from the environment): cannot reach" in _one_refusal(from_env)
    assert (
        f"AzureWebJobsStorage (from local.settings.json): cannot reach http://127.0.0.1:{port}"
    ) in _one_refusal(from_file)
    assert seconds < SECONDS


def test_a_storage_endpoint_that_never_answers(recorder: AppEnv) -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]

        run, seconds = _timed_run(recorder, AzureWebJobsStorage=_storage(port))

    line = _one_refusal(run)
    assert (
        f"AzureWebJobsStorage (from the environment): no answer from http://127.0.0.1:{port} "
        "within 5 s"
    ) in line
    assert seconds < SECONDS


def test_a_wrong_account_key(recorder: AppEnv, azurite: Azurite) -> None:
    wrong = AZURITE_ACCOUNT_KEY[:-6] + "AAAA=="
    connection = azurite.connection_string.replace(AZURITE_ACCOUNT_KEY, wrong)

    run, seconds = _timed_run(recorder, AzureWebJobsStorage=connection)

    assert (
        "refusing to start: AzureWebJobsStorage (from the environment): the account key was "
        "refused (403 AuthenticationFailed)"
    ) in _one_refusal(run)
    assert seconds < SECONDS


def test_a_missing_storage_setting_says_where_it_was_looked_for(recorder: AppEnv) -> None:
    del recorder.settings["AzureWebJobsStorage"]

    run = recorder.run()

    assert (
        "refusing to start: storage connection 'AzureWebJobsStorage' is not set (neither "
        "AzureWebJobsStorage nor AzureWebJobsStorage__queueServiceUri is in the environment "
        "or local.settings.json)"
    ) in _one_refusal(run)


def test_a_malformed_connection_string(recorder: AppEnv) -> None:
    run = recorder.run(AzureWebJobsStorage="AccountName=x;this is not a connection string")

    assert "AzureWebJobsStorage (from the environment): " in _one_refusal(run)


class _Unauthorized(BaseHTTPRequestHandler):
    """Answers every request as Cosmos DB answers a wrong key."""

    def do_GET(self) -> None:
        body = json.dumps({"code": "Unauthorized", "message": "The input authorization token"})
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def refusing_cosmos() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_cosmos_key_the_endpoint_refuses(recorder: AppEnv, refusing_cosmos: str) -> None:
    run, seconds = _timed_run(
        recorder, COSMOS_ENDPOINT=refusing_cosmos, COSMOS_KEY=WELL_KNOWN_COSMOS_KEY
    )

    assert (
        "refusing to start: COSMOS_KEY (from the environment): the key was refused by "
        f"{refusing_cosmos.rstrip('/')} (401 Unauthorized)"
    ) in _one_refusal(run)
    assert seconds < SECONDS


def test_a_cosmos_port_nothing_listens_on(recorder: AppEnv, tmp_path: Path) -> None:
    port = free_port()
    settings = tmp_path / "cosmos.settings.json"
    values = dict(
        recorder.settings,
        COSMOS_ENDPOINT=f"https://127.0.0.1:{port}/",
        COSMOS_KEY=WELL_KNOWN_COSMOS_KEY,
    )
    settings.write_text(json.dumps({"Values": values}))

    run, seconds = _timed_run(recorder, "--settings", str(settings))

    assert (
        f"refusing to start: COSMOS_ENDPOINT (from {settings}): cannot reach "
        f"https://127.0.0.1:{port} within 5 s (connection refused)"
    ) in _one_refusal(run)
    assert seconds < SECONDS


def test_a_missing_or_malformed_cosmos_setting(recorder: AppEnv) -> None:
    missing = recorder.run(COSMOS_KEY=WELL_KNOWN_COSMOS_KEY, COSMOS_DATABASE="db")
    empty = recorder.run(COSMOS_ENDPOINT=" ", COSMOS_KEY=WELL_KNOWN_COSMOS_KEY)
    not_url = recorder.run(COSMOS_ENDPOINT="localhost:8081", COSMOS_KEY=WELL_KNOWN_COSMOS_KEY)
    bad_key = recorder.run(COSMOS_ENDPOINT="https://127.0.0.1:1/", COSMOS_KEY="not a key!")

    assert (
        "refusing to start: COSMOS_ENDPOINT is not set (not in the environment or "
        "local.settings.json), while COSMOS_KEY (from the environment) and COSMOS_DATABASE "
        "(from the environment) are"
    ) in _one_refusal(missing)
    assert "COSMOS_ENDPOINT (from the environment) is empty" in _one_refusal(empty)
    assert "COSMOS_ENDPOINT (from the environment): 'localhost:8081' is not an http(s):// URL" in (
        _one_refusal(not_url)
    )
    assert "COSMOS_KEY (from the environment): not a Cosmos DB key (not base64)" in (
        _one_refusal(bad_key)
    )


def test_the_local_cosmos_server_passes_the_check(recorder: AppEnv, tmp_path: Path) -> None:
    run_dir = tmp_path / "cosmos"
    port = services.start_one("cosmos", run_dir, free_port())
    try:
        run = recorder.run(
            COSMOS_ENDPOINT=f"https://127.0.0.1:{port}/", COSMOS_KEY=WELL_KNOWN_COSMOS_KEY
        )
    finally:
        services.stop_one("cosmos", run_dir)

    assert run.returncode == 0, run.stderr
    assert "drained" in run.stderr


def test_an_app_without_cosmos_settings_is_not_checked(tmp_path: Path, azurite: Azurite) -> None:
    app = make_app("recorder", tmp_path, azurite)

    run = app.run()

    assert run.returncode == 0, run.stderr
    assert "COSMOS" not in run.stderr


def test_checks_can_be_turned_off_for_outage_tests(recorder: AppEnv) -> None:
    port = free_port()

    run, seconds = _timed_run(
        recorder,
        "--timeout",
        "3",
        AzureWebJobsStorage=_storage(port),
        DEVHOST_STARTUP_CHECKS="off",
    )

    assert run.returncode == 1  # started, and could not drain
    assert "refusing to start" not in run.stderr
    assert (
        "start-up checks are off (DEVHOST_STARTUP_CHECKS (from the environment)): storage and "
        "Cosmos DB are not checked"
    ) in run.stderr
    assert f"polling queue '{recorder.in_queue}' failed (retrying)" in run.stderr
    assert "counting the messages on the trigger queues failed (retrying)" in run.stderr
    assert "'drain'" not in run.stderr
    assert "not drained after 3 s" in run.stderr
    assert seconds < SECONDS  # --timeout holds even with storage down
