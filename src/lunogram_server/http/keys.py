"""/api/admin/keys: the project's API keys (list prefixes, create, revoke). A key is shown once, when made;
only its SHA-256 is stored. Revoked keys stop working within LUNOGRAM_KEY_CACHE_SECONDS on every server."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from lunogram_server.http.auth import Operator
from lunogram_server.http.body import LimitedRoute, accept, body_schema
from lunogram_server.http.client import ERRORS, PROBLEM, json_response
from lunogram_server.http.problems import ProblemError
from lunogram_server.projects import service as projects
from lunogram_server.projects.service import Permission

router = APIRouter(prefix="/api/admin/keys", tags=["keys"], route_class=LimitedRoute)
MAX_KEYS = 1000  # keys listed at most (active and revoked)


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["public", "secret"]
    name: str = Field(default="", max_length=255, pattern=r"^[^\x00]*$")
    allow: list[Literal["broadcast", "delete", "read"]] = Field(default_factory=list, max_length=3)


class KeyOut(BaseModel):
    id: UUID
    kind: Literal["public", "secret"]
    key_prefix: str
    name: str
    allow: list[str]
    created_at: datetime
    revoked_at: datetime | None


class NewKeyOut(BaseModel):
    id: UUID
    kind: Literal["public", "secret"]
    key: str  # shown this once
    allow: list[str]


def _out(row: dict[str, object]) -> KeyOut:
    return KeyOut.model_validate({k: row[k] for k in KeyOut.model_fields})


@router.get("", response_model=list[KeyOut], responses=ERRORS, summary="The project's keys (prefixes only)")
async def list_keys(auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        rows = await projects.list_keys(conn, auth.project_id)
    body = "[" + ",".join(_out(row).model_dump_json() for row in rows[:MAX_KEYS]) + "]"
    return json_response(body)


@router.post(
    "",
    status_code=201,
    response_model=NewKeyOut,
    responses=ERRORS,
    openapi_extra=body_schema(CreateKey),
    summary="Create a key: the answer is the only time it is shown",
)
async def create_key(auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, CreateKey)
    if body.kind == "secret" and body.allow:
        raise ProblemError(400, "allow: a secret key already has every permission; allow is for public keys")
    async with request.app.state.pool.connection() as conn:
        made = await projects.create_key(conn, auth.project_id, body.kind, name=body.name, allow=list(body.allow))
    assert made is not None
    return json_response(NewKeyOut(id=made.id, kind=made.kind, key=made.key, allow=made.allow).model_dump_json(), 201)


@router.delete(
    "/{key_id}",
    status_code=204,
    response_class=Response,
    responses={**ERRORS, 404: PROBLEM},
    summary="Revoke a key (servers stop accepting it within LUNOGRAM_KEY_CACHE_SECONDS)",
)
async def revoke_key(key_id: UUID, auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        if not await projects.revoke_project_key(conn, auth.project_id, key_id):
            raise ProblemError(404, f"key {key_id}: no active key with this id in this project")
    return Response(status_code=204)
