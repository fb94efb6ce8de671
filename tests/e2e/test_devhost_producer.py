"""``python -m devhost send``, ``alerts`` and ``decisions`` against Azurite."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from devhost_support import REPO_ROOT, Azurite, free_port

from devhost.producer import queue_for_line
from devhost.services import AZURITE_ACCOUNT_KEY


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
    events.write_text(f"{fill}\n\n{mark}\n{batch}\n", encoding="utf-8")

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
    assert f"sent 1 message(s) to '{trades}'" in sent.stdout
    assert f"sent 2 message(s) to '{marks}'" in sent.stdout
    service = azurite.service()
    trade_bodies = {
        base64.b64decode(m.content).decode()
        for m in service.get_queue_client(trades).peek_messages(32)
    }
    assert trade_bodies == {fill}
    assert raw.returncode == 0, raw.stderr
    assert {m.content for m in service.get_queue_client("x-" + suffix).peek_messages(32)} == {
        fill,
        mark,
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


def _settings(tmp_path: Path, azurite: Azurite) -> tuple[Path, str]:
    queue = f"t-{uuid.uuid4().hex[:10]}"
    settings = tmp_path / "settings.json"
    settings.write_text(
        json.dumps(
            {"Values": {"AzureWebJobsStorage": azurite.connection_string, "TRADES_QUEUE": queue}}
        )
    )
    return settings, queue


def test_send_refuses_a_file_with_a_line_that_is_not_a_json_object(
    tmp_path: Path, azurite: Azurite
) -> None:
    settings, queue = _settings(tmp_path, azurite)
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        b'{"type":"FILL"}\n'  # fine, but not sent: the file is refused whole
        b"\n"
        b"[1, 2]\n"
        b"not json\n"
        b'"text"\n'
        b"\xff\xfe\n"
        b'{"type":"TRANSFER"}\r\n'
    )

    refused = _cli(["send", str(events), "--settings", str(settings)], {})

    assert refused.returncode == 2
    assert f"{events} line 3: an array, not a JSON object" in refused.stderr
    assert f"{events} line 4: not JSON (Expecting value" in refused.stderr
    assert f"{events} line 5: a string, not a JSON object" in refused.stderr
    assert f"{events} line 6: not UTF-8 text (byte 0xff at column 1)" in refused.stderr
    assert "line 1:" not in refused.stderr
    assert "line 7:" not in refused.stderr  # a CRLF line end is fine
    assert f"nothing was sent from {events}" in refused.stderr
    assert queue not in {q.name for q in azurite.service().list_queues()}


def test_send_raw_sends_every_line_as_it_is(tmp_path: Path, azurite: Azurite) -> None:
    settings, queue = _settings(tmp_path, azurite)
    lines = [b"not json", b"", b"[1]", b"\xff\x00 bytes", b'{"a": 1}\r', b"   "]
    events = tmp_path / "hostile.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")

    sent = _cli(["send", str(events), "--raw", "--settings", str(settings)], {})

    assert sent.returncode == 0, sent.stderr
    assert f"sent 6 message(s) to '{queue}'" in sent.stdout
    client = azurite.service().get_queue_client(queue)
    bodies = sorted(base64.b64decode(m.content) for m in client.peek_messages(32))
    assert bodies == sorted(lines)


def test_send_raw_with_encoding_none_refuses_what_text_cannot_carry(
    tmp_path: Path, azurite: Azurite
) -> None:
    settings, queue = _settings(tmp_path, azurite)
    events = tmp_path / "hostile.jsonl"
    events.write_bytes(b"plain\n\xff\nnul \x00 here\n")

    refused = _cli(
        ["send", str(events), "--raw", "--encoding", "none", "--settings", str(settings)], {}
    )

    assert refused.returncode == 2
    assert f"{events} line 2: not UTF-8 text (byte 0xff at column 1)" in refused.stderr
    assert f"{events} line 3: holds U+0000 at column 5" in refused.stderr
    assert queue not in {q.name for q in azurite.service().list_queues()}


def test_send_to_a_storage_account_that_is_not_there_fails_in_seconds(tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    port = free_port()
    settings.write_text(
        json.dumps(
            {
                "Values": {
                    "AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                    f"AccountKey={AZURITE_ACCOUNT_KEY};"
                    f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
                }
            }
        )
    )
    events = tmp_path / "events.jsonl"
    events.write_text('{"type":"FILL"}\n')

    started = time.monotonic()
    failed = _cli(["send", str(events), "--settings", str(settings)], {})

    assert time.monotonic() - started < 20  # seconds, not minutes of retries
    assert failed.returncode == 2
    assert (
        f"AzureWebJobsStorage (from {settings}): cannot reach http://127.0.0.1:{port} within 5 s"
    ) in failed.stderr


def test_queue_for_line_sends_order_types_to_the_orders_queue() -> None:
    named = {"TRADES_QUEUE": "t-1", "MARKS_QUEUE": "m-1", "ORDERS_QUEUE": "o-1"}
    for kind in ("ORDER", "ORDER_DONE", "ACCOUNT_CONTROL"):
        line = json.dumps({"type": kind})
        assert queue_for_line(line, named) == "o-1"
        assert queue_for_line(line, {}) == "orders"  # the setting's default
        assert queue_for_line(line, named, "trades") == "t-1"
    assert queue_for_line('{"type":"FILL"}', named, "orders") == "o-1"
    assert queue_for_line('{"type":"FILL"}', {}, "orders") == "orders"
    assert queue_for_line('{"type":"ORDERS"}', named) == "t-1"  # not an order type


def test_send_routes_orders_and_decisions_prints_and_deletes(
    tmp_path: Path, azurite: Azurite
) -> None:
    suffix = uuid.uuid4().hex[:10]
    trades, orders, decided = f"t-{suffix}", f"o-{suffix}", f"d-{suffix}"
    settings = tmp_path / "settings.json"
    settings.write_text(
        json.dumps(
            {
                "Values": {
                    "AzureWebJobsStorage": azurite.connection_string,
                    "TRADES_QUEUE": trades,
                    "ORDERS_QUEUE": orders,
                    "ORDER_DECISIONS_QUEUE": decided,
                }
            }
        )
    )
    order = '{"type":"ORDER","orderId":"O-1","accountId":"alice"}'
    done = '{"type":"ORDER_DONE","orderId":"O-1","accountId":"alice","status":"FILLED"}'
    control = '{"type":"ACCOUNT_CONTROL","controlId":"C-1","tradingState":"HALTED"}'
    fill = '{"type":"FILL","tradeId":"t1","orderId":"O-1"}'
    events = tmp_path / "orders.jsonl"
    events.write_text(f"{order}\n{done}\n{control}\n{fill}\n", encoding="utf-8")

    sent = _cli(["send", str(events), "--settings", str(settings)], {})
    forced = _cli(["send", str(events), "--settings", str(settings), "--queue", "orders"], {})

    assert sent.returncode == 0, sent.stderr
    assert f"sent 3 message(s) to '{orders}'" in sent.stdout
    assert f"sent 1 message(s) to '{trades}'" in sent.stdout
    assert forced.returncode == 0, forced.stderr
    assert f"sent 4 message(s) to '{orders}'" in forced.stdout
    service = azurite.service()
    bodies = [
        base64.b64decode(m.content).decode()
        for m in service.get_queue_client(orders).peek_messages(32)
    ]
    assert sorted(bodies) == sorted([order, done, control, order, done, control, fill])

    decision = {
        "schemaVersion": 1,
        "type": "ORDER_DECISION",
        "decisionId": "d" * 64,
        "orderId": "O-1",
        "accountId": "alice",
        "symbol": "BTCUSDT",
        "decision": "REJECTED",
        "reasons": [{"code": "ACCOUNT_HALTED", "message": "the account is HALTED"}],
        "metrics": {},
        "correlationId": None,
        "decidedAt": "2026-12-03T14:00:00.000Z",
    }
    queue = service.get_queue_client(decided)
    queue.create_queue()
    queue.send_message(base64.b64encode(json.dumps(decision).encode()).decode())
    queue.send_message(json.dumps({"raw": True}))

    peeked = _cli(["decisions", "--peek", "--json", "--settings", str(settings)], {})
    readable = _cli(["decisions", "--peek", "--settings", str(settings)], {})
    taken = _cli(["decisions", "--json", "--settings", str(settings)], {})
    empty = _cli(["decisions", "--settings", str(settings)], {})

    assert peeked.returncode == 0, peeked.stderr
    assert [json.loads(line) for line in peeked.stdout.splitlines()] == [decision, {"raw": True}]
    first, second = readable.stdout.splitlines()
    assert first.split()[:4] == ["REJECTED", "alice", "O-1", "BTCUSDT"]
    assert first.endswith("ACCOUNT_HALTED: the account is HALTED")
    assert second == "(not a decision) {'raw': True}"
    assert [json.loads(line) for line in taken.stdout.splitlines()] == [decision, {"raw": True}]
    assert queue.get_queue_properties().approximate_message_count == 0
    assert (empty.returncode, empty.stdout) == (0, "")


def test_decisions_of_a_queue_that_does_not_exist_are_none(
    tmp_path: Path, azurite: Azurite
) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text(
        json.dumps(
            {
                "Values": {
                    "AzureWebJobsStorage": azurite.connection_string,
                    "ORDER_DECISIONS_QUEUE": f"d-{uuid.uuid4().hex[:10]}",
                }
            }
        )
    )
    shown = _cli(["decisions", "--settings", str(settings)], {})
    assert (shown.returncode, shown.stdout) == (0, "")
    assert "0 decision(s)" in shown.stderr
