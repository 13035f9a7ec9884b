"""The cron dialect of schedules (docs/http-api.md#cron), parsed and evaluated exactly, without third-party code.

Five fields, evaluated in UTC:

    minute 0-59   hour 0-23   day of month 1-31   month 1-12   day of week 0-7 (0 and 7 are Sunday)

Each field is a comma list of elements, each one of `*`, `n`, `a-b`, `*/s`, `a-b/s` or `a/s` (`a` to the field
maximum in steps of `s`; `*/s` is the field minimum to its maximum in steps of `s`). Numbers are plain ASCII decimal
digits. No names, macros (`@daily`) or seconds. Fields are separated by any run of spaces or tabs; spaces and tabs
before the first field and after the last are ignored.

Day rule: when both day fields are restricted (their text is not exactly `*`, so `*/2` counts as restricted, unlike
Vixie cron), a day matches if either field matches; otherwise both must.

The next fire is the first matching minute strictly after the reference time, searched up to five years ahead.

    >>> from datetime import UTC, datetime
    >>> parse("0 0 29 2 *").next_after(datetime(2026, 1, 1, tzinfo=UTC)).isoformat()
    '2028-02-29T00:00:00+00:00'
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["Cron", "CronError", "parse", "validate", "HORIZON_YEARS"]

HORIZON_YEARS = 5  # how far ahead `Cron.next_after` searches


class CronError(ValueError):
    """A cron expression is invalid, or has no fire within five years. The message says what is wrong and, for an
    error within a field, starts with the field's name: `day of month: 32 is out of range 1-31`."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12),
    _Field("day of week", 0, 7),
)


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression: the allowed values of each field and whether each day field is restricted.

    `weekdays` uses cron numbering with Sunday as 0 (a 7 in the expression is stored as 0), Monday 1 … Saturday 6.
    `days_restricted` / `weekdays_restricted` are true when the field's text is not exactly `*`. Build one with
    `parse`; a `Cron` built by hand is taken as given.
    """

    expr: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_restricted: bool
    weekdays_restricted: bool

    def day_matches(self, year: int, month: int, day: int) -> bool:
        """Whether the date passes both day fields (either one when both are restricted). The month field is not
        consulted."""
        weekday = (calendar.weekday(year, month, day) + 1) % 7  # Python: Monday 0 … Sunday 6; cron: Sunday 0
        return self._day_ok(day, weekday)

    def matches(self, when: datetime) -> bool:
        """Whether the minute containing `when` (aware, any zone, read in UTC) is a fire time. Seconds are ignored.
        A naive datetime raises ValueError."""
        t = _utc(when)
        return (t.minute in self.minutes and t.hour in self.hours and t.month in self.months
                and self.day_matches(t.year, t.month, t.day))

    def next_after(self, after: datetime) -> datetime:
        """The first fire time strictly after `after`: an aware UTC datetime with second and microsecond 0.

        `after` must be aware (a naive datetime raises ValueError); any zone is converted to UTC. Raises
        CronError("no fire within five years") when no fire falls in (`after`, `after` + 5 calendar years], where
        a 29 February plus five years is read as 28 February.

        The search advances field by field (month, then day, then hour, then minute) with integer arithmetic, so
        its loop runs at most a few hundred times whatever the expression (about 60 µs for the worst found).
        """
        t = _utc(after)
        limit = _horizon(t)
        try:
            s = t.replace(second=0, microsecond=0) + timedelta(minutes=1)
        except OverflowError:
            raise CronError("no fire within five years") from None
        # Field values may run one past their maximum (day 32, hour 24, minute 60): such a tuple still sorts after
        # every real minute before it and before every real minute after it, so the horizon comparison holds.
        y, mo, d, h, mi = s.year, s.month, s.day, s.hour, s.minute
        while (y, mo, d, h, mi) <= limit:
            if mo not in self.months:
                nxt = _next_in(self.months, mo, 12)
                if nxt is None:
                    first = _next_in(self.months, 1, 12)
                    if first is None:  # only a hand-built Cron can have no month
                        break
                    y, mo = y + 1, first
                else:
                    mo = nxt
                d, h, mi = 1, 0, 0
                continue
            nd = self._next_day(y, mo, d)
            if nd is None:
                y, mo = (y + 1, 1) if mo == 12 else (y, mo + 1)
                d, h, mi = 1, 0, 0
                continue
            if nd != d:
                d, h, mi = nd, 0, 0
                continue  # re-check the horizon before looking at the hours of a later day
            nh = _next_in(self.hours, h, 23)
            if nh is None:
                d, h, mi = d + 1, 0, 0
                continue
            if nh != h:
                h, mi = nh, 0
                continue
            nmi = _next_in(self.minutes, mi, 59)
            if nmi is None:
                h, mi = h + 1, 0
                continue
            if nmi != mi:
                mi = nmi
                continue
            return datetime(y, mo, d, h, mi, tzinfo=UTC)
        raise CronError("no fire within five years")

    def _day_ok(self, day: int, weekday: int) -> bool:
        if self.days_restricted and self.weekdays_restricted:
            return day in self.days or weekday in self.weekdays
        return day in self.days and weekday in self.weekdays

    def _next_day(self, year: int, month: int, day: int) -> int | None:
        """The first day >= `day` of the month that passes the day fields, or None."""
        first, length = calendar.monthrange(year, month)  # weekday of the 1st (Monday 0), days in the month
        for d in range(day, length + 1):
            if self._day_ok(d, (first + d) % 7):  # (first + d - 1 + 1) % 7: cron weekday of day d
                return d
        return None


def parse(expr: str) -> Cron:
    """Parses `expr` into a `Cron`; CronError says what is wrong (not five fields, a value out of range, a step
    below 1 or not an integer, a range whose start is above its end, an empty list element). Does not check that
    the expression ever fires: see `validate`."""
    if not isinstance(expr, str):
        raise CronError(f"a cron expression is a string, not {type(expr).__name__}")
    parts = expr.replace("\t", " ").split(" ")
    fields = [p for p in parts if p]
    if len(fields) != len(_FIELDS):
        raise CronError(f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
    sets = [_parse_field(text, spec) for text, spec in zip(fields, _FIELDS, strict=True)]
    weekdays = frozenset(0 if v == 7 else v for v in sets[4])
    return Cron(expr=expr, minutes=sets[0], hours=sets[1], days=sets[2], months=sets[3], weekdays=weekdays,
                days_restricted=fields[2] != "*", weekdays_restricted=fields[4] != "*")


def validate(expr: str, now: datetime | None = None) -> Cron:
    """Parses `expr` and checks that it fires within five years after `now` (default: the current time); raises
    CronError otherwise (`0 0 31 2 *` never fires; `0 0 29 2 *` is fine)."""
    cron = parse(expr)
    cron.next_after(datetime.now(UTC) if now is None else now)
    return cron


def _parse_field(text: str, spec: _Field) -> frozenset[int]:
    values: set[int] = set()
    for element in text.split(","):
        if not element:
            raise CronError(f"{spec.name}: empty list element in {text!r}")
        body, slash, step_text = element.partition("/")
        step = 1
        if slash:
            step = _number(step_text, spec, "step")
            if step < 1:
                raise CronError(f"{spec.name}: step {step} is below 1")
        if body == "*":
            low, high = spec.low, spec.high
        else:
            start_text, dash, end_text = body.partition("-")
            low = _value(start_text, spec)
            if dash:
                high = _value(end_text, spec)
                if low > high:
                    raise CronError(f"{spec.name}: range {low}-{high} starts above its end")
            else:
                high = spec.high if slash else low  # `a/s` runs from a to the field maximum
        values.update(range(low, high + 1, step))
    return frozenset(values)


def _value(text: str, spec: _Field) -> int:
    n = _number(text, spec, "value")
    if not spec.low <= n <= spec.high:
        shown = text if len(text) <= 20 else text[:20] + "…"
        raise CronError(f"{spec.name}: {shown} is out of range {spec.low}-{spec.high}")
    return n


_BIG = 10**9  # stands in for any number of more digits: out of range as a value, a step past every range


def _number(text: str, spec: _Field, what: str) -> int:
    """A plain ASCII decimal number (no sign, no spaces, no other digits)."""
    if not (text.isascii() and text.isdigit()):
        shown = text if len(text) <= 20 else text[:20] + "…"
        raise CronError(f"{spec.name}: {what} {shown!r} is not an integer")
    digits = text.lstrip("0") or "0"  # int() refuses strings of more than 4300 digits, leading zeros included
    return _BIG if len(digits) > 9 else int(digits)


def _next_in(allowed: frozenset[int], start: int, high: int) -> int | None:
    """The smallest allowed value in [start, high], or None."""
    for v in range(start, high + 1):
        if v in allowed:
            return v
    return None


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("a naive datetime has no defined instant; pass an aware one (tzinfo=UTC)")
    return when.astimezone(UTC)


def _horizon(t: datetime) -> tuple[int, int, int, int, int]:
    """(year, month, day, hour, minute) of the last minute on or before `t` + five calendar years."""
    year = t.year + HORIZON_YEARS
    if year > datetime.max.year:
        return (datetime.max.year, 12, 31, 23, 59)
    day = 28 if (t.month, t.day) == (2, 29) and not calendar.isleap(year) else t.day
    return (year, t.month, day, t.hour, t.minute)
