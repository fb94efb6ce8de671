"""One listener per queue-triggered function (the Storage Queues extension's QueueListener):

- it receives up to ``batchSize`` messages in one Get Messages call, each with a 10-minute
  lease, and hands each to its :class:`~devhost.processor.Processor` as a task;
- it fetches the next batch once no more than ``newBatchThreshold`` are in flight, so at
  most ``batchSize + newBatchThreshold`` run at once;
- an empty poll backs off from 100 ms, doubling with +/-20 % jitter, up to
  ``maxPollingInterval``; a message found, or one this host writes to the queue (which
  sets ``wake``), resets it; a poll that fails is retried with the same back-off;
- when the host stops, it hands back a batch it has just received, untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueMessage as StorageMessage

from devhost.indexing import QueueFunction
from devhost.processor import Processor, Shared

__all__ = ["DEFAULT_LEASE_SECONDS", "MIN_POLLING_INTERVAL", "Listener"]

# Log lines keep the logger name they had when all of devhost's host lived in devhost.host.
logger = logging.getLogger("devhost.host")

#: The lease a received message gets (the host's 10 minutes); renewed at half-life.
#: ``DEVHOST_MESSAGE_LEASE_SECONDS`` shortens it (tests of the renewal use it).
DEFAULT_LEASE_SECONDS = 600
MIN_POLLING_INTERVAL = 0.1


async def _wait(stop: asyncio.Event, event: asyncio.Event, seconds: float | None) -> None:
    """Wait for ``event`` or ``stop``, at most ``seconds``."""
    stopped = asyncio.ensure_future(stop.wait())
    other = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({stopped, other}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        other.cancel()


class Listener:
    """Polls one function's trigger queue until ``stop`` is set."""

    def __init__(self, function: QueueFunction, shared: Shared) -> None:
        """Take the queue clients of the function's trigger queue and its poison queue.

        Raises:
            HostError: the function's connection setting is not configured.
        """
        self.function = function
        self.queue = shared.queues.queue(function.connection, function.queue_name)
        self.in_flight = 0
        self.slot_freed = asyncio.Event()
        self.wake = asyncio.Event()
        self._processor = Processor(function, self.queue, shared)
        self._shared = shared

    async def poll(self) -> None:
        """Receive and dispatch batches until the host stops."""
        options = self._shared.options
        delay = MIN_POLLING_INTERVAL
        queue_name = self.function.queue_name
        while not self._shared.stop.is_set():
            while self.in_flight > options.new_batch_threshold and not self._shared.stop.is_set():
                self.slot_freed.clear()
                await _wait(self._shared.stop, self.slot_freed, None)
            if self._shared.stop.is_set():
                return
            self.wake.clear()
            messages: list[StorageMessage] = []
            try:
                messages = await self._receive()
                self._shared.outages.recovered(queue_name)
            except ResourceNotFoundError:
                self._shared.outages.recovered(queue_name)
                with contextlib.suppress(Exception):
                    await self._shared.queues.create(self.queue)
            except Exception as exc:  # storage unavailable: back off and retry
                self._shared.outages.failed(queue_name, exc)
            if messages and self._shared.stop.is_set():
                for message in messages:  # stopping: hand them back untouched
                    await self._shared.queues.release(
                        self.queue, message.id, message.pop_receipt or "", 0
                    )
                return
            if messages:
                logger.debug("received %d message(s) from %r", len(messages), queue_name)
                delay = MIN_POLLING_INTERVAL
                for message in messages:
                    self._dispatch(message)
                continue
            jitter = random.uniform(0.8, 1.2)  # noqa: S311 - poll jitter, not cryptography
            jittered = min(delay * jitter, options.max_polling_interval)
            await _wait(self._shared.stop, self.wake, jittered)
            delay = min(delay * 2, options.max_polling_interval)

    async def _receive(self) -> list[StorageMessage]:
        """One Get Messages call for up to batchSize messages (the SDK's item pager would
        ask again for the rest of a short batch)."""
        pages = self.queue.receive_messages(
            messages_per_page=self._shared.options.batch_size,
            visibility_timeout=self._shared.lease_seconds,
            retry_total=0,  # the poll loop is the retry, with its own back-off
        ).by_page()
        async for page in pages:
            return [message async for message in page]
        return []

    def _dispatch(self, message: StorageMessage) -> None:
        ledger = self._shared.ledger
        self.in_flight += 1
        if message.id not in ledger.stuck:
            ledger.activity += 1
        task = asyncio.create_task(self._processor.handle(message))
        ledger.tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            ledger.tasks.discard(finished)
            self.in_flight -= 1
            self.slot_freed.set()
            if not finished.cancelled() and finished.exception() is not None:
                logger.error("internal error handling a message", exc_info=finished.exception())

        task.add_done_callback(done)
