"""The demo's story through devhost on the real local services (what ``scripts/demo.sh``
runs, on the session's services and an app of its own), and the readable ``accounts``,
``alerts`` and ``decisions`` commands it uses."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from demo.story import STEPS, alert_key, decision_key, run_story
from tests.support import REPO, AppUnderTest

pytestmark = pytest.mark.services


def devhost(app: AppUnderTest, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devhost", *args, "--settings", str(app.settings_file)],
        cwd=REPO,
        env=app.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def wallets(story: Any, account: str) -> list[dict[str, Any]]:
    """The account's wallets after each step."""
    return [
        next(d for d in docs if d["accountId"] == account)["wallets"]
        for _, _, docs, _ in story.results
    ]


def test_the_story_walks_its_states_and_raises_its_alerts(
    app: AppUnderTest, tmp_path: Path
) -> None:
    out = io.StringIO()
    story = run_story(app.settings, tmp_path / "demo", out)
    text = out.getvalue()

    assert story.ok, text
    assert [problems for *_, problems in story.results] == [[]] * len(STEPS), text
    alice = [
        next(d for d in docs if d["accountId"] == "alice")["wallets"]["USDT"]["riskState"]
        for _, _, docs, _ in story.results
    ]
    assert alice == ["NORMAL"] * 4 + ["MARGIN_CALL", "LIQUIDATION"] + ["NORMAL"] * 4
    assert sorted(map(alert_key, story.alerts)) == sorted(k for s in STEPS for k in s.alerts)
    risk = [alert_key(a) for a in story.alerts if a["type"] != "TRADE_REJECTED"]
    assert risk == [
        ("MARGIN_CALL", "alice", "USDT", "MARGIN_CALL"),
        ("LIQUIDATION_RISK", "alice", "USDT", "LIQUIDATION_RISK"),
        ("RISK_RECOVERED", "alice", "USDT", "RISK_RECOVERED"),
        ("MARGIN_CALL", "bob", "ETHUSDT:BOTH", "MARGIN_CALL"),
    ]
    assert "DUPLICATE  bob-1" in text and "REJECTED  alice-2" in text

    # The orders: one decision each, printed as `devhost decisions` prints them; bob's
    # reservation lowers his available balance until the ORDER_DONE releases it.
    assert sorted(map(decision_key, story.decisions)) == [
        ("APPROVED", "bob", "bob-o1", "-"),
        ("REJECTED", "alice", "alice-o1", "INSUFFICIENT_MARGIN"),
    ]
    orders = text[text.index("Step 9/") : text.index("Step 10/")]
    lines = {line.split()[0]: line for line in orders.splitlines() if line.startswith("  APP")}
    lines |= {line.split()[0]: line for line in orders.splitlines() if line.startswith("  REJ")}
    assert lines["APPROVED"].split()[:4] == ["APPROVED", "bob", "bob-o1", "BTCUSDT"]
    assert "cost 315.00 · available 500.00 · after 185.00" in lines["APPROVED"]
    assert lines["REJECTED"].split()[:4] == ["REJECTED", "alice", "alice-o1", "BTCUSDT"]
    assert "INSUFFICIENT_MARGIN: cost 63 USDT > available for orders -75" in lines["REJECTED"]
    assert [w["USDT"]["availableBalance"] for w in wallets(story, "bob")[-3:]] == [
        "500",
        "185",
        "500",
    ]

    # Every step is told: what is sent, the drain, what happened.
    for number, step in enumerate(STEPS, start=1):
        assert f"Step {number}/{len(STEPS)}: {step.title}" in text
        assert f"devhost send demo/{step.file}" in text
    assert text.count("$ python -m devhost run --drain") == len(STEPS)
    assert text.count("✔ ") == len(STEPS) and "✘" not in text

    # It ends with the positions table and one readable line per alert: rounded, no JSON.
    end = text[text.index("══ Where it ended") :]
    rows = {
        line.split()[0]: line.split()
        for line in end.splitlines()
        if line.startswith(("alice ", "bob ", "carol ")) and "%" in line
    }
    assert rows["alice"][:5] == ["alice", "BTCUSDT", "LONG", "cross", "0.5"]
    assert rows["alice"][5:9] == ["64000.00", "63000.00", "60240.96", "4.38"]
    assert rows["bob"][-4:] == ["0.8760", "≥", "0.80", "MARGIN_CALL"]
    assert rows["carol"][2:4] == ["SHORT", "isolated"]
    alert_lines = end[end.index("Alerts (6)") :].splitlines()[1:7]
    assert [line.split()[1] for line in alert_lines] == [
        "TRADE_REJECTED",
        "TRADE_REJECTED",
        "MARGIN_CALL",
        "LIQUIDATION_RISK",
        "RISK_RECOVERED",
        "MARGIN_CALL",
    ]
    assert "CRITICAL  LIQUIDATION_RISK  alice   USDT" in end
    assert "\\u" not in text and '{"' not in text and "→" in text
    assert "60240.963855421686746988" not in text  # full precision stays in Cosmos
    doc = (REPO / "docs" / "demo.md").read_text(encoding="utf-8")
    block = doc[doc.index("<!-- demo-ending") :].split("```text\n", 1)[1].split("\n```", 1)[0]
    assert end.startswith(block + "\n"), "docs/demo.md's ending is not what the demo prints"

    # `devhost accounts`: the tables by default, the documents at full precision with --json.
    tables = devhost(app, "accounts")
    documents = devhost(app, "accounts", "--json")
    assert tables.returncode == 0 and documents.returncode == 0, tables.stderr + documents.stderr
    assert "60240.96" in tables.stdout and "60240.963855421686746988" not in tables.stdout
    assert "60240.963855421686746988" in documents.stdout

    # `devhost alerts`: one readable line per alert, the message as sent with --json.
    queue = app.queues.get_queue_client(app.settings["ALERTS_QUEUE"])
    [sent] = [a for a in story.alerts if a["type"] == "LIQUIDATION_RISK"]
    queue.send_message(base64.b64encode(json.dumps(sent).encode()).decode())
    peeked = devhost(app, "alerts", "--peek", "--json")
    readable = devhost(app, "alerts")
    assert peeked.returncode == 0 and readable.returncode == 0, peeked.stderr + readable.stderr
    assert [json.loads(line) for line in peeked.stdout.splitlines()] == [sent]
    [line] = readable.stdout.splitlines()
    assert line.split()[:5] == ["CRITICAL", "LIQUIDATION_RISK", "alice", "USDT", sent["sourceId"]]
    assert "margin ratio 1.2040 ≥ 1" in line and "{" not in line
    assert app.peek_count("ALERTS_QUEUE") == 0
