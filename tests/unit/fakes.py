"""In-memory fakes of the flows' ports (handlers.ports) with Cosmos-like semantics.

- :class:`FakeStore` (async, like the real adapter) maps typed documents through the same
  mapping as the Cosmos adapter and keeps JSON copies of every document (what Cosmos would
  hand back), stamps an ``_etag`` on every mutable document and holder-index entry, refuses
  a create over an existing document (409 → StaleAccountState) and a replace with a stale
  ETag (412), creates records only once, and deletes a holder entry only while its ETag is
  unchanged.
- :class:`FakeSink` collects the alerts sent, and can be told to fail; :class:`FakeDecisions`
  does the same for order decisions.
- :class:`FakeClock` is a settable clock whose ``sleep`` advances it (so wait loops end).
- :class:`FakeMessage` / :class:`FakeContext` stand for the functions' queue message and
  context; :class:`Capture` is a logging handler that keeps its records.
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from handlers.adapters import mapping
from handlers.core.contracts import Alert, OrderDecision
from handlers.core.documents import (
    ACCOUNT_ID,
    AccountDoc,
    DeadLetter,
    FailureNote,
    HolderEntry,
    MarkDoc,
    MarkPass,
    PassSent,
    Record,
    SentMarker,
    StaleWatch,
)
from handlers.core.valuation import Valuation
from handlers.errors import StaleAccountState

__all__ = [
    "Capture",
    "CountingStore",
    "FakeClock",
    "FakeContext",
    "FakeDecisions",
    "FakeFanout",
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
        self.watches: dict[str, dict[str, Any]] = {}
        self.passes: dict[str, dict[str, Any]] = {}
        self.deadletters: dict[tuple[str, str], dict[str, Any]] = {}
        self.failures: dict[tuple[str, str], dict[str, Any]] = {}
        #: The holder index: partition → {entry id: document}.
        self.index: dict[str, dict[str, dict[str, Any]]] = {}
        self.account_writes = 0
        self.record_creates = 0
        self.record_queries = 0
        #: Called with the document before each account write; may raise (inject faults).
        self.before_account_write: Callable[[Mapping[str, Any], str | None], Any] | None = None
        #: Raise StoreDown on the next N record creations (a crash after the state write).
        self.fail_record_creates = 0
        #: Copies handed to the next ``fresh=False`` reads (a process cache gone stale).
        self.stale_reads: list[AccountDoc] = []
        self._etags = itertools.count(1)

    def _etag(self) -> str:
        return f'"etag-{next(self._etags)}"'

    def _put(
        self,
        table: dict[Any, dict[str, Any]],
        key: Any,
        document: Mapping[str, Any],
        etag: str | None,
    ) -> str:
        """Create (no ETag) or replace-if-unchanged, as Cosmos does."""
        current = table.get(key)
        if etag is None:
            if current is not None:
                raise StaleAccountState(f"{key} exists (409)")
        elif current is None or current["_etag"] != etag:
            raise StaleAccountState(f"{key} changed (412)")
        stored = _copy(document)
        stored["_etag"] = self._etag()
        table[key] = stored
        return str(stored["_etag"])

    # -- accounts ----------------------------------------------------------------------

    async def read_account(self, account_id: str, *, fresh: bool = True) -> AccountDoc | None:
        if not fresh and self.stale_reads:
            stale = self.stale_reads.pop(0)
            if stale.account_id == account_id:
                return stale
        doc = self.accounts.get(account_id)
        return None if doc is None else mapping.account_from_document(_copy(doc))

    async def write_account(
        self,
        account: AccountDoc,
        valuation: Valuation,
        etag: str | None,
        record: Record | None = None,
    ) -> str | None:
        document = mapping.account_to_document(account, valuation)
        if self.before_account_write is not None:
            hooked = self.before_account_write(document, etag)
            if inspect.isawaitable(hooked):
                await hooked
        assert document["id"] == ACCOUNT_ID
        written = self._put(self.accounts, str(document["accountId"]), document, etag)
        self.account_writes += 1
        if record is not None:  # (as the stand-in: the account stays if this fails)
            await self.create_record(record)
        return written

    def account(self, account_id: str) -> dict[str, Any]:
        """The stored account document (test helper)."""
        return self.accounts[account_id]

    # -- records -----------------------------------------------------------------------

    async def read_record(self, partition: str, record_id: str) -> Record | None:
        doc = self.records.get((partition, record_id))
        return None if doc is None else mapping.record_from_document(_copy(doc))

    async def existing_records(self, partition: str, record_ids: Sequence[str]) -> set[str]:
        self.record_queries += 1
        return {r for r in record_ids if (partition, r) in self.records}

    async def read_pass_sent(self, partition: str, marker_id: str) -> PassSent | None:
        doc = self.records.get((partition, marker_id))
        return None if doc is None else mapping.pass_sent_from_document(_copy(doc))

    async def create_record(self, record: Record | SentMarker | PassSent) -> bool:
        if self.fail_record_creates > 0:
            self.fail_record_creates -= 1
            raise StoreDown("record write failed (injected)")
        document = mapping.record_to_document(record)
        key = (str(document["accountId"]), str(document["id"]))
        if key in self.records:
            return False
        self.records[key] = _copy(document)
        self.record_creates += 1
        return True

    # -- marks -------------------------------------------------------------------------

    async def read_mark(self, symbol: str) -> MarkDoc | None:
        doc = self.marks.get(symbol)
        return None if doc is None else mapping.mark_from_document(_copy(doc))

    async def read_marks(self, symbols: Sequence[str]) -> dict[str, MarkDoc]:
        found = [await self.read_mark(s) for s in symbols]
        return {m.symbol: m for m in found if m is not None}

    async def write_mark(self, mark: MarkDoc, etag: str | None) -> str | None:
        return self._put(self.marks, mark.symbol, mapping.mark_to_document(mark), etag)

    async def read_watch(self, symbol: str) -> StaleWatch | None:
        doc = self.watches.get(symbol)
        return None if doc is None else mapping.watch_from_document(_copy(doc))

    async def write_watch(self, watch: StaleWatch, etag: str | None) -> str | None:
        return self._put(self.watches, watch.symbol, mapping.watch_to_document(watch), etag)

    async def save_pass(self, mark_pass: MarkPass) -> None:
        self.passes[mark_pass.body_digest] = _copy(mapping.pass_to_document(mark_pass))

    async def read_pass(self, body_digest: str) -> MarkPass | None:
        doc = self.passes.get(body_digest)
        return None if doc is None else mapping.pass_from_document(_copy(doc))

    # -- holder index ------------------------------------------------------------------

    @property
    def holders(self) -> dict[str, dict[str, str]]:
        """The index as symbol → {accountId: etag} (every shard, every version)."""
        out: dict[str, dict[str, str]] = {}
        for entries in self.index.values():
            for doc in entries.values():
                symbol = str(doc.get("market", doc["symbol"]))
                out.setdefault(symbol, {})[str(doc["accountId"])] = str(doc["_etag"])
        return {k: v for k, v in out.items() if v}

    def legacy_holder(self, symbol: str, account_id: str) -> None:
        """An index entry as written before bands (shard 0, no band)."""
        doc = {"id": f"holder:{account_id}", "symbol": symbol, "accountId": account_id}
        self.index.setdefault(symbol, {})[doc["id"]] = {
            **doc,
            "type": "holder",
            "_etag": self._etag(),
        }

    async def query_holders(
        self, symbol: str, shard: int, low: Decimal, high: Decimal
    ) -> list[HolderEntry]:
        found = []
        for doc in self.index.get(mapping.holder_partition(symbol, shard), {}).values():
            if "lowF" not in doc or doc["lowF"] > float(low) or doc["highF"] < float(high):
                found.append(mapping.holder_from_document(_copy(doc), symbol, shard))
        return sorted(found, key=lambda e: (e.account_id, e.entry_id))

    async def index_holders(
        self,
        symbol: str,
        shard: int,
        puts: Sequence[HolderEntry],
        drops: Sequence[HolderEntry],
        read: bool,
    ) -> MarkDoc | None:
        partition = mapping.holder_partition(symbol, shard)
        for entry in puts:
            doc = mapping.holder_to_document(entry)
            self.index.setdefault(partition, {})[entry.entry_id] = {**doc, "_etag": self._etag()}
        for entry in drops:
            await self.delete_holder(entry)
        return await self.read_mark(symbol) if read and shard == 0 else None

    async def delete_holder(self, entry: HolderEntry) -> bool:
        entries = self.index.get(mapping.holder_partition(entry.symbol, entry.shard), {})
        doc = entries.get(entry.entry_id)
        if doc is None or (entry.etag is not None and doc["_etag"] != entry.etag):
            return False
        del entries[entry.entry_id]
        return True

    # -- deadletters -------------------------------------------------------------------

    async def read_deadletter(self, queue: str, deadletter_id: str) -> DeadLetter | None:
        doc = self.deadletters.get((queue, deadletter_id))
        return None if doc is None else mapping.deadletter_from_document(_copy(doc))

    async def write_deadletter(self, letter: DeadLetter, etag: str | None) -> str | None:
        document = mapping.deadletter_to_document(letter)
        return self._put(self.deadletters, (letter.queue, letter.id), document, etag)

    async def note_failure(self, note: FailureNote) -> None:
        self.failures[(note.queue, note.body_digest)] = mapping.failure_to_document(note)

    async def read_failure(self, queue: str, body_digest: str) -> str | None:
        doc = self.failures.get((queue, body_digest))
        return None if doc is None else str(doc["lastError"])


class CountingStore:
    """Wraps a store (a fake or the real Cosmos one) and counts every call by method name."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted

    def total(self) -> int:
        return sum(self.calls.values())


class FakeFanout:
    """An in-memory :class:`handlers.ports.MessageSink`: the texts sent, in order."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def send_texts(self, texts: Sequence[str]) -> None:
        self.texts.extend(texts)


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


class FakeDecisions:
    """An in-memory :class:`handlers.ports.DecisionSink`."""

    def __init__(self) -> None:
        self.sent: list[OrderDecision] = []
        #: Raise SinkDown on the next N sends (nothing of that call is sent).
        self.fail_sends = 0

    async def send(self, decisions: Sequence[OrderDecision]) -> None:
        if self.fail_sends > 0:
            self.fail_sends -= 1
            raise SinkDown("order-decisions queue unavailable (injected)")
        for decision in decisions:
            # What the queue adapter writes must survive a JSON round-trip.
            self.sent.append(
                OrderDecision.model_validate_json(decision.model_dump_json(), strict=False)
            )

    def of_order(self, order_id: str) -> list[OrderDecision]:
        return [d for d in self.sent if d.orderId == order_id]

    @property
    def ids(self) -> list[str]:
        return [d.decisionId for d in self.sent]


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
