"""Campaigns: one template on one channel to a list's members, now or at a set time (optionally that
wall-clock time in each recipient's timezone), through the same outbox, subscriptions, caps and quiet
hours as every message.

Queuing walks the list in chunks by user id (LUNOGRAM_CAMPAIGN_CHUNK), each chunk's outbox rows and the
cursor committed together: a million recipients go out in resumable steps, and a `kill -9` resumes at the
last committed chunk, queuing nobody twice. Pausing holds the campaign's queued messages (their due times
kept aside); resuming puts them back; cancelling drops what was not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

import structlog
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from lunogram_server.db import fetch_scalar, load_queries
from lunogram_server.journeys.timing import zone
from lunogram_server.reactions import LoopContext

Q = load_queries("lunogram_server.messaging", "campaigns.sql")
log = structlog.get_logger("lunogram.messaging")
_FIRST = UUID(int=0)


class CampaignError(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateCampaign(_Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=255, strip_whitespace=True)]
    list_id: UUID
    template_id: UUID
    provider_id: UUID | None = None
    data: dict[str, Any] = Field(default_factory=dict, max_length=100)


class ScheduleCampaign(_Strict):
    """`send_at` (default now); with `local_time`, its wall-clock time in each recipient's timezone (users
    without one: UTC)."""

    send_at: datetime | None = None
    local_time: bool = False


async def create(conn: AsyncConnection[Any], project_id: UUID, body: CreateCampaign) -> dict[str, Any]:
    params = {
        "project_id": project_id,
        "name": body.name,
        "list_id": body.list_id,
        "template_id": body.template_id,
        "provider_id": body.provider_id,
        "data": Jsonb(body.data),
    }
    campaign_id = await fetch_scalar(conn, Q["create"], params)
    if campaign_id is None:
        raise CampaignError("list_id, template_id: a list and a template of this project are needed", 404)
    found = await detail(conn, project_id, campaign_id)
    assert found is not None
    return found


async def detail(conn: AsyncConnection[Any], project_id: UUID, campaign_id: UUID) -> dict[str, Any] | None:
    found = await fetch_scalar(conn, Q["detail"], {"project_id": project_id, "id": campaign_id})
    return None if found is None else dict(found)


async def page(conn: AsyncConnection[Any], project_id: UUID, limit: int, offset: int) -> list[dict[str, Any]]:
    cursor = await conn.execute(Q["page"], {"project_id": project_id, "limit": limit, "offset": offset})
    return [row[0] for row in await cursor.fetchall()]


async def timeline(conn: AsyncConnection[Any], project_id: UUID, campaign_id: UUID, bucket_seconds: int) -> list[Any]:
    if await detail(conn, project_id, campaign_id) is None:
        raise CampaignError(f"campaign {campaign_id}: not found in this project", 404)
    params = {"id": campaign_id, "bucket": timedelta(seconds=bucket_seconds)}
    return list(await fetch_scalar(conn, Q["timeline"], params) or [])


_ALLOWED = {
    "schedule": ("draft", "scheduled"),
    "pause": ("scheduled", "queuing", "sending"),
    "resume": ("paused",),
    "cancel": ("draft", "scheduled", "queuing", "sending", "paused"),
}


async def act(
    conn: AsyncConnection[Any], project_id: UUID, campaign_id: UUID, action: str, body: ScheduleCampaign | None = None
) -> dict[str, Any]:
    async with conn.transaction():
        async with conn.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(Q["lock"], {"id": campaign_id, "project_id": project_id})
            row = await cursor.fetchone()
        if row is None:
            raise CampaignError(f"campaign {campaign_id}: not found in this project", 404)
        if row["status"] not in _ALLOWED[action]:
            raise CampaignError(f"campaign {campaign_id}: cannot {action} a campaign that is {row['status']}", 409)
        if action == "schedule":
            assert body is not None
            send_at = body.send_at or datetime.now(UTC)
            if send_at.tzinfo is None:
                raise CampaignError("send_at: needs a timezone offset (RFC 3339)")
            await conn.execute(Q["schedule"], {"id": campaign_id, "send_at": send_at, "local_time": body.local_time})
        else:
            await conn.execute(Q[action], {"id": campaign_id})
    found = await detail(conn, project_id, campaign_id)
    assert found is not None
    return found


# -- the queuing loop -----------------------------------------------------------------------------------------


async def queue_chunk(conn: AsyncConnection[Any], chunk: int, now: datetime | None = None) -> int:
    """Queue the next chunk of one due campaign's recipients; how many (0: no campaign had any due)."""
    at = now or datetime.now(UTC)
    async with conn.transaction():
        async with conn.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(Q["claim"], {"now": at})
            campaign = await cursor.fetchone()
        if campaign is None:
            return 0
        total = campaign["total"]
        if total is None:
            total = int(await fetch_scalar(conn, Q["count_members"], {"list_id": campaign["list_id"]}) or 0)
        chunk_rows = await conn.execute(
            Q["chunk"], {"list_id": campaign["list_id"], "after": campaign["cursor"], "limit": chunk}
        )
        members: list[tuple[UUID, str | None]] = list(await chunk_rows.fetchall())
        send_at: datetime = campaign["send_at"]
        ats = [_local(send_at, timezone) if campaign["local_time"] else send_at for _, timezone in members]
        if members:
            await conn.execute(
                Q["queue"],
                {
                    "project_id": campaign["project_id"],
                    "channel": campaign["channel"],
                    "template_id": campaign["template_id"],
                    "provider_id": campaign["provider_id"],
                    "campaign_id": campaign["id"],
                    "data": Jsonb({k: v for k, v in campaign["data"].items() if k != "_resume"}),
                    "users": [user_id for user_id, _ in members],
                    "ats": ats,
                },
            )
        done = len(members) < chunk
        await conn.execute(
            Q["advance"],
            {
                "id": campaign["id"],
                "cursor": members[-1][0] if members else campaign["cursor"],
                "queued": len(members),
                "total": total,
                "status": "sending" if done else "queuing",
            },
        )
    return max(1, len(members))


def _local(send_at: datetime, timezone: str | None) -> datetime:
    """send_at's wall-clock time in `timezone`, as an instant (a time that does not exist there, in a
    daylight-saving gap, moves forward with the clocks)."""
    wall = send_at.astimezone(UTC).replace(tzinfo=None)
    return wall.replace(tzinfo=zone(timezone, "UTC")).astimezone(UTC)


async def finish(conn: AsyncConnection[Any]) -> int:
    cursor = await conn.execute(Q["finish"])
    return len(await cursor.fetchall())


async def campaign_loop(ctx: LoopContext) -> None:
    await run(ctx.pool, ctx.stop, chunk=ctx.settings.messaging.campaign_chunk, poll=ctx.settings.messaging.poll_seconds)


async def run(pool: AsyncConnectionPool[Any], stop: asyncio.Event, *, chunk: int, poll: float) -> None:
    while not stop.is_set():
        queued = 0
        try:
            async with pool.connection() as conn:
                queued = await queue_chunk(conn, chunk)
                if queued == 0:
                    await finish(conn)
        except Exception:  # the database went away, say: the next round tries again
            log.exception("campaign queuing failed")
        if queued == 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll)
