"""Pure-path benchmark: decode → validate → state transition → risk → alert decision.

In process, no I/O: the core functions :mod:`handlers.flows.trades` calls for a FILL, in the
order it calls them (``decode_body``, ``validate_inbound``, ``check_fill``,
``apply_fill`` with the stored mark, ``value`` after, ``fill_alerts``,
``risk_alerts``, ``settle_risk_states``), on a generated stream of fills over many
accounts and three symbols, with marks (a MARK per symbol every 1,000 fills re-values
every ledger, as the mark path does; timed apart). Prints one JSON document: medians of
``--runs`` runs. Fills/s per core is fills over the CPU time of this process
(``time.process_time``, marks excluded), so "per core" holds on a machine shared with
other work; the stages are timed with ``time.perf_counter`` (a CPU clock read costs
~0.7 µs, too much to take six times per fill).

    .venv/bin/python -m bench.pure [--fills 100000] [--accounts 1000] [--runs 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bench.workload import b64, fill
from handlers.core.alerts import Thresholds, fill_alerts, risk_alerts
from handlers.core.catalog import Catalog, load_catalog
from handlers.core.contracts import Fill, validate_inbound
from handlers.core.decode import decode_body
from handlers.core.state import Ledger, Rejected, Wallet, apply_fill, apply_mark
from handlers.core.validation import check_fill
from handlers.core.valuation import settle_risk_states, value
from handlers.settings import SHIPPED_CATALOG

SYMBOLS = {
    "BTCUSDT": (60000, "0.001", "USDT"),
    "ETHUSDT": (2500, "0.01", "USDT"),
    "BTCUSD_PERP": (60000, "1", "BTC"),
}
STAGES = ("decode", "validate", "transition", "risk", "alerts")
MARK_EVERY = 1000


def stream(fills: int, accounts: int, seed: int = 1) -> list[bytes]:
    """Base64 FILL bodies (as a default queue output writes them), seeded."""
    rng = random.Random(seed)
    out = []
    start = datetime(2024, 10, 1, tzinfo=UTC)
    for n in range(fills):
        symbol = rng.choice(list(SYMBOLS))
        base, step, _ = SYMBOLS[symbol]
        qty = Decimal(step) * rng.randint(2 if symbol == "ETHUSDT" else 1, 50)
        if symbol == "BTCUSDT":
            qty = Decimal("0.002") * rng.randint(1, 50)
        account = f"a{rng.randrange(accounts)}"  # draws in their seeded order: account, side, price, leverage
        side = rng.choice(["BUY", "SELL"])
        price = (
            f"{base + rng.randint(-500, 500)}.{rng.randint(0, 9)}"
            if symbol != "ETHUSDT"
            else f"{base + rng.randint(-50, 50)}.{rng.randint(10, 99)}"
        )
        message = fill(
            account,
            f"t{n}",
            symbol=symbol,
            side=side,
            quantity=str(qty),
            price=price,
            leverage=rng.choice([5, 10, 20]),
            executedAt=(start + timedelta(milliseconds=n)).isoformat().replace("+00:00", "Z"),
        )
        out.append(b64(message).encode())
    return out


def _stored_mark(
    ledger: Ledger, symbol: str, marks: dict[str, tuple[Decimal, datetime]]
) -> tuple[Decimal, datetime] | None:
    """As the service's ``_stored_mark``: an open position's own mark, else the ``marks``
    container's (here a dict)."""
    for p in ledger.positions:
        if p.symbol == symbol and p.is_open and p.mark_price is not None and p.mark_time:
            return (p.mark_price, p.mark_time)
    return marks.get(symbol)


def run(fills: int, accounts: int, catalog: Catalog, bodies: list[bytes]) -> dict[str, Any]:
    """One run over ``bodies``: CPU seconds per stage, fills, rejections, alerts."""
    thresholds = Thresholds(
        Decimal("0.8"),
        {"USDT": Decimal(1000000), "BTC": Decimal(20)},
        {"USDT": Decimal(10000000), "BTC": Decimal(200)},
    )
    ratio = thresholds.margin_call_ratio
    ledgers: dict[str, Ledger] = {}
    marks: dict[str, tuple[Decimal, datetime]] = {}
    marks_at = datetime(2024, 10, 1, tzinfo=UTC)
    stage = dict.fromkeys(STAGES, 0.0)
    marks_cpu = 0.0
    clock = time.perf_counter  # per stage (cheap); the totals are CPU time
    cpu = time.process_time
    rejected = alerts = 0
    started = cpu()
    for n, body in enumerate(bodies):
        t0 = clock()
        decoded = decode_body(body)
        t1 = clock()
        event = validate_inbound(decoded.obj)
        assert isinstance(event, Fill)
        instrument = catalog.get(event.symbol)
        assert instrument is not None
        problems = check_fill(event, instrument)
        t2 = clock()
        stage["decode"] += t1 - t0
        stage["validate"] += t2 - t1
        if problems:
            rejected += 1
            continue
        ledger = ledgers.get(event.accountId)
        if ledger is None:
            ledger = (
                Ledger()
                .with_wallet(Wallet("USDT", Decimal(100000)))
                .with_wallet(Wallet("BTC", Decimal(5)))
            )
        t3 = clock()
        mark = _stored_mark(ledger, event.symbol, marks)
        try:
            after_fill = apply_fill(ledger, event, instrument, mark)
        except Rejected:
            rejected += 1
            continue
        t4 = clock()
        valuation = value(after_fill, catalog, ratio)
        t5 = clock()
        specs = fill_alerts(
            event, instrument, mark[0] if mark else None, valuation, thresholds
        ) + risk_alerts(ledger, valuation)
        ledgers[event.accountId] = settle_risk_states(after_fill, valuation)
        t6 = clock()
        stage["risk"] += (t3 - t2) + (t5 - t4)
        stage["transition"] += t4 - t3
        stage["alerts"] += t6 - t5
        alerts += len(specs)
        if n % MARK_EVERY == MARK_EVERY - 1:  # a mark per symbol, applied to every ledger
            t7 = cpu()
            marks_at += timedelta(seconds=1)
            for symbol, (base, _, _) in SYMBOLS.items():
                marks[symbol] = (Decimal(base), marks_at)
            for key, held in ledgers.items():
                moved = held
                for symbol, (price, when) in marks.items():
                    moved = apply_mark(moved, symbol, price, when)
                ledgers[key] = settle_risk_states(moved, value(moved, catalog, ratio))
            marks_cpu += cpu() - t7
    total = cpu() - started
    return {
        "stage_seconds": stage,
        "marks_cpu_seconds": marks_cpu,
        "fill_cpu_seconds": total - marks_cpu,
        "rejected": rejected,
        "alert_decisions": alerts,
        "mark_rounds": fills // MARK_EVERY,
    }


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pure")
    parser.add_argument("--fills", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3, help="repetitions; medians reported")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--profile", action="store_true", help="add the top costs (cProfile, one extra run)"
    )
    args = parser.parse_args(argv)
    catalog = load_catalog(SHIPPED_CATALOG)
    bodies = stream(args.fills, args.accounts, args.seed)
    runs = []
    wall = time.perf_counter()
    for _ in range(args.runs):
        runs.append(run(args.fills, args.accounts, catalog, bodies))
    wall = time.perf_counter() - wall
    per_fill = {
        k: round(_median([r["stage_seconds"][k] for r in runs]) / args.fills * 1e6, 2)
        for k in STAGES
    }
    fill_cpu = [r["fill_cpu_seconds"] for r in runs]
    result: dict[str, Any] = {
        "benchmark": "pure path (decode → validate → transition → risk → alerts), no I/O",
        "command": "python -m bench.pure " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
        },
        "params": {
            "fills": args.fills,
            "accounts": args.accounts,
            "symbols": list(SYMBOLS),
            "marks": f"one per symbol every {MARK_EVERY} fills, applied to every ledger",
            "runs": args.runs,
            "clock": "fills/s and totals: time.process_time (CPU of this process); "
            "stages: time.perf_counter around each stage",
        },
        "fills_per_s_per_core": round(args.fills / _median(fill_cpu)),
        "fills_per_s_per_core_runs": [round(args.fills / s) for s in fill_cpu],
        "us_per_fill": per_fill,
        "us_per_fill_total": round(_median(fill_cpu) / args.fills * 1e6, 2),
        "rejected": runs[0]["rejected"],
        "alert_decisions": runs[0]["alert_decisions"],
        "marks": {
            "rounds": runs[0]["mark_rounds"],
            "cpu_seconds": round(_median([r["marks_cpu_seconds"] for r in runs]), 3),
        },
        "wall_seconds_all_runs": round(wall, 1),
    }
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run, args.fills, args.accounts, catalog, bodies)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
        result["profile_top_tottime"] = [
            " ".join(line.split()) for line in text.getvalue().splitlines() if "(" in line
        ][1:16]
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
