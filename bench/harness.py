"""What every end-to-end phase stands on: the local services (:class:`ServicePool`), one
deployment's names and settings, queue I/O (enqueue, read alerts), CPU of the service
processes, and the small statistics of the report."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import platform
import socket
import statistics
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.workload import LARGE_TRADE_USDT, b64
from devhost import services
from devhost.services import LocalServices

logger = logging.getLogger("bench.e2e")

REPO = Path(__file__).resolve().parent.parent
#: devhost's concurrency with the repository's host.json (batchSize 16 + newBatchThreshold 8).
CONCURRENCY = 24
FLOOR_BATCH = 32
ENQUEUE_CONCURRENCY = 16


# --------------------------------------------------------------------------- figures


def machine(load_before: Sequence[float]) -> dict[str, Any]:
    """The report's ``machine``: cores, Python, platform, load average before and now."""
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None (None if there are none)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def node_cpu_seconds(run_dir: Path) -> dict[str, float]:
    """User + system CPU seconds so far of each local service process."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for name in services.SERVICE_NAMES:
        try:
            pid = int((run_dir / f"{name}.pid").read_text().strip())
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            out[name] = float("nan")
    return out


def cpu_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 2) for k in before}


# --------------------------------------------------------------------------- deployment


class Names:
    """One isolated deployment's names: queues and database."""

    def __init__(self, kind: str) -> None:
        tag = uuid.uuid4().hex[:10]
        self.trades = f"{kind}-tr-{tag}"
        self.marks = f"{kind}-mk-{tag}"
        self.alerts = f"{kind}-al-{tag}"
        self.database = f"{kind}-db-{tag}"

    def queues(self) -> list[str]:
        return [
            self.trades,
            self.marks,
            self.alerts,
            f"{self.trades}-poison",
            f"{self.marks}-poison",
        ]


def cleanup(ls: LocalServices, names: Names, extra_queues: Sequence[str] = ()) -> None:
    """Delete a phase's database and queues, so every phase starts on equal footing."""
    from azure.cosmos import CosmosClient
    from azure.storage.queue import QueueServiceClient

    qs = QueueServiceClient.from_connection_string(ls.storage_connection_string)
    for queue in [*names.queues(), *extra_queues]:
        with contextlib.suppress(Exception):
            qs.delete_queue(queue)
    with (
        contextlib.suppress(Exception),
        CosmosClient(ls.cosmos_endpoint, credential=ls.settings()["COSMOS_KEY"]) as cosmos,
    ):
        cosmos.delete_database(names.database)


def write_settings(path: Path, settings: Mapping[str, str]) -> None:
    path.write_text(json.dumps({"IsEncrypted": False, "Values": dict(settings)}), encoding="utf-8")


#: App settings every phase's app gets on top of its own (``--mark-cache-seconds``).
APP_EXTRA: dict[str, str] = {}


def app_settings(
    ls: LocalServices, names: Names, alerts_queue: str | None = None
) -> dict[str, str]:
    return {
        **APP_EXTRA,
        "FUNCTIONS_WORKER_RUNTIME": "python",
        **ls.settings(),
        "TRADES_QUEUE": names.trades,
        "MARKS_QUEUE": names.marks,
        "ALERTS_QUEUE": alerts_queue or names.alerts,
        "COSMOS_DATABASE": names.database,
        # A large fill raises one LARGE_TRADE alert: its latency is enqueue → alert.
        "RISK_LARGE_TRADE_NOTIONAL": f"USDT:{LARGE_TRADE_USDT}",
    }


# --------------------------------------------------------------------------- queues


async def enqueue(
    connection: str,
    queue: str,
    messages: Sequence[Mapping[str, Any]],
    id_key: str | None = None,
    rate: float | None = None,
) -> dict[str, float]:
    """Send each message as base64 JSON (what producers write), ENQUEUE_CONCURRENCY at a time,
    or at ``rate`` per second. With ``id_key``, each body gets a ``correlationId``
    ``enq-<µs since the epoch>`` stamped just before its send, and the wall time is returned
    per id."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue.aio import QueueClient

    stamps: dict[str, float] = {}
    async with QueueClient.from_connection_string(connection, queue) as client:
        with contextlib.suppress(ResourceExistsError):
            await client.create_queue()

        async def send(message: Mapping[str, Any]) -> None:
            body = dict(message)
            if id_key is not None:
                wall = time.time()
                body["correlationId"] = f"enq-{int(wall * 1e6)}"
                stamps[str(body[id_key])] = wall
            await client.send_message(b64(body))

        if rate is None:
            pending = iter(messages)

            async def worker() -> None:
                for message in pending:
                    await send(message)

            await asyncio.gather(*(worker() for _ in range(ENQUEUE_CONCURRENCY)))
        else:
            start = time.monotonic()
            tasks = []
            for n, message in enumerate(messages):
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(send(message)))
            await asyncio.gather(*tasks)
    return stamps


def read_alerts(connection: str, queue: str) -> list[dict[str, Any]]:
    """Every alert on a queue (received with a long lease, not deleted: the queue is
    dropped afterwards), decoded."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(connection, queue)
    out: list[dict[str, Any]] = []
    try:
        while True:
            batch = list(client.receive_messages(max_messages=32, visibility_timeout=900))
            if not batch:
                return out
            out.extend(json.loads(base64.b64decode(m.content)) for m in batch)
    except ResourceNotFoundError:
        return out


def queue_count(connection: str, queue: str) -> int:
    from azure.storage.queue import QueueClient

    try:
        props = QueueClient.from_connection_string(connection, queue).get_queue_properties()
    except Exception:
        return 0
    return int(props.approximate_message_count or 0)


# --------------------------------------------------------------------------- services


class ServicePool:
    """The local services, restarted at each boundary of ``per`` (``bench``: started once;
    ``run``: fresh for each run; ``phase``: fresh for each phase), each time on free ports
    in a new run directory, stopped by process group."""

    def __init__(self, workdir: Path, per: str) -> None:
        self.workdir = workdir
        self.per = per
        self.current: Path | None = None
        self.ls: LocalServices | None = None
        self.starts = 0
        self.start_seconds: list[float] = []

    def at(self, boundary: str) -> LocalServices:
        if self.ls is not None and boundary != self.per:
            return self.ls
        self.close()
        self.starts += 1
        self.current = self.workdir / f"services-{self.starts}"
        started = time.monotonic()
        try:
            self.ls = services.start(
                run_dir=self.current, queue_port=free_port(), cosmos_port=free_port()
            )
        except BaseException:
            services.stop(self.current)
            self.current = None
            raise
        self.start_seconds.append(time.monotonic() - started)
        logger.info("services: queue %d, cosmos %d", self.ls.queue_port, self.ls.cosmos_port)
        return self.ls

    def close(self) -> None:
        if self.current is not None:
            services.stop(self.current)
        self.current = None
        self.ls = None
