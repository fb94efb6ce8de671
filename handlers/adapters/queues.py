"""AlertSink, DecisionSink and MessageSink on Azure Queue Storage: each alert, order
decision (or text) one message, base64 of its JSON (UTF-8).

Alerts are sent with the queue SDK rather than an output binding: a binding is flushed
only after the function returns, i.e. after the record write, so a failed flush would
leave a record whose alerts were never sent — and a duplicate whose record exists sends
nothing. With the SDK the service sends before it writes the record (docs/alerts.md). Order
decisions go the same way, for the same reason (docs/orders.md).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Mapping, Sequence

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue.aio import QueueClient

from handlers.adapters.storage import async_queue_service
from handlers.core.contracts import Alert, OrderDecision

__all__ = [
    "QueueAlertSink",
    "QueueDecisionSink",
    "QueueTextSink",
    "encode_alert",
    "encode_decision",
    "encode_text",
]

logger = logging.getLogger(__name__)


def encode_alert(alert: Alert) -> str:
    """The queue text of an alert: base64 of its compact JSON (what TextBase64DecodePolicy
    and a default queue trigger expect)."""
    return base64.b64encode(alert.model_dump_json().encode("utf-8")).decode("ascii")


def encode_decision(decision: OrderDecision) -> str:
    """The queue text of an order decision: base64 of its compact JSON, as for alerts."""
    return base64.b64encode(decision.model_dump_json().encode("utf-8")).decode("ascii")


def encode_text(text: str) -> str:
    """The queue text of an app message: base64 of its UTF-8."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


class QueueTextSink:
    """Sends messages to one queue (asyncio client), creating it on first use."""

    def __init__(self, settings: Mapping[str, str], connection: str, queue: str) -> None:
        self._service = async_queue_service(settings, connection)
        self._client: QueueClient = self._service.get_queue_client(queue)
        self._ready = False
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        """Close the client's connections."""
        await self._client.close()
        await self._service.close()

    async def _ensure(self) -> None:
        if self._ready:
            return
        async with self._lock:
            if not self._ready:
                with contextlib.suppress(ResourceExistsError):
                    await self._client.create_queue()
                self._ready = True

    async def _send_all(self, texts: Sequence[str]) -> None:
        await self._ensure()
        if len(texts) == 1:
            await self._client.send_message(texts[0])
        else:
            await asyncio.gather(*(self._client.send_message(t) for t in texts))

    async def send_texts(self, texts: Sequence[str]) -> None:
        """Send each text as one message, base64 of its UTF-8 (concurrently).

        Raises:
            azure.core.exceptions.AzureError: the queue could not be written (some may
                have been sent; the caller's retry sends them again).
        """
        if texts:
            await self._send_all([encode_text(t) for t in texts])


class QueueAlertSink(QueueTextSink):
    """Sends alerts to the alerts queue."""

    async def send(self, alerts: Sequence[Alert]) -> None:
        """Send each alert as one message (concurrently when there are several).

        Raises:
            azure.core.exceptions.AzureError: the queue could not be written (some of
                several alerts may have been sent; a retry re-sends them with the same
                alertIds).
        """
        if not alerts:
            return
        await self._send_all([encode_alert(a) for a in alerts])
        for alert in alerts:
            logger.info(
                "alert %s %s account=%s source=%s",
                alert.type,
                alert.alertId[:12],
                alert.accountId,
                alert.sourceId,
            )


class QueueDecisionSink(QueueTextSink):
    """Sends order decisions to the order-decisions queue."""

    async def send(self, decisions: Sequence[OrderDecision]) -> None:
        """Send each decision as one message (concurrently when there are several).

        Raises:
            azure.core.exceptions.AzureError: the queue could not be written (some of
                several decisions may have been sent; a retry re-sends them with the same
                decisionIds).
        """
        if not decisions:
            return
        await self._send_all([encode_decision(d) for d in decisions])
        for decision in decisions:
            logger.info(
                "decision %s %s account=%s order=%s",
                decision.decision,
                decision.decisionId[:12],
                decision.accountId,
                decision.orderId,
            )
