"""Moving runs along their graph: one batch of runs at a time, set-wise.

A batch advances in rounds. Each round takes the runs still moving, groups them by (journey, version, step)
and does each group's step for all of its runs at once: a condition is one SQL statement for the group, a
list step one call, an update one set-wise upsert. A run stops moving when it reaches a step that waits (a
delay, a wait for an event, a rate limit over its limit, a webhook to call) or ends. Everything a step does
in the database happens in the batch's transaction, and each step taken is recorded under (run, visit):
a crash rolls the batch back and whoever claims the runs next does it again, once.

The same code makes the dry run (`dry=True`): conditions are evaluated for real, nothing is written, time
passes over delays, and it stops at the first wait for an event.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
import psycopg
from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from lunogram_server.db import load_queries
from lunogram_server.journeys.models import (
    Condition,
    Delay,
    EmitEvent,
    EnterJourney,
    Entrance,
    Exit,
    Experiment,
    Goal,
    Graph,
    ListStep,
    RateLimit,
    Send,
    Split,
    Step,
    UpdateUser,
    WaitForEvent,
    Webhook,
)
from lunogram_server.journeys.rules import JourneyNode, compile_journey_rule
from lunogram_server.journeys.timing import choose_variant, delay_until
from lunogram_server.templating import TemplateError, render, render_value

Q = load_queries("lunogram_server.journeys")
MAX_ROUNDS = 50  # steps one run takes in one batch; a longer stretch goes on in the next batch
MAX_VISITS = 10_000  # steps one run takes in all: a run past it fails (a loop through delays, say)
ENDED = ("completed", "exited", "converted", "failed", "merged", "deleted", "cancelled")


# a stored rule the database cannot evaluate (values out of range, say): the rule's fault, not the batch's
RULE_FAILURES = (ValueError, psycopg.DataError, psycopg.errors.ProgramLimitExceeded)


class RuleFailed(Exception):
    """A rule failed in the database: the runs at its step fail with the reason; the batch goes on."""


@dataclass
class Run:
    id: UUID
    project_id: UUID
    journey_id: UUID
    version: int
    user_id: UUID
    status: str
    step: str
    visit: int
    context: dict[str, Any]
    attempts: int
    step_at: datetime
    entered_at: datetime
    due_at: datetime | None = None
    wait_event: str | None = None
    error: str | None = None
    moving: bool = True
    ended: bool = False

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Run:
        run = cls(*row)
        run.context = dict(run.context or {})
        return run


@dataclass(frozen=True)
class Taken:
    run_id: UUID
    visit: int
    journey_id: UUID
    version: int
    step: str
    outcome: str
    detail: dict[str, Any] | None
    at: datetime


@dataclass(frozen=True)
class WebhookCall:
    run_id: UUID
    visit: int
    journey_id: UUID
    version: int
    step: str
    method: str
    url: str
    headers: dict[str, str]
    body: Any
    timeout: float
    attempts: int  # including this one
    retries: int


@dataclass
class JourneyInfo:
    timezone: str
    project_id: UUID


@dataclass
class Advance:
    conn: AsyncConnection[Any]
    now: datetime
    graphs: dict[tuple[UUID, int], Graph]
    journeys: dict[UUID, JourneyInfo]
    dry: bool = False
    lease_seconds: float = 30.0
    taken: list[Taken] = field(default_factory=list)
    calls: list[WebhookCall] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _people: dict[UUID, dict[str, Any]] | None = None

    async def run(self, runs: list[Run]) -> None:
        for _ in range(MAX_ROUNDS):
            moving = [run for run in runs if run.moving]
            if not moving:
                return
            groups: dict[tuple[UUID, int, str], list[Run]] = {}
            for run in moving:
                groups.setdefault((run.journey_id, run.version, run.step), []).append(run)
            for (journey_id, version, key), group in groups.items():
                graph = self.graphs.get((journey_id, version))
                step = graph.steps.get(key) if graph is not None else None
                if step is None:
                    for run in group:
                        self._fail(run, key, f"step {key!r} is not in version {version} of the journey")
                    continue
                for run in group:
                    if run.visit > MAX_VISITS:
                        self._fail(run, key, f"more than {MAX_VISITS} steps")
                group = [run for run in group if run.moving]
                if group:
                    try:
                        await self._step(key, step, group)
                    except RuleFailed as exc:
                        for run in group:
                            if run.moving and run.step == key:
                                self._fail(run, key, str(exc))
        for run in runs:  # still going after MAX_ROUNDS: the next batch goes on
            if run.moving:
                run.moving = False
                run.due_at = self.now

    # -- moving a run ------------------------------------------------------------------------------------

    def _record(self, run: Run, key: str, outcome: str, detail: dict[str, Any] | None) -> None:
        self.taken.append(Taken(run.id, run.visit, run.journey_id, run.version, key, outcome, detail, self.now))
        run.visit += 1
        run.attempts = 0
        visited = run.context.setdefault("visited", [])
        if key not in visited:
            visited.append(key)

    def _go(self, run: Run, key: str, outcome: str, detail: dict[str, Any] | None, target: str | None) -> None:
        self._record(run, key, outcome, detail)
        if target is None:
            self._finish(run, "completed")
            return
        run.step, run.status, run.step_at, run.due_at, run.wait_event = target, "active", self.now, None, None

    def _finish(self, run: Run, status: str, error: str | None = None) -> None:
        run.status, run.moving, run.ended, run.due_at, run.wait_event, run.error = (
            status,
            False,
            True,
            None,
            None,
            error,
        )

    def _end(self, run: Run, key: str, status: str, outcome: str, detail: dict[str, Any] | None) -> None:
        self._record(run, key, outcome, detail)
        self._finish(run, status)

    def _fail(self, run: Run, key: str, error: str) -> None:
        self._record(run, key, "failed", {"error": error})
        self._finish(run, "failed", error)

    def _park(self, run: Run, status: str, due: datetime | None, wait_event: str | None = None) -> None:
        if run.status == "active":  # arriving now (a retry or a re-check keeps its arrival time)
            run.step_at = self.now
        run.status, run.due_at, run.wait_event, run.moving = status, due, wait_event, False

    # -- steps -------------------------------------------------------------------------------------------

    async def _step(self, key: str, step: Step, runs: list[Run]) -> None:
        if isinstance(step, Delay):
            await self._delay(key, step, runs)
        elif isinstance(step, WaitForEvent):
            await self._wait(key, step, runs)
        elif isinstance(step, Condition):
            matched = await self.matching(runs, step.rule)
            for run, hit in zip(runs, matched, strict=True):
                self._go(run, key, "yes" if hit else "no", {"matched": hit}, step.then if hit else step.otherwise)
        elif isinstance(step, Split):
            await self._split(key, step, runs)
        elif isinstance(step, Experiment):
            for run in runs:
                variant = choose_variant(step, run.id, key)
                run.context.setdefault("variants", {})[key] = variant.name
                self._go(run, key, f"variant:{variant.name}", {"variant": variant.name}, variant.next)
        elif isinstance(step, RateLimit):
            await self._rate_limit(key, step, runs)
        elif isinstance(step, Webhook):
            await self._webhook(key, step, runs)
        elif isinstance(step, UpdateUser):
            await self._update_user(key, step, runs)
        elif isinstance(step, ListStep):
            await self._list_step(key, step, runs)
        elif isinstance(step, EmitEvent):
            await self._emit(key, step, runs)
        elif isinstance(step, EnterJourney):
            await self._enter_journey(key, step, runs)
        elif isinstance(step, Send):
            await self._send(key, step, runs)
        elif isinstance(step, Exit):
            for run in runs:
                self._end(run, key, "exited", "exited", None)
        elif isinstance(step, Entrance):  # a run is never sent back to an entrance (graph.py); pass through
            for run in runs:
                self._go(run, key, "passed", None, step.next)
        elif isinstance(step, Goal):
            for run in runs:
                self._fail(run, key, "a goal step is not on a run's path")

    async def _delay(self, key: str, step: Delay, runs: list[Run]) -> None:
        people = await self.people(runs) if step.mode != "duration" else {}
        for run in runs:
            if run.status == "waiting":  # claimed because its time came
                self._go(run, key, "waited", {"since": run.step_at.isoformat()}, step.next)
                continue
            person = people.get(run.user_id, {})
            values = {
                "user": person,
                "organization": run.context.get("organization"),
                "event": run.context.get("event"),
                "run": {"data": run.context.get("data", {})},
            }
            timezone = self.journeys[run.journey_id].timezone
            until = delay_until(step, self.now, person.get("timezone"), timezone, values)
            if until is None:
                self._go(run, key, "skipped", {"reason": "no date to wait for, or already past"}, step.next)
            elif until <= self.now:  # nothing to wait for (a zero duration): on at once
                self._go(run, key, "waited", {"since": self.now.isoformat()}, step.next)
            elif self.dry:
                self._go(run, key, "waits", {"until": until.isoformat()}, step.next)
                self.now = until  # the dry run lets the time pass
            else:
                self._park(run, "waiting", until)

    async def _wait(self, key: str, step: WaitForEvent, runs: list[Run]) -> None:
        arriving = [run for run in runs if run.status != "waiting"]
        received = await self._received(step, arriving) if arriving else {}
        for run in runs:
            if run.status == "waiting":  # claimed: the timeout came first
                self._go(run, key, "timed_out", {"event": step.event}, step.timeout_next)
            elif run.id in received:  # it came already, after the run began: no need to wait
                run.context["event"] = received[run.id]
                self._go(run, key, "received", {"event": step.event}, step.next)
            elif self.dry:
                timeout = self.now + timedelta(seconds=step.timeout.seconds)
                self._record(run, key, "waits_for_event", {"event": step.event, "timeout_at": timeout.isoformat()})
                run.moving = False
            else:
                self._park(run, "waiting", self.now + timedelta(seconds=step.timeout.seconds), step.event)

    async def _received(self, step: WaitForEvent, runs: list[Run]) -> dict[UUID, dict[str, Any]]:
        """For runs arriving at a wait: the first matching event the user did since the run began, if any."""
        params = {"users": [r.user_id for r in runs], "since": [r.entered_at for r in runs], "name": step.event}
        cursor = await self.conn.execute(Q["events_since"], params)
        candidates: list[tuple[Run, dict[str, Any]]] = []
        for n, name, data, accepted_at in await cursor.fetchall():
            event = {"name": name, "data": data, "accepted_at": accepted_at.isoformat()}
            candidates.append((runs[n - 1], event))
        if not candidates:
            return {}
        hits = [True] * len(candidates)
        if step.rule is not None:
            rows = [(run.user_id, {**run.context, "event": event}) for run, event in candidates]
            hits = await evaluate(self.conn, runs[0].project_id, step.rule, rows, self.now)
        found: dict[UUID, dict[str, Any]] = {}
        for (run, event), hit in zip(candidates, hits, strict=True):
            if hit and run.id not in found:
                found[run.id] = event
        return found

    async def _split(self, key: str, step: Split, runs: list[Run]) -> None:
        left = list(runs)
        for n, branch in enumerate(step.branches):
            if not left:
                return
            matched = await self.matching(left, branch.rule)
            rest = []
            for run, hit in zip(left, matched, strict=True):
                if hit:
                    self._go(run, key, f"branch:{branch.name or n}", {"branch": n}, branch.next)
                else:
                    rest.append(run)
            left = rest
        for run in left:
            self._go(run, key, "default", {"branch": "default"}, step.default)

    async def _rate_limit(self, key: str, step: RateLimit, runs: list[Run]) -> None:
        period = step.period.seconds
        start = datetime.fromtimestamp(int(self.now.timestamp()) // period * period, self.now.tzinfo)
        end = start + timedelta(seconds=period)
        if self.dry:
            for run in runs:
                self._go(run, key, "passed", {"limit": step.limit, "window_start": start.isoformat()}, step.next)
            return
        params = {
            "journey_id": runs[0].journey_id,
            "step": key,
            "start": start,
            "wanted": len(runs),
            "limit": step.limit,
        }
        row = await (await self.conn.execute(Q["rate_take"], params)).fetchone()
        allowed = int(row[0]) if row else 0
        for n, run in enumerate(runs):
            if n < allowed:
                self._go(run, key, "passed", {"window_start": start.isoformat()}, step.next)
            elif step.over == "exit":
                self._end(run, key, "exited", "rate_limited", {"limit": step.limit, "period_seconds": period})
            else:
                self._park(run, "waiting", end)

    async def _webhook(self, key: str, step: Webhook, runs: list[Run]) -> None:
        people = await self.people(runs)
        contexts = [self.template_context(run, people) for run in runs]
        rendered = await _off_loop(_render_webhooks, step, contexts, len(runs))
        for run, (request, error) in zip(runs, rendered, strict=True):
            if error is not None:
                self._webhook_failed(run, key, step, {"error": error})
                continue
            assert request is not None
            method, url, headers, body = request
            if self.dry:
                self._go(run, key, "would_call", {"method": method, "url": url}, step.next)
                continue
            attempts = run.attempts + 1
            self.calls.append(
                WebhookCall(
                    run.id,
                    run.visit,
                    run.journey_id,
                    run.version,
                    key,
                    method,
                    url,
                    headers,
                    body,
                    step.timeout_seconds,
                    attempts,
                    step.retries,
                )
            )
            run.attempts = attempts
            # a lease: if the call's outcome is never recorded (the process died), the run is due again then
            self._park(run, "calling", self.now + timedelta(seconds=step.timeout_seconds + self.lease_seconds))

    def _webhook_failed(self, run: Run, key: str, step: Webhook, detail: dict[str, Any]) -> None:
        if step.failure_next is not None:
            self._go(run, key, "failed", detail, step.failure_next)
        else:
            self._record(run, key, "failed", detail)
            self._finish(run, "failed", str(detail.get("error") or f"status {detail.get('status')}"))

    async def _update_user(self, key: str, step: UpdateUser, runs: list[Run]) -> None:
        people = await self.people(runs)
        values, errors = await _off_loop(
            _render_all, step.data, [self.template_context(r, people) for r in runs], len(runs)
        )
        items = []
        for run, data, error in zip(runs, values, errors, strict=True):
            if error is not None:
                self._fail(run, key, error)
                continue
            if self.dry:
                self._go(run, key, "would_update", {"data": data}, step.next)
                continue
            items.append((run, data))
        if items:
            params = {
                "project_ids": [run.project_id for run, _ in items],
                "user_ids": [run.user_id for run, _ in items],
                "fields": [Jsonb({"data": data}) for _, data in items],
            }
            cursor = await self.conn.execute(Q["update_users"], params)
            updated = {user_id for (user_id,) in await cursor.fetchall()}
            for run, data in items:
                if run.user_id in updated:
                    self._go(run, key, "updated", {"keys": sorted(data)}, step.next)
                else:
                    self._fail(run, key, "the user no longer exists")

    async def _list_step(self, key: str, step: ListStep, runs: list[Run]) -> None:
        adding = step.type == "add_to_list"
        if self.dry:
            for run in runs:
                self._go(run, key, "would_add" if adding else "would_remove", {"list_id": str(step.list_id)}, step.next)
            return
        project_id = runs[0].project_id
        kind = await _scalar(self.conn, Q["static_list"], {"project_id": project_id, "list_id": step.list_id})
        if kind != "static":
            for run in runs:
                self._fail(run, key, f"list {step.list_id} is not a static list of this project")
            return
        params = {"project_id": project_id, "list_id": step.list_id, "users": [run.user_id for run in runs]}
        await self.conn.execute(Q["list_add" if adding else "list_remove"], params)
        for run in runs:
            self._go(run, key, "added" if adding else "removed", {"list_id": str(step.list_id)}, step.next)

    async def _emit(self, key: str, step: EmitEvent, runs: list[Run]) -> None:
        people = await self.people(runs)
        values, errors = await _off_loop(
            _render_all, step.data, [self.template_context(r, people) for r in runs], len(runs)
        )
        ready = []
        for run, data, error in zip(runs, values, errors, strict=True):
            if error is not None:
                self._fail(run, key, error)
            elif self.dry:
                self._go(run, key, "would_emit", {"event": step.event, "data": data}, step.next)
            else:
                ready.append((run, data))
        if ready:
            params = {
                "project_ids": [run.project_id for run, _ in ready],
                "user_ids": [run.user_id for run, _ in ready],
                "name": step.event,
                "datas": [Jsonb(data) for _, data in ready],
            }
            cursor = await self.conn.execute(Q["emit_events"], params)
            emitted = {user_id for (user_id,) in await cursor.fetchall()}
            for run, _ in ready:
                if run.user_id in emitted:
                    self._go(run, key, "emitted", {"event": step.event}, step.next)
                else:
                    self._fail(run, key, "the user no longer exists")

    async def _enter_journey(self, key: str, step: EnterJourney, runs: list[Run]) -> None:
        project_id = runs[0].project_id
        trigger = await _scalar(self.conn, Q["api_trigger"], {"project_id": project_id, "journey_id": step.journey_id})
        if trigger is None:
            for run in runs:
                self._go(
                    run, key, "not_entered", {"reason": "that journey is not live or has no API entrance"}, step.next
                )
            return
        if self.dry:
            for run in runs:
                self._go(run, key, "would_enter", {"journey_id": str(step.journey_id)}, step.next)
            return
        entries = [
            [trigger, run.user_id, f"run:{run.id}:{run.visit}", {"data": run.context.get("data", {})}] for run in runs
        ]
        params = {"entries": Jsonb(entries), "at": self.now}
        await self.conn.execute(Q["enter"], params)
        for run in runs:
            self._go(run, key, "entered_journey", {"journey_id": str(step.journey_id)}, step.next)

    async def _send(self, key: str, step: Send, runs: list[Run]) -> None:
        if not self.dry:
            params = {
                "project_ids": [run.project_id for run in runs],
                "user_ids": [run.user_id for run in runs],
                "run_ids": [run.id for run in runs],
                "visits": [run.visit for run in runs],
                "journey_id": runs[0].journey_id,
                "step": key,
                "channel": step.channel,
                "template_id": step.template_id,
                "datas": [Jsonb({**step.data, "run": run.context.get("data", {})}) for run in runs],
            }
            await self.conn.execute(Q["queue_sends"], params)
        for run in runs:
            outcome = "would_send" if self.dry else "queued"
            self._go(run, key, outcome, {"channel": step.channel, "template_id": str(step.template_id)}, step.next)

    # -- what steps read ---------------------------------------------------------------------------------

    async def matching(self, runs: Sequence[Run], rule: JourneyNode) -> list[bool]:
        """Whether each run's user and context match `rule` (all of one project), in one statement."""
        return await evaluate(self.conn, runs[0].project_id, rule, [(r.user_id, r.context) for r in runs], self.now)

    async def people(self, runs: Iterable[Run]) -> dict[UUID, dict[str, Any]]:
        """The users of the batch (loaded once, when a step needs them)."""
        if self._people is None:
            self._people = {}
        missing = list({run.user_id for run in runs} - self._people.keys())
        if missing:
            cursor = await self.conn.execute(Q["people"], {"ids": missing})
            for user_id, person in await cursor.fetchall():
                self._people[user_id] = person
        return self._people

    def template_context(self, run: Run, people: dict[UUID, dict[str, Any]]) -> dict[str, Any]:
        return {
            "user": people.get(run.user_id, {"id": str(run.user_id)}),
            "event": run.context.get("event"),
            "organization": run.context.get("organization"),
            "run": {
                "id": str(run.id),
                "journey_id": str(run.journey_id),
                "data": run.context.get("data", {}),
                "entered_at": run.context.get("entered_at"),
            },
        }

    # -- writing -----------------------------------------------------------------------------------------

    async def save(self, runs: Sequence[Run]) -> None:
        """Store the runs' new state and the steps they took, in the caller's transaction."""
        if runs:
            await self.conn.execute(
                Q["save_runs"],
                {
                    "runs": Jsonb(
                        [
                            {
                                "id": r.id,
                                "status": r.status,
                                "step": r.step,
                                "visit": r.visit,
                                "due_at": r.due_at,
                                "wait_event": r.wait_event,
                                "context": r.context,
                                "attempts": r.attempts,
                                "step_at": r.step_at,
                                "error": r.error,
                                "ended": r.ended,
                            }
                            for r in runs
                        ]
                    ),
                    "now": self.now,
                },
            )
        if self.taken:
            await record_steps(self.conn, self.taken)


async def record_steps(conn: AsyncConnection[Any], taken: Sequence[Taken]) -> None:
    await conn.execute(
        Q["record_steps"],
        {
            "steps": Jsonb(
                [
                    {
                        "run_id": t.run_id,
                        "visit": t.visit,
                        "journey_id": t.journey_id,
                        "version": t.version,
                        "step": t.step,
                        "outcome": t.outcome,
                        "detail": t.detail,
                        "at": t.at,
                    }
                    for t in taken
                ]
            )
        },
    )


@functools.lru_cache(maxsize=4096)
def _predicate(rule_json: str) -> sql.Composed:
    from lunogram_server.journeys.rules import JOURNEY_NODE

    predicate = compile_journey_rule(JOURNEY_NODE.validate_json(rule_json))
    return sql.SQL(Q["evaluate"]).format(predicate=predicate)


async def evaluate(
    conn: AsyncConnection[Any],
    project_id: UUID,
    rule: JourneyNode,
    rows: Sequence[tuple[UUID, dict[str, Any]]],
    now: datetime,
) -> list[bool]:
    """Whether each (user, run context) matches `rule`, in one statement (rules: journeys/rules.py)."""
    if not rows:
        return []
    statement = _predicate(orjson.dumps(rule.model_dump(mode="json", exclude_none=True, by_alias=True)).decode())
    params = {
        "project_id": project_id,
        "rows": Jsonb([[user_id, context] for user_id, context in rows]),
        "now": now,
    }
    try:
        async with conn.transaction():  # a savepoint: a rule the database cannot evaluate fails alone
            cursor = await conn.execute(statement, params)
            hits = {int(n) for (n,) in await cursor.fetchall()}
    except RULE_FAILURES as exc:
        raise RuleFailed(f"rule: {type(exc).__name__}: {exc}".strip()[:500]) from exc
    return [n + 1 in hits for n in range(len(rows))]


async def _scalar(conn: AsyncConnection[Any], query: str, params: dict[str, Any]) -> Any:
    row = await (await conn.execute(query, params)).fetchone()
    return row[0] if row else None


_OFF_LOOP_AT = 64  # rendering this many runs' templates goes to a thread: the loop serves HTTP meanwhile


async def _off_loop(function: Any, first: Any, contexts: list[dict[str, Any]], size: int) -> Any:
    if size >= _OFF_LOOP_AT:
        return await asyncio.to_thread(function, first, contexts)
    return function(first, contexts)


def _render_all(data: dict[str, Any], contexts: list[dict[str, Any]]) -> tuple[list[Any], list[str | None]]:
    values: list[Any] = []
    errors: list[str | None] = []
    for context in contexts:
        try:
            values.append(render_value(data, context))
            errors.append(None)
        except TemplateError as exc:
            values.append(None)
            errors.append(f"template: {exc}")
    return values, errors


def _render_webhooks(
    step: Webhook, contexts: list[dict[str, Any]]
) -> list[tuple[tuple[str, str, dict[str, str], Any] | None, str | None]]:
    out: list[tuple[tuple[str, str, dict[str, str], Any] | None, str | None]] = []
    for context in contexts:
        try:
            url = render(step.url, context).strip()
            headers = {name: render(value, context) for name, value in step.headers.items()}
            body = render_value(step.body, context) if step.body is not None else None
            out.append(((step.method, url, headers, body), None))
        except TemplateError as exc:
            out.append((None, f"template: {exc}"))
    return out
