"""Records (``trade``, ``transfer``, ``rejection``, ``revaluation``) and outbox entries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers.adapters.mapping.values import (
    SCHEMA_VERSION,
    alerts_json,
    read_alerts,
    ts,
)
from handlers.core.contracts import format_timestamp
from handlers.core.documents import (
    Entry,
    EventRecord,
    Record,
    RejectionRecord,
    RevaluationRecord,
)
from handlers.errors import UnreadableDocument

__all__ = [
    "entry_from_document",
    "entry_to_document",
    "read_entries",
    "record_from_document",
    "record_to_document",
]


def record_to_document(record: Record) -> dict[str, Any]:
    """The JSON document of a record."""
    common = {
        "alerts": alerts_json(record.alerts),
        "createdAt": format_timestamp(record.created_at),
    }
    if isinstance(record, EventRecord):
        return {
            **record.event,
            "id": record.id,
            "accountId": record.account_id,
            "type": record.kind,
            "eventType": record.event_type,
            "schemaVersion": SCHEMA_VERSION,
            **common,
        }
    if isinstance(record, RejectionRecord):
        return {
            "id": record.id,
            "accountId": record.account_id,
            "type": "rejection",
            "schemaVersion": SCHEMA_VERSION,
            "sourceId": record.source_id,
            "queue": record.queue,
            "bodyDigest": record.body_digest,
            "bodyExcerpt": record.body_excerpt,
            "reasons": [{"code": c, "message": m} for c, m in record.reasons],
            **common,
        }
    return {
        "id": record.id,
        "accountId": record.account_id,
        "type": "revaluation",
        "schemaVersion": SCHEMA_VERSION,
        "source": record.source,
        "marks": {s: format_timestamp(t) for s, t in record.marks.items()},
        **common,
    }


_EVENT_META = frozenset(
    ("id", "accountId", "type", "eventType", "schemaVersion", "alerts", "createdAt")
)


def record_from_document(doc: Mapping[str, Any]) -> Record:
    """Read a stored record.

    Raises:
        UnreadableDocument: an unknown type or version, or a wrong shape.
    """
    kind = doc.get("type")
    if doc.get("schemaVersion") != SCHEMA_VERSION:
        raise UnreadableDocument(f"record of version {doc.get('schemaVersion')!r}")
    try:
        created = ts(doc["createdAt"], "createdAt")
        alerts = read_alerts(doc["alerts"])
        account = str(doc["accountId"])
        if kind in ("trade", "transfer"):
            event_type = doc["eventType"]
            if event_type not in ("FILL", "TRANSFER"):
                raise UnreadableDocument(f"record eventType {event_type!r}")
            return EventRecord(
                id=str(doc["id"]),
                account_id=account,
                kind=kind,
                event_type=event_type,
                event={k: v for k, v in doc.items() if k not in _EVENT_META and k[:1] != "_"},
                alerts=alerts,
                created_at=created,
            )
        if kind == "rejection":
            return RejectionRecord(
                source_id=str(doc["sourceId"]),
                account_id=account,
                queue=str(doc.get("queue", "")),
                body_digest=str(doc["bodyDigest"]),
                body_excerpt=str(doc.get("bodyExcerpt", "")),
                reasons=tuple((str(r["code"]), str(r["message"])) for r in doc["reasons"]),
                alerts=alerts,
                created_at=created,
            )
        if kind == "revaluation":
            return RevaluationRecord(
                source=str(doc["source"]),
                account_id=account,
                marks={str(s): ts(t, "marks") for s, t in dict(doc["marks"]).items()},
                alerts=alerts,
                created_at=created,
            )
    except UnreadableDocument:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnreadableDocument(f"{kind} record has a wrong shape: {exc!r}") from exc
    raise UnreadableDocument(f"record of type {kind!r}")


# --- outbox entries ---------------------------------------------------------------------


def entry_to_document(entry: Entry) -> dict[str, Any]:
    if entry.record is not None:  # an account's entry: its record carries alerts and time
        out: dict[str, Any] = {
            "eventId": entry.key,
            "source": entry.source,
            "record": record_to_document(entry.record),
            "holders": list(entry.holders),
        }
        return out
    return {
        "key": entry.key,
        "source": entry.source,
        "alerts": alerts_json(entry.alerts),
        "committedAt": format_timestamp(entry.committed_at),
    }


def entry_from_document(doc: Mapping[str, Any]) -> Entry:
    if "record" in doc:
        record = record_from_document(doc["record"])
        key = str(doc["eventId"])
        return Entry(
            key=key,
            source=str(doc.get("source", key)),  # documents before 'source' was kept
            alerts=record.alerts,
            committed_at=record.created_at,
            record=record,
            holders=tuple(str(h) for h in doc.get("holders", ())),
        )
    return Entry(
        key=str(doc["key"]),
        source=str(doc["source"]),
        alerts=read_alerts(doc["alerts"]),
        committed_at=ts(doc["committedAt"], "committedAt"),
    )


def read_entries(raw: object) -> tuple[Entry, ...]:
    if not isinstance(raw, list):
        raise UnreadableDocument("pending must be a list")
    return tuple(entry_from_document(e) for e in raw)
