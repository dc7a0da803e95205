"""Schedules: upsert and delete from the Client API, the admin view, and the figures operators watch."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from lunogram_server.db import fetch_scalar
from lunogram_server.events.models import Kind
from lunogram_server.events.queries import load_kind_queries
from lunogram_server.identity import normalize
from lunogram_server.schedules.models import DeleteSchedule, ScheduledAccepted, UpsertSchedule
from lunogram_server.schedules.plan import plan

SHARED, BY_KIND = load_kind_queries("lunogram_server.schedules")


async def upsert(
    conn: AsyncConnection[Any], project_id: UUID, kind: Kind, body: UpsertSchedule, max_name_length: int
) -> ScheduledAccepted:
    """Raises plan.PlanError (a 400) before anything is written."""
    planned = plan(body, datetime.now(UTC), max_name_length)
    identifiers = Jsonb(normalize(body.identifier))
    queries = BY_KIND[kind]
    async with conn.transaction():
        target = await fetch_scalar(conn, queries["resolve"], {"project_id": project_id, "identifiers": identifiers})
        cursor = await conn.execute(
            queries["upsert"],
            {
                "project_id": project_id,
                "target_id": target,
                "identifiers": identifiers,
                "name": body.name,
                "data": Jsonb(body.data or {}),
                "anchor_at": planned.anchor_at,
                "interval": None if planned.interval is None else str(planned.interval),
                "next_at": planned.next_at,
            },
        )
        row = await cursor.fetchone()
        assert row is not None  # an upsert returns its row
        await conn.execute(SHARED["announce_written"], {"project_id": project_id, "ids": [row[0]]})
    schedule_id, name, next_at, data = row
    return ScheduledAccepted(id=schedule_id, name=name, scheduled_at=next_at, data=data)


async def delete(conn: AsyncConnection[Any], project_id: UUID, kind: Kind, body: DeleteSchedule) -> int:
    """Cancel every future instance of the name on the profile; returns how many schedules went (0: 404)."""
    params = {"project_id": project_id, "name": body.name, "identifiers": Jsonb(normalize(body.identifier))}
    async with conn.transaction():
        cursor = await conn.execute(BY_KIND[kind]["to_delete"], params)
        ids = [schedule_id for (schedule_id,) in await cursor.fetchall()]
        if ids:
            await conn.execute(SHARED["announce_cancelled"], {"project_id": project_id, "ids": ids})
            await conn.execute(SHARED["delete"], {"ids": ids})
    return len(ids)


async def of_profile(conn: AsyncConnection[Any], project_id: UUID, kind: Kind, target_id: UUID) -> str | None:
    result: str | None = await fetch_scalar(
        conn, BY_KIND[kind]["of_profile"], {"project_id": project_id, "target_id": target_id}
    )
    return result


@dataclass(frozen=True)
class ScheduleStats:
    active: int  # schedules with a next firing
    due: int  # due now and not fired yet
    lag_seconds: float  # how late the most overdue firing is; 0 when none is due


async def stats(conn: AsyncConnection[Any]) -> ScheduleStats:
    cursor = await conn.execute(SHARED["stats"])
    row = await cursor.fetchone()
    assert row is not None  # an aggregate always returns one row
    return ScheduleStats(int(row[0]), int(row[1]), float(row[2]))
