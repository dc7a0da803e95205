"""Schedule requests and responses (docs/api.md "Schedules")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, StringConstraints

from lunogram_server.identity import Identifiers, StrictModel
from lunogram_server.identity.models import not_blank

EVENT_PREFIX = "scheduled."


def _rfc3339_text(value: Any) -> Any:
    # pydantic would also read a number as Unix seconds; the contract's timestamps are RFC 3339 strings
    if not isinstance(value, str | datetime):
        raise ValueError("must be an RFC 3339 timestamp string with an offset, e.g. 2025-04-01T09:00:00Z")
    return value


def _storable(value: datetime) -> datetime:
    # PostgreSQL (and Python's UTC conversion) hold years 1-9999 in UTC; beyond, an offset could push it out
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not 1 <= utc.year <= 9998:
        raise ValueError("must lie between the years 1 and 9998 in UTC")
    return value


ScheduleName = Annotated[str, StringConstraints(min_length=1), AfterValidator(not_blank)]
Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text), AfterValidator(_storable)]


class UpsertSchedule(StrictModel):
    """`scheduled_at` alone: once, then. With `interval`: every interval, anchored at `scheduled_at` (or
    `start_at`, or now), first firing at or after `start_at` (and never in the past). Timestamps must carry
    a timezone (offset or `Z`)."""

    name: ScheduleName
    identifier: Identifiers
    scheduled_at: Timestamp | None = None
    start_at: Timestamp | None = None
    interval: str | None = None
    data: dict[str, Any] | None = None


class DeleteSchedule(StrictModel):
    name: ScheduleName
    identifier: Identifiers


class ScheduledAccepted(BaseModel):
    id: UUID
    name: str
    scheduled_at: datetime | None  # the next firing
    data: dict[str, Any]


class ScheduleDetail(BaseModel):
    """A schedule as operators see it (admin API)."""

    id: UUID
    name: str
    data: dict[str, Any]
    anchor_at: datetime
    interval: str | None  # canonical text; null for a one-time schedule
    next_at: datetime | None  # null once a one-time schedule has fired
    fired: int
    last_fired_at: datetime | None
    created_at: datetime
    updated_at: datetime
