"""Group commit for single-row writes: concurrent calls of one statement run as one round trip and commit.

Why: an upsert's own work in PostgreSQL is a few hundred microseconds; its commit, round trip and the
driver's per-statement overhead cost as much again. Under load, requests that arrive while a batch is in
flight are taken together by the next one: each caller still gets its own answer, only after the commit
(accepted means durable). At low load a batch is a single call, so latency does not wait for company.

A batch is one statement calling a set-returning SQL function with the whole batch (identity/sql/batch.sql
does upserts set-wise). If the batch fails for a reason other than a collision (which db/retry.py retries
whole), every item is run again alone, so one bad item fails alone and the others still succeed. If its
connection failed (db/outage.py: the database is down, restarting, unreachable), nothing is run again: the
batch and every call queued behind it fail at once (503), rather than each waiting its turn for a
connection that is not coming; a batch whose commit was cut off may or may not have been stored, so its
callers must not hear 2xx.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from lunogram_server.db.outage import connection_failed
from lunogram_server.db.retry import COLLISIONS, run_write

_Pending = tuple[list[Any], "asyncio.Future[str]"]


class Coalescer:
    """Calls `function` with the items of many callers at once: a JSON array of each call's arguments; the
    function returns one text row per item, the answer, in item order.

    At most `slots` batches run at once per Coalescer; a batch takes at most `max_batch` items. `order`
    sorts a batch (stably: calls with equal keys keep their order) so that concurrent batches take their
    row locks in one order and do not deadlock each other.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        function: str,
        *,
        slots: int,
        max_batch: int,
        order: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        self.pool = pool
        self.order = order
        self.batch_sql = f"SELECT * FROM {function}(%s)"
        self.slots = slots
        self.max_batch = max_batch
        self._queue: list[_Pending] = []
        self._running = 0
        self._draining: set[asyncio.Task[None]] = set()
        self.calls = 0  # how many calls and batches so far: calls / batches is the coalescing achieved
        self.batches = 0

    async def call(self, *arguments: Any) -> str:
        """The answer for these arguments (JSON-serialisable: str, UUID, dict, list…)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        self.calls += 1
        self._queue.append((list(arguments), future))
        if self._running < self.slots:
            self._running += 1
            task = loop.create_task(self._drain())
            self._draining.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self._draining.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                if self.order is not None and len(batch) > 1:
                    order = self.order
                    batch.sort(key=lambda pending: order(pending[0]))
                self.batches += 1
                try:
                    await self._run(batch)
                except Exception as exc:  # a bug here must not leave callers waiting: they answer (and log) it
                    _fail(batch, exc)
        finally:
            self._running -= 1

    async def _run(self, batch: list[_Pending]) -> None:
        payload = Jsonb([item for item, _ in batch], dumps=_dumps)

        async def execute(conn: AsyncConnection[Any]) -> list[str]:
            # one statement on an autocommit connection: one transaction, one round trip
            rows = await (await conn.execute(self.batch_sql, (payload,))).fetchall()
            return [row[0] for row in rows]

        try:
            results = await run_write(self.pool, execute)
        except Exception as exc:
            if connection_failed(exc):
                queued, self._queue = self._queue, []
                _fail(batch + queued, exc)
                return
            if len(batch) == 1 or isinstance(exc, COLLISIONS):
                _fail(batch, exc)
                return
            for pending in batch:  # isolate the item that failed; the others still succeed
                await self._run([pending])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # the caller went away (client disconnected): the write stands regardless
                future.set_result(result)


def _fail(calls: list[_Pending], exc: Exception) -> None:
    for _, future in calls:
        if not future.done():
            future.set_exception(exc)


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()
