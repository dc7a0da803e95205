"""Wake-ups for idle background loops: one LISTEN connection per channel and process turns PostgreSQL
notifications into asyncio events, so a loop starts on new work at once instead of at its next poll.
Polling stays as the fallback (a lost connection only slows wake-ups). Channels: `lunogram_events` (sent by
a trigger on the inbox, migration 0011) and `lunogram_journeys` (runs entered or moved, journeys/).
"""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
import structlog
from psycopg import sql

from lunogram_server.db.outage import log_failure

log = structlog.get_logger("lunogram.events")
CHANNEL = "lunogram_events"


class Wakeups:
    def __init__(self, channel: str = CHANNEL) -> None:
        self.channel = channel
        self._waiters: list[asyncio.Event] = []

    def waiter(self) -> asyncio.Event:
        """An event set at every notification; its owner clears it before looking for work."""
        event = asyncio.Event()
        self._waiters.append(event)
        return event

    def wake_all(self) -> None:
        for event in self._waiters:
            event.set()

    async def listen(self, conninfo: str, stop: asyncio.Event, retry_seconds: float = 1.0) -> None:
        """Until `stop`: LISTEN and wake the waiters at each notification; reconnect after a failure."""
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.wake_all()  # whatever arrived while we were not listening
                    while not stop.is_set():  # a second at a time, to notice `stop`
                        async for _ in conn.notifies(timeout=1.0):
                            self.wake_all()
            except Exception as exc:  # the database went away, say: loops still poll; listen again shortly
                log_failure(log, f"wake-ups on {self.channel} interrupted; listening again", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_seconds)
