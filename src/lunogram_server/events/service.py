"""What operators read and do with events: histories, dead letters, queue figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from lunogram_server.db import fetch_scalar
from lunogram_server.events.models import Kind
from lunogram_server.events.queries import BY_KIND, SHARED


@dataclass(frozen=True)
class QueueStats:
    depth: int  # accepted, not yet applied (retrying included, dead letters excluded)
    retrying: int
    dead: int
    lag_seconds: float  # age of the oldest event not yet applied; 0 when the queue is empty
    accepted: int  # totals since the database was created
    processed: int
    delivered: int
    failed: int


async def history(
    conn: AsyncConnection[Any], kind: Kind, project_id: UUID, target_id: UUID, limit: int, before: int | None
) -> str | None:
    """`{events, next_before}` JSON for one profile, newest first; None when it is not in the project."""
    params = {"project_id": project_id, "target_id": target_id, "limit": limit, "before": before}
    result: str | None = await fetch_scalar(conn, BY_KIND[kind]["history_page"], params)
    return result


async def dead_letters(conn: AsyncConnection[Any], project_id: UUID, limit: int, before: int | None) -> str:
    params = {"project_id": project_id, "limit": limit, "before": before}
    return str(await fetch_scalar(conn, SHARED["dead_page"], params))


async def retry_dead(conn: AsyncConnection[Any], project_id: UUID, event_id: int) -> bool:
    """Make a parked event due again; False when the project has no such dead letter."""
    cursor = await conn.execute(SHARED["retry_dead"], {"project_id": project_id, "id": event_id})
    return cursor.rowcount == 1


async def queue_stats(conn: AsyncConnection[Any]) -> QueueStats:
    cursor = await conn.execute(SHARED["queue_stats"])
    row = await cursor.fetchone()
    assert row is not None  # an aggregate always returns one row
    depth, retrying, dead, lag, accepted, processed, delivered, failed = row
    return QueueStats(
        int(depth), int(retrying), int(dead), float(lag), int(accepted), int(processed), int(delivered), int(failed)
    )
