"""Workers: apply inbox events to profile histories, fan out broadcasts, hand events to subscribers.

One transaction per batch: lock some partitions (SKIP LOCKED, so workers anywhere share them), take their
oldest due events, resolve identifiers in bulk, write history, call subscribers, delete the inbox rows,
commit. A crash anywhere rolls all of it back and the events are claimed again; history's unique key on
(event, target) keeps a replay from writing anything twice. A batch that fails is retried at once one event
at a time (a savepoint each), so a poison event is held back alone: it is retried with backoff and, after
`max_attempts`, parked as a dead letter for operators; other events flow on.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

import structlog
from psycopg import AsyncConnection, errors
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from lunogram_server.config import EventSettings
from lunogram_server.db.outage import connection_failed, log_failure
from lunogram_server.events.models import Kind, ProcessedEvent
from lunogram_server.events.queries import BY_KIND, SHARED
from lunogram_server.reactions import EventSubscriber, LoopContext

log = structlog.get_logger("lunogram.events")
CHANNEL = "lunogram_events"  # NOTIFY'd by a trigger on event_inbox (migration 0011)

_NO_CURSOR = UUID(int=0)
# Lost races with other transactions (deadlocks between resolutions, a profile merged away under us): the
# batch is simply tried again, and no event is charged an attempt for it.
_TRANSIENT = (errors.DeadlockDetected, errors.SerializationFailure, errors.ForeignKeyViolation)
_MAX_LOST_RACES = 5
RETRY_SECONDS = 1.0  # after a failed batch (the database away), the next try comes at most this much later


class _BatchFailed(Exception):
    """A batch failed for a reason other than a lost race: retry its partitions one event at a time."""

    def __init__(self, partitions: list[int]) -> None:
        super().__init__(partitions)
        self.partitions = partitions


class _LostRace(_BatchFailed):
    """A batch rolled back by a transient error: simply try again (a few times, see run_once)."""


@dataclass
class _Row:
    id: int
    partition: int
    project_id: UUID
    kind: Kind
    name: str
    data: dict[str, Any]
    identifiers: list[dict[str, Any]] | None
    match: dict[str, Any] | None
    accepted_at: datetime
    attempts: int
    broadcast_cursor: UUID | None


@dataclass
class _Tally:
    processed: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0


class EventWorker:
    """One worker task. Run any number of them, in any number of processes and machines."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        config: EventSettings | None = None,
        subscribers: Sequence[EventSubscriber] = (),
        name: str | None = None,
        wakeup: asyncio.Event | None = None,
    ) -> None:
        self.pool = pool
        self.wakeup = wakeup  # set when events arrive (wakeups.py); without it, polling alone
        self.config = config or EventSettings()
        self.subscribers = list(subscribers)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._lost_races = 0  # consecutive batches rolled back by a transient error

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set; idle, wait for a wake-up (events arrived) or `poll_seconds` (retries
        falling due, a lost wake-up)."""
        while not stop.is_set():
            if self.wakeup is not None:
                self.wakeup.clear()  # before looking: an arrival from now on wakes the next wait
            try:
                handled = await self.run_once()
            except Exception as exc:  # the database went away, say: log, wait, try again
                log_failure(log, "event batch failed", exc, worker=self.name)
                # within a second: a wake-up sent while this batch was failing (the LISTEN connection is
                # back before the pool, say) has been spent, and events may be waiting
                await self._idle(stop, min(self.config.poll_seconds, RETRY_SECONDS))
                continue
            if handled == 0:
                await self._idle(stop, self.config.poll_seconds)

    async def _idle(self, stop: asyncio.Event, seconds: float) -> None:
        waits = [asyncio.ensure_future(stop.wait())]
        if self.wakeup is not None:
            waits.append(asyncio.ensure_future(self.wakeup.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def run_once(self) -> int:
        """Apply one batch; returns how many inbox events it handled (0: nothing was due, -1: try again)."""
        try:
            handled = await self._batch(only=None)
        except _LostRace as lost:
            self._lost_races += 1
            if self._lost_races <= _MAX_LOST_RACES:
                log.info("event batch lost a race; retrying", worker=self.name, error=str(lost.__cause__))
                return -1
            # the same "race" again and again is no race: apply the events one by one, so an event that keeps
            # failing is charged its attempts (and parked) instead of stalling its partitions
            self._lost_races = 0
            log.warning("event batch keeps losing; one by one now", worker=self.name, error=str(lost.__cause__))
            return await self._batch(only=lost.partitions)
        except _BatchFailed as failed:
            log.warning("event batch failed; one by one now", worker=self.name, error=repr(failed.__cause__))
            return await self._batch(only=failed.partitions)
        self._lost_races = 0
        return handled

    async def _batch(self, only: list[int] | None) -> int:
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                SHARED["claim_partitions"], {"partitions": self.config.partitions_per_claim, "only": only}
            )
            partitions = [partition for (partition,) in await cursor.fetchall()]
            if not partitions:
                return 0
            cursor = await conn.execute(
                SHARED["claim_events"], {"partitions": partitions, "limit": self.config.batch_size}
            )
            rows = [_Row(*values) for values in await cursor.fetchall()]
            if not rows:
                return 0
            tally = _Tally()
            if only is None:
                try:
                    await self._apply(conn, rows, tally)
                except _TRANSIENT as exc:
                    raise _LostRace(partitions) from exc
                except Exception as exc:
                    if connection_failed(exc):  # not the events' fault: the batch is simply claimed again
                        raise
                    raise _BatchFailed(partitions) from exc
            else:
                for row in rows:
                    await self._apply_alone(conn, row, tally)
            await conn.execute(SHARED["record_stats"], {"worker": self.name, **tally.__dict__})
            return len(rows)

    async def _apply_alone(self, conn: AsyncConnection[Any], row: _Row, tally: _Tally) -> None:
        attempt = _Tally()
        try:
            async with conn.transaction():  # a savepoint: a failure undoes this event only
                await self._apply(conn, [row], attempt)
        except Exception as exc:
            cursor = await conn.execute(
                SHARED["fail"],
                {
                    "id": row.id,
                    "error": f"{type(exc).__name__}: {exc}",
                    "base_delay": self.config.retry_base_seconds,
                    "max_delay": self.config.retry_max_seconds,
                    "max_attempts": self.config.max_attempts,
                },
            )
            dead = (await cursor.fetchone() or (False,))[0]
            tally.failed += 1
            tally.dead += int(dead)
            log.warning("event failed", worker=self.name, inbox_id=row.id, dead=dead, error=repr(exc))
            return
        tally.processed += attempt.processed
        tally.delivered += attempt.delivered

    async def _apply(self, conn: AsyncConnection[Any], rows: list[_Row], tally: _Tally) -> None:
        processed: list[ProcessedEvent] = []
        finished: list[int] = []
        for kind in ("user", "organization"):
            direct = [row for row in rows if row.kind == kind and row.identifiers is not None]
            if direct:
                targets = await self._resolve(conn, kind, direct)
                cursor = await conn.execute(
                    BY_KIND[kind]["write_history"],
                    {"inbox_ids": [row.id for row in direct], "target_ids": [targets[row.id] for row in direct]},
                )
                # what history did not already hold: a replay hands nothing to subscribers twice
                written = {inbox_id for (inbox_id,) in await cursor.fetchall()}
                tally.delivered += len(written)
                finished += [row.id for row in direct]
                if self.subscribers:
                    processed += [_processed(row, targets[row.id]) for row in direct if row.id in written]
        for row in rows:
            if row.match is not None:
                delivered, done = await self._broadcast_step(conn, row)
                tally.delivered += len(delivered)
                if self.subscribers:
                    processed += [_processed(row, target, broadcast=True) for target in delivered]
                if done:
                    finished.append(row.id)
        if self.subscribers and processed:
            processed = await self._with_members(conn, processed)
            for subscriber in self.subscribers:
                await subscriber.on_events(conn, processed)
        if finished:
            await conn.execute(SHARED["done"], {"ids": finished})
        tally.processed += len(finished)

    async def _resolve(self, conn: AsyncConnection[Any], kind: Kind, rows: list[_Row]) -> dict[int, UUID]:
        """inbox id -> profile id. Identifiers that all name one existing profile resolve in one lookup
        for the whole batch; anything else (new, several profiles, metadata to store) takes full resolution,
        which creates and merges, one statement for all of them."""
        queries = BY_KIND[kind]
        keys = {
            (row.project_id, ident["source"], ident["external_id"]) for row in rows for ident in row.identifiers or ()
        }
        projects, sources, external_ids = zip(*keys, strict=True)
        cursor = await conn.execute(
            queries["lookup"],
            {"projects": list(projects), "sources": list(sources), "external_ids": list(external_ids)},
        )
        known = {(p, s, e): target for p, s, e, target in await cursor.fetchall()}
        targets: dict[int, UUID] = {}
        slow: list[_Row] = []
        for row in rows:
            idents = row.identifiers or []
            found = {known.get((row.project_id, i["source"], i["external_id"])) for i in idents}
            if len(found) == 1 and None not in found and not any("metadata" in i for i in idents):
                targets[row.id] = found.pop()  # type: ignore[assignment]
            else:
                slow.append(row)
        if slow:
            cursor = await conn.execute(
                queries["resolve"],
                {"projects": [row.project_id for row in slow], "identifiers": [Jsonb(row.identifiers) for row in slow]},
            )
            for ordinal, target in await cursor.fetchall():
                targets[slow[ordinal - 1].id] = target
            # a later resolution in this batch may have merged an earlier target away: follow the merges
            cursor = await conn.execute(queries["survivors"], {"ids": list(set(targets.values()))})
            moved = dict(await cursor.fetchall())
            targets = {inbox_id: moved.get(target, target) for inbox_id, target in targets.items()}
        return targets

    async def _broadcast_step(self, conn: AsyncConnection[Any], row: _Row) -> tuple[list[UUID], bool]:
        """Deliver to the next chunk of matching targets; returns them and whether the fan-out is complete."""
        cursor = await conn.execute(
            BY_KIND[row.kind]["broadcast_chunk"],
            {
                "project_id": row.project_id,
                "match": Jsonb(row.match),
                "after": row.broadcast_cursor or _NO_CURSOR,
                "limit": self.config.broadcast_chunk,
                "inbox_id": row.id,
            },
        )
        last_id, found, delivered = await cursor.fetchone() or (None, 0, [])
        done = found < self.config.broadcast_chunk
        if not done:
            await conn.execute(SHARED["advance_broadcast"], {"cursor": last_id, "id": row.id})
        return list(delivered), done

    async def _with_members(self, conn: AsyncConnection[Any], events: list[ProcessedEvent]) -> list[ProcessedEvent]:
        organization_ids = list({e.target_id for e in events if e.kind == "organization"})
        if not organization_ids:
            return events
        cursor = await conn.execute(SHARED["members"], {"organization_ids": organization_ids})
        members = {organization: tuple(users) for organization, users in await cursor.fetchall()}
        return [replace(e, member_ids=members.get(e.target_id, ())) if e.kind == "organization" else e for e in events]


def _processed(row: _Row, target: UUID, broadcast: bool = False) -> ProcessedEvent:
    return ProcessedEvent(
        inbox_id=row.id,
        project_id=row.project_id,
        kind=row.kind,
        target_id=target,
        name=row.name,
        data=row.data,
        accepted_at=row.accepted_at,
        broadcast=broadcast,
    )


async def run_workers(ctx: LoopContext) -> None:
    """The event workers of one process (LUNOGRAM_EVENT_WORKER_TASKS), woken by arrivals."""
    subscribers = ctx.reactions.event_subscribers
    await asyncio.gather(
        *(
            EventWorker(ctx.pool, ctx.settings.events, subscribers, f"{ctx.name}:{n}", ctx.wakeups.waiter(CHANNEL)).run(
                ctx.stop
            )
            for n in range(ctx.settings.events.worker_tasks)
        )
    )
