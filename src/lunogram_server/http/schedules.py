"""/api/client/{users,organizations}/scheduled: schedules as the SDKs create and cancel them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from psycopg import AsyncConnection
from starlette.responses import Response

from lunogram_server.db.retry import run_write
from lunogram_server.events.ingest import BatchError, check_data_size
from lunogram_server.events.models import Kind
from lunogram_server.http.body import accept, body_schema
from lunogram_server.http.client import DELETE_ERRORS, ERRORS, json_response
from lunogram_server.http.idempotency import respond
from lunogram_server.http.problems import ProblemError
from lunogram_server.projects.service import Permission
from lunogram_server.schedules import service as schedules
from lunogram_server.schedules.models import DeleteSchedule, ScheduledAccepted, UpsertSchedule
from lunogram_server.schedules.plan import PlanError

router = APIRouter(prefix="/client", tags=["client"])


async def _upsert(request: Request, kind: Kind) -> Response:
    auth, body = await accept(request, Permission.WRITE, UpsertSchedule)
    limits = request.app.state.settings.limits
    limit = limits.max_name_length
    if body.data:  # each firing is an event with this data: the event data cap applies
        try:
            check_data_size(body.data, limits, "data")
        except BatchError as exc:
            raise ProblemError(exc.status, exc.detail) from None

    async def work(conn: AsyncConnection[Any]) -> Response:
        try:
            accepted = await schedules.upsert(conn, auth.project_id, kind, body, limit)
        except PlanError as exc:
            raise ProblemError(400, str(exc)) from None
        return json_response(accepted.model_dump_json(), status=202)

    return await respond(request, auth, work)


async def _delete(request: Request, kind: Kind) -> Response:
    auth, body = await accept(request, Permission.DELETE, DeleteSchedule)
    if await run_write(request.app.state.pool, lambda conn: schedules.delete(conn, auth.project_id, kind, body)) == 0:
        raise ProblemError(404, f"name: no schedule {body.name!r} on the {kind} these identifiers name")
    return Response(status_code=200)


UPSERT = {
    "status_code": 202,
    "response_model": ScheduledAccepted,
    "responses": ERRORS,
    "openapi_extra": body_schema(UpsertSchedule),
}
DELETE = {
    "status_code": 200,
    "response_class": Response,
    "responses": {200: {"description": "cancelled (no body)"}, **DELETE_ERRORS},
    "openapi_extra": body_schema(DeleteSchedule),
}


@router.post("/users/scheduled", summary="Create or replace a user's schedule", **UPSERT)  # type: ignore[arg-type]
async def upsert_user_schedule(request: Request) -> Response:
    return await _upsert(request, "user")


@router.delete("/users/scheduled", summary="Cancel a user's schedule", **DELETE)  # type: ignore[arg-type]
async def delete_user_schedule(request: Request) -> Response:
    return await _delete(request, "user")


@router.post(
    "/organizations/scheduled",
    summary="Create or replace an organization's schedule",
    **UPSERT,  # type: ignore[arg-type]
)
async def upsert_organization_schedule(request: Request) -> Response:
    return await _upsert(request, "organization")


@router.delete(
    "/organizations/scheduled",
    summary="Cancel an organization's schedule",
    **DELETE,  # type: ignore[arg-type]
)
async def delete_organization_schedule(request: Request) -> Response:
    return await _delete(request, "organization")
