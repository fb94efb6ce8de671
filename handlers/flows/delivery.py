"""One arrival of a queue body (:class:`Delivery`) and what a body says about itself.

A delivery is a **retry** when the host has handed this queue message out before
(``dequeueCount`` > 1) or when it comes through a poison queue: the invocations before it
failed, so it may finish what they began whatever its age (:mod:`handlers.flows.outbox`).
A first delivery that finds its own work begun is a concurrent copy and leaves it to its
owner. That one flag travels explicitly, in the delivery.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from handlers.core.alerts import AlertSpec, build_alert
from handlers.core.contracts import SYMBOL_PATTERN, Alert, is_well_formed_id, mark_id
from handlers.core.decode import BodyError, DecodedBody, body_digest, decode_body

__all__ = [
    "DEADLETTER_BODY_BYTES",
    "Delivery",
    "Identity",
    "alerts_for",
    "clean_reasons",
    "identity",
    "raw_text",
    "schema_reasons",
    "well_formed_symbol",
]

EXCERPT_CHARS = 512
DEADLETTER_BODY_BYTES = 8192
_SYMBOL_RE = re.compile(SYMBOL_PATTERN)


@dataclass(frozen=True)
class Delivery:
    """One queue message as an invocation receives it. ``queue`` is the configured name of
    the queue the body belongs to (for a poison copy: the queue it was poisoned from)."""

    raw: bytes
    queue: str
    dequeue_count: int = 1
    poison: bool = False
    #: A fan-out unit handed on by a retry (or the poison path) of its mark message.
    redelivered: bool = False
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", body_digest(self.raw))

    @property
    def retry(self) -> bool:
        """Whether invocations of this message failed before (it may finish their work)."""
        return self.poison or self.redelivered or self.dequeue_count > 1

    def decode(self) -> tuple[DecodedBody | None, BodyError | None]:
        """The body as a JSON object, or why it is not one."""
        try:
            return decode_body(self.raw), None
        except BodyError as exc:
            return None, exc

    @property
    def excerpt(self) -> str:
        """The body's first 512 characters (for rejection records)."""
        return self.raw[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")[:EXCERPT_CHARS]


def raw_text(raw: bytes) -> str:
    """At most 8 KiB of a body, as text (undecodable bytes replaced)."""
    return raw[:DEADLETTER_BODY_BYTES].decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Identity:
    """Who a body's alerts and records are about."""

    source_id: str
    account_id: str | None
    correlation_id: str | None = None
    symbol: str | None = None


def well_formed_symbol(value: object) -> str | None:
    """A body's symbol as alerts carry it: only a well-formed one (never an unbounded or
    unencodable echo of a bad body)."""
    return value if isinstance(value, str) and _SYMBOL_RE.fullmatch(value) else None


def identity(obj: Mapping[str, Any] | None, digest: str) -> Identity:
    """sourceId/accountId of a body for rejections and deadletters (contract: Alert)."""
    if obj is None:
        return Identity(digest, None)
    account = obj.get("accountId") if is_well_formed_id(obj.get("accountId")) else None
    correlation = obj.get("correlationId") if is_well_formed_id(obj.get("correlationId")) else None
    symbol = well_formed_symbol(obj.get("symbol"))
    kind = obj.get("type")
    if kind == "MARK":
        mid = mark_id(obj.get("symbol"), obj.get("timestamp"))
        return Identity(mid or digest, None, None, symbol)
    if kind in ("ORDER", "ORDER_DONE", "ACCOUNT_CONTROL"):  # (namespaces of their own)
        key, prefix = (
            ("controlId", "@control:") if kind == "ACCOUNT_CONTROL" else ("orderId", "@order:")
        )
        own = obj.get(key)
        if account is not None and is_well_formed_id(own):
            return Identity(f"{prefix}{own}", account, correlation, symbol)
        return Identity(digest, account, correlation, symbol)
    keys = ("transferId", "tradeId") if kind == "TRANSFER" else ("tradeId", "transferId")
    source = digest
    if account is not None:
        for key in keys:
            if is_well_formed_id(obj.get(key)):
                source = obj[key]
                break
    return Identity(source, account, correlation, symbol)


def clean_reasons(reasons: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Reasons as written: at most 10, each message ≤ 300 characters of encodable text."""
    out = []
    for code, message in list(reasons)[:10]:
        text = message.encode("utf-8", "backslashreplace").decode("utf-8")
        out.append((code, text if len(text) <= 300 else text[:299] + "…"))
    return tuple(out)


def schema_reasons(exc: ValidationError) -> list[tuple[str, str]]:
    """SCHEMA_INVALID reasons of a validation error (at most 10)."""
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False, include_input=False)[:10]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        out.append(("SCHEMA_INVALID", f"{where}: {err.get('msg', 'invalid')}"[:300]))
    return out or [("SCHEMA_INVALID", "the body does not match the contract")]


def alerts_for(specs: Sequence[AlertSpec], ident: Identity, now: datetime) -> tuple[Alert, ...]:
    """The alerts of decided specs, with the identity's ids; one per alertId."""
    seen: set[str] = set()
    out: list[Alert] = []
    for spec in specs:
        alert = build_alert(
            spec,
            source_id=ident.source_id,
            account_id=ident.account_id,
            correlation_id=ident.correlation_id,
            created_at=now,
        )
        if alert.alertId not in seen:
            seen.add(alert.alertId)
            out.append(alert)
    return tuple(out)
