"""Builds the real adapters lazily (never at import): once per process and event loop.

The asyncio SDK clients belong to the event loop that made them, so the dependencies are
kept per running loop. The Python worker runs every ``async def`` function on one loop,
and so does devhost: one Cosmos client and one queue client per process in practice.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator
from typing import Any

from handlers.adapters.cosmos_store import CosmosLedgerStore, connect
from handlers.adapters.queues import QueueAlertSink, QueueDecisionSink, QueueTextSink
from handlers.adapters.storage import resolve_connection
from handlers.core.catalog import Catalog, load_catalog
from handlers.errors import ConfigurationError
from handlers.flows import Deps
from handlers.settings import COSMOS_ENDPOINT, INSTRUMENTS_FILE, Settings, load_settings

__all__ = ["close", "configuration", "deps", "reset"]

_lock = threading.Lock()
_config: tuple[Settings, Catalog] | None = None
_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deps] = weakref.WeakKeyDictionary()
#: Per loop, the async generator whose ``finally`` closes that loop's clients (see deps()).
_closers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def configuration() -> tuple[Settings, Catalog]:
    """The settings and the instrument catalog, read and checked once per process (when
    ``function_app`` is imported, so that a setting the app cannot use stops it from
    loading instead of failing every message).

    Raises:
        ConfigurationError: a setting or the catalog is wrong; the error names the setting
            (``INSTRUMENTS_FILE`` for the catalog, with the entry) and its value.
    """
    global _config
    if _config is None:
        settings = load_settings()
        if not settings.cosmos_endpoint:
            raise ConfigurationError("is not set (the Cosmos DB account endpoint)", COSMOS_ENDPOINT)
        resolve_connection(settings.environ, settings.storage_connection)
        path = settings.instruments_file
        try:
            catalog = load_catalog(path)
        except ConfigurationError as exc:
            raise ConfigurationError(str(exc), INSTRUMENTS_FILE, str(path)) from exc
        _config = (settings, catalog)
    return _config


def _build(settings: Settings, catalog: Catalog) -> Deps:
    endpoint = settings.cosmos_endpoint
    assert endpoint is not None  # checked by configuration()
    store = CosmosLedgerStore(
        connect(endpoint, settings.cosmos_key, settings.cosmos_database),
        settings.cosmos_database,
    )
    environ, connection = settings.environ, settings.storage_connection
    sink = QueueAlertSink(environ, connection, settings.alerts_queue)
    fanout = QueueTextSink(environ, connection, settings.marks_fanout_queue)
    decisions = QueueDecisionSink(environ, connection, settings.order_decisions_queue)
    return Deps(
        settings=settings,
        catalog=catalog,
        store=store,
        sink=sink,
        fanout=fanout,
        decisions=decisions,
    )


def deps() -> Deps:
    """The dependencies of the running event loop: settings, catalog, Cosmos store, the
    alerts, fan-out and order-decisions queues (settings and catalog are read once per
    process).

    Raises:
        ConfigurationError: a setting or the catalog is wrong.
        RuntimeError: no event loop is running (call it from an ``async def``).
    """
    loop = asyncio.get_running_loop()
    with _lock:
        built = _by_loop.get(loop)
        if built is None:
            built = _build(*configuration())
            _by_loop[loop] = built
            # Close the clients when the loop shuts down: asyncio.run (and the worker's
            # loop) closes the async generators still open, which runs this one's
            # ``finally``. Without it aiohttp reports "Unclosed client session" at exit.
            closer = _close_at_shutdown(built)
            _closers[loop] = (closer, loop.create_task(_start(closer)))
        return built


async def _start(closer: AsyncIterator[None]) -> None:
    await anext(closer)


async def _close_at_shutdown(built: Deps) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await _close_clients(built)


async def _close_clients(built: Deps) -> None:
    for client in (built.store, built.sink, built.fanout, built.decisions):
        closer = getattr(client, "close", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()


async def close() -> None:
    """Close the clients of the running loop (a host shutting down; tests)."""
    with _lock:
        built = _by_loop.pop(asyncio.get_running_loop(), None)
    if built is not None:
        await _close_clients(built)


def reset() -> None:
    """Forget the settings, catalog and clients (tests that change settings)."""
    global _config
    with _lock:
        _config = None
        _by_loop.clear()
        _closers.clear()
