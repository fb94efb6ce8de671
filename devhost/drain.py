"""``run --drain``: wait until every trigger queue (poison queues that a function triggers on
included) holds no message, visible or invisible, and nothing is in flight.

A message stuck on a queue without a poison queue (one whose name ends in ``-poison``:
it failed at ``maxDequeueCount`` or arrived above it) is not counted as remaining; when
only such messages are left, draining ends unsuccessfully with one error line naming each,
ending with what to do about it.

Messages that another consumer holds (invisible, and not because of this host: another
host, or a client that received them with a visibility timeout) keep the queue from being
drained until they are processed or visible again; while that lasts a line says so, at most
every 10 s.
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
from devhost.processor import replay_hint
from devhost.queues import OutageLog

__all__ = ["wait_drained"]

# Log lines keep the logger name they had when all of devhost's host lived in devhost.host.
logger = logging.getLogger("devhost.host")

_DRAIN_CHECK_INTERVAL = 0.1
#: How often the held-by-others check peeks at the queues, and how long others must hold a
#: message before it is reported; the report repeats at most every _HELD_REPORT_INTERVAL.
_HELD_CHECK_INTERVAL = 1.0
_HELD_REPORT_AFTER = 2.0
_HELD_REPORT_INTERVAL = 10.0
#: The outage log's key (and label) of the message counts.
_COUNT_KEY = "(drain check)"
_COUNT_WHAT = "counting the messages on the trigger queues"


async def _approximate_count(queue: QueueClient) -> int:
    try:
        properties = await queue.get_queue_properties(retry_total=0)
    except ResourceNotFoundError:
        return 0
    return int(properties.approximate_message_count or 0)


async def _visible(queue: QueueClient) -> int:
    """How many messages of the queue are visible (at most 32: a peek)."""
    try:
        return len(await queue.peek_messages(max_messages=32, retry_total=0))
    except ResourceNotFoundError:
        return 0


class _HeldByOthers:
    """Finds and reports messages that another consumer holds (see the module doc)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._checked = -1e9
        self._since: float | None = None
        self._reported = -1e9
        self.summary = ""

    async def check(self, queues: dict[str, QueueClient], counts: dict[str, int]) -> None:
        now = time.monotonic()
        if now - self._checked < _HELD_CHECK_INTERVAL:
            return
        self._checked = now
        before = self._ledger.activity
        held: dict[str, tuple[int, int]] = {}
        for name, count in counts.items():
            if count <= 0:
                continue
            try:
                visible = await _visible(queues[name])
            except Exception:  # storage trouble: the count check reports it
                return
            others = count - visible - self._ledger.invisible_ours(name)
            if others > 0:
                held[name] = (others, count)
        if self._ledger.activity != before or not self._ledger.quiet():
            return  # this host received meanwhile: its own messages may be among them
        if not held:
            self._since = None
            self.summary = ""
            return
        self.summary = "; ".join(
            f"{others} invisible message(s) on {name!r} held by another consumer"
            for name, (others, _) in held.items()
        )
        if self._since is None:
            self._since = now
        if now - self._since >= _HELD_REPORT_AFTER and now - self._reported >= (
            _HELD_REPORT_INTERVAL
        ):
            self._reported = now
            for name, (others, count) in held.items():
                logger.warning(
                    "waiting for %d invisible message(s) on %r (of %d there) that another "
                    "consumer holds: another host or client received them, and they come "
                    "back when its lease ends (up to 10 minutes for a Functions host)",
                    others,
                    name,
                    count,
                )


async def wait_drained(
    listeners: Iterable[Listener],
    ledger: Ledger,
    options: QueuesOptions,
    *,
    stop: asyncio.Event,
    outages: OutageLog,
    timeout: float | None,
    reported_timeout: float | None = None,
) -> bool:
    """Return once every trigger queue is empty and nothing is in flight.

    ``reported_timeout`` is the timeout the error line names (default ``timeout``).

    Returns:
        True when drained; False (after logging why) when ``stop`` was set first, after
        ``timeout`` seconds, or when the only messages left are stuck on queues without a
        poison queue.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    queues: dict[str, QueueClient] = {}
    for listener in listeners:
        queues.setdefault(listener.function.queue_name, listener.queue)
    others = _HeldByOthers(ledger)
    while True:
        if stop.is_set():
            logger.error("interrupted before the trigger queues were drained")
            return False
        if deadline is not None and time.monotonic() > deadline:
            shown = reported_timeout if reported_timeout is not None else timeout
            why = f": {others.summary}" if others.summary else ""
            logger.error("not drained after %g s%s", shown, why)
            return False
        await asyncio.sleep(_DRAIN_CHECK_INTERVAL)
        if not ledger.quiet():
            continue
        before = ledger.activity
        try:
            counts = await asyncio.gather(*(_approximate_count(queue) for queue in queues.values()))
        except Exception as exc:  # storage unavailable: keep waiting
            outages.failed(_COUNT_KEY, exc, _COUNT_WHAT)
            continue
        outages.recovered(_COUNT_KEY, _COUNT_WHAT)
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
            await others.check(queues, dict(zip(queues, counts, strict=True)))
            continue
        if not ledger.stuck:
            logger.info("drained: every trigger queue is empty")
            return True
        for stuck in ledger.stuck.values():
            logger.error(
                "not drained: message %s is stuck on queue %r, which has no poison queue "
                "(dequeue count %d, maxDequeueCount %d): %s; %s",
                stuck.message_id,
                stuck.queue,
                stuck.dequeue_count,
                options.max_dequeue_count,
                stuck.reason,
                replay_hint(stuck.queue),
            )
        return False
