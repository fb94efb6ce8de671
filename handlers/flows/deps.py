"""What every flow is given: the ports and configuration (:class:`Deps`), the process's
own state (:class:`Runtime`), and what a flow returns (:class:`Outcome`).

The runtime holds nothing correctness or the number of Cosmos requests depends on: the
account locks only keep one process from racing itself (the conditional write keeps other
processes out), and a mark copy is used only when ``MARK_CACHE_SECONDS`` allows it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from handlers.core.alerts import Thresholds
from handlers.core.catalog import Catalog
from handlers.core.contracts import Alert
from handlers.core.documents import MarkDoc
from handlers.ports import AlertSink, DecisionSink, LedgerStore, MessageSink
from handlers.settings import Settings

__all__ = ["AccountLocks", "Deps", "MarkCopies", "Outcome", "OutcomeKind", "Runtime"]

OutcomeKind = Literal[
    "APPLIED", "REJECTED", "DUPLICATE", "IGNORED", "STORED", "DEADLETTERED", "HANDED_ON"
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AccountLocks:
    """One holder per account at a time within this process (asyncio): events of one
    account wait for each other instead of losing ETag races to each other."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, account_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(account_id) or (asyncio.Lock(), 0)
        self._locks[account_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[account_id]
            if users == 1:
                del self._locks[account_id]
            else:
                self._locks[account_id] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class MarkCopies:
    """The stored mark of each symbol as this process last read or wrote it (None: no mark
    stored), and when. A copy never goes back in time: a mark older than the one kept (a
    slow read overtaken by a write) is not taken."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[MarkDoc | None, datetime]] = {}

    def get(self, symbol: str, now: datetime, max_age: float) -> tuple[MarkDoc | None] | None:
        """``(mark,)`` when the copy is at most ``max_age`` seconds old, else None."""
        found = self._items.get(symbol)
        if found is None or not 0 <= (now - found[1]).total_seconds() <= max_age:
            return None  # (a clock stepped back makes no copy fresh)
        return (found[0],)

    def put(self, symbol: str, mark: MarkDoc | None, at: datetime) -> None:
        kept = self._items.get(symbol)
        older = (
            kept is not None
            and kept[0] is not None
            and (mark is None or mark.timestamp < kept[0].timestamp)
        )
        if not older:
            self._items[symbol] = (mark, at)


@dataclass
class Runtime:
    """The process's own state (see the module docstring)."""

    account_locks: AccountLocks = field(default_factory=AccountLocks)
    marks: MarkCopies = field(default_factory=MarkCopies)
    #: Pass sent markers found (immutable once created: safe to keep), by id → the
    #: accounts they cover; bounded (:data:`handlers.flows.outbox.PASS_SENT_KEPT`).
    pass_sent: dict[str, frozenset[str]] = field(default_factory=dict)


class _NoDecisions:
    """A decisions sink for callers that decide no orders (tests of other flows)."""

    async def send(self, decisions: object) -> None:
        raise RuntimeError("this process has no order-decisions queue")


class _NoFanout:
    """A fan-out sink for callers that never hand marks on (tests with few holders)."""

    async def send_texts(self, texts: object) -> None:
        raise RuntimeError("this process has no marks fan-out queue")


@dataclass
class Deps:
    """What the flows need; built once per process by :mod:`handlers.bootstrap`."""

    settings: Settings
    catalog: Catalog
    store: LedgerStore
    sink: AlertSink
    fanout: MessageSink = field(default_factory=_NoFanout)
    clock: Callable[[], datetime] = _utcnow
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    runtime: Runtime = field(default_factory=Runtime)
    #: The order-decisions queue (the orders flow's second output).
    decisions: DecisionSink = field(default_factory=_NoDecisions)

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(
            margin_call_ratio=self.settings.margin_call_ratio,
            large_trade_notional=self.settings.large_trade_notional,
            position_limit_notional=self.settings.position_limit_notional,
        )


@dataclass(frozen=True)
class Outcome:
    """What happened to one message (or one MARKS entry)."""

    kind: OutcomeKind
    source_id: str
    account_id: str | None = None
    alerts: tuple[Alert, ...] = ()
    detail: str = ""
