"""The one retry policy for conditional writes that lose a race (412 / 409).

Every flow that reads a document, decides, and writes it back conditionally runs its
attempt through :func:`until_written`: a lost race re-reads and decides again, up to
:data:`MAX_WRITE_ATTEMPTS` times, waiting 10 ms doubling (capped at 0.5 s) with ±50 %
jitter between attempts; then the invocation fails and the host retries the message.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from handlers.errors import StaleAccountState

__all__ = ["MAX_WRITE_ATTEMPTS", "backoff", "until_written"]

logger = logging.getLogger(__name__)

MAX_WRITE_ATTEMPTS = 12
T = TypeVar("T")


def backoff(attempt: int) -> float:
    """Seconds to wait after the ``attempt``-th lost race (0-based)."""
    return min(0.5, 0.01 * 2.0**attempt) * random.uniform(0.5, 1.5)  # noqa: S311


async def until_written(
    attempt: Callable[[int], Awaitable[T]],
    sleep: Callable[[float], Awaitable[None]],
    what: str,
) -> T:
    """Run ``attempt(n)`` (n = 0, 1, …) until it returns; :class:`StaleAccountState` from
    it means the race was lost. Attempt 0 may decide on a process's cached copy; later
    ones should read afresh.

    Raises:
        StaleAccountState: every attempt lost its race.
    """
    for n in range(MAX_WRITE_ATTEMPTS):
        try:
            return await attempt(n)
        except StaleAccountState as exc:
            delay = backoff(n)
            logger.info(
                "etag conflict on %s (attempt %d): %s; retrying in %.0f ms",
                what,
                n + 1,
                exc,
                delay * 1000,
            )
            await sleep(delay)
    raise StaleAccountState(f"{what}: {MAX_WRITE_ATTEMPTS} conflicting writes in a row")
