"""The bodies of the queue-triggered functions: one call each from function_app.py.

Each is ``async``: the functions run on the worker's event loop, where one asyncio Cosmos
client and one queue client serve every invocation. Each builds the dependencies (once
per process and loop), runs the service on the raw body, logs
the outcome with the message's ids, and lets failures propagate so the host retries them
(remembering the error for the deadletter's ``lastError``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from handlers import bootstrap, observability, service

__all__ = ["mark", "poison", "stale_marks", "trade"]

logger = logging.getLogger("tradeguard")


class QueueMessageLike(Protocol):
    """What the functions read of ``azure.functions.QueueMessage``."""

    @property
    def id(self) -> str | None: ...

    @property
    def dequeue_count(self) -> int | None: ...

    def get_body(self) -> bytes: ...


async def _run(
    name: str,
    msg: QueueMessageLike,
    work: Callable[[bytes, service.Deps], Awaitable[list[service.Outcome]]],
    context: observability.InvocationContextLike | None = None,
) -> None:
    observability.configure()
    body = msg.get_body()
    with observability.invocation(
        name, context, message_id=msg.id, dequeue_count=msg.dequeue_count, body=body
    ):
        await _process(name, msg, body, work)


def _correlation(outcome: service.Outcome) -> str | None:
    return next((a.correlationId for a in outcome.alerts if a.correlationId), None)


async def _process(
    name: str,
    msg: QueueMessageLike,
    body: bytes,
    work: Callable[[bytes, service.Deps], Awaitable[list[service.Outcome]]],
) -> None:
    deps = bootstrap.deps()
    started = time.perf_counter()
    try:
        outcomes = await work(body, deps)
    except Exception as exc:
        service.note_failure(deps, body, exc)
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
    for outcome in outcomes:
        with observability.bound(
            event_id=outcome.source_id,
            account_id=outcome.account_id,
            correlation_id=_correlation(outcome),
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

    async def work(body: bytes, deps: service.Deps) -> list[service.Outcome]:
        return [
            await service.process_trade_message(body, deps, dequeue_count=msg.dequeue_count or 1)
        ]

    await _run("on_trade", msg, work, context)


async def mark(
    msg: QueueMessageLike, context: observability.InvocationContextLike | None = None
) -> None:
    """A marks-queue message (MARK or MARKS).

    Raises:
        Exception: a retryable failure; the host retries and finally poisons the message.
    """

    async def work(body: bytes, deps: service.Deps) -> list[service.Outcome]:
        return await service.process_mark_message(body, deps, dequeue_count=msg.dequeue_count or 1)

    await _run("on_mark", msg, work, context)


async def poison(
    msg: QueueMessageLike,
    source: str,
    context: observability.InvocationContextLike | None = None,
) -> None:
    """A body the host moved to ``<queue>-poison``; ``source`` is "trades" or "marks".

    Raises:
        Exception: the store is unavailable (the host leaves the message on the poison
            queue and retries it).
    """

    async def work(body: bytes, deps: service.Deps) -> list[service.Outcome]:
        queue = deps.settings.trades_queue if source == "trades" else deps.settings.marks_queue
        return [await service.process_poison(body, deps, queue)]

    await _run(f"on_{source}_poison", msg, work, context)


async def stale_marks(context: observability.InvocationContextLike | None = None) -> None:
    """The timer: STALE_MARK alerts for symbols whose mark stopped while positions are open.

    Raises:
        Exception: the store or the queue is unavailable (the next tick tries again).
    """
    observability.configure()
    with observability.invocation("check_stale_marks", context):
        deps = bootstrap.deps()
        for outcome in await service.check_stale_marks(deps):
            with observability.bound(event_id=outcome.source_id):
                logger.warning("stale mark %s: alert sent", outcome.source_id)
