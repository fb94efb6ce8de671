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

from handlers.flows.conflicts import MAX_WRITE_ATTEMPTS
from handlers.flows.deadletters import note_failure
from handlers.flows.delivery import Delivery
from handlers.flows.deps import Deps, Outcome, Runtime
from handlers.flows.mark_pass import process_mark_fanout
from handlers.flows.marks import process_mark_message
from handlers.flows.poison import process_poison
from handlers.flows.stale_marks import check_stale_marks
from handlers.flows.trades import process_trade_message

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
    "process_poison",
    "process_trade_message",
]
