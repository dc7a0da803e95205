"""The asyncio connection pool every part of the server shares."""

from __future__ import annotations

from typing import Any

import orjson
import psycopg
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

# JSON in and out of PostgreSQL goes through orjson: it is several times faster than the stdlib.
set_json_dumps(orjson.dumps)
set_json_loads(orjson.loads)


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # Timestamps leave the database as RFC 3339 in UTC, whatever the server's default timezone.
    await conn.execute("SET TIME ZONE 'UTC'")


async def open_pool(conninfo: str, *, min_size: int = 2, max_size: int = 20) -> AsyncConnectionPool[Any]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True},
        configure=_configure,
        open=False,
        name="lunogram",
    )
    await pool.open(wait=True, timeout=60)
    return pool
