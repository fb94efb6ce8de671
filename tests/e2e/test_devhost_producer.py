"""``python -m devhost send`` and ``alerts`` against Azurite."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from pathlib import Path

from devhost_support import REPO_ROOT, Azurite


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devhost", *args],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_send_routes_by_type_and_alerts_prints_and_deletes(
    tmp_path: Path, azurite: Azurite
) -> None:
    suffix = uuid.uuid4().hex[:10]
    trades, marks, alerts = f"t-{suffix}", f"m-{suffix}", f"a-{suffix}"
    settings = tmp_path / "settings.json"
    settings.write_text(
        json.dumps(
            {
                "Values": {
                    "AzureWebJobsStorage": azurite.connection_string,
                    "TRADES_QUEUE": trades,
                    "MARKS_QUEUE": marks,
                    "ALERTS_QUEUE": alerts,
                }
            }
        )
    )
    fill = '{"type":"FILL","tradeId":"t1"}'
    mark = '{"type": "MARK", "symbol": "BTCUSDT"}'
    batch = '{"type":"MARKS","marks":[]}'
    events = tmp_path / "events.jsonl"
    events.write_text(f"{fill}\n\n{mark}\nnot json\n{batch}\n", encoding="utf-8")

    sent = _cli(["send", str(events), "--settings", str(settings)], {})
    raw = _cli(
        [
            "send",
            str(events),
            "--settings",
            str(settings),
            "--queue",
            "x-" + suffix,
            "--encoding",
            "none",
        ],
        {},
    )

    assert sent.returncode == 0, sent.stderr
    assert f"sent 2 message(s) to '{trades}'" in sent.stdout
    assert f"sent 2 message(s) to '{marks}'" in sent.stdout
    service = azurite.service()
    trade_bodies = {
        base64.b64decode(m.content).decode()
        for m in service.get_queue_client(trades).peek_messages(32)
    }
    assert trade_bodies == {fill, "not json"}
    assert raw.returncode == 0, raw.stderr
    assert {m.content for m in service.get_queue_client("x-" + suffix).peek_messages(32)} == {
        fill,
        mark,
        "not json",
        batch,
    }

    alert = {"alertId": "a" * 64, "type": "MARGIN_CALL"}
    queue = service.get_queue_client(alerts)
    queue.create_queue()
    queue.send_message(base64.b64encode(json.dumps(alert).encode()).decode())
    queue.send_message(json.dumps({"raw": True}))

    peeked = _cli(["alerts", "--peek", "--json", "--settings", str(settings)], {})
    readable = _cli(["alerts", "--peek", "--settings", str(settings)], {})
    taken = _cli(["alerts", "--json", "--settings", str(settings)], {})

    assert peeked.returncode == 0, peeked.stderr
    assert [json.loads(line) for line in peeked.stdout.splitlines()] == [alert, {"raw": True}]
    assert readable.stdout.splitlines()[0].split()[:2] == ["-", "MARGIN_CALL"]
    assert readable.stdout.splitlines()[1] == "(not an alert) {'raw': True}"
    assert [json.loads(line) for line in taken.stdout.splitlines()] == [alert, {"raw": True}]
    assert queue.get_queue_properties().approximate_message_count == 0
