"""The app's service code as the bench's counts phase calls it in process: the ONE place
where the bench imports ``handlers`` beyond ``handlers.settings``.

``bench.counts`` builds the real Cosmos store and alert sink, the service's dependencies,
and calls the trade and mark entry points with these names; when the service module moves,
this file is what changes. Imported lazily (by the counts phase only), so the rest of the
bench does not load the app.
"""

from __future__ import annotations

from handlers.adapters.cosmos_store import CosmosLedgerStore, connect
from handlers.adapters.queues import QueueAlertSink
from handlers.core.catalog import load_catalog
from handlers.flows import Deps, process_mark_message, process_trade_message

__all__ = [
    "CosmosLedgerStore",
    "Deps",
    "QueueAlertSink",
    "connect",
    "load_catalog",
    "process_mark_message",
    "process_trade_message",
]
