"""Duplicate storms and a hot account through devhost on the real services.

1. Order-free stream (fills that only add, deposits, funding, marks, bad bodies), every
   message delivered 3 times in random order, devhost at 24 concurrent invocations
   (batchSize 16 + newBatchThreshold 8) → every account equals the state after delivering
   each message once; no alertId twice; one record per event.
2. Ordered stream with reductions and flips, every message duplicated in place, devhost
   one at a time (batchSize 1) → the same state as delivering it once.
3. Hot account: 200 fills on one account and symbol at 24 concurrent → exact quantity;
   ETag conflicts are retried and counted in the log.

The long variants (`-m slow`) use ≥ 2,000 messages; CI runs the fast ones. The messages,
their base64 and their duplication are :mod:`bench.workload`'s.
"""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bench import workload
from bench.workload import b64, deposit, duplicated, fill
from handlers.adapters.mapping import account_from_document, account_to_document
from handlers.core.catalog import load_catalog
from handlers.core.contracts import parse_timestamp
from handlers.core.state import apply_mark
from handlers.core.valuation import value
from handlers.flows import Deps
from handlers.settings import load_settings
from tests.aio import process_mark_message, process_trade_message
from tests.support import REPO, AppUnderTest
from tests.unit.fakes import FakeSink, FakeStore

pytestmark = pytest.mark.services

VOLATILE_POSITION = {"updatedAt"}


def mark(symbol: str, price: str, n: int) -> dict[str, Any]:
    """A MARK at second ``n`` of 2024-10-05."""
    return workload.mark(
        symbol, price, f"2024-10-05T{n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"
    )


def order_free_stream(accounts: int, fills_per_account: int, rng: random.Random) -> list[Any]:
    out: list[Any] = []
    for a in range(accounts):
        acc = f"st{a:03d}"
        out.append(deposit(acc, str(10_000 + a), f"{acc}-dep"))
        out.append({**deposit(acc, "-1.5", f"{acc}-fund"), "reason": "FUNDING"})
        # One price and leverage per account and symbol: entry and leverage then do not
        # depend on which fill comes last.
        btc_price, eth_price, lev = str(60000 + a), f"{2500 + a}.5", 5 + a % 10
        for n in range(fills_per_account):
            if n % 2:
                out.append(
                    fill(acc, f"{acc}-f{n}", quantity="0.002", price=btc_price, leverage=lev)
                )
            else:
                out.append(
                    fill(
                        acc,
                        f"{acc}-f{n}",
                        symbol="ETHUSDT",
                        side="SELL",
                        quantity="0.01",
                        price=eth_price,
                        leverage=lev,
                    )
                )
    for n in range(max(4, accounts // 5)):
        out.append(mark("BTCUSDT", str(60000 + rng.randint(-900, 900)), n + 1))
        out.append(mark("ETHUSDT", f"{2500 + rng.randint(-40, 40)}.25", n + 1))
    for n in range(max(4, accounts // 2)):
        out.append(f"not json {n}")  # MALFORMED
        out.append(fill(f"st{n:03d}", f"bad-{n}", side="HOLD"))  # SCHEMA_INVALID
    return out


def reference_state(messages: list[Any], settings: dict[str, str]) -> FakeStore:
    """Deliver each message once, in process, to an in-memory store."""
    values = load_settings(settings)
    store, sink = FakeStore(), FakeSink()
    deps = Deps(
        settings=values,
        catalog=load_catalog(values.instruments_file),
        store=store,  # type: ignore[arg-type]
        sink=sink,
    )  # type: ignore[arg-type]
    for message in messages:
        body = b64(message).encode()
        if isinstance(message, dict) and message.get("type") in ("MARK", "MARKS"):
            process_mark_message(body, deps)
        else:
            process_trade_message(body, deps)
    return store


#: The marks every stream ends at (:func:`settle_marks`).
SETTLED = {"BTCUSDT": Decimal("60050"), "ETHUSDT": Decimal("2490.5")}
SETTLED_AT = parse_timestamp("2024-10-05T22:13:20Z")  # second 80,000
CATALOG = load_catalog(REPO / "handlers" / "data" / "instruments.json")


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on the order of delivery: the stored ledger, its states, the
    ids, and the figures at the marks the stream ends at. (A v2 document's own figures are
    as of its ``valuedAt``, which a mark inside its bands leaves behind.)"""
    account = account_from_document(doc)
    ledger = account.ledger
    for symbol, price in SETTLED.items():
        ledger = apply_mark(ledger, symbol, price, SETTLED_AT)
    at = value(ledger, CATALOG, Decimal("0.80"))
    figures = account_to_document(replace(account, ledger=ledger, updated_at=SETTLED_AT), at)
    positions = []
    for p in figures["positions"]:
        drop = VOLATILE_POSITION | (
            {"markPrice", "markTime", "markSource"} if p["quantity"] == "0" else set()
        )
        positions.append({k: v for k, v in p.items() if k not in drop})
    return {
        "wallets": figures["wallets"],
        "positions": positions,
        "riskState": doc["riskState"],
        "atSettled": figures["riskState"],
        "recentEventIds": sorted(doc["recentEventIds"]),
    }


def settle_marks(accounts: int) -> list[dict[str, Any]]:
    return [mark(s, str(p), 80_000) for s, p in SETTLED.items()]


def event_ids(messages: list[Any]) -> list[tuple[str, str]]:
    out = []
    for m in messages:
        if (
            isinstance(m, dict)
            and m.get("type") in ("FILL", "TRANSFER")
            and m.get("side") != "HOLD"
        ):
            out.append((m["accountId"], m.get("tradeId") or m["transferId"]))
    return out


def run_storm(app: AppUnderTest, accounts: int, fills: int) -> None:
    rng = random.Random(20241125)
    stream = order_free_stream(accounts, fills, rng)
    deliveries = duplicated(stream, 3, rng)  # every message 3 times, shuffled
    marks = [m for m in deliveries if isinstance(m, dict) and m["type"] == "MARK"]
    trades = [m for m in deliveries if not (isinstance(m, dict) and m["type"] == "MARK")]
    app.send([b64(m) for m in marks], queue="MARKS_QUEUE", encode=False)
    app.send([b64(m) for m in trades], encode=False)
    result = app.run(timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    failed = result.stderr.count(" failed: ")
    settle = settle_marks(accounts)
    app.send([b64(m) for m in duplicated(settle, 3)], queue="MARKS_QUEUE", encode=False)
    result = app.run(timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]

    expected = reference_state(stream + settle, app.settings)
    mismatched = 0
    for a in range(accounts):
        acc = f"st{a:03d}"
        got = app.account(acc)
        assert got is not None
        if comparable(got) != comparable(expected.account(acc)):
            mismatched += 1
            assert comparable(got) == comparable(expected.account(acc)), acc
    alerts = app.alerts()
    by_id: dict[str, list[dict[str, Any]]] = {}
    for alert in alerts:
        by_id.setdefault(alert["alertId"], []).append(alert)
    repeats = sum(len(copies) - 1 for copies in by_id.values())
    ids = event_ids(stream)
    records = sum(1 for acc, eid in ids if app.record(acc, eid) is not None)
    rejected = len(app.query("ledger", "SELECT c.id FROM c WHERE c.type = 'rejection'"))
    print(
        f"storm: {len(stream)} messages x3 = {len(deliveries) + 3 * len(settle)} deliveries, "
        f"{accounts} accounts; applied {records}/{len(ids)} events, rejected {rejected}, "
        f"{len(alerts)} alerts, {repeats} repeated alertIds, {failed} failed invocations, "
        f"{2 * len(deliveries) // 3} duplicates suppressed"
    )
    # A repeat is allowed only after a failure, and then only as the same alert.
    for copies in by_id.values():
        for copy in copies[1:]:
            assert {**copy, "createdAt": ""} == {**copies[0], "createdAt": ""}
    if failed == 0:
        assert repeats == 0
    assert records == len(ids)
    assert mismatched == 0


def test_duplicate_storm_in_random_order(app: AppUnderTest) -> None:
    run_storm(app, accounts=50, fills=8)  # 528 messages, 1,584 deliveries


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_duplicate_storm_in_random_order_long(app: AppUnderTest) -> None:
    run_storm(app, accounts=50, fills=36)  # 1,928 + marks + bad ≥ 2,000 messages, x3


def sequential_app(app: AppUnderTest, tmp: Path) -> Path:
    """An app dir like the repo's, with host.json at batchSize 1 (one message at a time)."""
    target = tmp / "sequential"
    target.mkdir()
    (target / "function_app.py").symlink_to(REPO / "function_app.py")
    (target / "handlers").symlink_to(REPO / "handlers")
    host = json.loads((REPO / "host.json").read_text())
    host["extensions"]["queues"].update({"batchSize": 1, "newBatchThreshold": 0})
    (target / "host.json").write_text(json.dumps(host))
    return target


def ordered_stream(accounts: int, steps: int, rng: random.Random) -> list[Any]:
    out: list[Any] = [deposit(f"or{a:03d}", "100000", f"or{a:03d}-dep") for a in range(accounts)]
    for n in range(steps):
        acc = f"or{rng.randrange(accounts):03d}"
        side = rng.choice(["BUY", "SELL"])
        qty = f"0.{rng.randint(1, 9):03d}"
        price = f"{60000 + rng.randint(-2000, 2000)}.{rng.randint(0, 9)}"
        out.append(
            fill(
                acc,
                f"{acc}-o{n}",
                side=side,
                quantity=qty,
                price=price,
                leverage=rng.choice([5, 10, 20]),
                fee="0.0" + str(rng.randint(1, 9)),
            )
        )
    return out


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param(150, id="fast"),
        pytest.param(2000, id="long", marks=[pytest.mark.slow, pytest.mark.timeout(1800)]),
    ],
)
def test_ordered_stream_with_reductions_and_flips_duplicated(
    app: AppUnderTest, tmp_path: Path, steps: int
) -> None:
    rng = random.Random(7)
    stream = ordered_stream(5, steps, rng)
    app.send([b64(m) for m in duplicated(stream, 2)], encode=False)
    result = app.run("--app-dir", str(sequential_app(app, tmp_path)), timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    expected = reference_state(stream, app.settings)
    flips = sum(1 for line in result.stderr.splitlines() if "outcome=APPLIED" in line)
    for a in range(5):
        got = app.account(f"or{a:03d}")
        assert got is not None
        assert comparable(got) == comparable(expected.account(f"or{a:03d}"))
    duplicates = result.stderr.count("outcome=DUPLICATE")
    print(
        f"ordered: {len(stream)} messages x2, {flips} applied, {duplicates} duplicates suppressed"
    )
    assert duplicates == len(stream)


def test_hot_account_in_one_host_never_races_itself(app: AppUnderTest) -> None:
    app.send([deposit("hot", "10000000", "hot-dep")])
    assert app.run().returncode == 0
    app.send([fill("hot", f"hot-{n}", quantity="0.005", price="60000") for n in range(200)])
    result = app.run(timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    account = app.account("hot")
    assert account is not None
    assert account["positions"][0]["quantity"] == "1"  # 200 × 0.005, exact
    assert len(account["recentEventIds"]) == 201
    # 24 invocations in flight on one document, but one process takes its events of an
    # account in turn: none loses an ETag race to its neighbour.
    assert result.stderr.count("etag conflict on account hot") == 0
    assert result.stderr.count("failed:") == 0


def test_hot_account_shared_by_two_hosts(app: AppUnderTest) -> None:
    """Two instances on one queue and one hot account: only the ETag keeps them apart."""
    app.send([deposit("hot2", "10000000", "hot2-dep")])
    assert app.run().returncode == 0
    app.send([fill("hot2", f"hot2-{n}", quantity="0.005", price="60000") for n in range(300)])
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: app.run(timeout=600), range(2)))
    assert all(r.returncode == 0 for r in results), [r.stderr[-2000:] for r in results]
    account = app.account("hot2")
    assert account is not None
    assert account["positions"][0]["quantity"] == "1.5"  # 300 × 0.005: no update lost
    assert len(account["recentEventIds"]) == 301
    assert all(app.record("hot2", f"hot2-{n}") is not None for n in range(300))
    conflicts = sum(r.stderr.count("etag conflict on account hot2") for r in results)
    print(f"two hosts, one hot account: 300 fills, {conflicts} ETag conflicts retried")
