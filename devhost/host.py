"""The local queue-trigger host: ``python -m devhost run``.

It serves every queue-triggered function of a v2 Python app (``function_app.py``) with the
Storage Queues extension's semantics (QueueListener / QueueProcessor / QueuesOptions):

- one listener per function receives up to ``batchSize`` messages with a 10-minute lease
  (renewed at half-life while the function runs) and fetches the next batch once no more
  than ``newBatchThreshold`` are in flight, so at most ``batchSize + newBatchThreshold`` run
  at once per function;
- an empty poll backs off from 100 ms, doubling with +/-20 % jitter, up to
  ``maxPollingInterval``; a message found (or written by this host to that queue) resets it;
- success deletes the message; a failure releases it after ``visibilityTimeout``, or, at
  ``maxDequeueCount``, copies the body (as it sits on the queue) to ``<queue>-poison`` and
  deletes the original; a message that arrives above ``maxDequeueCount``, or (with base64
  encoding) whose body is not base64, goes to poison without an invocation;
- queue output bindings are written after a successful invocation and before the trigger
  message is deleted, one message per string of a list, with ``$AzureWebJobsParentId``
  stamped into JSON-object bodies.

Timer-triggered functions run on their NCRONTAB schedules (:mod:`devhost.timers`), except
with ``--drain``. Before anything is polled, the storage connections and the Cosmos DB
endpoint are checked with one short request each (:mod:`devhost.preflight`).

Sync functions run in a thread pool, ``async def`` functions on the event loop; queue I/O uses
``azure.storage.queue.aio`` with one service client per connection setting.

This module loads the app and ties the pieces together (start-up, signals, shutdown, exit
codes): :mod:`devhost.listener` polls one function's queue, :mod:`devhost.processor`
settles each message, :mod:`devhost.bindings` builds the arguments and writes the output
bindings, :mod:`devhost.queues` holds the storage clients, :mod:`devhost.ledger` what is in
flight or stuck, and :mod:`devhost.drain` decides when ``--drain`` is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func

# Re-exported: these names were defined here before the host was split into modules.
from devhost.bindings import PARENT_ID_FIELD as PARENT_ID_FIELD
from devhost.bindings import decode_base64_body as decode_base64_body
from devhost.bindings import stamp_parent_id as stamp_parent_id
from devhost.drain import wait_drained
from devhost.hostjson import HostJsonError, QueuesOptions, load_queues_options
from devhost.indexing import FunctionLoadError, IndexedApp, index_app
from devhost.ledger import HELD_DIR, Ledger
from devhost.listener import DEFAULT_LEASE_SECONDS, Listener
from devhost.listener import MIN_POLLING_INTERVAL as MIN_POLLING_INTERVAL
from devhost.preflight import PreflightError, check_cosmos, check_storage
from devhost.processor import Shared
from devhost.queues import HostError, OutageLog, QueueClients, describe_error
from devhost.settings_file import (
    SettingsError,
    SourcedSettings,
    apply_to_environ,
    load_sourced_settings,
)
from devhost.timers import TimerListener
from handlers.errors import ConfigurationError

__all__ = [
    "EXIT_NOT_DRAINED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "Host",
    "HostError",
    "load_app",
    "run",
]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_NOT_DRAINED = 1
EXIT_REFUSED = 2


class Host:
    """Serves the queue-triggered functions of one indexed app until stopped or drained."""

    def __init__(
        self,
        app: IndexedApp,
        options: QueuesOptions,
        settings: Mapping[str, str],
        app_dir: Path,
        *,
        drain: bool = False,
        timeout: float | None = None,
        lease_seconds: int = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.app = app
        self.options = options
        self.settings = dict(settings)
        self.app_dir = app_dir
        self.drain = drain
        self.timeout = timeout
        self.lease_seconds = max(2, int(lease_seconds))
        self.queues = QueueClients(self.settings, self._notify)
        self._listeners: list[Listener] = []
        self._timers: list[TimerListener] = []
        self._stop = asyncio.Event()
        self._ledger = Ledger(held_file=app_dir / HELD_DIR / f"{os.getpid()}.json")
        self._outages = OutageLog()
        self._created: set[tuple[str, str]] = set()
        self._signals = 0
        sync_parallelism = sum(options.parallelism for f in app.queue_functions if not f.is_async)
        sync_parallelism += sum(1 for f in app.timer_functions if not f.is_async)
        threads = self.settings.get("PYTHON_THREADPOOL_THREAD_COUNT", "").strip()
        workers = int(threads) if threads.isdigit() and int(threads) > 0 else sync_parallelism
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="devhost-worker"
        )

    def _notify(self, queue_name: str) -> None:
        """A message was sent to ``queue_name``: its listeners poll again at once."""
        for listener in self._listeners:
            if listener.function.queue_name == queue_name:
                listener.wake.set()

    async def run(self) -> int:
        """Serve until stopped (exit 0) or, with ``drain``, until drained (timers do not
        run then).

        Returns:
            0 when stopped or drained; 1 when draining left messages stuck failing on a
            queue without a poison queue, or was interrupted or timed out.

        Raises:
            HostError: a connection setting is missing.
        """
        shared = Shared(
            self.queues,
            self.options,
            self._ledger,
            self._outages,
            self._stop,
            self._executor,
            self.app_dir,
            self.lease_seconds,
        )
        started = time.monotonic()
        self._listeners.extend(Listener(f, shared) for f in self.app.queue_functions)
        for name, reason in self.app.skipped:
            logger.info("skipping function %s: %s", name, reason)
        for timer in self.app.timer_functions:
            if self.drain:
                logger.info(
                    "not running timer %s with --drain (schedule %r)",
                    timer.name,
                    timer.schedule.expression,
                )
            else:
                self._timers.append(TimerListener(timer, shared))
        await self._create_trigger_queues()
        self._install_signal_handlers()
        o = self.options
        for listener in self._listeners:
            f = listener.function
            logger.info(
                "listening: %s <- queue %r (%s%s)",
                f.name,
                f.queue_name,
                "async" if f.is_async else "sync",
                "".join(f", output {out.param} -> {out.queue_name!r}" for out in f.outputs)
                + (f", $return -> {f.return_output.queue_name!r}" if f.return_output else ""),
            )
        logger.info(
            "queue options: batchSize=%d newBatchThreshold=%d maxPollingInterval=%gs "
            "visibilityTimeout=%gs maxDequeueCount=%d messageEncoding=%s",
            o.batch_size,
            o.new_batch_threshold,
            o.max_polling_interval,
            o.visibility_timeout,
            o.max_dequeue_count,
            o.message_encoding,
        )
        pollers = [asyncio.create_task(listener.poll()) for listener in self._listeners]
        pollers.extend(asyncio.create_task(timer.run()) for timer in self._timers)
        exit_code = EXIT_OK
        try:
            if self.drain:
                remaining = (
                    None
                    if self.timeout is None
                    else max(0.0, self.timeout - (time.monotonic() - started))
                )
                drained = await wait_drained(
                    self._listeners,
                    self._ledger,
                    self.options,
                    stop=self._stop,
                    outages=self._outages,
                    timeout=remaining,
                    reported_timeout=self.timeout,
                )
                exit_code = EXIT_OK if drained else EXIT_NOT_DRAINED
            else:
                await self._stop.wait()
        finally:
            self._stop.set()
            for listener in self._listeners:
                listener.wake.set()
                listener.slot_freed.set()
            await asyncio.gather(*pollers, return_exceptions=True)
            tasks = self._ledger.tasks
            if tasks:
                logger.info("waiting for %d in-flight invocation(s)", len(tasks))
                await asyncio.gather(*list(tasks), return_exceptions=True)
            await self._ledger.release_held()
            await self._close()
        return exit_code

    def stop(self) -> None:
        """Ask the host to stop: no new messages; in-flight invocations finish."""
        self._stop.set()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals > 1:
            logger.error("second %s: exiting without waiting", signal.Signals(signum).name)
            os._exit(130)
        logger.info(
            "%s: stopping; finishing %d in-flight invocation(s)",
            signal.Signals(signum).name,
            sum(listener.in_flight for listener in self._listeners)
            + sum(timer.in_flight for timer in self._timers),
        )
        self._stop.set()

    async def _create_trigger_queues(self) -> None:
        for listener in self._listeners:
            key = (listener.function.connection, listener.function.queue_name)
            if key in self._created:
                continue
            self._created.add(key)
            try:
                # One attempt: the listener creates a missing queue when it polls anyway.
                await self.queues.create(listener.queue, retry=False)
            except Exception as exc:  # storage down: the listener retries
                logger.warning(
                    "could not create queue %r: %s", listener.queue.queue_name, describe_error(exc)
                )

    async def _close(self) -> None:
        await self.queues.close()
        self._executor.shutdown(wait=True)


# --------------------------------------------------------------------------- start-up


class AppConfigurationError(HostError):
    """The app refused its configuration as it was imported (``ConfigurationError``)."""

    def __init__(self, refused: ConfigurationError) -> None:
        super().__init__(str(refused))
        self.refused = refused

    def described(self, sourced: SourcedSettings) -> str:
        """One line: the setting, its value, where the value came from, and why."""
        refused = self.refused
        if refused.setting is None:
            return str(refused)
        value = "" if refused.value is None else f"={refused.value!r}"
        return (
            f"{refused.setting}{value} (from {sourced.source(refused.setting)}): {refused.reason}"
        )


def load_app(app_dir: Path) -> Any:
    """Import ``function_app`` from ``app_dir`` and return its FunctionApp.

    Raises:
        HostError: there is no function_app.py, it fails to import, or it defines no
            FunctionApp.
    """
    if not (app_dir / "function_app.py").is_file():
        raise HostError(f"no function_app.py in {app_dir}")
    sys.path.insert(0, str(app_dir))
    existing = sys.modules.get("function_app")
    if existing is not None and Path(getattr(existing, "__file__", "")).parent != app_dir:
        del sys.modules["function_app"]
    try:
        module: ModuleType = importlib.import_module("function_app")
    except ConfigurationError as exc:  # the app refused a setting or its catalog
        raise AppConfigurationError(exc) from exc
    except Exception as exc:
        raise HostError(
            "importing function_app failed:\n" + "".join(traceback.format_exception(exc))
        ) from exc
    app = getattr(module, "app", None)
    if not isinstance(app, func.FunctionRegister):
        app = next((v for v in vars(module).values() if isinstance(v, func.FunctionRegister)), None)
    if app is None:
        raise HostError(f"{app_dir / 'function_app.py'} defines no azure.functions.FunctionApp")
    return app


def _lease_seconds(settings: Mapping[str, str]) -> int:
    text = (settings.get("DEVHOST_MESSAGE_LEASE_SECONDS") or "").strip()
    return int(text) if text.isdigit() and int(text) >= 2 else DEFAULT_LEASE_SECONDS


def _connections(app: IndexedApp) -> list[str]:
    """Every storage connection the app's served functions use, in order, once each."""
    names: list[str] = []
    for function in app.queue_functions:
        names.append(function.connection)
        names.extend(output.connection for output in function.outputs)
        if function.return_output is not None:
            names.append(function.return_output.connection)
    for timer in app.timer_functions:
        names.extend(output.connection for output in timer.outputs)
        if timer.return_output is not None:
            names.append(timer.return_output.connection)
    return list(dict.fromkeys(names))


#: The setting that turns the start-up checks off (``off``, ``false`` or ``0``): for outage
#: tests that start the host against a service that is down on purpose.
CHECKS_SETTING = "DEVHOST_STARTUP_CHECKS"


def preflight(app: IndexedApp, settings: SourcedSettings) -> None:
    """Check every storage connection the app uses and its Cosmos DB endpoint (unless
    ``DEVHOST_STARTUP_CHECKS`` is ``off``).

    Raises:
        PreflightError: one of them is missing, unreachable or refuses the key.
    """
    if (settings.values.get(CHECKS_SETTING) or "").strip().lower() in ("off", "false", "0"):
        logger.warning(
            "start-up checks are off (%s): storage and Cosmos DB are not checked",
            settings.described(CHECKS_SETTING),
        )
        return
    for connection in _connections(app):
        check_storage(settings, connection)
    check_cosmos(settings)


def run(
    app_dir: Path | None = None,
    settings_file: Path | None = None,
    *,
    drain: bool = False,
    timeout: float | None = None,
) -> int:
    """Load settings, host.json and the app, check storage and Cosmos DB, then serve it;
    the ``run`` command.

    Returns the process exit code: 0 served/drained, 1 not drained, 2 refused (settings,
    host.json, import, indexing, or a storage or Cosmos DB check — reported before any
    message is received).
    """
    directory = (app_dir or Path.cwd()).resolve()
    try:
        sourced = load_sourced_settings(directory, settings_file)
        apply_to_environ(sourced.values)
        options = load_queues_options(directory)
        app = load_app(directory)
        indexed = index_app(app, os.environ)
        preflight(indexed, sourced)
    except AppConfigurationError as exc:
        logger.error("refusing to start: %s", exc.described(sourced))
        return EXIT_REFUSED
    except (SettingsError, HostJsonError, HostError, FunctionLoadError, PreflightError) as exc:
        logger.error("refusing to start: %s", exc)
        return EXIT_REFUSED
    if not indexed.queue_functions and not indexed.timer_functions:
        logger.warning("no queue- or timer-triggered functions in %s", directory)
    host = Host(
        indexed,
        options,
        dict(os.environ),
        directory,
        drain=drain,
        timeout=timeout,
        lease_seconds=_lease_seconds(os.environ),
    )
    try:
        for connection in _connections(indexed):  # fail fast on a missing connection
            host.queues.service(connection)
        return asyncio.run(host.run())
    except HostError as exc:
        logger.error("refusing to start: %s", exc)
        return EXIT_REFUSED
