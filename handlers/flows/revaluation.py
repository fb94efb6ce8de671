"""Re-value one account at some marks, in one conditional write: what a mark's pass does
to an account whose band it leaves, and what a fill's catch-up does to its own account.

The visit walks the marks in order. A mark inside the account's band on its symbol
changes no risk state (the band is sound), so it is passed over: the stored figures stay
as of ``valuedAt``. A mark that leaves the band re-values the account at that mark and the
latest marks of its other symbols (:func:`handlers.core.revalue.revalue_at`; its alerts
carry that mark's id) and sets new bands around them. A mark moves a position only
forward, so visits in any order, repeated or concurrent, never go back. The alerts are
committed as an outbox entry under ``key`` and finished at once; a later visit under the
same key (a retry, a copy) completes that entry.

A mark pass sends each account's alerts right after its write and defers the rest
(:class:`Deferred`): after all its accounts are written, :func:`finish_pass` writes their
index entries in a few batches per partition, reads the marks once for the post-check,
and creates ONE sent marker for the invocation
(:class:`~handlers.core.documents.PassSent`) instead of a record per account. A crash anywhere before that marker leaves the entries pending: a retry of the
message finishes them (the alerts again, same ids), as for any entry.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from handlers.core.alerts import AlertSpec
from handlers.core.contracts import Alert
from handlers.core.documents import (
    AccountDoc,
    Entry,
    HolderEntry,
    MarkDoc,
    PassMark,
    PassSent,
    RevaluationRecord,
    sent_marker_id,
)
from handlers.core.revalue import MarkAt, revalue_at
from handlers.core.valuation import value
from handlers.errors import UnreadableDocument
from handlers.flows import outbox
from handlers.flows.banding import (
    IndexWrites,
    apply_index,
    banded,
    entries_of,
    held_symbols,
    latest_marks,
    outside_band,
    write_index,
)
from handlers.flows.conflicts import until_written
from handlers.flows.deadletters import BodyRef, dead_letter_account
from handlers.flows.delivery import Delivery, Identity, alerts_for
from handlers.flows.deps import Deps
from handlers.flows.stored_marks import read_mark

__all__ = ["Board", "Deferred", "Revalued", "Visit", "finish_pass", "post_check", "revalue"]


class Board:
    """The marks a pass values accounts at besides its own: for a symbol of the message,
    its stored mark before the message (``prior``); for any other, the latest stored mark,
    read once per invocation."""

    def __init__(self, deps: Deps, prior: Mapping[str, PassMark | None]) -> None:
        self._deps = deps
        self._prior = dict(prior)
        self._read: dict[str, MarkAt | None] = {}
        self._lock = asyncio.Lock()

    async def mark(self, symbol: str) -> MarkAt | None:
        """The mark of ``symbol`` to value at, or None (no stored mark).

        Raises:
            TransientStoreError, UnreadableDocument: the store failed.
        """
        if symbol in self._prior:
            prior = self._prior[symbol]
            return None if prior is None else (symbol, prior.price, prior.timestamp)
        async with self._lock:
            if symbol not in self._read:
                stored = await read_mark(self._deps, symbol)
                self._read[symbol] = _at(stored)
            return self._read[symbol]


def _at(mark: MarkDoc | None) -> MarkAt | None:
    return None if mark is None else (mark.symbol, mark.price, mark.timestamp)


@dataclass(frozen=True)
class Written:
    """An account a pass wrote (``before`` → ``after``; ``before`` None: not written, its
    current entries to re-assert), the entry it committed, and what listed it."""

    before: AccountDoc | None
    after: AccountDoc
    entry: Entry | None
    visit: Visit


@dataclass
class Deferred:
    """What one invocation of a mark pass (key ``marks:<digest>``) leaves to
    :func:`finish_pass`: its entries are done once its sent marker (``chunk``: this
    invocation's, random) lists their account."""

    key: str
    chunk: str = field(default_factory=lambda: secrets.token_hex(8))
    written: list[Written] = field(default_factory=list)
    #: The accounts whose entry's alerts were sent (right after their write).
    sent: set[str] = field(default_factory=set)

    @property
    def done_id(self) -> str:
        return sent_marker_id(f"{self.key}:{self.chunk}")

    @property
    def done_in(self) -> str:
        return f"@{self.key}"


@dataclass(frozen=True)
class Visit:
    """One visit of an account: walk ``marks`` (in order) under the entry ``key`` of the
    message ``source``; ``delivery`` decides whether this visit may finish an entry of the
    same key another invocation left; ``body`` is what a deadletter of an unreadable
    account names; ``board`` gives the other symbols' marks (None: the latest stored);
    ``listed`` are the index entries that sent the pass here (removed when stale)."""

    marks: tuple[PassMark, ...]
    key: str
    source: str
    delivery: Delivery
    body: BodyRef
    board: Board | None = None
    listed: tuple[HolderEntry, ...] = field(default=())
    #: A pass's invocation: index, post-check, send and mark done later, for all its
    #: accounts at once (:func:`finish_pass`); None: here, for this account.
    deferred: Deferred | None = None


@dataclass(frozen=True)
class Revalued:
    """The alerts a visit sent (its own and those of an entry it completed), whether the
    account still holds a visited symbol, and whether it wrote the account."""

    alerts: tuple[Alert, ...]
    holds: bool
    wrote: bool
    #: What the write left for the post-check: the account and each new entry's mark.
    written: AccountDoc | None = None
    indexed: Mapping[str, MarkDoc | None] = field(default_factory=dict)


async def _write_key(
    deps: Deps, account_id: str, visit: Visit, wrote_before: bool, fresh: Sequence[PassMark]
) -> str:
    """The entry key of this write: the visit's key, unless an earlier write of the same
    message used it on this account (its entry is here, or — on a retry — its record
    exists); then ``<key>:~<16 hex>`` of the symbols this write applies, so that the
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
    # ('~': Cosmos refuses '#' (and '/', '\\', '?') in ids; ':#' keys of earlier versions
    # are still read.)
    return f"{visit.key}:~{hashlib.sha256(symbols.encode()).hexdigest()[:16]}"


def _base_key(key: str) -> str:
    """An entry key without the suffix of a later write (``:~<hex>``, ``:#<hex>``)."""
    return key.split(":~")[0].split(":#")[0]


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

    result = await until_written(attempt, deps.sleep, f"account {account_id}")
    if result is None or result.written is None or visit.deferred is not None:
        return result
    caught = await post_check(deps, result.written, result.indexed, visit)
    return Revalued(result.alerts + caught, result.holds, result.wrote)


async def _walk(
    deps: Deps, account: AccountDoc, fresh: Sequence[PassMark], board: Board
) -> tuple[AccountDoc, list[tuple[PassMark, list[AlertSpec]]], list[PassMark]]:
    """Walk the fresh marks over the account: each one that leaves its band re-values it
    (at that mark and the marks so far of its other symbols) and re-bands it. Returns the
    account as the walk leaves it, the alert specs by mark, and the marks that re-valued.

    Raises:
        TransientStoreError, UnreadableDocument: a mark read failed.
    """
    catalog, ratio = deps.catalog, deps.settings.margin_call_ratio
    current = account
    walked: dict[str, PassMark] = {}
    raised: list[tuple[PassMark, list[AlertSpec]]] = []
    moved: list[PassMark] = []
    for mark in fresh:
        if not outside_band(current.bands, mark.symbol, mark.price):
            walked[mark.symbol] = mark
            continue
        at: list[MarkAt] = []
        for symbol in held_symbols(current.ledger):
            if symbol == mark.symbol:
                continue
            seen = walked.get(symbol)
            other = (symbol, seen.price, seen.timestamp) if seen else await board.mark(symbol)
            if other is not None:
                at.append(other)
        at.append((mark.symbol, mark.price, mark.timestamp))
        ledger, specs, _ = revalue_at(current.ledger, at, catalog, ratio)
        walked[mark.symbol] = mark
        moved.append(mark)
        raised.append((mark, specs))
        step = replace(current, ledger=ledger, version=account.version + 1)
        current = banded(deps, current, step)
    return current, raised, moved


async def _visit_once(deps: Deps, account_id: str, visit: Visit, cached: bool) -> Revalued | None:
    try:
        account = await deps.store.read_account(account_id, fresh=not cached)
        # A decision without a write (nothing to move, or an entry to complete) must rest
        # on a fresh read: a stale cached copy could hide a position or an entry.
        if (
            account is not None
            and cached
            and (not _leaves(account, visit.marks) or account.entry(visit.key) is not None)
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
        await _drop_stale(deps, None, visit.listed)
        return Revalued((), False, False)
    symbols = {m.symbol for m in visit.marks}
    holds = any(p.is_open and p.symbol in symbols for p in account.ledger.positions)
    done: tuple[Alert, ...] = ()
    own = [e for e in account.pending if _base_key(e.key) == visit.key]
    for left in own:
        done += (await outbox.complete(deps, account_id, left, visit.delivery)).alerts
    fresh = _fresh(account, visit.marks)
    board = visit.board or Board(deps, {})
    walked, raised, moved = await _walk(deps, account, fresh, board) if fresh else (account, [], [])
    if not moved:
        if visit.deferred is not None:
            # Not moved: re-assert its entries (and post-check them) when stale ones
            # listed it, or when it finished an entry a failed try left — that try may
            # have died before its index write and its post-check.
            if own or _stale(deps, account, visit.listed, None):
                visit.deferred.written.append(Written(None, account, None, visit))
            return Revalued(done, holds, False)
        tidied = await _drop_stale(deps, account, visit.listed)
        return Revalued(done, holds, False, account if tidied else None, tidied)
    key = await _write_key(deps, account_id, visit, bool(own), moved)
    drop = await outbox.settle(deps, account_id, account.pending)
    now = deps.clock()
    alerts: list[Alert] = []
    for mark, specs in raised:  # in order: each transition alerts with its own mark id
        ident = Identity(mark.mark_id, account_id, None, mark.symbol)
        alerts += alerts_for(specs, ident, now)
    new = replace(walked, pending=account.without(drop).pending, updated_at=now)
    entry: Entry | None = None
    deferred = visit.deferred
    if alerts and deferred is not None:  # done by the invocation's sent marker
        entry = Entry(key, visit.source, tuple(alerts), now, None, (), deferred.done_id)
        entry = replace(entry, done_in=deferred.done_in)
        new = new.with_entry(entry)
    elif alerts:  # an entry (and a record) only when the write raises alerts
        record = RevaluationRecord(
            source=key,
            account_id=account_id,
            marks={m.symbol: m.timestamp for m in moved},
            alerts=tuple(alerts),
            created_at=now,
        )
        entry = Entry(key, visit.source, record.alerts, now, record)
        new = new.with_entry(entry)
    ratio = deps.settings.margin_call_ratio
    await deps.store.write_account(new, value(new.ledger, deps.catalog, ratio), account.etag)
    if deferred is not None:
        # Its alerts go now (the visit's next request), its index entries and the "done"
        # with the other accounts' when the invocation finishes (:func:`finish_pass`).
        deferred.written.append(Written(account, new, entry, visit))
        if entry is not None:
            await deps.sink.send(entry.alerts)
            deferred.sent.add(account_id)
        return Revalued(done + tuple(alerts), True, True)
    indexed = await write_index(deps, account, new)
    await _drop_stale(deps, new, visit.listed, replaced=account)
    if entry is not None:
        await outbox.finish(deps, account_id, entry)
    return Revalued(done + tuple(alerts), True, True, new, indexed)


def _leaves(account: AccountDoc, marks: Sequence[PassMark]) -> bool:
    """Whether any fresh mark leaves the account's band (a write will follow)."""
    return any(outside_band(account.bands, m.symbol, m.price) for m in _fresh(account, marks))


def _stale(
    deps: Deps,
    account: AccountDoc | None,
    listed: Sequence[HolderEntry],
    replaced: AccountDoc | None,
) -> list[HolderEntry]:
    """The listed index entries the account no longer calls for (an older bands version,
    another shard, a symbol it closed), nor ``replaced`` (the version just written over,
    whose entries the write replaces itself)."""
    wanted = (
        {(e.symbol, e.shard, e.entry_id) for e in entries_of(deps, account)} if account else set()
    )
    if replaced is not None:
        wanted |= {(e.symbol, e.shard, e.entry_id) for e in entries_of(deps, replaced)}
    return [e for e in listed if (e.symbol, e.shard, e.entry_id) not in wanted]


async def _drop_stale(
    deps: Deps,
    account: AccountDoc | None,
    listed: Sequence[HolderEntry],
    replaced: AccountDoc | None = None,
) -> dict[str, MarkDoc | None]:
    """Remove the listed index entries the account no longer calls for (:func:`_stale`),
    each only while unchanged. Its current entries are re-asserted first (a crash may have
    kept them from being written), and their marks returned for the post-check — unless
    the caller has just written them, replacing the entries of ``replaced``.

    Raises:
        TransientStoreError: the store failed.
    """
    stale = _stale(deps, account, listed, replaced)
    if not stale:
        return {}
    indexed = {}
    if replaced is None and account is not None and account.bands:
        indexed = await write_index(deps, None, account)
    await asyncio.gather(*(deps.store.delete_holder(e) for e in stale))
    return indexed


async def finish_pass(deps: Deps, deferred: Deferred) -> tuple[Alert, ...]:
    """Finish what a pass's invocation wrote (its alerts already sent, each right after
    its account's write): every account's new index entries (and the removal of the stale
    ones that listed it) in batches per partition, the post-check marks read once per
    symbol after them, ONE sent marker listing the accounts whose alerts went out (also
    when the index write failed), then the post-check's catch-ups. Returns the
    catch-ups' alerts.

    Raises:
        TransientStoreError, UnreadableDocument: the store failed (the entries stay; a
            retry re-asserts the index and finishes them).
        Exception: the alerts queue failed in a catch-up (as above).
    """
    writes = IndexWrites()
    checks: list[tuple[Written, list[str]]] = []
    for item in deferred.written:
        stale = _stale(deps, item.after, item.visit.listed, item.before)
        symbols = writes.add(deps, item.before, item.after)  # (before None: re-assert)
        for entry in stale:
            writes.drop(entry)
        checks.append((item, symbols))
    # The alerts went out whatever fails next: the marker says so first (listing the
    # accounts whose send succeeded; one whose send failed stays to the retry).
    try:
        marks = await apply_index(deps, writes, read=True)
        unread = sorted(s for s, m in marks.items() if m is None)
        if unread:
            marks.update(await latest_marks(deps, unread))
    finally:
        if deferred.sent:
            accounts = tuple(sorted(deferred.sent))
            marker = PassSent(deferred.key, deferred.chunk, accounts, deps.clock())
            await deps.store.create_record(marker)
    # The post-check, once the entries are written: a retry does not find an account its
    # try already moved, so only this read can catch a mark that queried the index
    # before the new entries.
    caught: tuple[Alert, ...] = ()
    for item, symbols in checks:
        indexed = {s: marks.get(s) for s in symbols}
        caught += await post_check(deps, item.after, indexed, item.visit)
    return caught


async def post_check(
    deps: Deps, account: AccountDoc, indexed: Mapping[str, MarkDoc | None], visit: Visit
) -> tuple[Alert, ...]:
    """After new entries: a mark stored since may have queried the index before them; when
    one (``indexed``: each symbol's stored mark, read after its entry) lies outside the new
    band, re-value at it now (key ``mark:<markId>:<source>``).

    Raises:
        as :func:`revalue`.
    """
    sent: tuple[Alert, ...] = ()
    for symbol, mark in sorted(indexed.items()):
        if mark is None or not outside_band(account.bands, symbol, mark.price):
            continue
        if not _fresh(account, [PassMark(symbol, mark.price, mark.timestamp, mark.mark_id)]):
            continue
        applied = PassMark(symbol, mark.price, mark.timestamp, mark.mark_id)
        key = f"mark:{mark.mark_id}:{visit.source}"
        catch_up = Visit((applied,), key, visit.source, visit.delivery, visit.body)
        result = await revalue(deps, account.account_id, catch_up)
        if result is not None:
            sent += result.alerts
    return sent
