"""The trades queue: FILL and TRANSFER, each applied (or rejected on account state) exactly
once on its account.

Route of one body: decode and validate (a body that cannot be right is rejected without
touching the account: :mod:`handlers.flows.rejections`) → read the account → its id
already there: a duplicate (complete what its first delivery left) → else decide the new
state, commit it with the event's outbox entry in ONE conditional write → finish the entry
(index opened symbols, send alerts, write the record) → catch up on a mark stored while
the fill was in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from pydantic import ValidationError

from handlers.core.alerts import fill_alerts, risk_alerts
from handlers.core.contracts import Alert, Fill, Transfer, validate_inbound
from handlers.core.decimals import format_decimal
from handlers.core.documents import AccountDoc, Entry, EventRecord, MarkDoc, Record
from handlers.core.orders import open_order_margin, release_on_fills
from handlers.core.state import Ledger, Rejected, apply_fill, apply_transfer
from handlers.core.validation import check_fill
from handlers.core.valuation import Valuation, settle_risk_states, value
from handlers.flows import outbox
from handlers.flows.banding import (
    at_latest_marks,
    banded,
    held_symbols,
    latest_marks,
    write_index,
)
from handlers.flows.conflicts import until_written
from handlers.flows.deadletters import BodyRef
from handlers.flows.delivery import (
    Delivery,
    Identity,
    alerts_for,
    identity,
    raw_text,
    schema_reasons,
)
from handlers.flows.deps import Deps, Outcome
from handlers.flows.rejections import reject, rejection_record
from handlers.flows.revaluation import Visit, post_check

__all__ = ["apply_event", "complete_duplicate", "handle_trade"]


async def handle_trade(deps: Deps, delivery: Delivery) -> Outcome:
    """Validate a trades body, then apply it (:func:`apply_event`) or reject it.

    Raises:
        UnreadableDocument, TransientStoreError, StaleAccountState: retry by the host.
    """
    decoded, error = delivery.decode()
    if decoded is None:
        assert error is not None
        ident = identity(None, delivery.digest)
        return await reject(deps, delivery, ident, [(error.code, error.message)])
    ident = identity(decoded.obj, delivery.digest)
    kind = decoded.obj.get("type")
    if kind not in ("FILL", "TRANSFER"):
        reason = f"type must be FILL or TRANSFER on this queue, got {str(kind)[:40]!r}"
        return await reject(deps, delivery, ident, [("SCHEMA_INVALID", reason)])
    try:
        event = validate_inbound(decoded.obj)
    except ValidationError as exc:
        return await reject(deps, delivery, ident, schema_reasons(exc))
    assert isinstance(event, Fill | Transfer)
    problems = _stateless_problems(deps, event)
    if problems:
        return await reject(deps, delivery, ident, problems)
    return await apply_event(deps, event, delivery)


def _stateless_problems(deps: Deps, event: Fill | Transfer) -> list[tuple[str, str]]:
    """What makes an event wrong whatever the account holds (catalog, signs, filters)."""
    if isinstance(event, Transfer):
        if event.asset not in deps.catalog.settle_assets:
            return [
                ("SCHEMA_INVALID", f"asset {event.asset[:40]!r} is no settle asset of the catalog")
            ]
        if (event.reason == "DEPOSIT" and event.amount < 0) or (
            event.reason == "WITHDRAWAL" and event.amount > 0
        ):
            amount = format_decimal(event.amount)
            return [("SCHEMA_INVALID", f"a {event.reason} with amount {amount} has the wrong sign")]
        return []
    instrument = deps.catalog.get(event.symbol)
    if instrument is None:
        return [
            ("UNKNOWN_SYMBOL", f"symbol {event.symbol[:40]!r} is not in the instrument catalog")
        ]
    return check_fill(event, instrument)


@dataclass(frozen=True)
class _Decision:
    """The account to write (with the event's entry), its figures, the event's record (the
    entry carries it only when the event raised alerts), and the outcome."""

    before: AccountDoc
    account: AccountDoc
    valuation: Valuation
    entry: Entry
    record: Record
    outcome: Outcome
    #: The record was created with the account write.
    batched: bool = False


@dataclass(frozen=True)
class _Found:
    """The event was already on the account: what completing it gave."""

    account: AccountDoc
    outcome: Outcome


async def apply_event(deps: Deps, event: Fill | Transfer, delivery: Delivery) -> Outcome:
    """Apply (or reject on account state) one event exactly once.

    Raises:
        UnreadableDocument, TransientStoreError, StaleAccountState: retry by the host.
        Exception: the alerts queue failed (the entry stays; the retry finishes it).
    """
    account_id = event.accountId

    async def attempt(n: int) -> _Decision | _Found | Outcome:
        # One event of an account at a time in this process, from the read to the write.
        # The first try may use this process's cached copy: the write is conditional, so
        # a stale copy only costs a 412, and the next try reads afresh.
        async with deps.runtime.account_locks.hold(account_id):
            read = await deps.store.read_account(account_id, fresh=n > 0)
            account = read or AccountDoc(account_id)
            if event.event_id in account.recent_ids:
                return _Found(account, await _complete(deps, account, event, delivery))
            if account.evicted and await deps.store.existing_records(
                account_id, [event.event_id, f"rejection:{event.event_id}"]
            ):
                return Outcome(
                    "DUPLICATE", event.event_id, account_id, detail="caught by its record"
                )
            drop = await outbox.settle(deps, account_id, account.pending)
            decision = await _decide(deps, event, account.without(drop), delivery)
            # An event that raised no alert has nothing to send before its record: the
            # record goes in the same request as the account.
            with_record = decision.record if not decision.entry.alerts else None
            await deps.store.write_account(
                decision.account, decision.valuation, account.etag, with_record
            )
            return replace(decision, batched=with_record is not None)

    result = await until_written(attempt, deps.sleep, f"account {account_id}")
    if isinstance(result, Outcome):
        return result
    if isinstance(result, _Found):
        if delivery.retry:  # its first delivery may have died before its catch-up
            await _catch_up_again(deps, result.account, event.event_id, delivery)
        return result.outcome
    indexed = await write_index(deps, result.before, result.account)
    await outbox.finish(deps, account_id, result.entry, None if result.batched else result.record)
    await _catch_up(deps, result.account, indexed, event.event_id, delivery)
    return result.outcome


async def complete_duplicate(
    deps: Deps, account: AccountDoc, event: Fill | Transfer, delivery: Delivery
) -> Outcome:
    """An event found already on the account (the poison path): complete it and, on a
    retry, catch up as its first delivery would have.

    Raises:
        TransientStoreError, UnreadableDocument, StaleAccountState: the store failed.
        Exception: the alerts queue failed.
    """
    outcome = await _complete(deps, account, event, delivery)
    if delivery.retry:
        await _catch_up_again(deps, account, event.event_id, delivery)
    return outcome


async def _complete(
    deps: Deps, account: AccountDoc, event: Fill | Transfer, delivery: Delivery
) -> Outcome:
    """A duplicate: complete every entry of the event still on the account (its own and
    its catch-ups'); the outcome says what became of its own."""
    account_id, event_id = account.account_id, event.event_id
    own = account.entry(event_id)
    others = [e for e in account.entries_of(event_id) if e.key != event_id]
    await outbox.complete_source(deps, account_id, others, delivery)
    if own is None:
        return Outcome("DUPLICATE", event_id, account_id)

    def rebuild(entry: Entry) -> Record:
        return _event_record(event, entry.alerts, entry.committed_at)

    done = await outbox.complete(deps, account_id, own, delivery, rebuild)
    if done.state == "DONE":
        return Outcome("DUPLICATE", event_id, account_id)
    if done.state == "IN_FLIGHT":
        return Outcome("DUPLICATE", event_id, account_id, detail="in flight elsewhere")
    return Outcome("DUPLICATE", event_id, account_id, done.alerts, "record repaired")


def _event_record(
    event: Fill | Transfer, alerts: tuple[Alert, ...], created_at: datetime
) -> EventRecord:
    """The ``trade`` / ``transfer`` record of an applied event."""
    return EventRecord(
        id=event.event_id,
        account_id=event.accountId,
        kind="trade" if isinstance(event, Fill) else "transfer",
        event_type=event.type,
        event=event.model_dump(mode="json", exclude={"type"}),
        alerts=alerts,
        created_at=created_at,
    )


async def _at_latest(
    deps: Deps, ledger: Ledger, symbol: str | None
) -> tuple[Ledger, MarkDoc | None]:
    """``ledger`` moved to the latest stored mark of every symbol it holds (and of
    ``symbol``), and ``symbol``'s stored mark: what an event decides at. Its bands keep the
    positions' own marks from being read back as "current" (see docs/marks.md).

    Raises:
        TransientStoreError, UnreadableDocument: the store failed.
    """
    wanted = held_symbols(ledger) + ([symbol] if symbol else [])
    cache = deps.settings.mark_cache_seconds
    marks = await latest_marks(deps, wanted, cache) if wanted else {}
    return at_latest_marks(ledger, marks), marks.get(symbol) if symbol else None


async def _decide(
    deps: Deps, event: Fill | Transfer, account: AccountDoc, delivery: Delivery
) -> _Decision:
    """The new account document for an event (pure apart from the mark read)."""
    now = deps.clock()
    symbol = event.symbol if isinstance(event, Fill) else None
    ident = Identity(event.event_id, event.accountId, event.correlationId, symbol)
    catalog, ratio = deps.catalog, deps.settings.margin_call_ratio
    # Every event decides at the latest stored marks of the symbols it values.
    current, stored = await _at_latest(deps, account.ledger, symbol)
    open_orders = account.open_orders
    try:
        if isinstance(event, Fill):
            instrument = catalog.get(event.symbol)
            assert instrument is not None
            mark = (stored.price, stored.timestamp) if stored else None
            ledger = apply_fill(current, event, instrument, mark)
            after = value(ledger, catalog, ratio)
            if event.orderId is not None:  # FILL v2: its order's reservation, pro rata
                open_orders = release_on_fills(account.open_orders, event.orderId, event.quantity)
            price = stored.price if stored else None
            specs = fill_alerts(event, instrument, price, after, deps.thresholds)
        else:
            wallet = value(current, catalog, ratio).wallets.get(event.asset)
            # What open orders reserve is not available: a withdrawal cannot take it.
            reserved = open_order_margin(account.open_orders, event.asset, catalog)
            available = wallet.available_balance - reserved if wallet else None
            ledger = apply_transfer(current, event, available)
            after = value(ledger, catalog, ratio)
            specs = []
    except Rejected as rejected:
        rejection = rejection_record(deps, delivery, ident, [(rejected.code, rejected.message)])
        entry = Entry(event.event_id, event.event_id, rejection.alerts, now, rejection)
        new = replace(
            account.with_event(event.event_id, entry), version=account.version + 1, updated_at=now
        )
        before = value(account.ledger, catalog, ratio)  # a rejection leaves the state as it was
        outcome = Outcome(
            "REJECTED", event.event_id, event.accountId, rejection.alerts, rejected.code
        )
        return _Decision(account, new, before, entry, rejection, outcome)
    specs += risk_alerts(account.ledger, after)
    ledger = settle_risk_states(ledger, after)
    alerts = alerts_for(specs, ident, now)
    record = _event_record(event, alerts, now)
    # The entry carries its record only when there are alerts to keep; an event that raised
    # none keeps just the record's id (its message rebuilds the record if it must).
    carried = record if alerts else None
    entry = Entry(event.event_id, event.event_id, alerts, now, carried, (), event.event_id)
    new = replace(account, ledger=ledger, version=account.version + 1, updated_at=now)
    new = banded(
        deps, account, replace(new.with_event(event.event_id, entry), open_orders=open_orders)
    )
    outcome = Outcome("APPLIED", event.event_id, event.accountId, alerts)
    return _Decision(account, new, after, entry, record, outcome)


async def _catch_up(
    deps: Deps,
    account: AccountDoc,
    indexed: dict[str, MarkDoc | None],
    event_id: str,
    delivery: Delivery,
) -> None:
    """The post-check of an event's index write (:func:`post_check`): ``indexed`` holds
    each symbol's stored mark as read right after its new entry was written; one outside
    the new band is applied now. The catch-up's entry belongs to the event (``source``),
    so the event's retry completes it."""
    body = BodyRef(delivery.digest, raw_text(delivery.raw), delivery.queue)
    await post_check(deps, account, indexed, Visit((), event_id, event_id, delivery, body))


async def _catch_up_again(
    deps: Deps, account: AccountDoc, event_id: str, delivery: Delivery
) -> None:
    """A RETRY that finds its event applied: the delivery that applied it may have died
    between its account write and its index write. Re-assert the account's current
    entries (idempotent) and run the post-check on them.

    Raises:
        TransientStoreError, UnreadableDocument: the store failed.
    """
    if not account.bands:
        return
    indexed = await write_index(deps, None, account)
    await _catch_up(deps, account, indexed, event_id, delivery)
