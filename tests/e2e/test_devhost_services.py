"""devhost.services: both stand-ins start (Azurite with its blob, queue and table services),
are reused, restart one at a time, and stop (process group) idempotently."""

from __future__ import annotations

import json
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
    blob_port, table_port = free_port(), free_port()
    try:
        started = services.start(
            run_dir, queue_port, cosmos_port, blob_port=blob_port, table_port=table_port
        )
        assert (started.queue_port, started.cosmos_port) == (queue_port, cosmos_port)
        assert (started.blob_port, started.table_port) == (blob_port, table_port)
        assert started.settings()["AzureWebJobsStorage"].endswith(
            f"BlobEndpoint=http://127.0.0.1:{blob_port}/devstoreaccount1;"
            f"QueueEndpoint=http://127.0.0.1:{queue_port}/devstoreaccount1;"
            f"TableEndpoint=http://127.0.0.1:{table_port}/devstoreaccount1;"
        )
        assert started.settings()["COSMOS_ENDPOINT"] == f"https://127.0.0.1:{cosmos_port}/"
        assert all(_listening(port) for port in (blob_port, queue_port, table_port))
        first = services.status(run_dir)
        assert first["azurite"]["running"]
        assert first["azurite"]["ports"] == {
            "blob": blob_port,
            "queue": queue_port,
            "table": table_port,
        }
        assert first["cosmos"]["running"]
        assert json.loads((run_dir / "ports.json").read_text()) == {
            "azurite": queue_port,
            "azurite-blob": blob_port,
            "azurite-table": table_port,
            "cosmos": cosmos_port,
        }
        assert services.local_services(run_dir) == started

        again = services.start(run_dir)  # reuses the running ones, on their ports
        assert again == started
        assert services.status(run_dir) == first

        old_pid = first["azurite"]["pid"]
        services.stop_one("azurite", run_dir)
        assert not services.status(run_dir)["azurite"]["running"]
        assert not any(_listening(port) for port in (blob_port, queue_port, table_port))
        assert services.start_one("azurite", run_dir) == queue_port  # back on its ports
        assert services.status(run_dir)["azurite"]["pid"] != old_pid
        assert all(_listening(port) for port in (blob_port, queue_port, table_port))
    finally:
        pids = [int(str(v["pid"])) for v in services.status(run_dir).values() if v["pid"]]
        services.stop(run_dir)
    services.stop(run_dir)  # stopping stopped services is fine
    assert not any(entry["running"] for entry in services.status(run_dir).values())
    assert all(_gone(pid) for pid in pids)
    assert not any(_listening(port) for port in (blob_port, queue_port, table_port, cosmos_port))
    assert not list(run_dir.glob("*.pid"))


def test_blob_and_table_ports_follow_the_queue_port(tmp_path: Path) -> None:
    # Queue port 10001: the UseDevelopmentStorage=true layout.
    assert services._azurite_ports(tmp_path, 10001, None, None) == {
        "blob": 10000,
        "queue": 10001,
        "table": 10002,
    }
    # Another queue port (the tests' free ports): free ports, never the defaults.
    chosen = services._azurite_ports(tmp_path, 41234, None, None)
    assert chosen["queue"] == 41234
    assert not {chosen["blob"], chosen["table"]} & {10000, 10002}
    # Given ones win; recorded ones are reused.
    assert services._azurite_ports(tmp_path, 10001, 5, 6) == {"blob": 5, "queue": 10001, "table": 6}
    (tmp_path / "ports.json").write_text(
        json.dumps({"azurite": 41234, "azurite-blob": 7, "azurite-table": 8})
    )
    assert services._azurite_ports(tmp_path, 41234, None, None) == {
        "blob": 7,
        "queue": 41234,
        "table": 8,
    }


def test_start_refuses_a_blob_port_taken_by_another_process(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(services.ServiceError, match=f"port {port} is already in use"):
            services.start_one("azurite", tmp_path, free_port(), blob_port=port)
    assert not list(tmp_path.glob("*.pid"))


def test_start_refuses_a_port_taken_by_another_process(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(services.ServiceError, match=f"port {port} is already in use"):
            services.start_one("azurite", tmp_path, port)
