"""The bodies of the functions: one call each from function_app.py.

Each is ``async``: the functions run on the worker's event loop, where one asyncio Cosmos
client and one queue client serve every invocation. Each builds the dependencies (once
per process and loop), runs its flow (:mod:`handlers.flows`) on the raw body, logs the
outcome with the message's ids, and lets failures propagate so the host retries them
(noting the error durably for the deadletter's ``lastError``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from handlers import bootstrap, flows, observability

__all__ = [
    "check_configuration",
    "mark",
    "mark_fanout",
    "order",
    "poison",
    "stale_marks",
    "trade",
]

Source = Literal["trades", "marks", "marks-fanout", "orders"]

#: The poison function of each source queue (function_app.py), the name its logs carry.
_POISON_FUNCTIONS: dict[Source, str] = {
    "trades": "on_trade_poison",
    "marks": "on_mark_poison",
    "marks-fanout": "on_mark_fanout_poison",
    "orders": "on_order_poison",
}

logger = logging.getLogger("tradeguard")


class QueueMessageLike(Protocol):
    """What the functions read of ``azure.functions.QueueMessage``."""

    @property
    def id(self) -> str | None: ...

    @property
    def dequeue_count(self) -> int | None: ...

    def get_body(self) -> bytes: ...


def _queue(deps: flows.Deps, source: Source) -> str:
    """The configured name of a source queue."""
    settings = deps.settings
    if source == "trades":
        return settings.trades_queue
    if source == "orders":
        return settings.orders_queue
    return settings.marks_queue if source == "marks" else settings.marks_fanout_queue


def check_configuration() -> None:
    """Check the settings and the instrument catalog (``function_app`` calls it as it is
    imported: a configuration the app cannot use fails the worker's indexing, or devhost's
    start, with the setting's name and value, instead of every message).

    Raises:
        ConfigurationError: a setting or the catalog is wrong.
    """
    bootstrap.configuration()


#: A flow as the functions call it: (body, deps, the source queue's name, dequeue count).
Flow = Callable[[bytes, flows.Deps, str, int], Awaitable[flows.Outcome | list[flows.Outcome]]]


async def _run(
    name: str,
    msg: QueueMessageLike,
    flow: Flow,
    source: Source,
    context: observability.InvocationContextLike | None = None,
) -> None:
    """Run ``flow`` on one message of ``source`` and log its outcomes with the message's
    ids; a failure is noted (for ``lastError``), logged and re-raised for the host.

    Raises:
        Exception: whatever the flow raised (the host retries, then poisons the message).
    """
    observability.configure()
    body = msg.get_body()
    with observability.invocation(
        name, context, message_id=msg.id, dequeue_count=msg.dequeue_count, body=body
    ):
        deps = bootstrap.deps()
        queue = _queue(deps, source)
        started = time.perf_counter()
        try:
            result = await flow(body, deps, queue, msg.dequeue_count or 1)
        except Exception as exc:
            await flows.note_failure(deps, body, exc, queue)
            logger.warning(
                "%s message=%s dequeueCount=%s failed: %s: %s",
                name,
                msg.id,
                msg.dequeue_count,
                type(exc).__name__,
                exc,
            )
            raise
        elapsed = (time.perf_counter() - started) * 1000
        for outcome in result if isinstance(result, list) else [result]:
            _log(name, msg, outcome, elapsed)


def _log(name: str, msg: QueueMessageLike, outcome: flows.Outcome, elapsed: float) -> None:
    correlation = next((a.correlationId for a in outcome.alerts if a.correlationId), None)
    with observability.bound(
        event_id=outcome.source_id, account_id=outcome.account_id, correlation_id=correlation
    ):
        logger.info(
            "%s message=%s dequeueCount=%s outcome=%s source=%s account=%s alerts=%d %s (%.1f ms)",
            name,
            msg.id,
            msg.dequeue_count,
            outcome.kind,
            outcome.source_id,
            outcome.account_id,
            len(outcome.alerts),
            outcome.detail,
            elapsed,
        )


async def trade(
    msg: QueueMessageLike, context: observability.InvocationContextLike | None = None
) -> None:
    """A trades-queue message (FILL or TRANSFER).

    Raises:
        Exception: a retryable failure (store unavailable, unreadable document, lost
            races); the host retries and finally poisons the message.
    """
    await _run("on_trade", msg, flows.process_trade_message, "trades", context)


async def mark(
    msg: QueueMessageLike, context: observability.InvocationContextLike | None = None
) -> None:
    """A marks-queue message (MARK or MARKS). Raises as :func:`trade`."""
    await _run("on_mark", msg, flows.process_mark_message, "marks", context)


async def mark_fanout(
    msg: QueueMessageLike, context: observability.InvocationContextLike | None = None
) -> None:
    """A unit of a mark's pass over many holders. Raises as :func:`trade`."""
    await _run("on_mark_fanout", msg, flows.process_mark_fanout, "marks-fanout", context)


async def order(
    msg: QueueMessageLike, context: observability.InvocationContextLike | None = None
) -> None:
    """An orders-queue message (ORDER, ORDER_DONE or ACCOUNT_CONTROL). Raises as
    :func:`trade` (the order-decisions queue failing included)."""
    await _run("on_order", msg, flows.process_order_message, "orders", context)


async def poison(
    msg: QueueMessageLike,
    source: Source,
    context: observability.InvocationContextLike | None = None,
) -> None:
    """A body the host moved to ``<queue>-poison``; ``source`` names the queue.

    Raises:
        Exception: the store is unavailable (the host leaves the message on the poison
            queue and retries it).
    """
    await _run(_POISON_FUNCTIONS[source], msg, flows.process_poison, source, context)


async def stale_marks(context: observability.InvocationContextLike | None = None) -> None:
    """The timer: STALE_MARK alerts for symbols whose mark stopped while positions are open.

    Raises:
        Exception: the store or the queue is unavailable (the next tick tries again).
    """
    observability.configure()
    with observability.invocation("check_stale_marks", context):
        deps = bootstrap.deps()
        for outcome in await flows.check_stale_marks(deps):
            with observability.bound(event_id=outcome.source_id):
                logger.warning("stale mark %s: alert sent", outcome.source_id)
