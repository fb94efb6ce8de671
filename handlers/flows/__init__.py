"""The flows: one module per kind of message, each the only caller of the ports for it.

- :mod:`~handlers.flows.trades` — FILL / TRANSFER on the trades queue;
- :mod:`~handlers.flows.marks` — MARK / MARKS on the marks queue, and
  :mod:`~handlers.flows.mark_pass` — a mark's pass over the holders and its fan-out units;
- :mod:`~handlers.flows.poison` — bodies the host gave up on;
- :mod:`~handlers.flows.stale_marks` — the stale-mark timer;

built on one exactly-once mechanism, :mod:`~handlers.flows.outbox` (with
:mod:`~handlers.flows.conflicts`, the one retry policy for lost races), and on shared
rooms: :mod:`~handlers.flows.delivery` (a body and its identity),
:mod:`~handlers.flows.rejections`, :mod:`~handlers.flows.deadletters`,
:mod:`~handlers.flows.revaluation` (one account at some marks) and
:mod:`~handlers.flows.stored_marks`. ``docs/architecture.md`` draws the layout.
"""

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from handlers.flows.conflicts import MAX_WRITE_ATTEMPTS
from handlers.flows.deadletters import note_failure
from handlers.flows.delivery import Delivery
from handlers.flows.deps import Deps, Outcome, Runtime
from handlers.flows.mark_pass import handle_fanout
from handlers.flows.marks import handle_marks
from handlers.flows.orders import handle_order
from handlers.flows.poison import process_poison
from handlers.flows.stale_marks import check_stale_marks
from handlers.flows.trades import handle_trade
from handlers.settings import Settings

__all__ = [
    "MAX_WRITE_ATTEMPTS",
    "Delivery",
    "Deps",
    "Outcome",
    "Runtime",
    "check_stale_marks",
    "note_failure",
    "process_mark_fanout",
    "process_mark_message",
    "process_order_message",
    "process_poison",
    "process_trade_message",
]

T_co = TypeVar("T_co", covariant=True)
T = TypeVar("T")


class Process(Protocol[T_co]):
    """A flow run on one body of its queue: ``queue`` (default: the configured name) is
    where the body came from; ``dequeue_count`` > 1 makes the delivery a retry."""

    def __call__(
        self, raw: bytes, deps: Deps, queue: str | None = None, dequeue_count: int = 1
    ) -> Awaitable[T_co]: ...


def _on_queue(
    queue_of: Callable[[Settings], str], handle: Callable[[Deps, Delivery], Awaitable[T]]
) -> Process[T]:
    async def process(
        raw: bytes, deps: Deps, queue: str | None = None, dequeue_count: int = 1
    ) -> T:
        delivery = Delivery(raw, queue or queue_of(deps.settings), dequeue_count)
        return await handle(deps, delivery)

    return process


#: FILL and TRANSFER (:func:`handlers.flows.trades.handle_trade`). Raises what the flow
#: raises: UnreadableDocument, TransientStoreError, StaleAccountState, a queue error.
process_trade_message: Process[Outcome] = _on_queue(lambda s: s.trades_queue, handle_trade)
#: MARK and MARKS (:func:`handlers.flows.marks.handle_marks`); raises as the flow does.
process_mark_message: Process[list[Outcome]] = _on_queue(lambda s: s.marks_queue, handle_marks)
#: A fan-out unit (:func:`handlers.flows.mark_pass.handle_fanout`); raises as the flow does.
process_mark_fanout: Process[Outcome] = _on_queue(lambda s: s.marks_fanout_queue, handle_fanout)
#: ORDER, ORDER_DONE and ACCOUNT_CONTROL (:func:`handlers.flows.orders.handle_order`);
#: raises as the flow does.
process_order_message: Process[Outcome] = _on_queue(lambda s: s.orders_queue, handle_order)
