"""What happens to one received message of a queue-triggered function (the Storage Queues
extension's QueueProcessor):

- a message that arrives above ``maxDequeueCount``, or (with base64 encoding) whose body is
  not base64, is not invoked: it goes to the poison queue;
- otherwise its lease is renewed at half-life while the function runs;
- success writes the output bindings, then deletes the message;
- a failure releases it after ``visibilityTimeout``, or, at ``maxDequeueCount``, copies the
  body (as it sits on the queue) to ``<queue>-poison`` and deletes the original.

A queue whose name ends in ``-poison`` has no poison queue: its messages that would go
there are recorded as stuck in the :class:`~devhost.ledger.Ledger` instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from azure.storage.queue import QueueMessage as StorageMessage
from azure.storage.queue.aio import QueueClient

from devhost.bindings import UndecodableBody, decode_body, invoke, write_outputs
from devhost.hostjson import QueuesOptions
from devhost.indexing import QueueFunction
from devhost.ledger import Held, Ledger, Stuck
from devhost.queues import OutageLog, QueueClients, is_pop_receipt_or_gone

__all__ = ["POISON_SUFFIX", "Processor", "replay_hint"]

# Log lines keep the logger name they had when all of devhost's host lived in devhost.host.
logger = logging.getLogger("devhost.host")

POISON_SUFFIX = "-poison"


def replay_hint(queue: str) -> str:
    """What to do about a message given up on ``queue`` or its poison queue: fix the cause,
    then send the bodies back to the source queue with ``replay-poison``."""
    source = queue.removesuffix(POISON_SUFFIX)
    return f"fix the cause, then run `python -m devhost replay-poison --queue {source}`"


class _Lease:
    """Keeps a received message invisible while its function runs (renewal at half-life)."""

    def __init__(self, queue: QueueClient, message: StorageMessage, seconds: int) -> None:
        self.queue = queue
        self.message_id = message.id
        self.pop_receipt: str = message.pop_receipt or ""
        self._seconds = seconds
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._renew())

    async def _renew(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._stopped.wait(), self._seconds / 2)
                return
            except TimeoutError:
                pass
            try:
                receipt = await self.queue.update_message(
                    self.message_id, self.pop_receipt, visibility_timeout=self._seconds
                )
            except Exception as exc:  # the message is gone or storage is down
                logger.warning("could not renew the lease of message %s: %s", self.message_id, exc)
                if is_pop_receipt_or_gone(exc):
                    return
                continue
            self.pop_receipt = receipt.pop_receipt or self.pop_receipt
            logger.debug("renewed the lease of message %s", self.message_id)

    async def stop(self) -> None:
        self._stopped.set()
        if self._task is not None:
            await self._task


@dataclass(frozen=True)
class Shared:
    """What the host hands every listener and processor: its queue clients and options,
    the ledger, the outage log, the stop event, the thread pool for sync functions, the
    app directory and the message lease."""

    queues: QueueClients
    options: QueuesOptions
    ledger: Ledger
    outages: OutageLog
    stop: asyncio.Event
    executor: Executor
    app_dir: Path
    lease_seconds: int


class Processor:
    """Invokes one function for each message it is handed and settles the message."""

    def __init__(self, function: QueueFunction, queue: QueueClient, shared: Shared) -> None:
        """Take the queue client of the function's poison queue (``queue`` is its trigger
        queue's).

        Raises:
            HostError: the function's connection setting is not configured.
        """
        self.function = function
        self.queue = queue
        self.poison: QueueClient | None = None
        if not function.queue_name.endswith(POISON_SUFFIX):
            poison = function.queue_name + POISON_SUFFIX
            self.poison = shared.queues.queue(function.connection, poison)
        self._shared = shared

    def _log(
        self,
        message: StorageMessage,
        outcome: str,
        started: float,
        level: int = logging.INFO,
        gave_up: bool = False,
    ) -> None:
        """One line per message; one that was given up on (poisoned, or left on a queue
        without a poison queue) ends with what to do about it."""
        logger.log(
            level,
            "%s message=%s dequeueCount=%s %s (%.0f ms)%s",
            self.function.name,
            message.id,
            message.dequeue_count,
            outcome,
            (time.monotonic() - started) * 1000,
            f"; {replay_hint(self.function.queue_name)}" if gave_up else "",
        )

    async def handle(self, message: StorageMessage) -> None:
        """Invoke the function for ``message`` (unless it goes straight to poison), write
        its outputs and settle the message; every outcome is logged, in one line."""
        function = self.function
        options = self._shared.options
        started = time.monotonic()
        self._shared.ledger.delayed.pop(message.id, None)
        dequeue_count = int(message.dequeue_count or 0)
        raw = message.content if isinstance(message.content, str) else ""
        if dequeue_count > options.max_dequeue_count:
            reason = f"dequeue count above maxDequeueCount {options.max_dequeue_count}, not invoked"
            await self._give_up(message, reason, started)
            return
        try:
            body = decode_body(raw, options.message_encoding)
        except UndecodableBody as exc:
            await self._give_up(message, f"{exc}, not invoked", started)
            return

        lease = _Lease(self.queue, message, self._shared.lease_seconds)
        lease.start()
        invocation_id = str(uuid.uuid4())
        error: BaseException | None = None
        try:
            outputs = await invoke(
                function,
                message,
                body,
                invocation_id,
                function_directory=str(self._shared.app_dir),
                executor=self._shared.executor,
            )
            await write_outputs(
                outputs, invocation_id, options.message_encoding, self._shared.queues.send
            )
        except Exception as exc:
            error = exc
        finally:
            await lease.stop()

        if error is None:
            await self._shared.queues.delete(self.queue, message.id, lease.pop_receipt)
            self._log(message, "Succeeded", started)
            self._shared.ledger.activity += 1
            return

        summary = f"{type(error).__name__}: {error}"
        if logger.isEnabledFor(logging.DEBUG):
            trace = "".join(traceback.format_exception(error))
            logger.debug("%s failed:\n%s", function.name, trace)
        if self.poison is not None and dequeue_count >= options.max_dequeue_count:
            where = await self._to_poison(message, raw, lease.pop_receipt)
            self._log(
                message,
                f"Poisoned (Failed: {summary}) {where}",
                started,
                logging.WARNING,
                gave_up=True,
            )
        else:
            await self._shared.queues.release(
                self.queue, message.id, lease.pop_receipt, options.visibility_timeout
            )
            if options.visibility_timeout > 0:
                self._shared.ledger.delayed[message.id] = (
                    function.queue_name,
                    time.monotonic() + options.visibility_timeout,
                )
            if self.poison is None and dequeue_count >= options.max_dequeue_count:
                self._log(
                    message,
                    f"Failed: {summary}; stuck (maxDequeueCount {options.max_dequeue_count} "
                    f"reached and {function.queue_name!r} has no poison queue: left there, "
                    "not invoked again)",
                    started,
                    logging.WARNING,
                    gave_up=True,
                )
                self._shared.ledger.stuck[message.id] = Stuck(
                    function.queue_name, message.id, dequeue_count, f"Failed: {summary}"
                )
            else:
                self._log(message, f"Failed: {summary}", started, logging.WARNING)
        self._shared.ledger.activity += 1

    async def _give_up(self, message: StorageMessage, reason: str, started: float) -> None:
        """A message that is not invoked: to poison, or, without a poison queue, left
        invisible for the rest of its lease as the real host leaves it."""
        function = self.function
        ledger = self._shared.ledger
        if self.poison is not None:
            raw = message.content if isinstance(message.content, str) else ""
            where = await self._to_poison(message, raw, message.pop_receipt or "")
            self._log(
                message,
                f"Poisoned ({reason}) {where}",
                started,
                logging.WARNING,
                gave_up=True,
            )
            ledger.activity += 1
            return
        known = message.id in ledger.stuck
        previous = ledger.stuck.get(message.id)
        ledger.stuck[message.id] = Stuck(
            function.queue_name,
            message.id,
            int(message.dequeue_count or 0),
            previous.reason if previous else reason,
        )
        ledger.hold(
            message.id, Held(self.queue, message.pop_receipt or "", message.next_visible_on)
        )
        if not known:
            self._log(
                message,
                f"Left on the queue ({reason}; {function.queue_name!r} has no poison queue)",
                started,
                logging.WARNING,
                gave_up=True,
            )

    async def _to_poison(self, message: StorageMessage, raw: str, pop_receipt: str) -> str:
        """Copy the body as it sits on the queue to the poison queue; delete the original.

        Returns the outcome for the log line. A failed copy leaves the original in place,
        invisible for the rest of its lease, after which it is received again."""
        assert self.poison is not None
        poison_name = self.poison.queue_name
        try:
            await self._shared.queues.send(self.function.connection, poison_name, raw)
        except Exception as exc:
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
            return f"could not be moved to {poison_name!r} ({first_line}); left on the queue"
        await self._shared.queues.delete(self.queue, message.id, pop_receipt)
        return f"-> {poison_name!r}"
