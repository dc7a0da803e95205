"""Users and organizations: search, a user's profile (identifiers, data, memberships, lists, schedules,
journey runs, messages, timeline), an organization with its members."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from lunogram_server.console import search
from lunogram_server.console.web.base import Signed, page, partial, project_of, render
from lunogram_server.events import service as events
from lunogram_server.journeys import service as journeys
from lunogram_server.lists import service as lists
from lunogram_server.messaging import service as messaging
from lunogram_server.organizations import service as organizations
from lunogram_server.schedules import service as schedules
from lunogram_server.users import service as users

router = APIRouter(prefix="/console", include_in_schema=False)
TIMELINE_PAGE = 50


async def _found(request: Request, kind: str, project_id: UUID, q: str) -> dict[str, Any]:
    async with request.app.state.pool.connection() as conn:
        try:
            found = await (search.users if kind == "users" else search.organizations)(conn, project_id, q)
        except search.SearchError as exc:
            return {"q": q, "mode": None, "results": [], "error": str(exc), "kind": kind}
    return {"q": q, "mode": found.mode, "results": found.results, "error": None, "kind": kind}


@router.get("/users")
async def users_page(request: Request, session: Signed, q: str = Query("", max_length=512)) -> Response:
    return await page(request, "people.html", **(await _found(request, "users", project_of(session), q)))


@router.get("/users/results")
async def users_results(request: Request, session: Signed, q: str = Query("", max_length=512)) -> Response:
    return partial("people_results.html", **(await _found(request, "users", project_of(session), q)))


@router.get("/organizations")
async def organizations_page(request: Request, session: Signed, q: str = Query("", max_length=512)) -> Response:
    return await page(request, "people.html", **(await _found(request, "organizations", project_of(session), q)))


@router.get("/organizations/results")
async def organizations_results(request: Request, session: Signed, q: str = Query("", max_length=512)) -> Response:
    return partial("people_results.html", **(await _found(request, "organizations", project_of(session), q)))


def _missing(request: Request, what: str) -> Response:
    return render(request, "error.html", 404, title="Not found", message=f"{what}: not found in this project")


@router.get("/users/{user_id}")
async def user_page(request: Request, session: Signed, user_id: UUID) -> Response:
    project_id = project_of(session)
    async with request.app.state.pool.connection() as conn:
        text = await users.detail(conn, project_id, user_id=user_id)
        if text is None:
            return _missing(request, f"user {user_id}")
        profile = orjson.loads(text)
        history = orjson.loads(await events.history(conn, "user", project_id, user_id, TIMELINE_PAGE, None) or "{}")
        context = {
            "profile": profile,
            "lists": await lists.of_user(conn, project_id, user_id),
            "schedules": orjson.loads(await schedules.of_profile(conn, project_id, "user", user_id) or "[]"),
            "runs": await journeys.runs_of_user(conn, project_id, user_id, 50),
            "messages": await messaging.messages_of_user(conn, project_id, user_id, 50),
            "subscriptions": await messaging.subscriptions_of(conn, project_id, user_id),
            "history": history,
            "kind": "users",
        }
    return await page(request, "user.html", **context)


Before = Query(..., ge=1, le=2**63 - 1)


@router.get("/users/{profile_id}/timeline")
async def user_timeline(request: Request, session: Signed, profile_id: UUID, before: int = Before) -> Response:
    return await _timeline(request, session, "users", profile_id, before)


@router.get("/organizations/{profile_id}/timeline")
async def organization_timeline(request: Request, session: Signed, profile_id: UUID, before: int = Before) -> Response:
    return await _timeline(request, session, "organizations", profile_id, before)


async def _timeline(request: Request, session: Signed, kind: str, profile_id: UUID, before: int) -> Response:
    async with request.app.state.pool.connection() as conn:
        text = await events.history(
            conn, "user" if kind == "users" else "organization", project_of(session), profile_id, TIMELINE_PAGE, before
        )
    if text is None:
        return _missing(request, f"{kind[:-1]} {profile_id}")
    return partial("timeline_rows.html", history=orjson.loads(text), kind=kind, profile_id=profile_id)


@router.get("/organizations/{organization_id}")
async def organization_page(request: Request, session: Signed, organization_id: UUID) -> Response:
    project_id = project_of(session)
    async with request.app.state.pool.connection() as conn:
        text = await organizations.detail(conn, project_id, organization_id=organization_id)
        if text is None:
            return _missing(request, f"organization {organization_id}")
        history_text = await events.history(conn, "organization", project_id, organization_id, TIMELINE_PAGE, None)
        context = {
            "profile": orjson.loads(text),
            "history": orjson.loads(history_text or "{}"),
            "schedules": orjson.loads(
                await schedules.of_profile(conn, project_id, "organization", organization_id) or "[]"
            ),
            "kind": "organizations",
        }
    return await page(request, "organization.html", **context)
