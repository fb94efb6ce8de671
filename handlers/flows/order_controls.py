"""One conditional write per orders-queue message, and the two messages that are no
order: ORDER_DONE (end an order, release what it reserves) and ACCOUNT_CONTROL (the
trading state). :mod:`handlers.flows.orders` decides ORDERs on the same machinery.

Each message has its key on the account (``@order:<orderId>``, ``@order-done:<orderId>``,
``@control:<controlId>``; outside the id charset, so they never meet a trade id): found
there (or, once the recent ids were trimmed, its record found), the message is a
redelivery; else its change and its outbox entry (which carries the record) are written in
ONE conditional write of the account (created empty if missing), then finished.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from handlers.core.alerts import AlertSpec
from handlers.core.contracts import AccountControl, OrderDone
from handlers.core.documents import AccountDoc, Entry, OrderEventRecord, OrderRecord
from handlers.core.valuation import value
from handlers.flows import outbox
from handlers.flows.conflicts import until_written
from handlers.flows.delivery import Delivery, Identity, alerts_for
from handlers.flows.deps import Deps, Outcome

__all__ = [
    "Change",
    "complete",
    "control_key",
    "done_key",
    "handle_control",
    "handle_order_done",
    "on_account",
    "order_key",
    "written",
]


def order_key(order_id: str) -> str:
    """An order's key on its account and its record's id (outside the id charset)."""
    return f"@order:{order_id}"


def done_key(order_id: str) -> str:
    return f"@order-done:{order_id}"


def control_key(control_id: str) -> str:
    return f"@control:{control_id}"


# --- one conditional write per message ----------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What a message does to its account: the document to write (with its entry, which
    carries the record) and the outcome."""

    account: AccountDoc
    entry: Entry
    outcome: Outcome
    #: The record was created with the account (the entry had no alert to send first).
    batched: bool = False


Decide = Callable[[AccountDoc, bool], Awaitable[Change]]
Redelivered = Callable[[AccountDoc], Awaitable[Outcome]]


async def on_account(
    deps: Deps, account_id: str, key: str, decide: Decide, again: Redelivered
) -> Outcome:
    """Read the account (or start an empty one), hand a redelivery to ``again``, else
    write ``decide``'s change in one conditional write, then finish its entry.

    Raises:
        UnreadableDocument, TransientStoreError, StaleAccountState: retry by the host.
        Exception: a queue failed.
    """

    async def attempt(n: int) -> Change | Outcome:
        async with deps.runtime.account_locks.hold(account_id):
            read = await deps.store.read_account(account_id, fresh=n > 0)
            account = read or AccountDoc(account_id)
            if key in account.recent_ids:
                return await again(account)
            if account.evicted and await deps.store.existing_records(account_id, [key]):
                return await again(account)
            drop = await outbox.settle(deps, account_id, account.pending)
            change = await decide(account.without(drop), read is not None)
            ratio = deps.settings.margin_call_ratio
            after = value(change.account.ledger, deps.catalog, ratio)
            # Nothing to send before the record (no alert): it goes with the account.
            entry = change.entry
            batched = entry.record if not entry.alerts else None
            await deps.store.write_account(change.account, after, account.etag, batched)
            return replace(change, batched=batched is not None)

    result = await until_written(attempt, deps.sleep, f"account {account_id}")
    if isinstance(result, Outcome):
        return result
    record = result.entry.record
    if not result.batched:
        await outbox.finish(deps, account_id, result.entry)  # alerts, decision, record
    elif isinstance(record, OrderRecord):  # recorded with the account: send the decision
        await deps.decisions.send((record.decision,))
    return result.outcome


def written(account: AccountDoc, key: str, entry: Entry, now: datetime) -> AccountDoc:
    """``account`` with the message's key and entry, one version on."""
    return replace(account.with_event(key, entry), version=account.version + 1, updated_at=now)


# --- ORDER_DONE and ACCOUNT_CONTROL ---------------------------------------------------------


async def handle_order_done(deps: Deps, done: OrderDone, delivery: Delivery) -> Outcome:
    """End an order: remove it from the open orders (releasing what it still reserves), or
    — not held open — keep its id, so that a later ORDER with it is ORDER_ALREADY_DONE.
    Sends nothing."""
    key = done_key(done.orderId)

    async def decide(account: AccountDoc, exists: bool) -> Change:
        now = deps.clock()
        record = OrderEventRecord(key, done.accountId, "orderDone", _wire(done), (), now)
        entry = Entry(key, key, (), now, record)
        held = any(o.order_id == done.orderId for o in account.open_orders)
        new = written(account, key, entry, now)
        if held:
            kept = tuple(o for o in account.open_orders if o.order_id != done.orderId)
            new = replace(new, open_orders=kept)
        detail = "open order removed" if held else "not open: its id is kept"
        return Change(new, entry, Outcome("APPLIED", key, done.accountId, detail=detail))

    async def again(account: AccountDoc) -> Outcome:
        return await complete(deps, account, key, delivery)

    return await on_account(deps, done.accountId, key, decide, again)


async def handle_control(deps: Deps, control: AccountControl, delivery: Delivery) -> Outcome:
    """Set the account's trading state (an older control than the one it holds changes
    nothing); ``TRADING_STATE_CHANGED`` when the state changes."""
    key = control_key(control.controlId)

    async def decide(account: AccountDoc, exists: bool) -> Change:
        now = deps.clock()
        held_at = account.trading_state_at
        older = held_at is not None and control.occurredAt < held_at
        before, after = account.trading_state, control.tradingState
        specs: list[AlertSpec] = []
        if not older and after != before:
            reason = f"trading state {before} → {after}: {control.reason}"
            reasons = (("TRADING_STATE_CHANGED", reason[:300]),)
            specs.append(AlertSpec("TRADING_STATE_CHANGED", None, None, reasons))
        ident = Identity(key, control.accountId)
        alerts = alerts_for(specs, ident, now)
        record = OrderEventRecord(key, control.accountId, "control", _wire(control), alerts, now)
        entry = Entry(key, key, alerts, now, record)
        new = written(account, key, entry, now)
        if not older:
            new = replace(new, trading_state=after, trading_state_at=control.occurredAt)
        detail = "older than the state held" if older else f"{before} → {after}"
        return Change(new, entry, Outcome("APPLIED", key, control.accountId, alerts, detail))

    async def again(account: AccountDoc) -> Outcome:
        return await complete(deps, account, key, delivery)

    return await on_account(deps, control.accountId, key, decide, again)


async def complete(deps: Deps, account: AccountDoc, key: str, delivery: Delivery) -> Outcome:
    """A redelivered ORDER_DONE or ACCOUNT_CONTROL: complete its entry if one is left."""
    entry = account.entry(key)
    if entry is None:
        return Outcome("DUPLICATE", key, account.account_id)
    done = await outbox.complete(deps, account.account_id, entry, delivery)
    detail = {"DONE": "", "IN_FLIGHT": "in flight elsewhere", "FINISHED": "record repaired"}
    return Outcome("DUPLICATE", key, account.account_id, done.alerts, detail[done.state])


def _wire(message: OrderDone | AccountControl) -> dict[str, Any]:
    """A message as its record keeps it (its wire form, without ``type``)."""
    return message.model_dump(mode="json", exclude={"type"})
