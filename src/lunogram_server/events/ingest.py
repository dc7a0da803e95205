"""Accepting a batch: validate all of it, then store all of it in one statement (docs/api.md "Events").

Nothing here resolves identities: the request path only checks and appends to the inbox, so ingest costs
one round trip however many events the batch holds.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from psycopg import AsyncConnection
from pydantic import TypeAdapter, ValidationError

from lunogram_server.config import Limits
from lunogram_server.events.models import Event, Kind
from lunogram_server.events.queries import SHARED
from lunogram_server.identity import normalize

_BATCH = TypeAdapter(list[Event])


class BatchError(Exception):
    """A batch refused as a whole; `status` is 400 or 413 and `detail` names the event and the rule."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def validate_batch(value: Any, limits: Limits, body_bytes: int | None = None) -> list[Event]:
    """The batch's events, or an error naming the first broken rule: shape errors come out of pydantic as
    a ValidationError (located `[i].field`), the rules across fields as a BatchError. `body_bytes`, the
    size of the request body, spares measuring each event's data when the whole body is under the cap."""
    if not isinstance(value, list):
        raise BatchError(400, "body: must be a JSON array of events")
    if not value:
        raise BatchError(400, "body: must contain at least one event")
    if len(value) > limits.max_events_per_request:
        raise BatchError(
            413, f"body: {len(value)} events; at most {limits.max_events_per_request} are accepted per request"
        )
    events = _BATCH.validate_python(value)
    # a body no larger than the cap cannot hold an event's data over it: skip measuring (the common case)
    measure = body_bytes is None or body_bytes > limits.max_event_data_bytes
    for index, event in enumerate(events):
        if len(event.name) > limits.max_name_length:
            raise BatchError(400, f"[{index}].name: longer than {limits.max_name_length} characters")
        if event.identifier is not None and event.match is not None:
            raise BatchError(400, f"[{index}].match: give exactly one of `identifier` or `match`, not both")
        if event.identifier is None and event.match is None:
            raise BatchError(400, f"[{index}].identifier: required (or `match`, to broadcast)")
        if event.match is not None and not event.match:
            raise BatchError(400, f"[{index}].match: must not be empty; use a non-empty match ({EMPTY_MATCH})")
        if measure and event.data:
            check_data_size(event.data, limits, f"[{index}].data")
    return events


# Why an empty `match` is refused: it fans out to every profile of the project, and one request of 100 such
# events made 505,000 history rows. A broadcast to everyone can still be sent on purpose, by matching a
# key every profile carries.
EMPTY_MATCH = "`{}` would reach every profile of the project"


def check_data_size(data: dict[str, Any], limits: Limits, where: str) -> None:
    """BatchError(413) when `data` as JSON text is larger than LUNOGRAM_MAX_EVENT_DATA_BYTES."""
    size = len(orjson.dumps(data))
    if size > limits.max_event_data_bytes:
        raise BatchError(
            413,
            f"{where}: {size} bytes as JSON; at most {limits.max_event_data_bytes} are accepted "
            "(LUNOGRAM_MAX_EVENT_DATA_BYTES)",
        )


def first_broadcast(events: list[Event]) -> int | None:
    """Index of the first `match` event (a permission the key must hold), if any."""
    return next((i for i, event in enumerate(events) if event.match is not None), None)


def _row(event: Event) -> dict[str, Any]:
    row: dict[str, Any] = {"name": event.name, "data": event.data or {}}
    if event.identifier is not None:
        row["identifier"] = normalize(event.identifier)
    else:
        row["match"] = event.match
    return row


async def enqueue(conn: AsyncConnection[Any], project_id: UUID, kind: Kind, events: list[Event]) -> None:
    """Append the batch to the inbox in one statement; it is durable when this returns (autocommit)."""
    payload = orjson.dumps([_row(event) for event in events]).decode()
    await conn.execute(SHARED["enqueue"], {"project_id": project_id, "kind": kind, "events": payload})


__all__ = ["BatchError", "ValidationError", "check_data_size", "enqueue", "first_broadcast", "validate_batch"]
