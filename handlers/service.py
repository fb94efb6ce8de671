"""The service layer: one call per queue message, the only caller of the ports.

Write path of an event (FILL or TRANSFER) on account A:

1. read A's document (or start an empty one);
2. the event id is in A's recent ids → duplicate: nothing, or (its record missing) re-send
   its stored alerts and write the record;
3. else apply it (or reject it on account state) and store the new ledger, the id and the
   pending record with its alerts in ONE conditional write (ETag; a lost race re-reads and
   re-applies, bounded, with jitter);
4. send the alerts; 5. create the immutable record (with its copy of the alerts).

Alerts go before the record so that "record exists" means "alerts were sent": a crash at
any point is repaired by redelivery (step 2), and a consumer drops repeats by alertId.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import ValidationError

from handlers.core.alerts import AlertSpec, Thresholds, build_alert, fill_alerts, risk_alerts
from handlers.core.catalog import Catalog
from handlers.core.contracts import (
    Alert,
    Fill,
    Mark,
    MarkEntry,
    Marks,
    Transfer,
    format_timestamp,
    is_well_formed_id,
    mark_id,
    parse_timestamp,
    validate_inbound,
)
from handlers.core.decimals import format_decimal, parse_decimal
from handlers.core.decode import BodyError, DecodedBody, body_digest, decode_body
from handlers.core.documents import (
    UNATTRIBUTED,
    AccountDoc,
    Pending,
    account_to_document,
    alerts_json,
    settle_risk_states,
)
from handlers.core.state import Rejected, apply_fill, apply_transfer
from handlers.core.validation import check_fill
from handlers.core.valuation import value
from handlers.errors import StaleAccountState, UnreadableDocument
from handlers.ports import AlertSink, LedgerStore
from handlers.settings import Settings

__all__ = [
    "MAX_WRITE_ATTEMPTS",
    "Deps",
    "Outcome",
    "process_mark_message",
    "process_poison",
    "process_trade_message",
]

logger = logging.getLogger(__name__)

MAX_WRITE_ATTEMPTS = 12
#: A pending event younger than this may still be finishing in another invocation.
PENDING_GRACE = timedelta(seconds=3)
EXCERPT_CHARS = 512
DEADLETTER_BODY_BYTES = 8192
OutcomeKind = Literal["APPLIED", "REJECTED", "DUPLICATE", "IGNORED", "STORED", "DEADLETTERED"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _Recent:
    """A bounded, thread-safe set of keys (events this process completed; last errors)."""

    def __init__(self, size: int = 100_000) -> None:
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def put(self, key: Any, value: Any = True) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def get(self, key: Any) -> Any:
        with self._lock:
            return self._items.get(key)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items


@dataclass
class Deps:
    """What the service needs; built once per process by :mod:`handlers.bootstrap`."""

    settings: Settings
    catalog: Catalog
    store: LedgerStore
    sink: AlertSink
    clock: Callable[[], datetime] = _utcnow
    sleep: Callable[[float], None] = time.sleep
    completed: _Recent = field(default_factory=_Recent)
    last_errors: _Recent = field(default_factory=lambda: _Recent(10_000))

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(
            margin_call_ratio=self.settings.margin_call_ratio,
            large_trade_notional=self.settings.large_trade_notional,
            position_limit_notional=self.settings.position_limit_notional,
        )


@dataclass(frozen=True)
class Outcome:
    """What happened to one message (or one MARKS entry)."""

    kind: OutcomeKind
    source_id: str
    account_id: str | None = None
    alerts: tuple[Alert, ...] = ()
    detail: str = ""


# --- identities of a (possibly bad) body ----------------------------------------------


@dataclass(frozen=True)
class _Identity:
    source_id: str
    account_id: str | None
    correlation_id: str | None
    symbol: str | None


def _identity(obj: Mapping[str, Any] | None, digest: str) -> _Identity:
    """sourceId/accountId of a body for rejections and deadletters (contract: Alert)."""
    if obj is None:
        return _Identity(digest, None, None, None)
    account = obj.get("accountId") if is_well_formed_id(obj.get("accountId")) else None
    correlation = obj.get("correlationId") if is_well_formed_id(obj.get("correlationId")) else None
    symbol = obj.get("symbol") if isinstance(obj.get("symbol"), str) else None
    kind = obj.get("type")
    if kind == "MARK":
        mid = mark_id(obj.get("symbol"), obj.get("timestamp"))
        return _Identity(mid or digest, None, None, symbol)
    keys = ("transferId", "tradeId") if kind == "TRANSFER" else ("tradeId", "transferId")
    source = digest
    if account is not None:
        for key in keys:
            if is_well_formed_id(obj.get(key)):
                source = obj[key]
                break
    return _Identity(source, account, correlation, symbol)


def _excerpt(raw: bytes) -> str:
    return raw[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")[:EXCERPT_CHARS]


def _schema_reasons(exc: ValidationError) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False, include_input=False)[:10]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        out.append(("SCHEMA_INVALID", f"{where}: {err.get('msg', 'invalid')}"[:300]))
    return out or [("SCHEMA_INVALID", "the body does not match the contract")]


# --- sending and records --------------------------------------------------------------


def _alerts(deps: Deps, specs: Sequence[AlertSpec], ident: _Identity, now: datetime) -> list[Alert]:
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
    return out


def _finish(deps: Deps, partition: str, pending: Pending) -> None:
    """Send a pending event's alerts, then create its record (idempotent)."""
    alerts = pending.alerts
    if alerts:
        deps.sink.send(alerts)
    deps.store.create_record(pending.record)
    deps.completed.put((partition, pending.event_id))


def _record_exists(deps: Deps, partition: str, pending: Pending) -> bool:
    return deps.store.read_record(partition, str(pending.record["id"])) is not None


def _pending_since(pending: Pending) -> datetime:
    try:
        return parse_timestamp(pending.record.get("createdAt"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def _settle_pending(deps: Deps, account: AccountDoc, keep: str | None = None) -> AccountDoc:
    """Prune pending entries whose records exist; finish old ones whose records do not."""
    done: set[str] = set()
    now = deps.clock()
    for pending in account.pending:
        if pending.event_id == keep:
            continue
        if (account.account_id, pending.event_id) in deps.completed:
            done.add(pending.event_id)
        elif now - _pending_since(pending) >= PENDING_GRACE:
            if not _record_exists(deps, account.account_id, pending):
                logger.warning(
                    "finishing event %s of account %s left pending by an earlier invocation",
                    pending.event_id,
                    account.account_id,
                )
                _finish(deps, account.account_id, pending)
            done.add(pending.event_id)
    return account.without_pending(done) if done else account


def _complete_duplicate(deps: Deps, account: AccountDoc, event_id: str, wait: bool) -> Outcome:
    """An event id already in the account: re-send its alerts if its record is missing."""
    pending = account.pending_for(event_id)
    key = (account.account_id, event_id)
    if pending is None or key in deps.completed:
        return Outcome("DUPLICATE", event_id, account.account_id)
    if wait:
        # Another invocation may be between the state write and the record write.
        deadline = _pending_since(pending) + PENDING_GRACE
        while deps.clock() < deadline:
            if _record_exists(deps, account.account_id, pending):
                deps.completed.put(key)
                return Outcome("DUPLICATE", event_id, account.account_id)
            deps.sleep(0.1)
    if _record_exists(deps, account.account_id, pending):
        deps.completed.put(key)
        return Outcome("DUPLICATE", event_id, account.account_id)
    _finish(deps, account.account_id, pending)
    return Outcome(
        "DUPLICATE", event_id, account.account_id, tuple(pending.alerts), "record repaired"
    )


def _reject_stateless(
    deps: Deps,
    raw: bytes,
    digest: str,
    ident: _Identity,
    reasons: Sequence[tuple[str, str]],
    queue: str,
) -> Outcome:
    """Record and alert a rejection that does not depend on account state."""
    partition = ident.account_id or UNATTRIBUTED
    record_id = f"rejection:{ident.source_id}"
    if deps.store.read_record(partition, record_id) is not None:
        return Outcome("DUPLICATE", ident.source_id, ident.account_id, detail="already rejected")
    now = deps.clock()
    alerts = _alerts(
        deps, [AlertSpec("TRADE_REJECTED", symbol=ident.symbol, reasons=tuple(reasons))], ident, now
    )
    record = _rejection_record(raw, digest, ident, reasons, queue, alerts, now)
    deps.sink.send(alerts)
    deps.store.create_record(record)
    return Outcome("REJECTED", ident.source_id, ident.account_id, tuple(alerts), reasons[0][0])


def _rejection_record(
    raw: bytes,
    digest: str,
    ident: _Identity,
    reasons: Sequence[tuple[str, str]],
    queue: str,
    alerts: Sequence[Alert],
    now: datetime,
) -> dict[str, Any]:
    return {
        "id": f"rejection:{ident.source_id}",
        "accountId": ident.account_id or UNATTRIBUTED,
        "type": "rejection",
        "schemaVersion": 1,
        "sourceId": ident.source_id,
        "queue": queue,
        "bodyDigest": digest,
        "bodyExcerpt": _excerpt(raw),
        "reasons": [{"code": c, "message": m} for c, m in reasons],
        "alerts": alerts_json(alerts),
        "createdAt": format_timestamp(now),
    }


# --- FILL / TRANSFER ------------------------------------------------------------------


def _event_record(event: Fill | Transfer, alerts: Sequence[Alert], now: datetime) -> dict[str, Any]:
    body = event.model_dump(mode="json", exclude={"type"})
    return {
        **body,
        "id": event.event_id,
        "accountId": event.accountId,
        "type": "trade" if isinstance(event, Fill) else "transfer",
        "eventType": event.type,
        "schemaVersion": 1,
        "alerts": alerts_json(alerts),
        "createdAt": format_timestamp(now),
    }


def _stored_mark(deps: Deps, account: AccountDoc, symbol: str) -> tuple[Decimal, datetime] | None:
    """The freshest mark known for ``symbol``: the marks container, or the position's own."""
    own = None
    for p in account.ledger.positions:
        if p.symbol == symbol and p.mark_price is not None and p.mark_time is not None:
            own = (p.mark_price, p.mark_time)
    doc = deps.store.read_mark(symbol)
    if doc is None:
        return own
    try:
        stored = (parse_decimal(str(doc["markPrice"])), parse_timestamp(doc["timestamp"]))
    except (KeyError, ValueError) as exc:
        raise UnreadableDocument(f"mark document of {symbol}: {exc}") from exc
    if own is not None and own[1] >= stored[1]:
        return own
    return stored


def _apply(
    deps: Deps, event: Fill | Transfer, account: AccountDoc, raw: bytes, digest: str, queue: str
) -> tuple[AccountDoc, list[Alert], dict[str, Any], Outcome]:
    """Compute the new account document for an event (pure apart from the mark read)."""
    now = deps.clock()
    ident = _Identity(
        event.event_id,
        event.accountId,
        event.correlationId,
        event.symbol if isinstance(event, Fill) else None,
    )
    catalog = deps.catalog
    ratio = deps.settings.margin_call_ratio
    before = value(account.ledger, catalog, ratio)
    try:
        if isinstance(event, Fill):
            instrument = catalog.get(event.symbol)
            assert instrument is not None
            mark = _stored_mark(deps, account, event.symbol)
            ledger = apply_fill(account.ledger, event, instrument, mark)
            after = value(ledger, catalog, ratio)
            specs = fill_alerts(
                event, instrument, mark[0] if mark else None, after, deps.thresholds
            )
        else:
            wallet = before.wallets.get(event.asset)
            ledger = apply_transfer(
                account.ledger, event, wallet.available_balance if wallet else None
            )
            after = value(ledger, catalog, ratio)
            specs = []
    except Rejected as rejected:
        reasons = [(rejected.code, rejected.message)]
        alerts = _alerts(
            deps,
            [AlertSpec("TRADE_REJECTED", symbol=ident.symbol, reasons=tuple(reasons))],
            ident,
            now,
        )
        record = _rejection_record(raw, digest, ident, reasons, queue, alerts, now)
        new = account.with_event(event.event_id, record)
        doc = account_to_document(replace(new, version=account.version + 1), before, now)
        return (
            new,
            alerts,
            doc,
            Outcome("REJECTED", event.event_id, event.accountId, tuple(alerts), rejected.code),
        )
    specs += risk_alerts(account.ledger, after)
    ledger = settle_risk_states(ledger, after)
    alerts = _alerts(deps, specs, ident, now)
    record = _event_record(event, alerts, now)
    new = replace(account, ledger=ledger).with_event(event.event_id, record)
    new = replace(new, version=account.version + 1)
    doc = account_to_document(new, after, now)
    return new, alerts, doc, Outcome("APPLIED", event.event_id, event.accountId, tuple(alerts))


def _was_evicted_duplicate(deps: Deps, account: AccountDoc, event_id: str) -> bool:
    if not account.evicted:
        return False
    pk = account.account_id
    return (
        deps.store.read_record(pk, event_id) is not None
        or deps.store.read_record(pk, f"rejection:{event_id}") is not None
    )


def _process_event(
    deps: Deps, event: Fill | Transfer, raw: bytes, digest: str, queue: str
) -> Outcome:
    account_id = event.accountId
    for attempt in range(MAX_WRITE_ATTEMPTS):
        account = deps.store.read_account(account_id) or AccountDoc(account_id)
        if event.event_id in account.recent_ids:
            return _complete_duplicate(deps, account, event.event_id, wait=True)
        if _was_evicted_duplicate(deps, account, event.event_id):
            return Outcome("DUPLICATE", event.event_id, account_id, detail="caught by its record")
        account = _settle_pending(deps, account)
        new, _alerts_sent, doc, outcome = _apply(deps, event, account, raw, digest, queue)
        try:
            deps.store.write_account(doc, account.etag)
        except StaleAccountState:
            delay = min(0.5, 0.01 * (2**attempt)) * random.uniform(0.5, 1.5)  # noqa: S311
            logger.info(
                "etag conflict on account %s (event %s, attempt %d); retrying in %.0f ms",
                account_id,
                event.event_id,
                attempt + 1,
                delay * 1000,
            )
            deps.sleep(delay)
            continue
        pending = new.pending_for(event.event_id)
        assert pending is not None
        _finish(deps, account_id, pending)
        return outcome
    raise StaleAccountState(
        f"account {account_id}: {MAX_WRITE_ATTEMPTS} conflicting writes in a row for {event.event_id}"
    )


def _decode(raw: bytes) -> tuple[DecodedBody | None, BodyError | None]:
    try:
        return decode_body(raw), None
    except BodyError as exc:
        return None, exc


def process_trade_message(raw: bytes, deps: Deps, queue: str | None = None) -> Outcome:
    """Process one body of the trades queue: FILL or TRANSFER.

    Raises:
        UnreadableDocument, TransientStoreError, StaleAccountState: the message should be
            retried by the host (and finally poisoned).
    """
    queue = queue or deps.settings.trades_queue
    decoded, error = _decode(raw)
    digest = body_digest(raw)
    if decoded is None:
        assert error is not None
        return _reject_stateless(
            deps, raw, digest, _identity(None, digest), [(error.code, error.message)], queue
        )
    ident = _identity(decoded.obj, digest)
    if decoded.obj.get("type") not in ("FILL", "TRANSFER"):
        return _reject_stateless(
            deps,
            raw,
            digest,
            ident,
            [
                (
                    "SCHEMA_INVALID",
                    f"type must be FILL or TRANSFER on this queue, got {str(decoded.obj.get('type'))[:40]!r}",
                )
            ],
            queue,
        )
    try:
        event = validate_inbound(decoded.obj)
    except ValidationError as exc:
        return _reject_stateless(deps, raw, digest, ident, _schema_reasons(exc), queue)
    assert isinstance(event, Fill | Transfer)
    if isinstance(event, Transfer) and event.asset not in deps.catalog.settle_assets:
        reasons = [
            ("SCHEMA_INVALID", f"asset {event.asset[:40]!r} is no settle asset of the catalog")
        ]
        return _reject_stateless(deps, raw, digest, ident, reasons, queue)
    if isinstance(event, Transfer):
        wrong = (event.reason == "DEPOSIT" and event.amount < 0) or (
            event.reason == "WITHDRAWAL" and event.amount > 0
        )
        if wrong:
            reasons = [
                (
                    "SCHEMA_INVALID",
                    f"a {event.reason} with amount {format_decimal(event.amount)} has the wrong sign",
                )
            ]
            return _reject_stateless(deps, raw, digest, ident, reasons, queue)
    if isinstance(event, Fill):
        instrument = deps.catalog.get(event.symbol)
        if instrument is None:
            reasons = [
                ("UNKNOWN_SYMBOL", f"symbol {event.symbol[:40]!r} is not in the instrument catalog")
            ]
            return _reject_stateless(deps, raw, digest, ident, reasons, queue)
        problems = check_fill(event, instrument)
        if problems:
            return _reject_stateless(deps, raw, digest, ident, problems, queue)
    return _process_event(deps, event, raw, digest, queue)


# --- MARK / MARKS ---------------------------------------------------------------------


def _store_mark(deps: Deps, entry: Mark | MarkEntry, source_id: str) -> Outcome:
    for _attempt in range(MAX_WRITE_ATTEMPTS):
        current = deps.store.read_mark(entry.symbol)
        if current is not None:
            try:
                stored_at = parse_timestamp(current["timestamp"])
            except (KeyError, ValueError) as exc:
                raise UnreadableDocument(f"mark document of {entry.symbol}: {exc}") from exc
            if entry.timestamp <= stored_at:
                return Outcome("IGNORED", source_id, detail="not newer than the stored mark")
        doc = {
            "id": "@mark",
            "symbol": entry.symbol,
            "type": "mark",
            "schemaVersion": 1,
            "markId": source_id,
            "markPrice": format_decimal(entry.markPrice),
            "timestamp": format_timestamp(entry.timestamp),
            "updatedAt": format_timestamp(deps.clock()),
        }
        try:
            deps.store.write_mark(doc, current.get("_etag") if current else None)
        except StaleAccountState:
            deps.sleep(random.uniform(0.005, 0.05))  # noqa: S311
            continue
        return Outcome("STORED", source_id)
    raise StaleAccountState(f"mark {source_id}: too many conflicting writes")


def _process_mark_entry(
    deps: Deps, raw: bytes, digest: str, queue: str, obj: Any, source_if_none: str, single: bool
) -> Outcome:
    symbol = obj.get("symbol") if isinstance(obj, dict) else None
    mid = mark_id(symbol, obj.get("timestamp")) if isinstance(obj, dict) else None
    ident = _Identity(
        mid or source_if_none, None, None, symbol if isinstance(symbol, str) else None
    )
    try:
        if single:
            entry: Mark | MarkEntry = validate_inbound(obj)  # type: ignore[assignment]
        else:
            if not isinstance(obj, dict):
                raise_value = [("SCHEMA_INVALID", "a MARKS entry must be an object")]
                return _reject_stateless(deps, raw, digest, ident, raise_value, queue)
            entry = MarkEntry.model_validate(obj)
    except ValidationError as exc:
        return _reject_stateless(deps, raw, digest, ident, _schema_reasons(exc), queue)
    if deps.catalog.get(entry.symbol) is None:
        reasons = [
            ("UNKNOWN_SYMBOL", f"symbol {entry.symbol[:40]!r} is not in the instrument catalog")
        ]
        return _reject_stateless(deps, raw, digest, ident, reasons, queue)
    assert mid is not None
    return _store_mark(deps, entry, mid)


def process_mark_message(raw: bytes, deps: Deps, queue: str | None = None) -> list[Outcome]:
    """Process one body of the marks queue: MARK or MARKS (each entry stands alone).

    Raises:
        UnreadableDocument, TransientStoreError, StaleAccountState: retry by the host.
    """
    queue = queue or deps.settings.marks_queue
    decoded, error = _decode(raw)
    digest = body_digest(raw)
    if decoded is None:
        assert error is not None
        return [
            _reject_stateless(
                deps, raw, digest, _identity(None, digest), [(error.code, error.message)], queue
            )
        ]
    obj = decoded.obj
    kind = obj.get("type")
    if kind == "MARK":
        return [_process_mark_entry(deps, raw, digest, queue, obj, digest, single=True)]
    if kind != "MARKS":
        ident = _identity(obj, digest)
        reasons = [
            ("SCHEMA_INVALID", f"type must be MARK or MARKS on this queue, got {str(kind)[:40]!r}")
        ]
        return [_reject_stateless(deps, raw, digest, ident, reasons, queue)]
    try:
        batch = validate_inbound(obj)
    except ValidationError as exc:
        return [
            _reject_stateless(
                deps, raw, digest, _Identity(digest, None, None, None), _schema_reasons(exc), queue
            )
        ]
    assert isinstance(batch, Marks)
    return [
        _process_mark_entry(deps, raw, digest, queue, entry, f"{digest}:{index}", single=False)
        for index, entry in enumerate(batch.marks)
    ]


# --- poison ---------------------------------------------------------------------------


def note_failure(deps: Deps, raw: bytes, error: BaseException) -> None:
    """Remember the last error of a body (by digest) for its deadletter's ``lastError``."""
    deps.last_errors.put(body_digest(raw), f"{type(error).__name__}: {error}"[:1000])


def _already_done(
    deps: Deps, raw: bytes, decoded: DecodedBody | None, digest: str
) -> Outcome | None:
    """Whether a poisoned body's event was in fact applied or rejected (then complete it)."""
    if decoded is None:
        return None
    obj = decoded.obj
    ident = _identity(obj, digest)
    if obj.get("type") in ("FILL", "TRANSFER") and ident.account_id and ident.source_id != digest:
        account = deps.store.read_account(ident.account_id)
        if account is not None and ident.source_id in account.recent_ids:
            return _complete_duplicate(deps, account, ident.source_id, wait=False)
        for record_id in (ident.source_id, f"rejection:{ident.source_id}"):
            if deps.store.read_record(ident.account_id, record_id) is not None:
                return Outcome(
                    "DUPLICATE", ident.source_id, ident.account_id, detail="record exists"
                )
        return None
    partition = ident.account_id or UNATTRIBUTED
    if deps.store.read_record(partition, f"rejection:{ident.source_id}") is not None:
        return Outcome("DUPLICATE", ident.source_id, ident.account_id, detail="rejection exists")
    return None


def process_poison(raw: bytes, deps: Deps, source_queue: str) -> Outcome:
    """Process a body the host gave up on (``<source_queue>-poison``).

    Completes an event that was in fact applied or rejected; otherwise — or when that
    cannot be determined (an unreadable document) — writes a deadletter (a repeat
    increments its ``count``) and sends one POISON_MESSAGE alert.

    Raises:
        TransientStoreError: the store is unavailable (the host retries).
    """
    digest = body_digest(raw)
    decoded, _error = _decode(raw)
    try:
        done = _already_done(deps, raw, decoded, digest)
    except UnreadableDocument as exc:
        logger.warning("poisoned body %s: cannot tell whether it was applied: %s", digest, exc)
        done = None
    if done is not None:
        return done
    ident = _identity(decoded.obj if decoded else None, digest)
    now = deps.clock()
    last_error = deps.last_errors.get(digest)
    document: dict[str, Any] = {
        "id": digest,
        "queue": source_queue,
        "type": "deadletter",
        "schemaVersion": 1,
        "rawBody": raw[:DEADLETTER_BODY_BYTES].decode("utf-8", errors="replace"),
        "bodyDigest": digest,
        "accountId": ident.account_id,
        "sourceId": ident.source_id,
        "count": 1,
        "firstSeen": format_timestamp(now),
        "lastSeen": format_timestamp(now),
    }
    if last_error:
        document["lastError"] = last_error
    return _deadletter(deps, document, ident, now, f"gave up on a message of {source_queue}")


def _deadletter(
    deps: Deps, document: dict[str, Any], ident: _Identity, now: datetime, message: str
) -> Outcome:
    existing = deps.store.read_deadletter(document["queue"], document["id"])
    alerts: list[Alert] = []
    if existing is None:
        reason = message + (f": {document['lastError']}" if document.get("lastError") else "")
        alerts = _alerts(
            deps,
            [
                AlertSpec(
                    "POISON_MESSAGE",
                    symbol=ident.symbol,
                    reasons=(("POISON_MESSAGE", reason[:500]),),
                )
            ],
            ident,
            now,
        )
        deps.sink.send(alerts)
    deps.store.record_deadletter(document)
    return Outcome("DEADLETTERED", ident.source_id, ident.account_id, tuple(alerts))
