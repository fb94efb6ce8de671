"""The orders queue: ORDER (a pre-trade decision), ORDER_DONE and ACCOUNT_CONTROL, each
decided once on its account (see docs/orders.md).

Route of one body: decode → an unreadable body (or one with no well-formed accountId and
orderId/controlId) is rejected without touching an account (:mod:`~handlers.flows.rejections`)
→ read the account → its key already there (``@order:<orderId>``, ``@order-done:<orderId>``,
``@control:<controlId>``): a redelivery — an ORDER sends its recorded decision again →
else decide, and commit the change with the message's outbox entry in ONE conditional
write of the account (created empty if missing) → finish the entry (send the decision and
alerts, write the record: :mod:`~handlers.flows.outbox`).

A broken ORDER that names its account and order is decided too: REJECTED with its
``SCHEMA_INVALID`` reasons, plus one ``TRADE_REJECTED`` alert. Orders never move a
position: the ledger is valued at the latest stored marks for the decision only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from handlers.core.alerts import AlertSpec
from handlers.core.contracts import (
    Order,
    OrderDecision,
    OrderDone,
    Reason,
    is_well_formed_id,
    validate_order_message,
)
from handlers.core.decimals import format_decimal
from handlers.core.documents import MAX_RECENT_IDS, AccountDoc, Entry, OrderRecord
from handlers.core.order_checks import AccountView, decide_order, to_open_order
from handlers.core.orders import OrderSettings, OrderTerms, open_order_margin
from handlers.core.valuation import value
from handlers.flows import outbox
from handlers.flows.banding import at_latest_marks, banded, held_symbols, latest_marks
from handlers.flows.delivery import Delivery, Identity, alerts_for, identity, schema_reasons
from handlers.flows.deps import Deps, Outcome, OutcomeKind
from handlers.flows.order_controls import (
    Change,
    complete,
    control_key,
    done_key,
    handle_control,
    handle_order_done,
    on_account,
    order_key,
    written,
)
from handlers.flows.rejections import reject

__all__ = ["complete_poisoned", "decision_id", "handle_order", "order_key", "order_settings"]

_KINDS = ("ORDER", "ORDER_DONE", "ACCOUNT_CONTROL")


def decision_id(account_id: str, order_id: str) -> str:
    """64 lowercase hex of SHA-256 over the compact JSON ``[accountId, orderId]``."""
    text = json.dumps([account_id, order_id], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def order_settings(deps: Deps) -> OrderSettings:
    """The settings an order decision reads."""
    s = deps.settings
    return OrderSettings(
        market_slippage=s.order_market_slippage,
        rate_limit_per_second=s.order_rate_limit_per_second,
        max_margin_ratio=s.order_max_margin_ratio,
        stale_mark_after_seconds=s.stale_mark_after_seconds,
        margin_call_ratio=s.margin_call_ratio,
        position_limits=s.position_limit_notional,
    )


async def handle_order(deps: Deps, delivery: Delivery) -> Outcome:
    """Decide an orders-queue body (ORDER, ORDER_DONE or ACCOUNT_CONTROL), or reject it.

    Raises:
        UnreadableDocument, TransientStoreError, StaleAccountState: retry by the host.
        Exception: a queue failed (the entry stays; the retry finishes it).
    """
    decoded, error = delivery.decode()
    if decoded is None:
        assert error is not None
        return await reject(
            deps, delivery, identity(None, delivery.digest), [(error.code, error.message)]
        )
    obj = decoded.obj
    ident = identity(obj, delivery.digest)
    kind = obj.get("type")
    if kind not in _KINDS:
        got = str(kind)[:40]
        reason = f"type must be ORDER, ORDER_DONE or ACCOUNT_CONTROL on this queue, got {got!r}"
        return await reject(deps, delivery, ident, [("SCHEMA_INVALID", reason)])
    try:
        message = validate_order_message(obj)
    except ValidationError as exc:
        reasons = schema_reasons(exc)
        account, order = obj.get("accountId"), obj.get("orderId")
        if kind == "ORDER" and is_well_formed_id(account) and is_well_formed_id(order):
            return await _decide_broken(deps, obj, reasons, delivery)
        return await reject(deps, delivery, ident, reasons)
    if isinstance(message, Order):
        return await _order(deps, message, delivery)
    if isinstance(message, OrderDone):
        return await handle_order_done(deps, message, delivery)
    return await handle_control(deps, message, delivery)


async def _resend(deps: Deps, account: AccountDoc, key: str, delivery: Delivery) -> Outcome:
    """A redelivered ORDER: complete its entry if one is left, and send its decision again
    (every redelivery does: same decisionId, same content)."""
    account_id = account.account_id
    entry = account.entry(key)
    record = entry.record if entry is not None else None
    if entry is not None:
        done = await outbox.complete(deps, account_id, entry, delivery)
        if done.state == "FINISHED":  # sent with the entry
            return Outcome("DUPLICATE", key, account_id, done.alerts, "decision repaired")
    else:
        record = await deps.store.read_record(account_id, key)
    if isinstance(record, OrderRecord):
        await deps.decisions.send((record.decision,))
    return Outcome("DUPLICATE", key, account_id, detail="decision sent again")


# --- ORDER --------------------------------------------------------------------------------


async def _order(deps: Deps, order: Order, delivery: Delivery) -> Outcome:
    key = order_key(order.orderId)

    async def decide(account: AccountDoc, exists: bool) -> Change:
        return await _decide_order(deps, order, account, exists, delivery)

    async def again(account: AccountDoc) -> Outcome:
        return await _resend(deps, account, key, delivery)

    return await on_account(deps, order.accountId, key, decide, again)


async def _decide_order(
    deps: Deps, order: Order, account: AccountDoc, exists: bool, delivery: Delivery
) -> Change:
    """The decision on a valid ORDER, at the latest stored marks (pure but for that read).

    Raises:
        TransientStoreError, UnreadableDocument: a mark read failed.
    """
    now = deps.clock()
    catalog, ratio = deps.catalog, deps.settings.margin_call_ratio
    wanted = [*held_symbols(account.ledger), order.symbol]
    marks = await latest_marks(deps, wanted, deps.settings.mark_cache_seconds)
    current = at_latest_marks(account.ledger, marks)
    wallets = value(current, catalog, ratio).wallets
    available = {
        asset: w.available_balance - open_order_margin(account.open_orders, asset, catalog)
        for asset, w in wallets.items()
    }
    done_ids = await _done_ids(deps, account, order.orderId)
    view = AccountView(
        exists=exists,
        has_wallet=bool(account.ledger.wallets),
        trading_state=account.trading_state,  # type: ignore[arg-type]
        ledger=current,
        open_orders=account.open_orders,
        decided_times=account.order_times,
        done_order_ids=done_ids,
        available_for_orders=available,
    )
    terms = OrderTerms(
        order_id=order.orderId,
        account_id=order.accountId,
        symbol=order.symbol,
        side=order.side,
        order_type=order.orderType,
        quantity=order.quantity,
        price=order.price,
        leverage=order.leverage,
        submitted_at=order.submittedAt,
        margin_mode=order.marginMode,
        position_side=order.positionSide,
        reduce_only=order.reduceOnly,
    )
    stored = marks.get(order.symbol)
    mark = (stored.price, stored.timestamp) if stored is not None else None
    decided = decide_order(terms, catalog, mark, view, order_settings(deps))
    message = _decision(
        order.accountId,
        order.orderId,
        order.symbol,
        decided.decision,
        decided.reasons,
        decided.metrics,
        order.correlationId,
        now,
    )
    record = OrderRecord(order.orderId, order.accountId, message, (), now)
    key = order_key(order.orderId)
    entry = Entry(key, key, (), now, record)
    new = written(account, key, entry, now)
    new = replace(new, order_times=_times(account.order_times, order.submittedAt))
    if decided.approved:
        new = replace(new, open_orders=(*account.open_orders, to_open_order(terms, decided)))
    new = banded(deps, account, new)
    kind: OutcomeKind = "APPLIED" if decided.approved else "REJECTED"
    detail = decided.decision + _detail(decided.reasons)
    outcome = Outcome(kind, key, order.accountId, detail=detail)
    return Change(new, entry, outcome)


async def _done_ids(deps: Deps, account: AccountDoc, order_id: str) -> frozenset[str]:
    """The orders ORDER_DONE has already ended, as far as ``order_id`` is concerned: its
    key among the recent ids, or (once ids were trimmed) its record."""
    key = done_key(order_id)
    if key in account.recent_ids:
        return frozenset((order_id,))
    if account.evicted and await deps.store.existing_records(account.account_id, [key]):
        return frozenset((order_id,))
    return frozenset()


def _times(times: tuple[datetime, ...], submitted: datetime) -> tuple[datetime, ...]:
    """The decided orders' ``submittedAt``, with this one, the latest kept."""
    return (*times, submitted)[-MAX_RECENT_IDS:]


def _decision(
    account_id: str,
    order_id: str,
    symbol: str | None,
    decision: str,
    reasons: tuple[tuple[str, str], ...],
    metrics: Mapping[str, Decimal],
    correlation_id: str | None,
    now: datetime,
) -> OrderDecision:
    return OrderDecision(
        decisionId=decision_id(account_id, order_id),
        orderId=order_id,
        accountId=account_id,
        symbol=symbol,
        decision=decision,  # type: ignore[arg-type]
        reasons=tuple(Reason(code=c, message=m[:300]) for c, m in reasons),
        metrics={k: format_decimal(v) for k, v in metrics.items()},
        correlationId=correlation_id,
        decidedAt=now,
    )


def _detail(reasons: tuple[tuple[str, str], ...]) -> str:
    return (": " + ",".join(code for code, _ in reasons)) if reasons else ""


async def _decide_broken(
    deps: Deps, obj: Mapping[str, Any], reasons: list[tuple[str, str]], delivery: Delivery
) -> Outcome:
    """An ORDER that breaks a field rule but names its account and order: REJECTED
    (``SCHEMA_INVALID``), recorded on the account like any decision, plus one
    ``TRADE_REJECTED`` alert."""
    account_id, order_id = str(obj["accountId"]), str(obj["orderId"])
    key = order_key(order_id)
    symbol = obj.get("symbol") if isinstance(obj.get("symbol"), str) else None
    correlation = obj.get("correlationId")
    correlation = correlation if is_well_formed_id(correlation) else None

    async def decide(account: AccountDoc, exists: bool) -> Change:
        now = deps.clock()
        ident = Identity(key, account_id, correlation, identity(obj, delivery.digest).symbol)
        spec = AlertSpec("TRADE_REJECTED", None, ident.symbol, tuple(reasons))
        alerts = alerts_for([spec], ident, now)
        message = _decision(
            account_id,
            order_id,
            symbol if ident.symbol else None,
            "REJECTED",
            tuple(reasons),
            {},
            correlation,
            now,
        )
        record = OrderRecord(order_id, account_id, message, alerts, now)
        entry = Entry(key, key, alerts, now, record)
        outcome = Outcome("REJECTED", key, account_id, alerts, "SCHEMA_INVALID")
        return Change(written(account, key, entry, now), entry, outcome)

    async def again(account: AccountDoc) -> Outcome:
        return await _resend(deps, account, key, delivery)

    return await on_account(deps, account_id, key, decide, again)


# --- the poison queue -------------------------------------------------------------------


async def complete_poisoned(
    deps: Deps, delivery: Delivery, obj: Mapping[str, Any]
) -> Outcome | None:
    """A poisoned orders body that was in fact decided (its key on the account, or its
    record): completed as a redelivery (an ORDER sends its recorded decision again); None
    for any other body (it is dead-lettered: nothing is decided from the poison queue).

    Raises:
        UnreadableDocument, TransientStoreError: the store failed.
        Exception: a queue failed.
    """
    kind, account_id = obj.get("type"), obj.get("accountId")
    field, key_of = {
        "ORDER": ("orderId", order_key),
        "ORDER_DONE": ("orderId", done_key),
        "ACCOUNT_CONTROL": ("controlId", control_key),
    }.get(str(kind), ("", order_key))
    own = obj.get(field) if field else None
    if not (is_well_formed_id(account_id) and is_well_formed_id(own)):
        return None
    account_id, key = str(account_id), key_of(str(own))
    account = await deps.store.read_account(account_id, fresh=True)
    known = account is not None and key in account.recent_ids
    if not known and not await deps.store.existing_records(account_id, [key]):
        return None
    account = account or AccountDoc(account_id)
    if kind == "ORDER":
        return await _resend(deps, account, key, delivery)
    return await complete(deps, account, key, delivery)
