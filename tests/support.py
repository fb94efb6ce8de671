"""Helpers for tests that run the app on the real local services (Azurite, Cosmos server).

:class:`AppUnderTest` is one isolated deployment: its own queue names and database on the
session's services, a settings file, and ways to send, run devhost, and read results. Built
on the ``slow_cosmos`` fixture's services, its Cosmos requests take Azure's 5-10 ms.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.cosmos import CosmosClient
from azure.cosmos.exceptions import CosmosResourceNotFoundError
from azure.storage.queue import QueueServiceClient

from devhost.services import LocalServices
from handlers.settings import APP_SETTING_PREFIXES

REPO = Path(__file__).resolve().parent.parent
#: The latency of the ``slow_cosmos`` fixture's server: Azure's usual 5-10 ms per request.
SLOW_COSMOS_LATENCY_MS = "5-10"


def entry_done(
    account_id: str, entry: Mapping[str, Any], records: Mapping[tuple[str, str], Mapping[str, Any]]
) -> bool:
    """Whether a stored outbox entry of an account is done: its record exists (``records``:
    (partition, id) → document); for a mark pass's entry, its invocation's pass-sent
    marker lists the account, or a sent marker of that id is in the account's partition."""
    if "doneIn" in entry:
        marker = records.get((entry["doneIn"], entry["doneId"]))
        if marker is not None and account_id in marker.get("accounts", ()):
            return True
        return (account_id, entry["doneId"]) in records
    return (account_id, entry.get("recordId") or entry["record"]["id"]) in records


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def body_of(message: Mapping[str, Any] | str | bytes, encode: bool = True) -> str:
    """Queue text for a message: base64 of its JSON by default (what producers write)."""
    if isinstance(message, Mapping):
        raw = json.dumps(message).encode()
    elif isinstance(message, str):
        raw = message.encode()
    else:
        raw = message
    return base64.b64encode(raw).decode() if encode else raw.decode("utf-8", "surrogateescape")


#: Overrides that point an app away from the session's services make an outage test: devhost
#: then starts without its start-up checks (which would refuse the service that is down).
OUTAGE_SETTINGS = ("AzureWebJobsStorage", "COSMOS_ENDPOINT")


@dataclass
class AppUnderTest:
    """One isolated app: unique queues and database on the shared local services.

    ``overrides`` that set ``AzureWebJobsStorage`` or ``COSMOS_ENDPOINT`` (an outage test)
    also turn devhost's start-up checks off (``DEVHOST_STARTUP_CHECKS=off``)."""

    services: LocalServices
    workdir: Path
    overrides: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.tag = tag
        self.settings: dict[str, str] = {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            **self.services.settings(),
            "TRADES_QUEUE": f"tr-{tag}",
            "MARKS_QUEUE": f"mk-{tag}",
            "ALERTS_QUEUE": f"al-{tag}",
            "ORDERS_QUEUE": f"or-{tag}",
            "ORDER_DECISIONS_QUEUE": f"od-{tag}",
            "COSMOS_DATABASE": f"db-{tag}",
            **(
                {"DEVHOST_STARTUP_CHECKS": "off"}
                if any(name in self.overrides for name in OUTAGE_SETTINGS)
                else {}
            ),
            **self.overrides,
        }
        self.settings_file = self.workdir / f"settings-{tag}.json"
        self.settings_file.write_text(
            json.dumps({"IsEncrypted": False, "Values": self.settings}), encoding="utf-8"
        )
        self.queues = QueueServiceClient.from_connection_string(
            self.services.storage_connection_string
        )
        self._cosmos = CosmosClient(
            self.services.cosmos_endpoint, credential=self.services.settings()["COSMOS_KEY"]
        )

    # -- queues ------------------------------------------------------------------------

    def queue_name(self, setting: str) -> str:
        return self.settings[setting]

    def send(
        self,
        messages: Iterable[Mapping[str, Any] | str | bytes],
        queue: str = "TRADES_QUEUE",
        encode: bool = True,
    ) -> int:
        """Send each message (base64 of its JSON by default); ``queue`` is a setting name
        or a literal queue name."""
        name = self.settings.get(queue, queue)
        client = self.queues.get_queue_client(name)
        try:
            client.create_queue()
        except Exception:
            pass
        count = 0
        for message in messages:
            client.send_message(body_of(message, encode))
            count += 1
        return count

    def drain_queue(self, name: str) -> list[str]:
        """Receive and delete every message of a queue; their texts."""
        client = self.queues.get_queue_client(self.settings.get(name, name))
        out: list[str] = []
        try:
            while True:
                batch = list(client.receive_messages(max_messages=32, visibility_timeout=30))
                if not batch:
                    return out
                for m in batch:
                    out.append(m.content)
                    client.delete_message(m)
        except Exception as exc:
            if "QueueNotFound" in str(exc):
                return out
            raise

    def peek_count(self, name: str) -> int:
        client = self.queues.get_queue_client(self.settings.get(name, name))
        try:
            return int(client.get_queue_properties().approximate_message_count or 0)
        except Exception as exc:
            if "QueueNotFound" in str(exc):
                return 0
            raise

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert on the alerts queue (consumed), decoded from base64."""
        return [json.loads(base64.b64decode(t)) for t in self.drain_queue("ALERTS_QUEUE")]

    # -- devhost -----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(APP_SETTING_PREFIXES)}
        env["PYTHONWARNINGS"] = "ignore"
        return env

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """``python -m devhost run --drain --settings <file> [args]`` in the repo."""
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "devhost",
                "run",
                "--drain",
                "--settings",
                str(self.settings_file),
                *args,
            ],
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # -- cosmos ------------------------------------------------------------------------

    def container(self, name: str) -> Any:
        return self._cosmos.get_database_client(
            self.settings["COSMOS_DATABASE"]
        ).get_container_client(name)

    def read(self, container: str, item: str, partition: str) -> dict[str, Any] | None:
        try:
            return dict(self.container(container).read_item(item=item, partition_key=partition))
        except CosmosResourceNotFoundError:
            return None

    def account(self, account_id: str) -> dict[str, Any] | None:
        return self.read("ledger", "@account", account_id)

    def record(self, partition: str, record_id: str) -> dict[str, Any] | None:
        return self.read("ledger", record_id, partition)

    def query(self, container: str, sql: str, **params: Any) -> list[dict[str, Any]]:
        parameters = [{"name": f"@{k}", "value": v} for k, v in params.items()]
        return list(
            self.container(container).query_items(
                sql, parameters=parameters, enable_cross_partition_query=True
            )
        )
