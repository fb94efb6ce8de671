"""Bodies the host gave up on (``<queue>-poison``): finish what can be finished, and
dead-letter only what truly cannot be applied.

- trades: an event that was in fact applied or rejected is completed as a duplicate (its
  entries finished, its catch-up run); any other body is dead-lettered (an event is never
  applied from the poison queue);
- marks: a readable MARK / MARKS is processed as a retry — applied when it is still the
  newest for its symbol, its entries on the holders completed when a newer mark superseded
  it — so a mark is never dead-lettered for being slow; fan-out units likewise;
- orders: a message that was in fact decided (its key on the account, or its record) is
  completed as a duplicate — an ORDER sends its recorded decision again — and a body whose
  rejection exists likewise; any other body is dead-lettered (nothing is decided from the
  poison queue);
- a body that cannot be read is completed if its rejection exists, else dead-lettered.

The poison delivery is a retry of the original message (whose invocations failed); for the
deadletter it writes itself, only its own redelivery (dequeue count > 1) is one.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from handlers.core.contracts import Fill, MarkEntry, Transfer, validate_inbound
from handlers.core.decode import DecodedBody
from handlers.core.documents import UNATTRIBUTED
from handlers.errors import UnreadableDocument
from handlers.flows import outbox
from handlers.flows.deadletters import BodyRef, dead_letter
from handlers.flows.delivery import Delivery, identity, raw_text
from handlers.flows.deps import Deps, Outcome
from handlers.flows.mark_pass import handle_unit, read_unit
from handlers.flows.marks import handle_marks, parse_marks
from handlers.flows.orders import complete_poisoned
from handlers.flows.trades import complete_duplicate

__all__ = ["process_poison"]

logger = logging.getLogger(__name__)


async def process_poison(
    raw: bytes, deps: Deps, source_queue: str, dequeue_count: int = 1
) -> list[Outcome]:
    """Process a body of ``<source_queue>-poison`` (``source_queue``: the configured name
    of the trades, marks, marks fan-out or orders queue).

    Raises:
        TransientStoreError: the store is unavailable (the host leaves the body on the
            poison queue and retries it).
        Exception: the alerts or fan-out queue failed.
    """
    delivery = Delivery(raw, source_queue, dequeue_count, poison=True)
    settings = deps.settings
    decoded, _error = delivery.decode()
    try:
        if source_queue == settings.marks_fanout_queue:
            unit = read_unit(delivery)
            if not isinstance(unit, Exception):
                return [await handle_unit(deps, delivery, unit)]
            return [await _unreadable(deps, delivery, decoded)]
        if source_queue == settings.marks_queue:
            if decoded is not None and _readable_marks(deps, decoded):
                return await handle_marks(deps, delivery)
            return [await _unreadable(deps, delivery, decoded)]
        if source_queue == settings.orders_queue:
            decided = await complete_poisoned(deps, delivery, decoded.obj) if decoded else None
            return [decided or await _unreadable(deps, delivery, decoded)]
        done = await _trade_done(deps, delivery, decoded)
    except UnreadableDocument as exc:  # a stored document it needs cannot be read
        logger.warning(
            "poisoned body %s: a stored document is unreadable: %s", delivery.digest, exc
        )
        return [await _dead_letter(deps, delivery, decoded, f"UnreadableDocument: {exc}")]
    return [done or await _dead_letter(deps, delivery, decoded)]


def _readable_marks(deps: Deps, decoded: DecodedBody) -> bool:
    """A MARK or MARKS body with at least one mark that can be applied (a valid entry of
    a catalogued symbol); any other marks body is unreadable as marks."""
    entries = parse_marks(decoded.obj)
    for entry, _index, single in entries or ():
        try:
            mark = validate_inbound(entry) if single else MarkEntry.model_validate(entry)
        except ValidationError:
            continue
        if deps.catalog.get(getattr(mark, "symbol", "")) is not None:
            return True
    return False


async def _trade_done(
    deps: Deps, delivery: Delivery, decoded: DecodedBody | None
) -> Outcome | None:
    """Whether a poisoned trades body was in fact applied or rejected (then complete it)."""
    ident = identity(decoded.obj if decoded else None, delivery.digest)
    account_id = ident.account_id
    if (
        decoded is not None
        and decoded.obj.get("type") in ("FILL", "TRANSFER")
        and account_id
        and ident.source_id != delivery.digest
    ):
        account = await deps.store.read_account(account_id)
        if account is not None and ident.source_id in account.recent_ids:
            event = validate_inbound(decoded.obj)  # it was applied: the body is valid
            assert isinstance(event, Fill | Transfer)
            return await complete_duplicate(deps, account, event, delivery)
        if await deps.store.existing_records(account_id, [ident.source_id]):
            return Outcome("DUPLICATE", ident.source_id, account_id, detail="record exists")
    return await _rejected(deps, delivery, decoded)


async def _rejected(deps: Deps, delivery: Delivery, decoded: DecodedBody | None) -> Outcome | None:
    """The body's rejection, completed as a retry completes a claim (its alert sent again
    unless it was marked sent); None when it was never rejected."""
    ident = identity(decoded.obj if decoded else None, delivery.digest)
    partition = ident.account_id or UNATTRIBUTED
    claimed = await outbox.complete_claim(deps, partition, f"rejection:{ident.source_id}")
    if claimed is None:
        return None
    if claimed.state == "SEEN":
        return Outcome("DUPLICATE", ident.source_id, ident.account_id, detail="rejection exists")
    return Outcome(
        "DUPLICATE", ident.source_id, ident.account_id, claimed.alerts, "rejection alert re-sent"
    )


async def _unreadable(deps: Deps, delivery: Delivery, decoded: DecodedBody | None) -> Outcome:
    """A body no flow can apply: complete it if it was rejected, else dead-letter it."""
    return await _rejected(deps, delivery, decoded) or await _dead_letter(deps, delivery, decoded)


async def _dead_letter(
    deps: Deps, delivery: Delivery, decoded: DecodedBody | None, error: str | None = None
) -> Outcome:
    ident = identity(decoded.obj if decoded else None, delivery.digest)
    last_error = error or await deps.store.read_failure(delivery.queue, delivery.digest)
    body = BodyRef(delivery.digest, raw_text(delivery.raw), delivery.queue)
    message = f"gave up on a message of {delivery.queue}"
    retry = delivery.dequeue_count > 1
    return await dead_letter(deps, body, delivery.digest, ident, message, retry, last_error)
