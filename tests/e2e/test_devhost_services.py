"""devhost.services: both stand-ins start, are reused, restart one at a time, and stop
(process group) idempotently."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from devhost_support import free_port

from devhost import services


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_start_stop_idempotent_and_restart_one(tmp_path: Path) -> None:
    run_dir = tmp_path / "services"
    queue_port, cosmos_port = free_port(), free_port()
    try:
        started = services.start(run_dir, queue_port, cosmos_port)
        assert (started.queue_port, started.cosmos_port) == (queue_port, cosmos_port)
        assert started.settings()["AzureWebJobsStorage"].endswith(
            f"QueueEndpoint=http://127.0.0.1:{queue_port}/devstoreaccount1;"
        )
        assert started.settings()["COSMOS_ENDPOINT"] == f"https://127.0.0.1:{cosmos_port}/"
        first = services.status(run_dir)
        assert first["azurite"]["running"]
        assert first["cosmos"]["running"]

        again = services.start(run_dir)  # reuses the running ones, on their ports
        assert again == started
        assert services.status(run_dir) == first

        old_pid = first["azurite"]["pid"]
        services.stop_one("azurite", run_dir)
        assert not services.status(run_dir)["azurite"]["running"]
        assert not _listening(queue_port)
        assert services.start_one("azurite", run_dir) == queue_port  # back on its port
        assert services.status(run_dir)["azurite"]["pid"] != old_pid
    finally:
        pids = [int(str(v["pid"])) for v in services.status(run_dir).values() if v["pid"]]
        services.stop(run_dir)
    services.stop(run_dir)  # stopping stopped services is fine
    assert not any(entry["running"] for entry in services.status(run_dir).values())
    assert all(_gone(pid) for pid in pids)
    assert not _listening(queue_port)
    assert not _listening(cosmos_port)
    assert not list(run_dir.glob("*.pid"))


def test_start_refuses_a_port_taken_by_another_process(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(services.ServiceError, match=f"port {port} is already in use"):
            services.start_one("azurite", tmp_path, port)
