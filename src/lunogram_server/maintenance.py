"""Housekeeping that must happen somewhere, once in a while: forgetting expired Idempotency-Key answers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from lunogram_server.db.outage import log_failure
from lunogram_server.http.idempotency import PURGE
from lunogram_server.reactions import LoopContext, Reactions

log = structlog.get_logger("lunogram.maintenance")
EVERY_SECONDS = 600.0


async def periodically(
    pool: AsyncConnectionPool[Any],
    stop: asyncio.Event,
    seconds: float,
    work: Callable[[AsyncConnection[Any]], Awaitable[object]],
    what: str,
) -> None:
    """`work` on a pooled connection every `seconds` until `stop`; a failure is logged and tried next time."""
    while not stop.is_set():
        try:
            async with pool.connection() as conn:
                await work(conn)
        except Exception as exc:  # the database went away, say: the next round tries again
            log_failure(log, f"{what} failed", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


async def housekeeping(pool: AsyncConnectionPool[Any], stop: asyncio.Event, every: float = EVERY_SECONDS) -> None:
    await periodically(pool, stop, every, lambda conn: conn.execute(PURGE), "housekeeping")


async def housekeeping_loop(ctx: LoopContext) -> None:
    await housekeeping(ctx.pool, ctx.stop)


def register(reactions: Reactions) -> None:
    reactions.loop("housekeeping", ("all", "scheduler"), housekeeping_loop)
