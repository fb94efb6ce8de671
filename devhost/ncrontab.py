"""NCRONTAB schedules, read the way the Functions host's timer trigger reads them.

The host parses a timer's ``schedule`` with NCrontab, six fields including seconds::

    {second} {minute} {hour} {day} {month} {day-of-week}

Each field is ``*``, a value, a range ``a-b`` (a reversed range is swapped), a step
``*/n``, ``a-b/n`` or ``a/n`` (``a`` up to the field's maximum), or a comma-separated list
of those. Months and days of the week also take names, matched case-insensitively by prefix
(``Jan``, ``mon``, ``Sunday``); day of week 0 is Sunday, 6 Saturday. A time matches when
every field matches: day of month AND day of week, as NCrontab has it (classic cron ORs
the two when both are restricted). The next occurrence is strictly after the given time, to
the second.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["CronSchedule", "ScheduleError", "parse_schedule"]

_MONTHS = tuple(calendar.month_name[1:])  # January .. December
_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 6, _DAYS),
)
#: How far :meth:`CronSchedule.next_after` looks: the Gregorian calendar repeats every
#: 400 years, so a schedule with no occurrence in that span has none at all.
_SEARCH_YEARS = 401


class ScheduleError(ValueError):
    """An expression that is not a six-field NCRONTAB schedule."""


def _value(text: str, field: _Field) -> int:
    if text[:1].isascii() and text[:1].isdigit():
        if not (text.isascii() and text.isdigit()):
            raise ScheduleError(f"{text!r} is not a number")
        return int(text)
    if not field.names:
        raise ScheduleError(
            f"{text!r} is not a valid {field.name}: expected a number from {field.low} "
            f"to {field.high}"
        )
    lowered = text.lower()
    for index, name in enumerate(field.names):
        if name.lower().startswith(lowered):
            return field.low + index
    raise ScheduleError(f"{text!r} is not a {field.name} name ({', '.join(field.names)})")


def _check(value: int, field: _Field) -> int:
    if not field.low <= value <= field.high:
        raise ScheduleError(
            f"{value} is out of range for the {field.name} field ({field.low}-{field.high})"
        )
    return value


def _parse_part(part: str, field: _Field) -> set[int]:
    if not part:
        raise ScheduleError("empty value in a list")
    step: int | None = None
    base = part
    slash = part.find("/")
    if slash > 0:
        base, step_text = part[:slash], part[slash + 1 :]
        if not (step_text.isascii() and step_text.isdigit()):
            raise ScheduleError(f"{step_text!r} is not a step (a whole number)")
        step = int(step_text)
    if base == "*":
        start, end = field.low, field.high
    else:
        dash = base.find("-")
        if dash > 0:
            start = _check(_value(base[:dash], field), field)
            end = _check(_value(base[dash + 1 :], field), field)
            start, end = min(start, end), max(start, end)
        else:
            start = _check(_value(base, field), field)
            end = start if step is None else field.high
    return set(range(start, end + 1, max(1, step or 1)))


def _parse_field(text: str, field: _Field) -> tuple[int, ...]:
    parts = text.split(",") if text.find(",") > 0 else [text]
    values: set[int] = set()
    for part in parts:
        values |= _parse_part(part, field)
    return tuple(sorted(values))


@dataclass(frozen=True)
class CronSchedule:
    """A parsed NCRONTAB schedule: the values each field allows, ascending."""

    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    days_of_week: tuple[int, ...]

    def next_after(self, moment: datetime) -> datetime | None:
        """The first occurrence strictly after ``moment`` (to the second; fractions of a
        second are dropped first), with ``moment``'s tzinfo; None when there is none (e.g.
        the 30th of February)."""
        t = moment.replace(microsecond=0) + timedelta(seconds=1)
        weekdays = set(self.days_of_week)
        for year in range(t.year, t.year + _SEARCH_YEARS):
            for month in self.months:
                if (year, month) < (t.year, t.month):
                    continue
                same_month = (year, month) == (t.year, t.month)
                last_day = calendar.monthrange(year, month)[1]
                for day in self.days:
                    if day > last_day:
                        break
                    if same_month and day < t.day:
                        continue
                    if (calendar.weekday(year, month, day) + 1) % 7 not in weekdays:
                        continue
                    found = self._time_of_day(year, month, day, same_month and day == t.day, t)
                    if found is not None:
                        return found
        return None

    def _time_of_day(
        self, year: int, month: int, day: int, same_day: bool, t: datetime
    ) -> datetime | None:
        for hour in self.hours:
            if same_day and hour < t.hour:
                continue
            same_hour = same_day and hour == t.hour
            for minute in self.minutes:
                if same_hour and minute < t.minute:
                    continue
                same_minute = same_hour and minute == t.minute
                for second in self.seconds:
                    if same_minute and second < t.second:
                        continue
                    return datetime(year, month, day, hour, minute, second, tzinfo=t.tzinfo)
        return None

    def occurrences(self, moment: datetime, count: int) -> list[datetime]:
        """Up to ``count`` occurrences after ``moment``, in order."""
        found: list[datetime] = []
        current: datetime | None = moment
        while current is not None and len(found) < count:
            current = self.next_after(current)
            if current is not None:
                found.append(current)
        return found


def parse_schedule(expression: str) -> CronSchedule:
    """Parse a six-field NCRONTAB expression (fields separated by spaces).

    Raises:
        ScheduleError: not six fields, or a field that is not valid; the message says which.
    """
    tokens = [token for token in expression.split(" ") if token]
    if len(tokens) != len(_FIELDS):
        raise ScheduleError(
            f"{expression!r} is not an NCRONTAB schedule: it must have 6 fields (second "
            f"minute hour day month day-of-week), it has {len(tokens)}"
        )
    values: list[tuple[int, ...]] = []
    for token, field in zip(tokens, _FIELDS, strict=True):
        try:
            values.append(_parse_field(token, field))
        except ScheduleError as exc:
            raise ScheduleError(
                f"{expression!r} is not an NCRONTAB schedule: {field.name} field {token!r}: {exc}"
            ) from None
    return CronSchedule(expression, *values)
