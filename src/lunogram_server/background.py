"""The background loops a process runs by its role, as the domains registered them (domains.py), on the
process's pool, until the block exits."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg_pool import AsyncConnectionPool

from lunogram_server.config import Settings
from lunogram_server.domains import build_reactions
from lunogram_server.reactions import LoopContext, Reactions
from lunogram_server.wakeups import Wakeups


def loop_connections(settings: Settings) -> int:
    """How many pool connections this process's loops hold at most at once (the wake-up listener has its
    own, outside the pool)."""
    return build_reactions().connections_for(settings)


@asynccontextmanager
async def background(
    pool: AsyncConnectionPool[Any], settings: Settings, reactions: Reactions | None = None
) -> AsyncIterator[None]:
    """Start the loops; on exit, let each finish the batch in hand (a killed process rolls it back instead,
    and whoever claims it next applies it)."""
    registry = reactions or build_reactions(settings)
    stop = asyncio.Event()
    prefix = f"{socket.gethostname()}:{os.getpid()}"
    chosen = registry.loops_for(settings)
    wakeups = Wakeups(channel for loop, _ in chosen for channel in loop.wakes_on)
    tasks = [
        asyncio.create_task(
            loop.start(LoopContext(pool, settings, registry, stop, f"{prefix}:{loop.name}:{n}", wakeups)),
            name=f"{prefix}:{loop.name}:{n}",
        )
        for loop, copies in chosen
        for n in range(copies)
    ]
    if wakeups.channels:
        assert isinstance(pool.conninfo, str)  # db/pool.py opens pools with a conninfo string
        tasks.append(asyncio.create_task(wakeups.listen(pool.conninfo, stop), name=f"{prefix}:wakeups"))
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
