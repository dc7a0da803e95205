"""Wake-ups for idle background loops: one LISTEN connection per process, on every channel its loops wait
on, turns PostgreSQL notifications into asyncio events, so a loop starts on new work at once instead of at
its next poll. Polling stays as the fallback (a lost connection only slows wake-ups).

Channels (each loop declares the one it wakes on when it registers, domains.py): `lunogram_events` (a
trigger on the event inbox, migration 0011), `lunogram_journeys` (runs entered or moved, journeys/),
`lunogram_messages` (messages queued: a trigger on the outbox, migration 0032).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import psycopg
import structlog
from psycopg import sql

from lunogram_server.db.outage import log_failure

log = structlog.get_logger("lunogram.wakeups")


class Wakeups:
    def __init__(self, channels: Iterable[str] = ()) -> None:
        self.channels = sorted(set(channels))
        self._waiters: dict[str, list[asyncio.Event]] = {channel: [] for channel in self.channels}

    def waiter(self, channel: str) -> asyncio.Event:
        """An event set at every notification on `channel`; its owner clears it before looking for work."""
        if channel not in self._waiters:
            raise ValueError(f"{channel}: not a channel this process listens on (declare it with the loop)")
        event = asyncio.Event()
        self._waiters[channel].append(event)
        return event

    def wake(self, channel: str) -> None:
        for event in self._waiters.get(channel, ()):
            event.set()

    def wake_all(self) -> None:
        for channel in self._waiters:
            self.wake(channel)

    async def listen(self, conninfo: str, stop: asyncio.Event, retry_seconds: float = 1.0) -> None:
        """Until `stop`: LISTEN on every channel and wake its waiters at each notification; reconnect after a
        failure."""
        if not self.channels:
            return
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
                    for channel in self.channels:
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self.wake_all()  # whatever arrived while we were not listening
                    while not stop.is_set():  # a second at a time, to notice `stop`
                        async for notify in conn.notifies(timeout=1.0):
                            self.wake(notify.channel)
            except Exception as exc:  # the database went away, say: loops still poll; listen again shortly
                log_failure(log, "wake-ups interrupted; listening again", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_seconds)
