"""The shapes of every document the app writes, as typed values (no JSON, no SDK).

The Cosmos adapter maps them to and from JSON documents
(:mod:`handlers.adapters.mapping`); the flows build and read only these.

- :class:`AccountDoc` — the account document: ledger, recent event ids and the outbox
  entries (:class:`Entry`) of effects committed with it but maybe not finished.
- Records, immutable, in the account's partition of ``ledger``: :class:`EventRecord`
  (``trade`` / ``transfer``), :class:`RejectionRecord`, :class:`RevaluationRecord`.
- :class:`MarkDoc` (``@mark`` of a symbol), :class:`StaleWatch` (``@stale``),
  :class:`MarkPass` (a mark message's pass, for its fan-out units), :class:`DeadLetter`
  and :class:`FailureNote`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from handlers.core.contracts import Alert, OrderDecision
from handlers.core.orders import OpenOrder
from handlers.core.state import Ledger

__all__ = [
    "ACCOUNT_ID",
    "MAX_RECENT_IDS",
    "STORED_DIGITS",
    "UNATTRIBUTED",
    "AccountDoc",
    "DeadLetter",
    "Entry",
    "EventRecord",
    "FailureNote",
    "HolderEntry",
    "MarkDoc",
    "MarkPass",
    "OrderEventRecord",
    "OrderRecord",
    "PassMark",
    "PassSent",
    "Record",
    "RejectionRecord",
    "RevaluationRecord",
    "SentMarker",
    "StaleWatch",
    "sent_marker_id",
]

ACCOUNT_ID = "@account"
UNATTRIBUTED = "_unattributed"
MAX_RECENT_IDS = 1000
#: Significant digits accepted when reading back decimals the app wrote: values are written
#: without exponent, so an accepted "1e999" (or a product of two) comes back with ~2,000
#: digits; messages are held to the contract's 40.
STORED_DIGITS = 4096


# --- records (immutable; their existence means "the alerts were sent") ----------------


@dataclass(frozen=True)
class EventRecord:
    """A ``trade`` (FILL) or ``transfer`` (TRANSFER) record: the event as it arrived, in
    its wire form (``event``, JSON values, without ``type``), and the alerts it raised."""

    id: str
    account_id: str
    kind: Literal["trade", "transfer"]
    event_type: Literal["FILL", "TRANSFER"]
    event: Mapping[str, Any]
    alerts: tuple[Alert, ...]
    created_at: datetime


@dataclass(frozen=True)
class RejectionRecord:
    """A ``rejection`` record (id ``rejection:<sourceId>``); partition the accountId when
    the body carries a well-formed one, else ``_unattributed``."""

    source_id: str
    account_id: str
    queue: str
    body_digest: str
    body_excerpt: str
    reasons: tuple[tuple[str, str], ...]
    alerts: tuple[Alert, ...]
    created_at: datetime

    @property
    def id(self) -> str:
        return f"rejection:{self.source_id}"


@dataclass(frozen=True)
class RevaluationRecord:
    """A ``revaluation`` record (id ``@<source>``): the alerts marks raised on one account
    in one write; ``marks`` maps each symbol applied to its mark's timestamp."""

    source: str
    account_id: str
    marks: Mapping[str, datetime]
    alerts: tuple[Alert, ...]
    created_at: datetime

    @property
    def id(self) -> str:
        return f"@{self.source}"


@dataclass(frozen=True)
class OrderRecord:
    """An ``order`` record (id ``@order:<orderId>``, the account's partition): the decision
    sent for the order (its content is what every redelivery sends again), with the
    alerts it raised (a TRADE_REJECTED for a broken ORDER)."""

    order_id: str
    account_id: str
    decision: OrderDecision
    alerts: tuple[Alert, ...]
    created_at: datetime

    @property
    def id(self) -> str:
        return f"@order:{self.order_id}"


@dataclass(frozen=True)
class OrderEventRecord:
    """The record of an ``ORDER_DONE`` (id ``@order-done:<orderId>``) or an
    ``ACCOUNT_CONTROL`` (id ``@control:<controlId>``): the message as it arrived (its wire
    form, without ``type``) and the alerts it raised."""

    id: str
    account_id: str
    kind: Literal["orderDone", "control"]
    event: Mapping[str, Any]
    alerts: tuple[Alert, ...]
    created_at: datetime


Record = EventRecord | RejectionRecord | RevaluationRecord | OrderRecord | OrderEventRecord


@dataclass(frozen=True)
class SentMarker:
    """The "done" of a claim (:func:`handlers.flows.outbox.claim`): the alerts of the record
    ``record_id`` were sent (id ``@sent:<record_id>``, in the record's partition)."""

    record_id: str
    account_id: str
    at: datetime

    @property
    def id(self) -> str:
        return sent_marker_id(self.record_id)


@dataclass(frozen=True)
class PassSent:
    """The "done" of a mark pass's invocation (id ``@sent:<key>:<chunk>``, partition
    ``@<key>`` of ``ledger``, where ``key`` is the pass key ``marks:<digest>``): the alerts
    of the entries it committed on ``accounts`` under ``chunk`` were all sent. One per
    invocation instead of one record per account; immutable, like a record."""

    key: str
    chunk: str
    accounts: tuple[str, ...]
    at: datetime

    @property
    def id(self) -> str:
        return sent_marker_id(f"{self.key}:{self.chunk}")

    @property
    def partition(self) -> str:
        return f"@{self.key}"


def sent_marker_id(record_id: str) -> str:
    """The id of the marker that says a claimed record's alerts were sent."""
    return f"@sent:{record_id}"


# --- the outbox entry -----------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """An effect committed in the same conditional write as the state it follows from, not
    yet known to be finished (see :mod:`handlers.flows.outbox`).

    ``key`` is unique on its document; ``source`` names the message that owns it (an
    event id, ``marks:<digest>``, ``deadletter``…); ``holders`` are symbols to index
    before the alerts go out. With a ``record`` (or, for an event that raised no alert,
    only its ``record_id``: the record is rebuilt from the message), the entry is finished
    once the record exists; without either (deadletters, stale marks), once a write
    removes it.
    """

    key: str
    source: str
    alerts: tuple[Alert, ...]
    committed_at: datetime
    record: Record | None = None
    holders: tuple[str, ...] = ()
    #: The id of the record that finishes it when the entry does not carry the record
    #: (an event that raised no alert: its own message rebuilds the record; a mark pass's
    #: entry: its invocation's :class:`PassSent`, or a sent marker of the same id in the
    #: account's partition when someone else finished it).
    record_id: str | None = None
    #: Where the invocation's :class:`PassSent` lives (a mark pass's entry), else None.
    done_in: str | None = None

    @property
    def done_id(self) -> str | None:
        """The id of the record whose existence means this entry is done, if any."""
        return self.record.id if self.record is not None else self.record_id


# --- the account ----------------------------------------------------------------------


@dataclass(frozen=True)
class AccountDoc:
    """The account document as the app holds it between read and conditional write."""

    account_id: str
    ledger: Ledger = field(default_factory=Ledger)
    recent_ids: tuple[str, ...] = ()
    pending: tuple[Entry, ...] = ()
    evicted: bool = False
    version: int = 0
    etag: str | None = None
    updated_at: datetime | None = None
    #: The risk band of each open symbol (:mod:`handlers.core.bands`), and the account
    #: version that set them: their index entries are ``holder:<accountId>:<bands_version>``.
    bands: Mapping[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    bands_version: int = 0
    #: v2 orders: ACTIVE | REDUCING | HALTED, and the ``occurredAt`` of the control that
    #: set it (an older control changes nothing).
    trading_state: str = "ACTIVE"
    trading_state_at: datetime | None = None
    #: Approved orders not yet done, with the margin each reserves.
    open_orders: tuple[OpenOrder, ...] = ()
    #: The ``submittedAt`` of the account's latest decided orders (either way), newest
    #: last, at most :data:`MAX_RECENT_IDS`: what ``RATE_LIMITED`` counts.
    order_times: tuple[datetime, ...] = ()

    def entry(self, key: str) -> Entry | None:
        for item in self.pending:
            if item.key == key:
                return item
        return None

    def entries_of(self, source: str) -> tuple[Entry, ...]:
        return tuple(e for e in self.pending if e.source == source)

    def with_event(self, event_id: str, entry: Entry | None) -> AccountDoc:
        """Add an event id to the recent ids (and its entry), trimming the oldest ids that
        have no entry (their records exist)."""
        ids = [*self.recent_ids, event_id]
        pending = self.pending + ((entry,) if entry is not None else ())
        keep = {e.key for e in pending}
        evicted = self.evicted
        while len(ids) > MAX_RECENT_IDS:
            for i, old in enumerate(ids):
                if old not in keep:
                    del ids[i]
                    evicted = True
                    break
            else:
                break
        return replace(self, recent_ids=tuple(ids), pending=pending, evicted=evicted)

    def with_entry(self, entry: Entry) -> AccountDoc:
        """Add an entry that is no event (a mark re-valuation's alerts)."""
        return replace(self, pending=(*self.pending, entry))

    def without(self, keys: set[str]) -> AccountDoc:
        return replace(self, pending=tuple(e for e in self.pending if e.key not in keys))


# --- marks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MarkDoc:
    """The latest stored mark of a symbol (``@mark`` in the symbol's partition of
    ``marks``), stored before its pass over the holders begins."""

    symbol: str
    mark_id: str
    price: Decimal
    timestamp: datetime
    updated_at: datetime
    etag: str | None = None
    #: The most holder-index shards any writer has used for the symbol (a pass queries
    #: them all, so a smaller ``MARKS_INDEX_SHARDS`` later misses no entry).
    shards: int = 1
    #: Read from documents of earlier versions only (the stale mark they alerted for);
    #: the watch document (:class:`StaleWatch`) keeps it now.
    stale_alerted: str | None = None


@dataclass(frozen=True)
class HolderEntry:
    """One account in the holder index of a symbol (``marks``, partition ``<symbol>`` for
    shard 0, ``<symbol>~<shard>`` for the others): its risk band on the symbol as of the
    account version ``version``. ``band`` and ``version`` are None for an entry written
    before bands existed (it is visited by every mark)."""

    symbol: str
    shard: int
    account_id: str
    band: tuple[Decimal, Decimal] | None
    version: int | None
    etag: str | None = None

    @property
    def entry_id(self) -> str:
        if self.version is None:
            return f"holder:{self.account_id}"
        return f"holder:{self.account_id}:{self.version}"


@dataclass(frozen=True)
class StaleWatch:
    """The stale-mark watch of a symbol (``@stale`` in its partition of ``marks``):
    ``alerted`` names the stale mark (``<symbol>@none`` without one) a STALE_MARK alert
    was decided for; ``pending`` holds that alert until it is sent."""

    symbol: str
    alerted: str
    pending: tuple[Entry, ...] = ()
    etag: str | None = None


@dataclass(frozen=True)
class PassMark:
    """One mark of a pass, in the order it applies."""

    symbol: str
    price: Decimal
    timestamp: datetime
    mark_id: str


@dataclass(frozen=True)
class MarkPass:
    """A mark message's pass over the holders, kept for its fan-out units (id the body's
    digest): the marks it applies, the symbols whose holders it visits, and (for the
    deadletter of an account it cannot read) the body's first 8 KiB."""

    body_digest: str
    marks: tuple[PassMark, ...]
    symbols: tuple[str, ...]
    raw_body: str
    created_at: datetime
    #: The stored mark of each of its symbols before the message stored its own: what an
    #: account is valued at on a symbol whose entries of this message come later.
    prior: tuple[PassMark, ...] = ()


# --- deadletters ----------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """A body the app gave up on (id the digest, or ``<digest>:<accountId>`` for an account
    a mark skipped; partition the source queue). ``pending`` holds its POISON_MESSAGE
    alert until sent."""

    id: str
    queue: str
    raw_body: str
    body_digest: str
    account_id: str | None
    source_id: str
    count: int
    first_seen: datetime
    last_seen: datetime
    last_error: str | None = None
    pending: tuple[Entry, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    etag: str | None = None


@dataclass(frozen=True)
class FailureNote:
    """The last error an invocation met on a body (id ``failure:<digest>``, partition the
    source queue), for the ``lastError`` of its deadletter whichever instance poisons it."""

    queue: str
    body_digest: str
    error: str
    at: datetime
