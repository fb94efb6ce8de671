"""The flows' ports: what they need from storage and from queues (asyncio: one client per
process and event loop, see :mod:`handlers.bootstrap`). They speak typed documents
(:mod:`handlers.core.documents`); the adapters map them to JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from handlers.core.contracts import Alert
from handlers.core.documents import (
    AccountDoc,
    DeadLetter,
    FailureNote,
    MarkDoc,
    MarkPass,
    Record,
    StaleWatch,
)
from handlers.core.valuation import Valuation

__all__ = ["AlertSink", "LedgerStore", "MessageSink"]


class LedgerStore(Protocol):
    """Account documents, immutable records, marks, mark passes and deadletters."""

    async def read_account(self, account_id: str, *, fresh: bool = True) -> AccountDoc | None:
        """The account, or None when it has no document. ``fresh=False`` allows a copy
        this process cached (what it last read or wrote): only for a caller that then
        writes conditionally, so a stale copy costs a 412 and a fresh read, never a lost
        update.

        Raises:
            UnreadableDocument: the stored document cannot be read (never overwritten).
            TransientStoreError: the store is unavailable.
        """
        ...

    async def write_account(
        self, account: AccountDoc, valuation: Valuation, etag: str | None
    ) -> str | None:
        """Create (``etag`` None) or replace-if-unchanged the account document (its figures
        from ``valuation``, as of ``account.updated_at``); returns the new ETag (None when
        the store does not say).

        Raises:
            StaleAccountState: another writer got there first (412 / 409).
            TransientStoreError: the store is unavailable.
        """
        ...

    async def read_record(self, partition: str, record_id: str) -> Record | None:
        """A record by id in its partition, or None.

        Raises:
            UnreadableDocument: the record cannot be read.
            TransientStoreError: the store is unavailable.
        """
        ...

    async def existing_records(self, partition: str, record_ids: Sequence[str]) -> set[str]:
        """Which of ``record_ids`` exist in the partition (one query).

        Raises:
            TransientStoreError: the store is unavailable.
        """
        ...

    async def create_record(self, record: Record) -> bool:
        """Create an immutable record; False when one with that id already exists.

        Raises:
            TransientStoreError: the store is unavailable.
        """
        ...

    async def read_mark(self, symbol: str) -> MarkDoc | None:
        """The latest stored mark of ``symbol``, or None.

        Raises:
            UnreadableDocument: the mark document cannot be read.
            TransientStoreError: the store is unavailable.
        """
        ...

    async def write_mark(self, mark: MarkDoc, etag: str | None) -> str | None:
        """Create (``etag`` None) or replace-if-unchanged a mark document; the new ETag.

        Raises:
            StaleAccountState: a concurrent writer changed it.
            TransientStoreError: the store is unavailable.
        """
        ...

    async def list_holders(self, symbol: str) -> list[tuple[str, str]]:
        """The index of accounts holding ``symbol``: (accountId, etag) pairs (one query in
        the symbol's partition).

        Raises:
            TransientStoreError: the store is unavailable.
        """
        ...

    async def index_holder(self, symbol: str, account_id: str) -> MarkDoc | None:
        """Put ``account_id`` into the index of ``symbol`` (idempotent; changes its etag),
        then read the symbol's stored mark, in that order and in one request: the mark as
        stored once the entry was written, or None.

        Raises:
            UnreadableDocument: the mark document cannot be read.
            TransientStoreError: the store is unavailable.
        """
        ...

    async def delete_holder(self, symbol: str, account_id: str, etag: str) -> bool:
        """Remove an index entry if it is unchanged since ``etag``; False when it changed
        or is gone.

        Raises:
            TransientStoreError: the store is unavailable.
        """
        ...

    async def read_watch(self, symbol: str) -> StaleWatch | None:
        """The stale-mark watch of ``symbol``, or None.

        Raises:
            UnreadableDocument: the watch document cannot be read.
            TransientStoreError: the store is unavailable.
        """
        ...

    async def write_watch(self, watch: StaleWatch, etag: str | None) -> str | None:
        """Create (``etag`` None) or replace-if-unchanged the watch; the new ETag.

        Raises:
            StaleAccountState: it exists (create) or changed (replace).
            TransientStoreError: the store is unavailable.
        """
        ...

    async def save_pass(self, mark_pass: MarkPass) -> None:
        """Store a mark message's pass (idempotent upsert) for its fan-out units.

        Raises:
            TransientStoreError: the store is unavailable.
        """
        ...

    async def read_pass(self, body_digest: str) -> MarkPass | None:
        """A mark message's pass, or None.

        Raises:
            UnreadableDocument: the pass document cannot be read.
            TransientStoreError: the store is unavailable.
        """
        ...

    async def read_deadletter(self, queue: str, deadletter_id: str) -> DeadLetter | None:
        """A deadletter by id in its queue partition, or None.

        Raises:
            UnreadableDocument: the deadletter cannot be read.
            TransientStoreError: the store is unavailable.
        """
        ...

    async def write_deadletter(self, letter: DeadLetter, etag: str | None) -> str | None:
        """Create (``etag`` None) or replace-if-unchanged a deadletter; the new ETag.

        Raises:
            StaleAccountState: it exists (create) or changed (replace).
            TransientStoreError: the store is unavailable.
        """
        ...

    async def note_failure(self, note: FailureNote) -> None:
        """Keep the last error of a body (upsert).

        Raises:
            TransientStoreError: the store is unavailable.
        """
        ...

    async def read_failure(self, queue: str, body_digest: str) -> str | None:
        """The last error noted for a body of ``queue``, or None.

        Raises:
            TransientStoreError: the store is unavailable.
        """
        ...


class AlertSink(Protocol):
    """The alerts queue."""

    async def send(self, alerts: Sequence[Alert]) -> None:
        """Send each alert as one message (base64 of its JSON).

        Raises:
            Exception: the queue could not be written; the caller lets it propagate.
        """
        ...


class MessageSink(Protocol):
    """A queue of the app's own (the marks fan-out)."""

    async def send_texts(self, texts: Sequence[str]) -> None:
        """Send each text as one message (base64 of its UTF-8).

        Raises:
            Exception: the queue could not be written; the caller lets it propagate.
        """
        ...
