"""The ORDER flow under duplicate storms and a killed host, through devhost on the real
services: exactly one decision per (accountId, orderId), and reservations that are exact.

Workload (:func:`make_workload`): marks for the three symbols, then a few dozen accounts
funded (some with an open long, some with BTC for inverse orders, some with the ORDER_DONE
of an order that comes later), then the storm: ORDERs (LIMIT and MARKET, approved and
rejected, cross and isolated, linear and inverse, one broken body naming its order, bursts
that hit the rate limit), ORDER_DONEs, FILL v2 of the orders, ACCOUNT_CONTROLs,
withdrawals and unreadable bodies — every message delivered 3 times in random order.

1. Three devhost processes drain the storm at once.
2. Two devhost processes drain it and one is killed (SIGKILL) mid-run; what it held comes
   back after its lease as a retry, and a last drain finishes.

Which orders are approved depends on the order of arrival, so the checks hold for any
arrival order (:func:`check`): every decisionId sent has one content (but ``decidedAt``)
and is the recorded one; every ORDER that names its account and order has a decision; an
order whose ORDER_DONE came first is ``ORDER_ALREADY_DONE``; out-of-band orders are
``PRICE_OUT_OF_BAND``; each burst has exactly one ``RATE_LIMITED``; an account holds no
order twice, no order that is ended or rejected, and every approved order not ended with
``reserved`` = its decided cost × remaining / quantity, remaining being the quantity less
the fills of it that the account applied after the decision; each wallet's
``openOrderMargin`` = Σ reserved and ``availableBalance`` = gross − ``openOrderMargin``; no
outbox entry without its record; one content per alertId. Then the account's own order
of events (``recentEventIds``, appended one conditional write at a time) is replayed once
each, in process, on the fakes: the same decisions and the same account documents — the
sequential reference for the order the storm happened to take.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bench.workload import b64, deposit, duplicated, fill, iso, mark
from handlers.adapters.mapping import account_from_document
from handlers.core.catalog import load_catalog
from handlers.core.valuation import value
from handlers.flows import Deps, process_order_message
from handlers.flows.orders import decision_id
from handlers.settings import load_settings
from tests.aio import process_mark_message, process_trade_message, run
from tests.support import REPO, AppUnderTest, entry_done
from tests.unit.fakes import FakeDecisions, FakeSink, FakeStore

pytestmark = pytest.mark.services

T0 = datetime(2024, 10, 5, tzinfo=UTC)
MARKS = {"BTCUSDT": "60000", "ETHUSDT": "2500", "BTCUSD_PERP": "60000"}
CATALOG = load_catalog(REPO / "handlers" / "data" / "instruments.json")
#: A burst is RATE_LIMIT + 1 orders of one account at one submittedAt: exactly one of them,
#: whichever is decided last, is RATE_LIMITED, whatever the order of arrival.
RATE_LIMIT = 3
OVERRIDES = {"ORDER_RATE_LIMIT_PER_SECOND": str(RATE_LIMIT)}
#: Rounding slack of a pro-rata release (each release is rounded to 18 places).
SLACK = Decimal("1e-16")
ORDER_KINDS = ("ORDER", "ORDER_DONE", "ACCOUNT_CONTROL")


def settle_asset(symbol: str) -> str:
    instrument = CATALOG.get(symbol)
    assert instrument is not None, symbol
    return instrument.settle_asset


def at(second: int) -> str:
    return iso(T0 + timedelta(seconds=second))


# --- the workload ---------------------------------------------------------------------


def order(
    account: str,
    order_id: str,
    second: int,
    symbol: str = "BTCUSDT",
    side: str = "BUY",
    quantity: str = "0.01",
    price: str | None = "60000",
    leverage: int = 10,
    **fields: Any,
) -> dict[str, Any]:
    """An ORDER: LIMIT at ``price``, MARKET when ``price`` is None."""
    message: dict[str, Any] = {
        "type": "ORDER",
        "schemaVersion": 1,
        "orderId": order_id,
        "accountId": account,
        "symbol": symbol,
        "side": side,
        "orderType": "LIMIT" if price is not None else "MARKET",
        "quantity": quantity,
        "leverage": leverage,
        "marginMode": "CROSS",
        "positionSide": "BOTH",
        "reduceOnly": False,
        "submittedAt": at(second),
        "correlationId": f"c-{order_id}",
    }
    if price is not None:
        message["price"] = price
    message.update(fields)
    return message


def order_done(account: str, order_id: str, status: str, second: int) -> dict[str, Any]:
    return {
        "type": "ORDER_DONE",
        "schemaVersion": 1,
        "orderId": order_id,
        "accountId": account,
        "status": status,
        "occurredAt": at(second),
    }


def control(account: str, control_id: str, state: str, second: int) -> dict[str, Any]:
    return {
        "type": "ACCOUNT_CONTROL",
        "schemaVersion": 1,
        "controlId": control_id,
        "accountId": account,
        "tradingState": state,
        "reason": f"risk desk: {state.lower()}",
        "occurredAt": at(second),
    }


def order_fill(account: str, trade_id: str, order_id: str, **fields: Any) -> dict[str, Any]:
    """A FILL v2 of an order."""
    return fill(account, trade_id, schemaVersion=2, orderId=order_id, executedAt=at(200), **fields)


@dataclass
class Workload:
    accounts: list[str]
    marks: list[dict[str, Any]]
    #: Deposits, opening fills and the ORDER_DONEs of orders that come later.
    setup: list[dict[str, Any]]
    storm: list[Any]
    #: Every ORDER that names its account and order (a broken one included).
    orders: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    broken: set[tuple[str, str]] = field(default_factory=set)
    done_first: set[tuple[str, str]] = field(default_factory=set)
    out_of_band: set[tuple[str, str]] = field(default_factory=set)
    bursts: list[list[tuple[str, str]]] = field(default_factory=list)

    def messages(self) -> list[Any]:
        return [*self.marks, *self.setup, *self.storm]

    def ended(self) -> set[tuple[str, str]]:
        """The orders an ORDER_DONE ends (sent before or in the storm)."""
        return {
            (m["accountId"], m["orderId"])
            for m in self.messages()
            if isinstance(m, dict) and m["type"] == "ORDER_DONE"
        }

    def fills_of(self, account: str, order_id: str) -> list[dict[str, Any]]:
        return [
            m
            for m in self.storm
            if isinstance(m, dict)
            and m["type"] == "FILL"
            and (m["accountId"], m.get("orderId")) == (account, order_id)
        ]


def make_workload(accounts: int, rng: random.Random) -> Workload:
    """Per account about 13 messages in the storm; see the module docstring."""
    ids = [f"os{a:02d}" for a in range(accounts)]
    marks = [mark(symbol, price, at(0)) for symbol, price in MARKS.items()]
    w = Workload(ids, marks, [], [])

    def add(message: dict[str, Any]) -> None:
        w.storm.append(message)
        if message["type"] == "ORDER":
            w.orders[(message["accountId"], message["orderId"])] = message

    for a, acc in enumerate(ids):
        # 1,500..2,400 USDT: a 1,200 USDT order fits or not depending on what came first.
        w.setup.append(deposit(acc, str(1500 + 150 * (a % 7)), f"{acc}-dep", occurred_at=at(1)))
        if a % 3 == 0:
            w.setup.append(deposit(acc, "0.02", f"{acc}-depbtc", asset="BTC", occurred_at=at(1)))
        if a % 2 == 0:  # a long that SELL orders reduce
            w.setup.append(fill(acc, f"{acc}-open", quantity="0.01", executedAt=at(2)))
        w.setup.append(order_done(acc, f"{acc}-df", "CANCELED", 3))
        w.done_first.add((acc, f"{acc}-df"))

        add(order(acc, f"{acc}-o1", 10, price="59900"))  # cost 59.9
        add(order(acc, f"{acc}-o2", 20, "ETHUSDT", "SELL", "0.2", None, 20))  # MARKET: 25.2375
        add(order(acc, f"{acc}-o3", 30, quantity="0.1", leverage=5))  # 1,200: fits or not
        add(order(acc, f"{acc}-o4", 40, side="SELL", price="56000"))  # below the 5 % band
        w.out_of_band.add((acc, f"{acc}-o4"))
        add(order(acc, f"{acc}-o5", 50, side="SELL", quantity="0.005", price=None, reduceOnly=True))
        if a % 3 == 0:  # inverse, isolated: 10 contracts at 20x, 0.000833… BTC
            add(
                order(
                    acc,
                    f"{acc}-o6",
                    60,
                    "BTCUSD_PERP",
                    quantity="10",
                    leverage=20,
                    marginMode="ISOLATED",
                )
            )
            w.storm.append(
                order_fill(
                    acc,
                    f"{acc}-f6",
                    f"{acc}-o6",
                    symbol="BTCUSD_PERP",
                    quantity="3",
                    leverage=20,
                    marginMode="ISOLATED",
                )
            )
        add(order(acc, f"{acc}-df", 70, quantity="0.002"))  # its ORDER_DONE came first
        if a % 4 == 1:
            burst = [f"{acc}-b{n}" for n in range(RATE_LIMIT + 1)]
            for order_id in burst:
                add(order(acc, order_id, 80, "ETHUSDT", quantity="0.01", price="2500"))
            w.bursts.append([(acc, order_id) for order_id in burst])
        if a % 10 == 0:  # names its account and order: decided SCHEMA_INVALID, alerted
            add(order(acc, f"{acc}-bad", 100, quantity="-1"))
            w.broken.add((acc, f"{acc}-bad"))
        if a % 2 == 0:
            w.storm.append(order_done(acc, f"{acc}-o1", "CANCELED", 110))
        if a % 3 == 1:
            w.storm.append(order_done(acc, f"{acc}-o2", "EXPIRED", 120))
        # Fills of the orders (each order's fills sum to less than its quantity): applied
        # whatever the order's fate; they release its reservation only once it is open.
        w.storm += [
            order_fill(acc, f"{acc}-f1a", f"{acc}-o1", quantity="0.003", price="59900"),
            order_fill(acc, f"{acc}-f1b", f"{acc}-o1", quantity="0.002", price="59900"),
            order_fill(
                acc,
                f"{acc}-f2",
                f"{acc}-o2",
                symbol="ETHUSDT",
                side="SELL",
                quantity="0.05",
                price="2498.75",
                leverage=20,
            ),
            order_fill(acc, f"{acc}-f3", f"{acc}-o3", quantity="0.02", leverage=5),
        ]
        if a % 5 == 2:  # REDUCING for a while, or never when ACTIVE (later) comes first
            w.storm += [
                control(acc, f"{acc}-c1", "REDUCING", 45),
                control(acc, f"{acc}-c2", "ACTIVE", 95),
            ]
        if a % 5 == 3:  # HALTED for good: the older ACTIVE changes nothing after it
            w.storm += [
                control(acc, f"{acc}-c1", "HALTED", 35),
                control(acc, f"{acc}-c0", "ACTIVE", 5),
            ]
        if a % 6 == 5:
            w.storm.append({**deposit(acc, "-900", f"{acc}-wd"), "reason": "WITHDRAWAL"})
    w.storm += [f"not an order {n}" for n in range(3)]  # MALFORMED: no decision
    rng.shuffle(w.storm)
    return w


def queue_of(message: Any) -> str:
    if isinstance(message, dict) and message["type"] in ("MARK", "MARKS"):
        return "MARKS_QUEUE"
    if isinstance(message, dict) and message["type"] in ("FILL", "TRANSFER"):
        return "TRADES_QUEUE"
    return "ORDERS_QUEUE"


def send_tripled(app: AppUnderTest, messages: list[Any], rng: random.Random) -> int:
    """Every message 3 times, shuffled, each on its queue."""
    deliveries = duplicated(messages, 3, rng)
    for queue in ("MARKS_QUEUE", "TRADES_QUEUE", "ORDERS_QUEUE"):
        texts = [b64(m) for m in deliveries if queue_of(m) == queue]
        if texts:
            app.send(texts, queue=queue, encode=False)
    return len(deliveries)


def drained(app: AppUnderTest) -> str:
    result = app.run(timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stderr


def set_up(app: AppUnderTest, w: Workload, rng: random.Random) -> None:
    """Marks first (every order and fill decides at them), then the accounts."""
    send_tripled(app, w.marks, rng)
    drained(app)
    send_tripled(app, w.setup, rng)
    drained(app)


# --- the checks -----------------------------------------------------------------------


def without_time(decision: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in decision.items() if k != "decidedAt"}, sort_keys=True)


def codes(decision: Mapping[str, Any]) -> list[str]:
    return [r["code"] for r in decision["reasons"]]


def key_of(message: Mapping[str, Any]) -> str:
    """The id a message leaves among its account's recent ids."""
    kind = message["type"]
    if kind == "ORDER":
        return f"@order:{message['orderId']}"
    if kind == "ORDER_DONE":
        return f"@order-done:{message['orderId']}"
    if kind == "ACCOUNT_CONTROL":
        return f"@control:{message['controlId']}"
    return str(message.get("tradeId") or message["transferId"])


def check(app: AppUnderTest, w: Workload) -> dict[str, int]:
    """Assert the invariants that hold for any order of arrival, then the sequential
    reference; figures for the report."""
    sent = [json.loads(base64.b64decode(t)) for t in app.drain_queue("ORDER_DECISIONS_QUEUE")]
    contents: dict[str, set[str]] = {}
    for decision in sent:
        contents.setdefault(decision["decisionId"], set()).add(without_time(decision))
    assert {k: len(v) for k, v in contents.items() if len(v) > 1} == {}, "a decision changed"
    wanted = {decision_id(acc, oid): (acc, oid) for acc, oid in w.orders}
    assert set(contents) == set(wanted), "an ORDER without a decision, or one too many"

    decided: dict[tuple[str, str], dict[str, Any]] = {}
    for did, (acc, oid) in wanted.items():
        record = app.record(acc, f"@order:{oid}")
        assert record is not None, (acc, oid)
        [content] = contents[did]
        assert without_time(record["decision"]) == content, "sent is not what was recorded"
        decided[(acc, oid)] = record["decision"]
    for key in w.done_first:
        assert "ORDER_ALREADY_DONE" in codes(decided[key]), key
    for key in w.out_of_band:
        assert codes(decided[key])[:1] == ["PRICE_OUT_OF_BAND"], key
    for key in w.broken:
        assert codes(decided[key]) == ["SCHEMA_INVALID"], key
    for burst in w.bursts:
        limited = [k for k in burst if "RATE_LIMITED" in codes(decided[k])]
        assert len(limited) == 1, burst

    docs = {
        d["accountId"]: d for d in app.query("ledger", "SELECT * FROM c WHERE c.type = 'account'")
    }
    records = {
        (r["accountId"], r["id"]): r
        for r in app.query(
            "ledger", "SELECT c.accountId, c.id, c.accounts FROM c WHERE c.type != 'account'"
        )
    }
    ended = w.ended()
    by_account: dict[str, list[Any]] = {acc: [] for acc in w.accounts}
    for message in w.messages():
        if isinstance(message, dict) and "accountId" in message:
            by_account[message["accountId"]].append(message)
    figures: Counter[str] = Counter()
    for acc in w.accounts:
        doc = docs[acc]
        recent = doc["recentEventIds"]
        assert len(recent) == len(set(recent)), f"{acc}: an event applied twice"
        keys = [key_of(m) for m in by_account[acc]]
        assert sorted(recent) == sorted(keys), f"{acc}: not every event is on the account"
        valid = [k for k in w.orders if k[0] == acc and k not in w.broken]
        assert len(doc["orderTimes"]) == len(valid), f"{acc}: an order counted twice"
        for entry in doc["pending"]:
            assert entry_done(acc, entry, records), (acc, entry)

        held = {o["orderId"]: o for o in doc["openOrders"]}
        assert len(held) == len(doc["openOrders"]), f"{acc}: an order held twice"
        for (a, oid), decision in decided.items():
            if a != acc:
                continue
            figures[decision["decision"]] += 1
            if decision["decision"] != "APPROVED" or (acc, oid) in ended:
                assert oid not in held, f"{acc}: {oid} held open"
                continue
            # Approved and not ended: open (its fills sum to less than its quantity), with
            # what the fills applied after its decision released, pro rata.
            assert oid in held, f"{acc}: approved {oid} not held"
            o = held[oid]
            after = recent[recent.index(f"@order:{oid}") + 1 :]
            filled = sum(
                (Decimal(f["quantity"]) for f in w.fills_of(acc, oid) if f["tradeId"] in after),
                Decimal(0),
            )
            quantity = Decimal(w.orders[(acc, oid)]["quantity"])
            assert Decimal(o["quantity"]) == quantity - filled, (acc, oid)
            cost = Decimal(decision["metrics"]["cost"])
            assert abs(Decimal(o["reserved"]) - cost * (quantity - filled) / quantity) <= SLACK
            assert o["price"] == decision["metrics"]["price"]
            figures["released"] += filled > 0
        # Each wallet: openOrderMargin = Σ reserved; available = gross − openOrderMargin.
        account = account_from_document(doc)
        gross = value(account.ledger, CATALOG, Decimal("0.80")).wallets
        for asset, wallet in doc["wallets"].items():
            reserved = sum(
                (
                    Decimal(o["reserved"])
                    for o in held.values()
                    if settle_asset(o["symbol"]) == asset
                ),
                Decimal(0),
            )
            assert Decimal(wallet["openOrderMargin"]) == reserved, (acc, asset)
            available = gross[asset].available_balance - reserved
            assert abs(Decimal(wallet["availableBalance"]) - available) <= SLACK, (acc, asset)
        figures["open"] += len(held)
        trading_states(acc, doc, decided, by_account[acc])

    alerts = app.alerts()
    seen: dict[str, set[str]] = {}
    for alert in alerts:
        body = {k: v for k, v in alert.items() if k != "createdAt"}
        seen.setdefault(alert["alertId"], set()).add(json.dumps(body, sort_keys=True))
    assert all(len(c) == 1 for c in seen.values()), "an alert changed"
    types = Counter(a["type"] for a in alerts)
    assert "POISON_MESSAGE" not in types
    rejected = {a["sourceId"] for a in alerts if a["type"] == "TRADE_REJECTED"}
    assert {f"@order:{oid}" for _, oid in w.broken} <= rejected
    assert app.query("deadletters", "SELECT c.id FROM c WHERE c.type = 'deadletter'") == []

    sequential_reference(app, w, docs, contents)
    return {
        "decisions sent": len(sent),
        "decisionIds": len(contents),
        **figures,
        "alerts": len(alerts),
        "TRADING_STATE_CHANGED": types["TRADING_STATE_CHANGED"],
    }


def trading_states(
    acc: str,
    doc: Mapping[str, Any],
    decided: Mapping[tuple[str, str], Mapping[str, Any]],
    messages: list[Any],
) -> None:
    """The latest control (by occurredAt) holds; an order decided while the account was
    HALTED is ACCOUNT_HALTED (a HALTED control applied: no older one undoes it)."""
    controls = [m for m in messages if m["type"] == "ACCOUNT_CONTROL"]
    if not controls:
        assert doc["tradingState"] == "ACTIVE"
        return
    latest = max(controls, key=lambda m: m["occurredAt"])
    assert doc["tradingState"] == latest["tradingState"], acc
    halted = [m for m in controls if m["tradingState"] == "HALTED"]
    if halted:
        recent = doc["recentEventIds"]
        since = recent.index(key_of(halted[0]))
        for key in recent[since:]:
            if key.startswith("@order:") and (acc, key[7:]) in decided:
                reasons = codes(decided[(acc, key[7:])])
                assert "ACCOUNT_HALTED" in reasons or reasons == ["SCHEMA_INVALID"], key


def sequential_reference(
    app: AppUnderTest,
    w: Workload,
    docs: Mapping[str, Mapping[str, Any]],
    contents: Mapping[str, set[str]],
) -> None:
    """Deliver each message once, in process on the fakes, in the order each account
    applied them (its recentEventIds): the same decisions and the same documents."""
    settings = load_settings({**app.settings})
    decisions = FakeDecisions()
    deps = Deps(
        settings=settings,
        catalog=load_catalog(settings.instruments_file),
        store=FakeStore(),  # type: ignore[arg-type]
        sink=FakeSink(),
        decisions=decisions,
    )
    for m in w.marks:
        process_mark_message(b64(m).encode(), deps)
    by_key = {
        (m["accountId"], key_of(m)): m
        for m in w.messages()
        if isinstance(m, dict) and "accountId" in m
    }
    for acc in w.accounts:
        for key in docs[acc]["recentEventIds"]:
            message = by_key[(acc, key)]
            raw = b64(message).encode()
            if message["type"] in ORDER_KINDS:
                run(process_order_message(raw, deps))
            else:
                process_trade_message(raw, deps)
    reference = {
        d.decisionId: without_time(json.loads(d.model_dump_json())) for d in decisions.sent
    }
    assert len(reference) == len(decisions.sent)
    assert {k: next(iter(v)) for k, v in contents.items()} == reference
    store: FakeStore = deps.store  # type: ignore[assignment]
    for acc in w.accounts:
        assert comparable(docs[acc]) == comparable(store.account(acc)), acc


def comparable(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What the order of delivery decides and nothing else does (no times of processing)."""
    keep = ("wallets", "riskState", "tradingState", "tradingStateAt", "openOrders")
    return {
        **{k: doc[k] for k in keep},
        "orderTimes": doc["orderTimes"],
        "recentEventIds": doc["recentEventIds"],
        "positions": [{k: v for k, v in p.items() if k != "updatedAt"} for p in doc["positions"]],
    }


# --- the tests --------------------------------------------------------------------------

#: 30 accounts (412 messages, 1,236 deliveries) by default; the long variants (`-m slow`)
#: use 150 (about 2,000 messages, 6,000 deliveries).
SIZES = [
    pytest.param(30, id="fast"),
    pytest.param(150, id="long", marks=[pytest.mark.slow, pytest.mark.timeout(1800)]),
]


def fresh_app(app: AppUnderTest, tmp_path: Path) -> AppUnderTest:
    """An app like ``app`` (same services) with the rate limit the bursts need."""
    return AppUnderTest(app.services, tmp_path, OVERRIDES)


@pytest.mark.parametrize("accounts", SIZES)
def test_order_storm_in_random_order_on_three_hosts(
    app: AppUnderTest, tmp_path: Path, accounts: int
) -> None:
    app = fresh_app(app, tmp_path)
    rng = random.Random(20261201)
    w = make_workload(accounts, rng)
    set_up(app, w, rng)
    deliveries = send_tripled(app, w.storm, rng)
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: app.run(timeout=1500), range(3)))
    assert all(r.returncode == 0 for r in results), [r.stderr[-3000:] for r in results]
    logs = "".join(r.stderr for r in results)
    figures = check(app, w)
    print(
        f"orders storm: {len(w.storm)} messages x3 = {deliveries} deliveries on 3 hosts, "
        f"{len(w.accounts)} accounts: {figures}; "
        f"{logs.count('etag conflict on')} etag conflicts, {logs.count(' failed: ')} failed"
    )


def host(app: AppUnderTest, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``devhost run --drain`` in its own session (so that it can be killed by its id),
    its log to ``log``."""
    command = [sys.executable, "-m", "devhost", "run", "--drain", "--settings"]
    with log.open("wb") as out:
        return subprocess.Popen(
            [*command, str(app.settings_file)],
            cwd=REPO,
            env=dict(env),
            stdout=subprocess.DEVNULL,
            stderr=out,
            start_new_session=True,
        )


def decided_count(app: AppUnderTest) -> int:
    rows = app.query("ledger", "SELECT VALUE COUNT(1) FROM c WHERE c.type = 'order'")
    return int(rows[0]) if rows else 0


def kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.parametrize("accounts", SIZES)
def test_order_storm_with_a_host_killed_mid_run(
    app: AppUnderTest, tmp_path: Path, accounts: int
) -> None:
    """Two hosts; one is killed (SIGKILL) once a quarter of the orders are decided. What
    it held comes back after its 3 s lease with dequeue count 2 (a retry: it finishes the
    entries the killed invocations committed), and the other host drains it."""
    app = fresh_app(app, tmp_path)
    rng = random.Random(20261202)
    w = make_workload(accounts, rng)
    set_up(app, w, rng)
    deliveries = send_tripled(app, w.storm, rng)
    env = {**app.env(), "DEVHOST_MESSAGE_LEASE_SECONDS": "3"}
    victim = host(app, env, tmp_path / "victim.log")
    survivor = host(app, env, tmp_path / "survivor.log")
    try:
        reached = 0
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and victim.poll() is None:
            reached = decided_count(app)
            if reached >= len(w.orders) // 4:
                break
            time.sleep(0.05)
        kill(victim)
        assert survivor.wait(timeout=1500) == 0, (tmp_path / "survivor.log").read_text()[-3000:]
    finally:
        kill(victim)
        kill(survivor)
    assert 0 < reached < len(w.orders), f"not killed mid-run: {reached} of {len(w.orders)}"
    survived = (tmp_path / "survivor.log").read_text()
    # What the victim held when it died comes back to the survivor as a retry.
    retried = survived.count("dequeueCount=2 Succeeded")
    assert retried > 0, "the victim held nothing when it was killed"
    left = drained(app).count("outcome=")  # the queues are empty by now: nothing to do
    figures = check(app, w)
    print(
        f"orders storm, host killed after {reached} of {len(w.orders)} orders decided: "
        f"{deliveries} deliveries, {retried} retried on the survivor "
        f"({survived.count('dequeueCount=2 outcome=DUPLICATE')} already done, "
        f"{survived.count('left by an earlier invocation')} entries finished for the "
        f"victim), {left} left for a last drain; {figures}"
    )
