"""Recurrence intervals of recurring schedules: parsing, validation and calendar-correct arithmetic.

Pure and stdlib-only, so the HTTP layer (validation, 400s) and the scheduler (next firing) share one
definition of what an interval means.

**Model.** An `Interval` keeps three parts apart, like PostgreSQL's `interval`: `months` (years are 12
months), `days` (weeks are 7 days) and `seconds` (hours, minutes). Months and days are *calendar* parts
(a month is 28-31 days, a day is a wall-clock day); seconds are *elapsed* time. Sub-second precision is not
kept: a text whose total is not a whole number of seconds is rejected, never rounded.

**Grammar** (`parse_interval`; case-insensitive, surrounding whitespace ignored, at most 100 characters):

* Word/Go form: one or more `<number><unit>` parts, optionally separated by spaces, `,` or `and`
  ("24h", "1h30m", "168h0m0s", "7 days", "1 month and 2 days", "1 day, 12 hours", "1.5h", "90s").
  Numbers are decimal (`1`, `1.5`, `.5`), never signed negative, never bare (a number needs a unit).
  Units (singular or plural):

  ========== ===================================================================
  years      `y`, `yr`, `yrs`, `year`, `years`
  months     `mo`, `mon`, `mons`, `month`, `months`
  weeks      `w`, `wk`, `wks`, `week`, `weeks`
  days       `d`, `day`, `days`
  hours      `h`, `hr`, `hrs`, `hour`, `hours`
  minutes    `m`, `min`, `mins`, `minute`, `minutes`
  seconds    `s`, `sec`, `secs`, `second`, `seconds`
  sub-second `ms`, `msec`, `millisecond(s)`; `us`/`µs`, `usec`, `microsecond(s)`; `ns`, `nanosecond(s)`
  ========== ===================================================================

  `m` is minutes, as in Go; months need `mo`/`month`. The one exception to case-insensitivity: a bare
  upper-case `M` ("1M") is rejected as ambiguous (minutes in Go's spelling, months in ISO's).
* Clock form (PostgreSQL's output): `h:mm` or `h:mm:ss`, hours unbounded, alone or after word parts
  ("01:30:00", "100:00:00", "1 mon 2 days 01:30:00" -- so `interval::text` from PostgreSQL parses back).
* ISO 8601 duration: `PnYnMnWnDTnHnMnS` ("P1M", "PT1H30M", "P1DT2H", "P2W"); `,` or `.` decimals.

Fractions are exact: "1.5 days" is 1 day 12 hours, "1.5 weeks" 10 days 12 hours, "0.5 years" 6 months;
a fraction of a month ("1.5 months") is rejected, since a month has no fixed length.

**Rules** (each breach raises `IntervalError`, a `ValueError`, whose message names the rule):
unparsable (quoting the offending part), negative (any `-` sign or `ago`), fractional months, sub-second
precision, zero, shorter than `MIN_INTERVAL_SECONDS` (a month counting as its shortest, 28 days), longer than
`MAX_INTERVAL_SECONDS` (100 years, a month counting as the Gregorian mean, 30.436875 days).

**Arithmetic.** `add(anchor, interval, n)` is the n-th occurrence, computed from the anchor each time
(anchor + n*interval, never n repeated additions): from Jan 31, "1 month" gives Feb 28 (Feb 29 in a leap
year), Mar 31, Apr 30, ... -- the day is clamped to the month's length but never drifts. Parts are applied
like PostgreSQL's `timestamptz + interval`: months on the calendar, then days, both on the wall clock of the
datetime's own tzinfo, then seconds as elapsed time. In UTC (what the server stores) "1 day" and "24h" are
the same; in a zone with daylight saving "1 day" keeps the local time of day and "24h" does not. A wall-clock
time that does not exist (inside a spring-forward gap) moves forward by the gap, an ambiguous one (in a
fall-back fold) is read as the second of the two, and each calendar step is resolved before the next, all as
PostgreSQL does, so `add` agrees with `timestamptz + interval` under the same time zone. Only aware datetimes
are accepted.

**Storage.** `Interval.to_postgres()` is read by PostgreSQL's `interval` input as exactly these parts, and
`interval::text` parses back (IntervalStyle `postgres` or `iso_8601`). Do not read an `interval` column into
Python through psycopg's default loader: it returns a `timedelta`, turning each month into 30 days.

`next_after(anchor, interval, now)` is the first occurrence strictly after `now`, found in O(log n) steps.
A scheduler that wakes up after downtime fires once for the missed period and then resumes the cadence at
`next_after(anchor, interval, now)`: no burst of missed firings, no drift of the cadence.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from fractions import Fraction

__all__ = [
    "MAX_INTERVAL_SECONDS",
    "MAX_TEXT_LENGTH",
    "MEAN_MONTH_SECONDS",
    "MIN_INTERVAL_SECONDS",
    "SHORTEST_MONTH_SECONDS",
    "Interval",
    "IntervalError",
    "add",
    "next_after",
    "next_at_or_after",
    "occurrence_index",
    "parse_interval",
    "validate_interval",
]

DAY_SECONDS = 86_400
SHORTEST_MONTH_SECONDS = 28 * DAY_SECONDS
# The Gregorian calendar repeats every 400 years = 4800 months = 146097 days: a mean month is 30.436875 days.
MEAN_MONTH_SECONDS = 146_097 * DAY_SECONDS // 4_800

MIN_INTERVAL_SECONDS = 60
"""A recurring schedule fires at most once a minute (months count as 28 days in this comparison)."""

MAX_INTERVAL_SECONDS = 100 * 12 * MEAN_MONTH_SECONDS
"""100 years (months count as the Gregorian mean month in this comparison)."""

MAX_TEXT_LENGTH = 100


class IntervalError(ValueError):
    """An interval text or value breaks one of the documented rules; the message names the rule."""


@dataclass(frozen=True)
class Interval:
    """A recurrence interval: calendar months, calendar days and elapsed seconds, each non-negative.

    `str()` is the canonical text, parsed back by `parse_interval` to an equal value: the non-zero parts out
    of years (months // 12), months, days, hours, minutes, seconds, in that order, singular when 1, e.g.
    "1 year 2 months", "7 days", "1 month 2 days 1 hour 30 minutes", "168 hours"; "0 seconds" when empty.
    Days are never folded into months nor seconds into days (their lengths differ on the calendar).
    """

    months: int = 0
    days: int = 0
    seconds: int = 0

    def __post_init__(self) -> None:
        for name in ("months", "days", "seconds"):
            value = getattr(self, name)
            if type(value) is not int:
                raise TypeError(f"Interval.{name} must be an int, not {type(value).__name__}")
            if value < 0:
                raise IntervalError(f"interval must be positive: {name} is negative ({value})")

    def __str__(self) -> str:
        years, months = divmod(self.months, 12)
        hours, rest = divmod(self.seconds, 3600)
        minutes, seconds = divmod(rest, 60)
        parts = [
            _plural(value, unit)
            for value, unit in (
                (years, "year"),
                (months, "month"),
                (self.days, "day"),
                (hours, "hour"),
                (minutes, "minute"),
                (seconds, "second"),
            )
            if value
        ]
        return " ".join(parts) if parts else "0 seconds"

    def to_postgres(self) -> str:
        """Text that PostgreSQL's `interval` input reads as exactly these parts, e.g. "1 mons 2 days 5400 seconds"."""
        return f"{self.months} mons {self.days} days {self.seconds} seconds"

    def is_zero(self) -> bool:
        return not (self.months or self.days or self.seconds)

    def shortest_seconds(self) -> int:
        """The shortest this interval can last (a month as 28 days, a day as 24 hours)."""
        return self.months * SHORTEST_MONTH_SECONDS + self.days * DAY_SECONDS + self.seconds

    def mean_seconds(self) -> int:
        """Its mean length (a month as the Gregorian mean of 30.436875 days, a day as 24 hours)."""
        return self.months * MEAN_MONTH_SECONDS + self.days * DAY_SECONDS + self.seconds


def _plural(value: int, unit: str) -> str:
    return f"{value} {unit}" if value == 1 else f"{value} {unit}s"


# --------------------------------------------------------------------------------------------------- parsing

_MONTHS, _DAYS, _SECONDS = "months", "days", "seconds"

_UNITS: dict[str, tuple[str, Fraction]] = {}


def _unit(kind: str, factor: Fraction | int, *names: str) -> None:
    for name in names:
        _UNITS[name] = (kind, Fraction(factor))


_unit(_MONTHS, 12, "y", "yr", "yrs", "year", "years")
_unit(_MONTHS, 1, "mo", "mon", "mons", "month", "months")
_unit(_DAYS, 7, "w", "wk", "wks", "week", "weeks")
_unit(_DAYS, 1, "d", "day", "days")
_unit(_SECONDS, 3600, "h", "hr", "hrs", "hour", "hours")
_unit(_SECONDS, 60, "m", "min", "mins", "minute", "minutes")
_unit(_SECONDS, 1, "s", "sec", "secs", "second", "seconds")
_unit(_SECONDS, Fraction(1, 10**3), "ms", "msec", "msecs", "millisecond", "milliseconds")
_unit(
    _SECONDS,
    Fraction(1, 10**6),
    "us",
    "\u00b5s",
    "\u03bcs",
    "usec",
    "usecs",
    "microsecond",
    "microseconds",
)
_unit(_SECONDS, Fraction(1, 10**9), "ns", "nsec", "nsecs", "nanosecond", "nanoseconds")

_NUMBER = r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+"
_TOKEN = re.compile(
    rf"""
    \s*(?:
        (?P<sep>,|and\b)
      | (?P<sign>[+-]?)\s*(?:
            (?P<clock>[0-9]+:[0-9]{{1,2}}(?::[0-9]{{1,2}}(?:\.[0-9]*)?)?)(?![0-9:])
          | (?P<num>{_NUMBER})\s*(?P<unit>[a-z\u00b5\u03bc]+)?
        )
      | (?P<ago>ago\b)
      | (?P<junk>\S+)
    )
    """,
    re.VERBOSE | re.IGNORECASE,
)

_ISO_NUMBER = r"[+-]?(?:[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+)"
_ISO = re.compile(
    rf"""
    (?P<sign>[+-]?)P
    (?:(?P<years>{_ISO_NUMBER})Y)?
    (?:(?P<months>{_ISO_NUMBER})M)?
    (?:(?P<weeks>{_ISO_NUMBER})W)?
    (?:(?P<days>{_ISO_NUMBER})D)?
    (?:T(?=[-+0-9.,])
        (?:(?P<hours>{_ISO_NUMBER})H)?
        (?:(?P<minutes>{_ISO_NUMBER})M)?
        (?:(?P<secs>{_ISO_NUMBER})S)?
    )?
    """,
    re.VERBOSE | re.IGNORECASE,
)
_ISO_PARTS = {
    "years": "years",
    "months": "months",
    "weeks": "weeks",
    "days": "days",
    "hours": "hours",
    "minutes": "minutes",
    "secs": "seconds",
}


class _Sum:
    """Exact running totals while parsing; `negative` remembers the first negative part for the message."""

    def __init__(self) -> None:
        self.months = Fraction(0)
        self.days = Fraction(0)
        self.seconds = Fraction(0)
        self.negative: str | None = None

    def add(self, kind: str, amount: Fraction) -> None:
        if kind == _MONTHS:
            self.months += amount
        elif kind == _DAYS:
            self.days += amount
        else:
            self.seconds += amount


def parse_interval(text: str) -> Interval:
    """Parse an interval in any documented form and check every rule (see the module docstring).

    Raises `IntervalError` naming the rule broken.
    """
    interval = _parse(text)
    validate_interval(interval, text)
    return interval


def validate_interval(interval: Interval, text: str | None = None) -> None:
    """Check the bounds of a recurrence interval: not zero, at least `MIN_INTERVAL_SECONDS`, at most 100 years."""
    shown = repr(text.strip()) if text is not None else repr(str(interval))
    if interval.is_zero():
        raise IntervalError(f"interval must be positive: {shown} is zero")
    if interval.shortest_seconds() < MIN_INTERVAL_SECONDS:
        raise IntervalError(
            f"interval {shown} is below the minimum of 1 minute (a recurring schedule fires at most once a minute)"
        )
    if interval.mean_seconds() > MAX_INTERVAL_SECONDS:
        raise IntervalError(f"interval {shown} is above the maximum of 100 years")


def _parse(text: str) -> Interval:
    if not isinstance(text, str):
        raise IntervalError(f"interval must be a string, not {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise IntervalError("unparsable interval: it is empty")
    if len(stripped) > MAX_TEXT_LENGTH:
        raise IntervalError(f"unparsable interval: longer than {MAX_TEXT_LENGTH} characters")
    total = _parse_iso(stripped) if re.match(r"[+-]?p", stripped, re.IGNORECASE) else _parse_words(stripped)
    return _finish(total, stripped)


def _unparsable(text: str, why: str) -> IntervalError:
    return IntervalError(f"unparsable interval {text!r}: {why}")


def _parse_iso(text: str) -> _Sum:
    match = _ISO.fullmatch(text)
    if match is None or not any(match.group(group) for group in _ISO_PARTS):
        raise _unparsable(text, "not an ISO 8601 duration such as 'P1M', 'P7D' or 'PT1H30M'")
    total = _Sum()
    if match.group("sign") == "-":
        total.negative = text
    for group, name in _ISO_PARTS.items():
        raw = match.group(group)
        if raw is None:
            continue
        if raw.startswith("-") and total.negative is None:
            total.negative = raw + name[0].upper()
        kind, factor = _UNITS[name]
        total.add(kind, abs(Fraction(raw.replace(",", ".").lstrip("+"))) * factor)
    return total


def _parse_words(text: str) -> _Sum:
    total = _Sum()
    position = 0
    parts = 0
    pending_separator: str | None = None
    seen_ago = False
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:  # only trailing whitespace is left
            break
        position = match.end()
        token = match.group(0).strip()
        if not token:
            break
        if match.group("junk") is not None:
            raise _unparsable(text, f"unexpected {match.group('junk')!r}")
        if seen_ago:
            raise _unparsable(text, f"unexpected {token!r} after 'ago'")
        if match.group("sep") is not None:
            if parts == 0 or pending_separator is not None:
                raise _unparsable(text, f"unexpected {token!r}")
            pending_separator = token
            continue
        if match.group("ago") is not None:
            if parts == 0 or pending_separator is not None:
                raise _unparsable(text, "unexpected 'ago'")
            seen_ago = True
            total.negative = total.negative or text
            continue
        pending_separator = None
        parts += 1
        if match.group("sign") == "-" and total.negative is None:
            total.negative = token
        clock = match.group("clock")
        if clock is not None:
            total.seconds += _clock_seconds(text, clock)
            continue
        number, unit = match.group("num"), match.group("unit")
        if unit is None:
            raise _unparsable(text, f"missing unit after {number!r} (e.g. 's', 'm', 'h', 'days', 'months')")
        if unit == "M":
            raise _unparsable(text, f"{token!r} is ambiguous: write 'min' for minutes or 'mo' for months")
        known = _UNITS.get(unit.lower())
        if known is None:
            raise _unparsable(text, f"unknown unit {unit!r} in {token!r}")
        kind, factor = known
        total.add(kind, Fraction(number) * factor)
    if pending_separator is not None:
        raise _unparsable(text, f"unexpected {pending_separator!r} at the end")
    if parts == 0:
        raise _unparsable(text, "no duration in it")
    return total


def _clock_seconds(text: str, clock: str) -> Fraction:
    hours, minutes, *rest = clock.split(":")
    seconds = Fraction(rest[0]) if rest else Fraction(0)
    if int(minutes) >= 60 or seconds >= 60:
        raise _unparsable(text, f"{clock!r} is not a valid h:mm:ss time (minutes and seconds below 60)")
    return int(hours) * 3600 + int(minutes) * 60 + seconds


def _finish(total: _Sum, text: str) -> Interval:
    if total.negative is not None:
        raise IntervalError(f"interval must be positive: {total.negative!r} is negative")
    if total.months.denominator != 1:
        raise IntervalError(
            f"interval {text!r} has a fraction of a month: months and years must be whole (a month has no fixed length)"
        )
    whole_days = total.days.numerator // total.days.denominator
    seconds = total.seconds + (total.days - whole_days) * DAY_SECONDS
    if seconds.denominator != 1:
        raise IntervalError(
            f"interval {text!r} is not a whole number of seconds: fractions of a second are not supported"
        )
    return Interval(months=int(total.months), days=whole_days, seconds=int(seconds))


# ------------------------------------------------------------------------------------------------ arithmetic


def _require_aware(moment: datetime, name: str) -> None:
    if not isinstance(moment, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} is a naive datetime: a timezone is required")


def add(moment: datetime, interval: Interval, times: int = 1) -> datetime:
    """`moment + times * interval`: the `times`-th occurrence of a schedule anchored at `moment`.

    Computed from `moment` in one step (never by repeated addition), so a day of month clamped in a short
    month is restored in a long one: Jan 31 + 1 month = Feb 28 (29), + 2 months = Mar 31. Months then days
    are applied on the wall clock of `moment`'s tzinfo, then seconds as elapsed time; the result has
    `moment`'s tzinfo. Raises ValueError for a naive datetime or a negative `times`, OverflowError when the
    result is beyond the datetime range.
    """
    _require_aware(moment, "moment")
    if times < 0:
        raise ValueError(f"times must not be negative, got {times}")
    months, days, seconds = interval.months * times, interval.days * times, interval.seconds * times
    tz = moment.tzinfo
    result = moment
    if months:
        wall = result.replace(tzinfo=None, fold=0)
        year, month0 = divmod(wall.year * 12 + wall.month - 1 + months, 12)
        if year > 9999:
            raise OverflowError("date value out of range")
        day = min(wall.day, calendar.monthrange(year, month0 + 1)[1])
        result = _localize(wall.replace(year=year, month=month0 + 1, day=day), tz)
    if days:
        result = _localize(result.replace(tzinfo=None, fold=0) + timedelta(days=days), tz)
    if seconds:
        result = (result.astimezone(UTC) + timedelta(seconds=seconds)).astimezone(tz)
    return result


def _localize(wall: datetime, tz: tzinfo | None) -> datetime:
    """Attach `tz` to a naive wall-clock time the way PostgreSQL does: a time inside a spring-forward gap takes
    the offset from before the transition (so it moves forward by the gap), an ambiguous time in a fall-back
    fold the offset from after it (the second of the two)."""
    later = wall.replace(tzinfo=tz, fold=1).astimezone(UTC).astimezone(tz)
    if later.replace(tzinfo=None, fold=0) == wall:
        return later
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC).astimezone(tz)


def _require_recurring(interval: Interval) -> None:
    if interval.is_zero():
        raise IntervalError("interval must be positive: it is zero")


def occurrence_index(anchor: datetime, interval: Interval, moment: datetime) -> int:
    """The largest n >= 0 with `add(anchor, interval, n) <= moment`, or -1 when `moment` is before `anchor`.

    Estimated from the mean interval length, then corrected by galloping and bisection: O(log n) additions
    even for a one-minute interval across decades.
    """
    _require_aware(anchor, "anchor")
    _require_aware(moment, "moment")
    _require_recurring(interval)
    if moment < anchor:
        return -1

    def beyond(n: int) -> bool:
        try:
            return add(anchor, interval, n) > moment
        except OverflowError:
            return True

    elapsed = moment - anchor
    estimate = (elapsed.days * DAY_SECONDS + elapsed.seconds) // interval.mean_seconds()
    # Invariant once bracketed: not beyond(low), beyond(high). beyond(0) is False since anchor <= moment.
    if beyond(estimate):
        high, step = estimate, 1
        while True:
            candidate = max(high - step, 0)
            if not beyond(candidate):
                low = candidate
                break
            high, step = candidate, step * 2
    else:
        low, step = estimate, 1
        while True:
            candidate = low + step
            if beyond(candidate):
                high = candidate
                break
            low, step = candidate, step * 2
    while high - low > 1:
        middle = (low + high) // 2
        if beyond(middle):
            high = middle
        else:
            low = middle
    return low


def next_after(anchor: datetime, interval: Interval, now: datetime) -> datetime:
    """The first occurrence `add(anchor, interval, n)`, n >= 0, strictly after `now`.

    This is how a recurring schedule resumes after downtime: the missed period fires once, and the next
    firing is `next_after(anchor, interval, now)`, on the original cadence. Raises OverflowError when that
    occurrence is beyond the datetime range.
    """
    return add(anchor, interval, occurrence_index(anchor, interval, now) + 1)


def next_at_or_after(anchor: datetime, interval: Interval, moment: datetime) -> datetime:
    """The first occurrence at or after `moment` (e.g. the first firing of a schedule starting at `moment`)."""
    index = occurrence_index(anchor, interval, moment)
    if index >= 0:
        occurrence = add(anchor, interval, index)
        if occurrence == moment:
            return occurrence
    return add(anchor, interval, index + 1)
