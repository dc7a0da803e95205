"""The lists loop: fills rule lists whose members lag their rule (new lists, changed rules), re-checks
lists with time windows as time passes, re-evaluates users whose profile changed, applies CSV imports.

Each recompute runs in one transaction that also marks the list computed, so a `kill -9` midway leaves it
stale and the next loop (in any process) does it again from scratch: never half a recompute.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from lunogram_server.lists import imports, membership
from lunogram_server.maintenance import periodically
from lunogram_server.reactions import LoopContext


async def catch_up(pool: AsyncConnectionPool[Any], conn: AsyncConnection[Any], time_every: float) -> None:
    """Everything due now: stale lists, time windows, queued users, CSV imports."""

    async def progress(list_id: UUID, done: int, total: int, started: datetime) -> None:
        async with pool.connection() as side:  # visible at once, while the recompute's transaction runs
            params = {"list_id": list_id, "done": done, "total": total, "started_at": started}
            await side.execute(membership.Q["report_progress"], params)

    while await membership.recompute_one(conn, time_every=time_every, progress=progress):
        pass
    while await membership.reevaluate_pending(conn):
        pass
    while await imports.apply_one_chunk(conn):
        pass


async def recompute_loop(
    pool: AsyncConnectionPool[Any], stop: asyncio.Event, *, poll_seconds: float, time_every: float
) -> None:
    await periodically(pool, stop, poll_seconds, lambda conn: catch_up(pool, conn, time_every), "lists")


async def lists_loop(ctx: LoopContext) -> None:
    config = ctx.settings.lists
    await recompute_loop(ctx.pool, ctx.stop, poll_seconds=config.poll_seconds, time_every=config.time_recheck_seconds)
