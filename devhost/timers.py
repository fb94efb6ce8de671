"""Timer triggers, as the host's timer extension runs them (TimerListener, ScheduleMonitor):

- each timer function runs on its NCRONTAB schedule (UTC, Azure's default time zone), one
  tick at a time: the next occurrence is computed when a tick ends, from the time the tick
  started, so a tick that overran its schedule is followed at once by the next one;
- ``runOnStartup`` runs one tick when the host starts;
- with schedule monitoring (``useMonitor``; by default on for schedules that recur at most
  once a minute) the schedule's status (``Last``, ``Next``, ``LastUpdated``) is kept across
  runs — the host keeps it in blob storage, devhost in ``<app dir>/.run/devhost/timers/`` —
  and a host that starts after a ``Next`` that has passed runs one tick at once with
  ``past_due`` True: the only way the host sets it;
- the function gets an ``azure.functions.TimerRequest`` with ``past_due``,
  ``schedule_status`` (the status, or ``{}`` without monitoring) and ``schedule``
  (``{"AdjustForDST": true}``); a failed tick is logged and the schedule goes on (no
  retries).

``run --drain`` does not run timers: its schedule would keep the host busy forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.functions.timer import TimerRequest as _TimerRequest

from devhost.bindings import invoke_timer, write_outputs
from devhost.indexing import TimerFunction
from devhost.processor import Shared

__all__ = ["MONITOR_DIR", "ScheduleMonitor", "ScheduleStatus", "TimerListener", "check_past_due"]

# Log lines keep the logger name of all of run's lines.
logger = logging.getLogger("devhost.host")

#: Where the schedule monitor keeps each timer's status, under the app directory.
MONITOR_DIR = Path(".run") / "devhost" / "timers"
#: ``TimerRequest.schedule`` for an NCRONTAB schedule, as the host serialises it.
SCHEDULE_INFO = {"AdjustForDST": True}
#: How the host writes an unset ``Last`` / ``LastUpdated`` (.NET's default DateTime).
_UNSET = "0001-01-01T00:00:00"
_TIMER_REQUEST: Any = _TimerRequest


def _iso(moment: datetime | None) -> str:
    return _UNSET if moment is None else moment.astimezone(UTC).isoformat()


def _parse(text: object) -> datetime | None:
    if not isinstance(text, str) or text == _UNSET:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ScheduleStatus:
    """A timer's schedule status: its last tick, its next one, and when it was computed."""

    last: datetime | None
    next: datetime
    last_updated: datetime | None

    def as_dict(self) -> dict[str, str]:
        """The status as the host hands it to the worker (``TimerRequest.schedule_status``)."""
        return {
            "Last": _iso(self.last),
            "Next": _iso(self.next),
            "LastUpdated": _iso(self.last_updated),
        }


class ScheduleMonitor:
    """Keeps each timer's :class:`ScheduleStatus` in a JSON file in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, name: str) -> Path:
        return self.directory / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".json")

    def read(self, name: str) -> ScheduleStatus | None:
        """The stored status, or None when there is none (or it cannot be read)."""
        try:
            data = json.loads(self._path(name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        upcoming = _parse(data.get("Next"))
        if upcoming is None:
            return None
        return ScheduleStatus(_parse(data.get("Last")), upcoming, _parse(data.get("LastUpdated")))

    def write(self, name: str, status: ScheduleStatus) -> None:
        """Store the status; a failure is logged, not raised (the schedule goes on)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._path(name).write_text(json.dumps(status.as_dict()) + "\n", encoding="utf-8")
        except OSError as exc:
            logger.warning("could not record the schedule status of %s: %s", name, exc)


def check_past_due(
    function: TimerFunction, now: datetime, status: ScheduleStatus | None
) -> tuple[bool, ScheduleStatus | None, bool]:
    """The host's start-up check (ScheduleMonitor.CheckPastDueAsync).

    Returns ``(past_due, status, changed)``: whether a recorded ``Next`` has passed,
    the status to go on with, and whether it must be stored. A status recorded under
    another schedule is recomputed (and is not past due when its ``Next`` has passed).
    Without a next occurrence the status is None.
    """
    schedule = function.schedule
    if status is None:
        upcoming = schedule.next_after(now)
        if upcoming is None:
            return False, None, False
        return False, ScheduleStatus(None, upcoming, now), True
    basis = status.last or status.last_updated or now
    expected = schedule.next_after(basis)
    changed = False
    if expected != status.next:
        if expected is not None and now > expected:
            expected, basis = schedule.next_after(now), now
        if expected is None:
            return False, None, False
        status = ScheduleStatus(None, expected, basis)
        changed = True
    return now > status.next, status, changed


class TimerListener:
    """Runs one timer function on its schedule until the host stops."""

    def __init__(self, function: TimerFunction, shared: Shared) -> None:
        self.function = function
        self._shared = shared
        self._monitor = (
            ScheduleMonitor(shared.app_dir / MONITOR_DIR) if function.use_monitor else None
        )
        self.in_flight = 0
        self.status: ScheduleStatus | None = None

    async def run(self) -> None:
        """Tick on schedule (and at start-up when past due or ``runOnStartup``)."""
        function = self.function
        stop = self._shared.stop
        now = datetime.now(UTC)
        past_due = False
        if self._monitor is not None:
            stored = self._monitor.read(function.name)
            past_due, self.status, changed = check_past_due(function, now, stored)
            if changed and self.status is not None:
                self._monitor.write(function.name, self.status)
        if self.status is None:
            upcoming = function.schedule.next_after(now)
            self.status = None if upcoming is None else ScheduleStatus(None, upcoming, None)
        if self.status is None:
            logger.warning(
                "timer %s: schedule %r never fires; not scheduled",
                function.name,
                function.schedule.expression,
            )
            return
        logger.info(
            "timer: %s on schedule %r (UTC%s), next at %s",
            function.name,
            function.schedule.expression,
            ", monitored" if self._monitor is not None else "",
            _iso(self.status.next),
        )
        if stop.is_set():
            return
        if past_due:
            logger.info(
                "timer %s is past due (its tick at %s was missed): running it now",
                function.name,
                _iso(self.status.next),
            )
            await self._tick(datetime.now(UTC), past_due=True)
        elif function.run_on_startup:
            await self._tick(datetime.now(UTC), run_on_startup=True)
        while not stop.is_set() and self.status is not None:
            delay = (self.status.next - datetime.now(UTC)).total_seconds()
            if delay > 0:
                # Wake at most every minute: the wall clock may move under a long wait.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(delay, 60.0))
                continue
            await self._tick(datetime.now(UTC))

    async def _tick(
        self, started_at: datetime, *, past_due: bool = False, run_on_startup: bool = False
    ) -> None:
        """One invocation, then the status of the next one (as InvokeJobFunction)."""
        function = self.function
        shared = self._shared
        assert self.status is not None
        request = _TIMER_REQUEST(
            past_due=past_due,
            schedule_status=self.status.as_dict() if self._monitor is not None else {},
            schedule=dict(SCHEDULE_INFO),
        )
        invocation_id = str(uuid.uuid4())
        started = time.monotonic()
        self.in_flight = 1
        try:
            outputs = await invoke_timer(
                function,
                request,
                invocation_id,
                function_directory=str(shared.app_dir),
                executor=shared.executor,
            )
            await write_outputs(
                outputs, invocation_id, shared.options.message_encoding, shared.queues.send
            )
        except Exception as exc:
            if logger.isEnabledFor(logging.DEBUG):
                trace = "".join(traceback.format_exception(exc))
                logger.debug("%s failed:\n%s", function.name, trace)
            outcome, level = f"Failed: {type(exc).__name__}: {exc}", logging.WARNING
        else:
            outcome, level = "Succeeded", logging.INFO
        finally:
            self.in_flight = 0
        reason = " (past due)" if past_due else " (run on startup)" if run_on_startup else ""
        logger.log(
            level,
            "%s timer%s %s (%.0f ms)",
            function.name,
            reason,
            outcome,
            (time.monotonic() - started) * 1000,
        )
        basis = started_at
        if not past_due and not run_on_startup and self.status.next > started_at:
            basis = self.status.next  # fired a little early: count it as on time
        upcoming = function.schedule.next_after(basis)
        if upcoming is None:
            self.status = None
            return
        self.status = ScheduleStatus(basis, upcoming, basis)
        if self._monitor is not None:
            self._monitor.write(function.name, self.status)
