"""``run --drain``: wait until every trigger queue (poison queues that a function triggers on
included) holds no message, visible or invisible, and nothing is in flight.

A message stuck on a queue without a poison queue (one whose name ends in ``-poison``:
it failed at ``maxDequeueCount`` or arrived above it) is not counted as remaining; when
only such messages are left, draining ends unsuccessfully with one error line naming each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue.aio import QueueClient

from devhost.hostjson import QueuesOptions
from devhost.ledger import Ledger
from devhost.listener import Listener
from devhost.queues import OutageLog

__all__ = ["wait_drained"]

# Log lines keep the logger name they had when all of devhost's host lived in devhost.host.
logger = logging.getLogger("devhost.host")

_DRAIN_CHECK_INTERVAL = 0.1


async def _approximate_count(queue: QueueClient) -> int:
    try:
        properties = await queue.get_queue_properties(retry_total=0)
    except ResourceNotFoundError:
        return 0
    return int(properties.approximate_message_count or 0)


async def wait_drained(
    listeners: Iterable[Listener],
    ledger: Ledger,
    options: QueuesOptions,
    *,
    stop: asyncio.Event,
    outages: OutageLog,
    timeout: float | None,
) -> bool:
    """Return once every trigger queue is empty and nothing is in flight.

    Returns:
        True when drained; False (after logging why) when ``stop`` was set first, after
        ``timeout`` seconds, or when the only messages left are stuck on queues without a
        poison queue.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    queues: dict[str, QueueClient] = {}
    for listener in listeners:
        queues.setdefault(listener.function.queue_name, listener.queue)
    while True:
        if stop.is_set():
            logger.error("interrupted before the trigger queues were drained")
            return False
        if deadline is not None and time.monotonic() > deadline:
            logger.error("not drained after %g s", timeout)
            return False
        await asyncio.sleep(_DRAIN_CHECK_INTERVAL)
        if not ledger.quiet():
            continue
        before = ledger.activity
        try:
            counts = await asyncio.gather(*(_approximate_count(queue) for queue in queues.values()))
        except Exception as exc:  # storage unavailable: keep waiting
            outages.failed("drain", exc)
            continue
        if ledger.activity != before or not ledger.quiet():
            continue
        stuck_per_queue: dict[str, int] = {}
        for stuck in ledger.stuck.values():
            stuck_per_queue[stuck.queue] = stuck_per_queue.get(stuck.queue, 0) + 1
        remaining = {
            name: count - stuck_per_queue.get(name, 0)
            for name, count in zip(queues, counts, strict=True)
        }
        if any(count > 0 for count in remaining.values()):
            continue
        if not ledger.stuck:
            logger.info("drained: every trigger queue is empty")
            return True
        for stuck in ledger.stuck.values():
            logger.error(
                "not drained: message %s is stuck on queue %r, which has no poison queue "
                "(dequeue count %d, maxDequeueCount %d): %s",
                stuck.message_id,
                stuck.queue,
                stuck.dequeue_count,
                options.max_dequeue_count,
                stuck.reason,
            )
        return False
