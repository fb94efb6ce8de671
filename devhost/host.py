"""The local queue-trigger host: ``python -m devhost run``.

It serves every queue-triggered function of a v2 Python app (``function_app.py``) with the
Storage Queues extension's semantics (QueueListener / QueueProcessor / QueuesOptions):

- one listener per function receives up to ``batchSize`` messages with a 10-minute lease
  (renewed at half-life while the function runs) and fetches the next batch once no more
  than ``newBatchThreshold`` are in flight, so at most ``batchSize + newBatchThreshold`` run
  at once per function;
- an empty poll backs off from 100 ms, doubling with +/-20 % jitter, up to
  ``maxPollingInterval``; a message found (or written by this host to that queue) resets it;
- success deletes the message; a failure releases it after ``visibilityTimeout``, or, at
  ``maxDequeueCount``, copies the body (as it sits on the queue) to ``<queue>-poison`` and
  deletes the original; a message that arrives above ``maxDequeueCount``, or (with base64
  encoding) whose body is not base64, goes to poison without an invocation;
- queue output bindings are written after a successful invocation and before the trigger
  message is deleted, one message per string of a list, with ``$AzureWebJobsParentId``
  stamped into JSON-object bodies.

Sync functions run in a thread pool, ``async def`` functions on the event loop; queue I/O uses
``azure.storage.queue.aio`` with one service client per connection setting.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import contextvars
import functools
import importlib
import json
import logging
import os
import random
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.functions import _abc as azf_abc
from azure.functions.queue import QueueMessage as FunctionQueueMessage
from azure.storage.queue import QueueMessage as StorageMessage
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from devhost.hostjson import HostJsonError, QueuesOptions, load_queues_options
from devhost.indexing import (
    FunctionLoadError,
    IndexedApp,
    QueueFunction,
    QueueOutput,
    index_app,
)
from devhost.settings_file import SettingsError, apply_to_environ, load_settings
from handlers.adapters.storage import async_queue_service
from handlers.errors import ConfigurationError

__all__ = [
    "EXIT_NOT_DRAINED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "Host",
    "HostError",
    "load_app",
    "run",
]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_NOT_DRAINED = 1
EXIT_REFUSED = 2

#: The lease a received message gets (the host's 10 minutes); renewed at half-life.
#: ``DEVHOST_MESSAGE_LEASE_SECONDS`` shortens it (tests of the renewal use it).
DEFAULT_LEASE_SECONDS = 600
MIN_POLLING_INTERVAL = 0.1
PARENT_ID_FIELD = "$AzureWebJobsParentId"
_POISON_SUFFIX = "-poison"
_DRAIN_CHECK_INTERVAL = 0.1
_OUTAGE_LOG_INTERVAL = 10.0
_WHITESPACE = b" \t\r\n"
#: azure.functions.queue.QueueMessage (untyped in azure-functions) with all trigger metadata.
_QUEUE_MESSAGE: Any = FunctionQueueMessage


class HostError(Exception):
    """devhost cannot start: bad settings, host.json, app or storage connection."""


# --------------------------------------------------------------------------- bindings


class _Out(func.Out[Any]):
    """The value of an output binding parameter, as the worker's ``Out`` holds it."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


class _TraceContext(azf_abc.TraceContext):
    def __init__(self, invocation_id: str) -> None:
        self._parent = f"00-{uuid.uuid4().hex}-{invocation_id.replace('-', '')[:16]}-01"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(azf_abc.RetryContext):
    def __init__(self, retry_count: int, max_retry_count: int) -> None:
        self._retry_count = retry_count
        self._max_retry_count = max_retry_count

    @property
    def retry_count(self) -> int:
        return self._retry_count

    @property
    def max_retry_count(self) -> int:
        return self._max_retry_count

    @property
    def exception(self) -> Any:
        return None


class _Context(func.Context):
    """The ``context`` argument: invocation id, function name and directory."""

    _thread_local = threading.local

    def __init__(self, invocation_id: str, function_name: str, function_directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._trace_context = _TraceContext(invocation_id)
        self._retry_context = _RetryContext(0, 0)

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return self._thread_local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> azf_abc.TraceContext:
        return self._trace_context

    @property
    def retry_context(self) -> azf_abc.RetryContext:
        return self._retry_context


def decode_base64_body(text: str) -> bytes:
    """Decode a queue body the way the host's base64 decoding does (.NET ``FromBase64String``:
    ASCII whitespace is ignored, the rest must be padded standard base64).

    Raises:
        ValueError: the text is not valid base64.
    """
    data = text.encode("ascii", errors="strict") if text.isascii() else None
    if data is None:
        raise ValueError("body is not ASCII, so not base64")
    compact = data.translate(None, _WHITESPACE)
    try:
        return base64.b64decode(compact, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"body is not valid base64: {exc}") from exc


def stamp_parent_id(text: str, invocation_id: str) -> str:
    """Add ``"$AzureWebJobsParentId": invocation_id`` to a body that is a JSON object.

    Any other body is returned unchanged. The rest of the body's text is kept as written
    (the property is inserted before the closing brace); a body that already has the
    property at the top level is re-serialised with the new value.
    """
    stripped = text.strip()
    if not stripped.startswith("{"):
        return text
    try:
        document = json.loads(stripped)
    except ValueError:
        return text
    if not isinstance(document, dict):
        return text
    if PARENT_ID_FIELD in document:
        document[PARENT_ID_FIELD] = invocation_id
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    end = text.rindex("}")
    member = json.dumps(PARENT_ID_FIELD) + ":" + json.dumps(invocation_id)
    separator = "," if document else ""
    return text[:end] + separator + member + text[end:]


def _output_bodies(param: str, value: Any) -> list[bytes | str]:
    """Turn an output binding's value into message bodies (one per list element).

    Raises:
        TypeError: the value is not str, bytes, a QueueMessage or an iterable of those.
    """
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return [value]
    if isinstance(value, azf_abc.QueueMessage):
        return [value.get_body()]
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        bodies: list[bytes | str] = []
        for item in value:
            if isinstance(item, str | bytes):
                bodies.append(item)
            elif isinstance(item, azf_abc.QueueMessage):
                bodies.append(item.get_body())
            else:
                raise TypeError(
                    f"invalid data type in output queue message list {param!r}: "
                    f"{type(item).__name__}"
                )
        return bodies
    raise TypeError(f"invalid value for queue output {param!r}: {type(value).__name__}")


# --------------------------------------------------------------------------- the host


def _is_pop_receipt_or_gone(exc: Exception) -> bool:
    if isinstance(exc, ResourceNotFoundError):
        return True
    return isinstance(exc, HttpResponseError) and exc.status_code in (400, 404)


@dataclass
class _Stuck:
    queue: str
    message_id: str
    dequeue_count: int
    reason: str


@dataclass
class _Held:
    queue_client: QueueClient
    pop_receipt: str


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
                if _is_pop_receipt_or_gone(exc):
                    return
                continue
            self.pop_receipt = receipt.pop_receipt or self.pop_receipt
            logger.debug("renewed the lease of message %s", self.message_id)

    async def stop(self) -> None:
        self._stopped.set()
        if self._task is not None:
            await self._task


@dataclass
class _Listener:
    """Polls one function's trigger queue."""

    function: QueueFunction
    queue: QueueClient
    poison: QueueClient | None
    in_flight: int = 0
    slot_freed: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Host:
    """Serves the queue-triggered functions of one indexed app until stopped or drained."""

    def __init__(
        self,
        app: IndexedApp,
        options: QueuesOptions,
        settings: Mapping[str, str],
        app_dir: Path,
        *,
        drain: bool = False,
        timeout: float | None = None,
        lease_seconds: int = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.app = app
        self.options = options
        self.settings = dict(settings)
        self.app_dir = app_dir
        self.drain = drain
        self.timeout = timeout
        self.lease_seconds = max(2, int(lease_seconds))
        self._services: dict[str, QueueServiceClient] = {}
        self._queues: dict[tuple[str, str], QueueClient] = {}
        self._listeners: list[_Listener] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._activity = 0
        self._stuck: dict[str, _Stuck] = {}
        self._held: dict[str, _Held] = {}
        self._created: set[tuple[str, str]] = set()
        self._last_outage_log: dict[str, float] = {}
        self._outage_since: dict[str, float] = {}
        self._signals = 0
        sync_parallelism = sum(options.parallelism for f in app.queue_functions if not f.is_async)
        threads = self.settings.get("PYTHON_THREADPOOL_THREAD_COUNT", "").strip()
        workers = int(threads) if threads.isdigit() and int(threads) > 0 else sync_parallelism
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="devhost-worker"
        )

    # ----------------------------------------------------------------- clients

    def _service(self, connection: str) -> QueueServiceClient:
        """The one service client of a connection setting.

        Raises:
            HostError: the connection setting is not configured.
        """
        if connection not in self._services:
            name = connection
            prefixed = f"AzureWebJobs{connection}"
            if not self._has_connection(name) and self._has_connection(prefixed):
                name = prefixed
            try:
                self._services[connection] = async_queue_service(
                    self.settings,
                    name,
                    retry_total=3,
                    initial_backoff=1,
                    increment_base=2,
                    random_jitter_range=1,
                )
            except ConfigurationError as exc:
                raise HostError(str(exc)) from exc
            except ImportError as exc:
                raise HostError(f"{exc} (pip install aiohttp)") from exc
        return self._services[connection]

    def _has_connection(self, name: str) -> bool:
        return any(
            (self.settings.get(key) or "").strip()
            for key in (name, f"{name}__queueServiceUri", f"{name}__accountName")
        )

    def _queue(self, connection: str, name: str) -> QueueClient:
        key = (connection, name)
        if key not in self._queues:
            self._queues[key] = self._service(connection).get_queue_client(name)
        return self._queues[key]

    async def _create_queue(self, queue: QueueClient) -> None:
        try:
            await queue.create_queue()
            logger.info("created queue %r", queue.queue_name)
        except ResourceExistsError:
            pass

    async def _send(self, connection: str, queue_name: str, content: str) -> None:
        """Send one message, creating the queue on demand, and wake its listeners."""
        queue = self._queue(connection, queue_name)
        try:
            await queue.send_message(content)
        except ResourceNotFoundError:
            await self._create_queue(queue)
            await queue.send_message(content)
        self._notify(queue_name)

    def _notify(self, queue_name: str) -> None:
        for listener in self._listeners:
            if listener.function.queue_name == queue_name:
                listener.wake.set()

    # ----------------------------------------------------------------- running

    async def run(self) -> int:
        """Serve until stopped (exit 0) or, with ``drain``, until drained.

        Returns:
            0 when stopped or drained; 1 when draining left messages stuck failing on a
            queue without a poison queue, or was interrupted or timed out.

        Raises:
            HostError: a connection setting is missing.
        """
        for function in self.app.queue_functions:
            queue = self._queue(function.connection, function.queue_name)
            poison = None
            if not function.queue_name.endswith(_POISON_SUFFIX):
                poison = self._queue(function.connection, function.queue_name + _POISON_SUFFIX)
            self._listeners.append(_Listener(function, queue, poison))
        for name, reason in self.app.skipped:
            logger.info("skipping function %s: %s", name, reason)
        await self._create_trigger_queues()
        self._install_signal_handlers()
        o = self.options
        for listener in self._listeners:
            f = listener.function
            logger.info(
                "listening: %s <- queue %r (%s%s)",
                f.name,
                f.queue_name,
                "async" if f.is_async else "sync",
                "".join(f", output {out.param} -> {out.queue_name!r}" for out in f.outputs)
                + (f", $return -> {f.return_output.queue_name!r}" if f.return_output else ""),
            )
        logger.info(
            "queue options: batchSize=%d newBatchThreshold=%d maxPollingInterval=%gs "
            "visibilityTimeout=%gs maxDequeueCount=%d messageEncoding=%s",
            o.batch_size,
            o.new_batch_threshold,
            o.max_polling_interval,
            o.visibility_timeout,
            o.max_dequeue_count,
            o.message_encoding,
        )
        pollers = [asyncio.create_task(self._poll(listener)) for listener in self._listeners]
        exit_code = EXIT_OK
        try:
            if self.drain:
                exit_code = await self._drain_monitor()
            else:
                await self._stop.wait()
        finally:
            self._stop.set()
            for listener in self._listeners:
                listener.wake.set()
                listener.slot_freed.set()
            await asyncio.gather(*pollers, return_exceptions=True)
            if self._tasks:
                logger.info("waiting for %d in-flight invocation(s)", len(self._tasks))
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            await self._release_held()
            await self._close()
        return exit_code

    def stop(self) -> None:
        """Ask the host to stop: no new messages; in-flight invocations finish."""
        self._stop.set()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals > 1:
            logger.error("second %s: exiting without waiting", signal.Signals(signum).name)
            os._exit(130)
        logger.info(
            "%s: stopping; finishing %d in-flight invocation(s)",
            signal.Signals(signum).name,
            sum(listener.in_flight for listener in self._listeners),
        )
        self._stop.set()

    async def _create_trigger_queues(self) -> None:
        for listener in self._listeners:
            key = (listener.function.connection, listener.function.queue_name)
            if key in self._created:
                continue
            self._created.add(key)
            try:
                await self._create_queue(listener.queue)
            except Exception as exc:  # storage down: the listener retries
                logger.warning("could not create queue %r: %s", listener.queue.queue_name, exc)

    async def _close(self) -> None:
        for service in self._services.values():
            with contextlib.suppress(Exception):
                await service.close()
        self._executor.shutdown(wait=True)

    async def _wait(self, event: asyncio.Event, seconds: float | None) -> None:
        """Wait for ``event`` or a stop request, at most ``seconds``."""
        stop = asyncio.ensure_future(self._stop.wait())
        other = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({stop, other}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            other.cancel()

    def _log_outage(self, queue: str, exc: Exception) -> None:
        now = time.monotonic()
        self._outage_since.setdefault(queue, now)
        if now - self._last_outage_log.get(queue, -1e9) >= _OUTAGE_LOG_INTERVAL:
            self._last_outage_log[queue] = now
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
            logger.warning("polling queue %r failed (retrying): %s", queue, first_line)

    def _log_recovery(self, queue: str) -> None:
        since = self._outage_since.pop(queue, None)
        self._last_outage_log.pop(queue, None)
        if since is not None:
            logger.info(
                "polling queue %r works again after %.1f s", queue, time.monotonic() - since
            )

    async def _poll(self, listener: _Listener) -> None:
        options = self.options
        delay = MIN_POLLING_INTERVAL
        queue_name = listener.function.queue_name
        while not self._stop.is_set():
            while listener.in_flight > options.new_batch_threshold and not self._stop.is_set():
                listener.slot_freed.clear()
                await self._wait(listener.slot_freed, None)
            if self._stop.is_set():
                return
            listener.wake.clear()
            messages: list[StorageMessage] = []
            try:
                messages = await self._receive(listener.queue)
                self._log_recovery(queue_name)
            except ResourceNotFoundError:
                self._log_recovery(queue_name)
                with contextlib.suppress(Exception):
                    await self._create_queue(listener.queue)
            except Exception as exc:  # storage unavailable: back off and retry
                self._log_outage(queue_name, exc)
            if messages and self._stop.is_set():
                for message in messages:  # stopping: hand them back untouched
                    await self._release(listener.queue, message.id, message.pop_receipt or "", 0)
                return
            if messages:
                logger.debug("received %d message(s) from %r", len(messages), queue_name)
                delay = MIN_POLLING_INTERVAL
                for message in messages:
                    self._dispatch(listener, message)
                continue
            jitter = random.uniform(0.8, 1.2)  # noqa: S311 - poll jitter, not cryptography
            jittered = min(delay * jitter, options.max_polling_interval)
            await self._wait(listener.wake, jittered)
            delay = min(delay * 2, options.max_polling_interval)

    async def _receive(self, queue: QueueClient) -> list[StorageMessage]:
        """One Get Messages call for up to batchSize messages (the SDK's item pager would
        ask again for the rest of a short batch)."""
        pages = queue.receive_messages(
            messages_per_page=self.options.batch_size,
            visibility_timeout=self.lease_seconds,
            retry_total=0,  # the poll loop is the retry, with its own back-off
        ).by_page()
        async for page in pages:
            return [message async for message in page]
        return []

    def _dispatch(self, listener: _Listener, message: StorageMessage) -> None:
        listener.in_flight += 1
        if message.id not in self._stuck:
            self._activity += 1
        task = asyncio.create_task(self._handle(listener, message))
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            listener.in_flight -= 1
            listener.slot_freed.set()
            if not finished.cancelled() and finished.exception() is not None:
                logger.error("internal error handling a message", exc_info=finished.exception())

        task.add_done_callback(done)

    # ----------------------------------------------------------------- one message

    def _log(
        self,
        function: QueueFunction,
        message: StorageMessage,
        outcome: str,
        started: float,
        level: int = logging.INFO,
    ) -> None:
        logger.log(
            level,
            "%s message=%s dequeueCount=%s %s (%.0f ms)",
            function.name,
            message.id,
            message.dequeue_count,
            outcome,
            (time.monotonic() - started) * 1000,
        )

    async def _handle(self, listener: _Listener, message: StorageMessage) -> None:
        function = listener.function
        options = self.options
        started = time.monotonic()
        dequeue_count = int(message.dequeue_count or 0)
        raw = message.content if isinstance(message.content, str) else ""
        if dequeue_count > options.max_dequeue_count:
            reason = f"dequeue count above maxDequeueCount {options.max_dequeue_count}, not invoked"
            await self._give_up(listener, message, reason, started)
            return
        if options.message_encoding == "base64":
            try:
                body = decode_base64_body(raw)
            except ValueError as exc:
                await self._give_up(listener, message, f"{exc}, not invoked", started)
                return
        else:
            body = raw.encode("utf-8")

        lease = _Lease(listener.queue, message, self.lease_seconds)
        lease.start()
        invocation_id = str(uuid.uuid4())
        error: BaseException | None = None
        try:
            outputs = await self._invoke(function, message, body, invocation_id)
            for output, value in outputs:
                for item in _output_bodies(output.param, value):
                    await self._send(
                        output.connection, output.queue_name, self._encode(item, invocation_id)
                    )
        except Exception as exc:
            error = exc
        finally:
            await lease.stop()

        if error is None:
            await self._delete(listener.queue, message.id, lease.pop_receipt)
            self._log(function, message, "Succeeded", started)
            self._activity += 1
            return

        summary = f"{type(error).__name__}: {error}"
        if logger.isEnabledFor(logging.DEBUG):
            trace = "".join(traceback.format_exception(error))
            logger.debug("%s failed:\n%s", function.name, trace)
        if listener.poison is not None and dequeue_count >= options.max_dequeue_count:
            where = await self._to_poison(listener, message, raw, lease.pop_receipt)
            self._log(
                function,
                message,
                f"Poisoned (Failed: {summary}) {where}",
                started,
                logging.WARNING,
            )
        else:
            await self._release(listener.queue, message.id, lease.pop_receipt)
            self._log(function, message, f"Failed: {summary}", started, logging.WARNING)
            if listener.poison is None and dequeue_count >= options.max_dequeue_count:
                self._stuck[message.id] = _Stuck(
                    function.queue_name, message.id, dequeue_count, f"Failed: {summary}"
                )
        self._activity += 1

    async def _give_up(
        self, listener: _Listener, message: StorageMessage, reason: str, started: float
    ) -> None:
        """A message that is not invoked: to poison, or, without a poison queue, left
        invisible for the rest of its lease as the real host leaves it."""
        function = listener.function
        if listener.poison is not None:
            raw = message.content if isinstance(message.content, str) else ""
            where = await self._to_poison(listener, message, raw, message.pop_receipt or "")
            self._log(
                function,
                message,
                f"Poisoned ({reason}) {where}",
                started,
                logging.WARNING,
            )
            self._activity += 1
            return
        known = message.id in self._stuck
        previous = self._stuck.get(message.id)
        self._stuck[message.id] = _Stuck(
            function.queue_name,
            message.id,
            int(message.dequeue_count or 0),
            previous.reason if previous else reason,
        )
        self._held[message.id] = _Held(listener.queue, message.pop_receipt or "")
        if not known:
            self._log(
                function,
                message,
                f"Left on the queue ({reason}; {function.queue_name!r} has no poison queue)",
                started,
                logging.WARNING,
            )

    def _encode(self, item: bytes | str, invocation_id: str) -> str:
        """An output body as the host writes it: parent id stamped, then encoded."""
        text = item.decode("utf-8", errors="replace") if isinstance(item, bytes) else item
        text = stamp_parent_id(text, invocation_id)
        if self.options.message_encoding == "base64":
            return base64.b64encode(text.encode("utf-8")).decode("ascii")
        return text

    async def _invoke(
        self,
        function: QueueFunction,
        message: StorageMessage,
        body: bytes,
        invocation_id: str,
    ) -> list[tuple[QueueOutput, Any]]:
        arguments: dict[str, Any] = {}
        if function.trigger_kind == "str":
            arguments[function.trigger_param] = body.decode("utf-8", errors="replace")
        elif function.trigger_kind == "bytes":
            arguments[function.trigger_param] = body
        else:
            arguments[function.trigger_param] = _QUEUE_MESSAGE(
                id=message.id,
                body=body,
                dequeue_count=message.dequeue_count,
                pop_receipt=message.pop_receipt,
                insertion_time=message.inserted_on,
                expiration_time=message.expires_on,
                time_next_visible=message.next_visible_on,
            )
        outs = {output.param: _Out() for output in function.outputs}
        arguments.update(outs)
        if function.context_param:
            arguments[function.context_param] = _Context(
                invocation_id, function.name, str(self.app_dir)
            )
        if function.is_async:
            result = await function.func(**arguments)
        else:
            context = contextvars.copy_context()
            call = functools.partial(context.run, function.func, **arguments)
            result = await asyncio.get_running_loop().run_in_executor(self._executor, call)
        produced: list[tuple[QueueOutput, Any]] = [
            (output, outs[output.param].get()) for output in function.outputs
        ]
        if function.return_output is not None:
            produced.append((function.return_output, result))
        return produced

    async def _delete(self, queue: QueueClient, message_id: str, pop_receipt: str) -> None:
        try:
            await queue.delete_message(message_id, pop_receipt)
        except Exception as exc:
            if _is_pop_receipt_or_gone(exc):
                logger.debug("message %s was already gone or taken over: %s", message_id, exc)
            else:
                logger.warning("could not delete message %s: %s", message_id, exc)

    async def _release(
        self,
        queue: QueueClient,
        message_id: str,
        pop_receipt: str,
        visibility_timeout: float | None = None,
    ) -> None:
        """Make a message visible again after ``visibility_timeout`` (default: the host's
        visibilityTimeout); a message already gone or taken over is left alone."""
        seconds = (
            self.options.visibility_timeout if visibility_timeout is None else visibility_timeout
        )
        try:
            await queue.update_message(message_id, pop_receipt, visibility_timeout=round(seconds))
        except Exception as exc:
            if _is_pop_receipt_or_gone(exc):
                logger.debug("message %s was already gone or taken over: %s", message_id, exc)
            else:
                logger.warning("could not release message %s: %s", message_id, exc)

    async def _to_poison(
        self, listener: _Listener, message: StorageMessage, raw: str, pop_receipt: str
    ) -> str:
        """Copy the body as it sits on the queue to the poison queue; delete the original.

        Returns the outcome for the log line. A failed copy leaves the original in place,
        invisible for the rest of its lease, after which it is received again."""
        assert listener.poison is not None
        poison_name = listener.poison.queue_name
        try:
            await self._send(listener.function.connection, poison_name, raw)
        except Exception as exc:
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
            return f"could not be moved to {poison_name!r} ({first_line}); left on the queue"
        await self._delete(listener.queue, message.id, pop_receipt)
        return f"-> {poison_name!r}"

    async def _release_held(self) -> None:
        """Make the messages left on poison-less queues visible again before exiting, so
        the next run sees them at once instead of after their 10-minute lease."""
        for message_id, held in self._held.items():
            with contextlib.suppress(Exception):
                await held.queue_client.update_message(
                    message_id, held.pop_receipt, visibility_timeout=0
                )

    # ----------------------------------------------------------------- draining

    def _quiet(self) -> bool:
        return not self._tasks

    async def _approximate_count(self, queue: QueueClient) -> int:
        try:
            properties = await queue.get_queue_properties(retry_total=0)
        except ResourceNotFoundError:
            return 0
        return int(properties.approximate_message_count or 0)

    async def _drain_monitor(self) -> int:
        """Return once every trigger queue is empty and nothing is in flight."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        queues: dict[str, QueueClient] = {}
        for listener in self._listeners:
            queues.setdefault(listener.function.queue_name, listener.queue)
        while True:
            if self._stop.is_set():
                logger.error("interrupted before the trigger queues were drained")
                return EXIT_NOT_DRAINED
            if deadline is not None and time.monotonic() > deadline:
                logger.error("not drained after %g s", self.timeout)
                return EXIT_NOT_DRAINED
            await asyncio.sleep(_DRAIN_CHECK_INTERVAL)
            if not self._quiet():
                continue
            before = self._activity
            try:
                counts = await asyncio.gather(
                    *(self._approximate_count(queue) for queue in queues.values())
                )
            except Exception as exc:  # storage unavailable: keep waiting
                self._log_outage("drain", exc)
                continue
            if self._activity != before or not self._quiet():
                continue
            stuck_per_queue: dict[str, int] = {}
            for stuck in self._stuck.values():
                stuck_per_queue[stuck.queue] = stuck_per_queue.get(stuck.queue, 0) + 1
            remaining = {
                name: count - stuck_per_queue.get(name, 0)
                for name, count in zip(queues, counts, strict=True)
            }
            if any(count > 0 for count in remaining.values()):
                continue
            if not self._stuck:
                logger.info("drained: every trigger queue is empty")
                return EXIT_OK
            for stuck in self._stuck.values():
                logger.error(
                    "not drained: message %s is stuck on queue %r, which has no poison queue "
                    "(dequeue count %d, maxDequeueCount %d): %s",
                    stuck.message_id,
                    stuck.queue,
                    stuck.dequeue_count,
                    self.options.max_dequeue_count,
                    stuck.reason,
                )
            return EXIT_NOT_DRAINED


# --------------------------------------------------------------------------- start-up


def load_app(app_dir: Path) -> Any:
    """Import ``function_app`` from ``app_dir`` and return its FunctionApp.

    Raises:
        HostError: there is no function_app.py, it fails to import, or it defines no
            FunctionApp.
    """
    if not (app_dir / "function_app.py").is_file():
        raise HostError(f"no function_app.py in {app_dir}")
    sys.path.insert(0, str(app_dir))
    existing = sys.modules.get("function_app")
    if existing is not None and Path(getattr(existing, "__file__", "")).parent != app_dir:
        del sys.modules["function_app"]
    try:
        module: ModuleType = importlib.import_module("function_app")
    except Exception as exc:
        raise HostError(
            "importing function_app failed:\n" + "".join(traceback.format_exception(exc))
        ) from exc
    app = getattr(module, "app", None)
    if not isinstance(app, func.FunctionRegister):
        app = next((v for v in vars(module).values() if isinstance(v, func.FunctionRegister)), None)
    if app is None:
        raise HostError(f"{app_dir / 'function_app.py'} defines no azure.functions.FunctionApp")
    return app


def _lease_seconds(settings: Mapping[str, str]) -> int:
    text = (settings.get("DEVHOST_MESSAGE_LEASE_SECONDS") or "").strip()
    return int(text) if text.isdigit() and int(text) >= 2 else DEFAULT_LEASE_SECONDS


def run(
    app_dir: Path | None = None,
    settings_file: Path | None = None,
    *,
    drain: bool = False,
    timeout: float | None = None,
) -> int:
    """Load settings, host.json and the app, then serve it; the ``run`` command.

    Returns the process exit code: 0 served/drained, 1 not drained, 2 refused (settings,
    host.json, import or indexing error — reported before any message is received).
    """
    directory = (app_dir or Path.cwd()).resolve()
    try:
        settings = load_settings(directory, settings_file)
        apply_to_environ(settings)
        options = load_queues_options(directory)
        app = load_app(directory)
        indexed = index_app(app, os.environ)
    except (SettingsError, HostJsonError, HostError, FunctionLoadError) as exc:
        logger.error("refusing to start: %s", exc)
        return EXIT_REFUSED
    if not indexed.queue_functions:
        logger.warning("no queue-triggered functions in %s", directory)
    host = Host(
        indexed,
        options,
        dict(os.environ),
        directory,
        drain=drain,
        timeout=timeout,
        lease_seconds=_lease_seconds(os.environ),
    )
    try:
        for function in indexed.queue_functions:  # fail fast on a missing connection
            host._service(function.connection)
            for output in function.outputs:
                host._service(output.connection)
        return asyncio.run(host.run())
    except HostError as exc:
        logger.error("refusing to start: %s", exc)
        return EXIT_REFUSED
