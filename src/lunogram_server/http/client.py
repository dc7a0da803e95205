"""/api/client: the routes the Lunogram SDKs speak (docs/api.md "Routes").

Thin: `accept` checks the key, the body and its shape; a service does the work in one round trip.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import APIRouter, Request
from psycopg import AsyncConnection
from starlette.responses import Response

from lunogram_server.db.retry import run_write
from lunogram_server.events import ingest
from lunogram_server.events.models import Event, Kind
from lunogram_server.http.auth import forbid_unless
from lunogram_server.http.body import accept, accept_json, body_schema, validation_error
from lunogram_server.http.idempotency import respond
from lunogram_server.http.problems import ProblemError
from lunogram_server.identity import IdentifierRef
from lunogram_server.identity.models import stored_size_at_least
from lunogram_server.organizations import service as organizations
from lunogram_server.organizations.models import AddMember, Organization, RemoveMember, UpsertOrganization
from lunogram_server.projects.service import Permission
from lunogram_server.users import service as users
from lunogram_server.users.models import UpsertUser, User

router = APIRouter(prefix="/client", tags=["client"])

PROBLEM = {"description": "problem JSON: `{title, detail, status}`"}
ERRORS: dict[int | str, dict[str, str]] = {s: PROBLEM for s in (400, 401, 403, 413, 415)}
DELETE_ERRORS: dict[int | str, dict[str, str]] = {**ERRORS, 404: PROBLEM}
# 404: a repeat under an Idempotency-Key whose profile has been deleted since; 409: a key reused
UPSERT_ERRORS: dict[int | str, dict[str, str]] = {**ERRORS, 404: PROBLEM, 409: PROBLEM}


def json_response(text: str, status: int = 200) -> Response:
    return Response(text.encode(), status_code=status, media_type="application/json")


def refuse_oversized(request: Request, parts: Iterable[tuple[str, dict[str, Any] | None]]) -> None:
    """413 for `data` (or `metadata`) that cannot fit LUNOGRAM_MAX_PROFILE_DATA_BYTES even on its own, before
    it travels to the database (which checks exactly, after merging: identity/sql/limits.sql). A refused
    5 MB value kept the batch it was in, and the other projects' upserts in it, waiting ~50 ms for
    PostgreSQL to parse it. A body within the cap cannot hold such a value: nothing is walked then."""
    cap = request.app.state.settings.limits.max_profile_data_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) <= cap:
        return
    for where, value in parts:
        size = stored_size_at_least(value) if value else 0
        if size > cap:
            raise ProblemError(
                413,
                f"{where}: at least {size} bytes once stored; at most {cap} bytes are stored "
                "(LUNOGRAM_MAX_PROFILE_DATA_BYTES)",
            )


def _profile_parts(body: UpsertUser | UpsertOrganization) -> Iterator[tuple[str, dict[str, Any] | None]]:
    yield "data", body.data
    for n, identifier in enumerate(body.identifier):
        yield f"identifier[{n}].metadata", identifier.metadata


@router.post(
    "/users",
    response_model=User,
    responses=UPSERT_ERRORS,
    openapi_extra=body_schema(UpsertUser),
    summary="Create or update a user",
)
async def upsert_user(request: Request) -> Response:
    auth, body = await accept(request, Permission.WRITE, UpsertUser)
    refuse_oversized(request, _profile_parts(body))
    public = auth.kind == "public"  # answers only what was sent; merges only anonymous-only profiles

    async def together() -> Response:
        coalescer = request.app.state.upserts.users
        return json_response(await users.upsert_together(coalescer, auth.project_id, body, public=public))

    async def keyed(key: str, digest: bytes) -> tuple[int, str | None]:
        coalescer = request.app.state.upserts.keyed_users
        return await users.keyed_upsert_together(coalescer, auth.project_id, key, digest, body, public=public)

    return await respond(request, auth, unkeyed=together, keyed=keyed)


@router.delete(
    "/users",
    status_code=204,
    responses=DELETE_ERRORS,
    openapi_extra=body_schema(IdentifierRef),
    summary="Delete a user",
)
async def delete_user(request: Request) -> Response:
    auth, body = await accept(request, Permission.DELETE, IdentifierRef)
    if await run_write(request.app.state.pool, lambda conn: users.delete(conn, auth.project_id, body.identifier)) == 0:
        raise ProblemError(404, "identifier: no user in this project has these identifiers")
    return Response(status_code=204)


@router.post(
    "/organizations",
    response_model=Organization,
    responses=UPSERT_ERRORS,
    openapi_extra=body_schema(UpsertOrganization),
    summary="Create or update an organization",
)
async def upsert_organization(request: Request) -> Response:
    auth, body = await accept(request, Permission.WRITE, UpsertOrganization)
    refuse_oversized(request, _profile_parts(body))
    public = auth.kind == "public"

    async def together() -> Response:
        coalescer = request.app.state.upserts.organizations
        return json_response(await organizations.upsert_together(coalescer, auth.project_id, body, public=public))

    async def keyed(key: str, digest: bytes) -> tuple[int, str | None]:
        coalescer = request.app.state.upserts.keyed_organizations
        return await organizations.keyed_upsert_together(coalescer, auth.project_id, key, digest, body, public=public)

    return await respond(request, auth, unkeyed=together, keyed=keyed)


@router.delete(
    "/organizations",
    status_code=204,
    responses=DELETE_ERRORS,
    openapi_extra=body_schema(IdentifierRef),
    summary="Delete an organization",
)
async def delete_organization(request: Request) -> Response:
    auth, body = await accept(request, Permission.DELETE, IdentifierRef)
    pool = request.app.state.pool
    if await run_write(pool, lambda conn: organizations.delete(conn, auth.project_id, body.identifier)) == 0:
        raise ProblemError(404, "identifier: no organization in this project has these identifiers")
    return Response(status_code=204)


@router.post(
    "/organizations/users",
    status_code=200,
    response_class=Response,
    responses={200: {"description": "membership stored (no body)"}, **ERRORS},
    openapi_extra=body_schema(AddMember),
    summary="Add a user to an organization",
)
async def add_member(request: Request) -> Response:
    auth, body = await accept(request, Permission.WRITE, AddMember)
    refuse_oversized(request, [("data", body.data)])

    async def work(conn: AsyncConnection[Any]) -> Response:
        await organizations.add_member(conn, auth.project_id, body)
        return Response(status_code=200)

    return await respond(request, auth, work)


_MISSING = {
    "organization": "organization.identifier: no organization in this project has these identifiers",
    "user": "user.identifier: no user in this project has these identifiers",
    "membership": "the user is not a member of the organization",
}


@router.delete(
    "/organizations/users",
    status_code=204,
    responses=DELETE_ERRORS,
    openapi_extra=body_schema(RemoveMember),
    summary="Remove a user from an organization",
)
async def remove_member(request: Request) -> Response:
    auth, body = await accept(request, Permission.DELETE, RemoveMember)
    outcome = await run_write(
        request.app.state.pool, lambda conn: organizations.remove_member(conn, auth.project_id, body)
    )
    if outcome != "removed":
        raise ProblemError(404, _MISSING[outcome])
    return Response(status_code=204)


ACCEPTED: dict[int | str, dict[str, str]] = {
    202: {"description": "accepted: stored durably, processed asynchronously (no body)"}
}


async def _accept_events(request: Request, kind: Kind) -> Response:
    """Validate the whole batch, then store it in one statement; 202 only after the commit."""
    auth, value = await accept_json(request, Permission.WRITE)
    declared = request.headers.get("content-length", "")  # exact once the body was read (http/body.py)
    try:
        batch = ingest.validate_batch(
            value, request.app.state.settings.limits, int(declared) if declared.isdigit() else None
        )
    except ingest.ValidationError as exc:
        raise validation_error(exc) from None
    except ingest.BatchError as exc:
        raise ProblemError(exc.status, exc.detail) from None
    broadcast = ingest.first_broadcast(batch)
    if broadcast is not None:
        forbid_unless(auth, Permission.BROADCAST, f"[{broadcast}].match")

    async def work(conn: AsyncConnection[Any]) -> Response:
        await ingest.enqueue(conn, auth.project_id, kind, batch)
        return Response(status_code=202)

    return await respond(request, auth, work)


@router.post(
    "/users/events",
    status_code=202,
    response_class=Response,
    responses={**ACCEPTED, **ERRORS},
    openapi_extra=body_schema(Event, array=True),
    summary="Post a batch of user events",
)
async def post_user_events(request: Request) -> Response:
    return await _accept_events(request, "user")


@router.post(
    "/organizations/events",
    status_code=202,
    response_class=Response,
    responses={**ACCEPTED, **ERRORS},
    openapi_extra=body_schema(Event, array=True),
    summary="Post a batch of organization events",
)
async def post_organization_events(request: Request) -> Response:
    return await _accept_events(request, "organization")
