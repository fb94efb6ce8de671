"""The demo's story, told in steps: ``python -m demo.story`` (``scripts/demo.sh`` runs it
between starting and stopping the local services).

Each step sends one file of ``demo/`` with ``python -m devhost send``, processes it with
``python -m devhost run --drain`` and shows what happened: how each message ended (from the
host's log), the alerts it raised and the order decisions it got (one readable line each,
as ``devhost alerts`` and ``devhost decisions`` print them) and the positions or wallets it
moved. What the step is meant to do is checked (alerts, decisions, risk states, quantities,
liquidation prices, open orders and the margin they reserve); a step that does something
else is reported and the run exits 1.

Steps are separate drains on purpose: the messages of one file are processed concurrently,
so a deposit and the fill it funds never share a file.

The story runs in its own queues and database (:data:`DEMO_SETTINGS`) on the local
services, emptied first, so it can run again on services that are already up; its settings
are the app's defaults otherwise (local.settings.json is not read).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO / "demo"
DEFAULT_WORKDIR = REPO / ".run" / "demo"

#: Where the story runs, next to the local services' connection settings; everything else
#: (thresholds, catalog) is the app's default, whatever local.settings.json says.
DEMO_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME": "python",
    "TRADES_QUEUE": "demo-trades",
    "MARKS_QUEUE": "demo-marks",
    "MARKS_FANOUT_QUEUE": "demo-marks-fanout",
    "ALERTS_QUEUE": "demo-alerts",
    "ORDERS_QUEUE": "demo-orders",
    "ORDER_DECISIONS_QUEUE": "demo-order-decisions",
    "COSMOS_DATABASE": "tradeguard-demo",
}

#: (type, accountId, scope, first reason code) of an alert; scope and account "-" for null.
AlertKey = tuple[str, str, str, str]
#: (decision, accountId, orderId, first reason code or "-") of an order decision.
DecisionKey = tuple[str, str, str, str]


@dataclass(frozen=True)
class Step:
    """One step: the file it sends, why, and what must have happened after the drain.

    ``states`` maps (account, scope) to a risk state, the scope being a settle asset (the
    cross wallet) or ``SYMBOL:SIDE`` (a position); ``quantities`` and ``liquidation`` map
    (account, ``SYMBOL:SIDE``) to the position's signed quantity and its liquidation price
    as the tables round it. ``alerts`` are exactly the alerts the step raises, ``decisions``
    exactly the order decisions it gets; ``open_orders`` maps an account to the ids of the
    orders it holds open and ``reserved`` (account, settle asset) to the wallet's
    ``openOrderMargin``.
    """

    file: str
    title: str
    why: str
    then: str
    alerts: tuple[AlertKey, ...] = ()
    decisions: tuple[DecisionKey, ...] = ()
    states: Mapping[tuple[str, str], str] = field(default_factory=dict)
    quantities: Mapping[tuple[str, str], str] = field(default_factory=dict)
    liquidation: Mapping[tuple[str, str], str] = field(default_factory=dict)
    open_orders: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    reserved: Mapping[tuple[str, str], str] = field(default_factory=dict)
    show: tuple[str, ...] = ()
    wallets: bool = False

    @property
    def path(self) -> Path:
        return DEMO_DIR / self.file


STEPS: tuple[Step, ...] = (
    Step(
        "01-fund.jsonl",
        "Fund three accounts",
        "Three TRANSFER deposits: alice 2000 USDT (she trades with cross margin), bob\n"
        "1500 USDT (he trades isolated), carol 0.5 BTC (a coin-margined account).",
        "Wallets credited, no position yet, no alert.",
        states={("alice", "USDT"): "NORMAL", ("bob", "USDT"): "NORMAL", ("carol", "BTC"): "NORMAL"},
        show=("alice", "bob", "carol"),
        wallets=True,
    ),
    Step(
        "02-open.jsonl",
        "Open three positions",
        "alice buys 0.5 BTCUSDT at 64000, cross, 20x: her whole USDT wallet backs it.\n"
        "bob sells 4 ETHUSDT at 2500, ISOLATED, 10x: only its 1000 USDT of isolated margin\n"
        "is at stake. carol sells 300 BTCUSD_PERP contracts (100 USD each) at 64000,\n"
        "ISOLATED, 5x. No mark has arrived yet, so each is valued at its fill price.",
        "Three NORMAL positions. alice would be liquidated at 60240.96, 5.9 % below.",
        states={("alice", "USDT"): "NORMAL", ("bob", "ETHUSDT:BOTH"): "NORMAL"},
        quantities={
            ("alice", "BTCUSDT:BOTH"): "0.5",
            ("bob", "ETHUSDT:BOTH"): "-4",
            ("carol", "BTCUSD_PERP:BOTH"): "-300",
        },
        liquidation={
            ("alice", "BTCUSDT:BOTH"): "60240.96",
            ("bob", "ETHUSDT:BOTH"): "2739.04",
            ("carol", "BTCUSD_PERP:BOTH"): "79680.00",
        },
        show=("alice", "bob", "carol"),
    ),
    Step(
        "03-duplicate.jsonl",
        "A duplicate",
        "The producer missed bob's acknowledgement and sends his fill bob-1 again: the same\n"
        "tradeId, byte for byte.",
        "DUPLICATE: applied once. bob is still short 4 ETHUSDT, and no alert.",
        quantities={("bob", "ETHUSDT:BOTH"): "-4"},
        show=("bob",),
    ),
    Step(
        "04-rejected.jsonl",
        "Two fills that cannot be right",
        "alice sends a reduce-only SELL of 1 BTCUSDT while she holds 0.5: it would flip her\n"
        "long into a short. bob sends a fill at 2500.005, off ETHUSDT's 0.01 tick.",
        "Both REJECTED, one TRADE_REJECTED alert each; no position changed.",
        alerts=(
            ("TRADE_REJECTED", "alice", "-", "REDUCE_ONLY_VIOLATION"),
            ("TRADE_REJECTED", "bob", "-", "PRICE_TICK"),
        ),
        quantities={("alice", "BTCUSDT:BOTH"): "0.5", ("bob", "ETHUSDT:BOTH"): "-4"},
        show=("alice", "bob"),
    ),
    Step(
        "05-btc-falls.jsonl",
        "BTC falls 5.8 %",
        "The first marks, one MARKS batch: BTCUSDT and BTCUSD_PERP at 60280, ETHUSDT at\n"
        "2500. alice's long loses 1860 USDT, leaving a margin balance of 140 against a\n"
        "maintenance margin of 120.56.",
        "alice's cross USDT wallet goes NORMAL → MARGIN_CALL (ratio ≥ 0.80): one MARGIN_CALL.\n"
        "carol's short gains.",
        alerts=(("MARGIN_CALL", "alice", "USDT", "MARGIN_CALL"),),
        states={("alice", "USDT"): "MARGIN_CALL", ("carol", "BTCUSD_PERP:BOTH"): "NORMAL"},
        show=("alice", "carol"),
    ),
    Step(
        "06-btc-falls-further.jsonl",
        "BTC falls through alice's liquidation price",
        "BTCUSDT and BTCUSD_PERP at 60200: 40.96 below alice's liquidation price.",
        "MARGIN_CALL → LIQUIDATION (ratio ≥ 1, mark beyond the liquidation price): one\n"
        "LIQUIDATION_RISK, CRITICAL. The venue's liquidation engine would act now.",
        alerts=(("LIQUIDATION_RISK", "alice", "USDT", "LIQUIDATION_RISK"),),
        states={("alice", "USDT"): "LIQUIDATION"},
        show=("alice",),
    ),
    Step(
        "07-btc-rebounds.jsonl",
        "BTC rebounds",
        "BTCUSDT and BTCUSD_PERP at 63000.",
        "alice's ratio falls back to 0.08: LIQUIDATION → NORMAL, one RISK_RECOVERED.",
        alerts=(("RISK_RECOVERED", "alice", "USDT", "RISK_RECOVERED"),),
        states={("alice", "USDT"): "NORMAL"},
        show=("alice",),
    ),
    Step(
        "08-eth-rallies.jsonl",
        "ETH rallies 9.5 %",
        "One MARK: ETHUSDT at 2737.5. bob's short loses 950 of its 1000 USDT of isolated\nmargin.",
        "bob's isolated position goes NORMAL → MARGIN_CALL (scope ETHUSDT:BOTH); his USDT\n"
        "wallet stays NORMAL: an isolated position risks only its own margin.",
        alerts=(("MARGIN_CALL", "bob", "ETHUSDT:BOTH", "MARGIN_CALL"),),
        states={("bob", "ETHUSDT:BOTH"): "MARGIN_CALL", ("bob", "USDT"): "NORMAL"},
        show=("bob",),
    ),
    Step(
        "09-orders.jsonl",
        "Two orders, checked before they reach the matching engine",
        "Two ORDERs, each answered by one ORDER_DECISION (`devhost decisions` prints them),\n"
        "valued at the latest marks (BTCUSDT 63000). bob wants 0.05 BTCUSDT at 63000, cross,\n"
        "10x: cost 315 USDT, and his cross wallet has 500 available (the rest is his\n"
        "isolated margin). alice wants 0.01 at 63000, 10x: cost 63, but her cross wallet is\n"
        "all in her long (available -75).",
        "bob's order is APPROVED and its 315 USDT reserved: his available balance falls to\n"
        "185. alice's is REJECTED, INSUFFICIENT_MARGIN. No alert, no position moves.",
        decisions=(
            ("APPROVED", "bob", "bob-o1", "-"),
            ("REJECTED", "alice", "alice-o1", "INSUFFICIENT_MARGIN"),
        ),
        open_orders={"alice": (), "bob": ("bob-o1",)},
        reserved={("alice", "USDT"): "0", ("bob", "USDT"): "315"},
        quantities={("alice", "BTCUSDT:BOTH"): "0.5"},
        show=("alice", "bob"),
        wallets=True,
    ),
    Step(
        "10-order-done.jsonl",
        "The order is done",
        "The venue reports bob's order CANCELED: an ORDER_DONE ends it (a FILL with its\n"
        "orderId would release its reservation pro rata instead).",
        "bob's 315 USDT are released: available 500 again. ORDER_DONE sends nothing.",
        open_orders={"bob": ()},
        reserved={("bob", "USDT"): "0"},
        show=("bob",),
        wallets=True,
    ),
)


# -- checks ----------------------------------------------------------------------------


def alert_key(alert: Mapping[str, Any]) -> AlertKey:
    """The (type, account, scope, first reason code) of a decoded alert."""
    reasons = alert.get("reasons") or [{}]
    return (
        str(alert.get("type")),
        str(alert.get("accountId") or "-"),
        str(alert.get("scope") or "-"),
        str(reasons[0].get("code", "-")),
    )


def _risk_state(doc: Mapping[str, Any], scope: str) -> str | None:
    wallet = doc.get("wallets", {}).get(scope)
    if wallet is not None:
        return str(wallet.get("riskState"))
    position = _position(doc, scope)
    return None if position is None else str(position.get("riskState"))


def _position(doc: Mapping[str, Any], scope: str) -> Mapping[str, Any] | None:
    for p in doc.get("positions", []):
        if f"{p.get('symbol')}:{p.get('positionSide')}" == scope:
            return dict(p)
    return None


def decision_key(decision: Mapping[str, Any]) -> DecisionKey:
    """The (decision, account, order, first reason code) of a decoded order decision."""
    reasons = decision.get("reasons") or [{}]
    return (
        str(decision.get("decision")),
        str(decision.get("accountId") or "-"),
        str(decision.get("orderId") or "-"),
        str(reasons[0].get("code", "-")),
    )


def check(
    step: Step,
    alerts: Sequence[Mapping[str, Any]],
    docs: Sequence[Mapping[str, Any]],
    decisions: Sequence[Mapping[str, Any]] = (),
) -> list[str]:
    """What differs from what ``step`` is meant to do, given the alerts it raised, the
    order decisions it got and the account documents after it (empty: it did what it
    says)."""
    from devhost import present

    problems: list[str] = []
    got = Counter(alert_key(a) for a in alerts)
    want = Counter(step.alerts)
    if got != want:
        problems.append(
            f"alerts: expected {sorted(want.elements()) or 'none'}, got {sorted(got.elements()) or 'none'}"
        )
    decided, meant = Counter(decision_key(d) for d in decisions), Counter(step.decisions)
    if decided != meant:
        problems.append(
            f"decisions: expected {sorted(meant.elements()) or 'none'}, "
            f"got {sorted(decided.elements()) or 'none'}"
        )
    by_id = {str(d.get("accountId")): d for d in docs}
    for (account, scope), state in step.states.items():
        found = _risk_state(by_id.get(account, {}), scope)
        if found != state:
            problems.append(f"{account} {scope}: expected {state}, got {found}")
    for (account, scope), qty in step.quantities.items():
        position = _position(by_id.get(account, {}), scope)
        found = None if position is None else str(position.get("quantity"))
        if found != qty:
            problems.append(f"{account} {scope} quantity: expected {qty}, got {found}")
    for (account, scope), liq in step.liquidation.items():
        position = _position(by_id.get(account, {}), scope)
        found = None if position is None else present.price(position.get("liquidationPrice"))
        if found != liq:
            problems.append(f"{account} {scope} liquidation price: expected {liq}, got {found}")
    for account, ids in step.open_orders.items():
        held = tuple(str(o.get("orderId")) for o in by_id.get(account, {}).get("openOrders", []))
        if sorted(held) != sorted(ids):
            problems.append(f"{account} open orders: expected {list(ids)}, got {list(held)}")
    for (account, asset), margin in step.reserved.items():
        wallet = by_id.get(account, {}).get("wallets", {}).get(asset, {})
        found = wallet.get("openOrderMargin")
        if found != margin:
            problems.append(f"{account} {asset} open-order margin: expected {margin}, got {found}")
    return problems


# -- running it ------------------------------------------------------------------------

_OUTCOME = re.compile(
    r"tradeguard: (?P<fn>\w+) message=(?P<message>\S+) dequeueCount=\S+ outcome=(?P<outcome>\w+) "
    r"source=(?P<source>\S+) account=(?P<account>\S+) alerts=\d+ ?(?P<detail>.*?) \([\d.]+ ms\)$"
)


def outcomes(log: str) -> list[str]:
    """How each message ended, from the host's log: one line per message (one per entry of
    a MARKS batch, the batch's detail once under them), sorted (the host processes the
    messages of a file concurrently)."""
    groups: dict[str, list[tuple[str, str, str, str, str]]] = {}
    for line in log.splitlines():
        match = _OUTCOME.search(line)
        if match is not None:
            account = match["account"] if match["account"] != "None" else ""
            row = (match["fn"], match["outcome"], match["source"], account, match["detail"])
            groups.setdefault(match["message"], []).append(row)
    rows = [r for group in groups.values() for r in group]
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(4)]

    def cells(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False))

    lines: list[tuple[tuple[str, ...], list[str]]] = []
    for group in groups.values():
        group.sort()
        details = {r[4] for r in group}
        if len(group) > 1 and len(details) == 1:  # one message's detail, said once
            text = [cells(r[:4]).rstrip() for r in group]
            text.append(" " * (widths[0] + 2) + f"(the whole message: {details.pop()})")
        else:
            text = [f"{cells(r[:4])}  {r[4]}".rstrip() for r in group]
        lines.append((group[0], text))
    return [line for _, text in sorted(lines) for line in text]


class Story:
    """The story on one set of settings (a settings file is written into ``workdir``)."""

    def __init__(self, settings: Mapping[str, str], workdir: Path, out: TextIO) -> None:
        from handlers.settings import load_settings as app_settings

        self.settings = dict(settings)
        self.app = app_settings(self.settings)
        self.workdir = workdir
        self.out = out
        workdir.mkdir(parents=True, exist_ok=True)
        self.settings_file = workdir / "settings.json"
        self.settings_file.write_text(
            json.dumps({"IsEncrypted": False, "Values": self.settings}, indent=2), encoding="utf-8"
        )
        self.log_file = workdir / "devhost.log"
        self.log_file.write_text("", encoding="utf-8")
        self.alerts: list[dict[str, Any]] = []
        self.decisions: list[dict[str, Any]] = []
        self.ok = False
        self.results: list[tuple[Step, list[dict[str, Any]], list[dict[str, Any]], list[str]]] = []

    def say(self, text: str = "", indent: str = "") -> None:
        for line in text.splitlines() or [""]:
            print(f"{indent}{line}".rstrip(), file=self.out)

    # The commands a reader would type, run in-process where that is cheap.

    def send(self, path: Path) -> None:
        from devhost import producer

        self.say(
            f"$ python -m devhost send {path.relative_to(REPO)} --settings {_shown(self.settings_file)}"
        )
        buffer = io.StringIO()
        if producer.send_command(path, settings_file=self.settings_file, out=buffer) != 0:
            raise RuntimeError(f"sending {path} failed")
        self.say(buffer.getvalue(), "  ")

    def drain(self) -> None:
        from handlers.settings import APP_SETTING_PREFIXES

        self.say(f"$ python -m devhost run --drain --settings {_shown(self.settings_file)}")
        env = {k: v for k, v in os.environ.items() if not k.startswith(APP_SETTING_PREFIXES)}
        env["PYTHONWARNINGS"] = "ignore"
        command = [sys.executable, "-m", "devhost", "run", "--drain", "--timeout", "120"]
        command += ["--settings", str(self.settings_file)]
        try:
            done = subprocess.run(  # noqa: S603 (this interpreter, fixed arguments)
                command,
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError("devhost run --drain did not finish in 180 s") from exc
        with self.log_file.open("a", encoding="utf-8") as log:
            log.write(done.stderr)
        if done.returncode != 0:
            self.say(done.stderr[-3000:], "  ")
            raise RuntimeError(f"devhost run --drain exited {done.returncode}")
        self.say("\n".join(outcomes(done.stderr)) or "(no outcome lines in the log)", "  ")

    def take_alerts(self) -> list[dict[str, Any]]:
        from devhost import producer

        buffer = io.StringIO()
        code = producer.alerts_command(as_json=True, settings_file=self.settings_file, out=buffer)
        if code != 0:
            raise RuntimeError(f"reading the alerts failed ({code})")
        return [json.loads(line) for line in buffer.getvalue().splitlines() if line]

    def take_decisions(self) -> list[dict[str, Any]]:
        from devhost import producer

        buffer = io.StringIO()
        code = producer.decisions_command(
            as_json=True, settings_file=self.settings_file, out=buffer
        )
        if code != 0:
            raise RuntimeError(f"reading the order decisions failed ({code})")
        return [json.loads(line) for line in buffer.getvalue().splitlines() if line]

    def accounts(self) -> list[dict[str, Any]]:
        from devhost import inspect_state

        return inspect_state.at_stored_marks(self.app, inspect_state.load_accounts(self.app))

    # Telling it.

    def alert_lines(self, alerts: Sequence[Mapping[str, Any]]) -> list[str]:
        from devhost import present

        return [present.alert_line(a, self.app.margin_call_ratio) for a in alerts]

    def step(self, number: int, step: Step) -> bool:
        from devhost import inspect_state, present

        self.say(f"── Step {number}/{len(STEPS)}: {step.title} " + "─" * 20)
        self.say(step.why)
        self.send(step.path)
        self.drain()
        alerts = sorted(self.take_alerts(), key=alert_key)  # the host runs them concurrently
        self.alerts.extend(alerts)
        decisions = sorted(self.take_decisions(), key=decision_key)
        self.decisions.extend(decisions)
        docs = self.accounts()
        self.say("What happened:")
        self.say("\n".join(self.alert_lines(alerts)) or "no alert", "  ")
        if decisions:
            self.say("\n".join(present.decision_line(d) for d in decisions), "  ")
        shown = [d for d in docs if d.get("accountId") in step.show]
        ratio = self.app.margin_call_ratio
        if step.wallets:
            lines = present.wallets_table(shown, ratio)
        else:
            lines = present.positions_table(shown, ratio, inspect_state.settle_assets(self.app))
        self.say("\n".join(lines), "  ")
        problems = check(step, alerts, docs, decisions)
        self.results.append((step, alerts, docs, problems))
        if problems:
            self.say(_hang("✘ not as told: ", step.then))
            for problem in problems:
                self.say(f"  ✘ {problem}")
        else:
            self.say(_hang("✔ ", step.then))
        self.say()
        return not problems

    def reset(self) -> None:
        """Empty the story's database and queues (local services only)."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.cosmos import CosmosClient
        from azure.cosmos.exceptions import CosmosResourceNotFoundError
        from azure.storage.queue import QueueServiceClient

        endpoint, key = self.app.cosmos_endpoint or "", self.app.cosmos_key or ""
        host = urlparse(endpoint).hostname
        if host not in {"127.0.0.1", "localhost"} or not key:
            raise RuntimeError(f"the demo runs on the local services only, not {endpoint!r}")
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        cosmos = CosmosClient(endpoint, credential=key)
        with contextlib.suppress(CosmosResourceNotFoundError):
            cosmos.delete_database(self.app.cosmos_database)
        queues = QueueServiceClient.from_connection_string(self.settings["AzureWebJobsStorage"])
        app = self.app
        names = (
            app.trades_queue,
            app.marks_queue,
            app.marks_fanout_queue,
            app.alerts_queue,
            app.orders_queue,
            app.order_decisions_queue,
        )
        for name in names:
            for queue in (name, f"{name}-poison"):
                with contextlib.suppress(ResourceNotFoundError):
                    queues.delete_queue(queue)

    def run(self) -> bool:
        """Tell every step, then the positions, wallets and alerts; True when every step did
        what it says."""
        from devhost import inspect_state, present

        app = self.app
        self.reset()
        self.say(
            "tradeguard demo. A cross account walks NORMAL → MARGIN_CALL → LIQUIDATION → NORMAL\n"
            "with the marks, next to an isolated position, a duplicate, two rejected fills, and\n"
            "two orders checked before they trade (one approved, one rejected).\n"
            "Each step sends a file of demo/ to the queues, runs devhost (the local Functions\n"
            "host) until they are empty, and shows what happened: how each message ended, the\n"
            "alerts and order decisions it raised (one line each), what it moved.\n"
            f"Risk states: MARGIN_CALL at a margin ratio ≥ {app.margin_call_ratio}; LIQUIDATION at ≥ 1,"
            " or with the mark\nat or beyond the liquidation price.\n"
            f"Queues {app.trades_queue}, {app.marks_queue}, {app.orders_queue}, "
            f"{app.alerts_queue}, {app.order_decisions_queue},\ndatabase "
            f"{app.cosmos_database} (emptied first); devhost's log: {_shown(self.log_file)}."
        )
        self.say()
        ok = True
        for number, step in enumerate(STEPS, start=1):
            ok = self.step(number, step) and ok
        docs = self.accounts()
        assets = inspect_state.settle_assets(app)
        self.say("══ Where it ended " + "═" * 60)
        self.say(
            "Rounded for reading; `python -m devhost accounts --json` has the documents at\n"
            "full precision. Margin ratio: cross positions show their wallet's, isolated ones\n"
            "their own; 'to liq.' is how far the mark can move before the liquidation price.\n"
        )
        self.say("\n".join(present.positions_table(docs, app.margin_call_ratio, assets)))
        self.say()
        self.say("\n".join(present.wallets_table(docs, app.margin_call_ratio)))
        self.say()
        self.say(
            f"Alerts ({len(self.alerts)}), one line each (`devhost alerts --json` for machines):"
        )
        self.say("\n".join(self.alert_lines(self.alerts)))
        self.say()
        self.say("Every step did what it says." if ok else "✘ Some steps did not do what they say.")
        self.ok = ok
        return ok


def _hang(first: str, text: str) -> str:
    """``text`` after ``first``, its next lines indented under it."""
    return first + text.replace("\n", "\n" + " " * len(first))


def _shown(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(REPO))
    return str(path)


@contextlib.contextmanager
def _without_app_settings() -> Iterator[None]:
    """The in-process commands read the environment over the settings file: take the app's
    settings out of it while the story runs, so that only the story's file counts."""
    from handlers.settings import APP_SETTING_PREFIXES

    saved = {k: v for k, v in os.environ.items() if k.startswith(APP_SETTING_PREFIXES)}
    for name in saved:
        del os.environ[name]
    try:
        yield
    finally:
        os.environ.update(saved)


def run_story(settings: Mapping[str, str], workdir: Path, out: TextIO = sys.stdout) -> Story:
    """Run the whole story on ``settings`` (queues and database are emptied first);
    ``Story.results`` has each step's alerts, documents and problems."""
    story = Story(settings, workdir, out)
    with _without_app_settings():
        story.run()
    return story


def local_settings(run_dir: Path | None = None) -> dict[str, str]:
    """The running local services' connection settings and :data:`DEMO_SETTINGS`.

    Raises:
        RuntimeError: the local services are not running.
    """
    from devhost import services

    run_dir = run_dir or services.DEFAULT_RUN_DIR
    report = services.status(run_dir)
    if not all(entry["running"] for entry in report.values()):
        raise RuntimeError("the local services are not running: python -m devhost services start")
    ports = {name: int(str(entry["port"])) for name, entry in report.items()}
    local = services.LocalServices(
        queue_port=ports["azurite"], cosmos_port=ports["cosmos"], run_dir=run_dir
    )
    return {**local.settings(), **DEMO_SETTINGS}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.story", description=__doc__)
    parser.add_argument("--run-dir", type=Path, help="the services' run dir (.run/services)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="default .run/demo")
    args = parser.parse_args(argv)
    try:
        story = run_story(local_settings(args.run_dir), args.workdir)
    except RuntimeError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    return 0 if story.ok else 1


if __name__ == "__main__":
    sys.exit(main())
