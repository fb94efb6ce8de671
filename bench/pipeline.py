"""The pipeline phase of the end-to-end bench: N fills through ``python -m devhost run
--drain`` (timed spawn to exit; alerts give enqueue → alert latency), a paced pass without a
backlog, and devhost on empty queues (its fixed cost)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.devhost_run import DevhostRun
from bench.harness import (
    Names,
    app_settings,
    cleanup,
    cpu_delta,
    enqueue,
    node_cpu_seconds,
    parse_ts,
    percentile,
    queue_count,
    read_alerts,
    rounded,
    write_settings,
)
from bench.workload import Workload, make_fills
from devhost.services import LocalServices

logger = logging.getLogger("bench.e2e")


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
            at = parse_ts(str(alert["createdAt"]))
            created.append(at)
            latencies.append((at - stamps[source]) * 1000)
    return latencies, created, types, repeats


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
        node_cpu = cpu_delta(nodes, node_cpu_seconds(ls.run_dir))
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
            "enqueue_s": rounded(enqueue_s),
            "wall_s": rounded(wall),
            "startup_s": rounded(startup),
            "msgs_per_s": rounded(n / wall),
            "msgs_per_s_excl_startup": rounded(n / (wall - startup))
            if startup is not None
            else None,
            "steady_msgs_per_s": rounded(steady),
            "latency_p50_ms": rounded(percentile(latencies, 50), 1),
            "latency_p99_ms": rounded(percentile(latencies, 99), 1),
            "host_receives_with_messages": receives if verbose else None,
            "host_messages_per_receive": rounded(timed.counts["received"] / receives)
            if receives
            else None,
            "cpu_s": {"devhost": rounded(timed.cpu_seconds), **node_cpu},
            "cpu_ms_per_msg": {
                "devhost": rounded((timed.cpu_seconds or 0) * 1000 / n),
                **{k: rounded(v * 1000 / n) for k, v in node_cpu.items()},
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
                    "paced_rate_msgs_per_s": rounded(rate),
                    "paced_fills_with_alert": len(plat),
                    "paced_latency_p50_ms": rounded(percentile(plat, 50), 1),
                    "paced_latency_p99_ms": rounded(percentile(plat, 99), 1),
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
            "wall_s": rounded(run.exited - run.spawned),
            "startup_s": rounded(run.listening - run.spawned)
            if run.listening is not None
            else None,
            "cpu_s": rounded(run.cpu_seconds),
        }
    finally:
        run.kill()
        cleanup(ls, names)
