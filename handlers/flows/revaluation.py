"""Re-value one account at some marks, in one conditional write: what a mark's pass does
to each holder, and what a fill's catch-up does to its own account.

A mark moves a position only forward (a mark not newer than the position's own changes
nothing), so visits in any order, repeated or concurrent, end at the newest mark. The
alerts the write raises are committed as an outbox entry under ``key`` and finished at
once; a later visit under the same key (a retry, a copy) completes that entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

from handlers.core.alerts import risk_alerts
from handlers.core.contracts import Alert
from handlers.core.documents import AccountDoc, Entry, PassMark, RevaluationRecord
from handlers.core.state import apply_mark
from handlers.core.valuation import settle_risk_states, value
from handlers.errors import UnreadableDocument
from handlers.flows import outbox
from handlers.flows.conflicts import until_written
from handlers.flows.deadletters import BodyRef, dead_letter_account
from handlers.flows.delivery import Delivery, Identity, alerts_for
from handlers.flows.deps import Deps

__all__ = ["Revalued", "Visit", "revalue"]


@dataclass(frozen=True)
class Visit:
    """One visit of an account: apply ``marks`` (in order) under the entry ``key`` of the
    message ``source``; ``delivery`` decides whether this visit may finish an entry of the
    same key another invocation left; ``body`` is what a deadletter of an unreadable
    account names."""

    marks: tuple[PassMark, ...]
    key: str
    source: str
    delivery: Delivery
    body: BodyRef


@dataclass(frozen=True)
class Revalued:
    """The alerts a visit sent (its own and those of an entry it completed), whether the
    account still holds a visited symbol, and whether it wrote the account."""

    alerts: tuple[Alert, ...]
    holds: bool
    wrote: bool


async def _write_key(
    deps: Deps, account_id: str, visit: Visit, wrote_before: bool, fresh: Sequence[PassMark]
) -> str:
    """The entry key of this write: the visit's key, unless an earlier write of the same
    message used it on this account (its entry is here, or — on a retry — its record
    exists); then ``<key>:#<16 hex>`` of the symbols this write applies, so that the
    second write has a record of its own (a retry computes the same key).

    Raises:
        TransientStoreError: the store is unavailable.
    """
    used = wrote_before
    if not used and visit.delivery.retry:
        used = bool(await deps.store.existing_records(account_id, [f"@{visit.key}"]))
    if not used:
        return visit.key
    symbols = ",".join(sorted({m.symbol for m in fresh}))
    return f"{visit.key}:#{hashlib.sha256(symbols.encode()).hexdigest()[:16]}"


def _fresh(account: AccountDoc, marks: Sequence[PassMark]) -> list[PassMark]:
    """The marks newer than an open position's own mark on their symbol."""
    return [
        m
        for m in marks
        if any(
            p.is_open
            and p.symbol == m.symbol
            and (p.mark_time is None or m.timestamp > p.mark_time)
            for p in account.ledger.positions
        )
    ]


async def revalue(deps: Deps, account_id: str, visit: Visit) -> Revalued | None:
    """Visit one account; None when its document cannot be read (then it is dead-lettered,
    ``<digest>:<accountId>``, and the caller goes on).

    Raises:
        StaleAccountState: every attempt lost its race.
        TransientStoreError: the store is unavailable.
        Exception: the alerts queue failed (the entry stays; a retry finishes it).
    """

    async def attempt(n: int) -> Revalued | None:
        async with deps.runtime.account_locks.hold(account_id):
            return await _visit_once(deps, account_id, visit, cached=n == 0)

    return await until_written(attempt, deps.sleep, f"account {account_id}")


async def _visit_once(deps: Deps, account_id: str, visit: Visit, cached: bool) -> Revalued | None:
    try:
        account = await deps.store.read_account(account_id, fresh=not cached)
        # A decision without a write (nothing to move, or an entry to complete) must rest
        # on a fresh read: a stale cached copy could hide a position or an entry.
        if (
            account is not None
            and cached
            and (not _fresh(account, visit.marks) or account.entry(visit.key) is not None)
        ):
            account = await deps.store.read_account(account_id, fresh=True)
    except UnreadableDocument as exc:
        if visit.marks:
            first = visit.marks[0]
            await dead_letter_account(
                deps,
                visit.body,
                account_id,
                first.mark_id,
                first.symbol,
                exc,
                visit.delivery.retry,
            )
        return None
    if account is None:
        return Revalued((), False, False)
    symbols = {m.symbol for m in visit.marks}
    holds = any(p.is_open and p.symbol in symbols for p in account.ledger.positions)
    done: tuple[Alert, ...] = ()
    own = [e for e in account.pending if e.key.split(":#")[0] == visit.key]
    for left in own:
        done += (await outbox.complete(deps, account_id, left, visit.delivery)).alerts
    fresh = _fresh(account, visit.marks)
    if not fresh:
        return Revalued(done, holds, False)
    key = await _write_key(deps, account_id, visit, bool(own), fresh)
    drop = await outbox.settle(deps, account_id, account.pending)
    ledger = account.ledger
    now = deps.clock()
    raised: list[Alert] = []
    ratio = deps.settings.margin_call_ratio
    for mark in fresh:  # in order: each transition alerts with its own mark id
        moved = apply_mark(ledger, mark.symbol, mark.price, mark.timestamp)
        after = value(moved, deps.catalog, ratio)
        ident = Identity(mark.mark_id, account_id, None, mark.symbol)
        raised += alerts_for(risk_alerts(ledger, after), ident, now)
        ledger = settle_risk_states(moved, after)
    new = replace(account.without(drop), ledger=ledger, version=account.version + 1, updated_at=now)
    entry: Entry | None = None
    if raised:  # an entry (and a record) only when the write raises alerts
        record = RevaluationRecord(
            source=key,
            account_id=account_id,
            marks={m.symbol: m.timestamp for m in fresh},
            alerts=tuple(raised),
            created_at=now,
        )
        entry = Entry(key, visit.source, record.alerts, now, record)
        new = new.with_entry(entry)
    await deps.store.write_account(new, value(ledger, deps.catalog, ratio), account.etag)
    if entry is not None:
        await outbox.finish(deps, account_id, entry)
    return Revalued(done + tuple(raised), True, True)
