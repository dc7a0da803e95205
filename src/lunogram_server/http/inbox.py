"""/api/client: push devices, the VAPID key and the in-app inbox (docs/api.md "Devices, push and the inbox").

Who may call what: a public key registers devices and reads the VAPID key (a browser or an app does that);
posting inbox messages needs a secret key (a browser must not write into anyone's inbox); reading a feed and
marking messages read or archived needs a key that may read (a secret key, or a public key widened with
`read`). These routes are not on the fast lane (http/fastlane.py): they are not the hot path.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from psycopg import AsyncConnection
from pydantic import ValidationError
from starlette.responses import Response

from lunogram_server.events.ingest import BatchError, check_data_size
from lunogram_server.events.models import Kind
from lunogram_server.http.auth import Reader, authenticate
from lunogram_server.http.body import LimitedRoute, accept, accept_json, body_schema, validation_error
from lunogram_server.http.client import ERRORS, PROBLEM, json_response
from lunogram_server.http.idempotency import respond
from lunogram_server.http.problems import ProblemError
from lunogram_server.identity import DEFAULT_SOURCE
from lunogram_server.messaging import devices, inbox
from lunogram_server.messaging.devices import DeviceError, DeviceRegistration, VapidPublicKey
from lunogram_server.messaging.inbox import (
    MAX_PAGE,
    MAX_TAGS,
    FeedQuery,
    InboxChannel,
    InboxCount,
    InboxError,
    InboxMessageCreate,
    InboxMessageList,
    InboxMessageRef,
    InboxStatus,
    Mark,
)
from lunogram_server.projects.service import ApiKeyAuth, Permission

router = APIRouter(prefix="/client", tags=["client"], route_class=LimitedRoute)

NOT_FOUND: dict[int | str, dict[str, str]] = {**ERRORS, 404: PROBLEM}
ACCEPTED: dict[int | str, dict[str, str]] = {
    202: {"description": "accepted: stored durably (no body)"},
    **ERRORS,
}


# -- devices and the VAPID key ------------------------------------------------------------------------------


@router.post(
    "/users/devices",
    status_code=201,
    response_class=Response,
    responses={201: {"description": "registered (no body)"}, **NOT_FOUND},
    openapi_extra=body_schema(DeviceRegistration),
    summary="Register or update a user's push device",
)
async def register_device(request: Request) -> Response:
    auth, body = await accept(request, Permission.WRITE, DeviceRegistration)
    try:
        row = devices.device_row(body)
        check_data_size(row["data"], request.app.state.settings.limits, "data")
    except DeviceError as exc:
        raise ProblemError(400, str(exc)) from None
    except BatchError as exc:
        raise ProblemError(exc.status, exc.detail) from None

    async def work(conn: AsyncConnection[Any]) -> Response:
        if not await devices.register_device(conn, auth.project_id, body):
            raise ProblemError(404, "identifier: user not found (no user in this project has these identifiers)")
        return Response(status_code=201)

    return await respond(request, auth, work)


@router.get(
    "/push/vapid",
    response_model=VapidPublicKey,
    responses=NOT_FOUND,
    summary="The project's VAPID public key, for Web Push subscriptions",
)
async def vapid_public_key(request: Request, auth: Annotated[ApiKeyAuth, Depends(authenticate)]) -> Response:
    async with request.app.state.pool.connection() as conn:
        key = await devices.vapid_public_key(conn, auth.project_id)
    if key is None:
        raise ProblemError(
            404, "vapid key not found: the project has no webpush provider (POST /api/admin/providers, kind webpush)"
        )
    return json_response(VapidPublicKey(public_key=key).model_dump_json())


# -- the inbox ----------------------------------------------------------------------------------------------


async def _post_messages(request: Request, kind: Kind) -> Response:
    if (await authenticate(request)).kind != "secret":
        raise ProblemError(403, "a public key may not post inbox messages: use a secret key")
    auth, value = await accept_json(request, Permission.WRITE)
    try:
        inbox.check_batch(value)
        items = inbox.message_items(
            inbox.MESSAGES.validate_python(value), request.app.state.settings.limits.max_event_data_bytes
        )
    except ValidationError as exc:
        raise validation_error(exc) from None
    except InboxError as exc:
        raise ProblemError(exc.status, exc.detail) from None

    async def work(conn: AsyncConnection[Any]) -> Response:
        await inbox.post(conn, auth.project_id, kind, items)
        return Response(status_code=202)

    return await respond(request, auth, work)


async def _mark(request: Request, kind: Kind, what: Mark) -> Response:
    auth, value = await accept_json(request, Permission.READ)
    try:
        inbox.check_batch(value)
        refs = inbox.REFS.validate_python(value)
    except ValidationError as exc:
        raise validation_error(exc) from None
    except InboxError as exc:
        raise ProblemError(exc.status, exc.detail) from None

    async def work(conn: AsyncConnection[Any]) -> Response:
        await inbox.mark(conn, auth.project_id, kind, what, refs)
        return Response(status_code=202)

    return await respond(request, auth, work)


NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold it
Source = Annotated[
    str, Query(min_length=1, max_length=255, pattern=NO_NUL, description="the target's identifier source")
]
ExternalId = Annotated[str, Query(min_length=1, max_length=512, pattern=NO_NUL, description="the target's external_id")]
Channel = Annotated[InboxChannel, Query(description="the feed's channel")]
Status = Annotated[InboxStatus | None, Query(description="unset: everything not archived")]
Tags = Annotated[
    str | None,
    Query(max_length=MAX_TAGS * 256, pattern=NO_NUL, description="comma-separated; a message must have all of them"),
]
MessageSource = Annotated[str | None, Query(max_length=255, pattern=NO_NUL, description="the messages' `source` label")]
Priority = Annotated[int | None, Query(ge=1, le=5)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


def _tags(text: str | None) -> list[str]:
    tags = [tag.strip() for tag in (text or "").split(",") if tag.strip()]
    if len(tags) > MAX_TAGS:
        raise ProblemError(400, f"query.tags: at most {MAX_TAGS} tags")
    return tags


def _inbox_routes(kind: Kind, plural: str, label: str) -> None:
    """The same inbox routes for users and organizations."""
    missing = f"{kind} not found: no {kind} in this project has this identifier"

    @router.post(
        f"/{plural}/inbox",
        status_code=202,
        response_class=Response,
        responses=ACCEPTED,
        openapi_extra=body_schema(InboxMessageCreate, array=True),
        summary=f"Post messages to {label} inboxes (secret key)",
        name=f"post_{kind}_inbox",
    )
    async def post_messages(request: Request) -> Response:
        return await _post_messages(request, kind)

    @router.get(
        f"/{plural}/inbox",
        response_model=InboxMessageList,
        responses=NOT_FOUND,
        summary=f"{label.capitalize()} inbox feed, newest first",
        name=f"get_{kind}_inbox",
    )
    async def get_feed(
        request: Request,
        auth: Reader,
        external_id: ExternalId,
        channel: Channel,
        source: Source = DEFAULT_SOURCE,
        status: Status = None,
        tags: Tags = None,
        message_source: MessageSource = None,
        priority: Priority = None,
        limit: Limit = inbox.DEFAULT_PAGE,
        offset: Offset = 0,
    ) -> Response:
        query = FeedQuery(source, external_id, channel, status, _tags(tags), message_source, priority, limit, offset)
        async with request.app.state.pool.connection() as conn:
            text = await inbox.page(conn, auth.project_id, kind, query)
        if text is None:
            raise ProblemError(404, missing)
        return json_response(text)

    @router.get(
        f"/{plural}/inbox/count",
        response_model=InboxCount,
        responses=NOT_FOUND,
        summary=f"Unread and total messages of {label} inbox feed",
        name=f"count_{kind}_inbox",
    )
    async def count_feed(
        request: Request, auth: Reader, external_id: ExternalId, channel: Channel, source: Source = DEFAULT_SOURCE
    ) -> Response:
        async with request.app.state.pool.connection() as conn:
            counted = await inbox.count(conn, auth.project_id, kind, FeedQuery(source, external_id, channel))
        if counted is None:
            raise ProblemError(404, missing)
        return json_response(counted.model_dump_json())

    _mark_route(kind, plural, label, "read")
    _mark_route(kind, plural, label, "archived")


def _mark_route(kind: Kind, plural: str, label: str, what: Mark) -> None:
    @router.post(
        f"/{plural}/inbox/{what}",
        status_code=202,
        response_class=Response,
        responses=ACCEPTED,
        openapi_extra=body_schema(InboxMessageRef, array=True),
        summary=f"Mark messages of {label} inbox {what}",
        name=f"mark_{kind}_inbox_{what}",
    )
    async def mark(request: Request) -> Response:
        return await _mark(request, kind, what)


_inbox_routes("user", "users", "a user's")
_inbox_routes("organization", "organizations", "an organization's")
