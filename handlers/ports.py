"""The service's ports: what it needs from storage and from the alert queue (asyncio:
one client per process and event loop, see :mod:`handlers.bootstrap`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from handlers.core.contracts import Alert
from handlers.core.documents import AccountDoc

__all__ = ["AlertSink", "LedgerStore"]


class LedgerStore(Protocol):
    """Account documents, immutable records, marks and deadletters (Cosmos DB)."""

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

    async def write_account(self, document: Mapping[str, Any], etag: str | None) -> str | None:
        """Create (``etag`` None) or replace-if-unchanged the account document; returns the
        new ETag (None when the store does not say).

        Raises:
            StaleAccountState: another writer got there first (412 / 409).
            TransientStoreError: the store is unavailable.
        """
        ...

    async def read_record(self, partition: str, record_id: str) -> Mapping[str, Any] | None:
        """A record by id in its partition, or None.

        Raises:
            TransientStoreError: the store is unavailable.
        """
        ...

    async def create_record(self, record: Mapping[str, Any]) -> bool:
        """Create an immutable record; False when one with that id already exists.

        Raises:
            TransientStoreError: the store is unavailable.
        """
        ...

    async def read_mark(self, symbol: str) -> Mapping[str, Any] | None:
        """The latest stored mark document of ``symbol``, or None.

        Raises:
            TransientStoreError: the store is unavailable.
        """
        ...

    async def write_mark(self, document: Mapping[str, Any], etag: str | None) -> None:
        """Create or replace-if-unchanged a mark document.

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

    async def index_holder(self, symbol: str, account_id: str) -> Mapping[str, Any] | None:
        """Put ``account_id`` into the index of ``symbol`` (idempotent; changes its etag),
        then read the symbol's stored mark, in that order and in one request: the mark
        document as stored once the entry was written, or None.

        Raises:
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

    async def read_deadletter(self, queue: str, deadletter_id: str) -> Mapping[str, Any] | None:
        """A deadletter by id in its queue partition, or None.

        Raises:
            TransientStoreError: the store is unavailable.
        """
        ...

    async def record_deadletter(self, document: Mapping[str, Any]) -> bool:
        """Create the deadletter, or increment ``count`` of an existing one (same id and
        queue); True when it was created (first time).

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
