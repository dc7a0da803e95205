"""Journeys: the index and creation, a journey's page (versions, publish, pause, resume, archive, per-step
counts, runs, validation problems, the dry run), the page that mounts the graph editor bundle, and a run's
path."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from lunogram_server.console.web.base import (
    Signed,
    checked_form,
    editor_form,
    field,
    page,
    project_of,
    raw_field,
    redirect,
    render,
)
from lunogram_server.journeys import service as journeys
from lunogram_server.journeys.models import CreateJourney, JourneySettings, Publish, Simulate
from lunogram_server.messaging import service as messaging

router = APIRouter(prefix="/console", include_in_schema=False)


_NEXT_FIELDS = ("next", "then", "else", "timeout_next", "failure_next", "default")


def _exits(step: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, step key) of every way out of a step: next, then/else, timeouts, branches, variants."""
    found = [(name, step[name]) for name in _NEXT_FIELDS if isinstance(step.get(name), str)]
    for branch in step.get("branches") or []:
        if isinstance(branch, dict) and branch.get("next"):
            found.append((str(branch.get("name") or "branch"), branch["next"]))
    for variant in step.get("variants") or []:
        if isinstance(variant, dict) and variant.get("next"):
            found.append((str(variant.get("name") or "variant"), variant["next"]))
    return found


def ordered_steps(graph: dict[str, Any]) -> list[tuple[str, dict[str, Any], list[tuple[str, str]]]]:
    """The graph's steps in the order a run meets them (breadth first from the entrances), then the rest
    (goals, steps nothing leads to), each with its ways out."""
    steps: dict[str, Any] = graph.get("steps") or {}
    order: list[str] = []
    queue = [key for key, step in steps.items() if step.get("type") == "entrance"]
    while queue:
        key = queue.pop(0)
        if key in order or key not in steps:
            continue
        order.append(key)
        queue += [target for _, target in _exits(steps[key])]
    order += [key for key in steps if key not in order]
    return [(key, steps[key], _exits(steps[key])) for key in order]


def _missing(request: Request, journey_id: UUID) -> Response:
    return render(request, "error.html", 404, title="Not found", message=f"journey {journey_id}: not found")


@router.get("/journeys")
async def journeys_page(request: Request, session: Signed) -> Response:
    async with request.app.state.pool.connection() as conn:
        found = await journeys.page(conn, project_of(session), 200, 0)
    return await page(request, "journeys.html", journeys=found)


@router.post("/journeys")
async def create(request: Request, session: Signed) -> Response:
    form = await editor_form(request, session, "editor", "creating a journey")
    event = field(form, "event")
    trigger = {"kind": "event", "event": event} if event else {"kind": "api"}
    try:
        body = CreateJourney.model_validate(
            {"name": field(form, "name"), "graph": {"steps": {"start": {"type": "entrance", "trigger": trigger}}}}
        )
    except ValueError as exc:
        return redirect(request, "/console/journeys", f"journey: {exc}", error=True)
    async with request.app.state.pool.connection() as conn:
        try:
            made = await journeys.create(conn, project_of(session), body)
        except journeys.JourneyError as exc:
            return redirect(request, "/console/journeys", str(exc), error=True)
    return redirect(request, f"/console/journeys/{made['id']}/editor", "journey created: draw its steps")


async def _journey_context(request: Request, project_id: UUID, journey_id: UUID) -> dict[str, Any] | None:
    async with request.app.state.pool.connection() as conn:
        found = await journeys.detail(conn, project_id, journey_id)
        if found is None:
            return None
        stats = await journeys.stats(conn, project_id, journey_id)
        runs = await journeys.runs_of_journey(conn, project_id, journey_id, None, 50, 0)
        problems = await journeys.validate(conn, project_id, journey_id) if found["draft_graph"] is not None else None
        sends = await messaging.journey_step_stats(conn, project_id, journey_id)
    graph = found["live_graph"] or found["draft_graph"] or {"steps": {}}  # counts are the live version's
    return {
        "journey": found,
        "stats": stats,
        "runs": runs,
        "problems": problems,
        "sends": sends,
        "steps": ordered_steps(graph),
    }


@router.get("/journeys/{journey_id}")
async def journey_page(request: Request, session: Signed, journey_id: UUID) -> Response:
    context = await _journey_context(request, project_of(session), journey_id)
    if context is None:
        return _missing(request, journey_id)
    return await page(request, "journey.html", simulation=None, simulate_error=None, simulate_for="", **context)


@router.get("/journeys/{journey_id}/editor")
async def editor_page(request: Request, session: Signed, journey_id: UUID) -> Response:
    async with request.app.state.pool.connection() as conn:
        found = await journeys.detail(conn, project_of(session), journey_id)
    if found is None:
        return _missing(request, journey_id)
    read_only = not session.may("editor") or found["status"] == "archived"
    return await page(request, "journey_editor.html", journey=found, read_only=read_only)


@router.post("/journeys/{journey_id}/publish")
async def publish(request: Request, session: Signed, journey_id: UUID) -> Response:
    await editor_form(request, session, "editor", "publishing a journey")
    async with request.app.state.pool.connection() as conn:
        try:
            done = await journeys.publish(conn, project_of(session), journey_id, Publish())
        except journeys.JourneyError as exc:
            return redirect(request, f"/console/journeys/{journey_id}", str(exc), error=True)
    return redirect(request, f"/console/journeys/{journey_id}", f"version {done['live_version']} is live")


@router.post("/journeys/{journey_id}/status")
async def set_status(request: Request, session: Signed, journey_id: UUID) -> Response:
    form = await editor_form(request, session, "editor", "changing a journey")
    action = field(form, "action")
    if action not in ("pause", "resume", "archive"):
        return redirect(request, f"/console/journeys/{journey_id}", "action: pause, resume or archive", error=True)
    async with request.app.state.pool.connection() as conn:
        try:
            done = await journeys.set_status(conn, project_of(session), journey_id, action)
        except journeys.JourneyError as exc:
            return redirect(request, f"/console/journeys/{journey_id}", str(exc), error=True)
    return redirect(request, f"/console/journeys/{journey_id}", f"journey {done['status']}")


@router.post("/journeys/{journey_id}/duplicate")
async def duplicate(request: Request, session: Signed, journey_id: UUID) -> Response:
    await editor_form(request, session, "editor", "duplicating a journey")
    async with request.app.state.pool.connection() as conn:
        try:
            made = await journeys.duplicate(conn, project_of(session), journey_id)
        except journeys.JourneyError as exc:
            return redirect(request, f"/console/journeys/{journey_id}", str(exc), error=True)
    return redirect(request, f"/console/journeys/{made['id']}", "a draft copy")


@router.post("/journeys/{journey_id}/settings")
async def settings(request: Request, session: Signed, journey_id: UUID) -> Response:
    form = await editor_form(request, session, "editor", "changing a journey")
    values: dict[str, Any] = {"name": field(form, "name") or None, "description": raw_field(form, "description")}
    values["timezone"] = field(form, "timezone") or None
    values["reentry"] = field(form, "reentry") or None
    try:
        body = JourneySettings.model_validate(values)
    except ValueError as exc:
        return redirect(request, f"/console/journeys/{journey_id}", f"settings: {exc}", error=True)
    async with request.app.state.pool.connection() as conn:
        try:
            await journeys.update(conn, project_of(session), journey_id, body)
        except journeys.JourneyError as exc:
            return redirect(request, f"/console/journeys/{journey_id}", str(exc), error=True)
    return redirect(request, f"/console/journeys/{journey_id}", "settings saved")


@router.post("/journeys/{journey_id}/simulate")
async def simulate(request: Request, session: Signed, journey_id: UUID) -> Response:
    """The dry run for a user (viewers too: it changes nothing)."""
    form = await checked_form(request, session)
    project_id = project_of(session)
    who = field(form, "external_id")
    event_name = field(form, "event")
    result, error = None, None
    try:
        body = Simulate.model_validate(
            {
                "identifier": [{"external_id": who, "source": field(form, "source") or "default"}],
                "event": {"name": event_name, "data": orjson.loads(raw_field(form, "event_data") or "{}")}
                if event_name
                else None,
            }
        )
    except (ValueError, orjson.JSONDecodeError) as exc:
        error = f"dry run: {exc}"
    else:
        async with request.app.state.pool.connection() as conn:
            try:
                result = await journeys.simulate(conn, project_id, journey_id, body)
            except journeys.JourneyError as exc:
                error = str(exc)
    context = await _journey_context(request, project_id, journey_id)
    if context is None:
        return _missing(request, journey_id)
    return await page(request, "journey.html", simulation=result, simulate_error=error, simulate_for=who, **context)


@router.get("/runs/{run_id}")
async def run_page(request: Request, session: Signed, run_id: UUID) -> Response:
    async with request.app.state.pool.connection() as conn:
        run = await journeys.run_detail(conn, project_of(session), run_id)
        journey = None if run is None else await journeys.detail(conn, project_of(session), run["journey_id"])
    if run is None:
        return render(request, "error.html", 404, title="Not found", message=f"run {run_id}: not found")
    return await page(request, "run.html", run=run, journey=journey)
