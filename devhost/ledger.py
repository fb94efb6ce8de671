"""The ledger of one host: what its listeners share with the ``--drain`` check and with the
host's exit. It holds the invocations in flight, a counter of everything the listeners did
(so a drain check can tell that nothing happened while it counted the queues), the
messages stuck on queues without a poison queue, and the failed messages released with a
visibility timeout.

While it holds stuck messages, it records them in ``<app dir>/.run/devhost/held/<pid>.json``
(queue, message id, when each is visible again), so that ``replay-poison`` can say who holds
them and until when; the file is removed when the host releases them on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from azure.storage.queue.aio import QueueClient

from devhost.services import process_alive

__all__ = ["HELD_DIR", "Held", "Ledger", "Stuck", "read_held_records"]

logger = logging.getLogger("devhost.host")

#: Where hosts record the messages they hold, under the app directory (one file per pid).
HELD_DIR = Path(".run") / "devhost" / "held"


@dataclass
class Stuck:
    """A message that failed at, or arrived above, maxDequeueCount on a poison-less queue."""

    queue: str
    message_id: str
    dequeue_count: int
    reason: str


@dataclass
class Held:
    """A stuck message left invisible for the rest of its lease, as the real host leaves it."""

    queue_client: QueueClient
    pop_receipt: str
    #: When the message is visible again (the end of the lease it was received with).
    visible_at: datetime | None = None


@dataclass
class Ledger:
    """In-flight invocations, the activity counter, and stuck and held messages by id."""

    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    activity: int = 0
    stuck: dict[str, Stuck] = field(default_factory=dict)
    held: dict[str, Held] = field(default_factory=dict)
    #: Messages this host released with a visibility timeout: id -> (queue, monotonic time
    #: at which they are visible again).
    delayed: dict[str, tuple[str, float]] = field(default_factory=dict)
    #: The file that records the held messages (None: not recorded).
    held_file: Path | None = None

    def quiet(self) -> bool:
        """Nothing in flight."""
        return not self.tasks

    def invisible_ours(self, queue: str) -> int:
        """How many messages of ``queue`` are invisible because of this host: held stuck
        messages, and failed ones released with a visibility timeout that has not passed."""
        now = time.monotonic()
        for message_id, (_, until) in list(self.delayed.items()):
            if until <= now:
                del self.delayed[message_id]
        held = sum(1 for h in self.held.values() if h.queue_client.queue_name == queue)
        delayed = sum(1 for name, _ in self.delayed.values() if name == queue)
        return held + delayed

    def hold(self, message_id: str, held: Held) -> None:
        """Record a message left invisible on a poison-less queue (and in the held file)."""
        self.held[message_id] = held
        self._write_held_file()

    def _write_held_file(self) -> None:
        if self.held_file is None:
            return
        record = {
            "pid": os.getpid(),
            "messages": [
                {
                    "queue": held.queue_client.queue_name,
                    "id": message_id,
                    "visibleAt": held.visible_at.isoformat() if held.visible_at else None,
                }
                for message_id, held in self.held.items()
            ],
        }
        try:
            self.held_file.parent.mkdir(parents=True, exist_ok=True)
            self.held_file.write_text(json.dumps(record) + "\n", encoding="utf-8")
        except OSError as exc:
            logger.debug("could not record the held messages in %s: %s", self.held_file, exc)

    async def release_held(self) -> None:
        """Make the messages left on poison-less queues visible again before exiting, so
        the next run sees them at once instead of after their 10-minute lease, and remove
        the held file. Failures are ignored."""
        for message_id, held in self.held.items():
            with contextlib.suppress(Exception):
                await held.queue_client.update_message(
                    message_id, held.pop_receipt, visibility_timeout=0
                )
        if self.held_file is not None:
            with contextlib.suppress(OSError):
                self.held_file.unlink(missing_ok=True)


def read_held_records(app_dir: Path) -> dict[str, list[tuple[int, datetime | None]]]:
    """What running hosts of ``app_dir`` hold: queue -> [(pid, visible again at)]. Files
    of hosts that are gone are skipped."""
    found: dict[str, list[tuple[int, datetime | None]]] = {}
    for path in sorted((app_dir / HELD_DIR).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            pid = int(record["pid"])
            messages = list(record["messages"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not process_alive(pid):
            continue
        for message in messages:
            if not isinstance(message, dict):
                continue
            when: datetime | None = None
            text = message.get("visibleAt")
            if isinstance(text, str):
                with contextlib.suppress(ValueError):
                    when = datetime.fromisoformat(text)
            found.setdefault(str(message.get("queue")), []).append((pid, when))
    return found
