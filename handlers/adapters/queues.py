"""AlertSink on Azure Queue Storage: each alert one message, base64 of its JSON.

Alerts are sent with the queue SDK rather than an output binding: a binding is flushed
only after the function returns, i.e. after the record write, so a failed flush would
leave a record whose alerts were never sent — and a duplicate whose record exists sends
nothing. With the SDK the service sends before it writes the record (docs/alerts.md).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
from collections.abc import Mapping, Sequence

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from handlers.adapters.storage import queue_service
from handlers.core.contracts import Alert

__all__ = ["QueueAlertSink", "encode_alert"]

logger = logging.getLogger(__name__)


def encode_alert(alert: Alert) -> str:
    """The queue text of an alert: base64 of its compact JSON (what TextBase64DecodePolicy
    and a default queue trigger expect)."""
    return base64.b64encode(alert.model_dump_json().encode("utf-8")).decode("ascii")


class QueueAlertSink:
    """Sends alerts to the alerts queue, creating it on first use."""

    def __init__(self, settings: Mapping[str, str], connection: str, queue: str) -> None:
        self._service = queue_service(settings, connection)
        self._client: QueueClient = self._service.get_queue_client(queue)
        self._ready = False
        self._lock = threading.Lock()

    def _ensure(self) -> None:
        if self._ready:
            return
        with self._lock:
            if not self._ready:
                with contextlib.suppress(ResourceExistsError):
                    self._client.create_queue()
                self._ready = True

    def send(self, alerts: Sequence[Alert]) -> None:
        """Send each alert as one message.

        Raises:
            azure.core.exceptions.AzureError: the queue could not be written.
        """
        if not alerts:
            return
        self._ensure()
        for alert in alerts:
            self._client.send_message(encode_alert(alert))
            logger.info(
                "alert %s %s account=%s source=%s",
                alert.type,
                alert.alertId[:12],
                alert.accountId,
                alert.sourceId,
            )
