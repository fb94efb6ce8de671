"""Demo helpers: ``python -m devhost send FILE.jsonl``, ``python -m devhost alerts`` and
``python -m devhost decisions``.

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
import re
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue.aio import QueueClient

from devhost import present
from devhost.preflight import PreflightError, check_storage
from devhost.settings_file import SettingsError, load_settings, load_sourced_settings
from handlers.adapters.storage import async_queue_service
from handlers.errors import ConfigurationError

__all__ = [
    "alerts_command",
    "decisions_command",
    "decode_alert",
    "queue_for_line",
    "send_command",
]

logger = logging.getLogger(__name__)

CONNECTION = "AzureWebJobsStorage"
_MARK_TYPES = {"MARK", "MARKS"}
_ORDER_TYPES = {"ORDER", "ORDER_DONE", "ACCOUNT_CONTROL"}
_PEEK_LIMIT = 32


def _setting(settings: Mapping[str, str], name: str, default: str) -> str:
    return (settings.get(name) or "").strip() or default


def queue_for_line(line: str, settings: Mapping[str, str], queue: str | None = None) -> str:
    """The queue a JSONL line goes to.

    ``queue`` "trades", "marks" or "orders" means the TRADES_QUEUE / MARKS_QUEUE /
    ORDERS_QUEUE setting, any other name is taken as is; without it a line whose ``type``
    is MARK or MARKS goes to MARKS_QUEUE (default ``marks``), one whose ``type`` is ORDER,
    ORDER_DONE or ACCOUNT_CONTROL to ORDERS_QUEUE (default ``orders``), and every other line
    to TRADES_QUEUE (default ``trades``).
    """
    trades = _setting(settings, "TRADES_QUEUE", "trades")
    marks = _setting(settings, "MARKS_QUEUE", "marks")
    orders = _setting(settings, "ORDERS_QUEUE", "orders")
    if queue is not None:
        return {"trades": trades, "marks": marks, "orders": orders}.get(queue, queue)
    try:
        document = json.loads(line)
    except ValueError:
        return trades
    kind = document.get("type") if isinstance(document, dict) else None
    if kind in _MARK_TYPES:
        return marks
    if kind in _ORDER_TYPES:
        return orders
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


_BOM = b"\xef\xbb\xbf"
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: At most this many refused lines are named, then how many more there are.
_SHOWN_REFUSALS = 10


def _file_lines(data: bytes) -> list[tuple[int, bytes]]:
    """The file's lines by number: split at LF only (a CR before it stays with the line; no
    other character ends one), the LF that ends the last line dropped."""
    parts = data.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    return list(enumerate(parts, start=1))


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "a number"


def _checked_line(number: int, raw: bytes) -> tuple[str | None, str | None]:
    """``(text, None)`` for a line that is a JSON object (``(None, None)`` for a blank
    one), ``(None, why)`` for one that is not."""
    data = raw[len(_BOM) :] if number == 1 and raw.startswith(_BOM) else raw
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at column {exc.start + 1})"
    text = text.removesuffix("\r")
    if not text.strip():
        return None, None
    try:
        document = json.loads(text)
    except ValueError as exc:
        return None, f"not JSON ({exc})"
    if not isinstance(document, dict):
        return None, f"{_kind(document)}, not a JSON object"
    return text, None


def _encoded(text: str | None, raw: bytes, encoding: str) -> tuple[str | None, str | None]:
    """``(content, None)`` as the message is sent, or ``(None, why)`` when ``none`` cannot
    carry it (the queue's XML takes text without control characters)."""
    if encoding == "base64":
        data = raw if text is None else text.encode("utf-8")
        return base64.b64encode(data).decode("ascii"), None
    if text is None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, (
                f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                "--encoding none sends text, base64 sends any bytes"
            )
    bad = _XML_INVALID.search(text)
    if bad is not None:
        return None, (
            f"holds U+{ord(bad.group()):04X} at column {bad.start() + 1}, which a queue "
            "message cannot carry as text; --encoding base64 sends any bytes"
        )
    return text, None


def send_command(
    path: Path,
    *,
    queue: str | None = None,
    encoding: str = "base64",
    concurrency: int = 8,
    raw: bool = False,
    app_dir: Path | None = None,
    settings_file: Path | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Send each line of ``path`` as one message; print how many went where.

    Each non-blank line must be a JSON object; a file with any line that is not is refused
    whole (exit 2, nothing sent), naming the lines. With ``raw`` every line is sent as it is
    (its bytes, a CR before the LF included, blank lines as empty messages): for
    hostile input. With ``encoding`` base64 (the default) the line's bytes are
    base64-encoded, as ``TextBase64EncodePolicy`` does; with ``none`` its text is sent as it
    is (a line that is not UTF-8 text, or holds a control character, is refused then).

    Returns the exit code: 0 sent, 2 settings, file or line refused, 1 a send failed.
    """
    try:
        sourced = load_sourced_settings(app_dir, settings_file)
        data = path.read_bytes()
    except (SettingsError, OSError) as exc:
        logger.error("%s", exc)
        return 2
    settings = sourced.values
    messages: list[tuple[int, str, str]] = []
    refused: list[str] = []
    for number, line in _file_lines(data):
        text: str | None = None
        if not raw:
            text, why = _checked_line(number, line)
            if why is not None:
                refused.append(f"{path} line {number}: {why}")
                continue
            if text is None:  # blank
                continue
        content, why = _encoded(text, line, encoding)
        if why is not None or content is None:
            refused.append(f"{path} line {number}: {why}")
            continue
        routing = text if text is not None else line.decode("utf-8", errors="replace")
        messages.append((number, queue_for_line(routing, settings, queue), content))
    if refused:
        for reason in refused[:_SHOWN_REFUSALS]:
            logger.error("%s", reason)
        more = len(refused) - _SHOWN_REFUSALS
        logger.error(
            "%snothing was sent from %s%s",
            f"... and {more} more line(s); " if more > 0 else "",
            path,
            "" if raw else " (every line must be a JSON object; --raw sends lines as they are)",
        )
        return 2
    if messages:
        try:
            check_storage(sourced, CONNECTION)
        except PreflightError as exc:
            logger.error("%s", exc)
            return 2
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
    """An alert (or order decision) body as JSON: base64-decoded when it is base64, parsed
    when it is JSON; anything else is returned as a JSON string of the text."""
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
    call_ratio = present.call_ratio_setting(settings)

    def line(alert: Any) -> str:
        return json.dumps(alert) if as_json else present.alert_line(alert, call_ratio)

    name = _setting(settings, "ALERTS_QUEUE", "alerts")
    return await _print_queue(settings, name, peek, out, line)


async def _decisions(
    settings: Mapping[str, str], peek: bool, out: TextIO, as_json: bool = False
) -> int:
    def line(decision: Any) -> str:
        return json.dumps(decision) if as_json else present.decision_line(decision)

    name = _setting(settings, "ORDER_DECISIONS_QUEUE", "order-decisions")
    return await _print_queue(settings, name, peek, out, line)


async def _print_queue(
    settings: Mapping[str, str],
    name: str,
    peek: bool,
    out: TextIO,
    line: Callable[[Any], str],
) -> int:
    """Print every message of queue ``name`` (decoded, then rendered by ``line``), deleting
    each once printed unless ``peek`` (then at most the first 32); how many it printed. A
    queue that does not exist holds none."""
    service = async_queue_service(settings, CONNECTION)
    count = 0

    def show(content: str | None) -> None:
        print(line(decode_alert(content or "")), file=out)

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


def decisions_command(
    *,
    peek: bool = False,
    as_json: bool = False,
    app_dir: Path | None = None,
    settings_file: Path | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print every message on ORDER_DECISIONS_QUEUE, one readable line per decision
    (``as_json``: one line of JSON per message, as it was sent), deleting it unless
    ``peek`` (peeking shows at most the first 32).

    Returns the exit code: 0 done, 2 settings error, 1 storage error.
    """
    try:
        settings = load_settings(app_dir, settings_file)
        count = asyncio.run(_decisions(settings, peek, out, as_json))
    except (SettingsError, ConfigurationError) as exc:
        logger.error("%s", exc)
        return 2
    except Exception as exc:
        logger.error("reading decisions failed: %s", exc)
        return 1
    logger.info("%d decision(s)%s", count, " (peeked)" if peek else "")
    return 0
