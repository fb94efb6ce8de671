"""In-memory fakes of the service's ports (handlers.ports) with Cosmos-like semantics.

- :class:`FakeStore` (async, like the real adapter) keeps JSON copies of every document (what Cosmos would hand back),
  stamps an ``_etag`` on account and mark documents and holder-index entries, refuses a
  create over an existing document (409 → StaleAccountState) and a replace with a stale
  ETag (412), creates records only once, deletes a holder entry only while its ETag is
  unchanged, and counts deadletter repeats.
- :class:`FakeSink` collects the alerts sent, and can be told to fail.
- :class:`FakeClock` is a settable clock whose ``sleep`` advances it (so wait loops end).
- :class:`FakeMessage` / :class:`FakeContext` stand for the functions' queue message and
  context; :class:`Capture` is a logging handler that keeps its records.
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from handlers.core.contracts import Alert
from handlers.core.documents import ACCOUNT_ID, AccountDoc, account_from_document
from handlers.errors import StaleAccountState

__all__ = [
    "Capture",
    "FakeClock",
    "FakeContext",
    "FakeMessage",
    "FakeSink",
    "FakeStore",
    "SinkDown",
    "StoreDown",
]


class SinkDown(RuntimeError):
    """The alerts queue could not be written (injected)."""


class StoreDown(RuntimeError):
    """The store failed a write (injected)."""


def _copy(document: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON round-trip: the document must be JSON, and no alias survives."""
    out = json.loads(json.dumps(document, allow_nan=False))
    assert isinstance(out, dict)
    return out


class FakeStore:
    """An in-memory :class:`handlers.ports.LedgerStore`."""

    def __init__(self) -> None:
        self.accounts: dict[str, dict[str, Any]] = {}
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.marks: dict[str, dict[str, Any]] = {}
        self.deadletters: dict[tuple[str, str], dict[str, Any]] = {}
        #: The holder index: symbol → {accountId: etag}.
        self.holders: dict[str, dict[str, str]] = {}
        self.account_writes = 0
        self.record_creates = 0
        #: Called with the document before each account write; may raise (inject faults).
        self.before_account_write: Callable[[Mapping[str, Any], str | None], Any] | None = None
        #: Raise StoreDown on the next N record creations (a crash after the state write).
        self.fail_record_creates = 0
        #: Copies handed to the next ``fresh=False`` reads (a process cache gone stale).
        self.stale_reads: list[AccountDoc] = []
        self._etags = itertools.count(1)

    def _etag(self) -> str:
        return f'"etag-{next(self._etags)}"'

    # -- accounts ----------------------------------------------------------------------

    async def read_account(self, account_id: str, *, fresh: bool = True) -> AccountDoc | None:
        if not fresh and self.stale_reads:
            stale = self.stale_reads.pop(0)
            if stale.account_id == account_id:
                return stale
        doc = self.accounts.get(account_id)
        return None if doc is None else account_from_document(_copy(doc))

    async def write_account(self, document: Mapping[str, Any], etag: str | None) -> str | None:
        if self.before_account_write is not None:
            hooked = self.before_account_write(document, etag)
            if inspect.isawaitable(hooked):
                await hooked
        assert document["id"] == ACCOUNT_ID
        account_id = str(document["accountId"])
        current = self.accounts.get(account_id)
        if etag is None:
            if current is not None:
                raise StaleAccountState(f"account {account_id} exists (409)")
        elif current is None or current["_etag"] != etag:
            raise StaleAccountState(f"account {account_id} changed (412)")
        stored = _copy(document)
        stored["_etag"] = self._etag()
        self.accounts[account_id] = stored
        self.account_writes += 1
        return str(stored["_etag"])

    def account(self, account_id: str) -> dict[str, Any]:
        """The stored account document (test helper)."""
        return self.accounts[account_id]

    # -- records -----------------------------------------------------------------------

    async def read_record(self, partition: str, record_id: str) -> Mapping[str, Any] | None:
        doc = self.records.get((partition, record_id))
        return None if doc is None else _copy(doc)

    async def create_record(self, record: Mapping[str, Any]) -> bool:
        if self.fail_record_creates > 0:
            self.fail_record_creates -= 1
            raise StoreDown("record write failed (injected)")
        key = (str(record["accountId"]), str(record["id"]))
        if key in self.records:
            return False
        self.records[key] = _copy(record)
        self.record_creates += 1
        return True

    # -- marks -------------------------------------------------------------------------

    async def read_mark(self, symbol: str) -> Mapping[str, Any] | None:
        doc = self.marks.get(symbol)
        return None if doc is None else _copy(doc)

    async def write_mark(self, document: Mapping[str, Any], etag: str | None) -> None:
        symbol = str(document["symbol"])
        current = self.marks.get(symbol)
        if etag is None:
            if current is not None:
                raise StaleAccountState(f"mark {symbol} exists (409)")
        elif current is None or current["_etag"] != etag:
            raise StaleAccountState(f"mark {symbol} changed (412)")
        stored = _copy(document)
        stored["_etag"] = self._etag()
        self.marks[symbol] = stored

    # -- holder index ------------------------------------------------------------------

    async def list_holders(self, symbol: str) -> list[tuple[str, str]]:
        return sorted(self.holders.get(symbol, {}).items())

    async def index_holder(self, symbol: str, account_id: str) -> Mapping[str, Any] | None:
        self.holders.setdefault(symbol, {})[account_id] = self._etag()
        return await self.read_mark(symbol)

    async def delete_holder(self, symbol: str, account_id: str, etag: str) -> bool:
        entries = self.holders.get(symbol, {})
        if entries.get(account_id) != etag:
            return False
        del entries[account_id]
        return True

    # -- deadletters -------------------------------------------------------------------

    async def read_deadletter(self, queue: str, deadletter_id: str) -> Mapping[str, Any] | None:
        doc = self.deadletters.get((queue, deadletter_id))
        return None if doc is None else _copy(doc)

    async def record_deadletter(self, document: Mapping[str, Any]) -> bool:
        key = (str(document["queue"]), str(document["id"]))
        current = self.deadletters.get(key)
        if current is None:
            self.deadletters[key] = _copy(document)
            return True
        current["count"] = int(current["count"]) + 1
        current["lastSeen"] = document["lastSeen"]
        if document.get("lastError"):
            current["lastError"] = document["lastError"]
        return False


class FakeSink:
    """An in-memory :class:`handlers.ports.AlertSink`."""

    def __init__(self) -> None:
        self.sent: list[Alert] = []
        #: Raise SinkDown on the next N sends (nothing of that call is sent).
        self.fail_sends = 0

    async def send(self, alerts: Sequence[Alert]) -> None:
        if self.fail_sends > 0:
            self.fail_sends -= 1
            raise SinkDown("alerts queue unavailable (injected)")
        for alert in alerts:
            # What the queue adapter writes must survive a JSON round-trip.
            self.sent.append(Alert.model_validate_json(alert.model_dump_json(), strict=False))

    def of_type(self, alert_type: str) -> list[Alert]:
        return [a for a in self.sent if a.type == alert_type]

    @property
    def ids(self) -> list[str]:
        return [a.alertId for a in self.sent]


class FakeClock:
    """A settable UTC clock; ``sleep`` advances it instead of waiting."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2024, 10, 1, 14, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)


@dataclass
class FakeMessage:
    """What the functions read of azure.functions.QueueMessage."""

    id: str | None
    dequeue_count: int | None
    body: bytes

    def get_body(self) -> bytes:
        return self.body


@dataclass
class FakeContext:
    """What the functions read of azure.functions.Context."""

    invocation_id: str


class Capture(logging.Handler):
    """Keeps every record it is handed (with its attributes)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
