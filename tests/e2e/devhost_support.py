"""Helpers for devhost's end-to-end tests: the session's Azurite, test apps with unique
queue names, and a runner for ``python -m devhost`` as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueServiceClient

REPO_ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
RESERVED_PORTS = {10000, 10001, 10002, 8081}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (never a default port of the local
    services: 10000-10002, 8081)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port


@dataclass(frozen=True)
class Azurite:
    """The session's Azurite: its connection string and run directory."""

    connection_string: str
    port: int
    run_dir: Path

    def service(self) -> QueueServiceClient:
        return QueueServiceClient.from_connection_string(self.connection_string)


@dataclass
class Run:
    """What one devhost run left behind."""

    returncode: int
    stdout: str
    stderr: str


@dataclass
class AppEnv:
    """A test app with its own queue names, record file and settings."""

    app_dir: Path
    settings: dict[str, str]
    record_file: Path
    azurite: Azurite

    @property
    def in_queue(self) -> str:
        return self.settings["IN_QUEUE"]

    @property
    def poison_queue(self) -> str:
        return self.settings["IN_QUEUE"] + "-poison"

    @property
    def out_queue(self) -> str:
        return self.settings["OUT_QUEUE"]

    @property
    def async_queue(self) -> str:
        return self.settings["ASYNC_QUEUE"]

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in _APP_SETTING_NAMES and not k.startswith("COSMOS_")
        }
        env.update(self.settings)
        env.update(extra)
        env["PYTHONPATH"] = str(REPO_ROOT)
        return env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "devhost", "run", "--app-dir", str(self.app_dir), *args]

    def run(self, *args: str, timeout: float = 30, **extra: str) -> Run:
        """Run ``devhost run --drain`` (plus ``args``) to completion."""
        done = subprocess.run(
            self.command("--drain", *args),
            cwd=REPO_ROOT,
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Run(done.returncode, done.stdout, done.stderr)

    def serve(
        self,
        until: Callable[[], bool],
        *args: str,
        timeout: float = 30,
        **extra: str,
    ) -> Run:
        """Run ``devhost run`` (no --drain) until ``until()`` holds (or ``timeout``), then
        stop it with SIGTERM and wait for it to exit."""
        process = subprocess.Popen(
            self.command(*args),
            cwd=REPO_ROOT,
            env=self.env(**extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and process.poll() is None and not until():
                time.sleep(0.05)
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        return Run(process.returncode, stdout, stderr)

    def records(self, function: str | None = None) -> list[dict[str, Any]]:
        if not self.record_file.exists():
            return []
        rows = [json.loads(line) for line in self.record_file.read_text().splitlines() if line]
        return [row for row in rows if function is None or row["fn"] == function]

    def send(self, queue: str, content: str, **kwargs: Any) -> str:
        client = self.azurite.service().get_queue_client(queue)
        with contextlib.suppress(ResourceExistsError):
            client.create_queue()
        return str(client.send_message(content, **kwargs).id)

    def peek(self, queue: str) -> list[Any]:
        client = self.azurite.service().get_queue_client(queue)
        try:
            return list(client.peek_messages(max_messages=32))
        except Exception:  # no such queue
            return []

    def count(self, queue: str) -> int:
        client = self.azurite.service().get_queue_client(queue)
        try:
            return int(client.get_queue_properties().approximate_message_count or 0)
        except Exception:  # no such queue
            return 0


_APP_SETTING_NAMES = {
    "AzureWebJobsStorage",
    "IN_QUEUE",
    "OUT_QUEUE",
    "ASYNC_QUEUE",
    "RECORD_FILE",
    "DEVHOST_MESSAGE_LEASE_SECONDS",
    "PYTHON_THREADPOOL_THREAD_COUNT",
    "TICK_SCHEDULE",
    "TICK_SLEEP",
    "DEVHOST_STARTUP_CHECKS",
}


def make_app(
    name: str, tmp_path: Path, azurite: Azurite, queues: dict[str, Any] | None = None
) -> AppEnv:
    """Copy ``apps/<name>`` into ``tmp_path`` (overriding ``extensions.queues`` options
    with ``queues``) and give it unique queue names."""
    app_dir = tmp_path / name
    shutil.copytree(APPS / name, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
    if queues:
        host_json = app_dir / "host.json"
        document = json.loads(host_json.read_text())
        document.setdefault("extensions", {}).setdefault("queues", {}).update(queues)
        host_json.write_text(json.dumps(document, indent=2))
    suffix = uuid.uuid4().hex[:12]
    record_file = tmp_path / "records.jsonl"
    settings = {
        "AzureWebJobsStorage": azurite.connection_string,
        "IN_QUEUE": f"in-{suffix}",
        "OUT_QUEUE": f"out-{suffix}",
        "ASYNC_QUEUE": f"async-{suffix}",
        "RECORD_FILE": str(record_file),
        "TICK_SCHEDULE": "*/1 * * * * *",
    }
    return AppEnv(app_dir, settings, record_file, azurite)
