"""Builds the real adapters once per process, lazily (never at import)."""

from __future__ import annotations

import functools
import threading

from handlers.adapters.cosmos_store import CosmosLedgerStore, connect
from handlers.adapters.queues import QueueAlertSink
from handlers.core.catalog import load_catalog
from handlers.errors import ConfigurationError
from handlers.service import Deps
from handlers.settings import load_settings

__all__ = ["deps", "reset"]

_lock = threading.Lock()


@functools.cache
def _build() -> Deps:
    settings = load_settings()
    if not settings.cosmos_endpoint:
        raise ConfigurationError("COSMOS_ENDPOINT is not set")
    catalog = load_catalog(settings.instruments_file)
    store = CosmosLedgerStore(
        connect(settings.cosmos_endpoint, settings.cosmos_key, settings.cosmos_database),
        settings.cosmos_database,
    )
    sink = QueueAlertSink(settings.environ, settings.storage_connection, settings.alerts_queue)
    return Deps(settings=settings, catalog=catalog, store=store, sink=sink)


def deps() -> Deps:
    """The process's dependencies: settings, catalog, Cosmos store, alert sink.

    Raises:
        ConfigurationError: a setting or the catalog is wrong.
    """
    with _lock:
        return _build()


def reset() -> None:
    """Forget the built dependencies (tests that change settings)."""
    with _lock:
        _build.cache_clear()
