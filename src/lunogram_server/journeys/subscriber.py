"""Journeys' part of the event pipeline: called in the event worker's transaction with each applied batch
(reactions.py), so entering, resolving a wait and converting on a goal commit with the event, once.

Per batch: one lookup of the triggers (entrances, goals, waits) on the batch's event names; nothing else
when none matches, which is the common case. Then, in this order: goals (runs already there convert),
waits (runs already waiting move on), entrances (new runs; an event never resolves a wait of the run it
starts)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from lunogram_server.events.models import ProcessedEvent
from lunogram_server.journeys.engine import Q, RuleFailed, evaluate
from lunogram_server.journeys.graphs import GRAPHS
from lunogram_server.journeys.models import WaitForEvent
from lunogram_server.journeys.rules import JOURNEY_NODE, JourneyNode

log = structlog.get_logger("lunogram.journeys")


@dataclass(frozen=True)
class _Trigger:
    id: int
    project_id: UUID
    journey_id: UUID
    version: int
    step: str
    kind: str
    event_name: str
    rule: JourneyNode | None


def event_context(event: ProcessedEvent) -> dict[str, Any]:
    return {"name": event.name, "data": event.data, "accepted_at": event.accepted_at.isoformat()}


async def _matches(
    conn: AsyncConnection[Any],
    project_id: UUID,
    rule: JourneyNode,
    rows: list[tuple[UUID, dict[str, Any]]],
    now: datetime,
) -> list[bool]:
    """A rule's matches; a rule the database cannot evaluate matches nothing (logged): one journey's bad rule
    must not hold back the events of the project."""
    try:
        return await evaluate(conn, project_id, rule, rows, now)
    except RuleFailed as exc:
        log.warning("journey rule failed", project_id=str(project_id), error=str(exc))
        return [False] * len(rows)


class JourneysSubscriber:
    async def on_events(self, conn: AsyncConnection[Any], events: Sequence[ProcessedEvent]) -> None:
        projects = list({e.project_id for e in events})
        names = list({e.name for e in events})
        cursor = await conn.execute(Q["event_triggers"], {"projects": projects, "names": names})
        rows = await cursor.fetchall()
        if not rows:
            return
        triggers = [
            _Trigger(i, p, j, v, s, k, n, None if rule is None else JOURNEY_NODE.validate_python(rule))
            for i, p, j, v, s, k, n, rule in rows
        ]
        now = datetime.now(UTC)
        user_events = [e for e in events if e.kind == "user"]
        woke = False
        goals = [t for t in triggers if t.kind == "goal_event"]
        if goals and user_events:
            woke |= await self._goals(conn, goals, user_events, now)
        if any(t.kind == "wait_event" for t in triggers) and user_events:
            woke |= await self._waits(conn, user_events, names, now)
        entrances = [t for t in triggers if t.kind in ("event", "organization_event")]
        if entrances:
            await self._enter(conn, entrances, events, now)  # lunogram_journeys_enter notifies itself
        if woke:
            await conn.execute(Q["notify"])

    async def _goals(
        self, conn: AsyncConnection[Any], goals: list[_Trigger], events: list[ProcessedEvent], now: datetime
    ) -> bool:
        users = list({e.target_id for e in events})
        versions = list({(t.journey_id, t.version) for t in goals})
        cursor = await conn.execute(
            Q["goal_runs"],
            {"users": users, "journeys": [j for j, _ in versions], "versions": [v for _, v in versions]},
        )
        runs = await cursor.fetchall()
        converted: dict[UUID, tuple[str, dict[str, Any]]] = {}
        for goal in goals:
            candidates = [
                (run_id, project_id, user_id, context, event)
                for run_id, project_id, journey_id, version, user_id, context in runs
                if journey_id == goal.journey_id and version == goal.version and run_id not in converted
                for event in events
                if event.target_id == user_id and event.name == goal.event_name
            ]
            if not candidates:
                continue
            if goal.rule is None:
                hits = [True] * len(candidates)
            else:
                rows = [
                    (user_id, {**(context or {}), "event": event_context(event)})
                    for _, _, user_id, context, event in candidates
                ]
                hits = await _matches(conn, goal.project_id, goal.rule, rows, now)
            for (run_id, _, _, _, event), hit in zip(candidates, hits, strict=True):
                if hit and run_id not in converted:
                    converted[run_id] = (goal.step, {"event": event.name})
        if not converted:
            return False
        await conn.execute(
            Q["convert"],
            {
                "run_ids": list(converted),
                "goals": [goal for goal, _ in converted.values()],
                "details": [Jsonb(detail) for _, detail in converted.values()],
                "now": now,
            },
        )
        return False  # converted runs have ended: nothing for the runners

    async def _waits(
        self, conn: AsyncConnection[Any], events: list[ProcessedEvent], names: list[str], now: datetime
    ) -> bool:
        users = list({e.target_id for e in events})
        cursor = await conn.execute(Q["waiting_runs"], {"users": users, "names": names})
        waiting = await cursor.fetchall()
        if not waiting:
            return False
        graphs = await GRAPHS.get(conn, {(j, v) for _, _, j, v, *_ in waiting})
        resolved: list[tuple[UUID, int, str, str | None, dict[str, Any]]] = []
        for (
            run_id,
            project_id,
            journey_id,
            version,
            user_id,
            step_key,
            visit,
            context,
            entered_at,
            wait_event,
        ) in waiting:
            step = graphs[(journey_id, version)].steps.get(step_key) if (journey_id, version) in graphs else None
            if not isinstance(step, WaitForEvent):
                continue
            # only events accepted after the run began, in accepted order: the first that matches (one that
            # came before the run reached the wait was found when it arrived there: engine.py)
            for event in sorted(events, key=lambda e: e.inbox_id):
                if event.target_id != user_id or event.name != wait_event or event.accepted_at < entered_at:
                    continue
                received = event_context(event)
                if step.rule is not None:
                    context_now = {**(context or {}), "event": received}
                    if not (await _matches(conn, project_id, step.rule, [(user_id, context_now)], now))[0]:
                        continue
                resolved.append((run_id, visit, step_key, step.next, received))
                break
        if not resolved:
            return False
        await conn.execute(
            Q["resolve_waits"],
            {
                "run_ids": [r[0] for r in resolved],
                "visits": [r[1] for r in resolved],
                "wait_steps": [r[2] for r in resolved],
                "next_steps": [r[3] for r in resolved],
                "events": [Jsonb(r[4]) for r in resolved],
                "now": now,
            },
        )
        return True

    async def _enter(
        self, conn: AsyncConnection[Any], entrances: list[_Trigger], events: Sequence[ProcessedEvent], now: datetime
    ) -> None:
        wanted: list[tuple[int, UUID, str, dict[str, Any]]] = []  # trigger, user, entry key, context
        for trigger in entrances:
            rows: list[tuple[UUID, str, dict[str, Any]]] = []
            for event in events:
                if event.project_id != trigger.project_id or event.name != trigger.event_name:
                    continue
                if trigger.kind == "event" and event.kind == "user":
                    context = {"event": event_context(event)}
                    rows.append((event.target_id, f"event:{event.inbox_id}:{event.target_id}", context))
                elif trigger.kind == "organization_event" and event.kind == "organization":
                    organization = {"id": str(event.target_id)}
                    context = {"event": event_context(event), "organization": organization}
                    for member in event.member_ids:
                        rows.append((member, f"event:{event.inbox_id}:{event.target_id}:{member}", context))
            if not rows:
                continue
            if trigger.kind == "organization_event":
                rows = await self._with_organizations(conn, rows)
            if trigger.rule is not None:
                hits = await _matches(conn, trigger.project_id, trigger.rule, [(u, c) for u, _, c in rows], now)
                rows = [row for row, hit in zip(rows, hits, strict=True) if hit]
            wanted += [(trigger.id, user, key, context) for user, key, context in rows]
        if wanted:
            await conn.execute(
                Q["enter"],
                {"entries": Jsonb([list(w) for w in wanted]), "at": now},
            )

    async def _with_organizations(
        self, conn: AsyncConnection[Any], rows: list[tuple[UUID, str, dict[str, Any]]]
    ) -> list[tuple[UUID, str, dict[str, Any]]]:
        """The organization (name and data) in the context: templates and rules read it."""
        ids = list({row[2]["organization"]["id"] for row in rows})
        cursor = await conn.execute(Q["organizations"], {"ids": ids})
        found = {oid: {"id": oid, "name": name, "data": data} for oid, name, data in await cursor.fetchall()}
        return [
            (u, k, {**c, "organization": found.get(c["organization"]["id"], c["organization"])}) for u, k, c in rows
        ]
