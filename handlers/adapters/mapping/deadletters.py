"""The ``deadletters`` container's documents: deadletters and failure notes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers.adapters.mapping.records import entry_to_document, read_entries
from handlers.adapters.mapping.values import header, reading, ts
from handlers.core.contracts import format_timestamp
from handlers.core.documents import DeadLetter, FailureNote

__all__ = [
    "deadletter_from_document",
    "deadletter_to_document",
    "failure_to_document",
]

_DEADLETTER_KEYS = frozenset(
    (
        "id",
        "queue",
        "type",
        "schemaVersion",
        "rawBody",
        "bodyDigest",
        "accountId",
        "sourceId",
        "count",
        "firstSeen",
        "lastSeen",
        "lastError",
        "pending",
    )
)


def deadletter_to_document(letter: DeadLetter) -> dict[str, Any]:
    """The deadletter document (fields it does not know, e.g. replay stamps, kept)."""
    out: dict[str, Any] = {
        **letter.extra,
        **header(letter.id, "deadletter", queue=letter.queue),
        "rawBody": letter.raw_body,
        "bodyDigest": letter.body_digest,
        "accountId": letter.account_id,
        "sourceId": letter.source_id,
        "count": letter.count,
        "firstSeen": format_timestamp(letter.first_seen),
        "lastSeen": format_timestamp(letter.last_seen),
    }
    if letter.last_error:
        out["lastError"] = letter.last_error
    if letter.pending:
        out["pending"] = [entry_to_document(e) for e in letter.pending]
    return out


def deadletter_from_document(doc: Mapping[str, Any]) -> DeadLetter:
    """Read a stored deadletter (raises UnreadableDocument: another version or a wrong shape)."""
    with reading("deadletter document", doc, "deadletter"):
        return DeadLetter(
            id=str(doc["id"]),
            queue=str(doc["queue"]),
            raw_body=str(doc["rawBody"]),
            body_digest=str(doc["bodyDigest"]),
            account_id=None if doc.get("accountId") is None else str(doc["accountId"]),
            source_id=str(doc["sourceId"]),
            count=int(doc["count"]),
            first_seen=ts(doc["firstSeen"], "firstSeen"),
            last_seen=ts(doc["lastSeen"], "lastSeen"),
            last_error=None if doc.get("lastError") is None else str(doc["lastError"]),
            pending=read_entries(doc.get("pending", [])),
            extra={k: v for k, v in doc.items() if k not in _DEADLETTER_KEYS and k[:1] != "_"},
            etag=doc.get("_etag"),
        )


def failure_to_document(note: FailureNote) -> dict[str, Any]:
    """A failure note (partition the source queue, id ``failure:<digest>``)."""
    return {
        **header(f"failure:{note.body_digest}", "failure", queue=note.queue),
        "bodyDigest": note.body_digest,
        "lastError": note.error,
        "at": format_timestamp(note.at),
    }
