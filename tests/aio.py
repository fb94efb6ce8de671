"""Synchronous calls into the asyncio flows, for tests.

Every call runs on ONE event loop kept for the whole test session, as the Functions
worker keeps one: the asyncio SDK clients a test builds stay bound to the loop that first
used them, so they must not meet a second loop.
"""

from __future__ import annotations

import asyncio
import atexit
from collections.abc import Coroutine
from typing import Any, TypeVar

from handlers import entrypoints, flows

__all__ = [
    "check_stale_marks",
    "process_mark_message",
    "process_poison",
    "process_poison_all",
    "process_trade_message",
    "run",
]

T = TypeVar("T")
_runner = asyncio.Runner()
atexit.register(_runner.close)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on the session's event loop."""
    return _runner.run(coro)


def process_trade_message(raw: bytes, deps: flows.Deps, **kwargs: Any) -> flows.Outcome:
    return run(flows.process_trade_message(raw, deps, **kwargs))


def process_mark_message(raw: bytes, deps: flows.Deps, **kwargs: Any) -> list[flows.Outcome]:
    return run(flows.process_mark_message(raw, deps, **kwargs))


def process_mark_fanout(raw: bytes, deps: flows.Deps, **kwargs: Any) -> flows.Outcome:
    return run(flows.process_mark_fanout(raw, deps, **kwargs))


def process_poison_all(
    raw: bytes, deps: flows.Deps, source_queue: str, dequeue_count: int = 1
) -> list[flows.Outcome]:
    return run(flows.process_poison(raw, deps, source_queue, dequeue_count))


def process_poison(
    raw: bytes, deps: flows.Deps, source_queue: str, dequeue_count: int = 1
) -> flows.Outcome:
    """The outcome of a poisoned body that has one (a trades body, an unreadable one)."""
    [outcome] = process_poison_all(raw, deps, source_queue, dequeue_count)
    return outcome


def check_stale_marks(deps: flows.Deps) -> list[flows.Outcome]:
    return run(flows.check_stale_marks(deps))


def trade(msg: entrypoints.QueueMessageLike) -> None:
    run(entrypoints.trade(msg))


def mark(msg: entrypoints.QueueMessageLike) -> None:
    run(entrypoints.mark(msg))


def poison(msg: entrypoints.QueueMessageLike, source: str) -> None:
    run(entrypoints.poison(msg, source))
