"""The flows' ports: what they need from storage and from queues (asyncio: one client per
process and event loop, see :mod:`handlers.bootstrap`). They speak typed documents
(:mod:`handlers.core.documents`); the adapters map them to JSON."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Protocol

from handlers.core import documents as doc
from handlers.core.contracts import Alert, OrderDecision
from handlers.core.valuation import Valuation

__all__ = ["AlertSink", "DecisionSink", "LedgerStore", "MessageSink"]


class LedgerStore(Protocol):
    """Account documents, immutable records, marks, mark passes and deadletters.

    Every method raises :class:`~handlers.errors.TransientStoreError` when the store is
    unavailable, and a read raises :class:`~handlers.errors.UnreadableDocument` for a
    stored document the app cannot read (such a document is never overwritten). A
    ``write_*`` creates when ``etag`` is None and otherwise replaces only while the stored
    ETag is unchanged, returning the new ETag; it raises
    :class:`~handlers.errors.StaleAccountState` when the document exists (create) or
    changed (replace).
    """

    async def read_account(self, account_id: str, *, fresh: bool = True) -> doc.AccountDoc | None:
        """The account, or None when it has no document. ``fresh=False`` allows a copy
        this process cached (what it last read or wrote): only for a caller that then
        writes conditionally, so a stale copy costs a 412 and a fresh read, never a lost
        update.
        """
        ...

    async def write_account(
        self,
        account: doc.AccountDoc,
        valuation: Valuation,
        etag: str | None,
        record: doc.Record | None = None,
    ) -> str | None:
        """Create (``etag`` None) or replace-if-unchanged the account document (its figures
        from ``valuation``, as of ``account.updated_at``); returns the new ETag (None when
        the store does not say). With ``record`` (an event that raised no alert: nothing
        to send before it), the record is created in the same request, after the account;
        correctness never rests on the two being atomic.
        """
        ...

    async def read_record(self, partition: str, record_id: str) -> doc.Record | None:
        """A record by id in its partition, or None."""
        ...

    async def existing_records(self, partition: str, record_ids: Sequence[str]) -> set[str]:
        """Which of ``record_ids`` exist in the partition (one query)."""
        ...

    async def create_record(self, record: doc.Record | doc.SentMarker | doc.PassSent) -> bool:
        """Create an immutable record (or a sent marker: a claim's, a pass's); False when
        one with that id already exists."""
        ...

    async def read_pass_sent(self, partition: str, marker_id: str) -> doc.PassSent | None:
        """A pass's sent marker by id in its partition, or None."""
        ...

    async def read_mark(self, symbol: str) -> doc.MarkDoc | None:
        """The latest stored mark of ``symbol``, or None."""
        ...

    async def read_marks(self, symbols: Sequence[str]) -> dict[str, doc.MarkDoc]:
        """The latest stored mark of each of ``symbols`` that has one (one read-many
        request: a query per physical partition they span, one for a small container)."""
        ...

    async def write_mark(self, mark: doc.MarkDoc, etag: str | None) -> str | None:
        """Store a mark document (see ``write_*`` above)."""
        ...

    async def query_holders(
        self, symbol: str, shard: int, low: Decimal, high: Decimal
    ) -> list[doc.HolderEntry]:
        """The entries of one shard of ``symbol``'s holder index whose band does not hold
        both ``low`` and ``high`` (one query in the shard's partition). It may return a
        few whose band does (the caller checks exactly) and returns every entry without a
        band.
        """
        ...

    async def index_holders(
        self,
        symbol: str,
        shard: int,
        puts: Sequence[doc.HolderEntry],
        drops: Sequence[doc.HolderEntry],
        read: bool,
    ) -> doc.MarkDoc | None:
        """In one shard's partition of ``symbol``: upsert ``puts``, then delete ``drops``
        (each only while unchanged since its ETag, when it has one; gone is fine), then
        (``read``, shard 0) read the symbol's stored mark — in that order, in as few
        requests as the store allows (transactional batches, which need not be atomic).
        Returns the mark read, or None.
        """
        ...

    async def delete_holder(self, entry: doc.HolderEntry) -> bool:
        """Remove an index entry (only while unchanged since ``entry.etag``, when it has
        one); False when it changed or is gone.
        """
        ...

    async def read_watch(self, symbol: str) -> doc.StaleWatch | None:
        """The stale-mark watch of ``symbol``, or None."""
        ...

    async def write_watch(self, watch: doc.StaleWatch, etag: str | None) -> str | None:
        """Store the watch (see ``write_*`` above)."""
        ...

    async def save_pass(self, mark_pass: doc.MarkPass) -> None:
        """Store a mark message's pass (idempotent upsert) for its fan-out units."""
        ...

    async def read_pass(self, body_digest: str) -> doc.MarkPass | None:
        """A mark message's pass, or None."""
        ...

    async def read_deadletter(self, queue: str, deadletter_id: str) -> doc.DeadLetter | None:
        """A deadletter by id in its queue partition, or None."""
        ...

    async def write_deadletter(self, letter: doc.DeadLetter, etag: str | None) -> str | None:
        """Store a deadletter (see ``write_*`` above)."""
        ...

    async def note_failure(self, note: doc.FailureNote) -> None:
        """Keep the last error of a body (upsert)."""
        ...

    async def read_failure(self, queue: str, body_digest: str) -> str | None:
        """The last error noted for a body of ``queue``, or None."""
        ...


class AlertSink(Protocol):
    """The alerts queue. ``send`` raises whatever the queue client raises when it cannot
    write; callers let it propagate (the host retries, and a retry re-sends)."""

    async def send(self, alerts: Sequence[Alert]) -> None:
        """Send each alert as one message (base64 of its JSON)."""
        ...


class DecisionSink(Protocol):
    """The order-decisions queue; raises as :class:`AlertSink`."""

    async def send(self, decisions: Sequence[OrderDecision]) -> None:
        """Send each decision as one message (base64 of its JSON)."""
        ...


class MessageSink(Protocol):
    """A queue of the app's own (the marks fan-out); raises as :class:`AlertSink`."""

    async def send_texts(self, texts: Sequence[str]) -> None:
        """Send each text as one message (base64 of its UTF-8)."""
        ...
