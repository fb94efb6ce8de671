"""The orders queue: ORDER (a pre-trade decision), ORDER_DONE and ACCOUNT_CONTROL, each
decided once on its account (see docs/orders.md)."""

from __future__ import annotations

from handlers.flows.delivery import Delivery
from handlers.flows.deps import Deps, Outcome

__all__ = ["handle_order"]


async def handle_order(deps: Deps, delivery: Delivery) -> Outcome:
    """Decide an orders-queue body (ORDER, ORDER_DONE or ACCOUNT_CONTROL), or reject it.

    Raises:
        UnreadableDocument, TransientStoreError, StaleAccountState: retry by the host.
        Exception: a queue failed (the retry sends again).
    """
    raise NotImplementedError("the orders flow is being written")
