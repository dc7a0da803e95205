"""/api/admin: operator reads (secret keys, or public keys widened with `read`). Project-scoped like all else."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import orjson
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from lunogram_server.console import search
from lunogram_server.events import service as events
from lunogram_server.events.models import DeadLetterPage, EventPage, Kind
from lunogram_server.http.auth import Operator, Reader
from lunogram_server.http.body import LimitedRoute
from lunogram_server.http.client import ERRORS, PROBLEM, json_response
from lunogram_server.http.problems import ProblemError
from lunogram_server.identity import DEFAULT_SOURCE
from lunogram_server.organizations import service as organizations
from lunogram_server.organizations.models import OrganizationDetail
from lunogram_server.schedules import service as schedules
from lunogram_server.schedules.models import ScheduleDetail
from lunogram_server.users import service as users
from lunogram_server.users.models import UserDetail

router = APIRouter(prefix="/api/admin", tags=["admin"], route_class=LimitedRoute)
READ_ERRORS: dict[int | str, dict[str, str]] = {**ERRORS, 404: PROBLEM}

Source = Annotated[str, Query(min_length=1, max_length=255, pattern=r"^[^\x00]+$")]
ExternalId = Annotated[str, Query(min_length=1, max_length=512, pattern=r"^[^\x00]+$")]


def _found(text: str | None, what: str) -> Response:
    if text is None:
        raise ProblemError(404, f"{what}: not found in this project")
    return json_response(text)


SearchText = Annotated[
    str, Query(max_length=512, description="identifier or e-mail prefix, `key=value`, `{json}`, or an id")
]
SearchLimit = Annotated[int, Query(ge=1, le=100)]


class Match(BaseModel):
    id: UUID
    source: str | None
    external_id: str | None
    email: str | None = None  # users
    name: str | None = None  # organizations
    created_at: datetime


class SearchPage(BaseModel):
    """`mode`: how `q` was read (recent, id, data, email, identifier); at most `limit` results."""

    mode: str
    results: list[Match]


def _search_answer(found: search.Found) -> Response:
    return json_response(orjson.dumps({"mode": found.mode, "results": found.results}, default=str).decode())


@router.get("/users/search", response_model=SearchPage, responses=ERRORS, summary="Find users")
async def search_users(auth: Reader, request: Request, q: SearchText = "", limit: SearchLimit = 50) -> Response:
    """By identifier prefix (any source) or e-mail prefix, by data (`plan=pro`, `{"plan": "pro"}`: JSONB
    containment) or id; an empty `q` lists the newest users. Each way is one bounded index scan."""
    async with request.app.state.pool.connection() as conn:
        try:
            return _search_answer(await search.users(conn, auth.project_id, q, limit))
        except search.SearchError as exc:
            raise ProblemError(400, str(exc)) from None


@router.get("/organizations/search", response_model=SearchPage, responses=ERRORS, summary="Find organizations")
async def search_organizations(auth: Reader, request: Request, q: SearchText = "", limit: SearchLimit = 50) -> Response:
    """By identifier or name prefix, data or id, as for users."""
    async with request.app.state.pool.connection() as conn:
        try:
            return _search_answer(await search.organizations(conn, auth.project_id, q, limit))
        except search.SearchError as exc:
            raise ProblemError(400, str(exc)) from None


@router.get("/users/{user_id}", response_model=UserDetail, responses=READ_ERRORS, summary="A user by id")
async def get_user(user_id: UUID, auth: Reader, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        return _found(await users.detail(conn, auth.project_id, user_id=user_id), f"user {user_id}")


@router.get("/users", response_model=UserDetail, responses=READ_ERRORS, summary="A user by external id")
async def find_user(
    auth: Reader, request: Request, external_id: ExternalId, source: Source = DEFAULT_SOURCE
) -> Response:
    async with request.app.state.pool.connection() as conn:
        text = await users.detail(conn, auth.project_id, source=source, external_id=external_id)
    return _found(text, f"user with {source}:{external_id}")


@router.get(
    "/organizations/{organization_id}",
    response_model=OrganizationDetail,
    responses=READ_ERRORS,
    summary="An organization by id",
)
async def get_organization(organization_id: UUID, auth: Reader, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        text = await organizations.detail(conn, auth.project_id, organization_id=organization_id)
    return _found(text, f"organization {organization_id}")


@router.get(
    "/organizations",
    response_model=OrganizationDetail,
    responses=READ_ERRORS,
    summary="An organization by external id",
)
async def find_organization(
    auth: Reader, request: Request, external_id: ExternalId, source: Source = DEFAULT_SOURCE
) -> Response:
    async with request.app.state.pool.connection() as conn:
        text = await organizations.detail(conn, auth.project_id, source=source, external_id=external_id)
    return _found(text, f"organization with {source}:{external_id}")


Limit = Annotated[int, Query(ge=1, le=1000, description="events per page")]
BIGINT_MAX = 2**63 - 1  # event ids are PostgreSQL bigints: a larger one is a 400, not a database error
Before = Annotated[int | None, Query(ge=1, le=BIGINT_MAX, description="`next_before` of the previous page")]


def _profile_reads(kind: Kind, plural: str, label: str) -> None:
    """The history and schedules of one kind of profile: the same routes for users and organizations."""

    @router.get(
        f"/{plural}/{{profile_id}}/events",
        response_model=EventPage,
        responses=READ_ERRORS,
        summary=f"{label} events, newest first",
        name=f"{kind}_events",
    )
    async def profile_events(
        profile_id: UUID, auth: Reader, request: Request, limit: Limit = 50, before: Before = None
    ) -> Response:
        async with request.app.state.pool.connection() as conn:
            text = await events.history(conn, kind, auth.project_id, profile_id, limit, before)
        return _found(text, f"{kind} {profile_id}")

    @router.get(
        f"/{plural}/{{profile_id}}/schedules",
        response_model=list[ScheduleDetail],
        responses=READ_ERRORS,
        summary=f"{label} schedules, soonest first",
        name=f"{kind}_schedules",
    )
    async def profile_schedules(profile_id: UUID, auth: Reader, request: Request) -> Response:
        async with request.app.state.pool.connection() as conn:
            text = await schedules.of_profile(conn, auth.project_id, kind, profile_id)
        return _found(text, f"{kind} {profile_id}")


_profile_reads("user", "users", "A user's")
_profile_reads("organization", "organizations", "An organization's")


@router.get(
    "/events/dead",
    response_model=DeadLetterPage,
    responses=ERRORS,
    summary="Dead letters: events parked after repeated failures, newest first",
)
async def dead_letters(auth: Reader, request: Request, limit: Limit = 50, before: Before = None) -> Response:
    async with request.app.state.pool.connection() as conn:
        return json_response(await events.dead_letters(conn, auth.project_id, limit, before))


@router.post(
    "/events/dead/{event_id}/retry",
    status_code=204,
    response_class=Response,
    responses=READ_ERRORS,
    summary="Retry a dead letter (secret key)",
)
async def retry_dead_letter(
    event_id: Annotated[int, Path(ge=1, le=BIGINT_MAX)], auth: Operator, request: Request
) -> Response:
    async with request.app.state.pool.connection() as conn:
        if not await events.retry_dead(conn, auth.project_id, event_id):
            raise ProblemError(404, f"event {event_id}: no dead letter with this id in this project")
    return Response(status_code=204)
