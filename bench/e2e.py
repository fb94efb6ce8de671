"""End-to-end benchmark: FILL messages through devhost on the local services, next to a
floor (the least any correct pipeline does per message) and a naive peer.

Starts its own Azurite and Cosmos server on free ports (stopped at the end, by process
group), then for each run, each phase on fresh queue names and a fresh database:

- **pipeline**: deposits and marks are drained first (untimed); then N FILLs are
  enqueued and ``python -m devhost run --drain`` is timed from spawn to exit. Every K-th
  fill (``--alert-every``, default 10) is a large one (1,200 USDT) that raises one
  LARGE_TRADE alert (``RISK_LARGE_TRADE_NOTIONAL=USDT:1000``; the others are 25–603 USDT),
  so those alerts give the enqueue → alert latency; ``--alert-every 1`` alerts on every
  fill. A paced pass (devhost already listening, fills sent at a
  fixed rate) gives the latency without a backlog.
- **counts**: the same service code in process (``process_trade_message`` on the real
  Cosmos store and alert sink, wrapped by counting proxies) over a sample of fills.
- **floor**: one asyncio loop, one queue and one Cosmos client, 24 in flight: receive
  (32 per call), one account point read, one conditional write, delete. Run twice: as
  such, and with one alert sent for each large fill (the alerts this workload needs).
- **naive**: one message at a time with the synchronous SDKs, as common samples do.

Prints one JSON document on stdout; logs go to stderr.

    .venv/bin/python -m bench.e2e [--messages 1000] [--accounts 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import inspect
import json
import logging
import math
import os
import platform
import random
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from devhost import services
from devhost.services import LocalServices
from handlers.settings import APP_SETTING_PREFIXES

logger = logging.getLogger("bench.e2e")

REPO = Path(__file__).resolve().parent.parent
#: devhost's concurrency with the repository's host.json (batchSize 16 + newBatchThreshold 8).
CONCURRENCY = 24
FLOOR_BATCH = 32
ENQUEUE_CONCURRENCY = 16
#: The floor gives up when the queue yields nothing for this long (it should never).
STALL_SECONDS = 60.0
MARK_PRICES = {"BTCUSDT": 60000, "ETHUSDT": 2500}
#: A large fill: 0.02 BTC at ~60,000 = ~1,200 USDT, at or above LARGE_TRADE_USDT.
LARGE_BTC = Decimal("0.02")
LARGE_TRADE_USDT = 1000
DEPOSIT_USDT = "1000000"
LEVERAGE = 10
_RECEIVED_RE = re.compile(r"received (\d+) message\(s\)")


# --------------------------------------------------------------------------- messages


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _b64(message: Mapping[str, Any]) -> str:
    return base64.b64encode(json.dumps(message).encode()).decode()


@dataclass(frozen=True)
class Workload:
    """The messages of one pipeline: marks and deposits (set-up) and the fills."""

    accounts: list[str]
    marks: list[dict[str, Any]]
    deposits: list[dict[str, Any]]
    fills: list[dict[str, Any]]


def make_fills(
    count: int,
    accounts: Sequence[str],
    rng: random.Random,
    prefix: str,
    when: datetime,
    alert_every: int = 1,
) -> list[dict[str, Any]]:
    """Valid FILLs that only add to a position (one side per account and symbol), on tick
    and step, notional above minNotional (100 USDT BTCUSDT, 20 USDT ETHUSDT), within 0.5 %
    of the mark (the price band is 5 %). Every ``alert_every``-th is a large BTCUSDT fill
    (~1,200 USDT); the others stay below 1,000 USDT."""
    sides = {
        (a, s): ("BUY" if zlib.crc32(f"{a}/{s}".encode()) % 2 else "SELL")
        for a in accounts
        for s in MARK_PRICES
    }
    out: list[dict[str, Any]] = []
    for n in range(count):
        account = accounts[rng.randrange(len(accounts))]
        symbol = rng.choice(list(MARK_PRICES))
        large = n % alert_every == alert_every - 1
        if large:
            symbol = "BTCUSDT"
        if symbol == "BTCUSDT":  # 0.002..0.010 BTC at 59700..60300: 119..603 USDT
            quantity = LARGE_BTC if large else Decimal("0.002") * rng.randint(1, 5)
            price = f"{60000 + rng.randint(-300, 300)}.{rng.randint(0, 9)}"
        else:  # 0.01..0.10 ETH at 2490..2510: 24.9..251 USDT
            quantity = Decimal("0.01") * rng.randint(1, 10)
            price = f"{2500 + rng.randint(-10, 10)}.{rng.randint(0, 99):02d}"
        out.append(
            {
                "type": "FILL",
                "schemaVersion": 1,
                "tradeId": f"{prefix}{n:07d}",
                "accountId": account,
                "symbol": symbol,
                "side": sides[(account, symbol)],
                "quantity": str(quantity),
                "price": price,
                "leverage": LEVERAGE,
                "executedAt": _iso(when),
            }
        )
    return out


def is_large(fill: Mapping[str, Any]) -> bool:
    """Whether a fill's notional (at its price) reaches the LARGE_TRADE threshold."""
    return abs(float(fill["quantity"]) * float(fill["price"])) >= LARGE_TRADE_USDT


def make_workload(
    fills: int, accounts: int, seed: int, prefix: str = "t", alert_every: int = 1
) -> Workload:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    ids = [f"acc{i:05d}" for i in range(accounts)]
    marks = [
        {
            "type": "MARK",
            "schemaVersion": 1,
            "symbol": symbol,
            "markPrice": str(price),
            "timestamp": _iso(now - timedelta(seconds=1)),
        }
        for symbol, price in MARK_PRICES.items()
    ]
    deposits = [
        {
            "type": "TRANSFER",
            "schemaVersion": 1,
            "transferId": f"dep-{a}",
            "accountId": a,
            "asset": "USDT",
            "amount": DEPOSIT_USDT,
            "reason": "DEPOSIT",
            "occurredAt": _iso(now),
        }
        for a in ids
    ]
    return Workload(ids, marks, deposits, make_fills(fills, ids, rng, prefix, now, alert_every))


# --------------------------------------------------------------------------- helpers


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


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _parse_ts(text: str) -> float:
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


def _cpu_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 2) for k in before}


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
            await client.send_message(_b64(body))

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


# --------------------------------------------------------------------------- devhost


@dataclass
class DevhostRun:
    """One ``python -m devhost run`` subprocess, its log read line by line."""

    settings_file: Path
    log_path: Path
    drain: bool = True
    verbose: bool = True
    spawned: float = 0.0
    listening: float | None = None
    exited: float | None = None
    returncode: int | None = None
    cpu_seconds: float | None = None
    counts: Counter[str] = field(default_factory=Counter)
    listening_event: threading.Event = field(default_factory=threading.Event)
    process: subprocess.Popen[bytes] | None = None
    _reader: threading.Thread | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(APP_SETTING_PREFIXES)}
        env["PYTHONWARNINGS"] = "ignore"
        command = [sys.executable, "-m", "devhost"]
        command += ["--verbose"] if self.verbose else []
        command += ["run", "--settings", str(self.settings_file)]
        command += ["--drain", "--timeout", "900"] if self.drain else []
        self._usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.spawned = time.monotonic()
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        with self.log_path.open("wb") as log:
            for raw in self.process.stdout:
                now = time.monotonic()
                log.write(raw)
                line = raw.decode("utf-8", "replace")
                if self.listening is None and "listening:" in line:
                    self.listening = now
                    self.listening_event.set()
                if "on_trade message=" in line:
                    if "Succeeded" in line and "devhost" in line:
                        self.counts["succeeded"] += 1
                    elif "Failed" in line or "Poisoned" in line:
                        self.counts["failed"] += 1
                if "Connection pool is full" in line:
                    self.counts["connections_discarded"] += 1
                if "etag conflict" in line:
                    self.counts["etag_conflicts"] += 1
                match = _RECEIVED_RE.search(line)
                if match:
                    self.counts["receives_with_messages"] += 1
                    self.counts["received"] += int(match.group(1))

    def wait(self, timeout: float | None = None) -> int:
        assert self.process is not None
        self.returncode = self.process.wait(timeout=timeout)
        self.exited = time.monotonic()
        if self._reader is not None:
            self._reader.join(timeout=30)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_seconds = (usage.ru_utime - self._usage.ru_utime) + (
            usage.ru_stime - self._usage.ru_stime
        )
        return self.returncode

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.wait(timeout=30)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


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


def _latencies(
    alerts: Sequence[Mapping[str, Any]], stamps: Mapping[str, float]
) -> tuple[list[float], list[float], Counter[str], int]:
    """Latency (ms) of each fill's LARGE_TRADE alert, the alerts' createdAt, alert types,
    and how many alert messages repeated an alertId already read (counted once)."""
    types: Counter[str] = Counter(str(a.get("type")) for a in alerts)
    latencies: list[float] = []
    created: list[float] = []
    seen: set[str] = set()
    repeats = 0
    for alert in alerts:
        alert_id = str(alert.get("alertId"))
        if alert_id in seen:
            repeats += 1
            continue
        seen.add(alert_id)
        source = str(alert.get("sourceId"))
        if alert.get("type") == "LARGE_TRADE" and source in stamps:
            at = _parse_ts(str(alert["createdAt"]))
            created.append(at)
            latencies.append((at - stamps[source]) * 1000)
    return latencies, created, types, repeats


# --------------------------------------------------------------------------- pipeline


def pipeline_phase(
    ls: LocalServices,
    workdir: Path,
    workload: Workload,
    run: int,
    paced_messages: int,
    paced_rate: float | None,
    verbose: bool,
) -> dict[str, Any]:
    names = Names("pl")
    paced_alerts = f"pl-ap-{uuid.uuid4().hex[:10]}"
    conn = ls.storage_connection_string
    settings_file = workdir / f"pipeline-{run}.json"
    write_settings(settings_file, app_settings(ls, names))
    runs: list[DevhostRun] = []
    try:
        # Set-up (untimed): marks and deposits, drained.
        asyncio.run(enqueue(conn, names.marks, workload.marks))
        asyncio.run(enqueue(conn, names.trades, workload.deposits))
        setup = DevhostRun(settings_file, workdir / f"pipeline-{run}-setup.log", verbose=False)
        runs.append(setup)
        setup.start()
        if setup.wait(timeout=900) != 0:
            raise RuntimeError(
                f"set-up drain failed (exit {setup.returncode}); see {setup.log_path}"
            )
        read_alerts(conn, names.alerts)  # none expected; keeps the fills' alerts apart

        # Timed: N fills enqueued, then devhost --drain from spawn to exit.
        n = len(workload.fills)
        t0 = time.monotonic()
        stamps = asyncio.run(enqueue(conn, names.trades, workload.fills, id_key="tradeId"))
        enqueue_s = time.monotonic() - t0
        logger.info("run %d pipeline: %d fills enqueued in %.1f s; draining", run, n, enqueue_s)
        nodes = node_cpu_seconds(ls.run_dir)
        timed = DevhostRun(settings_file, workdir / f"pipeline-{run}.log", verbose=verbose)
        runs.append(timed)
        timed.start()
        code = timed.wait(timeout=900)
        node_cpu = _cpu_delta(nodes, node_cpu_seconds(ls.run_dir))
        assert timed.exited is not None
        wall = timed.exited - timed.spawned
        startup = (timed.listening - timed.spawned) if timed.listening is not None else None
        alerts = read_alerts(conn, names.alerts)
        latencies, created, types, repeats = _latencies(alerts, stamps)
        # Fills per second between the first and the last alert: the alerts are spread
        # evenly over the fills (one every n / alerts fills).
        steady = (
            (len(created) - 1) * (n / len(created)) / (max(created) - min(created))
            if len(created) > 1 and max(created) > min(created)
            else None
        )
        receives = timed.counts["receives_with_messages"]
        result: dict[str, Any] = {
            "messages": n,
            "exit_code": code,
            "succeeded": timed.counts["succeeded"],
            "failed_invocations": timed.counts["failed"],
            "etag_conflicts": timed.counts["etag_conflicts"],
            "connections_discarded": timed.counts["connections_discarded"],
            "alerts_by_type": dict(types),
            "fills_with_alert": len(latencies),
            "repeated_alert_messages": repeats,
            "enqueue_s": _r(enqueue_s),
            "wall_s": _r(wall),
            "startup_s": _r(startup),
            "msgs_per_s": _r(n / wall),
            "msgs_per_s_excl_startup": _r(n / (wall - startup)) if startup is not None else None,
            "steady_msgs_per_s": _r(steady),
            "latency_p50_ms": _r(percentile(latencies, 50), 1),
            "latency_p99_ms": _r(percentile(latencies, 99), 1),
            "host_receives_with_messages": receives if verbose else None,
            "host_messages_per_receive": _r(timed.counts["received"] / receives)
            if receives
            else None,
            "cpu_s": {"devhost": _r(timed.cpu_seconds), **node_cpu},
            "cpu_ms_per_msg": {
                "devhost": _r((timed.cpu_seconds or 0) * 1000 / n),
                **{k: _r(v * 1000 / n) for k, v in node_cpu.items()},
            },
        }
        if code != 0 or timed.counts["succeeded"] != n or len(latencies) != n:
            logger.warning(
                "run %d pipeline: not every fill succeeded with an alert: %s", run, result
            )

        # Paced: devhost already listening, fills at a fixed rate (no backlog).
        if paced_messages > 0:
            rate = paced_rate or max(1.0, 0.5 * (steady or n / wall))
            write_settings(settings_file, app_settings(ls, names, paced_alerts))
            fills = make_fills(
                paced_messages, workload.accounts, random.Random(run), f"p{run}-", datetime.now(UTC)
            )
            paced = DevhostRun(
                settings_file, workdir / f"pipeline-{run}-paced.log", drain=False, verbose=False
            )
            runs.append(paced)
            paced.start()
            if not paced.listening_event.wait(120):
                raise RuntimeError(f"devhost did not start listening; see {paced.log_path}")
            time.sleep(0.5)
            pstamps = asyncio.run(enqueue(conn, names.trades, fills, id_key="tradeId", rate=rate))
            deadline = time.monotonic() + 300
            while queue_count(conn, paced_alerts) < paced_messages and time.monotonic() < deadline:
                time.sleep(0.2)
            paced.stop()
            plat, _, _, _ = _latencies(read_alerts(conn, paced_alerts), pstamps)
            result.update(
                {
                    "paced_messages": paced_messages,
                    "paced_rate_msgs_per_s": _r(rate),
                    "paced_fills_with_alert": len(plat),
                    "paced_latency_p50_ms": _r(percentile(plat, 50), 1),
                    "paced_latency_p99_ms": _r(percentile(plat, 99), 1),
                }
            )
        return result
    finally:
        for r in runs:
            r.kill()
        cleanup(ls, names, [paced_alerts])


def empty_devhost(ls: LocalServices, workdir: Path) -> dict[str, Any]:
    """devhost --drain on empty queues: its start-up, drain check and exit, no message."""
    names = Names("em")
    settings_file = workdir / "empty.json"
    write_settings(settings_file, app_settings(ls, names))
    run = DevhostRun(settings_file, workdir / "empty.log", verbose=False)
    try:
        run.start()
        code = run.wait(timeout=300)
        assert run.exited is not None
        return {
            "exit_code": code,
            "wall_s": _r(run.exited - run.spawned),
            "startup_s": _r(run.listening - run.spawned) if run.listening is not None else None,
            "cpu_s": _r(run.cpu_seconds),
        }
    finally:
        run.kill()
        cleanup(ls, names)


# --------------------------------------------------------------------------- counts


class _Counting:
    """Wraps an object of async methods and counts (and times) every call by name."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        if not inspect.iscoroutinefunction(attr):  # e.g. query_items: a pager, one query

            def counted_sync(*args: Any, **kwargs: Any) -> Any:
                self.calls[name] += 1
                return attr(*args, **kwargs)

            return counted_sync

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            started = time.perf_counter()
            try:
                return await attr(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return counted

    def reset(self) -> None:
        self.calls.clear()
        self.seconds = 0.0


class _CountingAll:
    """The sum of several counters (one per Cosmos container), by container.method."""

    def __init__(self, parts: Mapping[str, _Counting]) -> None:
        self._parts = parts

    @property
    def calls(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for container, part in self._parts.items():
            out.update({f"{container}.{k}": v for k, v in part.calls.items()})
        return out

    @property
    def seconds(self) -> float:
        return sum(part.seconds for part in self._parts.values())

    def reset(self) -> None:
        for part in self._parts.values():
            part.reset()


def count_phase(ls: LocalServices, sample: Workload) -> dict[str, Any]:
    """Cosmos and queue calls per applied fill, by the service code in this process."""
    return asyncio.run(_count_phase(ls, sample))


async def _count_phase(ls: LocalServices, sample: Workload) -> dict[str, Any]:
    from handlers.adapters.cosmos_store import CosmosLedgerStore, connect
    from handlers.adapters.queues import QueueAlertSink
    from handlers.core.catalog import load_catalog
    from handlers.service import Deps, process_mark_message, process_trade_message
    from handlers.settings import load_settings

    names = Names("ct")
    cosmos: Any = None
    sink: Any = None
    try:
        settings = load_settings(app_settings(ls, names))
        assert settings.cosmos_endpoint is not None
        cosmos = connect(settings.cosmos_endpoint, settings.cosmos_key, settings.cosmos_database)
        inner = CosmosLedgerStore(cosmos, settings.cosmos_database)
        await inner.ensure()
        # Count Cosmos requests, not store methods: a read the account cache answers is
        # no request. Each container proxy of the store is wrapped; their calls are added.
        proxies = {name: _Counting(proxy) for name, proxy in inner._containers.items()}
        inner._containers.update(proxies)
        store = _CountingAll(proxies)
        sink = QueueAlertSink(settings.environ, settings.storage_connection, settings.alerts_queue)
        client = _Counting(sink._client)  # the SDK QueueClient the sink sends with
        sink._client = client  # type: ignore[assignment]
        deps = Deps(
            settings=settings,
            catalog=load_catalog(settings.instruments_file),
            store=inner,
            sink=sink,
        )
        for mark in sample.marks:
            await process_mark_message(_b64(mark).encode(), deps)
        for deposit in sample.deposits:
            outcome = await process_trade_message(_b64(deposit).encode(), deps)
            assert outcome.kind == "APPLIED"

        held: set[tuple[str, str]] = set()
        per: dict[str, dict[str, Any]] = {
            kind: {
                "fills": 0,
                "cpu_ms": [],
                "cosmos": Counter(),
                "queue": Counter(),
                "ms": [],
                "cosmos_ms": [],
                "queue_ms": [],
            }
            for kind in ("held", "opening")
        }
        for fill in sample.fills:
            key = (fill["accountId"], fill["symbol"])
            kind = "held" if key in held else "opening"
            held.add(key)
            store.reset()
            client.reset()
            cpu = time.process_time()
            started = time.perf_counter()
            outcome = await process_trade_message(_b64(fill).encode(), deps)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
            client.calls.pop("create_queue", None)  # the sink creates its queue once per process
            if outcome.kind != "APPLIED":
                raise RuntimeError(f"sample fill not applied: {outcome}")
            bucket = per[kind]
            bucket["fills"] += 1
            bucket["cosmos"].update(store.calls)
            bucket["queue"].update(client.calls)
            bucket["ms"].append(elapsed * 1000)
            bucket["cpu_ms"].append(cpu * 1000)
            bucket["cosmos_ms"].append(store.seconds * 1000)
            bucket["queue_ms"].append(client.seconds * 1000)
        out: dict[str, Any] = {}
        for kind, b in per.items():
            f = b["fills"] or 1
            cosmos_total = sum(b["cosmos"].values())
            queue_total = sum(b["queue"].values())
            out[kind] = {
                "fills": b["fills"],
                "cosmos_calls_per_fill": _r(cosmos_total / f),
                "cosmos_calls_by_method": {k: _r(v / f) for k, v in sorted(b["cosmos"].items())},
                "queue_calls_per_fill": _r(queue_total / f),
                "queue_calls_by_method": {k: _r(v / f) for k, v in sorted(b["queue"].items())},
                "ms_per_fill": _r(statistics.mean(b["ms"]) if b["ms"] else None),
                "cosmos_ms_per_fill": _r(statistics.mean(b["cosmos_ms"]) if b["ms"] else None),
                "queue_ms_per_fill": _r(statistics.mean(b["queue_ms"]) if b["ms"] else None),
            }
            if b["ms"]:
                other = [
                    t - c - q
                    for t, c, q in zip(b["ms"], b["cosmos_ms"], b["queue_ms"], strict=True)
                ]
                out[kind]["other_ms_per_fill"] = _r(statistics.mean(other))
                out[kind]["cpu_ms_per_fill"] = _r(statistics.mean(b["cpu_ms"]))
        total = sum(per[k]["fills"] for k in per) or 1
        out["app_queue_calls_per_fill"] = _r(
            sum(sum(per[k]["queue"].values()) for k in per) / total
        )
        return out
    finally:
        if cosmos is not None:
            await cosmos.close()
        if sink is not None:
            await sink.close()
        cleanup(ls, names)


# --------------------------------------------------------------------------- floor


async def _floor_loop(ls: LocalServices, names: Names, n: int, alerts: bool) -> dict[str, Any]:
    """Receive (FLOOR_BATCH per call), read the account, write it conditionally (replace
    with the ETag, or create), [send one alert,] delete; CONCURRENCY in flight."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
    from azure.cosmos.aio import CosmosClient
    from azure.cosmos.exceptions import (
        CosmosAccessConditionFailedError,
        CosmosResourceExistsError,
        CosmosResourceNotFoundError,
    )
    from azure.storage.queue.aio import QueueClient

    conflicts = 0
    done = 0
    delete_errors = 0
    started = time.monotonic()
    conn = ls.storage_connection_string
    async with (
        QueueClient.from_connection_string(conn, names.trades) as queue,
        QueueClient.from_connection_string(conn, names.alerts) as alert_queue,
        CosmosClient(ls.cosmos_endpoint, credential=ls.settings()["COSMOS_KEY"]) as cosmos,
    ):
        if alerts:
            with contextlib.suppress(ResourceExistsError):
                await alert_queue.create_queue()
        ledger = cosmos.get_database_client(names.database).get_container_client("ledger")
        slots = asyncio.Semaphore(CONCURRENCY)
        tasks: set[asyncio.Task[None]] = set()

        async def handle(message: Any) -> None:
            nonlocal conflicts, done, delete_errors
            try:
                event = json.loads(base64.b64decode(message.content))
                account = event["accountId"]
                while True:
                    try:
                        doc = await ledger.read_item(item="@account", partition_key=account)
                    except CosmosResourceNotFoundError:
                        doc = None
                    try:
                        if doc is None:
                            body = {
                                "id": "@account",
                                "accountId": account,
                                "n": 1,
                                "last": event["tradeId"],
                            }
                            await ledger.create_item(body=body)
                        else:
                            body = {k: v for k, v in doc.items() if not k.startswith("_")}
                            body["n"] = int(body["n"]) + 1
                            body["last"] = event["tradeId"]
                            await ledger.replace_item(
                                item="@account",
                                body=body,
                                etag=doc["_etag"],
                                match_condition=MatchConditions.IfNotModified,
                            )
                        break
                    except (CosmosAccessConditionFailedError, CosmosResourceExistsError):
                        conflicts += 1
                if alerts and is_large(event):
                    alert = {
                        "type": "LARGE_TRADE",
                        "sourceId": event["tradeId"],
                        "accountId": account,
                    }
                    await alert_queue.send_message(_b64(alert))
                try:
                    await queue.delete_message(message)
                except ResourceNotFoundError:
                    delete_errors += 1
                done += 1
            finally:
                slots.release()

        received = 0
        last_seen = time.monotonic()
        while received < n and time.monotonic() - last_seen < STALL_SECONDS:
            pages = queue.receive_messages(
                messages_per_page=FLOOR_BATCH, visibility_timeout=300
            ).by_page()
            batch = []
            async for page in pages:
                batch = [m async for m in page]
                break
            if not batch:
                await asyncio.sleep(0.05)
                continue
            last_seen = time.monotonic()
            received += len(batch)
            for message in batch:
                await slots.acquire()
                task = asyncio.create_task(handle(message))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks))
    seconds = time.monotonic() - started
    if received < n:
        logger.warning(
            "floor: %d of %d messages received before a %g s stall", received, n, STALL_SECONDS
        )
    return {
        "seconds": seconds,
        "processed": done,
        "etag_conflicts": conflicts,
        "delete_errors": delete_errors,
    }


def floor_phase(ls: LocalServices, workload: Workload, run: int, alerts: bool) -> dict[str, Any]:
    from azure.cosmos import CosmosClient, PartitionKey

    names = Names("fa" if alerts else "fl")
    try:
        with CosmosClient(ls.cosmos_endpoint, credential=ls.settings()["COSMOS_KEY"]) as cosmos:
            db = cosmos.create_database(names.database)
            db.create_container(id="ledger", partition_key=PartitionKey(path="/accountId"))
        asyncio.run(enqueue(ls.storage_connection_string, names.trades, workload.fills))
        n = len(workload.fills)
        nodes = node_cpu_seconds(ls.run_dir)
        cpu = time.process_time()
        stats = asyncio.run(_floor_loop(ls, names, n, alerts))
        cpu = time.process_time() - cpu
        node_cpu = _cpu_delta(nodes, node_cpu_seconds(ls.run_dir))
        logger.info(
            "run %d floor%s: %d messages in %.1f s",
            run,
            " with alerts" if alerts else "",
            n,
            stats["seconds"],
        )
        return {
            "messages": n,
            "processed": stats["processed"],
            "etag_conflicts": stats["etag_conflicts"],
            "delete_errors": stats["delete_errors"],
            "wall_s": _r(stats["seconds"]),
            "msgs_per_s": _r(n / stats["seconds"]),
            "cpu_ms_per_msg": {
                "bench": _r(cpu * 1000 / n),
                **{k: _r(v * 1000 / n) for k, v in node_cpu.items()},
            },
        }
    finally:
        cleanup(ls, names)


# --------------------------------------------------------------------------- naive


def naive_phase(ls: LocalServices, workload: Workload, n: int, run: int) -> dict[str, Any]:
    """One message at a time, synchronous SDKs, a read and an upsert per document (the
    trade, then the account), no ETags, float maths."""
    from azure.cosmos import CosmosClient, PartitionKey
    from azure.cosmos.exceptions import CosmosResourceNotFoundError
    from azure.storage.queue import QueueClient

    names = Names("nv")
    conn = ls.storage_connection_string
    cosmos: CosmosClient | None = None
    try:
        asyncio.run(enqueue(conn, names.trades, workload.fills[:n]))
        nodes = node_cpu_seconds(ls.run_dir)
        cpu = time.process_time()
        started = time.monotonic()
        # -- the sample's code, set-up included (as a sample's script runs it) --
        cosmos = CosmosClient(ls.cosmos_endpoint, credential=ls.settings()["COSMOS_KEY"])
        database = cosmos.create_database_if_not_exists(names.database)
        container = database.create_container_if_not_exists(
            id="ledger", partition_key=PartitionKey(path="/accountId")
        )
        trades = QueueClient.from_connection_string(conn, names.trades)
        alerts = QueueClient.from_connection_string(conn, names.alerts)
        with contextlib.suppress(Exception):
            alerts.create_queue()
        processed = 0
        while processed < n:
            message = trades.receive_message(visibility_timeout=30)
            if message is None:
                time.sleep(0.05)
                continue
            data = json.loads(base64.b64decode(message.content))
            account_id = data["accountId"]
            # A read and an upsert per document (the definition): the trade first,
            # the samples' "skip it if it exists", then the account.
            try:
                container.read_item(item=data["tradeId"], partition_key=account_id)
                trades.delete_message(message)  # a redelivery: already recorded
                processed += 1
                continue
            except CosmosResourceNotFoundError:
                pass
            account: dict[str, Any]
            try:
                account = dict(container.read_item(item=account_id, partition_key=account_id))
            except CosmosResourceNotFoundError:
                account = {
                    "id": account_id,
                    "accountId": account_id,
                    "balance": 0.0,
                    "positions": {},
                }
            qty = float(data["quantity"]) * (1 if data["side"] == "BUY" else -1)
            price = float(data["price"])
            position = account["positions"].setdefault(data["symbol"], {"qty": 0.0, "entry": 0.0})
            new_qty = position["qty"] + qty
            if new_qty:
                position["entry"] = (position["qty"] * position["entry"] + qty * price) / new_qty
            position["qty"] = new_qty
            notional = abs(qty * price)
            account["balance"] -= float(data.get("fee", 0))
            account["margin"] = (
                sum(abs(p["qty"] * p["entry"]) for p in account["positions"].values())
                / data["leverage"]
            )
            container.upsert_item(account)
            container.upsert_item({**data, "id": data["tradeId"]})
            if notional >= LARGE_TRADE_USDT:
                alerts.send_message(
                    json.dumps(
                        {
                            "type": "LARGE_TRADE",
                            "accountId": account_id,
                            "tradeId": data["tradeId"],
                            "notional": notional,
                        }
                    )
                )
            trades.delete_message(message)
            processed += 1
        seconds = time.monotonic() - started
        cpu = time.process_time() - cpu
        node_cpu = _cpu_delta(nodes, node_cpu_seconds(ls.run_dir))
        logger.info("run %d naive: %d messages in %.1f s", run, n, seconds)
        return {
            "messages": n,
            "wall_s": _r(seconds),
            "msgs_per_s": _r(n / seconds),
            "cpu_ms_per_msg": {
                "bench": _r(cpu * 1000 / n),
                **{k: _r(v * 1000 / n) for k, v in node_cpu.items()},
            },
        }
    finally:
        if cosmos is not None:
            cosmos.close()
        cleanup(ls, names)


# --------------------------------------------------------------------------- main


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


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    def med(get: Callable[[Mapping[str, Any]], float | None], digits: int = 2) -> float | None:
        return _r(_median(get(r) for r in runs), digits)

    def host_calls(r: Mapping[str, Any]) -> float | None:
        per_receive = r["pipeline"].get("host_messages_per_receive")
        app = r["counts"]["app_queue_calls_per_fill"]
        return None if not per_receive else app + 1 + 1 / per_receive  # + delete + receive share

    return {
        "pipeline_msgs_per_s": med(lambda r: r["pipeline"]["msgs_per_s"]),
        "pipeline_msgs_per_s_excl_startup": med(lambda r: r["pipeline"]["msgs_per_s_excl_startup"]),
        "pipeline_steady_msgs_per_s": med(lambda r: r["pipeline"]["steady_msgs_per_s"]),
        "devhost_startup_s": med(lambda r: r["pipeline"]["startup_s"]),
        "floor_msgs_per_s": med(lambda r: r["floor"]["msgs_per_s"]),
        "floor_with_alerts_msgs_per_s": med(lambda r: r["floor_with_alerts"]["msgs_per_s"]),
        "naive_msgs_per_s": med(lambda r: r["naive"]["msgs_per_s"]),
        "pipeline_to_floor": med(
            lambda r: _ratio(r["pipeline"]["msgs_per_s"], r["floor"]["msgs_per_s"]), 3
        ),
        "pipeline_excl_startup_to_floor": med(
            lambda r: _ratio(r["pipeline"]["msgs_per_s_excl_startup"], r["floor"]["msgs_per_s"]), 3
        ),
        "pipeline_to_floor_with_alerts": med(
            lambda r: _ratio(r["pipeline"]["msgs_per_s"], r["floor_with_alerts"]["msgs_per_s"]), 3
        ),
        "pipeline_to_naive": med(
            lambda r: _ratio(r["pipeline"]["msgs_per_s"], r["naive"]["msgs_per_s"]), 3
        ),
        "latency_p50_ms": med(lambda r: r["pipeline"]["latency_p50_ms"], 1),
        "latency_p99_ms": med(lambda r: r["pipeline"]["latency_p99_ms"], 1),
        "paced_rate_msgs_per_s": med(lambda r: r["pipeline"].get("paced_rate_msgs_per_s")),
        "paced_latency_p50_ms": med(lambda r: r["pipeline"].get("paced_latency_p50_ms"), 1),
        "paced_latency_p99_ms": med(lambda r: r["pipeline"].get("paced_latency_p99_ms"), 1),
        "cosmos_calls_per_fill_held": med(lambda r: r["counts"]["held"]["cosmos_calls_per_fill"]),
        "cosmos_calls_per_fill_opening": med(
            lambda r: r["counts"]["opening"]["cosmos_calls_per_fill"]
        ),
        "queue_calls_per_fill": med(host_calls),
        "app_queue_calls_per_fill": med(lambda r: r["counts"]["app_queue_calls_per_fill"]),
        "devhost_cpu_ms_per_msg": med(lambda r: r["pipeline"]["cpu_ms_per_msg"]["devhost"]),
        "devhost_cpu_ms_per_msg_less_empty_run": med(
            lambda r: r["pipeline"]["cpu_ms_per_msg"].get("devhost_less_empty_run")
        ),
        "floor_bench_cpu_ms_per_msg": med(lambda r: r["floor"]["cpu_ms_per_msg"]["bench"]),
        "azurite_cpu_ms_per_msg_pipeline": med(
            lambda r: r["pipeline"]["cpu_ms_per_msg"]["azurite"]
        ),
        "azurite_cpu_ms_per_msg_floor": med(lambda r: r["floor"]["cpu_ms_per_msg"]["azurite"]),
        "azurite_cpu_ms_per_msg_floor_with_alerts": med(
            lambda r: r["floor_with_alerts"]["cpu_ms_per_msg"]["azurite"]
        ),
        "connections_discarded_per_msg": med(
            lambda r: r["pipeline"]["connections_discarded"] / r["pipeline"]["messages"], 3
        ),
        "service_cpu_ms_per_fill_in_process_held": med(
            lambda r: r["counts"]["held"].get("cpu_ms_per_fill")
        ),
    }


def _commit() -> str | None:
    """The repository's HEAD, with ``+dirty`` when the app's files differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--",
                "handlers",
                "devhost",
                "function_app.py",
                "host.json",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return (head + ("+dirty" if dirty else "")) or None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000, help="fills per run (default 1000)")
    parser.add_argument("--accounts", type=int, default=100, help="accounts (default 100)")
    parser.add_argument("--runs", type=int, default=3, help="runs; medians over them (default 3)")
    parser.add_argument(
        "--naive-messages",
        type=int,
        default=300,
        help="messages the naive peer processes per run (default min(300, --messages): it "
        "goes one at a time, so its rate does not depend on the count)",
    )
    parser.add_argument(
        "--sample", type=int, default=200, help="fills of the in-process call count (default 200)"
    )
    parser.add_argument(
        "--paced-messages", type=int, default=200, help="fills of the paced latency pass (0: skip)"
    )
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=None,
        help="msgs/s of the paced pass (default: half the run's steady pipeline rate)",
    )
    parser.add_argument(
        "--no-verbose",
        action="store_true",
        help="run the timed devhost without --verbose (then receives per message are unknown)",
    )
    parser.add_argument(
        "--services-per",
        choices=("bench", "run", "phase"),
        default="phase",
        help="start fresh local services once (bench), for each run, or for each phase "
        "(default: Azurite's in-memory store was seen to slow down as a process ages)",
    )
    parser.add_argument(
        "--alert-every",
        type=int,
        default=10,
        help="every K-th fill is large and raises a LARGE_TRADE alert (default 10; 1: all)",
    )
    parser.add_argument(
        "--mark-cache-seconds",
        default=None,
        help="MARK_CACHE_SECONDS for the app (default: the app's own, 0); 1 lets a fill that "
        "opens a symbol take the process's copy of the mark",
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.mark_cache_seconds is not None:
        APP_EXTRA["MARK_CACHE_SECONDS"] = str(args.mark_cache_seconds)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in ("azure", "urllib3", "handlers", "tradeguard", "devhost"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # A sync Cosmos client closed right after use logs its background health check failing.
    logging.getLogger("azure.cosmos._GlobalEndpointManager").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message="Unverified HTTPS request")

    if args.alert_every < 1:
        parser.error("--alert-every must be at least 1")
    workload = make_workload(args.messages, args.accounts, args.seed, alert_every=args.alert_every)
    sample = make_workload(
        args.sample, max(1, args.sample // 10), args.seed + 1, "s", args.alert_every
    )
    naive_n = min(args.naive_messages, args.messages)
    started = time.monotonic()
    load_before = os.getloadavg()
    results: list[dict[str, Any]] = []
    empty: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        workdir = Path(tmp)
        pool = ServicePool(workdir, args.services_per)
        try:
            empty = empty_devhost(pool.at("bench"), workdir)
            logger.info("devhost on empty queues: %s", json.dumps(empty))
            for run in range(1, args.runs + 1):
                logger.info("run %d/%d", run, args.runs)
                pool.at("run")
                pipeline = pipeline_phase(
                    pool.at("phase"),
                    workdir,
                    workload,
                    run,
                    min(args.paced_messages, args.messages),
                    args.paced_rate,
                    not args.no_verbose,
                )
                if pipeline["cpu_s"]["devhost"] is not None and empty["cpu_s"] is not None:
                    pipeline["cpu_ms_per_msg"]["devhost_less_empty_run"] = _r(
                        (pipeline["cpu_s"]["devhost"] - empty["cpu_s"]) * 1000 / args.messages
                    )
                logger.info("run %d pipeline: %s", run, json.dumps(pipeline))
                counts = count_phase(pool.at("phase"), sample)
                floor = floor_phase(pool.at("phase"), workload, run, alerts=False)
                floor_alerts = floor_phase(pool.at("phase"), workload, run, alerts=True)
                naive = naive_phase(pool.at("phase"), workload, naive_n, run)
                results.append(
                    {
                        "run": run,
                        "pipeline": pipeline,
                        "counts": counts,
                        "floor": floor,
                        "floor_with_alerts": floor_alerts,
                        "naive": naive,
                    }
                )
        finally:
            pool.close()
    document = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "params": {
            "messages": args.messages,
            "accounts": args.accounts,
            "runs": args.runs,
            "naive_messages": naive_n,
            "count_sample_fills": args.sample,
            "count_sample_accounts": max(1, args.sample // 10),
            "paced_messages": min(args.paced_messages, args.messages),
            "concurrency": CONCURRENCY,
            "floor_batch": FLOOR_BATCH,
            "devhost_verbose": not args.no_verbose,
            "services_per": args.services_per,
            "services_starts": pool.starts,
            "services_start_s_median": _r(_median(pool.start_seconds)),
            "alert_every": args.alert_every,
            "app_settings_extra": dict(APP_EXTRA),
            "seed": args.seed,
            "commit": _commit(),
            "total_s": round(time.monotonic() - started, 1),
        },
        "devhost_empty_drain": empty,
        "runs": results,
        "median": summarize(results),
    }
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
