"""Journeys for operators: create, edit (drafts), validate, publish, pause/resume, archive, duplicate, enter
through the API, read runs and figures, and the dry run. Every function is scoped by project.

Versions: a journey's graph is versioned. Saving edits the draft (the latest version while it is
unpublished) or, when the latest is published, starts a new draft. Publishing makes the draft the live
version: new entries go to it; runs already going finish on the version they entered, unless the publish
maps their steps to the new version's (`step_map`), which moves them there.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from lunogram_server.db import fetch_scalar, load_queries
from lunogram_server.identity import normalize
from lunogram_server.journeys.engine import Run
from lunogram_server.journeys.graph import Problem, check_graph
from lunogram_server.journeys.models import (
    ApiEntrance,
    CreateJourney,
    EnterJourney,
    Entrance,
    EventTrigger,
    Goal,
    Graph,
    JourneySettings,
    ListTrigger,
    OrganizationEventTrigger,
    Publish,
    ScheduleTrigger,
    Simulate,
    WaitForEvent,
)
from lunogram_server.journeys.runner import prepare
from lunogram_server.journeys.timing import zone

Q = load_queries("lunogram_server.journeys", "admin.sql")


class JourneyError(ValueError):
    """A request that cannot be done (400 unless `status` says otherwise), with what is wrong."""

    def __init__(self, message: str, status: int = 400, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.problems = list(problems)


def _graph_json(graph: Graph) -> dict[str, Any]:
    return graph.model_dump(mode="json", exclude_none=True, by_alias=True)


async def _settings_params(body: JourneySettings) -> dict[str, Any]:
    params: dict[str, Any] = body.model_dump(exclude_unset=True, exclude={"graph", "cooldown"})
    if body.timezone is not None and zone(body.timezone, "").key != body.timezone:
        raise JourneyError(f"timezone: {body.timezone!r} is not an IANA timezone")
    if "cooldown" in body.model_fields_set:
        params["cooldown_seconds"] = body.cooldown.seconds if body.cooldown is not None else None
    if (
        params.get("reentry") == "cooldown"
        and not params.get("cooldown_seconds")
        and "cooldown" in body.model_fields_set
    ):
        raise JourneyError("cooldown: needed (and more than 0) for reentry 'cooldown'")
    return params


async def create(conn: AsyncConnection[Any], project_id: UUID, body: CreateJourney) -> dict[str, Any]:
    params = await _settings_params(body)
    if body.reentry == "cooldown" and not params.get("cooldown_seconds"):
        raise JourneyError("cooldown: needed (and more than 0) for reentry 'cooldown'")
    async with conn.transaction():
        journey_id = await fetch_scalar(
            conn,
            Q["create"],
            {
                "project_id": project_id,
                "name": body.name,
                "description": body.description or "",
                "timezone": body.timezone or "UTC",
                "reentry": body.reentry or "one_at_a_time",
                "cooldown_seconds": params.get("cooldown_seconds"),
                "graph": Jsonb(_graph_json(body.graph)),
            },
        )
    found = await detail(conn, project_id, journey_id)
    assert found is not None
    return found


async def detail(conn: AsyncConnection[Any], project_id: UUID, journey_id: UUID) -> dict[str, Any] | None:
    cursor = conn.cursor(row_factory=dict_row)
    row = await (await cursor.execute(Q["detail"], {"project_id": project_id, "id": journey_id})).fetchone()
    return None if row is None else dict(row["journey"])


async def version_of(
    conn: AsyncConnection[Any], project_id: UUID, journey_id: UUID, version: int
) -> dict[str, Any] | None:
    """One version: {journey_id, version, graph, published_at, created_at, updated_at}, or None."""
    result = await fetch_scalar(conn, Q["version_of"], {"project_id": project_id, "id": journey_id, "version": version})
    return None if result is None else dict(result)


async def page(conn: AsyncConnection[Any], project_id: UUID, limit: int, offset: int) -> list[dict[str, Any]]:
    cursor = await conn.execute(Q["page"], {"project_id": project_id, "limit": limit, "offset": offset})
    return [row[0] for row in await cursor.fetchall()]


async def _lock(conn: AsyncConnection[Any], project_id: UUID, journey_id: UUID) -> dict[str, Any]:
    cursor = conn.cursor(row_factory=dict_row)
    row = await (await cursor.execute(Q["lock"], {"project_id": project_id, "id": journey_id})).fetchone()
    if row is None:
        raise JourneyError(f"journey {journey_id}: not found in this project", 404)
    return dict(row)


async def update(
    conn: AsyncConnection[Any], project_id: UUID, journey_id: UUID, body: JourneySettings
) -> dict[str, Any]:
    params = await _settings_params(body)
    async with conn.transaction():
        current = await _lock(conn, project_id, journey_id)
        reentry = params.get("reentry", current["reentry"])
        cooldown = params.get("cooldown_seconds", current["cooldown_seconds"])
        if reentry == "cooldown" and not cooldown:
            raise JourneyError("cooldown: needed (and more than 0) for reentry 'cooldown'")
        await conn.execute(
            Q["update"],
            {
                "id": journey_id,
                "name": params.get("name", current["name"]),
                "description": params.get("description", current["description"]),
                "timezone": params.get("timezone", current["timezone"]),
                "reentry": reentry,
                "cooldown_seconds": cooldown,
            },
        )
    found = await detail(conn, project_id, journey_id)
    assert found is not None
    return found


async def save_draft(conn: AsyncConnection[Any], project_id: UUID, journey_id: UUID, graph: Graph) -> dict[str, Any]:
    async with conn.transaction():
        current = await _lock(conn, project_id, journey_id)
        if current["status"] == "archived":
            raise JourneyError(f"journey {journey_id}: archived; duplicate it to edit a copy", 409)
        await conn.execute(Q["save_draft"], {"id": journey_id, "graph": Jsonb(_graph_json(graph))})
    found = await detail(conn, project_id, journey_id)
    assert found is not None
    return found


async def problems_of(conn: AsyncConnection[Any], project_id: UUID, journey_id: UUID, graph: Graph) -> list[Problem]:
    """Everything that stops `graph` from being published, references to other things included."""
    problems, refs = check_graph(graph, journey_id)
    if refs["lists"] or refs["static_lists"]:
        wanted = list({*refs["lists"], *refs["static_lists"]})
        cursor = await conn.execute(Q["lists_of"], {"project_id": project_id, "ids": wanted})
        kinds = {list_id: kind for list_id, kind in await cursor.fetchall()}
        for key, step in graph.steps.items():
            for field, list_id in _list_refs(step):
                if list_id not in kinds:
                    problems.append(Problem(key, field, f"list {list_id} does not exist in this project"))
                elif (
                    field == "list_id"
                    and step.type in ("add_to_list", "remove_from_list")
                    and kinds[list_id] != "static"
                ):
                    problems.append(Problem(key, field, f"list {list_id} is a rule list: only static lists take adds"))
    if refs["journeys"]:
        cursor = await conn.execute(Q["journeys_of"], {"project_id": project_id, "ids": refs["journeys"]})
        known = {row[0] for row in await cursor.fetchall()}
        for key, step in graph.steps.items():
            if isinstance(step, EnterJourney) and step.journey_id not in known:
                problems.append(Problem(key, "journey_id", f"journey {step.journey_id} does not exist in this project"))
    return problems


def _list_refs(step: Any) -> list[tuple[str, UUID]]:
    found = []
    if step.type == "entrance" and step.trigger.kind == "list":
        found.append(("trigger.list_id", step.trigger.list_id))
    if step.type in ("add_to_list", "remove_from_list", "goal") and getattr(step, "list_id", None) is not None:
        found.append(("list_id", step.list_id))
    for field, rule in _rules(step):
        for list_id in _rule_lists(rule):
            found.append((field, list_id))
    return found


def _rules(step: Any) -> list[tuple[str, Any]]:
    from lunogram_server.journeys.graph import rules_of

    return list(rules_of(step))


def _rule_lists(rule: Any) -> list[UUID]:
    if getattr(rule, "type", None) == "list":
        return [rule.list_id]
    return [list_id for child in getattr(rule, "rules", ()) for list_id in _rule_lists(child)]


async def validate(conn: AsyncConnection[Any], project_id: UUID, journey_id: UUID) -> dict[str, Any]:
    current = await _lock_read(conn, project_id, journey_id)
    graph = Graph.model_validate(current["graph"])
    problems = await problems_of(conn, project_id, journey_id, graph)
    return {
        "version": current["latest_version"],
        "valid": not problems,
        "problems": [{"step": p.step, "field": p.field, "message": p.message} for p in problems],
    }


async def _lock_read(conn: AsyncConnection[Any], project_id: UUID, journey_id: UUID) -> dict[str, Any]:
    cursor = conn.cursor(row_factory=dict_row)
    row = await (await cursor.execute(Q["latest"], {"project_id": project_id, "id": journey_id})).fetchone()
    if row is None:
        raise JourneyError(f"journey {journey_id}: not found in this project", 404)
    return dict(row)


def _triggers(graph: Graph) -> list[dict[str, Any]]:
    """The rows of journey_triggers for a version's entrances, goals and waits."""
    rows = []
    for key, step in graph.steps.items():
        base: dict[str, Any] = {
            "step": key,
            "next_step": None,
            "event_name": None,
            "list_id": None,
            "list_change": None,
            "schedule_kind": None,
            "schedule_name": None,
            "offset_seconds": None,
            "rule": None,
        }
        if isinstance(step, Entrance):
            trigger = step.trigger
            row: dict[str, Any] = {**base, "kind": trigger.kind, "next_step": step.next}
            if isinstance(trigger, EventTrigger | OrganizationEventTrigger):
                row["event_name"] = trigger.event
                row["rule"] = None if trigger.rule is None else trigger.rule.model_dump(mode="json", exclude_none=True)
            elif isinstance(trigger, ListTrigger):
                row["list_id"], row["list_change"] = trigger.list_id, trigger.on
            elif isinstance(trigger, ScheduleTrigger):
                row["schedule_kind"], row["schedule_name"] = trigger.target, trigger.name
                row["offset_seconds"] = trigger.offset.seconds
            rows.append(row)
        elif isinstance(step, Goal):
            if step.event is not None:
                goal_rule = None if step.rule is None else step.rule.model_dump(mode="json", exclude_none=True)
                rows.append({**base, "kind": "goal_event", "event_name": step.event, "rule": goal_rule})
            else:
                rows.append({**base, "kind": "goal_list", "list_id": step.list_id, "list_change": "entered"})
        elif isinstance(step, WaitForEvent):
            rows.append({**base, "kind": "wait_event", "event_name": step.event})
    return rows


async def publish(conn: AsyncConnection[Any], project_id: UUID, journey_id: UUID, body: Publish) -> dict[str, Any]:
    async with conn.transaction():
        current = await _lock(conn, project_id, journey_id)
        if current["status"] == "archived":
            raise JourneyError(f"journey {journey_id}: archived; duplicate it to publish a copy", 409)
        latest = await _lock_read(conn, project_id, journey_id)
        if latest["published_at"] is not None:
            raise JourneyError(
                f"journey {journey_id}: version {latest['latest_version']} is published already; save a draft first",
                409,
            )
        graph = Graph.model_validate(latest["graph"])
        problems = await problems_of(conn, project_id, journey_id, graph)
        if problems:
            raise JourneyError("; ".join(str(p) for p in problems[:20]), 400, problems)
        version, previous = latest["latest_version"], current["live_version"]
        if body.step_map:
            if previous is None:
                raise JourneyError("step_map: there is no live version to move runs from")
            old_graph = Graph.model_validate(
                await fetch_scalar(conn, Q["graph_of"], {"id": journey_id, "version": previous})
            )
            for old, new in body.step_map.items():
                if old not in old_graph.steps:
                    raise JourneyError(f"step_map.{old}: no step {old!r} in version {previous}")
                if new not in graph.steps or isinstance(graph.steps[new], Entrance | Goal):
                    raise JourneyError(f"step_map.{old}: no step {new!r} runs can be on in version {version}")
        await conn.execute(Q["publish_version"], {"id": journey_id, "version": version})
        await conn.execute(Q["retire_entrances"], {"id": journey_id})
        for row in _triggers(graph):
            live = row["kind"] in ("event", "organization_event", "list", "schedule", "api")
            await conn.execute(
                Q["add_trigger"],
                {
                    **row,
                    "rule": None if row["rule"] is None else Jsonb(row["rule"]),
                    "project_id": project_id,
                    "journey_id": journey_id,
                    "version": version,
                    "live": live,
                },
            )
        if body.step_map and previous is not None:
            await conn.execute(
                Q["move_runs"],
                {
                    "id": journey_id,
                    "old": previous,
                    "new": version,
                    "from_steps": list(body.step_map),
                    "to_steps": list(body.step_map.values()),
                },
            )
        await conn.execute(Q["plan_schedules"], {"id": journey_id, "version": version})
        await conn.execute(Q["start_backfills"], {"id": journey_id, "version": version})
        await conn.execute(Q["go_live"], {"id": journey_id, "version": version})
    found = await detail(conn, project_id, journey_id)
    assert found is not None
    return found


async def set_status(conn: AsyncConnection[Any], project_id: UUID, journey_id: UUID, action: str) -> dict[str, Any]:
    """pause, resume or archive."""
    async with conn.transaction():
        current = await _lock(conn, project_id, journey_id)
        status = current["status"]
        if action == "pause":
            if status != "live":
                raise JourneyError(f"journey {journey_id}: only a live journey can be paused (it is {status})", 409)
            await conn.execute(Q["pause"], {"id": journey_id})
        elif action == "resume":
            if status != "paused":
                raise JourneyError(f"journey {journey_id}: only a paused journey can be resumed (it is {status})", 409)
            await conn.execute(Q["resume"], {"id": journey_id})
        else:
            if status == "archived":
                raise JourneyError(f"journey {journey_id}: archived already", 409)
            await conn.execute(Q["archive"], {"id": journey_id})
    found = await detail(conn, project_id, journey_id)
    assert found is not None
    return found


async def duplicate(conn: AsyncConnection[Any], project_id: UUID, journey_id: UUID) -> dict[str, Any]:
    async with conn.transaction():
        await _lock(conn, project_id, journey_id)
        new_id = await fetch_scalar(conn, Q["duplicate"], {"id": journey_id})
    found = await detail(conn, project_id, new_id)
    assert found is not None
    return found


async def enter(conn: AsyncConnection[Any], project_id: UUID, journey_id: UUID, body: ApiEntrance) -> dict[str, Any]:
    """Enter one user through an API entrance, once per `key`: {run_id, entered}."""
    async with conn.transaction():
        cursor = await conn.execute(Q["api_triggers"], {"project_id": project_id, "id": journey_id})
        triggers = {step: trigger_id for trigger_id, step in await cursor.fetchall()}
        status = await fetch_scalar(conn, Q["status_of"], {"project_id": project_id, "id": journey_id})
        if status is None:
            raise JourneyError(f"journey {journey_id}: not found in this project", 404)
        if status != "live":
            raise JourneyError(f"journey {journey_id}: not live (it is {status}); nothing enters it", 409)
        if not triggers:
            raise JourneyError(f"journey {journey_id}: its live version has no API entrance", 409)
        if body.entrance is not None:
            if body.entrance not in triggers:
                raise JourneyError(f"entrance: no API entrance {body.entrance!r} in the live version")
            trigger = triggers[body.entrance]
        else:
            trigger = triggers[min(triggers)]
        user_id = await fetch_scalar(
            conn, Q["resolve_user"], {"project_id": project_id, "identifiers": Jsonb(normalize(body.identifier))}
        )
        key = f"api:{body.key}"
        await conn.execute(
            Q["enter_one"],
            {
                "trigger": trigger,
                "user": user_id,
                "key": key,
                "context": Jsonb({"data": body.data}),
                "at": datetime.now(UTC),
            },
        )
        cursor = await conn.execute(Q["run_by_key"], {"id": journey_id, "key": key})
        row = await cursor.fetchone()
    return {"run_id": None if row is None else row[0], "user_id": user_id, "entered": row is not None}


async def stats(conn: AsyncConnection[Any], project_id: UUID, journey_id: UUID) -> dict[str, Any]:
    await _lock_read(conn, project_id, journey_id)
    result = await fetch_scalar(conn, Q["stats"], {"id": journey_id})
    return dict(result)


async def runs_of_journey(
    conn: AsyncConnection[Any], project_id: UUID, journey_id: UUID, status: str | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    await _lock_read(conn, project_id, journey_id)
    cursor = await conn.execute(
        Q["runs_of_journey"], {"id": journey_id, "status": status, "limit": limit, "offset": offset}
    )
    return [row[0] for row in await cursor.fetchall()]


async def run_detail(conn: AsyncConnection[Any], project_id: UUID, run_id: UUID) -> dict[str, Any] | None:
    row = await fetch_scalar(conn, Q["run_detail"], {"project_id": project_id, "id": run_id})
    return None if row is None else dict(row)


async def runs_of_user(conn: AsyncConnection[Any], project_id: UUID, user_id: UUID, limit: int) -> list[dict[str, Any]]:
    cursor = await conn.execute(Q["runs_of_user"], {"project_id": project_id, "user_id": user_id, "limit": limit})
    return [row[0] for row in await cursor.fetchall()]


async def simulate(conn: AsyncConnection[Any], project_id: UUID, journey_id: UUID, body: Simulate) -> dict[str, Any]:
    """The path the user would take now through the live version (or the draft when nothing is live), with
    the reason at each step. Everything happens in a transaction that is rolled back: nothing changes."""
    cursor = conn.cursor(row_factory=dict_row)
    row = await (await cursor.execute(Q["simulation_graph"], {"project_id": project_id, "id": journey_id})).fetchone()
    if row is None:
        raise JourneyError(f"journey {journey_id}: not found in this project", 404)
    graph = Graph.model_validate(row["graph"])
    entrances = [k for k, s in graph.steps.items() if isinstance(s, Entrance)]
    if body.entrance is not None and body.entrance not in entrances:
        raise JourneyError(f"entrance: no entrance step {body.entrance!r} in version {row['version']}")
    if not entrances:
        raise JourneyError(f"journey {journey_id}: version {row['version']} has no entrance")
    start = body.entrance or entrances[0]
    entrance = graph.steps[start]
    assert isinstance(entrance, Entrance)
    now = body.at or datetime.now(UTC)
    try:
        async with conn.transaction(force_rollback=True):
            user_id = await fetch_scalar(
                conn, Q["find_user"], {"project_id": project_id, "identifiers": Jsonb(normalize(body.identifier))}
            )
            if user_id is None:
                raise JourneyError("identifier: names no user of this project", 404)
            context: dict[str, Any] = {"data": body.data, "entered_at": now.isoformat(), "visited": [start]}
            if body.event is not None:
                context["event"] = {"name": body.event.get("name"), "data": body.event.get("data") or {}}
            path: list[dict[str, Any]] = []
            trigger_rule = getattr(entrance.trigger, "rule", None)
            if trigger_rule is not None:
                from lunogram_server.journeys.engine import evaluate

                matched = (await evaluate(conn, project_id, trigger_rule, [(user_id, context)], now))[0]
                path.append(
                    {
                        "step": start,
                        "outcome": "entered" if matched else "not_entered",
                        "detail": {"matched": matched},
                        "at": now.isoformat(),
                    }
                )
                if not matched:
                    return {"version": row["version"], "user_id": user_id, "path": path, "end": "not_entered"}
            else:
                path.append({"step": start, "outcome": "entered", "detail": None, "at": now.isoformat()})
            if entrance.next is None:
                return {"version": row["version"], "user_id": user_id, "path": path, "end": "completed"}
            run = Run(
                id=UUID(int=0),
                project_id=project_id,
                journey_id=journey_id,
                version=row["version"],
                user_id=user_id,
                status="active",
                step=entrance.next,
                visit=1,
                context=context,
                attempts=0,
                step_at=now,
                entered_at=now,
            )
            advance = await prepare(conn, [run], now, dry=True)
            advance.graphs[(journey_id, row["version"])] = graph  # a draft is not cached
            await advance.run([run])
            path += [
                {"step": t.step, "outcome": t.outcome, "detail": t.detail, "at": t.at.isoformat()}
                for t in advance.taken
            ]
            end = run.status if run.ended else ("waiting" if path[-1]["outcome"] == "waits_for_event" else "going")
            return {"version": row["version"], "user_id": user_id, "path": path, "end": end}
    except JourneyError:
        raise
