"""Deadletters: a body (or an account a mark skipped) the app gave up on, and its one
POISON_MESSAGE alert.

The deadletter document is the alert's outbox: it is created with the alert as a pending
entry (one conditional create; a concurrent copy meets 409 and counts a repeat instead),
the alert is sent, and a second write removes the entry. A repeat increments ``count``
and sends nothing; a retry that finds the entry still pending finishes it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

from handlers.core.alerts import AlertSpec
from handlers.core.decode import body_digest
from handlers.core.documents import DeadLetter, Entry, FailureNote
from handlers.flows import outbox
from handlers.flows.conflicts import until_written
from handlers.flows.delivery import Identity, alerts_for, clean_reasons
from handlers.flows.deps import Deps, Outcome

__all__ = ["BodyRef", "dead_letter", "dead_letter_account", "note_failure"]

logger = logging.getLogger(__name__)

_ENTRY_KEY = "poison"
#: How long an invocation that failed waits to note its error (the store may be down).
NOTE_TIMEOUT = 2.0


@dataclass(frozen=True)
class BodyRef:
    """The body a deadletter is about: its digest, its first 8 KiB as text, and the
    configured name of the queue it came from (the deadletter's partition)."""

    digest: str
    raw_text: str
    queue: str


async def dead_letter(
    deps: Deps,
    body: BodyRef,
    letter_id: str,
    ident: Identity,
    message: str,
    retry: bool,
    last_error: str | None = None,
) -> Outcome:
    """Write (or count again) the deadletter ``letter_id`` and send its POISON_MESSAGE
    once. ``retry``: the invocations of this very delivery failed before (it may finish a
    pending alert another invocation left, whatever its age).

    Raises:
        StaleAccountState: every attempt lost its race.
        TransientStoreError, UnreadableDocument: the store failed.
        Exception: the alerts queue failed (the entry stays; a retry sends it).
    """

    async def attempt(_n: int) -> tuple[Outcome, DeadLetter | None]:
        """Create or count the deadletter; the letter whose pending alert to send next."""
        now = deps.clock()
        existing = await deps.store.read_deadletter(body.queue, letter_id)
        if existing is None:
            reason = message + (f": {last_error}" if last_error else "")
            spec = AlertSpec(
                "POISON_MESSAGE",
                symbol=ident.symbol,
                reasons=clean_reasons([("POISON_MESSAGE", reason)]),
            )
            alerts = alerts_for([spec], ident, now)
            letter = DeadLetter(
                id=letter_id,
                queue=body.queue,
                raw_body=body.raw_text,
                body_digest=body.digest,
                account_id=ident.account_id,
                source_id=ident.source_id,
                count=1,
                first_seen=now,
                last_seen=now,
                last_error=last_error,
                pending=(Entry(_ENTRY_KEY, letter_id, alerts, now),),
            )
            etag = await deps.store.write_deadletter(letter, None)  # 409 → the copy counts
            outcome = Outcome("DEADLETTERED", ident.source_id, ident.account_id, alerts)
            return outcome, replace(letter, etag=etag)
        pending = next((e for e in existing.pending if e.key == _ENTRY_KEY), None)
        take_over = pending is not None and outbox.may_take_over(pending, retry, now)
        counted = replace(
            existing,
            count=existing.count + (0 if retry else 1),  # a retry was counted by its first try
            last_seen=now,
            last_error=last_error or existing.last_error,
        )
        if counted != existing:
            counted = replace(
                counted, etag=await deps.store.write_deadletter(counted, existing.etag)
            )
        alerts = pending.alerts if take_over and pending is not None else ()
        outcome = Outcome("DEADLETTERED", ident.source_id, ident.account_id, alerts)
        return outcome, counted if take_over else None

    outcome, to_send = await until_written(attempt, deps.sleep, f"deadletter {letter_id}")
    if to_send is not None:
        await _send_and_clear(deps, to_send)
    return outcome


async def _send_and_clear(deps: Deps, letter: DeadLetter) -> None:
    """Send the pending alert, then remove it from the deadletter (the entry's "done")."""

    async def clear(n: int) -> None:
        current = letter if n == 0 else await deps.store.read_deadletter(letter.queue, letter.id)
        if current is not None and current.pending:  # (a repeat may have counted meanwhile)
            await deps.store.write_deadletter(replace(current, pending=()), current.etag)

    await outbox.finish_unrecorded(deps, letter.pending, clear, f"deadletter {letter.id}")


async def dead_letter_account(
    deps: Deps,
    body: BodyRef,
    account_id: str,
    mark_id: str,
    symbol: str,
    error: Exception,
    retry: bool,
) -> None:
    """A mark skipped an account it cannot read: dead-letter ``<digest>:<accountId>``
    (``retry``: the visiting message failed before).

    Raises:
        StaleAccountState, TransientStoreError: as :func:`dead_letter`.
        Exception: the alerts queue failed.
    """
    ident = Identity(mark_id, account_id, None, symbol)
    await dead_letter(
        deps,
        body,
        f"{body.digest}:{account_id}",
        ident,
        "a mark skipped an unreadable account document",
        retry=retry,
        last_error=f"{type(error).__name__}: {error}"[:1000],
    )


async def note_failure(deps: Deps, raw: bytes, error: BaseException, queue: str) -> None:
    """Keep the error an invocation met on a body of ``queue`` (by digest), for the
    ``lastError`` of its deadletter whichever instance poisons it. Best effort: a store
    that cannot take it within :data:`NOTE_TIMEOUT` seconds is left alone (never raises).
    """
    note = FailureNote(
        queue, body_digest(raw), f"{type(error).__name__}: {error}"[:1000], deps.clock()
    )
    try:
        await asyncio.wait_for(deps.store.note_failure(note), NOTE_TIMEOUT)
    except Exception as exc:
        logger.info("could not note the failure of %s: %s", note.body_digest, exc)
