"""Event figures the console shows, kept cheaply.

`EventStatsSubscriber` (registered in console/__init__.py, through the registry) runs in the event worker's
transaction with each applied batch and adds, in two statements, the batch's counts per event name (with
the latest payload as a sample) and per minute. Rows are sharded by the worker connection, so concurrent
workers never wait on each other's row locks, and the counts commit with the history they count: exact,
once. Readers sum a handful of rows instead of counting history (10,000,000 rows in bench/console.py).

Counts are history rows: an event reaches one profile, a `match` broadcast each profile it reaches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from lunogram_server.db import fetch_scalar, load_queries
from lunogram_server.events import service as events
from lunogram_server.events.models import ProcessedEvent

Q = load_queries("lunogram_server.console", "stats.sql")
SAMPLE_MAX_BYTES = 4096  # larger payloads are not kept as samples (the history has them)
RECENT_WINDOW = 100_000  # history ids the live stream looks back over, at most
CATALOGUE_MAX = 500


class EventStatsSubscriber:
    """Per name and per minute counts of the events just applied (the "events applied" topic)."""

    async def on_events(self, conn: AsyncConnection[Any], applied: Sequence[ProcessedEvent]) -> None:
        names: dict[tuple[UUID, str, str], list[Any]] = {}
        minutes: dict[tuple[UUID, datetime | None], list[int]] = {}
        for event in applied:
            key = (event.project_id, event.kind, event.name)
            entry = names.get(key)
            if entry is None:
                names[key] = [1, event.data]
            else:
                entry[0] += 1
                entry[1] = event.data
            accepted = event.accepted_at.replace(second=0, microsecond=0)
            minutes.setdefault((event.project_id, accepted), [0, 0])[0] += 1
            minutes.setdefault((event.project_id, None), [0, 0])[1] += 1
        samples = []
        for _, data in names.values():
            text = orjson.dumps(data)
            samples.append(Jsonb(data) if len(text) <= SAMPLE_MAX_BYTES else None)
        await conn.execute(
            Q["record_names"],
            {
                "projects": [k[0] for k in names],
                "kinds": [k[1] for k in names],
                "names": [k[2] for k in names],
                "counts": [v[0] for v in names.values()],
                "samples": samples,
            },
        )
        await conn.execute(
            Q["record_minutes"],
            {
                "projects": [k[0] for k in minutes],
                "minutes": [k[1] for k in minutes],
                "accepted": [v[0] for v in minutes.values()],
                "processed": [v[1] for v in minutes.values()],
            },
        )


@dataclass(frozen=True)
class Overview:
    minutes: list[tuple[datetime, int, int]]  # (minute, accepted, processed), the last hour
    sends: dict[str, list[tuple[datetime, int]]]  # kind -> (minute, count), the last hour
    queue: events.QueueStats  # the whole installation's queue (projects share it)
    dead_letters: int  # this project's


async def overview(conn: AsyncConnection[Any], project_id: UUID) -> Overview:
    params = {"project_id": project_id}
    cursor = await conn.execute(Q["minutes"], params)
    minutes = [(m, int(a), int(p)) for m, a, p in await cursor.fetchall()]
    cursor = await conn.execute(Q["send_minutes"], params)
    sends: dict[str, list[tuple[datetime, int]]] = {}
    for minute, kind, count in await cursor.fetchall():
        sends.setdefault(kind, []).append((minute, int(count)))
    queue = await events.queue_stats(conn)
    dead = int(await fetch_scalar(conn, Q["dead_count"], params) or 0)
    return Overview(minutes=minutes, sends=sends, queue=queue, dead_letters=dead)


async def catalogue(conn: AsyncConnection[Any], project_id: UUID, limit: int = CATALOGUE_MAX) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(Q["catalogue"], {"project_id": project_id, "limit": min(limit, CATALOGUE_MAX)})
        return await cur.fetchall()


async def recent(
    conn: AsyncConnection[Any], project_id: UUID, kind: str, after: int = 0, limit: int = 50
) -> list[dict[str, Any]]:
    """The newest applied events of the project (newer than history id `after`), newest first."""
    query = Q["recent_user_events"] if kind == "user" else Q["recent_organization_events"]
    cursor = await conn.execute(
        query, {"project_id": project_id, "after": after, "window": RECENT_WINDOW, "limit": min(limit, 200)}
    )
    return [
        {"id": i, "name": n, "data": d, "accepted_at": at, "profile_id": p, "external_id": x}
        for i, n, d, at, p, x in await cursor.fetchall()
    ]


async def purge(conn: AsyncConnection[Any]) -> None:
    await conn.execute(Q["purge"])
