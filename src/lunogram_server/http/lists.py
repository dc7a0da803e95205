"""/api/admin/lists: lists for operators (secret keys only), project-scoped, problem JSON errors."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from lunogram_server.http.auth import Operator
from lunogram_server.http.body import LimitedRoute, accept, body_schema, read_body
from lunogram_server.http.client import ERRORS, PROBLEM, json_response
from lunogram_server.http.problems import ProblemError
from lunogram_server.lists import imports
from lunogram_server.lists import service as lists
from lunogram_server.lists.models import (
    CreateList,
    ImportStatus,
    ListDetail,
    ListSummary,
    MemberChange,
    MemberCount,
    MemberPage,
    PreviewCount,
    PreviewList,
    UpdateList,
)
from lunogram_server.projects.service import Permission

router = APIRouter(prefix="/api/admin/lists", tags=["lists"], route_class=LimitedRoute)
FOUND_ERRORS: dict[int | str, dict[str, str]] = {**ERRORS, 404: PROBLEM}
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
Cursor = Annotated[str | None, Query(max_length=100, description="`next_cursor` of the previous page")]


def _missing(list_id: UUID) -> ProblemError:
    return ProblemError(404, f"list {list_id}: not found in this project")


def _refuse(exc: lists.RuleError) -> ProblemError:
    return ProblemError(400, str(exc))


@router.post(
    "",
    status_code=201,
    response_model=ListDetail,
    responses=ERRORS,
    openapi_extra=body_schema(CreateList),
    summary="Create a list: with a rule, rule-based (filled in the background); without, static",
)
async def create_list(auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, CreateList)
    async with request.app.state.pool.connection() as conn:
        try:
            return json_response(await lists.create(conn, auth.project_id, body), 201)
        except lists.RuleError as exc:
            raise _refuse(exc) from None


@router.post(
    "/preview",
    response_model=PreviewCount,
    responses=ERRORS,
    openapi_extra=body_schema(PreviewList),
    summary="Count the users a rule matches now, without saving it (at most 1,000,000; 10 s at most)",
)
async def preview_list(auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.READ, PreviewList)
    async with request.app.state.pool.connection() as conn:
        try:
            counted = await lists.preview(conn, auth.project_id, body.rule, body.list_id)
        except lists.RuleError as exc:
            raise _refuse(exc) from None
    return json_response(PreviewCount(**counted).model_dump_json())


@router.get("", response_model=list[ListSummary], responses=ERRORS, summary="Lists, newest first")
async def list_lists(auth: Operator, request: Request, limit: Limit = 100, offset: Offset = 0) -> Response:
    async with request.app.state.pool.connection() as conn:
        return json_response(await lists.page(conn, auth.project_id, limit, offset))


@router.get("/{list_id}", response_model=ListDetail, responses=FOUND_ERRORS, summary="A list with its count")
async def get_list(list_id: UUID, auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        text = await lists.detail(conn, auth.project_id, list_id)
    if text is None:
        raise _missing(list_id)
    return json_response(text)


@router.patch(
    "/{list_id}",
    response_model=ListDetail,
    responses=FOUND_ERRORS,
    openapi_extra=body_schema(UpdateList),
    summary="Rename a list or change its rule (members are recomputed in the background)",
)
async def update_list(list_id: UUID, auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, UpdateList)
    async with request.app.state.pool.connection() as conn:
        try:
            text = await lists.update(conn, auth.project_id, list_id, body)
        except lists.RuleError as exc:
            raise _refuse(exc) from None
    if text is None:
        raise _missing(list_id)
    return json_response(text)


@router.delete("/{list_id}", status_code=204, response_class=Response, responses=FOUND_ERRORS, summary="Delete")
async def delete_list(list_id: UUID, auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        if not await lists.delete(conn, auth.project_id, list_id):
            raise _missing(list_id)
    return Response(status_code=204)


@router.get("/{list_id}/members", response_model=MemberPage, responses=FOUND_ERRORS, summary="Members, newest first")
async def list_members(
    list_id: UUID, auth: Operator, request: Request, limit: Limit = 100, cursor: Cursor = None
) -> Response:
    before = _parse_cursor(cursor) if cursor else None
    async with request.app.state.pool.connection() as conn:
        if await lists.detail(conn, auth.project_id, list_id) is None:
            raise _missing(list_id)
        return json_response(await lists.members(conn, list_id, limit, before))


def _parse_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        at, _, user_id = cursor.partition("|")
        return datetime.fromisoformat(at.replace(" ", "T")), UUID(user_id)
    except ValueError:
        raise ProblemError(400, "cursor: must be a next_cursor from a previous page") from None


async def _change(list_id: UUID, auth: Operator, request: Request, *, add: bool) -> Response:
    _, body = await accept(request, Permission.WRITE, MemberChange)
    async with request.app.state.pool.connection() as conn, conn.transaction():
        kind = await lists.kind_of(conn, auth.project_id, list_id)
        if kind is None:
            raise _missing(list_id)
        if kind != "static":
            raise ProblemError(409, f"list {list_id}: members of a rule list follow its rule; they cannot be edited")
        changed = await lists.change_members(conn, auth.project_id, list_id, body, add=add)
    return json_response(MemberCount(changed=changed).model_dump_json())


@router.post(
    "/{list_id}/members",
    response_model=MemberCount,
    responses={**FOUND_ERRORS, 409: PROBLEM},
    openapi_extra=body_schema(MemberChange),
    summary="Add users to a static list (users named for the first time are created)",
)
async def add_members(list_id: UUID, auth: Operator, request: Request) -> Response:
    return await _change(list_id, auth, request, add=True)


@router.delete(
    "/{list_id}/members",
    response_model=MemberCount,
    responses={**FOUND_ERRORS, 409: PROBLEM},
    openapi_extra=body_schema(MemberChange),
    summary="Remove users from a static list",
)
async def remove_members(list_id: UUID, auth: Operator, request: Request) -> Response:
    return await _change(list_id, auth, request, add=False)


_CSV = {"requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}}


@router.post(
    "/{list_id}/imports",
    status_code=202,
    response_model=ImportStatus,
    responses={**FOUND_ERRORS, 409: PROBLEM},
    openapi_extra=_CSV,
    summary="Import users into a static list from CSV (external_id[,source][,data columns]); applied in the "
    "background, bad rows reported by line",
)
async def import_csv(list_id: UUID, auth: Operator, request: Request) -> Response:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in ("text/csv", "application/csv"):
        raise ProblemError(415, f"Content-Type: send text/csv, not {media!r}")
    limits = request.app.state.settings.limits
    raw = await read_body(request, limits.max_body_bytes)
    try:  # CPU-bound (a file of up to LUNOGRAM_MAX_BODY_BYTES): in a thread, never on the event loop
        parsed = await asyncio.to_thread(imports.parse, raw, limits.max_profile_data_bytes)
    except imports.BadFile as exc:
        raise ProblemError(400, str(exc)) from None
    async with request.app.state.pool.connection() as conn, conn.transaction():
        kind = await lists.kind_of(conn, auth.project_id, list_id)
        if kind is None:
            raise _missing(list_id)
        if kind != "static":
            raise ProblemError(
                409, f"list {list_id}: members of a rule list follow its rule; import into a static list"
            )
        text = await imports.create(conn, auth.project_id, list_id, parsed)
    return json_response(text, 202)


@router.get(
    "/{list_id}/imports/{import_id}",
    response_model=ImportStatus,
    responses=FOUND_ERRORS,
    summary="An import's progress and its per-row errors",
)
async def import_status(list_id: UUID, import_id: UUID, auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        text = await imports.detail(conn, auth.project_id, list_id, import_id)
    if text is None:
        raise ProblemError(404, f"import {import_id}: not found for list {list_id} in this project")
    return json_response(text)
