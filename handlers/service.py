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

import asyncio
import contextlib
import hashlib
import logging
import random
import re
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import ValidationError

from handlers.core.alerts import AlertSpec, Thresholds, build_alert, fill_alerts, risk_alerts
from handlers.core.catalog import Catalog
from handlers.core.contracts import (
    SYMBOL_PATTERN,
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
    STORED_DIGITS,
    UNATTRIBUTED,
    AccountDoc,
    Pending,
    account_to_document,
    alerts_json,
    settle_risk_states,
)
from handlers.core.state import Rejected, apply_fill, apply_mark, apply_transfer
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
#: Accounts one mark message re-values at once (each is one read and one conditional write).
MARK_CONCURRENCY = 16
#: A pending entry younger than this may still be finishing in the invocation that wrote
#: it (which may be slow under load): others leave it alone. The queue lease (10 min)
#: bounds how long that invocation can hold its message; a failed one is retried, and a
#: retry finishes the entry at once, whatever its age.
PENDING_GRACE = timedelta(minutes=10)
EXCERPT_CHARS = 512
DEADLETTER_BODY_BYTES = 8192
OutcomeKind = Literal["APPLIED", "REJECTED", "DUPLICATE", "IGNORED", "STORED", "DEADLETTERED"]


_SYMBOL_RE = re.compile(SYMBOL_PATTERN)
#: True while processing a delivery that is a retry (dequeue count > 1, or the poison path).
_RETRY: ContextVar[bool] = ContextVar("tradeguard_retry", default=False)


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


class _AccountLocks:
    """One holder per account at a time within this process (asyncio): events of one
    account wait for each other instead of losing ETag races to each other. Other
    processes are still kept out by the conditional write alone."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, account_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(account_id) or (asyncio.Lock(), 0)
        self._locks[account_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[account_id]
            if users == 1:
                del self._locks[account_id]
            else:
                self._locks[account_id] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class _MarkCache:
    """The stored mark document of each symbol as this process last read or wrote it
    (None: no mark stored), and when. A copy never goes back in time: a document older
    than the one kept (a slow read overtaken by a write) is not taken."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[Mapping[str, Any] | None, datetime]] = {}

    def get(
        self, symbol: str, now: datetime, max_age: float
    ) -> tuple[Mapping[str, Any] | None] | None:
        """``(document,)`` when the copy is at most ``max_age`` seconds old, else None."""
        found = self._items.get(symbol)
        if found is None or not 0 <= (now - found[1]).total_seconds() <= max_age:
            return None  # (a clock stepped back makes no copy fresh)
        return (found[0],)

    def put(self, symbol: str, document: Mapping[str, Any] | None, at: datetime) -> None:
        kept = self._items.get(symbol)
        older = (
            kept is not None
            and kept[0] is not None
            and (document is None or str(document.get("timestamp")) < str(kept[0].get("timestamp")))
        )
        if not older:  # stored marks only move forward (fixed-width UTC text compares)
            self._items[symbol] = (document, at)


@dataclass
class Deps:
    """What the service needs; built once per process by :mod:`handlers.bootstrap`."""

    settings: Settings
    catalog: Catalog
    store: LedgerStore
    sink: AlertSink
    clock: Callable[[], datetime] = _utcnow
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    completed: _Recent = field(default_factory=_Recent)
    last_errors: _Recent = field(default_factory=lambda: _Recent(10_000))
    account_locks: _AccountLocks = field(default_factory=_AccountLocks)
    marks: _MarkCache = field(default_factory=_MarkCache)

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


def _symbol(value: object) -> str | None:
    """A body's symbol as alerts carry it: only a well-formed one (never an unbounded or
    unencodable echo of a bad body)."""
    return value if isinstance(value, str) and _SYMBOL_RE.fullmatch(value) else None


def _clean(reasons: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Reasons as written: at most 10, each message ≤ 300 characters of encodable text."""
    out = []
    for code, message in list(reasons)[:10]:
        text = message.encode("utf-8", "backslashreplace").decode("utf-8")
        out.append((code, text if len(text) <= 300 else text[:299] + "…"))
    return out


def _identity(obj: Mapping[str, Any] | None, digest: str) -> _Identity:
    """sourceId/accountId of a body for rejections and deadletters (contract: Alert)."""
    if obj is None:
        return _Identity(digest, None, None, None)
    account = obj.get("accountId") if is_well_formed_id(obj.get("accountId")) else None
    correlation = obj.get("correlationId") if is_well_formed_id(obj.get("correlationId")) else None
    symbol = _symbol(obj.get("symbol"))
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


async def _finish(
    deps: Deps, partition: str, pending: Pending
) -> dict[str, Mapping[str, Any] | None]:
    """Complete a pending entry (idempotent): index the symbols it opened, send its
    alerts, then create its record (``trade``, ``transfer``, ``rejection`` or a mark's
    ``revaluation``). Returns the stored mark of each symbol indexed, as read right after
    its index entry was written (see :func:`_catch_up`)."""
    indexed: dict[str, Mapping[str, Any] | None] = {}
    for symbol in pending.holders:
        at = deps.clock()
        indexed[symbol] = doc = await deps.store.index_holder(symbol, partition)
        deps.marks.put(symbol, doc, at)
    alerts = pending.alerts
    if alerts:
        await deps.sink.send(alerts)
    await deps.store.create_record(pending.record)
    deps.completed.put((partition, pending.event_id))
    return indexed


async def _record_exists(deps: Deps, partition: str, pending: Pending) -> bool:
    """Whether a pending entry is done: its record exists (records are written last)."""
    return await deps.store.read_record(partition, str(pending.record["id"])) is not None


def _pending_since(pending: Pending) -> datetime:
    try:
        return parse_timestamp(pending.record.get("createdAt"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


async def _settle_pending(deps: Deps, account: AccountDoc, keep: str | None = None) -> AccountDoc:
    """Prune pending entries whose records exist; finish old ones whose records do not."""
    done: set[str] = set()
    now = deps.clock()
    for pending in account.pending:
        if pending.event_id == keep:
            continue
        if (account.account_id, pending.event_id) in deps.completed:
            done.add(pending.event_id)
        elif now - _pending_since(pending) >= PENDING_GRACE:
            if not await _record_exists(deps, account.account_id, pending):
                logger.warning(
                    "finishing event %s of account %s left pending by an earlier invocation",
                    pending.event_id,
                    account.account_id,
                )
                await _finish(deps, account.account_id, pending)
            done.add(pending.event_id)
    return account.without_pending(done) if done else account


async def _complete_duplicate(
    deps: Deps, account: AccountDoc, event_id: str, retry: bool
) -> Outcome:
    """An event already in the account: finish it if it is still pending.

    A pending entry whose record is missing is finished (alerts re-sent with the same ids,
    record written) when this delivery is a retry (dequeue count > 1, or the poison path)
    or the entry is older than :data:`PENDING_GRACE`. A first delivery that finds a young
    entry is a concurrent copy: the invocation that wrote it finishes it, or fails and is
    retried, and that retry finishes it — so copies never double-send.
    """
    pending = account.pending_for(event_id)
    key = (account.account_id, event_id)
    if pending is None or key in deps.completed:
        return Outcome("DUPLICATE", event_id, account.account_id)
    if await _record_exists(deps, account.account_id, pending):
        deps.completed.put(key)
        return Outcome("DUPLICATE", event_id, account.account_id)
    if not retry and deps.clock() - _pending_since(pending) < PENDING_GRACE:
        return Outcome("DUPLICATE", event_id, account.account_id, detail="in flight elsewhere")
    await _finish(deps, account.account_id, pending)
    return Outcome(
        "DUPLICATE", event_id, account.account_id, tuple(pending.alerts), "record repaired"
    )


async def _reject_stateless(
    deps: Deps,
    raw: bytes,
    digest: str,
    ident: _Identity,
    reasons: Sequence[tuple[str, str]],
    queue: str,
) -> Outcome:
    """Record and alert a rejection that does not depend on account state.

    The record is created first and is the idempotency key: a copy whose create meets the
    existing record sends nothing (concurrent copies never double-send). A retry after a
    failure (the invocation may have died between the record and the send) re-sends the
    record's alerts with the same ids.
    """
    reasons = _clean(reasons)
    now = deps.clock()
    alerts = _alerts(
        deps, [AlertSpec("TRADE_REJECTED", symbol=ident.symbol, reasons=tuple(reasons))], ident, now
    )
    record = _rejection_record(raw, digest, ident, reasons, queue, alerts, now)
    if await deps.store.create_record(record):
        await deps.sink.send(alerts)
        return Outcome("REJECTED", ident.source_id, ident.account_id, tuple(alerts), reasons[0][0])
    if not _RETRY.get():
        return Outcome("DUPLICATE", ident.source_id, ident.account_id, detail="already rejected")
    existing = await deps.store.read_record(str(record["accountId"]), str(record["id"]))
    stored = Pending(str(record["id"]), existing or record).alerts
    await deps.sink.send(stored)
    return Outcome(
        "DUPLICATE", ident.source_id, ident.account_id, tuple(stored), "rejection alert re-sent"
    )


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


def _mark_of(doc: Mapping[str, Any], symbol: str) -> tuple[Decimal, datetime]:
    try:
        return (
            parse_decimal(str(doc["markPrice"]), max_digits=STORED_DIGITS),
            parse_timestamp(doc["timestamp"]),
        )
    except (KeyError, ValueError) as exc:
        raise UnreadableDocument(f"mark document of {symbol}: {exc}") from exc


async def _stored_mark(
    deps: Deps, account: AccountDoc, symbol: str
) -> tuple[Decimal, datetime] | None:
    """The freshest mark known for ``symbol``. An open position on it carries its own (the
    mark path keeps holders current), so only a symbol the account does not hold costs a
    read of the ``marks`` container."""
    for p in account.ledger.positions:
        if (
            p.symbol == symbol
            and p.is_open
            and p.mark_price is not None
            and p.mark_time is not None
        ):
            return (p.mark_price, p.mark_time)
    doc = await _read_mark(deps, symbol, max_age=deps.settings.mark_cache_seconds)
    return None if doc is None else _mark_of(doc, symbol)


async def _read_mark(deps: Deps, symbol: str, max_age: float = 0.0) -> Mapping[str, Any] | None:
    """The stored mark document of ``symbol``: this process's copy when it is at most
    ``max_age`` seconds old (``MARK_CACHE_SECONDS``, for a fill's first look only), else a
    read, which the copy then keeps.

    Raises:
        TransientStoreError: the store is unavailable.
    """
    now = deps.clock()
    if max_age > 0:
        hit = deps.marks.get(symbol, now, max_age)
        if hit is not None:
            return hit[0]
    doc = await deps.store.read_mark(symbol)
    deps.marks.put(symbol, doc, now)
    return doc


async def _catch_up(
    deps: Deps,
    account: AccountDoc,
    indexed: Mapping[str, Mapping[str, Any] | None],
    queue: str,
    retry: bool,
) -> None:
    """After a fill opened symbols: a mark stored while the fill was in flight may have
    missed this account (it was not in the holder index yet); apply it now. ``indexed``
    holds each opened symbol's stored mark as read right after its index entry was
    written (:func:`_finish`): a mark stored later finds the entry. ``account`` is the
    state just written: a mark no newer than its positions' costs no account read.
    ``retry`` is the delivery's own: only a retry finishes a young catch-up entry that
    another delivery left (:func:`_complete_duplicate`), so copies never double-send."""
    for symbol, doc in indexed.items():
        if doc is None:
            continue
        price, stamp = _mark_of(doc, symbol)
        used = [p.mark_time for p in account.ledger.positions if p.symbol == symbol and p.is_open]
        if used and all(t is not None and t >= stamp for t in used):
            continue
        mark = _MarkIn(
            symbol, price, stamp, str(doc.get("markId") or f"{symbol}@{format_timestamp(stamp)}")
        )
        await _revalue_account(
            deps, account.account_id, [mark], f"mark:{mark.mark_id}", b"", queue, retry
        )


async def _catch_up_duplicate(deps: Deps, account: AccountDoc, event_id: str) -> None:
    """The catch-up of a fill a RETRY finds already applied (:func:`_catch_up`): the
    delivery that applied it may have died between its account write and its catch-up.
    While the event's entry is still on the account (until its record exists and a later
    write of the account prunes it) the symbols it opened are known, and the entry has
    been finished (by :func:`_complete_duplicate` on this retry, or before), so their
    index entries exist and a fresh read of each mark comes after them, as the catch-up
    needs. A first delivery that finds its event applied is a copy: the delivery that
    applied it catches up itself, or fails and is retried.

    Raises:
        TransientStoreError: the store is unavailable.
    """
    pending = account.pending_for(event_id)
    if pending is None or not pending.holders:
        return
    indexed = {symbol: await _read_mark(deps, symbol) for symbol in pending.holders}
    await _catch_up(deps, account, indexed, deps.settings.marks_queue, True)


async def _apply(
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
    try:
        if isinstance(event, Fill):
            instrument = catalog.get(event.symbol)
            assert instrument is not None
            mark = await _stored_mark(deps, account, event.symbol)
            ledger = apply_fill(account.ledger, event, instrument, mark)
            after = value(ledger, catalog, ratio)
            specs = fill_alerts(
                event, instrument, mark[0] if mark else None, after, deps.thresholds
            )
        else:
            wallet = value(account.ledger, catalog, ratio).wallets.get(event.asset)
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
        before = value(account.ledger, catalog, ratio)  # a rejection leaves the state as it was
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
    opened: tuple[str, ...] = ()
    if isinstance(event, Fill):
        was_open = any(p.is_open and p.symbol == event.symbol for p in account.ledger.positions)
        now_open = any(p.is_open and p.symbol == event.symbol for p in ledger.positions)
        opened = (event.symbol,) if now_open and not was_open else ()
    new = replace(account, ledger=ledger).with_event(event.event_id, record, opened)
    new = replace(new, version=account.version + 1)
    doc = account_to_document(new, after, now)
    return new, alerts, doc, Outcome("APPLIED", event.event_id, event.accountId, tuple(alerts))


async def _was_evicted_duplicate(deps: Deps, account: AccountDoc, event_id: str) -> bool:
    if not account.evicted:
        return False
    pk = account.account_id
    return (
        await deps.store.read_record(pk, event_id) is not None
        or await deps.store.read_record(pk, f"rejection:{event_id}") is not None
    )


async def _process_event(
    deps: Deps, event: Fill | Transfer, raw: bytes, digest: str, queue: str, retry: bool
) -> Outcome:
    account_id = event.accountId
    for attempt in range(MAX_WRITE_ATTEMPTS):
        # One event of an account at a time in this process (others wait instead of
        # losing an ETag race), from the read to the conditional write.
        async with deps.account_locks.hold(account_id):
            # The first try may use this process's cached copy: the write is conditional,
            # so a stale copy only costs a 412, and the retry reads afresh.
            fresh = attempt > 0
            account = await deps.store.read_account(account_id, fresh=fresh) or AccountDoc(
                account_id
            )
            duplicate: Outcome | None = None
            if event.event_id in account.recent_ids:
                duplicate = await _complete_duplicate(deps, account, event.event_id, retry)
            elif await _was_evicted_duplicate(deps, account, event.event_id):
                return Outcome(
                    "DUPLICATE", event.event_id, account_id, detail="caught by its record"
                )
            else:
                account = await _settle_pending(deps, account)
                new, _sent, doc, outcome = await _apply(deps, event, account, raw, digest, queue)
                try:
                    await deps.store.write_account(doc, account.etag)
                    written = True
                except StaleAccountState:
                    written = False
        if duplicate is not None:
            if retry:
                # The delivery that applied it may have died before its catch-up. Outside
                # the lock: a catch-up re-values under the account's lock itself.
                await _catch_up_duplicate(deps, account, event.event_id)
            return duplicate
        if not written:
            delay = _backoff(attempt)
            logger.info(
                "etag conflict on account %s (event %s, attempt %d); retrying in %.0f ms",
                account_id,
                event.event_id,
                attempt + 1,
                delay * 1000,
            )
            await deps.sleep(delay)
            continue
        pending = new.pending_for(event.event_id)
        assert pending is not None
        indexed = await _finish(deps, account_id, pending)
        if indexed:
            await _catch_up(deps, new, indexed, deps.settings.marks_queue, retry)
        return outcome
    raise StaleAccountState(
        f"account {account_id}: {MAX_WRITE_ATTEMPTS} conflicting writes in a row for {event.event_id}"
    )


def _backoff(attempt: int) -> float:
    """Seconds to wait after the ``attempt``-th lost ETag race (0-based): 10 ms doubling,
    capped at 0.5 s, ±50 % jitter."""
    return min(0.5, 0.01 * 2.0**attempt) * random.uniform(0.5, 1.5)  # noqa: S311


def _decode(raw: bytes) -> tuple[DecodedBody | None, BodyError | None]:
    try:
        return decode_body(raw), None
    except BodyError as exc:
        return None, exc


async def process_trade_message(
    raw: bytes, deps: Deps, queue: str | None = None, dequeue_count: int = 1
) -> Outcome:
    """Process one body of the trades queue: FILL or TRANSFER. ``dequeue_count`` > 1
    marks a retry (see :func:`_complete_duplicate`).

    Raises:
        UnreadableDocument, TransientStoreError, StaleAccountState: the message should be
            retried by the host (and finally poisoned).
    """
    token = _RETRY.set(dequeue_count > 1)
    try:
        return await _process_trade(raw, deps, queue, dequeue_count)
    finally:
        _RETRY.reset(token)


async def _process_trade(raw: bytes, deps: Deps, queue: str | None, dequeue_count: int) -> Outcome:
    queue = queue or deps.settings.trades_queue
    decoded, error = _decode(raw)
    digest = body_digest(raw)
    if decoded is None:
        assert error is not None
        return await _reject_stateless(
            deps, raw, digest, _identity(None, digest), [(error.code, error.message)], queue
        )
    ident = _identity(decoded.obj, digest)
    if decoded.obj.get("type") not in ("FILL", "TRANSFER"):
        return await _reject_stateless(
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
        return await _reject_stateless(deps, raw, digest, ident, _schema_reasons(exc), queue)
    assert isinstance(event, Fill | Transfer)
    if isinstance(event, Transfer) and event.asset not in deps.catalog.settle_assets:
        reasons = [
            ("SCHEMA_INVALID", f"asset {event.asset[:40]!r} is no settle asset of the catalog")
        ]
        return await _reject_stateless(deps, raw, digest, ident, reasons, queue)
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
            return await _reject_stateless(deps, raw, digest, ident, reasons, queue)
    if isinstance(event, Fill):
        instrument = deps.catalog.get(event.symbol)
        if instrument is None:
            reasons = [
                ("UNKNOWN_SYMBOL", f"symbol {event.symbol[:40]!r} is not in the instrument catalog")
            ]
            return await _reject_stateless(deps, raw, digest, ident, reasons, queue)
        problems = check_fill(event, instrument)
        if problems:
            return await _reject_stateless(deps, raw, digest, ident, problems, queue)
    return await _process_event(deps, event, raw, digest, queue, dequeue_count > 1)


# --- MARK / MARKS ---------------------------------------------------------------------


@dataclass(frozen=True)
class _MarkIn:
    """A valid, catalogued, newer-than-stored mark of this message."""

    symbol: str
    price: Decimal
    timestamp: datetime
    mark_id: str


async def _validate_mark_entry(
    deps: Deps, raw: bytes, digest: str, queue: str, obj: Any, fallback: str, single: bool
) -> _MarkIn | Outcome:
    """A mark to apply, or the outcome of its rejection."""
    symbol = obj.get("symbol") if isinstance(obj, dict) else None
    mid = mark_id(symbol, obj.get("timestamp")) if isinstance(obj, dict) else None
    ident = _Identity(mid or fallback, None, None, _symbol(symbol))
    if not isinstance(obj, dict):
        reasons = [("SCHEMA_INVALID", "a MARKS entry must be an object")]
        return await _reject_stateless(deps, raw, digest, ident, reasons, queue)
    try:
        entry: Mark | MarkEntry = (
            validate_inbound(obj) if single else MarkEntry.model_validate(obj)  # type: ignore[assignment]
        )
    except ValidationError as exc:
        return await _reject_stateless(deps, raw, digest, ident, _schema_reasons(exc), queue)
    if deps.catalog.get(entry.symbol) is None:
        reasons = [
            ("UNKNOWN_SYMBOL", f"symbol {entry.symbol[:40]!r} is not in the instrument catalog")
        ]
        return await _reject_stateless(deps, raw, digest, ident, reasons, queue)
    assert mid is not None
    return _MarkIn(entry.symbol, entry.markPrice, entry.timestamp, mid)


async def _revalue_account(
    deps: Deps,
    account_id: str,
    marks: Sequence[_MarkIn],
    key: str,
    raw: bytes,
    queue: str,
    retry: bool,
) -> tuple[list[Alert], bool] | None:
    """Apply a message's marks to one account in ONE conditional write (which stores the
    alerts it raises, pending), then send them and write the ``revaluation`` record
    ``@<key>``. Returns the alerts and whether the account still holds a marked symbol;
    None when the account was skipped (unreadable: dead-lettered). With no ``marks`` it
    only finishes a pending entry this message left (a retry after a failure)."""
    cached = True  # the process's copy may serve a path that ends in a conditional write
    for attempt in range(MAX_WRITE_ATTEMPTS):
        async with deps.account_locks.hold(account_id):
            result = await _revalue_once(deps, account_id, marks, key, raw, queue, retry, cached)
        if result == "stale":
            cached = False
            await deps.sleep(_backoff(attempt))
            continue
        if result == "refresh":
            cached = False
            continue
        return result
    raise StaleAccountState(f"account {account_id}: too many conflicting writes for marks {key}")


async def _revalue_once(
    deps: Deps,
    account_id: str,
    marks: Sequence[_MarkIn],
    key: str,
    raw: bytes,
    queue: str,
    retry: bool,
    cached: bool,
) -> tuple[list[Alert], bool] | Literal["stale", "refresh"] | None:
    """One try of :func:`_revalue_account`: "refresh" when a decision without a write
    rested on the cached copy, "stale" when the conditional write lost a race."""
    try:
        account = await deps.store.read_account(account_id, fresh=not cached)
    except UnreadableDocument as exc:
        if marks:
            await _deadletter_account(deps, account_id, marks, raw, queue, exc)
        return None
    if account is None:
        return [], False
    symbols = {m.symbol for m in marks}
    holds = any(p.is_open and p.symbol in symbols for p in account.ledger.positions)
    fresh = [
        m
        for m in marks
        if any(
            p.is_open
            and p.symbol == m.symbol
            and (p.mark_time is None or m.timestamp > p.mark_time)
            for p in account.ledger.positions
        )
    ]
    # This message's entries on the account: ``key``, and ``key:<symbols digest>`` for a
    # later write of the same message (a symbol the account opened while it was in flight).
    ours = [e for e in (p.event_id for p in account.pending) if e == key or e.startswith(key + ":")]
    if cached and (not fresh or ours):
        return "refresh"  # a decision without a write must rest on a fresh read
    done: list[Alert] = []
    for entry in ours:
        done += (await _complete_duplicate(deps, account, entry, retry)).alerts
    if not fresh:
        return done, holds
    before = account
    account = await _settle_pending(deps, account)
    ledger = account.ledger
    now = deps.clock()
    alerts: list[Alert] = []
    for mark in fresh:  # in timestamp order: each transition alerts with its own mark id
        moved = apply_mark(ledger, mark.symbol, mark.price, mark.timestamp)
        after = value(moved, deps.catalog, deps.settings.margin_call_ratio)
        ident = _Identity(mark.mark_id, account_id, None, mark.symbol)
        alerts += _alerts(deps, risk_alerts(ledger, after), ident, now)
        ledger = settle_risk_states(moved, after)
    final = value(ledger, deps.catalog, deps.settings.margin_call_ratio)
    new = replace(account, ledger=ledger, version=account.version + 1)
    pending = None
    if alerts:  # the record key matters only for an entry and its record
        key = await _record_key(deps, before, key, fresh, retry)
        pending = Pending(
            key,
            {
                "id": f"@{key}",
                "accountId": account_id,
                "type": "revaluation",
                "schemaVersion": 1,
                "source": key,
                "marks": {m.symbol: format_timestamp(m.timestamp) for m in fresh},
                "alerts": alerts_json(alerts),
                "createdAt": format_timestamp(now),
            },
        )
        new = new.with_pending(pending)
    try:
        await deps.store.write_account(account_to_document(new, final, now), account.etag)
    except StaleAccountState:
        return "stale"
    if pending is not None:
        await _finish(deps, account_id, pending)
    return done + alerts, True


async def _record_key(
    deps: Deps, account: AccountDoc, key: str, fresh: Sequence[_MarkIn], retry: bool
) -> str:
    """The record key of a mark message's write on an account: ``key``, unless an earlier
    write of the same message used it there (its entry is pending, this process finished
    it, or — on a retry — its record exists); then ``key:<16 hex>``, a digest of the
    symbols this write applies (deterministic, so a retry finds its own entry).

    Raises:
        TransientStoreError: the store is unavailable.
    """
    used = account.pending_for(key) is not None or (account.account_id, key) in deps.completed
    if not used and retry:
        used = await deps.store.read_record(account.account_id, f"@{key}") is not None
    if not used:
        return key
    symbols = ",".join(sorted({m.symbol for m in fresh}))
    return f"{key}:{hashlib.sha256(symbols.encode()).hexdigest()[:16]}"


async def _deadletter_account(
    deps: Deps, account_id: str, marks: Sequence[_MarkIn], raw: bytes, queue: str, error: Exception
) -> None:
    """A mark skipped an account it cannot read: dead-letter ``<digest>:<accountId>``."""
    logger.warning("mark %s skipped account %s: %s", marks[0].mark_id, account_id, error)
    now = deps.clock()
    digest = body_digest(raw)
    document = {
        "id": f"{digest}:{account_id}",
        "queue": queue,
        "type": "deadletter",
        "schemaVersion": 1,
        "rawBody": _raw_body(raw),
        "bodyDigest": digest,
        "accountId": account_id,
        "sourceId": marks[0].mark_id,
        "count": 1,
        "firstSeen": format_timestamp(now),
        "lastSeen": format_timestamp(now),
        "lastError": f"{type(error).__name__}: {error}"[:1000],
    }
    ident = _Identity(marks[0].mark_id, account_id, None, marks[0].symbol)
    await _deadletter(deps, document, ident, now, "a mark skipped an unreadable account document")


async def _store_marks(deps: Deps, latest: Mapping[str, _MarkIn]) -> None:
    """Write each symbol's newest mark (last, after every account is re-valued)."""
    for mark in latest.values():
        for _attempt in range(MAX_WRITE_ATTEMPTS):
            current = await _read_mark(deps, mark.symbol)
            if current is not None and parse_timestamp(current["timestamp"]) >= mark.timestamp:
                break
            doc = {
                "id": "@mark",
                "symbol": mark.symbol,
                "type": "mark",
                "schemaVersion": 1,
                "markId": mark.mark_id,
                "markPrice": format_decimal(mark.price),
                "timestamp": format_timestamp(mark.timestamp),
                "updatedAt": format_timestamp(deps.clock()),
            }
            try:
                await deps.store.write_mark(doc, current.get("_etag") if current else None)
                deps.marks.put(mark.symbol, doc, deps.clock())
                break
            except StaleAccountState:
                await deps.sleep(random.uniform(0.005, 0.05))  # noqa: S311
        else:
            raise StaleAccountState(f"mark {mark.mark_id}: too many conflicting writes")


async def _apply_marks(
    deps: Deps, marks: Sequence[_MarkIn], raw: bytes, digest: str, queue: str, retry: bool
) -> list[Outcome]:
    """Re-value every account holding a symbol of ``marks``, then store the marks."""
    stored: dict[str, datetime | None] = {}
    for symbol in {m.symbol for m in marks}:
        doc = await _read_mark(deps, symbol)
        stored[symbol] = parse_timestamp(doc["timestamp"]) if doc is not None else None
    outcomes: list[Outcome] = []
    newer: list[_MarkIn] = []
    seen: set[str] = set()
    for m in sorted(marks, key=lambda m: (m.timestamp, m.symbol)):
        last = stored[m.symbol]
        if (last is not None and m.timestamp <= last) or m.mark_id in seen:
            outcomes.append(Outcome("IGNORED", m.mark_id, detail="not newer than the stored mark"))
        else:
            seen.add(m.mark_id)
            newer.append(m)
    key = f"marks:{digest}"
    # A retry also visits the holders of marks it now ignores: a failed first try may have
    # left pending alerts there (a newer mark stored meanwhile makes them "older").
    scan = {m.symbol for m in (marks if retry else newer)}
    if not scan:
        return outcomes
    holders = {symbol: dict(await deps.store.list_holders(symbol)) for symbol in sorted(scan)}
    accounts = sorted({acc for rows in holders.values() for acc in rows})
    sent: dict[str, list[Alert]] = {}
    revalued: set[str] = set()
    gate = asyncio.Semaphore(MARK_CONCURRENCY)

    async def revalue(account_id: str) -> None:
        mine = [m for m in newer if account_id in holders[m.symbol]]
        async with gate:
            result = await _revalue_account(deps, account_id, mine, key, raw, queue, retry)
            if result is None:
                return
            alerts, holds = result
            if mine and not holds:
                for symbol in sorted({m.symbol for m in mine}):
                    await deps.store.delete_holder(symbol, account_id, holders[symbol][account_id])
        if mine:
            revalued.add(account_id)
        for alert in alerts:
            sent.setdefault(alert.sourceId, []).append(alert)

    async def revalue_all(ids: Sequence[str]) -> None:
        # Accounts are independent (one conditional write each): re-value them
        # concurrently, wait for all, then fail with the first error (the host retries
        # the whole message).
        results = await asyncio.gather(*(revalue(a) for a in ids), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    await revalue_all(accounts)
    latest = {m.symbol: m for m in newer}  # sorted ascending: the last one is the newest
    await _store_marks(deps, latest)
    # List the holders again now that the marks are stored: a fill that opened a symbol
    # after the first listing may have valued it at the older mark, and its catch-up read
    # may have come before the store. A holder indexed after this listing reads the new
    # mark in its own catch-up (it indexes itself before that read): none is missed.
    # Only its newly listed symbols are new to an account re-valued in the first pass (the
    # others' marks are no longer newer than its positions'); such a second write goes
    # under its own record key (:func:`_record_key`).
    late: set[str] = set()
    for symbol in sorted(latest):
        for account_id, etag in await deps.store.list_holders(symbol):
            if account_id not in holders[symbol]:
                holders[symbol][account_id] = etag
                late.add(account_id)
    await revalue_all(sorted(late))
    for m in newer:
        outcomes.append(
            Outcome(
                "APPLIED",
                m.mark_id,
                alerts=tuple(sent.get(m.mark_id, ())),
                detail=f"{len(revalued)} account(s) re-valued",
            )
        )
    return outcomes


async def process_mark_message(
    raw: bytes, deps: Deps, queue: str | None = None, dequeue_count: int = 1
) -> list[Outcome]:
    """Process one body of the marks queue: MARK or MARKS (each entry stands alone).

    Every account holding a marked symbol is re-valued in one conditional write; risk-state
    changes raise alerts; the ``marks`` documents are written last.

    Raises:
        TransientStoreError, StaleAccountState: retry by the host.
    """
    token = _RETRY.set(dequeue_count > 1)
    try:
        return await _process_marks(raw, deps, queue, dequeue_count)
    finally:
        _RETRY.reset(token)


async def _process_marks(
    raw: bytes, deps: Deps, queue: str | None, dequeue_count: int
) -> list[Outcome]:
    queue = queue or deps.settings.marks_queue
    decoded, error = _decode(raw)
    digest = body_digest(raw)
    if decoded is None:
        assert error is not None
        return [
            await _reject_stateless(
                deps, raw, digest, _identity(None, digest), [(error.code, error.message)], queue
            )
        ]
    obj = decoded.obj
    kind = obj.get("type")
    if kind == "MARK":
        entries: list[tuple[Any, str, bool]] = [(obj, digest, True)]
    elif kind == "MARKS":
        try:
            batch = validate_inbound(obj)
        except ValidationError as exc:
            ident = _Identity(digest, None, None, None)
            return [await _reject_stateless(deps, raw, digest, ident, _schema_reasons(exc), queue)]
        assert isinstance(batch, Marks)
        entries = [(e, f"{digest}:{i}", False) for i, e in enumerate(batch.marks)]
    else:
        ident = _identity(obj, digest)
        reasons = [
            ("SCHEMA_INVALID", f"type must be MARK or MARKS on this queue, got {str(kind)[:40]!r}")
        ]
        return [await _reject_stateless(deps, raw, digest, ident, reasons, queue)]
    outcomes: list[Outcome] = []
    valid: list[_MarkIn] = []
    for entry, fallback, single in entries:
        checked = await _validate_mark_entry(deps, raw, digest, queue, entry, fallback, single)
        if isinstance(checked, Outcome):
            outcomes.append(checked)
        else:
            valid.append(checked)
    return outcomes + (
        await _apply_marks(deps, valid, raw, digest, queue, dequeue_count > 1) if valid else []
    )


# --- stale marks ----------------------------------------------------------------------


async def check_stale_marks(deps: Deps) -> list[Outcome]:
    """Alert STALE_MARK once per stale mark: a catalog symbol whose stored mark (or no
    mark at all) is older than ``STALE_MARK_AFTER_SECONDS`` while accounts hold it.

    The alert's sourceId is the stale mark's id (``<symbol>@none`` with no mark), so the
    timer sends one alert per stale mark, not one a minute.

    Raises:
        TransientStoreError: the store is unavailable (the timer fires again later).
    """
    now = deps.clock()
    limit = timedelta(seconds=deps.settings.stale_mark_after_seconds)
    outcomes: list[Outcome] = []
    for symbol in sorted(deps.catalog.instruments):
        doc = await _read_mark(deps, symbol)
        stamp = parse_timestamp(doc["timestamp"]) if doc is not None else None
        if stamp is not None and now - stamp <= limit:
            continue
        if not await deps.store.list_holders(symbol):
            continue
        source = str(doc["markId"]) if doc is not None else f"{symbol}@none"
        if doc is not None and doc.get("staleAlerted") == source:
            continue
        age = "no mark yet" if stamp is None else f"last mark {format_timestamp(stamp)}"
        spec = AlertSpec(
            "STALE_MARK",
            scope=symbol,
            symbol=symbol,
            reasons=(("STALE_MARK", f"{symbol}: {age}, older than {limit.total_seconds():g} s"),),
            metrics={"markPrice": parse_decimal(doc["markPrice"]) if doc is not None else None},
        )
        alerts = _alerts(deps, [spec], _Identity(source, None, None, symbol), now)
        await deps.sink.send(alerts)
        if doc is not None:
            marked = {k: v for k, v in doc.items() if not k.startswith("_")}
            marked["staleAlerted"] = source
            with contextlib.suppress(StaleAccountState):  # a newer mark arrived meanwhile
                await deps.store.write_mark(marked, doc.get("_etag"))
        outcomes.append(Outcome("APPLIED", source, alerts=tuple(alerts), detail="stale mark"))
    return outcomes


# --- poison ---------------------------------------------------------------------------


def _raw_body(raw: bytes) -> str:
    """At most 8 KiB of a body, as text (undecodable bytes replaced)."""
    return raw[:DEADLETTER_BODY_BYTES].decode("utf-8", errors="replace")


def note_failure(deps: Deps, raw: bytes, error: BaseException) -> None:
    """Remember the last error of a body (by digest) for its deadletter's ``lastError``."""
    deps.last_errors.put(body_digest(raw), f"{type(error).__name__}: {error}"[:1000])


async def _already_done(
    deps: Deps, raw: bytes, decoded: DecodedBody | None, digest: str
) -> Outcome | None:
    """Whether a poisoned body's event was in fact applied or rejected (then complete it)."""
    if decoded is None:
        if await deps.store.read_record(UNATTRIBUTED, f"rejection:{digest}") is not None:
            return Outcome("DUPLICATE", digest, detail="rejection exists")
        return None
    obj = decoded.obj
    ident = _identity(obj, digest)
    if obj.get("type") in ("FILL", "TRANSFER") and ident.account_id and ident.source_id != digest:
        account = await deps.store.read_account(ident.account_id)
        if account is not None and ident.source_id in account.recent_ids:
            return await _complete_duplicate(deps, account, ident.source_id, retry=True)
        for record_id in (ident.source_id, f"rejection:{ident.source_id}"):
            if await deps.store.read_record(ident.account_id, record_id) is not None:
                return Outcome(
                    "DUPLICATE", ident.source_id, ident.account_id, detail="record exists"
                )
        return None
    partition = ident.account_id or UNATTRIBUTED
    if await deps.store.read_record(partition, f"rejection:{ident.source_id}") is not None:
        return Outcome("DUPLICATE", ident.source_id, ident.account_id, detail="rejection exists")
    return None


async def process_poison(raw: bytes, deps: Deps, source_queue: str) -> Outcome:
    """Process a body the host gave up on (``<source_queue>-poison``).

    Completes an event that was in fact applied or rejected; otherwise — or when that
    cannot be determined (an unreadable document) — writes a deadletter (a repeat
    increments its ``count``) and sends one POISON_MESSAGE alert.

    Raises:
        TransientStoreError: the store is unavailable (the host retries).
    """
    digest = body_digest(raw)
    decoded, _error = _decode(raw)
    token = _RETRY.set(True)
    try:
        done = await _already_done(deps, raw, decoded, digest)
    except UnreadableDocument as exc:
        logger.warning("poisoned body %s: cannot tell whether it was applied: %s", digest, exc)
        done = None
    finally:
        _RETRY.reset(token)
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
        "rawBody": _raw_body(raw),
        "bodyDigest": digest,
        "accountId": ident.account_id,
        "sourceId": ident.source_id,
        "count": 1,
        "firstSeen": format_timestamp(now),
        "lastSeen": format_timestamp(now),
    }
    if last_error:
        document["lastError"] = last_error
    return await _deadletter(deps, document, ident, now, f"gave up on a message of {source_queue}")


async def _deadletter(
    deps: Deps, document: dict[str, Any], ident: _Identity, now: datetime, message: str
) -> Outcome:
    existing = await deps.store.read_deadletter(document["queue"], document["id"])
    alerts: list[Alert] = []
    if existing is None:
        reason = message + (f": {document['lastError']}" if document.get("lastError") else "")
        alerts = _alerts(
            deps,
            [
                AlertSpec(
                    "POISON_MESSAGE",
                    symbol=ident.symbol,
                    reasons=tuple(_clean([("POISON_MESSAGE", reason)])),
                )
            ],
            ident,
            now,
        )
        await deps.sink.send(alerts)
    await deps.store.record_deadletter(document)
    return Outcome("DEADLETTERED", ident.source_id, ident.account_id, tuple(alerts))
