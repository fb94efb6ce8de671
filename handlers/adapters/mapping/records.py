"""Records (``trade``, ``transfer``, ``rejection``, ``revaluation``) and outbox entries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers.adapters.mapping.values import (
    SCHEMA_VERSION,
    alerts_json,
    header,
    read_alerts,
    reading,
    ts,
)
from handlers.core.contracts import OrderDecision, format_timestamp
from handlers.core.documents import (
    Entry,
    EventRecord,
    OrderEventRecord,
    OrderRecord,
    PassSent,
    Record,
    RejectionRecord,
    RevaluationRecord,
    SentMarker,
)
from handlers.errors import UnreadableDocument

__all__ = [
    "entry_from_document",
    "entry_to_document",
    "pass_sent_from_document",
    "read_entries",
    "record_from_document",
    "record_to_document",
]


def record_to_document(record: Record | SentMarker | PassSent) -> dict[str, Any]:
    """The JSON document of a record (or of a sent marker: a claim's, a pass's)."""
    if isinstance(record, PassSent):
        return {
            **header(record.id, "passSent", accountId=record.partition),
            "key": record.key,
            "chunk": record.chunk,
            "accounts": list(record.accounts),
            "at": format_timestamp(record.at),
        }
    if isinstance(record, SentMarker):
        at = format_timestamp(record.at)
        return {
            **header(record.id, "sentMarker", accountId=record.account_id),
            "recordId": record.record_id,
            "at": at,
        }
    common = {
        "alerts": alerts_json(record.alerts),
        "createdAt": format_timestamp(record.created_at),
    }
    if isinstance(record, EventRecord):
        return {
            **record.event,
            **header(record.id, record.kind, accountId=record.account_id),
            "eventType": record.event_type,
            **common,
        }
    if isinstance(record, OrderRecord):
        return {
            **header(record.id, "order", accountId=record.account_id),
            "orderId": record.order_id,
            "decision": record.decision.model_dump(mode="json"),
            **common,
        }
    if isinstance(record, OrderEventRecord):
        return {
            **record.event,
            **header(record.id, record.kind, accountId=record.account_id),
            **common,
        }
    if isinstance(record, RejectionRecord):
        return {
            **header(record.id, "rejection", accountId=record.account_id),
            "sourceId": record.source_id,
            "queue": record.queue,
            "bodyDigest": record.body_digest,
            "bodyExcerpt": record.body_excerpt,
            "reasons": [{"code": c, "message": m} for c, m in record.reasons],
            **common,
        }
    return {
        **header(record.id, "revaluation", accountId=record.account_id),
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
    with reading(f"{kind} record has a wrong shape"):
        common: dict[str, Any] = {  # what every record has
            "account_id": str(doc["accountId"]),
            "alerts": read_alerts(doc["alerts"]),
            "created_at": ts(doc["createdAt"], "createdAt"),
        }
        if kind in ("trade", "transfer"):
            event_type = doc["eventType"]
            if event_type not in ("FILL", "TRANSFER"):
                raise UnreadableDocument(f"record eventType {event_type!r}")
            return EventRecord(
                id=str(doc["id"]),
                kind=kind,
                event_type=event_type,
                event={k: v for k, v in doc.items() if k not in _EVENT_META and k[:1] != "_"},
                **common,
            )
        if kind == "rejection":
            return RejectionRecord(
                source_id=str(doc["sourceId"]),
                queue=str(doc.get("queue", "")),
                body_digest=str(doc["bodyDigest"]),
                body_excerpt=str(doc.get("bodyExcerpt", "")),
                reasons=tuple((str(r["code"]), str(r["message"])) for r in doc["reasons"]),
                **common,
            )
        if kind == "order":
            decision = OrderDecision.model_validate(doc["decision"], strict=False)
            return OrderRecord(order_id=str(doc["orderId"]), decision=decision, **common)
        if kind in ("orderDone", "control"):
            return OrderEventRecord(
                id=str(doc["id"]),
                kind=kind,
                event={k: v for k, v in doc.items() if k not in _EVENT_META and k[:1] != "_"},
                **common,
            )
        if kind == "revaluation":
            return RevaluationRecord(
                source=str(doc["source"]),
                marks={str(s): ts(t, "marks") for s, t in dict(doc["marks"]).items()},
                **common,
            )
    raise UnreadableDocument(f"record of type {kind!r}")


def pass_sent_from_document(doc: Mapping[str, Any]) -> PassSent:
    """Read a pass's sent marker.

    Raises:
        UnreadableDocument: another type or version, or a wrong shape.
    """
    if doc.get("type") != "passSent" or doc.get("schemaVersion") != SCHEMA_VERSION:
        raise UnreadableDocument(f"not a passSent marker: {doc.get('type')!r}")
    with reading("passSent marker has a wrong shape"):
        accounts = doc["accounts"]
        if not isinstance(accounts, list):
            raise UnreadableDocument("passSent accounts must be a list")
        return PassSent(
            str(doc["key"]), str(doc["chunk"]), tuple(str(a) for a in accounts), ts(doc["at"], "at")
        )


# --- outbox entries ---------------------------------------------------------------------


def entry_to_document(entry: Entry) -> dict[str, Any]:
    """An outbox entry as stored on its owner document."""
    if entry.record is not None:  # an account's entry: its record carries alerts and time
        return {
            "eventId": entry.key,
            "source": entry.source,
            "record": record_to_document(entry.record),
            "holders": list(entry.holders),
        }
    committed = format_timestamp(entry.committed_at)
    if entry.done_in is not None:  # a mark pass's: done by its invocation's sent marker
        return {
            "eventId": entry.key,
            "source": entry.source,
            "alerts": alerts_json(entry.alerts),
            "committedAt": committed,
            "doneId": entry.record_id,
            "doneIn": entry.done_in,
        }
    if entry.record_id is not None:  # an event that raised no alert: only its record's id
        return {
            "eventId": entry.key,
            "source": entry.source,
            "recordId": entry.record_id,
            "committedAt": committed,
            "holders": list(entry.holders),
        }
    alerts = alerts_json(entry.alerts)
    return {"key": entry.key, "source": entry.source, "alerts": alerts, "committedAt": committed}


def entry_from_document(doc: Mapping[str, Any]) -> Entry:
    """Read an outbox entry (one of the four shapes :func:`entry_to_document` writes)."""
    holders = tuple(str(h) for h in doc.get("holders", ()))
    if "record" in doc:
        record = record_from_document(doc["record"])
        key = str(doc["eventId"])
        source = str(doc.get("source", key))  # documents before 'source' was kept
        return Entry(key, source, record.alerts, record.created_at, record, holders)
    committed = ts(doc["committedAt"], "committedAt")
    if "doneIn" in doc:
        key, source, alerts = str(doc["eventId"]), str(doc["source"]), read_alerts(doc["alerts"])
        done_id, done_in = str(doc["doneId"]), str(doc["doneIn"])
        return Entry(key, source, alerts, committed, record_id=done_id, done_in=done_in)
    if "recordId" in doc:
        key = str(doc["eventId"])
        return Entry(key, str(doc["source"]), (), committed, None, holders, str(doc["recordId"]))
    return Entry(str(doc["key"]), str(doc["source"]), read_alerts(doc["alerts"]), committed)


def read_entries(raw: object) -> tuple[Entry, ...]:
    if not isinstance(raw, list):
        raise UnreadableDocument("pending must be a list")
    return tuple(entry_from_document(e) for e in raw)
