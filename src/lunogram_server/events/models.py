"""Event batches as the SDKs send them (CONTRACT.md "Event", "OrganizationEvent")."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import StringConstraints

from lunogram_server.identity import Identifiers, StrictModel

EventName = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class Event(StrictModel):
    """Exactly one of `identifier` / `match` (checked over the whole batch, see ingest.check_targets).

    `data` may be omitted or null (the Go SDK sends `"data": null` for a nil map): it is stored as {}.
    """

    name: EventName
    data: dict[str, Any] | None = None
    identifier: Identifiers | None = None
    match: dict[str, Any] | None = None
