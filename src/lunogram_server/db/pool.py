"""The asyncio connection pool every part of the server shares."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import psycopg
import structlog
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool
from psycopg_pool.base import AttemptWithBackoff

# JSON in and out of PostgreSQL goes through orjson: it is several times faster than the stdlib.
set_json_dumps(orjson.dumps)
set_json_loads(orjson.loads)

# psycopg_pool logs every failed reconnection attempt of every connection (a line per connection per
# second during an outage); Pool below says once when the database becomes unreachable and once when it is
# back.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

log = structlog.get_logger("lunogram.db")

DEFAULT_WAIT_SECONDS = 5.0
# While the database is unreachable, a request waits at most this long for a connection before its 503.
OUTAGE_WAIT_SECONDS = 1.0


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # Timestamps leave the database as RFC 3339 in UTC, whatever the server's default timezone.
    await conn.execute("SET TIME ZONE 'UTC'")


class _SteadyRetry(AttemptWithBackoff):
    """Reconnection attempts 0.2 s apart at first, then at most 1 s apart: psycopg_pool doubles the delay
    without bound (1, 2, 4 … s), so after a 30 s outage the pool would wait up to 30 s more before its next
    attempt. A connection attempt to a database that is down costs it next to nothing."""

    INITIAL_DELAY = 0.2
    MAX_DELAY = 1.0

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, self.MAX_DELAY)


class Pool(AsyncConnectionPool[Any]):
    """psycopg's pool, for a database that goes away and comes back (db/outage.py).

    * It knows whether the database is reachable: the last connection attempt failed (`unreachable_since`)
      or succeeded. While it is unreachable a caller waits at most OUTAGE_WAIT_SECONDS for a connection
      (then PoolTimeout, a 503), rather than the full `timeout` meant for a busy pool.
    * Reconnection attempts stay frequent (_SteadyRetry): back within a second of the database.
    * On the way back it checks the idle connections (`check()`, one round trip each, once): connections
      opened before the outage and not used during it are broken, and would each fail one request.

    No check on every checkout (psycopg_pool's `check=`): that is a round trip per request on the hot path.
    """

    def __init__(self, *args: Any, outage_wait: float = OUTAGE_WAIT_SECONDS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outage_wait = outage_wait
        self.unreachable_since: float | None = None
        self._checks: set[asyncio.Task[None]] = set()

    @property
    def reachable(self) -> bool:
        return self.unreachable_since is None

    async def getconn(self, timeout: float | None = None) -> psycopg.AsyncConnection[Any]:  # noqa: ASYNC109
        if self.unreachable_since is not None:
            timeout = min(self.timeout if timeout is None else timeout, self.outage_wait)
        conn: psycopg.AsyncConnection[Any] = await super().getconn(timeout)
        return conn

    async def _connect(self, timeout: float | None = None) -> psycopg.AsyncConnection[Any]:  # noqa: ASYNC109
        try:
            conn: psycopg.AsyncConnection[Any] = await super()._connect(timeout)
        except Exception as exc:
            if self.unreachable_since is None:
                self.unreachable_since = time.monotonic()
                log.warning("database unreachable; reconnecting", error=" ".join(str(exc).split()))
            raise
        if self.unreachable_since is not None:
            down = time.monotonic() - self.unreachable_since
            self.unreachable_since = None
            log.warning("database reachable again", unreachable_seconds=round(down, 1))
            task = asyncio.get_running_loop().create_task(self.check())
            self._checks.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self._checks.discard)
        return conn

    async def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        await super()._add_connection(attempt or _SteadyRetry(timeout=self.reconnect_timeout), growing)


async def open_pool(
    conninfo: str, *, min_size: int = 2, max_size: int = 20, wait_seconds: float = DEFAULT_WAIT_SECONDS
) -> Pool:
    """`wait_seconds`: how long a caller waits for a connection when all are busy (then PoolTimeout: 503)."""
    pool = Pool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        timeout=wait_seconds,
        outage_wait=min(OUTAGE_WAIT_SECONDS, wait_seconds),
        kwargs={"autocommit": True},
        configure=_configure,
        open=False,
        name="lunogram",
    )
    await pool.open(wait=True, timeout=60)
    return pool
