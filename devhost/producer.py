"""Demo helpers: ``python -m devhost send FILE.jsonl`` and ``python -m devhost alerts``.

Settings are resolved exactly as ``run`` resolves them (environment, then
``local.settings.json`` or ``--settings FILE``); the storage connection is the
``AzureWebJobsStorage`` setting.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue.aio import QueueClient

from devhost import present
from devhost.settings_file import SettingsError, load_settings
from handlers.adapters.storage import async_queue_service
from handlers.errors import ConfigurationError

__all__ = ["alerts_command", "decode_alert", "queue_for_line", "send_command"]

logger = logging.getLogger(__name__)

CONNECTION = "AzureWebJobsStorage"
_MARK_TYPES = {"MARK", "MARKS"}
_PEEK_LIMIT = 32


def _setting(settings: Mapping[str, str], name: str, default: str) -> str:
    return (settings.get(name) or "").strip() or default


def queue_for_line(line: str, settings: Mapping[str, str], queue: str | None = None) -> str:
    """The queue a JSONL line goes to.

    ``queue`` "trades" or "marks" means the TRADES_QUEUE / MARKS_QUEUE setting, any other
    name is taken as is; without it a line whose ``type`` is MARK or MARKS goes to
    MARKS_QUEUE (default ``marks``) and every other line to TRADES_QUEUE (default
    ``trades``).
    """
    trades = _setting(settings, "TRADES_QUEUE", "trades")
    marks = _setting(settings, "MARKS_QUEUE", "marks")
    if queue is not None:
        return {"trades": trades, "marks": marks}.get(queue, queue)
    try:
        document = json.loads(line)
    except ValueError:
        return trades
    if isinstance(document, dict) and document.get("type") in _MARK_TYPES:
        return marks
    return trades


async def _ensure_queue(queue: QueueClient) -> None:
    with contextlib.suppress(ResourceExistsError):
        await queue.create_queue()


async def _send(
    settings: Mapping[str, str],
    messages: list[tuple[int, str, str]],
    concurrency: int,
) -> Counter[str]:
    sent: Counter[str] = Counter()
    service = async_queue_service(settings, CONNECTION)
    async with service:
        queues: dict[str, QueueClient] = {}
        for _, name, _ in messages:
            if name not in queues:
                queues[name] = service.get_queue_client(name)
                await _ensure_queue(queues[name])
        semaphore = asyncio.Semaphore(max(1, concurrency))

        async def send_one(line_number: int, name: str, content: str) -> None:
            async with semaphore:
                try:
                    await queues[name].send_message(content)
                except Exception as exc:
                    raise RuntimeError(
                        f"line {line_number}: sending to {name!r} failed: {exc}"
                    ) from exc
                sent[name] += 1

        await asyncio.gather(*(send_one(*message) for message in messages))
    return sent


def send_command(
    path: Path,
    *,
    queue: str | None = None,
    encoding: str = "base64",
    concurrency: int = 8,
    app_dir: Path | None = None,
    settings_file: Path | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Send each non-empty line of ``path`` as one message; print how many went where.

    With ``encoding`` base64 (the default) the line's UTF-8 text is base64-encoded, as
    ``TextBase64EncodePolicy`` does; with ``none`` it is sent as it is.

    Returns the exit code: 0 sent, 2 settings or file error, 1 a send failed.
    """
    try:
        settings = load_settings(app_dir, settings_file)
        lines = path.read_text(encoding="utf-8").splitlines()
    except (SettingsError, OSError, UnicodeDecodeError) as exc:
        logger.error("%s", exc)
        return 2
    messages: list[tuple[int, str, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        content = line
        if encoding == "base64":
            content = base64.b64encode(line.encode("utf-8")).decode("ascii")
        messages.append((number, queue_for_line(line, settings, queue), content))
    try:
        sent = asyncio.run(_send(settings, messages, concurrency))
    except ConfigurationError as exc:
        logger.error("%s", exc)
        return 2
    except Exception as exc:
        logger.error("%s", exc)
        return 1
    if not sent:
        print(f"no messages in {path}", file=out)
    for name, count in sorted(sent.items()):
        print(f"sent {count} message(s) to {name!r}", file=out)
    return 0


def decode_alert(content: str) -> Any:
    """An alert body as JSON: base64-decoded when it is base64, parsed when it is JSON;
    anything else is returned as a JSON string of the text."""
    text = content
    with contextlib.suppress(binascii.Error, ValueError):
        text = base64.b64decode(content.strip(), validate=True).decode("utf-8")
    try:
        return json.loads(text)
    except ValueError:
        return text


async def _alerts(
    settings: Mapping[str, str], peek: bool, out: TextIO, as_json: bool = False
) -> int:
    name = _setting(settings, "ALERTS_QUEUE", "alerts")
    call_ratio = present.call_ratio_setting(settings)
    service = async_queue_service(settings, CONNECTION)
    count = 0

    def show(content: str | None) -> None:
        alert = decode_alert(content or "")
        print(json.dumps(alert) if as_json else present.alert_line(alert, call_ratio), file=out)

    async with service:
        queue = service.get_queue_client(name)
        try:
            if peek:
                for message in await queue.peek_messages(max_messages=_PEEK_LIMIT):
                    show(message.content)
                    count += 1
                return count
            while True:
                batch = [
                    message
                    async for message in queue.receive_messages(
                        messages_per_page=32, max_messages=32, visibility_timeout=60
                    )
                ]
                if not batch:
                    return count
                for message in batch:
                    show(message.content)
                    await queue.delete_message(message.id, message.pop_receipt)
                    count += 1
        except ResourceNotFoundError:
            return count


def alerts_command(
    *,
    peek: bool = False,
    as_json: bool = False,
    app_dir: Path | None = None,
    settings_file: Path | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print every message on ALERTS_QUEUE, one readable line per alert (``as_json``: one
    line of JSON per message, as it was sent), deleting it unless ``peek`` (peeking shows
    at most the first 32).

    Returns the exit code: 0 done, 2 settings error, 1 storage error.
    """
    try:
        settings = load_settings(app_dir, settings_file)
        count = asyncio.run(_alerts(settings, peek, out, as_json))
    except (SettingsError, ConfigurationError) as exc:
        logger.error("%s", exc)
        return 2
    except Exception as exc:
        logger.error("reading alerts failed: %s", exc)
        return 1
    logger.info("%d alert(s)%s", count, " (peeked)" if peek else "")
    return 0
