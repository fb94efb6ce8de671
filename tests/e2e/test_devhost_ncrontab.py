"""devhost's NCRONTAB parser and the schedule monitor's past-due rule (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devhost.indexing import TimerFunction
from devhost.ncrontab import ScheduleError, parse_schedule
from devhost.timers import ScheduleStatus, check_past_due


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # every minute, on the minute (the app's check_stale_marks)
        ("0 */1 * * * *", "2026-12-03 14:00:30.5", ["14:01:00", "14:02:00", "14:03:00"]),
        # exactly on an occurrence: the next one, not that one
        ("0 */1 * * * *", "2026-12-03 14:01:00", ["14:02:00", "14:03:00"]),
        # fractions of a second are dropped before stepping
        ("*/1 * * * * *", "2026-12-03 14:00:00.999", ["14:00:01", "14:00:02"]),
        ("*/15 * * * * *", "2026-12-03 14:00:44", ["14:00:45", "14:01:00", "14:01:15"]),
        ("0 5-7,30 * * * *", "2026-12-03 14:06:10", ["14:07:00", "14:30:00", "15:05:00"]),
        ("10/20 * * * * *", "2026-12-03 14:00:00", ["14:00:10", "14:00:30", "14:00:50"]),
        ("0 0 9-10/1 * * *", "2026-12-03 09:30:00", ["10:00:00", "09:00:00+1"]),
        # a reversed range is swapped, as NCrontab does
        ("0 0 10-9 * * *", "2026-12-03 09:30:00", ["10:00:00", "09:00:00+1"]),
    ],
)
def test_next_occurrences(expression: str, after: str, expected: list[str]) -> None:
    schedule = parse_schedule(expression)
    start = at(after)
    got = schedule.occurrences(start, len(expected))

    def label(moment: datetime) -> str:
        days = (moment.date() - start.date()).days
        return moment.strftime("%H:%M:%S") + (f"+{days}" if days else "")

    assert [label(m) for m in got] == expected


def test_names_days_of_week_and_days_of_month_must_both_match() -> None:
    weekdays = parse_schedule("0 30 9 * * Mon-fri")
    assert weekdays.days_of_week == parse_schedule("0 30 9 * * 1-5").days_of_week == (1, 2, 3, 4, 5)
    # Friday 4 December 2026 after 10:00: the next weekday is Monday the 7th
    assert weekdays.next_after(at("2026-12-04 10:00:00")) == at("2026-12-07 09:30:00")
    assert parse_schedule("0 0 0 1 jan,JUL *").months == (1, 7)
    assert parse_schedule("0 0 0 * * sunday").days_of_week == (0,)
    # day 13 AND a Friday (NCrontab; classic cron would take either)
    friday_13 = parse_schedule("0 0 0 13 * 5")
    assert friday_13.next_after(at("2026-01-01 00:00:00")) == at("2026-02-13 00:00:00")
    # the 31st skips the months without one; 29 February waits for a leap year
    assert parse_schedule("0 0 0 31 * *").next_after(at("2026-04-01 00:00:00")) == at(
        "2026-05-31 00:00:00"
    )
    assert parse_schedule("0 0 12 29 2 *").next_after(at("2026-03-01 00:00:00")) == at(
        "2028-02-29 12:00:00"
    )
    assert parse_schedule("0 0 0 30 2 *").next_after(at("2026-01-01 00:00:00")) is None


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (
            "0 */1 * * *",
            "it must have 6 fields (second minute hour day month day-of-week), it has 5",
        ),
        ("0 0 0 * * * *", "it has 7"),
        ("", "it has 0"),
        ("60 * * * * *", "second field '60': 60 is out of range for the second field (0-59)"),
        ("0 0 24 * * *", "hour field '24'"),
        ("0 0 0 0 * *", "day field '0': 0 is out of range"),
        ("0 0 0 * 13 *", "month field '13'"),
        ("0 0 0 * * 7", "day of week field '7'"),
        ("0 0 0 * * Funday", "'Funday' is not a day of week name"),
        ("x * * * * *", "'x' is not a valid second"),
        ("*/x * * * * *", "'x' is not a step"),
        ("1,,2 * * * * *", "empty value in a list"),
        (",1 * * * * *", "',1' is not a valid second"),
        ("-1 * * * * *", "'-1' is not a valid second"),
        ("1a * * * * *", "'1a' is not a number"),
    ],
)
def test_invalid_expressions_say_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(expression)

    assert message in str(caught.value)
    assert str(caught.value).startswith(f"{expression!r} is not an NCRONTAB schedule")


def _timer(expression: str) -> TimerFunction:
    return TimerFunction(
        name="t",
        func=lambda timer: None,
        is_async=False,
        trigger_param="timer",
        schedule=parse_schedule(expression),
        run_on_startup=False,
        use_monitor=True,
        outputs=(),
        return_output=None,
        context_param=None,
    )


def test_past_due_is_a_recorded_next_occurrence_that_has_passed() -> None:
    timer = _timer("0 */1 * * * *")
    now = at("2026-12-03 14:05:30")

    # nothing recorded yet: record the next occurrence, not past due
    past_due, status, changed = check_past_due(timer, now, None)
    assert (past_due, changed) == (False, True)
    assert status == ScheduleStatus(None, at("2026-12-03 14:06:00"), now)

    # the host ran until 14:02 and the 14:03 tick was missed
    stored = ScheduleStatus(at("2026-12-03 14:02:00"), at("2026-12-03 14:03:00"), None)
    assert check_past_due(timer, now, stored) == (True, stored, False)

    # the next occurrence is still ahead: not past due
    ahead = ScheduleStatus(at("2026-12-03 14:05:00"), at("2026-12-03 14:06:00"), None)
    assert check_past_due(timer, now, ahead) == (False, ahead, False)


def test_a_status_recorded_under_another_schedule_is_recomputed_not_past_due() -> None:
    timer = _timer("0 0 * * * *")  # hourly now; the stored status was every minute
    now = at("2026-12-03 14:05:30")

    # recomputed from its last tick: the next hour is still ahead
    recent = ScheduleStatus(at("2026-12-03 14:02:00"), at("2026-12-03 14:03:00"), None)
    assert check_past_due(timer, now, recent) == (
        False,
        ScheduleStatus(None, at("2026-12-03 15:00:00"), at("2026-12-03 14:02:00")),
        True,
    )

    # recomputed from its last tick, that hour has passed: from now, and not past due
    old = ScheduleStatus(at("2026-12-03 12:02:00"), at("2026-12-03 12:03:00"), None)
    past_due, status, changed = check_past_due(timer, now, old)
    assert (past_due, changed) == (False, True)
    assert status == ScheduleStatus(None, at("2026-12-03 15:00:00"), now)
    assert status is not None and timedelta(0) < status.next - now <= timedelta(hours=1)
