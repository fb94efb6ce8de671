"""Values as documents store them: decimal strings, timestamps, risk states, alerts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from handlers.core.contracts import Alert, parse_timestamp
from handlers.core.decimals import format_decimal, parse_decimal
from handlers.core.documents import STORED_DIGITS
from handlers.core.state import RiskState
from handlers.errors import UnreadableDocument

__all__ = [
    "SCHEMA_VERSION",
    "alerts_json",
    "dec",
    "dec_or_none",
    "header",
    "opt_dec",
    "read_alerts",
    "reading",
    "risk",
    "shape",
    "ts",
]

SCHEMA_VERSION = 1
_RISK = ("NORMAL", "MARGIN_CALL", "LIQUIDATION")


def dec_or_none(value: Decimal | None) -> str | None:
    return None if value is None else format_decimal(value)


def dec(raw: object, what: str) -> Decimal:
    if not isinstance(raw, str):
        raise UnreadableDocument(f"{what} must be a decimal string")
    try:
        return parse_decimal(raw, max_digits=STORED_DIGITS)
    except ValueError as exc:
        raise UnreadableDocument(f"{what}: {exc}") from exc


def opt_dec(raw: object, what: str) -> Decimal | None:
    return None if raw is None else dec(raw, what)


def ts(raw: object, what: str) -> datetime:
    try:
        return parse_timestamp(raw)
    except ValueError as exc:
        raise UnreadableDocument(f"{what}: {exc}") from exc


def risk(raw: object, what: str) -> RiskState:
    if raw not in _RISK:
        raise UnreadableDocument(f"{what}: unknown risk state {raw!r}")
    return raw  # type: ignore[return-value]


def header(doc_id: str, kind: str, **partition: str) -> dict[str, Any]:
    """The fields every document starts with: its id, its partition key (one keyword),
    its ``type`` and ``schemaVersion``."""
    return {"id": doc_id, **partition, "type": kind, "schemaVersion": SCHEMA_VERSION}


def shape(doc: Mapping[str, Any], kind: str, versions: tuple[int, ...] = (SCHEMA_VERSION,)) -> None:
    if doc.get("type") != kind or doc.get("schemaVersion") not in versions:
        raise UnreadableDocument(
            f"{kind} document of type {doc.get('type')!r} version {doc.get('schemaVersion')!r}"
        )


def alerts_json(alerts: Sequence[Alert]) -> list[dict[str, Any]]:
    """Alerts as stored in documents (JSON mode)."""
    return [a.model_dump(mode="json") for a in alerts]


def read_alerts(raw: object) -> tuple[Alert, ...]:
    if not isinstance(raw, list):
        raise UnreadableDocument("alerts must be a list")
    return tuple(Alert.model_validate(a, strict=False) for a in raw)


@contextlib.contextmanager
def reading(
    what: str,
    doc: Mapping[str, Any] | None = None,
    kind: str = "",
    versions: tuple[int, ...] = (SCHEMA_VERSION,),
) -> Iterator[None]:
    """Read a stored document's fields: a missing key or a value of the wrong kind becomes
    :class:`UnreadableDocument` naming ``what``; with ``doc`` and ``kind``, a document of
    another ``type`` or ``schemaVersion`` is refused first.

    Raises:
        UnreadableDocument: another type or version, or a wrong shape.
    """
    if doc is not None:
        shape(doc, kind, versions)
    try:
        yield
    except UnreadableDocument:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnreadableDocument(f"{what}: {exc!r}") from exc
