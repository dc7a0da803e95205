"""/api/admin/templates and /api/admin/snippets: message templates for operators (secret keys only).

Saves are validated as a whole (every field parses as Liquid, names known filters and existing snippets);
a refusal is a 400 whose `errors` carry each field with its line and column. The preview renders a saved
template for a real user in a worker thread (rendering is CPU work) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated
from uuid import UUID

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from lunogram_server.http.auth import Operator
from lunogram_server.http.body import LimitedRoute, accept, body_schema
from lunogram_server.http.client import ERRORS, PROBLEM, json_response
from lunogram_server.http.problems import TITLES, ProblemError
from lunogram_server.messaging import templates_service as service
from lunogram_server.messaging.template_models import (
    CreateSnippet,
    CreateTemplate,
    PreviewTemplate,
    RenderedMessage,
    SnippetDetail,
    SnippetSummary,
    TemplateDetail,
    TemplateSource,
    TemplateSummary,
    UpdateSnippet,
    UpdateTemplate,
    Validated,
)
from lunogram_server.messaging.templates import (
    SNIPPET_NAME,
    Channel,
    RenderError,
    SourceProblem,
)
from lunogram_server.projects.service import Permission

router = APIRouter(prefix="/api/admin/templates", tags=["templates"], route_class=LimitedRoute)
snippets_router = APIRouter(prefix="/api/admin/snippets", tags=["templates"], route_class=LimitedRoute)

FOUND_ERRORS: dict[int | str, dict[str, str]] = {**ERRORS, 404: PROBLEM}
SAVE_ERRORS: dict[int | str, dict[str, str]] = {**FOUND_ERRORS, 409: PROBLEM}
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


def _missing(template_id: UUID) -> ProblemError:
    return ProblemError(404, f"template {template_id}: not found in this project")


def _snippet_missing(name: str) -> ProblemError:
    return ProblemError(404, f"snippet {name[:100]!r}: not found in this project")


def _snippet_name(name: str) -> str:
    """A name no snippet can have (a NUL, a space, too long) is simply not found."""
    if not SNIPPET_NAME.match(name):
        raise _snippet_missing(name)
    return name


def _invalid(problems: list[SourceProblem]) -> Response:
    detail = "; ".join(str(p) for p in problems[:10])
    if len(problems) > 10:
        detail += f"; and {len(problems) - 10} more"
    errors: list[dict[str, str | int | None]] = [
        {"field": p.field, "rule": p.rule, "line": p.line, "column": p.column} for p in problems
    ]
    body = {"title": TITLES[400], "detail": detail, "status": 400, "errors": errors}
    return Response(orjson.dumps(body), status_code=400, media_type="application/json")


async def _save(work: Awaitable[Response]) -> Response:
    """Run a save; its refusals as problem JSON."""
    try:
        return await work
    except service.TemplateInvalid as exc:
        return _invalid(exc.problems)
    except service.ShapeError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors]) from None
    except service.Conflict as exc:
        raise ProblemError(409, str(exc)) from None


# --- templates --------------------------------------------------------------------------------------------------


@router.post(
    "",
    status_code=201,
    response_model=TemplateDetail,
    responses={**ERRORS, 409: PROBLEM},
    openapi_extra=body_schema(CreateTemplate),
    summary="Create a template: a channel and per-locale variants, each field a Liquid template",
)
async def create_template(auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, CreateTemplate)

    async def work() -> Response:
        async with request.app.state.pool.connection() as conn:
            return json_response(await service.create_template(conn, auth.project_id, body), 201)

    return await _save(work())


@router.post(
    "/validate",
    response_model=Validated,
    responses=ERRORS,
    openapi_extra=body_schema(TemplateSource),
    summary="Check unsaved template source as a save would (400 with line and column per problem)",
)
async def validate_template(auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.READ, TemplateSource)

    async def work() -> Response:
        async with request.app.state.pool.connection() as conn:
            result = await service.validate(conn, auth.project_id, body)
        return json_response(Validated.model_validate(result).model_dump_json())

    return await _save(work())


@router.get("", response_model=list[TemplateSummary], responses=ERRORS, summary="Templates, newest first")
async def list_templates(
    auth: Operator, request: Request, limit: Limit = 100, offset: Offset = 0, channel: Channel | None = None
) -> Response:
    async with request.app.state.pool.connection() as conn:
        return json_response(await service.template_page(conn, auth.project_id, limit, offset, channel))


@router.get("/{template_id}", response_model=TemplateDetail, responses=FOUND_ERRORS, summary="A template")
async def get_template(template_id: UUID, auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        text = await service.template_detail(conn, auth.project_id, template_id)
    if text is None:
        raise _missing(template_id)
    return json_response(text)


@router.patch(
    "/{template_id}",
    response_model=TemplateDetail,
    responses=SAVE_ERRORS,
    openapi_extra=body_schema(UpdateTemplate),
    summary="Change a template's name, default locale, subscription group or variants (all replaced)",
)
async def update_template(template_id: UUID, auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, UpdateTemplate)

    async def work() -> Response:
        async with request.app.state.pool.connection() as conn:
            text = await service.update_template(conn, auth.project_id, template_id, body)
        if text is None:
            raise _missing(template_id)
        return json_response(text)

    return await _save(work())


@router.delete("/{template_id}", status_code=204, response_class=Response, responses=FOUND_ERRORS, summary="Delete")
async def delete_template(template_id: UUID, auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        if not await service.delete_template(conn, auth.project_id, template_id):
            raise _missing(template_id)
    return Response(status_code=204)


@router.post(
    "/{template_id}/preview",
    response_model=RenderedMessage,
    responses={**FOUND_ERRORS, 422: PROBLEM},
    openapi_extra=body_schema(PreviewTemplate),
    summary="Render a template for a user (by identifiers or id) with optional data and event; changes nothing",
)
async def preview_template(template_id: UUID, auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.READ, PreviewTemplate)
    async with request.app.state.pool.connection() as conn:
        template = await service.definition(conn, auth.project_id, template_id)
        if template is None:
            raise _missing(template_id)
        try:
            user_id, rendered = await service.preview(
                conn,
                auth.project_id,
                template,
                user_id=body.user_id,
                identifiers=body.user,
                locale=body.locale,
                data=body.data,
                event=body.event,
                run=body.run,
            )
        except service.PreviewUserMissing as exc:
            raise ProblemError(404, f"user: no user {exc} in this project") from None
        except RenderError as exc:
            raise ProblemError(422, str(exc)) from None
    return json_response(RenderedMessage(user_id=user_id, **rendered.as_dict()).model_dump_json())


# --- snippets ---------------------------------------------------------------------------------------------------


@snippets_router.post(
    "",
    status_code=201,
    response_model=SnippetDetail,
    responses={**ERRORS, 409: PROBLEM},
    openapi_extra=body_schema(CreateSnippet),
    summary="Create a snippet: Liquid that templates render by name ({% render 'footer' %})",
)
async def create_snippet(auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, CreateSnippet)

    async def work() -> Response:
        async with request.app.state.pool.connection() as conn:
            return json_response(await service.create_snippet(conn, auth.project_id, body), 201)

    return await _save(work())


@snippets_router.get("", response_model=list[SnippetSummary], responses=ERRORS, summary="Snippets by name")
async def list_snippets(auth: Operator, request: Request, limit: Limit = 100, offset: Offset = 0) -> Response:
    async with request.app.state.pool.connection() as conn:
        return json_response(await service.snippet_page(conn, auth.project_id, limit, offset))


@snippets_router.get("/{name}", response_model=SnippetDetail, responses=FOUND_ERRORS, summary="A snippet")
async def get_snippet(name: str, auth: Operator, request: Request) -> Response:
    name = _snippet_name(name)
    async with request.app.state.pool.connection() as conn:
        text = await service.snippet_detail(conn, auth.project_id, name)
    if text is None:
        raise _snippet_missing(name)
    return json_response(text)


@snippets_router.patch(
    "/{name}",
    response_model=SnippetDetail,
    responses=FOUND_ERRORS,
    openapi_extra=body_schema(UpdateSnippet),
    summary="Replace a snippet's source (templates rendering it use the new source from the next render)",
)
async def update_snippet(name: str, auth: Operator, request: Request) -> Response:
    name = _snippet_name(name)
    _, body = await accept(request, Permission.WRITE, UpdateSnippet)

    async def work() -> Response:
        async with request.app.state.pool.connection() as conn:
            text = await service.update_snippet(conn, auth.project_id, name, body)
        if text is None:
            raise _snippet_missing(name)
        return json_response(text)

    return await _save(work())


@snippets_router.delete(
    "/{name}",
    status_code=204,
    response_class=Response,
    responses={**FOUND_ERRORS, 409: PROBLEM},
    summary="Delete a snippet no template or snippet renders (409 names those that do)",
)
async def delete_snippet(name: str, auth: Operator, request: Request) -> Response:
    name = _snippet_name(name)
    try:
        async with request.app.state.pool.connection() as conn:
            if not await service.delete_snippet(conn, auth.project_id, name):
                raise _snippet_missing(name)
    except service.Conflict as exc:
        raise ProblemError(409, str(exc)) from None
    return Response(status_code=204)
