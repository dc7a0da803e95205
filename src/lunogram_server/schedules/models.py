"""Schedule requests and responses (CONTRACT.md "UpsertScheduled", "ScheduledAccepted")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, StringConstraints

from lunogram_server.identity import Identifiers, StrictModel

ScheduleName = Annotated[str, StringConstraints(min_length=1)]


class UpsertSchedule(StrictModel):
    """`scheduled_at` alone: once, then. With `interval`: every interval, anchored at `scheduled_at` (or
    `start_at`, or now), first firing at or after `start_at` (and never in the past). Timestamps must carry
    a timezone (offset or `Z`)."""

    name: ScheduleName
    identifier: Identifiers
    scheduled_at: AwareDatetime | None = None
    start_at: AwareDatetime | None = None
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
