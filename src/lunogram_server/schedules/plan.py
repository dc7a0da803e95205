"""From an upsert request to what is stored: the anchor, the interval and the first firing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from lunogram_server.schedules.intervals import Interval, IntervalError, next_at_or_after, parse_interval
from lunogram_server.schedules.models import EVENT_PREFIX, UpsertSchedule


class PlanError(ValueError):
    """A request whose times do not make a schedule; the message names the field and the rule."""


@dataclass(frozen=True)
class Plan:
    anchor_at: datetime
    interval: Interval | None
    next_at: datetime


def plan(body: UpsertSchedule, now: datetime, max_name_length: int) -> Plan:
    """One-time: fires at the later of `scheduled_at` / `start_at` (at once if that is past). Recurring:
    occurrences are anchor + n * interval with the anchor `scheduled_at`, else `start_at`, else now; the
    first firing is the first occurrence at or after both `start_at` and now: a cadence anchored in the past
    joins its rhythm, it does not fire for the past."""
    longest = max_name_length - len(EVENT_PREFIX)  # the event `scheduled.<name>` must fit the name limit
    if len(body.name) > longest:
        raise PlanError(f"name: longer than {longest} characters (the event is `{EVENT_PREFIX}<name>`)")
    if body.interval is None:
        times = [t for t in (body.scheduled_at, body.start_at) if t is not None]
        if not times:
            raise PlanError("scheduled_at: required for a one-time schedule (or give `interval` to recur)")
        at = max(times)
        return Plan(anchor_at=at, interval=None, next_at=at)
    try:
        interval = parse_interval(body.interval)
    except IntervalError as exc:
        raise PlanError(f"interval: {exc}") from None
    anchor = body.scheduled_at or body.start_at or now
    earliest = max(t for t in (body.start_at, now) if t is not None)
    try:
        first = next_at_or_after(anchor, interval, earliest)
    except OverflowError:
        first = None
    if first is None or first.astimezone(UTC).year > 9998:
        raise PlanError("interval: the first firing would be after the year 9998")
    return Plan(anchor_at=anchor, interval=interval, next_at=first)
