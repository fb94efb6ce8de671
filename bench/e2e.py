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

This module parses the options, runs the phases and writes the report (medians, ratios).
The messages are :mod:`bench.workload`'s; the phases are :mod:`bench.pipeline`,
:mod:`bench.counts` (the app's code through :mod:`bench.inprocess`), :mod:`bench.floor` and
:mod:`bench.naive`, on :mod:`bench.harness` and :mod:`bench.devhost_run`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.counts import count_phase
from bench.floor import floor_phase
from bench.harness import (
    APP_EXTRA,
    CONCURRENCY,
    FLOOR_BATCH,
    REPO,
    ServicePool,
    machine,
    median,
    rounded,
)
from bench.naive import naive_phase
from bench.pipeline import empty_devhost, pipeline_phase
from bench.workload import make_workload

logger = logging.getLogger("bench.e2e")


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    def med(get: Callable[[Mapping[str, Any]], float | None], digits: int = 2) -> float | None:
        return rounded(median(get(r) for r in runs), digits)

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
                    pipeline["cpu_ms_per_msg"]["devhost_less_empty_run"] = rounded(
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
        "machine": machine(load_before),
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
            "services_start_s_median": rounded(median(pool.start_seconds)),
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
