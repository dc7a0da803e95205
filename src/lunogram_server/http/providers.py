"""/api/admin/providers: a project's messaging providers (secret keys only), problem JSON errors.

Secrets are write-only: they are stored encrypted and answers list which secret fields are set.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request
from pydantic import TypeAdapter
from starlette.responses import Response

from lunogram_server.http.auth import Operator
from lunogram_server.http.body import LimitedRoute, accept, body_schema
from lunogram_server.http.client import ERRORS, PROBLEM, json_response
from lunogram_server.http.problems import ProblemError
from lunogram_server.messaging import providers_service as providers
from lunogram_server.messaging.crypto import NoEncryptionKey, Undecryptable
from lunogram_server.messaging.providers import Channel, ProviderConfigError
from lunogram_server.projects.service import Permission

router = APIRouter(prefix="/api/admin/providers", tags=["providers"], route_class=LimitedRoute)
FOUND_ERRORS: dict[int | str, dict[str, str]] = {**ERRORS, 404: PROBLEM}
WRITE_ERRORS: dict[int | str, dict[str, str]] = {**FOUND_ERRORS, 409: PROBLEM}
Limit = Annotated[int, Query(ge=1, le=providers.MAX_PROVIDERS_PER_PROJECT)]
Offset = Annotated[int, Query(ge=0, le=providers.MAX_PROVIDERS_PER_PROJECT)]
_PAGE = TypeAdapter(list[providers.ProviderOut])


def _missing(provider_id: UUID) -> ProblemError:
    return ProblemError(404, f"provider {provider_id}: not found in this project")


def _problem(exc: Exception) -> ProblemError:
    if isinstance(exc, ProviderConfigError):
        return ProblemError(400, str(exc))
    if isinstance(exc, NoEncryptionKey | providers.Conflict):
        return ProblemError(409, f"secrets: {exc}" if isinstance(exc, NoEncryptionKey) else str(exc))
    if isinstance(exc, Undecryptable):
        return ProblemError(409, f"secrets: the stored secrets cannot be decrypted: {exc}")
    raise exc


_REFUSALS = (ProviderConfigError, NoEncryptionKey, Undecryptable, providers.Conflict)


@router.post(
    "",
    status_code=201,
    response_model=providers.ProviderOut,
    responses={**ERRORS, 409: PROBLEM},
    openapi_extra=body_schema(providers.CreateProvider),
    summary="Add a provider (email, sms, push, webhook or whatsapp); secrets are stored encrypted",
)
async def create_provider(auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, providers.CreateProvider)
    async with request.app.state.pool.connection() as conn:
        try:
            out = await providers.create(conn, request.app.state.keyring, auth.project_id, body)
        except _REFUSALS as exc:
            raise _problem(exc) from None
    return json_response(out.model_dump_json(), 201)


@router.get("", response_model=list[providers.ProviderOut], responses=ERRORS, summary="Providers, by channel")
async def list_providers(
    auth: Operator, request: Request, channel: Channel | None = None, limit: Limit = 100, offset: Offset = 0
) -> Response:
    async with request.app.state.pool.connection() as conn:
        found = await providers.page(conn, auth.project_id, channel, limit, offset)
    return json_response(_PAGE.dump_json(found).decode())


@router.get(
    "/{provider_id}", response_model=providers.ProviderOut, responses=FOUND_ERRORS, summary="A provider's settings"
)
async def get_provider(provider_id: UUID, auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        found = await providers.get(conn, auth.project_id, provider_id)
    if found is None:
        raise _missing(provider_id)
    return json_response(found.model_dump_json())


@router.patch(
    "/{provider_id}",
    response_model=providers.ProviderOut,
    responses=WRITE_ERRORS,
    openapi_extra=body_schema(providers.UpdateProvider),
    summary="Change a provider: name, config (replaced), secrets (merged; null removes one), rate, default",
)
async def update_provider(provider_id: UUID, auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, providers.UpdateProvider)
    async with request.app.state.pool.connection() as conn:
        try:
            out = await providers.update(conn, request.app.state.keyring, auth.project_id, provider_id, body)
        except _REFUSALS as exc:
            raise _problem(exc) from None
    if out is None:
        raise _missing(provider_id)
    return json_response(out.model_dump_json())


@router.delete(
    "/{provider_id}", status_code=204, response_class=Response, responses=FOUND_ERRORS, summary="Delete a provider"
)
async def delete_provider(provider_id: UUID, auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        if not await providers.delete(conn, auth.project_id, provider_id):
            raise _missing(provider_id)
    return Response(status_code=204)


@router.post(
    "/{provider_id}/test",
    response_model=providers.ProviderTestOutcome,
    responses=WRITE_ERRORS,
    openapi_extra=body_schema(providers.ProviderTest),
    summary="Send a test message through the provider to `to`; answers the provider's outcome",
)
async def test_provider(provider_id: UUID, auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, providers.ProviderTest)
    async with request.app.state.pool.connection() as conn:
        try:
            settings = await providers.load(conn, request.app.state.keyring, auth.project_id, provider_id)
        except _REFUSALS as exc:
            raise _problem(exc) from None
    if settings is None:
        raise _missing(provider_id)
    try:
        outcome = await providers.send_test_message(request.app.state.providers, settings, body)
    except ProviderConfigError as exc:
        raise _problem(exc) from None
    result = providers.ProviderTestOutcome(
        status=outcome.status,
        provider_message_id=outcome.provider_message_id,
        error=outcome.error,
        retry_after=outcome.retry_after,
        permanent_address_problem=outcome.permanent_address_problem,
    )
    return json_response(result.model_dump_json())
