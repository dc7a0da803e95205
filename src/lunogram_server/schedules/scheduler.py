"""The scheduler: fire due schedules into the event pipeline, exactly once each.

One transaction per batch: claim due schedules (FOR UPDATE SKIP LOCKED, so schedulers anywhere share
them), enqueue one `scheduled.<name>` event each, move each to its next firing (or retire it), commit. A
crash rolls all three back, so the instance is fired by whoever claims it next; two schedulers never claim
the same row. After downtime a recurring schedule fires once and resumes its cadence at the first
occurrence after now (intervals.next_after): never a burst of catch-up events.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from psycopg_pool import AsyncConnectionPool

from lunogram_server.db.outage import log_failure
from lunogram_server.reactions import LoopContext
from lunogram_server.schedules.intervals import next_after, parse_interval
from lunogram_server.schedules.service import SHARED

log = structlog.get_logger("lunogram.schedules")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        batch_size: int = 1000,
        poll_seconds: float = 0.2,
        clock: Clock = utc_now,
    ) -> None:
        self.pool = pool
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                fired = await self.run_once()
            except Exception as exc:  # the database went away, say: log, wait, try again
                log_failure(log, "schedule batch failed", exc)
                fired = 0
            if fired < self.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_seconds)

    async def run_once(self) -> int:
        """Fire one batch of due schedules; returns how many fired."""
        now = self.clock()
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(SHARED["claim_due"], {"now": now, "limit": self.batch_size})
            due = await cursor.fetchall()
            if not due:
                return 0
            ids = [schedule_id for schedule_id, _, _ in due]
            await conn.execute(SHARED["fire"], {"ids": ids})
            following = [None if interval is None else _next(anchor, interval, now) for _, anchor, interval in due]
            await conn.execute(SHARED["advance"], {"ids": ids, "next": following, "now": now})
            await conn.execute(SHARED["announce_fired"], {"ids": ids, "now": now})
        return len(due)


_parse_stored = functools.lru_cache(maxsize=4096)(parse_interval)  # a few distinct texts fire millions of times


def _next(anchor: datetime, interval_text: str, now: datetime) -> datetime | None:
    try:
        return next_after(anchor, _parse_stored(interval_text), now)
    except OverflowError:  # beyond year 9999: the schedule is done
        return None


async def schedulers(ctx: LoopContext) -> None:
    config = ctx.settings.schedules
    await Scheduler(ctx.pool, batch_size=config.batch_size, poll_seconds=config.poll_seconds).run(ctx.stop)
