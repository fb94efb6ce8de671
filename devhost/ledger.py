"""The ledger of one host: what its listeners share with the ``--drain`` check and with the
host's exit. It holds the invocations in flight, a counter of everything the listeners did
(so a drain check can tell that nothing happened while it counted the queues), and the
messages stuck on queues without a poison queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from azure.storage.queue.aio import QueueClient

__all__ = ["Held", "Ledger", "Stuck"]


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


@dataclass
class Ledger:
    """In-flight invocations, the activity counter, and stuck and held messages by id."""

    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    activity: int = 0
    stuck: dict[str, Stuck] = field(default_factory=dict)
    held: dict[str, Held] = field(default_factory=dict)

    def quiet(self) -> bool:
        """Nothing in flight."""
        return not self.tasks

    async def release_held(self) -> None:
        """Make the messages left on poison-less queues visible again before exiting, so
        the next run sees them at once instead of after their 10-minute lease. Failures
        are ignored."""
        for message_id, held in self.held.items():
            with contextlib.suppress(Exception):
                await held.queue_client.update_message(
                    message_id, held.pop_receipt, visibility_timeout=0
                )
