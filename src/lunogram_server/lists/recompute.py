"""The loop that fills rule lists whose members lag their rule (new lists, changed rules).

Each list is recomputed in one transaction that also marks it computed, so a `kill -9` midway leaves it
stale and the next loop (in any process) does it again from scratch: never half a recompute.
"""

from __future__ import annotations

import asyncio
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from lunogram_server.lists import service
from lunogram_server.maintenance import periodically


async def _recompute_stale(conn: AsyncConnection[Any]) -> None:
    while await service.recompute_one(conn):
        pass


async def recompute_loop(pool: AsyncConnectionPool[Any], stop: asyncio.Event, poll_seconds: float = 0.5) -> None:
    await periodically(pool, stop, poll_seconds, _recompute_stale, "list recompute")
