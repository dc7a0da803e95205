"""Running event workers inside a process: `serve` (roles all and worker) starts them with its pool."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg_pool import AsyncConnectionPool

from lunogram_server.config import EventSettings
from lunogram_server.events.subscribers import load_subscribers
from lunogram_server.events.worker import EventWorker


@asynccontextmanager
async def event_workers(pool: AsyncConnectionPool[Any], settings: EventSettings) -> AsyncIterator[list[EventWorker]]:
    """`settings.worker_tasks` workers on `pool` until the block exits; a batch in progress then finishes
    (or, if the process is killed instead, rolls back and is applied again by whoever claims it next)."""
    subscribers = load_subscribers(settings.subscribers)
    prefix = f"{socket.gethostname()}:{os.getpid()}"
    workers = [EventWorker(pool, settings, subscribers, f"{prefix}:{n}") for n in range(settings.worker_tasks)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker.run(stop), name=worker.name) for worker in workers]
    try:
        yield workers
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
