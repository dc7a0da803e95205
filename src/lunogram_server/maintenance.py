"""Housekeeping that must happen somewhere, once in a while: forgetting expired Idempotency-Key answers."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from psycopg_pool import AsyncConnectionPool

from lunogram_server.http.idempotency import PURGE

log = structlog.get_logger("lunogram.maintenance")
EVERY_SECONDS = 600.0


async def housekeeping(pool: AsyncConnectionPool[Any], stop: asyncio.Event, every: float = EVERY_SECONDS) -> None:
    while not stop.is_set():
        try:
            async with pool.connection() as conn:
                await conn.execute(PURGE)
        except Exception:  # the database went away, say: the next round tries again
            log.exception("housekeeping failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
