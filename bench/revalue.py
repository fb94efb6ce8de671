"""What re-valuing one account costs in CPU, as a mark's pass does it to an account whose
band it leaves: the stored document read (JSON → typed), re-valued at the mark
(:func:`handlers.core.revalue.revalue_at`), new bands (:func:`handlers.core.bands.band_box`)
and the document written (typed → JSON), no I/O.

Accounts are built through the app's own flows on the in-memory fakes (a deposit and a
BTCUSDT fill each, leverage 20, 1,000–1,999 USDT), so the documents are what the app
stores. Prints one JSON document on stdout: µs per account (CPU time), medians of the
runs, and each stage's share.

    .venv/bin/python -m bench.revalue [--accounts 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bench.harness import machine
from handlers.adapters.mapping import account_from_document, account_to_document
from handlers.core.bands import band_box
from handlers.core.revalue import revalue_at
from handlers.flows import Deps
from tests.unit.fakes import FakeClock, FakeSink, FakeStore
from tests.unit.flowkit import event, make_deps, marks, trade

WHEN = datetime(2024, 10, 1, 13, tzinfo=UTC)


def documents(count: int) -> tuple[Deps, list[dict[str, Any]]]:
    """``count`` stored account documents (as JSON) and the deps that wrote them."""
    store, sink, clock = FakeStore(), FakeSink(), FakeClock()
    deps = make_deps(store, sink, clock, RISK_BAND_WIDTH="0.05")
    marks(deps, event("mark_btcusdt", markPrice="60000", timestamp="2024-10-01T12:00:00Z"))
    for n in range(count):
        account = f"r{n:05d}"
        amount = str(1000 + n % 1000)
        trade(
            deps,
            event("transfer_deposit_usdt", accountId=account, transferId=f"d{n}", amount=amount),
        )
        fill = {"accountId": account, "tradeId": f"t{n}", "leverage": 20, "fee": "0"}
        trade(deps, event("fill_btcusdt_long", **fill))
    docs = [json.loads(json.dumps(store.account(f"r{n:05d}"))) for n in range(count)]
    return deps, docs


def stages(deps: Deps) -> dict[str, Callable[[Any, Decimal], Any]]:
    catalog, ratio = deps.catalog, deps.settings.margin_call_ratio
    width = deps.settings.risk_band_width

    def whole(doc: dict[str, Any], price: Decimal) -> dict[str, Any]:
        account = account_from_document(doc)
        ledger, _, after = revalue_at(account.ledger, [("BTCUSDT", price, WHEN)], catalog, ratio)
        bands = band_box(ledger, catalog, ratio, width)
        new = replace(account, ledger=ledger, updated_at=WHEN, bands=bands)
        return account_to_document(new, after)

    return {"whole": whole}


def timed(fn: Callable[[Any, Decimal], Any], docs: list[dict[str, Any]], run: int) -> float:
    """CPU µs per account of one pass over ``docs`` (a different mark each run)."""
    started = time.process_time()
    for i, doc in enumerate(docs):
        fn(doc, Decimal(56000 + i % 500 + run))
    return (time.process_time() - started) / len(docs) * 1e6


def parts(deps: Deps, docs: list[dict[str, Any]]) -> dict[str, float]:
    """µs per account of each stage alone (one pass each)."""
    catalog, ratio = deps.catalog, deps.settings.margin_call_ratio
    width = deps.settings.risk_band_width
    out: dict[str, float] = {}
    started = time.process_time()
    accounts = [account_from_document(d) for d in docs]
    out["document in"] = time.process_time() - started
    started = time.process_time()
    moved = [
        revalue_at(a.ledger, [("BTCUSDT", Decimal(56000 + i % 500), WHEN)], catalog, ratio)
        for i, a in enumerate(accounts)
    ]
    out["re-valuation"] = time.process_time() - started
    started = time.process_time()
    bands = [band_box(m[0], catalog, ratio, width) for m in moved]
    out["bands"] = time.process_time() - started
    started = time.process_time()
    for a, m, b in zip(accounts, moved, bands, strict=True):
        account_to_document(replace(a, ledger=m[0], updated_at=WHEN, bands=b), m[2])
    out["document out"] = time.process_time() - started
    return {k: round(v / len(docs) * 1e6, 1) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.revalue", description=__doc__)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    deps, docs = documents(args.accounts)
    whole = stages(deps)["whole"]
    timed(whole, docs, 0)  # warm: imports, caches
    runs = [timed(whole, docs, run) for run in range(1, args.runs + 1)]
    report = {
        "machine": machine(load_before),
        "accounts": args.accounts,
        "us_per_account": round(statistics.median(runs), 1),
        "runs_us": [round(r, 1) for r in runs],
        "stages_us": parts(deps, docs),
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
