"""Rejections: the ``rejection`` record and its TRADE_REJECTED alert.

A rejection that does not depend on account state (a body that cannot be right) has no
document to change: it is a :func:`~handlers.flows.outbox.claim` of its record. A state
rejection (:mod:`handlers.flows.trades`) commits the same record as an outbox entry with
the account.
"""

from __future__ import annotations

from collections.abc import Sequence

from handlers.core.alerts import AlertSpec
from handlers.core.documents import UNATTRIBUTED, RejectionRecord
from handlers.flows import outbox
from handlers.flows.delivery import Delivery, Identity, alerts_for, clean_reasons
from handlers.flows.deps import Deps, Outcome

__all__ = ["reject", "rejection_record"]


def rejection_record(
    deps: Deps, delivery: Delivery, ident: Identity, reasons: Sequence[tuple[str, str]]
) -> RejectionRecord:
    """The rejection record of a body, with its TRADE_REJECTED alert."""
    cleaned = clean_reasons(reasons)
    now = deps.clock()
    spec = AlertSpec("TRADE_REJECTED", symbol=ident.symbol, reasons=cleaned)
    return RejectionRecord(
        source_id=ident.source_id,
        account_id=ident.account_id or UNATTRIBUTED,
        queue=delivery.queue,
        body_digest=delivery.digest,
        body_excerpt=delivery.excerpt,
        reasons=cleaned,
        alerts=alerts_for([spec], ident, now),
        created_at=now,
    )


async def reject(
    deps: Deps, delivery: Delivery, ident: Identity, reasons: Sequence[tuple[str, str]]
) -> Outcome:
    """Record and alert a rejection that does not depend on account state (a claim: a copy
    sends nothing, a retry re-sends the recorded alert with the same id).

    Raises:
        TransientStoreError: the store is unavailable.
        Exception: the alerts queue failed.
    """
    record = rejection_record(deps, delivery, ident, reasons)
    claimed = await outbox.claim(deps, record, delivery)
    if claimed.state == "NEW":
        return Outcome(
            "REJECTED", ident.source_id, ident.account_id, claimed.alerts, record.reasons[0][0]
        )
    if claimed.state == "SEEN":
        return Outcome("DUPLICATE", ident.source_id, ident.account_id, detail="already rejected")
    return Outcome(
        "DUPLICATE", ident.source_id, ident.account_id, claimed.alerts, "rejection alert re-sent"
    )
