"""When a delay ends: after a duration, at a time of day in the user's timezone on allowed weekdays, or at
a date read from the run's data. Pure functions of `now`: the runner and the dry run agree."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lunogram_server.journeys.models import Delay, Experiment, Variant

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def zone(name: str | None, fallback: str) -> ZoneInfo:
    for candidate in (name, fallback, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def parse_moment(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (a date alone is midnight UTC) or epoch seconds; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def lookup(document: Any, path: list[str]) -> Any:
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def delay_until(
    step: Delay, now: datetime, user_timezone: str | None, fallback_timezone: str, values: dict[str, Any]
) -> datetime | None:
    """When the delay ends; None when a date delay has nothing to wait for (no date, or already past)."""
    if step.mode == "duration":
        assert step.duration is not None
        return now + timedelta(seconds=step.duration.seconds)
    if step.mode == "time_of_day":
        assert step.time is not None
        tz = zone(user_timezone, fallback_timezone)
        hour, minute = (int(part) for part in step.time.split(":"))
        local_now = now.astimezone(tz)
        allowed = set(step.weekdays or _WEEKDAYS)
        for days in range(8):
            day = (local_now + timedelta(days=days)).date()
            if _WEEKDAYS[day.weekday()] not in allowed:
                continue
            candidate = datetime.combine(day, time(hour, minute), tzinfo=tz)
            if candidate > local_now:
                return candidate.astimezone(UTC)
        return None  # pragma: no cover - some allowed weekday comes within a week
    assert step.path is not None
    root, *rest = step.path.split(".")
    moment = parse_moment(lookup(values.get(root), rest))
    if moment is None:
        return None
    if step.offset is not None:
        moment += timedelta(seconds=step.offset.seconds)
    return moment if moment > now else None


def choose_variant(step: Experiment, run_id: Any, step_key: str) -> Variant:
    """A variant by weight, fixed for a run: a hash of (run, step), not a random draw, so a replayed batch
    chooses the same."""
    total = sum(v.weight for v in step.variants)
    digest = hashlib.sha256(f"{run_id}:{step_key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % total
    for variant in step.variants:
        if point < variant.weight:
            return variant
        point -= variant.weight
    return step.variants[-1]  # pragma: no cover - point < total
