"""Events: a live stream (polled by htmx every 2 s), the per-name catalogue with counts and samples, and
dead letters with retry."""

from __future__ import annotations

from typing import Literal

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from lunogram_server.console import stats
from lunogram_server.console.web.base import Signed, editor_form, page, partial, project_of, redirect
from lunogram_server.events import service as events

router = APIRouter(prefix="/console", include_in_schema=False)
Kind = Literal["user", "organization"]


@router.get("/events")
async def events_page(request: Request, session: Signed, kind: Kind = "user") -> Response:
    project_id = project_of(session)
    async with request.app.state.pool.connection() as conn:
        recent = await stats.recent(conn, project_id, kind)
        catalogue = await stats.catalogue(conn, project_id)
        dead = orjson.loads(await events.dead_letters(conn, project_id, 50, None))
    return await page(request, "events.html", kind=kind, recent=recent, catalogue=catalogue, dead=dead)


@router.get("/events/stream")
async def stream(request: Request, session: Signed, kind: Kind = "user", after: int = Query(0, ge=0)) -> Response:
    async with request.app.state.pool.connection() as conn:
        recent = await stats.recent(conn, project_of(session), kind)
    return partial("events_stream.html", recent=recent, kind=kind, after=after)


@router.post("/events/dead/{event_id}/retry")
async def retry_dead(request: Request, session: Signed, event_id: int) -> Response:
    await editor_form(request, session, "editor", "retrying a dead letter")
    async with request.app.state.pool.connection() as conn:
        done = await events.retry_dead(conn, project_of(session), event_id)
    if not done:
        return redirect(request, "/console/events#dead", f"event {event_id}: no such dead letter", error=True)
    return redirect(request, "/console/events#dead", f"event {event_id} is due again")
