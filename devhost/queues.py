"""The host's storage queues: one ``azure.storage.queue.aio`` service client per connection
setting, a queue client per (connection, queue), and the message operations the listeners
use (send with the queue created on demand, delete, release) that leave alone a message
already gone or taken over. Also the rate-limited log of a queue that cannot be polled.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from handlers.adapters.storage import async_queue_service
from handlers.errors import ConfigurationError

__all__ = [
    "HostError",
    "OutageLog",
    "QueueClients",
    "connection_setting",
    "describe_error",
    "error_code",
    "is_pop_receipt_or_gone",
]

# Log lines keep the logger name they had when all of devhost's host lived in devhost.host.
logger = logging.getLogger("devhost.host")

_OUTAGE_LOG_INTERVAL = 10.0


class HostError(Exception):
    """devhost cannot start: bad settings, host.json, app or storage connection."""


def _has_connection(settings: Mapping[str, str], name: str) -> bool:
    return any(
        (settings.get(key) or "").strip()
        for key in (name, f"{name}__queueServiceUri", f"{name}__accountName")
    )


def connection_setting(settings: Mapping[str, str], connection: str) -> str:
    """The setting a binding's ``connection`` names: itself, or, when only that is set,
    ``AzureWebJobs<connection>`` (as the host looks it up)."""
    prefixed = f"AzureWebJobs{connection}"
    if not _has_connection(settings, connection) and _has_connection(settings, prefixed):
        return prefixed
    return connection


def describe_error(exc: BaseException) -> str:
    """One line for a storage error: ``<status> <error code>`` and the first line of the
    service's message for an HTTP error (never the raw XML of the response body), the
    first line of the message otherwise."""
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        code = error_code(exc) or ""
        return f"{exc.status_code} {code}: {first_line}".replace("  ", " ")
    return first_line


def error_code(exc: HttpResponseError) -> str:
    """The service's error code (``AuthenticationFailed``), '' without one."""
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def is_pop_receipt_or_gone(exc: Exception) -> bool:
    """Whether a storage error means the message is gone or another receive took it over."""
    if isinstance(exc, ResourceNotFoundError):
        return True
    return isinstance(exc, HttpResponseError) and exc.status_code in (400, 404)


class QueueClients:
    """The service and queue clients of one host, and the message operations on them.

    ``on_sent`` is called with the queue's name after every message this host sends.
    """

    def __init__(self, settings: Mapping[str, str], on_sent: Callable[[str], None]) -> None:
        self.settings = settings
        self._on_sent = on_sent
        self._services: dict[str, QueueServiceClient] = {}
        self._queues: dict[tuple[str, str], QueueClient] = {}

    def service(self, connection: str) -> QueueServiceClient:
        """The one service client of a connection setting.

        Raises:
            HostError: the connection setting is not configured.
        """
        if connection not in self._services:
            name = connection_setting(self.settings, connection)
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
            except ValueError as exc:  # a malformed connection string
                raise HostError(f"{name}: {exc}") from exc
        return self._services[connection]

    def queue(self, connection: str, name: str) -> QueueClient:
        """The one queue client of a queue.

        Raises:
            HostError: the connection setting is not configured.
        """
        key = (connection, name)
        if key not in self._queues:
            self._queues[key] = self.service(connection).get_queue_client(name)
        return self._queues[key]

    async def create(self, queue: QueueClient, *, retry: bool = True) -> None:
        """Create the queue; one that exists is fine. Without ``retry``, one attempt.

        Raises:
            azure.core.exceptions.AzureError: storage refused or is unreachable.
        """
        try:
            if retry:
                await queue.create_queue()
            else:
                await queue.create_queue(retry_total=0)
            logger.info("created queue %r", queue.queue_name)
        except ResourceExistsError:
            pass

    async def send(self, connection: str, queue_name: str, content: str) -> None:
        """Send one message, creating the queue on demand, and report it to ``on_sent``.

        Raises:
            HostError: the connection setting is not configured.
            azure.core.exceptions.AzureError: storage refused or is unreachable.
        """
        queue = self.queue(connection, queue_name)
        try:
            await queue.send_message(content)
        except ResourceNotFoundError:
            await self.create(queue)
            await queue.send_message(content)
        self._on_sent(queue_name)

    async def delete(self, queue: QueueClient, message_id: str, pop_receipt: str) -> None:
        """Delete a message; failures are logged, not raised."""
        try:
            await queue.delete_message(message_id, pop_receipt)
        except Exception as exc:
            if is_pop_receipt_or_gone(exc):
                logger.debug("message %s was already gone or taken over: %s", message_id, exc)
            else:
                logger.warning("could not delete message %s: %s", message_id, exc)

    async def release(
        self, queue: QueueClient, message_id: str, pop_receipt: str, seconds: float
    ) -> None:
        """Make a message visible again after ``seconds``; a message already gone or taken
        over is left alone. Failures are logged, not raised."""
        try:
            await queue.update_message(message_id, pop_receipt, visibility_timeout=round(seconds))
        except Exception as exc:
            if is_pop_receipt_or_gone(exc):
                logger.debug("message %s was already gone or taken over: %s", message_id, exc)
            else:
                logger.warning("could not release message %s: %s", message_id, exc)

    async def close(self) -> None:
        """Close every service client; failures are ignored."""
        for service in self._services.values():
            with contextlib.suppress(Exception):
                await service.close()


class OutageLog:
    """Logs an operation that keeps failing (polling a queue, by default) at most every
    10 s, and when it works again."""

    def __init__(self) -> None:
        self._last_log: dict[str, float] = {}
        self._since: dict[str, float] = {}

    def failed(self, queue: str, exc: Exception, what: str | None = None) -> None:
        """``what`` failed (default: ``polling queue '<queue>'``); ``queue`` keys it."""
        now = time.monotonic()
        self._since.setdefault(queue, now)
        if now - self._last_log.get(queue, -1e9) >= _OUTAGE_LOG_INTERVAL:
            self._last_log[queue] = now
            label = what or f"polling queue {queue!r}"
            logger.warning("%s failed (retrying): %s", label, describe_error(exc))

    def recovered(self, queue: str, what: str | None = None) -> None:
        since = self._since.pop(queue, None)
        self._last_log.pop(queue, None)
        if since is not None:
            label = what or f"polling queue {queue!r}"
            logger.info("%s works again after %.1f s", label, time.monotonic() - since)
