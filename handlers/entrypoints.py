"""The bodies of the queue-triggered functions: one call each from function_app.py.

Each builds the dependencies (once per process), runs the service on the raw body, logs
the outcome with the message's ids, and lets failures propagate so the host retries them
(remembering the error for the deadletter's ``lastError``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from handlers import bootstrap, service

__all__ = ["mark", "poison", "stale_marks", "trade"]

logger = logging.getLogger("tradeguard")


class QueueMessageLike(Protocol):
    """What the functions read of ``azure.functions.QueueMessage``."""

    @property
    def id(self) -> str | None: ...

    @property
    def dequeue_count(self) -> int | None: ...

    def get_body(self) -> bytes: ...


def _run(
    name: str, msg: QueueMessageLike, work: Callable[[bytes, service.Deps], list[service.Outcome]]
) -> None:
    deps = bootstrap.deps()
    body = msg.get_body()
    started = time.perf_counter()
    try:
        outcomes = work(body, deps)
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


def trade(msg: QueueMessageLike) -> None:
    """A trades-queue message (FILL or TRANSFER).

    Raises:
        Exception: a retryable failure (store unavailable, unreadable document, lost
            races); the host retries and finally poisons the message.
    """
    _run(
        "on_trade",
        msg,
        lambda body, deps: [
            service.process_trade_message(body, deps, dequeue_count=msg.dequeue_count or 1)
        ],
    )


def mark(msg: QueueMessageLike) -> None:
    """A marks-queue message (MARK or MARKS).

    Raises:
        Exception: a retryable failure; the host retries and finally poisons the message.
    """
    _run(
        "on_mark",
        msg,
        lambda body, deps: service.process_mark_message(
            body, deps, dequeue_count=msg.dequeue_count or 1
        ),
    )


def poison(msg: QueueMessageLike, source: str) -> None:
    """A body the host moved to ``<queue>-poison``; ``source`` is "trades" or "marks".

    Raises:
        Exception: the store is unavailable (the host leaves the message on the poison
            queue and retries it).
    """

    def work(body: bytes, deps: service.Deps) -> list[service.Outcome]:
        queue = deps.settings.trades_queue if source == "trades" else deps.settings.marks_queue
        return [service.process_poison(body, deps, queue)]

    _run(f"on_{source}_poison", msg, work)


def stale_marks() -> None:
    """The timer: STALE_MARK alerts for symbols whose mark stopped while positions are open.

    Raises:
        Exception: the store or the queue is unavailable (the next tick tries again).
    """
    deps = bootstrap.deps()
    for outcome in service.check_stale_marks(deps):
        logger.warning("stale mark %s: alert sent", outcome.source_id)
