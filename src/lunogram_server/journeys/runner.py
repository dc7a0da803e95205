"""The runner: claims due work with FOR UPDATE SKIP LOCKED (any number of runners, in any processes, share
it) and does it, one transaction per batch:

* schedule entrances whose moment came (journey_schedule_entries), entered once per occurrence;
* list backfills (a list entrance publishing with `enter_current_members`), in chunks by user id;
* due runs, advanced as far as they go (engine.py).

Webhook calls happen after the batch commits (a network call never holds a transaction open), each under
a lease: the run is `calling` and due again when the lease ends, so if the process dies before the outcome
is recorded, the call is made again with the same Idempotency-Key (`<run>:<visit>`). An outcome is recorded
only for the visit it belongs to, so two outcomes of one call move the run once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
from psycopg import AsyncConnection, errors
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from lunogram_server.config import JourneySettings
from lunogram_server.journeys import webhooks
from lunogram_server.journeys.engine import Advance, JourneyInfo, Q, Run, Taken, WebhookCall, record_steps
from lunogram_server.journeys.graphs import GRAPHS
from lunogram_server.journeys.models import Webhook
from lunogram_server.netcheck import parse_networks
from lunogram_server.reactions import LoopContext

log = structlog.get_logger("lunogram.journeys")
Clock = Callable[[], datetime]
CHANNEL = "lunogram_journeys"
_TRANSIENT = (errors.DeadlockDetected, errors.SerializationFailure)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Runner:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        config: JourneySettings | None = None,
        *,
        clock: Clock = utc_now,
        wakeup: asyncio.Event | None = None,
    ) -> None:
        self.pool = pool
        self.config = config or JourneySettings()
        self.clock = clock
        self.wakeup = wakeup
        self.allowed = parse_networks(self.config.webhook_allowed_networks)
        self._calls: set[asyncio.Task[None]] = set()
        self._calling = asyncio.Semaphore(self.config.webhook_concurrency)
        self._client: httpx.AsyncClient | None = None

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                if self.wakeup is not None:
                    self.wakeup.clear()
                try:
                    done = await self.run_once()
                except Exception:  # the database went away, say: log, wait, try again
                    log.exception("journey batch failed")
                    done = 0
                if done == 0:
                    await self._idle(stop)
        finally:
            if self._calls:
                await asyncio.gather(*self._calls, return_exceptions=True)
            if self._client is not None:
                await self._client.aclose()

    async def _idle(self, stop: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(stop.wait())]
        if self.wakeup is not None:
            waits.append(asyncio.ensure_future(self.wakeup.wait()))
        try:
            await asyncio.wait(waits, timeout=self.config.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def run_once(self) -> int:
        """One batch of each kind of work; how many items were handled (0: nothing was due)."""
        done = 0
        for attempt in range(3):
            try:
                done += await self.enter_scheduled()
                done += await self.backfill()
                done += await self.advance()
                break
            except _TRANSIENT:
                if attempt == 2:
                    raise
                log.info("journey batch lost a race; retrying")
        return done

    async def settle(self) -> None:
        """Wait for the webhook calls in flight (tests, benchmarks)."""
        while self._calls:
            await asyncio.gather(*list(self._calls), return_exceptions=True)

    # -- runs ----------------------------------------------------------------------------------------------

    async def advance(self) -> int:
        """One batch of due runs, advanced together; if the batch fails for a reason other than a lost race,
        its runs are advanced again one at a time, so a run that fails, fails alone (as `failed`, with the
        reason) and the others go on."""
        now = self.clock()
        try:
            return await self._advance(now, alone=False)
        except _TRANSIENT:
            raise
        except Exception as exc:
            log.warning("journey batch failed; one run at a time now", error=repr(exc))
            return await self._advance(now, alone=True)

    async def _advance(self, now: datetime, *, alone: bool) -> int:
        calls: list[WebhookCall] = []
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(Q["claim_due"], {"now": now, "limit": self.config.batch_size})
            runs = [Run.from_row(row) for row in await cursor.fetchall()]
            if not runs:
                return 0
            for group in ([run] for run in runs) if alone else [runs]:
                try:
                    async with conn.transaction():  # a savepoint: one run alone when `alone`
                        advance = await prepare(conn, group, now, lease_seconds=self.config.webhook_lease_seconds)
                        await advance.run(group)
                        await advance.save(group)
                    calls += advance.calls
                except Exception as exc:
                    if not alone:
                        raise
                    error = f"{type(exc).__name__}: {exc}".strip()[:500]
                    log.warning("journey run failed", run_id=str(group[0].id), error=error)
                    await conn.execute(Q["fail_run"], {"id": group[0].id, "error": error, "now": now})
        for call in calls:
            self._spawn(call)
        return len(runs)

    def _spawn(self, call: WebhookCall) -> None:
        task = asyncio.create_task(self._call(call))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _call(self, call: WebhookCall) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, http2=False)
        async with self._calling:
            outcome = await webhooks.call(
                self._client,
                call.method,
                call.url,
                call.headers,
                call.body,
                call.timeout,
                f"{call.run_id}:{call.visit}",
                self.allowed,
            )
        try:
            await self._record(call, outcome)
        except Exception:  # the lease ends and the call is made again: at least once, never lost
            log.exception("could not record a webhook's outcome", run_id=str(call.run_id))

    async def _record(self, call: WebhookCall, outcome: webhooks.Outcome) -> None:
        """The call's outcome, for its (run, visit) only: 2xx moves on (the response stored if asked); a
        retryable failure with tries left is due again after a backoff; anything else takes the failure path
        or fails the run."""
        now = self.clock()
        async with self.pool.connection() as conn, conn.transaction():
            row = await (await conn.execute(Q["webhook_run"], {"run_id": call.run_id, "visit": call.visit})).fetchone()
            if row is None:  # recorded already, or the run moved on (merged, deleted)
                return
            context = dict(row[0] or {})
            graph = (await GRAPHS.get(conn, {(call.journey_id, call.version)})).get((call.journey_id, call.version))
            step = graph.steps.get(call.step) if graph is not None else None
            assert isinstance(step, Webhook)  # the version the call was made for is immutable
            detail: dict[str, Any] = {"status": outcome.status, "attempt": call.attempts}
            if outcome.error:
                detail["error"] = outcome.error
            retry = outcome.retryable and not outcome.ok and call.attempts <= call.retries
            target: str | None
            status: str
            error: str | None
            if retry:
                backoff = self.config.webhook_retry_base_seconds * 2 ** (call.attempts - 1)
                delay = min(self.config.webhook_retry_max_seconds, backoff) * (0.5 + random.random() / 2)
                target, status, due, advance = call.step, "active", now + timedelta(seconds=delay), 0
                error = outcome.error or f"status {outcome.status}"
            else:
                if outcome.ok and step.save_as:
                    context.setdefault("data", {})[step.save_as] = {"status": outcome.status, "body": outcome.body}
                visited = context.setdefault("visited", [])
                if call.step not in visited:
                    visited.append(call.step)
                outcome_name = f"status:{outcome.status}" if outcome.ok else "failed"
                taken = Taken(
                    call.run_id, call.visit, call.journey_id, call.version, call.step, outcome_name, detail, now
                )
                await record_steps(conn, [taken])
                target = step.next if outcome.ok else step.failure_next
                advance, error = 1, None
                if target is not None:
                    status, due = "active", now
                elif outcome.ok:
                    status, due = "completed", None
                else:
                    status, due = "failed", None
                    error = f"webhook: {outcome.error or f'status {outcome.status}'}"
            params = {
                "run_id": call.run_id,
                "visit": call.visit,
                "status": status,
                "step": target or call.step,
                "advance": advance,
                "due_at": due,
                "context": Jsonb(context),
                "attempts": call.attempts if retry else 0,
                "error": error,
                "ended": due is None,
                "now": now,
            }
            await conn.execute(Q["webhook_done"], params)
            if due is not None:
                await conn.execute(Q["notify"])

    # -- schedule entrances and backfills -----------------------------------------------------------------

    async def enter_scheduled(self) -> int:
        now = self.clock()
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(Q["claim_schedule_entries"], {"now": now, "limit": self.config.batch_size})
            due = await cursor.fetchall()
            if not due:
                return 0
            entries: list[list[Any]] = []
            for trigger_id, schedule_id, occurrence, kind, user_id, organization_id, name, data in due:
                if kind == "user" and user_id is not None:
                    targets = [user_id]
                elif kind == "organization" and organization_id is not None:
                    found = await conn.execute(Q["organization_members"], {"organization_id": organization_id})
                    targets = [member for (member,) in await found.fetchall()]
                else:  # the schedule went (its entries would have gone with it): nothing to enter
                    targets = []
                schedule = {"name": name, "data": data, "occurrence_at": occurrence.isoformat()}
                context = {"schedule": schedule, "data": {"schedule": schedule}}
                for target in targets:
                    key = f"schedule:{schedule_id}:{occurrence.isoformat()}:{target}"
                    entries.append([trigger_id, target, key, context])
            if entries:
                await conn.execute(Q["enter"], {"entries": Jsonb(entries), "at": now})
            await conn.execute(
                Q["forget_schedule_entries"],
                {
                    "triggers": [d[0] for d in due],
                    "schedules": [d[1] for d in due],
                    "occurrences": [d[2] for d in due],
                },
            )
        return len(due)

    async def backfill(self) -> int:
        now = self.clock()
        async with self.pool.connection() as conn, conn.transaction():
            row = await (await conn.execute(Q["claim_backfill"])).fetchone()
            if row is None:
                return 0
            trigger_id, after, list_id, _ = row
            cursor = await conn.execute(
                Q["backfill_chunk"], {"list_id": list_id, "after": after, "limit": self.config.backfill_chunk}
            )
            members = [user_id for (user_id,) in await cursor.fetchall()]
            if members:
                entries = [[trigger_id, user_id, f"backfill:{trigger_id}:{user_id}", None] for user_id in members]
                await conn.execute(Q["enter"], {"entries": Jsonb(entries), "at": now})
            if len(members) < self.config.backfill_chunk:
                await conn.execute(Q["backfill_done"], {"trigger_id": trigger_id})
            else:
                await conn.execute(Q["backfill_advance"], {"trigger_id": trigger_id, "after": members[-1]})
        return max(1, len(members))


async def prepare(
    conn: AsyncConnection[Any], runs: list[Run], now: datetime, *, dry: bool = False, lease_seconds: float = 30.0
) -> Advance:
    """An Advance with the graphs and journey settings the runs need."""
    graphs = await GRAPHS.get(conn, {(run.journey_id, run.version) for run in runs})
    cursor = await conn.execute(Q["journey_info"], {"ids": list({run.journey_id for run in runs})})
    journeys = {jid: JourneyInfo(timezone, project_id) for jid, timezone, project_id in await cursor.fetchall()}
    return Advance(conn, now, graphs, journeys, dry=dry, lease_seconds=lease_seconds)


async def journeys_loop(ctx: LoopContext) -> None:
    """The runners of one process (LUNOGRAM_JOURNEY_RUNNER_TASKS), woken by new and moved runs."""
    config = ctx.settings.journeys
    await asyncio.gather(
        *(
            Runner(ctx.pool, config, wakeup=ctx.wakeups.waiter(CHANNEL)).run(ctx.stop)
            for _ in range(config.runner_tasks)
        )
    )
