"""Exactly-once effect under failures, on the real services: crash windows of the write
path, a Cosmos outage mid-run, and replay of poisoned bodies. The messages are
:mod:`bench.workload`'s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import pytest

from bench import workload
from bench.workload import deposit, fill
from handlers.flows import Deps
from tests.aio import process_trade_message
from tests.integration.test_marks_scale import CountingStore, in_process
from tests.integration.test_pipeline import ran_ok
from tests.support import REPO, AppUnderTest

pytestmark = pytest.mark.services


class Crash(RuntimeError):
    """An injected failure."""


class FaultyStore(CountingStore):
    """The real store; raises once at a named point."""

    def __init__(self, inner: Any, point: str) -> None:
        super().__init__(inner)
        self.point = point
        self.fired = False

    def __getattr__(self, name: str) -> Any:
        real = super().__getattr__(name)
        if not callable(real):
            return real

        async def maybe(*args: Any, **kwargs: Any) -> Any:
            if not self.fired and self.point == f"before {name}":
                self.fired = True
                raise Crash(self.point)
            out = await real(*args, **kwargs)
            if not self.fired and self.point == f"after {name}":
                self.fired = True
                raise Crash(self.point)
            return out

        return maybe


def b64(message: dict[str, Any]) -> bytes:
    """The message body a queue trigger hands over (base64 JSON), as bytes."""
    return workload.b64(message).encode()


class FaultySink:
    def __init__(self, inner: Any, fail: bool) -> None:
        self.inner = inner
        self.fail = fail

    async def send(self, alerts: Any) -> None:
        if self.fail:
            self.fail = False
            raise Crash("before the alert")
        await self.inner.send(alerts)


@pytest.mark.parametrize(
    ("point", "alert_copies"),
    [
        ("before write_account", 1),  # before the state write
        ("after write_account", 1),  # state written, nothing sent (crash between state and alert)
        ("sink", 1),  # the alert send itself fails
        ("before create_record", 2),  # alerts sent, record missing: redelivery re-sends, same ids
        ("after create_record", 1),  # everything done, the invocation dies before returning
    ],
)
def test_each_crash_window_is_repaired_by_redelivery(
    app: AppUnderTest, point: str, alert_copies: int
) -> None:
    deps, store = in_process(app)
    assert process_trade_message(b64(deposit("crash", "100", "dep-c")), deps).kind == "APPLIED"
    message = b64(fill("crash", "t-c"))  # under-funded: one INSUFFICIENT_MARGIN alert
    faulty = Deps(
        settings=deps.settings,
        catalog=deps.catalog,
        store=FaultyStore(store.inner, point),  # type: ignore[arg-type]
        sink=FaultySink(deps.sink, point == "sink"),
    )
    with pytest.raises(Crash):
        process_trade_message(message, faulty, dequeue_count=1)
    redelivered = process_trade_message(message, faulty, dequeue_count=2)
    again = process_trade_message(message, faulty, dequeue_count=3)

    account = app.account("crash")
    assert account is not None
    assert account["positions"][0]["quantity"] == "0.1"  # applied once
    assert account["recentEventIds"].count("t-c") == 1
    record = app.record("crash", "t-c")
    assert record is not None and record["type"] == "trade"
    alerts = app.alerts()
    ids = Counter(a["alertId"] for a in alerts)
    assert len(ids) == 1, alerts  # one distinct alert...
    assert sum(ids.values()) == alert_copies  # ...sent once, or repeated with the same id
    assert next(a["type"] for a in alerts) == "INSUFFICIENT_MARGIN"
    assert again.kind == "DUPLICATE" and again.alerts == ()
    print(
        f"crash {point!r}: redelivery {redelivered.kind} {redelivered.detail!r}, alert copies {alert_copies}"
    )


def test_cosmos_outage_mid_run_loses_nothing(app: AppUnderTest) -> None:
    # 300 events over 10 accounts; Cosmos is frozen (SIGSTOP by PID) for a few seconds while
    # devhost works and then resumed (SIGCONT). Every event must end applied (a record),
    # rejected or dead-lettered; the replay command brings back anything poisoned. The
    # freeze (35 s) outlasts the SDK request timeout with its retries (3 × 10 s), so the
    # invocations in flight fail and are retried by the host.
    accounts = [f"out{i}" for i in range(10)]
    app.send([deposit(a, "1000000", f"dep-{a}") for a in accounts])
    ran_ok(app)
    events = [
        fill(a, f"{a}-{n}", quantity="0.002", price=str(60000 + n))
        for n in range(30)
        for a in accounts
    ]
    app.send(events)
    pid = int((app.services.run_dir / "cosmos.pid").read_text())
    host = subprocess.Popen(
        [sys.executable, "-m", "devhost", "run", "--drain", "--settings", str(app.settings_file)],
        cwd=REPO,
        env=app.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert host.stdout is not None
        for line in host.stdout:
            lines.append(line)
            if sum("Succeeded" in seen for seen in lines[-400:]) >= 40:
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(120), "devhost did not get going"
    os.kill(pid, signal.SIGSTOP)  # mid-run: about 40 of 300 events done
    try:
        time.sleep(35)
    finally:
        os.kill(pid, signal.SIGCONT)
    host.wait(timeout=300)
    reader.join(timeout=10)
    output = "".join(lines)
    poisoned = app.peek_count(f"{app.settings['TRADES_QUEUE']}-poison")
    if host.returncode != 0 or poisoned:
        replay = subprocess.run(
            [
                sys.executable,
                "-m",
                "devhost",
                "replay-poison",
                "--settings",
                str(app.settings_file),
            ],
            cwd=REPO,
            env=app.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert replay.returncode == 0, replay.stdout + replay.stderr
        ran_ok(app)

    applied = rejected = dead = 0
    for event in events:
        if app.record(event["accountId"], event["tradeId"]) is not None:
            applied += 1
        elif app.record(event["accountId"], f"rejection:{event['tradeId']}") is not None:
            rejected += 1
    dead = len(app.query("deadletters", "SELECT c.id FROM c WHERE c.type = 'deadletter'"))
    for a in accounts:
        account = app.account(a)
        assert account is not None
        assert account["positions"][0]["quantity"] == "0.06"  # 30 × 0.002, each applied once
    failures = output.count("failed:")
    print(
        f"outage: {len(events)} events in, {applied} applied, {rejected} rejected, "
        f"{dead} dead-lettered, {failures} failed invocations retried, poisoned {poisoned}"
    )
    assert applied == len(events)


def test_replay_poison_applies_a_dead_lettered_body_exactly_once(app: AppUnderTest) -> None:
    # An account document the app cannot read dead-letters the fill; once the document is
    # repaired, replay-poison sends the body back and it applies exactly once.
    app.send([deposit("rp", "100000", "dep-rp")])
    ran_ok(app)
    good = app.account("rp")
    assert good is not None
    good = {k: v for k, v in good.items() if not k.startswith("_")}
    app.container("ledger").upsert_item({**good, "schemaVersion": 99})
    app.send([fill("rp", "t-rp")])
    ran_ok(app)
    assert [a["type"] for a in app.alerts()] == ["POISON_MESSAGE"]
    app.container("ledger").upsert_item(good)  # the operator repairs the document

    replay = [
        sys.executable,
        "-m",
        "devhost",
        "replay-poison",
        "--settings",
        str(app.settings_file),
    ]
    for _ in range(2):  # replaying twice changes nothing more
        done = subprocess.run(
            replay,
            cwd=REPO,
            env=app.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        ran_ok(app)
    account = app.account("rp")
    assert account is not None
    assert account["positions"][0]["quantity"] == "0.1"
    assert account["recentEventIds"].count("t-rp") == 1
    assert app.record("rp", "t-rp") is not None
    letter = app.query("deadletters", "SELECT * FROM c WHERE c.type = 'deadletter'")
    assert len(letter) == 1 and letter[0]["replayCount"] == 2
    assert app.alerts() == []
