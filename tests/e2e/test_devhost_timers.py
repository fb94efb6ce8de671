"""devhost's timer triggers: NCRONTAB schedules, one tick at a time, ``runOnStartup``, the
schedule monitor's past-due tick, ``TimerRequest`` as the worker builds it, queue outputs,
and no timers under ``--drain``; a schedule that does not parse refuses the app."""

from __future__ import annotations

import base64
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devhost_support import AppEnv, Azurite, make_app

from devhost.timers import MONITOR_DIR


def _timers(tmp_path: Path, azurite: Azurite) -> AppEnv:
    return make_app("timers", tmp_path, azurite)


def test_ticks_run_on_schedule_one_at_a_time_with_a_timer_request(
    tmp_path: Path, azurite: Azurite
) -> None:
    app = _timers(tmp_path, azurite)

    # Every second, but each tick takes 1.5 s: the next starts only when one ends.
    run = app.serve(lambda: len(app.records("tick")) >= 3, TICK_SLEEP="1.5")

    assert run.returncode == 0, run.stderr
    ticks = app.records("tick")
    assert len(ticks) >= 3
    for before, after in itertools.pairwise(ticks):
        assert after["start"] >= before["end"] - 0.01  # never two at once
    # A tick that starts late because the previous one overran is not past due (the host
    # sets past_due only for a tick it missed while it was down).
    assert [t["past_due"] for t in ticks] == [False] * len(ticks)
    assert all(t["schedule"] == {"AdjustForDST": True} for t in ticks)
    assert all(t["status"] == {} for t in ticks)  # a per-second schedule is not monitored
    assert len({t["invocation_id"] for t in ticks}) == len(ticks)
    outputs = [
        json.loads(base64.b64decode(m.content)) for m in app.peek(app.out_queue)
    ]  # the queue output binding of each finished tick
    assert len(outputs) >= 3
    assert "$AzureWebJobsParentId" in outputs[0]
    assert "timer: tick on schedule '*/1 * * * * *' (UTC)" in run.stderr
    assert "tick timer Succeeded" in run.stderr


def test_run_on_startup_and_a_missed_tick_runs_at_once_past_due(
    tmp_path: Path, azurite: Azurite
) -> None:
    app = _timers(tmp_path, azurite)
    # The schedule monitor recorded a tick two minutes ago and the next one a minute ago,
    # as if the host had been stopped since.
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    stored = {
        "Last": (minute - timedelta(minutes=2)).isoformat(),
        "Next": (minute - timedelta(minutes=1)).isoformat(),
        "LastUpdated": (minute - timedelta(minutes=2)).isoformat(),
    }
    status_file = app.app_dir / MONITOR_DIR / "minutely.json"
    status_file.parent.mkdir(parents=True)
    status_file.write_text(json.dumps(stored))

    run = app.serve(
        lambda: bool(app.records("minutely")) and bool(app.records("yearly")),
        TICK_SCHEDULE="0 0 0 1 1 *",
    )

    assert run.returncode == 0, run.stderr
    missed, *later = app.records("minutely")  # a minute may turn before the host stops
    assert missed["past_due"] is True
    assert [t["past_due"] for t in later] == [False] * len(later)
    assert missed["status"] == stored  # what the monitor had recorded
    assert "timer minutely is past due" in run.stderr
    assert "minutely timer (past due) Succeeded" in run.stderr
    after = json.loads(status_file.read_text())
    assert datetime.fromisoformat(after["Next"]) > datetime.fromisoformat(stored["Next"])
    assert datetime.fromisoformat(after["Last"]) >= minute
    (startup,) = app.records("yearly")
    assert startup["past_due"] is False
    assert startup["status"]["Next"].endswith("-01-01T00:00:00+00:00")  # monitored
    assert "yearly timer (run on startup) Succeeded" in run.stderr
    assert app.records("tick") == []  # on 1 January only


def test_drain_runs_no_timer_and_exits_once_the_queues_are_empty(
    tmp_path: Path, azurite: Azurite
) -> None:
    app = _timers(tmp_path, azurite)

    run = app.run(timeout=20)

    assert run.returncode == 0, run.stderr
    assert app.records() == []  # not even the run-on-startup one
    assert "not running timer tick with --drain" in run.stderr
    assert "not running timer yearly with --drain" in run.stderr
    assert "drained" in run.stderr


def test_an_unparseable_schedule_is_refused_naming_the_function(
    tmp_path: Path, azurite: Azurite
) -> None:
    app = _timers(tmp_path, azurite)

    run = app.run(TICK_SCHEDULE="0 */1 * * *")

    assert run.returncode == 2
    assert (
        "refusing to start: cannot load the tick function: invalid timer schedule: "
        "'0 */1 * * *' is not an NCRONTAB schedule: it must have 6 fields"
    ) in run.stderr
    assert app.records() == []
