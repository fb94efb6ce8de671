"""Pure-path benchmark: decode → validate → risk → state transition → alert decision.

In process, no I/O: the same core functions the service calls, on a generated stream of
fills over many accounts and three symbols, with marks. Prints one JSON document.

    .venv/bin/python -m bench.pure [--fills 100000] [--accounts 1000] [--profile]
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import io
import json
import os
import platform
import pstats
import random
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from handlers.core.alerts import Thresholds, fill_alerts, risk_alerts
from handlers.core.catalog import load_catalog
from handlers.core.contracts import Fill, validate_inbound
from handlers.core.decode import decode_body
from handlers.core.documents import settle_risk_states
from handlers.core.state import Ledger, Wallet, apply_fill, apply_mark
from handlers.core.validation import check_fill
from handlers.core.valuation import value
from handlers.settings import SHIPPED_CATALOG

SYMBOLS = {
    "BTCUSDT": (60000, "0.001", "USDT"),
    "ETHUSDT": (2500, "0.01", "USDT"),
    "BTCUSD_PERP": (60000, "1", "BTC"),
}


def stream(fills: int, accounts: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for n in range(fills):
        symbol = rng.choice(list(SYMBOLS))
        base, step, _ = SYMBOLS[symbol]
        qty = Decimal(step) * rng.randint(2 if symbol == "ETHUSDT" else 1, 50)
        if symbol == "BTCUSDT":
            qty = Decimal("0.002") * rng.randint(1, 50)
        message = {
            "type": "FILL",
            "schemaVersion": 1,
            "tradeId": f"t{n}",
            "accountId": f"a{rng.randrange(accounts)}",
            "symbol": symbol,
            "side": rng.choice(["BUY", "SELL"]),
            "quantity": str(qty),
            "price": f"{base + rng.randint(-500, 500)}.{rng.randint(0, 9)}"
            if symbol != "ETHUSDT"
            else f"{base + rng.randint(-50, 50)}.{rng.randint(10, 99)}",
            "leverage": rng.choice([5, 10, 20]),
            "executedAt": "2024-10-01T00:00:00.000Z",
        }
        out.append(base64.b64encode(json.dumps(message).encode()))
    return out


def run(fills: int, accounts: int) -> dict[str, Any]:
    catalog = load_catalog(SHIPPED_CATALOG)
    thresholds = Thresholds(
        Decimal("0.8"),
        {"USDT": Decimal(1000000), "BTC": Decimal(20)},
        {"USDT": Decimal(10000000), "BTC": Decimal(200)},
    )
    bodies = stream(fills, accounts)
    ledgers: dict[str, Ledger] = {}
    marks_at = datetime(2024, 10, 1, tzinfo=UTC)
    stage = dict.fromkeys(("decode", "validate", "transition", "risk", "alerts", "marks"), 0.0)
    clock = time.perf_counter
    rejected = 0
    started = clock()
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
        try:
            after_fill = apply_fill(ledger, event, instrument, None)
        except Exception:
            rejected += 1
            continue
        t3 = clock()
        valuation = value(after_fill, catalog, thresholds.margin_call_ratio)
        t4 = clock()
        specs = fill_alerts(event, instrument, None, valuation, thresholds) + risk_alerts(
            ledger, valuation
        )
        ledgers[event.accountId] = settle_risk_states(after_fill, valuation)
        t5 = clock()
        stage["transition"] += t3 - t2
        stage["risk"] += t4 - t3
        stage["alerts"] += t5 - t4
        del specs
        if n % 1000 == 999:  # a mark per symbol every 1,000 fills, applied to every ledger
            t6 = clock()
            marks_at = marks_at.replace(second=(marks_at.second + 1) % 60)
            for key, held in ledgers.items():
                moved = held
                for symbol, (base, _, _) in SYMBOLS.items():
                    moved = apply_mark(moved, symbol, Decimal(base), marks_at)
                ledgers[key] = settle_risk_states(
                    moved, value(moved, catalog, thresholds.margin_call_ratio)
                )
            stage["marks"] += clock() - t6
    elapsed = clock() - started
    fill_time = elapsed - stage["marks"]
    return {
        "benchmark": "pure path (decode → validate → transition → risk → alerts), no I/O",
        "machine": {
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "params": {"fills": fills, "accounts": accounts, "symbols": list(SYMBOLS)},
        "fills_per_s_per_core": round(fills / fill_time),
        "rejected": rejected,
        "us_per_fill": {k: round(v / fills * 1e6, 2) for k, v in stage.items() if k != "marks"},
        "marks": {"rounds": fills // 1000, "seconds": round(stage["marks"], 3)},
        "total_seconds": round(elapsed, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pure")
    parser.add_argument("--fills", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--profile", action="store_true", help="add the top costs (cProfile)")
    args = parser.parse_args(argv)
    if args.profile:
        profiler = cProfile.Profile()
        result = profiler.runcall(run, args.fills, args.accounts)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
        result["profile_top_tottime"] = [
            line.strip() for line in text.getvalue().splitlines() if "(" in line and "/" in line
        ][:12]
    else:
        result = run(args.fills, args.accounts)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
