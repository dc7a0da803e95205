"""Recurrence intervals (issue 5, docs/api.md "Schedules"): every accepted form, every rejection with the
rule it names, calendar-correct occurrences ("month interval from Jan 31") and the no-burst resume after downtime.

Pure unit tests of `lunogram_server.schedules.intervals`: no database, no server.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lunogram_server.schedules import intervals
from lunogram_server.schedules.intervals import (
    MAX_INTERVAL_SECONDS,
    MIN_INTERVAL_SECONDS,
    Interval,
    IntervalError,
    add,
    next_after,
    next_at_or_after,
    occurrence_index,
    parse_interval,
    validate_interval,
)

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
HOUR = 3600
DAY = 86_400


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# ------------------------------------------------------------------------------------------- accepted forms


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the SDKs' own examples
        ("24h", Interval(seconds=24 * HOUR)),
        ("168h", Interval(seconds=168 * HOUR)),
        ("7 days", Interval(days=7)),
        ("1 month", Interval(months=1)),
        ("1h30m", Interval(seconds=90 * 60)),
        # Go durations, including time.Duration.String() output
        ("90s", Interval(seconds=90)),
        ("1.5h", Interval(seconds=90 * 60)),
        (".5h", Interval(seconds=30 * 60)),
        ("168h0m0s", Interval(seconds=168 * HOUR)),
        ("2h45m30s", Interval(seconds=2 * HOUR + 45 * 60 + 30)),
        ("+1h", Interval(seconds=HOUR)),
        ("60000ms", Interval(seconds=60)),
        ("90000000us", Interval(seconds=90)),
        ("90000000\u00b5s", Interval(seconds=90)),
        ("120000000000ns", Interval(seconds=120)),
        ("1m", Interval(seconds=60)),
        # words, singular/plural, abbreviations, separators
        ("1 day", Interval(days=1)),
        ("2 weeks", Interval(days=14)),
        ("1 week", Interval(days=7)),
        ("1 year", Interval(months=12)),
        ("2 years", Interval(months=24)),
        ("3 hours", Interval(seconds=3 * HOUR)),
        ("1 hour", Interval(seconds=HOUR)),
        ("30 minutes", Interval(seconds=30 * 60)),
        ("1 minute", Interval(seconds=60)),
        ("90 seconds", Interval(seconds=90)),
        ("1 day 12 hours", Interval(days=1, seconds=12 * HOUR)),
        ("1 month and 2 days", Interval(months=1, days=2)),
        ("1 day, 12 hours", Interval(days=1, seconds=12 * HOUR)),
        ("1 year, 2 months and 3 days", Interval(months=14, days=3)),
        ("5 min", Interval(seconds=300)),
        ("5 mins", Interval(seconds=300)),
        ("2 hr", Interval(seconds=2 * HOUR)),
        ("2 hrs", Interval(seconds=2 * HOUR)),
        ("90 sec", Interval(seconds=90)),
        ("90 secs", Interval(seconds=90)),
        ("3d", Interval(days=3)),
        ("3 d", Interval(days=3)),
        ("2w", Interval(days=14)),
        ("2 wks", Interval(days=14)),
        ("6mo", Interval(months=6)),
        ("1y", Interval(months=12)),
        ("2 yrs", Interval(months=24)),
        ("1d12h", Interval(days=1, seconds=12 * HOUR)),
        ("1h 1h", Interval(seconds=2 * HOUR)),
        # exact fractions
        ("1.5 days", Interval(days=1, seconds=12 * HOUR)),
        ("1.5 weeks", Interval(days=10, seconds=12 * HOUR)),
        ("0.5 years", Interval(months=6)),
        ("1.5 minutes", Interval(seconds=90)),
        # case-insensitive, surrounding whitespace
        ("24H", Interval(seconds=24 * HOUR)),
        ("7 DAYS", Interval(days=7)),
        ("1 Month", Interval(months=1)),
        ("  24h \n", Interval(seconds=24 * HOUR)),
        ("\t1 month\t", Interval(months=1)),
        # ISO 8601 durations
        ("P1M", Interval(months=1)),
        ("PT1H30M", Interval(seconds=90 * 60)),
        ("P1DT2H", Interval(days=1, seconds=2 * HOUR)),
        ("P7D", Interval(days=7)),
        ("P2W", Interval(days=14)),
        ("P1Y2M3DT4H5M6S", Interval(months=14, days=3, seconds=4 * HOUR + 5 * 60 + 6)),
        ("PT1.5H", Interval(seconds=90 * 60)),
        ("PT1,5H", Interval(seconds=90 * 60)),
        ("PT90S", Interval(seconds=90)),
        ("p1m", Interval(months=1)),
        ("pt1m", Interval(seconds=60)),
        # PostgreSQL: clock form and interval::text output (IntervalStyle postgres)
        ("01:30:00", Interval(seconds=90 * 60)),
        ("1:30", Interval(seconds=90 * 60)),
        ("100:00:00", Interval(seconds=100 * HOUR)),
        ("1 mon", Interval(months=1)),
        ("1 year 2 mons 25 days 05:06:07", Interval(months=14, days=25, seconds=5 * HOUR + 6 * 60 + 7)),
        ("1 day 02:00:00", Interval(days=1, seconds=2 * HOUR)),
        ("1 mons 2 days 5400 seconds", Interval(months=1, days=2, seconds=5400)),
        # the bounds themselves
        ("1 minute", Interval(seconds=MIN_INTERVAL_SECONDS)),
        ("100 years", Interval(months=1200)),
    ],
)
def test_accepted(text: str, expected: Interval) -> None:
    assert parse_interval(text) == expected


# ------------------------------------------------------------------------------------------------ rejections


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        # unparsable: the message quotes the offending part
        ("", "unparsable interval: it is empty"),
        ("   ", "unparsable interval: it is empty"),
        ("abc", "unparsable interval 'abc': unexpected 'abc'"),
        ("7 dayz", "unknown unit 'dayz'"),
        ("1 fortnight", "unknown unit 'fortnight'"),
        ("60", "missing unit after '60'"),
        ("1 hour 30", "missing unit after '30'"),
        ("1h!", "unexpected '!'"),
        ("1h;2m", "unexpected ';2m'"),
        ("and 1h", "unexpected 'and'"),
        ("1h and", "unexpected 'and' at the end"),
        ("1h and and 2m", "unexpected 'and'"),
        ("1h, , 2m", "unexpected ','"),
        ("1 day ago 2h", "after 'ago'"),
        ("1M", "'1M' is ambiguous: write 'min' for minutes or 'mo' for months"),
        ("1:75", "'1:75' is not a valid h:mm:ss time"),
        ("1:30:75", "'1:30:75' is not a valid h:mm:ss time"),
        ("P", "not an ISO 8601 duration"),
        ("PT", "not an ISO 8601 duration"),
        ("P1H", "not an ISO 8601 duration"),
        ("PT5", "not an ISO 8601 duration"),
        ("P1D2H", "not an ISO 8601 duration"),
        ("1h" * 60, "longer than 100 characters"),
        ("\u0661h", "unexpected '\u0661h'"),  # only ASCII digits
        # zero or negative
        ("0s", "interval must be positive: '0s' is zero"),
        ("0 days", "must be positive: '0 days' is zero"),
        ("P0D", "must be positive: 'P0D' is zero"),
        ("00:00:00", "must be positive: '00:00:00' is zero"),
        ("-1h", "interval must be positive: '-1h' is negative"),
        ("-7 days", "must be positive: '-7 days' is negative"),
        ("1 day -2 hours", "must be positive: '-2 hours' is negative"),
        ("1 day ago", "must be positive: '1 day ago' is negative"),
        ("-P1D", "must be positive: '-P1D' is negative"),
        ("P-1D", "must be positive: '-1D' is negative"),
        ("-01:30:00", "must be positive: '-01:30:00' is negative"),
        # precision
        ("500ms", "not a whole number of seconds: fractions of a second are not supported"),
        ("90.5s", "not a whole number of seconds"),
        ("PT0.5S", "not a whole number of seconds"),
        ("00:01:00.5", "not a whole number of seconds"),
        ("1.5 months", "fraction of a month: months and years must be whole"),
        ("0.1 years", "fraction of a month"),
        ("P1.5M", "fraction of a month"),
        # below the minimum / above the maximum
        ("30s", "below the minimum of 1 minute (a recurring schedule fires at most once a minute)"),
        ("59s", "below the minimum of 1 minute"),
        ("59000000000ns", "below the minimum of 1 minute"),
        ("101 years", "above the maximum of 100 years"),
        ("1201 months", "above the maximum of 100 years"),
        ("40000 days", "above the maximum of 100 years"),
        ("1000000h", "above the maximum of 100 years"),
        ("9" * 90 + "h", "above the maximum of 100 years"),
    ],
)
def test_rejected_naming_the_rule(text: str, rule: str) -> None:
    with pytest.raises(IntervalError) as caught:
        parse_interval(text)
    assert rule in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_non_string_is_rejected() -> None:
    with pytest.raises(IntervalError, match="must be a string"):
        parse_interval(24)  # type: ignore[arg-type]


def test_validate_interval_bounds() -> None:
    validate_interval(Interval(seconds=MIN_INTERVAL_SECONDS))
    validate_interval(Interval(months=1))  # a month counts as 28 days against the minimum
    validate_interval(Interval(months=1200))
    assert Interval(months=1200).mean_seconds() == MAX_INTERVAL_SECONDS
    with pytest.raises(IntervalError, match="below the minimum"):
        validate_interval(Interval(seconds=MIN_INTERVAL_SECONDS - 1))
    with pytest.raises(IntervalError, match="is zero"):
        validate_interval(Interval())
    with pytest.raises(IntervalError, match="above the maximum"):
        validate_interval(Interval(months=1200, seconds=1))


def test_interval_parts_must_be_non_negative_ints() -> None:
    with pytest.raises(IntervalError, match="must be positive: days is negative"):
        Interval(days=-1)
    with pytest.raises(TypeError, match="must be an int"):
        Interval(seconds=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be an int"):
        Interval(months=True)


# ------------------------------------------------------------------------------------------- canonical texts


@pytest.mark.parametrize(
    ("interval", "text", "postgres"),
    [
        (Interval(months=1, days=2, seconds=5400), "1 month 2 days 1 hour 30 minutes", "1 mons 2 days 5400 seconds"),
        (Interval(months=14), "1 year 2 months", "14 mons 0 days 0 seconds"),
        (Interval(months=24), "2 years", "24 mons 0 days 0 seconds"),
        (Interval(days=7), "7 days", "0 mons 7 days 0 seconds"),
        (Interval(days=1), "1 day", "0 mons 1 days 0 seconds"),
        (Interval(seconds=168 * HOUR), "168 hours", "0 mons 0 days 604800 seconds"),
        (Interval(seconds=3661), "1 hour 1 minute 1 second", "0 mons 0 days 3661 seconds"),
        (Interval(seconds=62), "1 minute 2 seconds", "0 mons 0 days 62 seconds"),
        (Interval(), "0 seconds", "0 mons 0 days 0 seconds"),
    ],
)
def test_canonical_text(interval: Interval, text: str, postgres: str) -> None:
    assert str(interval) == text
    assert interval.to_postgres() == postgres
    if not interval.is_zero():
        assert parse_interval(text) == interval
        assert parse_interval(postgres) == interval


# ------------------------------------------------------------------------------------- calendar arithmetic


def test_month_interval_from_jan_31() -> None:
    monthly = parse_interval("1 month")
    anchor = utc(2025, 1, 31, 9, 0)
    days = [add(anchor, monthly, n).date().isoformat() for n in range(13)]
    assert days == [
        "2025-01-31",
        "2025-02-28",
        "2025-03-31",  # from the anchor: the clamp in February does not drift into March
        "2025-04-30",
        "2025-05-31",
        "2025-06-30",
        "2025-07-31",
        "2025-08-31",
        "2025-09-30",
        "2025-10-31",
        "2025-11-30",
        "2025-12-31",
        "2026-01-31",
    ]
    assert all(add(anchor, monthly, n).time().isoformat() == "09:00:00" for n in range(13))
    # repeated addition would drift to the 28th; the n-th occurrence is anchor + n*interval instead
    assert add(add(anchor, monthly), monthly) == utc(2025, 3, 28, 9, 0)
    assert add(anchor, monthly, 2) == utc(2025, 3, 31, 9, 0)


def test_month_interval_from_jan_31_in_a_leap_year() -> None:
    monthly = parse_interval("1 month")
    anchor = utc(2024, 1, 31)
    assert [add(anchor, monthly, n).date().isoformat() for n in range(4)] == [
        "2024-01-31",
        "2024-02-29",
        "2024-03-31",
        "2024-04-30",
    ]
    assert add(anchor, monthly, 13) == utc(2025, 2, 28)


def test_yearly_from_feb_29() -> None:
    yearly = parse_interval("1 year")
    anchor = utc(2024, 2, 29, 12, 0)
    assert [add(anchor, yearly, n).date().isoformat() for n in range(5)] == [
        "2024-02-29",
        "2025-02-28",
        "2026-02-28",
        "2027-02-28",
        "2028-02-29",
    ]


def test_parts_apply_months_then_days_then_seconds() -> None:
    # Jan 31 + 1 month = Feb 28, + 1 day = Mar 1, + 1 hour; (days first would give Mar 1 -> Apr 1)
    assert add(utc(2025, 1, 31), parse_interval("1 month 1 day 1h")) == utc(2025, 3, 1, 1, 0)
    assert add(utc(2025, 1, 31), parse_interval("1 month 1 day"), 2) == utc(2025, 4, 2)


def test_next_after_month_from_jan_31() -> None:
    monthly = parse_interval("1 month")
    anchor = utc(2025, 1, 31, 9, 0)
    assert next_after(anchor, monthly, utc(2025, 2, 28, 9, 0)) == utc(2025, 3, 31, 9, 0)
    assert next_after(anchor, monthly, utc(2025, 2, 28, 8, 59)) == utc(2025, 2, 28, 9, 0)
    assert next_after(anchor, monthly, utc(2025, 4, 15)) == utc(2025, 4, 30, 9, 0)


def test_utc_days_equal_24_hours() -> None:
    anchor = utc(2025, 3, 29, 9, 0)
    for n in range(5):
        assert add(anchor, parse_interval("1 day"), n) == add(anchor, parse_interval("24h"), n)
        assert add(anchor, parse_interval("1 day"), n) == anchor + timedelta(days=n)
    assert add(anchor, parse_interval("7 days")) == add(anchor, parse_interval("168h"))


def test_days_keep_local_time_in_a_zone_hours_are_elapsed_time() -> None:
    anchor = datetime(2025, 3, 29, 9, 0, tzinfo=AMSTERDAM)  # CET; DST starts 2025-03-30 02:00
    by_day = add(anchor, parse_interval("1 day"))
    by_hours = add(anchor, parse_interval("24h"))
    assert by_day == datetime(2025, 3, 30, 9, 0, tzinfo=AMSTERDAM)
    assert by_day.astimezone(UTC) - anchor.astimezone(UTC) == timedelta(hours=23)
    assert by_hours == datetime(2025, 3, 30, 10, 0, tzinfo=AMSTERDAM)
    assert by_hours.astimezone(UTC) - anchor.astimezone(UTC) == timedelta(hours=24)
    assert by_day.tzinfo is AMSTERDAM
    assert by_hours.tzinfo is AMSTERDAM


def test_nonexistent_and_ambiguous_wall_times_resolve_like_postgresql() -> None:
    daily = parse_interval("1 day")
    gap_anchor = datetime(2025, 3, 29, 2, 30, tzinfo=AMSTERDAM)
    # 2025-03-30 02:30 does not exist in Amsterdam: moved forward by the gap ...
    assert add(gap_anchor, daily) == datetime(2025, 3, 30, 3, 30, tzinfo=AMSTERDAM)
    # ... and the next occurrence, computed from the anchor, is back at 02:30
    assert add(gap_anchor, daily, 2) == datetime(2025, 3, 31, 2, 30, tzinfo=AMSTERDAM)
    fold_anchor = datetime(2025, 10, 25, 2, 30, tzinfo=AMSTERDAM)
    # 2025-10-26 02:30 happens twice: the second one (CET, +01:00), as PostgreSQL reads it
    ambiguous = add(fold_anchor, daily)
    assert ambiguous.utcoffset() == timedelta(hours=1)
    assert ambiguous.astimezone(UTC) == utc(2025, 10, 26, 1, 30)


def test_pure_seconds_are_elapsed_time_even_across_a_fold() -> None:
    first = datetime(2025, 10, 26, 2, 30, tzinfo=AMSTERDAM)  # fold=0: CEST, 00:30 UTC
    assert add(first, parse_interval("1h")).astimezone(UTC) == utc(2025, 10, 26, 1, 30)
    assert add(first, parse_interval("1h")).fold == 1  # the same wall time, an hour later


def test_times_zero_is_the_anchor() -> None:
    anchor = utc(2025, 1, 31)
    assert add(anchor, parse_interval("1 month 1 day 1h"), 0) == anchor


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2025, 1, 1)
    hourly = parse_interval("1h")
    with pytest.raises(ValueError, match="naive datetime"):
        add(naive, hourly)
    with pytest.raises(ValueError, match="naive datetime"):
        next_after(naive, hourly, utc(2025, 1, 1))
    with pytest.raises(ValueError, match="naive datetime"):
        next_after(utc(2025, 1, 1), hourly, naive)


def test_negative_times_are_refused() -> None:
    with pytest.raises(ValueError, match="times must not be negative"):
        add(utc(2025, 1, 1), parse_interval("1h"), -1)


def test_zero_interval_has_no_next_occurrence() -> None:
    with pytest.raises(IntervalError, match="is zero"):
        next_after(utc(2025, 1, 1), Interval(), utc(2025, 6, 1))


def test_beyond_the_datetime_range() -> None:
    with pytest.raises(OverflowError):
        add(utc(9999, 12, 1), parse_interval("1 month"))
    with pytest.raises(OverflowError):
        add(utc(9999, 12, 31), parse_interval("1 day"))
    yearly = parse_interval("1 year")
    assert occurrence_index(utc(9990, 1, 1), yearly, utc(9999, 6, 1)) == 9
    with pytest.raises(OverflowError):
        next_after(utc(9990, 1, 1), yearly, utc(9999, 6, 1))


# ------------------------------------------------------------------------------- next firing after downtime


def test_next_after_before_at_and_after_the_anchor() -> None:
    hourly = parse_interval("1h")
    anchor = utc(2025, 4, 1, 9, 0)
    assert next_after(anchor, hourly, utc(2025, 1, 1)) == anchor
    assert next_after(anchor, hourly, anchor) == utc(2025, 4, 1, 10, 0)
    assert next_after(anchor, hourly, utc(2025, 4, 1, 9, 59, 59)) == utc(2025, 4, 1, 10, 0)
    assert occurrence_index(anchor, hourly, utc(2025, 1, 1)) == -1
    assert occurrence_index(anchor, hourly, anchor) == 0
    assert occurrence_index(anchor, hourly, utc(2025, 4, 2, 9, 0)) == 24


def test_next_at_or_after() -> None:
    weekly = parse_interval("7 days")
    anchor = utc(2025, 4, 1, 9, 0)
    assert next_at_or_after(anchor, weekly, anchor) == anchor
    assert next_at_or_after(anchor, weekly, utc(2025, 1, 1)) == anchor
    assert next_at_or_after(anchor, weekly, utc(2025, 4, 8, 9, 0)) == utc(2025, 4, 8, 9, 0)
    assert next_at_or_after(anchor, weekly, utc(2025, 4, 8, 9, 1)) == utc(2025, 4, 15, 9, 0)


def test_resume_after_years_of_downtime_without_a_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-minute schedule down for five years: the next firing is the next minute on the cadence, found with
    a handful of additions rather than one per missed occurrence (~2.8 million)."""
    calls = 0
    real_add = intervals.add

    def counting_add(moment: datetime, interval: Interval, times: int = 1) -> datetime:
        nonlocal calls
        calls += 1
        return real_add(moment, interval, times)

    monkeypatch.setattr(intervals, "add", counting_add)
    minutely = parse_interval("1m")
    anchor = utc(2025, 1, 1, 0, 0, 30)
    now = utc(2030, 6, 1, 12, 34, 56)
    assert next_after(anchor, minutely, now) == utc(2030, 6, 1, 12, 35, 30)
    assert calls < 80

    calls = 0
    monthly = parse_interval("1 month")
    assert next_after(utc(1970, 1, 31), monthly, now) == utc(2030, 6, 30)
    assert calls < 80


# ------------------------------------------------------------------------------------------ property tests

ZONES = [UTC, AMSTERDAM, ZoneInfo("America/New_York"), ZoneInfo("Australia/Lord_Howe"), ZoneInfo("Asia/Kolkata")]

valid_intervals = st.builds(
    Interval,
    months=st.integers(0, 1200),
    days=st.integers(0, 40_000),
    seconds=st.one_of(st.integers(0, 10**6), st.integers(0, MAX_INTERVAL_SECONDS)),
).filter(lambda i: i.shortest_seconds() >= MIN_INTERVAL_SECONDS and i.mean_seconds() <= MAX_INTERVAL_SECONDS)

# for arithmetic: any positive interval (the minimum is a policy of parse_interval, not of the arithmetic)
step_intervals = st.builds(
    Interval,
    months=st.integers(0, 36),
    days=st.integers(0, 400),
    seconds=st.one_of(st.integers(0, 600), st.integers(0, 10**7)),
).filter(lambda i: not i.is_zero())

anchors = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.sampled_from(ZONES))
offsets = st.integers(-(10**9), 2 * 10**9).map(lambda s: timedelta(seconds=s, microseconds=s % 7))


@given(valid_intervals)
def test_canonical_text_round_trips(interval: Interval) -> None:
    assert parse_interval(str(interval)) == interval
    assert parse_interval(interval.to_postgres()) == interval


@given(st.text(max_size=60))
def test_any_text_parses_or_raises_interval_error(text: str) -> None:
    try:
        interval = parse_interval(text)
    except IntervalError:
        return
    validate_interval(interval)


@given(st.text(alphabet="0123456789.:,+- hmsdwyoPTMWYDSan\u00b5", max_size=24))
def test_interval_like_text_parses_to_a_valid_interval_or_raises_interval_error(text: str) -> None:
    try:
        interval = parse_interval(text)
    except IntervalError:
        return
    validate_interval(interval)
    assert parse_interval(str(interval)) == interval


@given(
    st.lists(
        st.tuples(st.integers(1, 500), st.sampled_from(["h", "m", "s", " days", " weeks", " mo", " years"])),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from(["", " ", ", ", " and "]),
)
def test_composed_word_forms_sum_their_parts(parts: list[tuple[int, str]], separator: str) -> None:
    text = separator.join(f"{amount}{unit}" for amount, unit in parts)
    factor = {"h": (0, 0, 3600), "m": (0, 0, 60), "s": (0, 0, 1), " days": (0, 1, 0), " weeks": (0, 7, 0)}
    factor |= {" mo": (1, 0, 0), " years": (12, 0, 0)}
    months = sum(amount * factor[unit][0] for amount, unit in parts)
    days = sum(amount * factor[unit][1] for amount, unit in parts)
    seconds = sum(amount * factor[unit][2] for amount, unit in parts)
    expected = Interval(months=months, days=days, seconds=seconds)
    try:
        validate_interval(expected)
    except IntervalError:
        with pytest.raises(IntervalError):
            parse_interval(text)
    else:
        assert parse_interval(text) == expected


@given(anchors, step_intervals, offsets)
def test_next_after_is_the_first_occurrence_after_now(anchor: datetime, interval: Interval, offset: timedelta) -> None:
    now = anchor + offset
    following = next_after(anchor, interval, now)
    index = occurrence_index(anchor, interval, now)
    assert following > now
    assert following == add(anchor, interval, index + 1)
    if index >= 0:
        assert add(anchor, interval, index) <= now
    else:
        assert following == anchor
    assert next_at_or_after(anchor, interval, now) in (following, now)


@given(anchors, step_intervals, st.integers(0, 200), st.integers(1, 200))
def test_occurrences_increase_with_n(anchor: datetime, interval: Interval, n: int, more: int) -> None:
    assert add(anchor, interval, n) < add(anchor, interval, n + more)


@given(anchors, st.integers(0, 400), st.integers(0, 10**6), st.integers(0, 100))
def test_days_and_seconds_in_utc_are_exact_durations(anchor: datetime, days: int, seconds: int, n: int) -> None:
    anchor = anchor.astimezone(UTC)
    assert add(anchor, Interval(days=days, seconds=seconds), n) == anchor + n * timedelta(days=days, seconds=seconds)


@given(anchors, st.integers(1, 60), st.integers(0, 100))
def test_months_keep_the_anchor_day_clamped(anchor: datetime, months: int, n: int) -> None:
    anchor = anchor.astimezone(UTC)
    result = add(anchor, Interval(months=months), n)
    year, month0 = divmod(anchor.year * 12 + anchor.month - 1 + months * n, 12)
    assert (result.year, result.month) == (year, month0 + 1)
    assert result.day == min(anchor.day, calendar.monthrange(year, month0 + 1)[1])
    assert result.time() == anchor.time()
