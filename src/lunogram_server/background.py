"""The background loops a process runs by its role: event workers (roles all, worker), schedulers and
housekeeping (roles all, scheduler), on the process's pool, until the block exits."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from psycopg_pool import AsyncConnectionPool

from lunogram_server.config import Settings
from lunogram_server.events.subscribers import EventSubscriber, load_subscribers
from lunogram_server.events.wakeup import Wakeups
from lunogram_server.events.worker import EventWorker
from lunogram_server.lists.membership import ListsSubscriber
from lunogram_server.lists.recompute import recompute_loop
from lunogram_server.maintenance import housekeeping
from lunogram_server.schedules.scheduler import Scheduler


def loop_count(settings: Settings) -> int:
    """How many loops (each holding a connection while it works) this process runs."""
    workers = settings.events.worker_tasks if settings.role in ("all", "worker") else 0
    schedulers = settings.schedules.scheduler_tasks if settings.role in ("all", "scheduler") else 0
    lists = 1 if settings.role in ("all", "scheduler") else 0
    return workers + schedulers + lists


def event_subscribers(settings: Settings) -> list[EventSubscriber]:
    """What every event worker hands applied events to: lists first, then the operator's plugins."""
    return [ListsSubscriber(), *load_subscribers(settings.events.subscribers)]


@asynccontextmanager
async def background(pool: AsyncConnectionPool[Any], settings: Settings) -> AsyncIterator[None]:
    """Start the loops; on exit, let each finish the batch in hand (a killed process rolls it back instead,
    and whoever claims it next applies it)."""
    stop = asyncio.Event()
    loops: list[tuple[str, Coroutine[Any, Any, None]]] = []
    prefix = f"{socket.gethostname()}:{os.getpid()}"
    if settings.role in ("all", "worker") and settings.events.worker_tasks:
        subscribers = event_subscribers(settings)
        wakeups = Wakeups()
        for n in range(settings.events.worker_tasks):
            worker = EventWorker(pool, settings.events, subscribers, f"{prefix}:{n}", wakeups.waiter())
            loops.append((worker.name, worker.run(stop)))
        assert isinstance(pool.conninfo, str)  # db/pool.py opens pools with a conninfo string
        loops.append((f"{prefix}:wakeups", wakeups.listen(pool.conninfo, stop)))
    if settings.role in ("all", "scheduler"):
        for n in range(settings.schedules.scheduler_tasks):
            scheduler = Scheduler(
                pool, batch_size=settings.schedules.batch_size, poll_seconds=settings.schedules.poll_seconds
            )
            loops.append((f"{prefix}:scheduler:{n}", scheduler.run(stop)))
        loops.append((f"{prefix}:housekeeping", housekeeping(pool, stop)))
        lists = recompute_loop(
            pool, stop, poll_seconds=settings.lists.poll_seconds, time_every=settings.lists.time_recheck_seconds
        )
        loops.append((f"{prefix}:lists", lists))
    tasks = [asyncio.create_task(coroutine, name=name) for name, coroutine in loops]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
