"""/api/admin/journeys: journeys for operators (secret keys), project-scoped, problem JSON errors."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from lunogram_server.http.auth import Operator
from lunogram_server.http.body import LimitedRoute, accept, body_schema
from lunogram_server.http.client import ERRORS, PROBLEM, json_response
from lunogram_server.http.problems import ProblemError
from lunogram_server.journeys import service as journeys
from lunogram_server.journeys.models import ApiEntrance, CreateJourney, JourneySettings, Publish, SaveDraft, Simulate
from lunogram_server.projects.service import Permission

router = APIRouter(prefix="/api/admin", tags=["journeys"], route_class=LimitedRoute)
FOUND: dict[int | str, dict[str, str]] = {**ERRORS, 404: PROBLEM}
CHANGE: dict[int | str, dict[str, str]] = {**FOUND, 409: PROBLEM}
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
RunStatus = Literal[
    "active", "waiting", "calling", "completed", "exited", "converted", "failed", "merged", "deleted", "cancelled"
]


def _json(value: Any, status: int = 200) -> Response:
    return json_response(orjson.dumps(value, default=str).decode(), status)


def _problem(exc: journeys.JourneyError) -> ProblemError:
    return ProblemError(exc.status, str(exc))


@router.post(
    "/journeys",
    status_code=201,
    responses=ERRORS,
    openapi_extra=body_schema(CreateJourney),
    summary="Create a journey (a draft: version 1, not live until published)",
)
async def create_journey(auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, CreateJourney)
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await journeys.create(conn, auth.project_id, body), 201)
        except journeys.JourneyError as exc:
            raise _problem(exc) from None


@router.get("/journeys", responses=ERRORS, summary="Journeys, newest first")
async def list_journeys(auth: Operator, request: Request, limit: Limit = 100, offset: Offset = 0) -> Response:
    async with request.app.state.pool.connection() as conn:
        return _json(await journeys.page(conn, auth.project_id, limit, offset))


@router.get("/journeys/{journey_id}", responses=FOUND, summary="A journey: settings, versions, live and draft graphs")
async def get_journey(journey_id: UUID, auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        found = await journeys.detail(conn, auth.project_id, journey_id)
    if found is None:
        raise ProblemError(404, f"journey {journey_id}: not found in this project")
    return _json(found)


@router.get(
    "/journeys/{journey_id}/versions/{version}",
    responses=FOUND,
    summary="One version of a journey: its graph and when it was published (null: the draft)",
)
async def get_journey_version(
    journey_id: UUID, version: Annotated[int, Path(ge=1, le=2_147_483_647)], auth: Operator, request: Request
) -> Response:
    async with request.app.state.pool.connection() as conn:
        found = await journeys.version_of(conn, auth.project_id, journey_id, version)
    if found is None:
        raise ProblemError(404, f"journey {journey_id}: no version {version} in this project")
    return _json(found)


@router.patch(
    "/journeys/{journey_id}",
    responses=FOUND,
    openapi_extra=body_schema(JourneySettings),
    summary="Change a journey's name, description, timezone or re-entry policy (at once, every version)",
)
async def update_journey(journey_id: UUID, auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, JourneySettings)
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await journeys.update(conn, auth.project_id, journey_id, body))
        except journeys.JourneyError as exc:
            raise _problem(exc) from None


@router.put(
    "/journeys/{journey_id}/draft",
    responses=CHANGE,
    openapi_extra=body_schema(SaveDraft),
    summary="Save the draft graph (a published journey gets a new draft version)",
)
async def save_draft(journey_id: UUID, auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, SaveDraft)
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await journeys.save_draft(conn, auth.project_id, journey_id, body.graph))
        except journeys.JourneyError as exc:
            raise _problem(exc) from None


@router.post(
    "/journeys/{journey_id}/validate",
    responses=FOUND,
    summary="What stops the latest version from being published, by step and field",
)
async def validate_journey(journey_id: UUID, auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await journeys.validate(conn, auth.project_id, journey_id))
        except journeys.JourneyError as exc:
            raise _problem(exc) from None


@router.post(
    "/journeys/{journey_id}/publish",
    responses=CHANGE,
    openapi_extra=body_schema(Publish),
    summary="Publish the draft: new entries go to it; runs finish on their version unless step_map moves them",
)
async def publish_journey(journey_id: UUID, auth: Operator, request: Request) -> Response:
    body = Publish()
    if (await request.body()).strip():
        _, body = await accept(request, Permission.WRITE, Publish)
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await journeys.publish(conn, auth.project_id, journey_id, body))
        except journeys.JourneyError as exc:
            raise _problem(exc) from None


async def _status(journey_id: UUID, auth: Operator, request: Request, action: str) -> Response:
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await journeys.set_status(conn, auth.project_id, journey_id, action))
        except journeys.JourneyError as exc:
            raise _problem(exc) from None


@router.post("/journeys/{journey_id}/pause", responses=CHANGE, summary="Pause: nothing enters, runs stand still")
async def pause_journey(journey_id: UUID, auth: Operator, request: Request) -> Response:
    return await _status(journey_id, auth, request, "pause")


@router.post("/journeys/{journey_id}/resume", responses=CHANGE, summary="Resume a paused journey")
async def resume_journey(journey_id: UUID, auth: Operator, request: Request) -> Response:
    return await _status(journey_id, auth, request, "resume")


@router.post(
    "/journeys/{journey_id}/archive", responses=CHANGE, summary="Archive: nothing enters, runs end as cancelled"
)
async def archive_journey(journey_id: UUID, auth: Operator, request: Request) -> Response:
    return await _status(journey_id, auth, request, "archive")


@router.post(
    "/journeys/{journey_id}/duplicate", status_code=201, responses=FOUND, summary="A draft copy of the latest version"
)
async def duplicate_journey(journey_id: UUID, auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await journeys.duplicate(conn, auth.project_id, journey_id), 201)
        except journeys.JourneyError as exc:
            raise _problem(exc) from None


@router.post(
    "/journeys/{journey_id}/entrances",
    status_code=202,
    responses=CHANGE,
    openapi_extra=body_schema(ApiEntrance),
    summary="Enter one user through the live version's API entrance, once per key",
)
async def enter_journey(journey_id: UUID, auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, ApiEntrance)
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await journeys.enter(conn, auth.project_id, journey_id, body), 202)
        except journeys.JourneyError as exc:
            raise _problem(exc) from None


@router.post(
    "/journeys/{journey_id}/simulate",
    responses=FOUND,
    openapi_extra=body_schema(Simulate),
    summary="Dry run: the path a user would take now, with the reason at each step; changes nothing",
)
async def simulate_journey(journey_id: UUID, auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, Simulate)
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await journeys.simulate(conn, auth.project_id, journey_id, body))
        except journeys.JourneyError as exc:
            raise _problem(exc) from None


@router.get("/journeys/{journey_id}/stats", responses=FOUND, summary="Per version: entered, per step, how runs ended")
async def journey_stats(journey_id: UUID, auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await journeys.stats(conn, auth.project_id, journey_id))
        except journeys.JourneyError as exc:
            raise _problem(exc) from None


@router.get("/journeys/{journey_id}/runs", responses=FOUND, summary="A journey's runs, newest first")
async def journey_runs(
    journey_id: UUID,
    auth: Operator,
    request: Request,
    status: RunStatus | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await journeys.runs_of_journey(conn, auth.project_id, journey_id, status, limit, offset))
        except journeys.JourneyError as exc:
            raise _problem(exc) from None


@router.get("/journey-runs/{run_id}", responses=FOUND, summary="A run: each step it took, when and why")
async def journey_run(run_id: UUID, auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        found = await journeys.run_detail(conn, auth.project_id, run_id)
    if found is None:
        raise ProblemError(404, f"run {run_id}: not found in this project")
    return _json(found)


@router.get("/users/{user_id}/journeys", responses=ERRORS, summary="A user's journey runs with their paths")
async def user_runs(user_id: UUID, auth: Operator, request: Request, limit: Limit = 100) -> Response:
    async with request.app.state.pool.connection() as conn:
        return _json(await journeys.runs_of_user(conn, auth.project_id, user_id, limit))
