"""``python -m devhost replay-poison``: send dead-lettered and poisoned bodies back.

Two sources, both replayed to the queue they came from:

1. messages still sitting on ``<queue>-poison`` (the host leaves a body there when the
   poison function itself kept failing, e.g. during a Cosmos outage) are moved back to
   ``<queue>`` — body only, exactly as they sat;
2. ``deadletter`` documents in Cosmos (partition = the source queue) whose ``rawBody`` is
   the whole body (its SHA-256 equals ``bodyDigest``) are sent again and stamped with
   ``replayCount`` / ``lastReplayedAt``. A deadletter of an account a mark skipped
   (``<digest>:<accountId>``) is reported, not replayed: the mark is older by now.

Processing is idempotent (event ids, record ids, alert ids), so a replayed body applies
exactly once: it is applied if it never was, and a duplicate if it was.

A message that a running host holds on ``<queue>-poison`` (its poison function kept failing,
so the host leaves it invisible for its 10-minute lease, again and again while it runs) cannot
be received: the queue's approximate count includes it, a peek does not. Such messages are
reported — "N message(s) on X are held by a running host until about HH:MM:SS; stop it or
wait" — with the time and pid devhost records for them (``<app dir>/.run/devhost/held/``),
or at the latest 10 minutes from now for another host; the command then exits 1.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from devhost.ledger import read_held_records
from devhost.settings_file import SettingsError, load_settings
from handlers.adapters.storage import queue_service

__all__ = ["held_report", "replay_command", "replay_deadletters", "replay_poison_queue"]

#: How long a Functions host (and devhost) holds a received message at most.
HOST_LEASE = timedelta(minutes=10)

logger = logging.getLogger(__name__)


def replay_poison_queue(service: Any, queue: str) -> int:
    """Move every message of ``<queue>-poison`` back to ``queue``; the number moved."""
    source: QueueClient = service.get_queue_client(f"{queue}-poison")
    target: QueueClient = service.get_queue_client(queue)
    with contextlib.suppress(ResourceExistsError):
        target.create_queue()
    moved = 0
    try:
        while True:
            batch = list(source.receive_messages(max_messages=32, visibility_timeout=60))
            if not batch:
                return moved
            for message in batch:
                target.send_message(message.content)
                source.delete_message(message)
                moved += 1
    except ResourceNotFoundError:
        return moved


def held_report(service: Any, queue: str, app_dir: Path, now: datetime) -> str | None:
    """The line that says who holds the invisible messages left on ``<queue>-poison``, or
    None when none is left there."""
    poison = f"{queue}-poison"
    client: QueueClient = service.get_queue_client(poison)
    try:
        count = int(client.get_queue_properties().approximate_message_count or 0)
        visible = len(client.peek_messages(max_messages=32))
    except ResourceNotFoundError:
        return None
    invisible = count - visible
    if invisible <= 0:
        return None
    held = read_held_records(app_dir).get(poison, [])
    times = [when for _, when in held if when is not None]
    if held and times:
        pids = ", ".join(str(pid) for pid in sorted({pid for pid, _ in held}))
        until = max(times).astimezone().strftime("%H:%M:%S")
        return (
            f"{invisible} message(s) on {poison!r} are held by a running host (devhost, pid "
            f"{pids}) until about {until}; stop it or wait"
        )
    latest = (now + HOST_LEASE).astimezone().strftime("%H:%M:%S")
    return (
        f"{invisible} message(s) on {poison!r} are held by a running host until about "
        f"{latest} at the latest (a host holds a message for up to 10 minutes); stop it or "
        "wait"
    )


def replay_deadletters(container: Any, service: Any, queue: str, now: datetime) -> tuple[int, int]:
    """Send back every replayable deadletter of ``queue``; (replayed, not replayable)."""
    target: QueueClient = service.get_queue_client(queue)
    with contextlib.suppress(ResourceExistsError):
        target.create_queue()
    rows = list(
        container.query_items(
            "SELECT * FROM c WHERE c.queue = @queue AND c.type = 'deadletter'",
            parameters=[{"name": "@queue", "value": queue}],
            partition_key=queue,
        )
    )
    replayed = skipped = 0
    for row in rows:
        raw = str(row.get("rawBody", ""))
        whole = "sha256:" + hashlib.sha256(raw.encode("utf-8")).hexdigest() == row.get("bodyDigest")
        if not whole or row["id"] != row.get("bodyDigest"):
            logger.warning(
                "deadletter %s of %s is not replayable (%s)",
                row["id"],
                queue,
                "an account a mark skipped" if whole else "rawBody is an excerpt",
            )
            skipped += 1
            continue
        target.send_message(raw)
        updated = {k: v for k, v in row.items() if not k.startswith("_")}
        updated["replayCount"] = int(row.get("replayCount", 0)) + 1
        updated["lastReplayedAt"] = (
            now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        )
        container.upsert_item(updated)
        replayed += 1
    return replayed, skipped


def replay_command(
    *,
    queues: list[str] | None = None,
    app_dir: Path | None = None,
    settings_file: Path | None = None,
) -> int:
    """Replay poisoned and dead-lettered bodies of the trades, marks, marks fan-out and
    orders queues (or the named ones: ``trades``, ``marks``, ``marks-fanout``, ``orders``
    or a queue name).
    Returns the exit code (0 done, 1 failure or messages held by a running host, 2
    settings)."""
    from devhost.cosmos import container
    from handlers.settings import load_settings as app_settings

    try:
        values: Mapping[str, str] = load_settings(app_dir, settings_file)
        settings = app_settings(values)
    except (SettingsError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    names = {
        "trades": settings.trades_queue,
        "marks": settings.marks_queue,
        "marks-fanout": settings.marks_fanout_queue,
        "orders": settings.orders_queue,
    }
    chosen = [names.get(q, q) for q in (queues or list(names))]
    warnings.filterwarnings("ignore", message="Unverified HTTPS request")
    directory = (app_dir or Path.cwd()).resolve()
    held_somewhere = False
    try:
        service = queue_service(settings.environ, settings.storage_connection)
        deadletters = container(settings, "deadletters") if settings.cosmos_endpoint else None
        now = datetime.now(UTC)
        for queue in chosen:
            moved = replay_poison_queue(service, queue)
            replayed = skipped = 0
            if deadletters is not None:
                replayed, skipped = replay_deadletters(deadletters, service, queue, now)
            print(
                f"{queue}: {moved} message(s) moved back from {queue}-poison, "
                f"{replayed} deadletter(s) replayed, {skipped} not replayable"
            )
            held = held_report(service, queue, directory, datetime.now(UTC))
            if held is not None:
                print(f"{queue}: {held}")
                held_somewhere = True
    except Exception as exc:
        logger.error("replay failed: %s", exc)
        return 1
    return 1 if held_somewhere else 0
