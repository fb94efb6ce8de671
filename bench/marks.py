"""Marks at scale, end to end: what one MARK or MARKS costs with H holders of BTCUSDT,
through ``python -m devhost run --drain`` on the local Azurite and Cosmos server.

It stands only on the app's outside: settings, queue names, the devhost command line, the
alerts queue and Cosmos over HTTP (a counting proxy in front of each service, so the
requests of every devhost process are counted by kind). So the same command measures the
code before and after a change in how marks are processed.

Per ``--holders`` H (fresh services each time):

- **set-up** (untimed): H deposits, then H fills (each opens 0.1 BTCUSDT long, cross,
  leverage 20, at 60,000), then one MARK at 60,000, each drained by devhost. 5 % of the
  accounts (every 20th) hold just enough margin that the MARK at 57,000 puts them into
  MARGIN_CALL (half of them, 325 USDT) or LIQUIDATION (the other half, 310 USDT); the
  others hold 400–10,000 USDT and stay NORMAL all along.
- then for each ``--devhosts`` count, a cycle of three timed scenarios, each one message
  enqueued and then N devhosts ``run --drain`` started at once:

  - ``idle``: nothing enqueued: what the devhosts' start and drain cost by themselves
    (subtract it from a scenario's devhost CPU for the work of its message);
  - ``quiet``: a MARK at 59,900, no risk state changes (no alert);
  - ``five-percent``: a MARK at 57,000, 5 % of the accounts change state (one
    MARGIN_CALL or LIQUIDATION_RISK alert each);
  - ``batch-60``: one MARKS of 60 entries walking up from 57,050 to 60,000 (+50 each,
    timestamps +1 s): each of the 5 % returns to NORMAL once (one RISK_RECOVERED).

  A cycle ends where it began (every account NORMAL at 60,000), so cycles repeat.

Prints one JSON document on stdout; logs go to stderr.

    .venv/bin/python -m bench.marks [--holders 1000] [--devhosts 1,2] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.devhost_run import DevhostRun
from bench.harness import (
    APP_EXTRA,
    Names,
    ServicePool,
    app_settings,
    cleanup,
    cpu_delta,
    enqueue,
    machine,
    median,
    node_cpu_seconds,
    parse_ts,
    read_alerts,
    rounded,
    write_settings,
)
from bench.proxy import CountingProxy, cosmos_kind, queue_kind
from bench.workload import b64, deposit, fill, iso, mark
from devhost.services import LocalServices

logger = logging.getLogger("bench.marks")

SYMBOL = "BTCUSDT"
ENTRY = Decimal("60000")
QUIET = Decimal("59900")
TARGET = Decimal("57000")
WALK_STEP = Decimal("50")
WALK_ENTRIES = 60
QUANTITY = "0.1"
LEVERAGE = 20
#: Every RISKY_EVERY-th account is one of the 5 %; of those, every other one goes to
#: LIQUIDATION at TARGET (margin balance 10 against 22.8 maintenance), the others to
#: MARGIN_CALL (25 against 22.8: ratio 0.91). Both are NORMAL again above 57,186.
RISKY_EVERY = 20
MARGIN_CALL_DEPOSIT = "325"
LIQUIDATION_DEPOSIT = "310"
#: The others: 400..10,000 USDT (ratio at most 0.23 at TARGET).
SAFE_DEPOSIT_MIN = 400
SAFE_DEPOSIT_SPREAD = 9600
#: What the app reads besides the phase's names: the documented LARGE_TRADE threshold (the
#: e2e bench's 1,000 USDT would alert on every 6,000 USDT opening fill).
MARKS_APP_SETTINGS = {"RISK_LARGE_TRADE_NOTIONAL": "USDT:1000000,BTC:20"}
DRAIN_TIMEOUT = 1800
SETUP_CHUNK = 1000
SCENARIOS = ("idle", "quiet", "five-percent", "batch-60")

#: devhost's one line per message: ``on_mark message=<id> dequeueCount=1 Succeeded (12 ms)``.
_INVOCATION_RE = re.compile(r"(\w+) message=\S+ dequeueCount=\d+ (\w+) \(")


# --------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    """The accounts of H holders, their set-up messages, and what each scenario's message
    is expected to raise. Timestamps come from one clock that only moves forward."""

    holders: int
    start: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(days=2))
    ticks: int = 0

    def account(self, i: int) -> str:
        return f"h{i:05d}"

    def deposit_of(self, i: int) -> str:
        if i % RISKY_EVERY:
            return str(SAFE_DEPOSIT_MIN + (i * 7919) % SAFE_DEPOSIT_SPREAD)
        return LIQUIDATION_DEPOSIT if (i // RISKY_EVERY) % 2 else MARGIN_CALL_DEPOSIT

    @property
    def margin_calls(self) -> int:
        return sum(1 for i in range(0, self.holders, RISKY_EVERY) if (i // RISKY_EVERY) % 2 == 0)

    @property
    def liquidations(self) -> int:
        return len(range(0, self.holders, RISKY_EVERY)) - self.margin_calls

    def _next(self) -> str:
        self.ticks += 1
        return iso(self.start + timedelta(seconds=self.ticks))

    def deposits(self) -> list[dict[str, Any]]:
        when = iso(self.start - timedelta(hours=1))
        return [
            deposit(self.account(i), self.deposit_of(i), f"dep-{i}", occurred_at=when)
            for i in range(self.holders)
        ]

    def fills(self) -> list[dict[str, Any]]:
        when = iso(self.start - timedelta(minutes=30))
        return [
            fill(
                self.account(i),
                f"open-{i}",
                symbol=SYMBOL,
                quantity=QUANTITY,
                price=str(ENTRY),
                leverage=LEVERAGE,
                executedAt=when,
            )
            for i in range(self.holders)
        ]

    def initial_mark(self) -> dict[str, Any]:
        return mark(SYMBOL, str(ENTRY), self._next())

    def scenario(self, name: str) -> tuple[dict[str, Any] | None, Counter[str], Counter[str]]:
        """The scenario's message (None for ``idle``: devhost on empty queues, what its
        start and drain cost by themselves), the alerts it is expected to raise (by type)
        and the accounts' ``riskState`` after it."""
        risky = self.margin_calls + self.liquidations
        normal = Counter({"NORMAL": self.holders})
        if name == "idle":
            return None, Counter(), normal
        if name == "quiet":
            return mark(SYMBOL, str(QUIET), self._next()), Counter(), normal
        if name == "five-percent":
            alerts = Counter({"MARGIN_CALL": self.margin_calls})
            alerts["LIQUIDATION_RISK"] = self.liquidations
            states = Counter({"NORMAL": self.holders - risky, "MARGIN_CALL": self.margin_calls})
            states["LIQUIDATION"] = self.liquidations
            return mark(SYMBOL, str(TARGET), self._next()), +alerts, +states
        if name == "batch-60":
            entries = [
                {
                    "symbol": SYMBOL,
                    "markPrice": str(TARGET + WALK_STEP * n),
                    "timestamp": self._next(),
                }
                for n in range(1, WALK_ENTRIES + 1)
            ]
            message = {"type": "MARKS", "schemaVersion": 1, "marks": entries}
            return message, +Counter({"RISK_RECOVERED": risky}), normal
        raise ValueError(name)


# --------------------------------------------------------------------------- deployment


class Deployment:
    """One H's names, the counting proxies (unless ``direct``) and the app's settings."""

    def __init__(self, ls: LocalServices, workdir: Path, direct: bool) -> None:
        self.ls = ls
        self.workdir = workdir
        self.names = Names("mk")
        self.fanout = f"{self.names.marks}-fanout"
        self.alert_queues: list[str] = []
        self.cosmos: CountingProxy | None = None
        self.queues: CountingProxy | None = None
        app_ls = ls
        if not direct:
            self.cosmos = CountingProxy("cosmos", ls.cosmos_port, cosmos_kind, tls=True).start()
            self.queues = CountingProxy(
                "queues", ls.queue_port, queue_kind(self.role), tls=False
            ).start()
            app_ls = replace(ls, queue_port=self.queues.port, cosmos_port=self.cosmos.port)
        self.app_ls = app_ls

    def role(self, queue: str) -> str:
        if queue.endswith("-poison"):
            return "poison"
        roles = {self.names.trades: "trades", self.names.marks: "marks", self.fanout: "fanout"}
        if queue in roles:
            return roles[queue]
        return "alerts" if queue.startswith(self.names.alerts) else "other"

    def settings_file(self, label: str) -> tuple[Path, str]:
        """A settings file whose alerts go to a queue of their own, and that queue."""
        alerts = f"{self.names.alerts}-{len(self.alert_queues)}"
        self.alert_queues.append(alerts)
        path = self.workdir / f"{label}.json"
        write_settings(
            path, {**app_settings(self.app_ls, self.names, alerts), **MARKS_APP_SETTINGS}
        )
        return path, alerts

    def requests(self) -> dict[str, Counter[str]]:
        out: dict[str, Counter[str]] = {}
        for name, proxy in (("cosmos", self.cosmos), ("queue", self.queues)):
            if proxy is not None:
                calls, errors = proxy.snapshot()
                out[name] = calls
                out[f"{name}_errors"] = errors
        return out

    def close(self) -> None:
        for proxy in (self.cosmos, self.queues):
            if proxy is not None:
                proxy.close()
        extra = [self.fanout, f"{self.fanout}-poison", *self.alert_queues]
        cleanup(self.ls, self.names, extra)


def _delta(before: Mapping[str, Counter[str]], after: Mapping[str, Counter[str]]) -> dict[str, Any]:
    """What the proxies counted between two snapshots: totals and kinds, errors."""
    out: dict[str, Any] = {}
    for name, counts in after.items():
        diff = counts - before.get(name, Counter())
        if name.endswith("_errors"):
            out[name] = dict(sorted(diff.items()))
        else:
            out[f"{name}_requests"] = sum(diff.values())
            out[f"{name}_by_kind"] = dict(sorted(diff.items()))
    return out


def _invocations(log: Path) -> dict[str, int]:
    """``function outcome`` → count, from one devhost log."""
    counts: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            match = _INVOCATION_RE.search(line)
            if match:
                counts[f"{match.group(1)} {match.group(2)}"] += 1
    return dict(sorted(counts.items()))


def _drain(settings_file: Path, logs: Sequence[Path]) -> list[DevhostRun]:
    """Start one ``devhost run --drain`` per log path at once, wait for all to exit."""
    runs = [DevhostRun(settings_file, log, verbose=False) for log in logs]
    try:
        for run in runs:
            run.start()
        for run in runs:
            run.wait(timeout=DRAIN_TIMEOUT)
    finally:
        for run in runs:
            run.kill()
    failed = [r for r in runs if r.returncode != 0]
    if failed:
        raise RuntimeError(
            f"devhost --drain failed; see {', '.join(str(r.log_path) for r in failed)}"
        )
    return runs


@contextlib.contextmanager
def _ledger(ls: LocalServices, database: str) -> Iterator[Any]:
    """The ``ledger`` container, straight on the Cosmos server (not counted)."""
    from azure.cosmos import CosmosClient

    with CosmosClient(ls.cosmos_endpoint, credential=ls.settings()["COSMOS_KEY"]) as client:
        yield client.get_database_client(database).get_container_client("ledger")


def risk_states(ls: LocalServices, database: str) -> Counter[str]:
    """The accounts' ``riskState``, counted."""
    with _ledger(ls, database) as ledger:
        rows = ledger.query_items(
            "SELECT VALUE c.riskState FROM c WHERE c.type = 'account'",
            enable_cross_partition_query=True,
        )
        return Counter(str(r) for r in rows)


def open_holders(ls: LocalServices, database: str) -> int:
    """Accounts with an open BTCUSDT position."""
    with _ledger(ls, database) as ledger:
        rows = ledger.query_items(
            "SELECT c.accountId, p.quantity FROM c JOIN p IN c.positions "
            "WHERE c.type = 'account' AND p.symbol = @symbol",
            parameters=[{"name": "@symbol", "value": SYMBOL}],
            enable_cross_partition_query=True,
        )
        return len({r["accountId"] for r in rows if Decimal(r["quantity"]) != 0})


# --------------------------------------------------------------------------- phases


def setup_phase(dep: Deployment, plan: Plan, devhosts: int) -> dict[str, Any]:
    """Deposits and fills, SETUP_CHUNK accounts at a time (Azurite's in-memory queue slows
    down with the messages it holds: 10,000 at once drain at ~15 msgs/s), then the initial
    MARK, each enqueued and drained (untimed figures)."""
    conn = dep.ls.storage_connection_string
    settings_file, alerts_queue = dep.settings_file("setup")
    steps: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    before = dep.requests()
    deposits, fills = plan.deposits(), plan.fills()
    work = []
    for first in range(0, plan.holders, SETUP_CHUNK):
        work.append(("deposits", dep.names.trades, deposits[first : first + SETUP_CHUNK]))
        work.append(("fills", dep.names.trades, fills[first : first + SETUP_CHUNK]))
    work.append(("mark", dep.names.marks, [plan.initial_mark()]))
    for n, (step, queue, messages) in enumerate(work):
        t0 = time.monotonic()
        asyncio.run(enqueue(conn, queue, messages))
        t1 = time.monotonic()
        _drain(settings_file, [dep.workdir / f"setup-{n}-{step}-{k}.log" for k in range(devhosts)])
        t2 = time.monotonic()
        totals = steps.setdefault(step, {"messages": 0, "enqueue_s": 0.0, "drain_s": 0.0})
        totals["messages"] += len(messages)
        totals["enqueue_s"] += t1 - t0
        totals["drain_s"] += t2 - t1
        logger.info("set-up %s: %d message(s), drained in %.1f s", step, len(messages), t2 - t1)
    for totals in steps.values():
        totals["enqueue_s"] = rounded(totals["enqueue_s"])
        totals["drain_s"] = rounded(totals["drain_s"])
    alerts = read_alerts(conn, alerts_queue)
    holders = open_holders(dep.ls, dep.names.database)
    states = risk_states(dep.ls, dep.names.database)
    if holders != plan.holders or states != Counter({"NORMAL": plan.holders}):
        raise RuntimeError(f"set-up: {holders} holders of {plan.holders}, risk states {states}")
    return {
        "seconds": rounded(time.monotonic() - started, 1),
        "devhosts": devhosts,
        "steps": steps,
        "alerts_by_type": dict(Counter(str(a.get("type")) for a in alerts)),
        **_delta(before, dep.requests()),
    }


def scenario_phase(
    dep: Deployment, plan: Plan, name: str, devhosts: int, label: str
) -> dict[str, Any]:
    """One scenario: its message enqueued, then ``devhosts`` devhosts ``run --drain``."""
    from azure.storage.queue import QueueClient

    message, expected, expected_states = plan.scenario(name)
    settings_file, alerts_queue = dep.settings_file(label)
    conn = dep.ls.storage_connection_string
    client = QueueClient.from_connection_string(conn, dep.names.marks)
    requests = dep.requests()
    nodes = node_cpu_seconds(dep.ls.run_dir)
    bench_cpu = time.process_time()
    wall0 = time.time()
    t0 = time.monotonic()
    if message is not None:
        client.send_message(b64(message))
    runs = _drain(settings_file, [dep.workdir / f"{label}-{n}.log" for n in range(devhosts)])
    drained = max(r.exited or t0 for r in runs) - t0
    node_cpu = cpu_delta(nodes, node_cpu_seconds(dep.ls.run_dir))
    bench_cpu = time.process_time() - bench_cpu
    counted = _delta(requests, dep.requests())

    alerts = read_alerts(conn, alerts_queue)
    unique = {str(a.get("alertId")): a for a in alerts}
    by_type = Counter(str(a.get("type")) for a in unique.values())
    created = [parse_ts(str(a["createdAt"])) for a in unique.values() if a.get("createdAt")]
    listening = [r.listening for r in runs if r.listening is not None]
    last_alert = max(created) - wall0 if created else None
    states = risk_states(dep.ls, dep.names.database)
    devhost_cpu = [r.cpu_seconds or 0.0 for r in runs]
    result: dict[str, Any] = {
        "scenario": name,
        "holders": plan.holders,
        "devhosts": devhosts,
        "mark_entries": 0 if message is None else len(message.get("marks", [message])),
        "enqueue_to_last_alert_s": rounded(last_alert, 3),
        "enqueue_to_drained_s": rounded(drained, 3),
        "listening_to_last_alert_s": rounded(last_alert - (min(listening) - t0), 3)
        if last_alert is not None and listening
        else None,
        "devhost_startup_s": [
            rounded(r.listening - r.spawned) if r.listening else None for r in runs
        ],
        "devhost_cpu_s": rounded(sum(devhost_cpu)),
        "devhost_cpu_s_each": [rounded(c) for c in devhost_cpu],
        "service_cpu_s": node_cpu,
        "bench_cpu_s": rounded(bench_cpu),
        **counted,
        "alerts_by_type": dict(sorted(by_type.items())),
        "alerts_expected": dict(sorted(expected.items())),
        "alerts_as_expected": by_type == expected,
        "repeated_alert_messages": len(alerts) - len(unique),
        "risk_states_after": dict(sorted(states.items())),
        "risk_states_as_expected": states == expected_states,
        "invocations": [_invocations(r.log_path) for r in runs],
    }
    if not (result["alerts_as_expected"] and result["risk_states_as_expected"]):
        logger.warning("%s: not as planned: %s", label, json.dumps(result))
    else:
        logger.info(
            "%s: %d alert(s), last %s s, drained %.2f s, devhost CPU %.2f s, cosmos %s",
            label,
            len(unique),
            "-" if last_alert is None else f"{last_alert:.2f}",
            drained,
            sum(devhost_cpu),
            counted.get("cosmos_requests"),
        )
    return result


def holders_run(
    pool: ServicePool, workdir: Path, holders: int, devhosts: Sequence[int], args: Any
) -> dict[str, Any]:
    ls = pool.at("holders")
    dep = Deployment(ls, workdir / f"h{holders}", args.direct)
    dep.workdir.mkdir(parents=True, exist_ok=True)
    plan = Plan(holders)
    try:
        setup = setup_phase(dep, plan, args.setup_devhosts)
        logger.info("H=%d set-up: %s", holders, json.dumps(setup))
        scenarios = []
        for run in range(1, args.runs + 1):
            for n in devhosts:
                for name in SCENARIOS:
                    label = f"r{run}-d{n}-{name}"
                    scenarios.append({"run": run, **scenario_phase(dep, plan, name, n, label)})
        return {"holders": holders, "setup": setup, "scenarios": scenarios}
    finally:
        dep.close()


def summarize(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (H, devhosts, scenario): medians over the runs."""
    rows = []
    for result in results:
        groups: dict[tuple[int, str], list[Mapping[str, Any]]] = {}
        for s in result.get("scenarios", []):
            groups.setdefault((s["devhosts"], s["scenario"]), []).append(s)
        for (n, name), group in groups.items():

            def med(key: str, group: list[Mapping[str, Any]] = group) -> float | None:
                return rounded(median(g.get(key) for g in group), 3)

            rows.append(
                {
                    "holders": result["holders"],
                    "devhosts": n,
                    "scenario": name,
                    "runs": len(group),
                    "enqueue_to_last_alert_s": med("enqueue_to_last_alert_s"),
                    "enqueue_to_drained_s": med("enqueue_to_drained_s"),
                    "listening_to_last_alert_s": med("listening_to_last_alert_s"),
                    "devhost_cpu_s": med("devhost_cpu_s"),
                    "cosmos_requests": med("cosmos_requests"),
                    "queue_requests": med("queue_requests"),
                    "alerts": sum(group[0]["alerts_by_type"].values()),
                    "as_expected": all(
                        g["alerts_as_expected"] and g["risk_states_as_expected"] for g in group
                    ),
                }
            )
    return rows


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: want numbers separated by commas") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: want numbers of at least 1")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.marks", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--holders",
        type=_ints,
        default=[1000],
        help="holders of BTCUSDT, comma-separated, each on fresh services (default 1000; "
        "50 is a smoke run; 10000 takes a few minutes of set-up)",
    )
    parser.add_argument(
        "--devhosts",
        type=_ints,
        default=[1, 2],
        help="devhost processes sharing the queues in each cycle (default 1,2)",
    )
    parser.add_argument("--runs", type=int, default=1, help="cycles per devhost count (default 1)")
    parser.add_argument(
        "--setup-devhosts", type=int, default=2, help="devhosts that drain the set-up (default 2)"
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="no counting proxies: the app talks to the services itself (no request counts)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a scenario's alerts or risk states are not the planned ones",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.setup_devhosts < 1:
        parser.error("--runs and --setup-devhosts must be at least 1")
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in ("azure", "urllib3", "handlers", "tradeguard", "devhost"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("azure.cosmos._GlobalEndpointManager").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message="Unverified HTTPS request")

    from bench.e2e import _commit

    started = time.monotonic()
    load_before = os.getloadavg()
    results: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-marks-"))
    failed = False
    pool = ServicePool(workdir, "holders")
    try:
        for holders in args.holders:
            try:
                results.append(holders_run(pool, workdir, holders, args.devhosts, args))
            except Exception as exc:  # report it, keep the logs, go on with the next H
                logger.exception("H=%d failed; devhost logs kept in %s", holders, workdir)
                results.append({"holders": holders, "error": repr(exc), "logs": str(workdir)})
                failed = True
    finally:
        pool.close()
        if not failed:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = summarize(results)
    document = {
        "machine": machine(load_before),
        "params": {
            "holders": args.holders,
            "devhosts": args.devhosts,
            "runs": args.runs,
            "setup_devhosts": args.setup_devhosts,
            "counting_proxies": not args.direct,
            "symbol": SYMBOL,
            "prices": {
                "entry_and_initial_mark": str(ENTRY),
                "quiet": str(QUIET),
                "five_percent": str(TARGET),
                "batch": f"{TARGET + WALK_STEP}..{TARGET + WALK_STEP * WALK_ENTRIES}",
            },
            "app_settings_extra": {**APP_EXTRA, **MARKS_APP_SETTINGS},
            "commit": _commit(),
            "total_s": round(time.monotonic() - started, 1),
        },
        "summary": summary,
        "results": results,
    }
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    if failed or (args.check and not all(row["as_expected"] for row in summary)):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
