"""The one exactly-once mechanism: an outbox entry committed with the state it follows from.

Every flow that changes a document and then has effects outside it (index a holder, send
alerts, write a record) commits those effects as an :class:`~handlers.core.documents.Entry`
in the SAME conditional write as the change, then finishes the entry::

    commit (state + entry, one conditional write) ─[1]─▶ (index its bands) ─[2]─▶ send
    alerts ─[3]─▶ create the record ─[4]─▶ … a later write prunes the entry (sweep)

The record's existence means "done" (it is written last). A mark pass's entries share one
record per invocation instead (:class:`~handlers.core.documents.PassSent`, listing the
accounts whose alerts it sent; someone else who finishes such an entry writes a sent
marker of the same id in the account's partition). An entry without a record
(deadletters, stale marks) is done once a write removes it. Who finishes an entry:

- the invocation that committed it, at once;
- a **retry** of the same message (dequeue count > 1, or the poison path), whatever the
  entry's age: the invocations before it failed (:func:`complete`);
- a **first delivery** of a copy never finishes a young entry: its owner is in flight, and
  either finishes it or fails and is retried (so copies never double-send);
- **anyone** writing the document once the entry is older than :data:`LEASE` (its owner
  is gone): the sweep adopts it (:func:`settle`).

Nothing here depends on what a process remembers: an entry is pruned only when a sweep has
seen its record, and a sweep runs when a write finds :data:`SWEEP_AT` entries on the
document, with ONE query for all of them. ``docs/exactly-once.md`` draws the states and the crash points.

Bodies with no document to change (stateless rejections) use :func:`claim`: the record is
created first, its creator sends, then marks the alerts sent (``@sent:<record id>``); a
retry that finds the record unmarked sends them again and marks them, a first delivery
that finds it sends nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from handlers.core.contracts import Alert
from handlers.core.documents import Entry, OrderRecord, Record, SentMarker, sent_marker_id
from handlers.flows.conflicts import until_written
from handlers.flows.delivery import Delivery
from handlers.flows.deps import Deps

__all__ = [
    "LEASE",
    "SWEEP_AT",
    "Claimed",
    "Completed",
    "claim",
    "complete",
    "complete_claim",
    "complete_source",
    "finish",
    "finish_unrecorded",
    "is_done",
    "may_take_over",
    "pass_sent",
    "settle",
]

logger = logging.getLogger(__name__)

#: How long the owner of an entry may still be finishing it: the queue message lease (the
#: host renews it while an invocation runs, and a mark's work per invocation is bounded
#: well within it). Older entries whose record is missing are adopted by a sweep.
LEASE = timedelta(minutes=10)
#: A write that finds this many entries (or more) on a document first sweeps them (one
#: query), so a document carries at most this many plus the one it adds.
SWEEP_AT = 16
#: Pass sent markers a process keeps (they are immutable; a retry meets one per account).
PASS_SENT_KEPT = 1024


def may_take_over(entry: Entry, retry: bool, now: datetime) -> bool:
    """Whether someone other than the entry's owner may finish it now: a ``retry`` of its
    message, or anyone once the entry is older than :data:`LEASE`."""
    return retry or now - entry.committed_at >= LEASE


async def finish(deps: Deps, partition: str, entry: Entry, record: Record | None = None) -> None:
    """Finish an entry (idempotent): send its alerts, then create its record — the
    entry's own, or ``record`` for an entry that carries only the record's id (its
    message rebuilt it). (Index entries are written by the flow, after the account and
    before this: :func:`handlers.flows.banding.write_index`.)

    Raises:
        TransientStoreError, UnreadableDocument: the store failed (the entry stays).
        Exception: the alerts queue failed (the entry stays).
    """
    if entry.alerts:
        await deps.sink.send(entry.alerts)
    if entry.done_in is not None and entry.record_id is not None:  # a pass's entry
        marker = SentMarker(entry.record_id.removeprefix("@sent:"), partition, deps.clock())
        await deps.store.create_record(marker)
        return
    done = entry.record or record
    if isinstance(done, OrderRecord):  # an order's decision goes out with its alerts
        await deps.decisions.send((done.decision,))
    if done is not None:
        await deps.store.create_record(done)


async def pass_sent(deps: Deps, partition: str, marker_id: str) -> frozenset[str]:
    """The accounts a pass's sent marker covers (empty when it does not exist yet).

    Raises:
        TransientStoreError, UnreadableDocument: the store failed.
    """
    kept = deps.runtime.pass_sent
    if marker_id in kept:
        return kept[marker_id]
    found = await deps.store.read_pass_sent(partition, marker_id)
    if found is None:
        return frozenset()
    if len(kept) >= PASS_SENT_KEPT:
        kept.pop(next(iter(kept)))
    kept[marker_id] = frozenset(found.accounts)
    return kept[marker_id]


async def is_done(deps: Deps, partition: str, entry: Entry) -> bool:
    """Whether the entry's record (or, for a pass's entry, its invocation's marker
    listing this account, or a sent marker of the same id here) exists.

    Raises:
        TransientStoreError, UnreadableDocument: the store failed.
    """
    assert entry.done_id is not None
    if entry.done_in is None:
        return await deps.store.read_record(partition, entry.done_id) is not None
    if partition in await pass_sent(deps, entry.done_in, entry.done_id):
        return True
    return bool(await deps.store.existing_records(partition, [entry.done_id]))


async def finish_unrecorded(
    deps: Deps, entries: Sequence[Entry], clear: Callable[[int], Awaitable[None]], what: str
) -> None:
    """Finish entries that have no record (deadletters, stale marks): send their alerts,
    then ``clear(attempt)`` removes them from their document in a conditional write (their
    "done"; attempt 0 may use the document as the caller holds it, later ones re-read).

    Raises:
        StaleAccountState: every attempt to clear lost its race.
        TransientStoreError: the store failed.
        Exception: the alerts queue failed (the entries stay).
    """
    for entry in entries:
        if entry.alerts:
            await deps.sink.send(entry.alerts)
    await until_written(clear, deps.sleep, what)


@dataclass(frozen=True)
class Completed:
    """What :func:`complete` found: ``DONE`` (its record exists), ``IN_FLIGHT`` (a young
    entry of a first delivery: left to its owner) or ``FINISHED`` (finished here, alerts
    sent again with the same ids)."""

    state: Literal["DONE", "IN_FLIGHT", "FINISHED"]
    alerts: tuple[Alert, ...] = ()


async def complete(
    deps: Deps,
    partition: str,
    entry: Entry,
    delivery: Delivery,
    rebuild: Callable[[Entry], Record] | None = None,
) -> Completed:
    """Complete an entry this delivery's message committed (a copy or a retry found it);
    ``rebuild`` makes the record of an entry that carries only its id.

    Raises:
        TransientStoreError, UnreadableDocument: the store failed.
        Exception: the alerts queue failed.
    """
    if await is_done(deps, partition, entry):
        return Completed("DONE")
    if not may_take_over(entry, delivery.retry, deps.clock()):
        return Completed("IN_FLIGHT")
    logger.warning("finishing %s of %s left by an earlier invocation", entry.key, partition)
    record = entry.record or (rebuild(entry) if rebuild is not None else None)
    await finish(deps, partition, entry, record)
    return Completed("FINISHED", entry.alerts)


async def complete_source(
    deps: Deps, partition: str, entries: Sequence[Entry], delivery: Delivery
) -> list[Completed]:
    """:func:`complete` every entry of one message (its ``source``) found on a document.

    Raises:
        TransientStoreError, UnreadableDocument: the store failed.
        Exception: the alerts queue failed.
    """
    return [await complete(deps, partition, e, delivery) for e in entries]


async def settle(
    deps: Deps, partition: str, entries: Sequence[Entry], keep: frozenset[str] = frozenset()
) -> set[str]:
    """The keys of entries a write may drop. Below :data:`SWEEP_AT` entries: none (no
    request). Else one query finds which records exist: those entries are done; one older
    than :data:`LEASE` whose record is missing is adopted (finished here) and dropped; a
    young one stays with its owner. ``keep`` are entries the caller handles itself.

    Raises:
        TransientStoreError, UnreadableDocument: the store failed.
        Exception: the alerts queue failed while adopting an entry.
    """
    if len(entries) < SWEEP_AT:
        return set()
    candidates = [e for e in entries if e.key not in keep and e.done_id is not None]
    found = await deps.store.existing_records(
        partition, [e.done_id for e in candidates if e.done_id is not None]
    )
    for entry in candidates:  # a pass's entry: its invocation's marker lists the account
        done_id, done_in = entry.done_id, entry.done_in
        pending = done_in is not None and done_id is not None and done_id not in found
        if pending and partition in await pass_sent(deps, str(done_in), str(done_id)):
            found.add(str(done_id))
    now = deps.clock()
    done: set[str] = set()
    for entry in candidates:
        if entry.done_id in found:
            done.add(entry.key)
        elif (entry.record is not None or entry.done_in is not None) and may_take_over(
            entry, False, now
        ):
            logger.warning("adopting %s of %s: its owner is gone", entry.key, partition)
            await finish(deps, partition, entry)
            done.add(entry.key)
        # (an entry without its record is its message's to finish: it comes back)
    return done


@dataclass(frozen=True)
class Claimed:
    """What a claim did: ``NEW`` (created the record and sent), ``SEEN`` (found it sent, or
    a first delivery found it: nothing sent) or ``RESENT`` (a retry found it unsent and
    sent its alerts)."""

    state: Literal["NEW", "SEEN", "RESENT"]
    alerts: tuple[Alert, ...] = ()


async def claim(deps: Deps, record: Record, delivery: Delivery) -> Claimed:
    """An effect with no document to change: create ``record`` first (the claim), send its
    alerts, then mark them sent (``@sent:<record id>``, the claim's "done"). A first
    delivery that finds the record sends nothing (its creator is in flight); a retry
    completes it (:func:`complete_claim`).

    Raises:
        TransientStoreError, UnreadableDocument: the store failed.
        Exception: the alerts queue failed (a retry sends them).
    """
    if await deps.store.create_record(record):
        await _send_claimed(deps, record)
        return Claimed("NEW", record.alerts)
    if not delivery.retry:
        return Claimed("SEEN")
    return await complete_claim(deps, record.account_id, record.id) or Claimed("SEEN")


async def complete_claim(deps: Deps, partition: str, record_id: str) -> Claimed | None:
    """A retry (or the poison path) meets a claimed record: None when there is none; else
    ``SEEN`` when its alerts were marked sent, or ``RESENT`` after sending them (with the
    same ids: its creator may have died between the record and the send) and marking.

    Raises:
        TransientStoreError, UnreadableDocument: the store failed.
        Exception: the alerts queue failed.
    """
    marker = sent_marker_id(record_id)
    found = await deps.store.existing_records(partition, [record_id, marker])
    if record_id not in found:
        return None
    if marker in found:
        return Claimed("SEEN")
    record = await deps.store.read_record(partition, record_id)
    if record is None:  # pragma: no cover - records are never deleted
        return None
    await _send_claimed(deps, record)
    return Claimed("RESENT", record.alerts)


async def _send_claimed(deps: Deps, record: Record) -> None:
    await deps.sink.send(record.alerts)
    await deps.store.create_record(SentMarker(record.id, record.account_id, deps.clock()))
