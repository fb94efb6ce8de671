"""Synchronous calls into the asyncio service, for tests.

Every call runs on ONE event loop kept for the whole test session, as the Functions
worker keeps one: the asyncio SDK clients a test builds stay bound to the loop that first
used them, so they must not meet a second loop.
"""

from __future__ import annotations

import asyncio
import atexit
from collections.abc import Coroutine
from typing import Any, TypeVar

from handlers import entrypoints, service

__all__ = [
    "check_stale_marks",
    "process_mark_message",
    "process_poison",
    "process_trade_message",
    "run",
]

T = TypeVar("T")
_runner = asyncio.Runner()
atexit.register(_runner.close)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on the session's event loop."""
    return _runner.run(coro)


def process_trade_message(raw: bytes, deps: service.Deps, **kwargs: Any) -> service.Outcome:
    return run(service.process_trade_message(raw, deps, **kwargs))


def process_mark_message(raw: bytes, deps: service.Deps, **kwargs: Any) -> list[service.Outcome]:
    return run(service.process_mark_message(raw, deps, **kwargs))


def process_poison(raw: bytes, deps: service.Deps, source_queue: str) -> service.Outcome:
    return run(service.process_poison(raw, deps, source_queue))


def check_stale_marks(deps: service.Deps) -> list[service.Outcome]:
    return run(service.check_stale_marks(deps))


def trade(msg: entrypoints.QueueMessageLike) -> None:
    run(entrypoints.trade(msg))


def mark(msg: entrypoints.QueueMessageLike) -> None:
    run(entrypoints.mark(msg))


def poison(msg: entrypoints.QueueMessageLike, source: str) -> None:
    run(entrypoints.poison(msg, source))
