"""Writes that collide with a concurrent writer are tried again instead of failing the request.

Two transactions that lock the same profiles in different orders (an upsert merging two users while an
event worker's batch holds one of them) end in a deadlock PostgreSQL resolves by aborting one of them; the
aborted one has changed nothing, so running it again is safe and almost always succeeds at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool

T = TypeVar("T")
ATTEMPTS = 4
# SQLSTATE class 40: PostgreSQL rolled the transaction back because of a concurrent one
COLLISIONS = (errors.DeadlockDetected, errors.SerializationFailure, errors.TransactionRollback)


async def run_write(pool: AsyncConnectionPool[Any], work: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
    """`work` on a pooled connection, again (after a short jittered pause) when PostgreSQL aborted it as a
    deadlock or serialization failure; the last failure propagates (the HTTP layer answers 503)."""
    for attempt in range(ATTEMPTS):
        try:
            async with pool.connection() as conn:
                return await work(conn)
        except COLLISIONS:
            if attempt == ATTEMPTS - 1:
                raise
            await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
    raise AssertionError("unreachable")  # pragma: no cover
