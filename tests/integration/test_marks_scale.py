"""Marks at scale: the Cosmos calls of a mark grow with the accounts whose band it leaves,
not with the holders of its symbol nor with the accounts; a 500-entry MARKS batch over
1,000 holders applies in one devhost run."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from handlers.adapters.cosmos_store import CosmosLedgerStore, connect
from handlers.adapters.queues import QueueAlertSink
from handlers.core.catalog import load_catalog
from handlers.flows import Deps
from handlers.settings import load_settings
from tests.aio import process_mark_message, process_trade_message
from tests.integration.test_pipeline import fill, ran_ok
from tests.support import AppUnderTest
from tests.unit.fakes import CountingStore

pytestmark = pytest.mark.services

SYMBOLS = {"BTCUSDT": "60000", "ETHUSDT": "2500", "BTCUSD_PERP": "60000"}


def in_process(app: AppUnderTest) -> tuple[Deps, CountingStore]:
    settings = load_settings(app.settings)
    assert settings.cosmos_endpoint is not None
    store = CountingStore(
        CosmosLedgerStore(
            connect(settings.cosmos_endpoint, settings.cosmos_key, settings.cosmos_database),
            settings.cosmos_database,
        )
    )
    sink = QueueAlertSink(settings.environ, settings.storage_connection, settings.alerts_queue)
    deps = Deps(
        settings=settings,
        catalog=load_catalog(settings.instruments_file),
        store=store,  # type: ignore[arg-type]
        sink=sink,
    )
    return deps, store


def body(message: dict[str, Any]) -> bytes:
    return base64.b64encode(json.dumps(message).encode())


def open_positions(deps: Deps, accounts: list[str], symbol: str) -> None:
    for n, account in enumerate(accounts):
        qty = "1" if symbol == "BTCUSD_PERP" else "0.01"
        message = fill(
            account,
            f"{account}-{symbol}-{n}",
            symbol=symbol,
            quantity=qty,
            price=SYMBOLS[symbol],
            leverage=5,
        )
        outcome = process_trade_message(body(message), deps)
        assert outcome.kind == "APPLIED", outcome


def calls_for_one_mark(
    deps: Deps, store: CountingStore, symbol: str, second: int, price: str
) -> int:
    store.calls.clear()
    message = {
        "type": "MARK",
        "schemaVersion": 1,
        "symbol": symbol,
        "markPrice": price,
        "timestamp": f"2024-10-02T00:00:{second:02d}Z",
    }
    (outcome,) = process_mark_message(body(message), deps)
    assert outcome.kind == "APPLIED"
    return store.total()


def test_cosmos_calls_per_mark_grow_with_the_accounts_it_moves(app: AppUnderTest) -> None:
    deps, store = in_process(app)
    shards = deps.settings.marks_index_shards
    calls_for_one_mark(deps, store, "BTCUSDT", 0, "60000")  # the fills decide at it
    open_positions(deps, [f"b{i}" for i in range(10)], "BTCUSDT")
    open_positions(deps, [f"e{i}" for i in range(40)], "ETHUSDT")
    quiet = calls_for_one_mark(deps, store, "BTCUSDT", 1, "60000")
    # The mark's own (read, conditional write) and one query per shard; no account.
    assert quiet == 2 + shards, dict(store.calls)
    assert store.calls["query_holders"] == shards

    open_positions(deps, [f"e{i}" for i in range(40, 120)], "ETHUSDT")  # accounts elsewhere
    open_positions(deps, [f"b{i}" for i in range(10, 30)], "BTCUSDT")  # more holders
    assert calls_for_one_mark(deps, store, "BTCUSDT", 2, "60000") == quiet

    moved = calls_for_one_mark(deps, store, "BTCUSDT", 3, "66000")  # leaves every band
    print(
        f"cosmos calls per BTCUSDT mark: quiet over 10 or 30 holders={quiet}, "
        f"one that moves all 30={moved}; last: {dict(store.calls)}"
    )
    assert store.calls["write_account"] == 30  # one conditional write per account it moves
    # their new bands: one batch per shard; their alerts: one sent marker for all
    assert store.calls["index_holders"] == shards
    assert store.calls["create_record"] <= 1
    assert store.calls["query_holders"] == shards


def test_marks_batch_of_500_revalues_1000_accounts(app: AppUnderTest) -> None:
    deps, _store = in_process(app)
    symbols = list(SYMBOLS)
    holders = {s: [f"acc{i:04d}" for i in range(1000) if i % 3 == k] for k, s in enumerate(symbols)}
    started = time.perf_counter()
    for symbol, accounts in holders.items():
        open_positions(deps, accounts, symbol)
    seeded = time.perf_counter()

    entries = []
    for n in range(500):
        symbol = symbols[n % 3]
        price = int(SYMBOLS[symbol]) + n  # a different price each time, on the tick
        entries.append(
            {
                "symbol": symbol,
                "markPrice": str(price),
                "timestamp": f"2024-10-03T00:{n // 60:02d}:{n % 60:02d}.000Z",
            }
        )
    app.send([{"type": "MARKS", "schemaVersion": 1, "marks": entries}], queue="MARKS_QUEUE")
    ran_ok(app)
    processed = time.perf_counter()

    newest = {e["symbol"]: e for e in entries}  # entries ascend in time
    applied = {(e["symbol"], e["markPrice"], e["timestamp"]) for e in entries}
    revalued = 0
    for symbol, accounts in holders.items():
        rows = app.query(
            "ledger",
            "SELECT c.accountId, p.markPrice, p.markTime FROM c JOIN p IN c.positions "
            "WHERE c.type = 'account' AND p.symbol = @symbol",
            symbol=symbol,
        )
        by_account = {r["accountId"]: r for r in rows}
        assert set(by_account) == set(accounts)
        for row in by_account.values():  # as of valuedAt: an entry it left its band at
            if (symbol, row["markPrice"], row["markTime"]) in applied:
                revalued += 1
        stored = app.read("marks", "@mark", symbol)
        assert stored is not None and stored["markPrice"] == newest[symbol]["markPrice"]
    print(
        f"MARKS batch: 500 entries, 3 symbols, re-valued {revalued} of 1000 accounts; seeding "
        f"1000 fills {seeded - started:.1f} s, devhost run {processed - seeded:.1f} s"
    )
