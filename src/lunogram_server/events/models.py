"""Event batches as the SDKs send them (docs/api.md "Events"), and what workers hand on."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, StringConstraints

from lunogram_server.identity import Identifiers, StrictModel

Kind = Literal["user", "organization"]
EventName = Annotated[str, StringConstraints(min_length=1)]


class Event(StrictModel):
    """One event of a batch: exactly one of `identifier` / `match` (checked per batch, see ingest.py, so
    the error names the missing or surplus field rather than the event).

    `data` may be omitted or null (the Go SDK sends `"data": null` for a nil map): it is stored as {}.
    """

    name: EventName
    data: dict[str, Any] | None = None
    identifier: Identifiers | None = None
    match: dict[str, Any] | None = None


@dataclass(frozen=True)
class ProcessedEvent:
    """An event applied to one target, as subscribers (lists, journeys) receive it.

    For an organization event `target_id` is the organization and `member_ids` its member users at the
    time it was applied, so a journey can act for every member.
    """

    inbox_id: int
    project_id: UUID
    kind: Kind
    target_id: UUID
    name: str
    data: dict[str, Any]
    accepted_at: datetime
    broadcast: bool = False
    member_ids: tuple[UUID, ...] = field(default=())


class HistoryEvent(BaseModel):
    """An applied event in a profile's history (admin API)."""

    id: int
    name: str
    data: dict[str, Any]
    accepted_at: datetime
    created_at: datetime


class EventPage(BaseModel):
    """Newest first; `next_before` is the `before` of the next page, null on the last one."""

    events: list[HistoryEvent]
    next_before: int | None


class DeadLetter(BaseModel):
    """An event parked after `LUNOGRAM_EVENT_MAX_ATTEMPTS` failed tries (admin API)."""

    id: int
    kind: Kind
    name: str
    data: dict[str, Any]
    identifier: list[dict[str, Any]] | None
    match: dict[str, Any] | None
    accepted_at: datetime
    attempts: int
    last_error: str | None
    dead_at: datetime


class DeadLetterPage(BaseModel):
    events: list[DeadLetter]
    next_before: int | None
