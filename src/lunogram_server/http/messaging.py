"""/api/admin: subscription groups, users' subscriptions and messages, sending rules, suppressions, the
transactional send API and a message's story (secret keys, project-scoped, problem JSON errors)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from lunogram_server.http.auth import Operator
from lunogram_server.http.body import LimitedRoute, accept, body_schema
from lunogram_server.http.client import ERRORS, PROBLEM, json_response
from lunogram_server.http.problems import ProblemError
from lunogram_server.messaging import campaigns, feedback, providers_service
from lunogram_server.messaging import service as messaging
from lunogram_server.messaging.campaigns import CreateCampaign, ScheduleCampaign
from lunogram_server.messaging.service import (
    CreateGroup,
    MessagingError,
    Rules,
    Send,
    SetSubscription,
    Suppression,
    UpdateGroup,
)
from lunogram_server.projects.service import Permission

router = APIRouter(prefix="/api/admin", tags=["messaging"], route_class=LimitedRoute)
FOUND: dict[int | str, dict[str, str]] = {**ERRORS, 404: PROBLEM}
CHANGE: dict[int | str, dict[str, str]] = {**FOUND, 409: PROBLEM}
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


def _json(value: Any, status: int = 200) -> Response:
    return json_response(orjson.dumps(value, default=str).decode(), status)


def _problem(exc: MessagingError) -> ProblemError:
    return ProblemError(exc.status, str(exc))


@router.post(
    "/subscription-groups",
    status_code=201,
    responses=CHANGE,
    openapi_extra=body_schema(CreateGroup),
    summary="Create a subscription group (marketing groups can be left; transactional ones cannot)",
)
async def create_group(auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, CreateGroup)
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await messaging.create_group(conn, auth.project_id, body), 201)
        except MessagingError as exc:
            raise _problem(exc) from None


@router.get("/subscription-groups", responses=ERRORS, summary="Subscription groups")
async def list_groups(auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        return _json(await messaging.groups(conn, auth.project_id))


@router.patch(
    "/subscription-groups/{group_id}",
    responses=CHANGE,
    openapi_extra=body_schema(UpdateGroup),
    summary="Rename a group or change its default",
)
async def update_group(group_id: UUID, auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, UpdateGroup)
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await messaging.update_group(conn, auth.project_id, group_id, body))
        except MessagingError as exc:
            raise _problem(exc) from None


@router.delete(
    "/subscription-groups/{group_id}",
    status_code=204,
    response_class=Response,
    responses=FOUND,
    summary="Delete a subscription group (with the users' choices for it)",
)
async def delete_group(group_id: UUID, auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        try:
            await messaging.delete_group(conn, auth.project_id, group_id)
        except MessagingError as exc:
            raise _problem(exc) from None
    return Response(status_code=204)


@router.get("/users/{user_id}/subscriptions", responses=FOUND, summary="A user's state in every group")
async def user_subscriptions(user_id: UUID, auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await messaging.subscriptions_of(conn, auth.project_id, user_id))
        except MessagingError as exc:
            raise _problem(exc) from None


@router.put(
    "/users/{user_id}/subscriptions",
    responses=FOUND,
    openapi_extra=body_schema(SetSubscription),
    summary="Subscribe a user to a marketing group, or unsubscribe them",
)
async def set_user_subscription(user_id: UUID, auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, SetSubscription)
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await messaging.set_subscription(conn, auth.project_id, user_id, body))
        except MessagingError as exc:
            raise _problem(exc) from None


@router.get("/users/{user_id}/messages", responses=ERRORS, summary="A user's messages, newest first")
async def user_messages(user_id: UUID, auth: Operator, request: Request, limit: Limit = 100) -> Response:
    async with request.app.state.pool.connection() as conn:
        return _json(await messaging.messages_of_user(conn, auth.project_id, user_id, limit))


@router.get("/messaging/settings", responses=ERRORS, summary="Quiet hours and frequency caps")
async def get_rules(auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        return _json(await messaging.rules(conn, auth.project_id))


@router.put(
    "/messaging/settings",
    responses=ERRORS,
    openapi_extra=body_schema(Rules),
    summary="Set quiet hours (local to each user) and frequency caps per channel (marketing sends)",
)
async def put_rules(auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, Rules)
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await messaging.set_rules(conn, auth.project_id, body))
        except MessagingError as exc:
            raise _problem(exc) from None


@router.get("/suppressions", responses=ERRORS, summary="Addresses not sent to (hard bounces, complaints, by hand)")
async def list_suppressions(
    auth: Operator,
    request: Request,
    channel: Literal["email", "sms", "whatsapp"] | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    async with request.app.state.pool.connection() as conn:
        return _json(await messaging.suppressions(conn, auth.project_id, channel, limit, offset))


@router.post(
    "/suppressions",
    status_code=204,
    response_class=Response,
    responses=ERRORS,
    openapi_extra=body_schema(Suppression),
    summary="Suppress an address",
)
async def add_suppression(auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, Suppression)
    async with request.app.state.pool.connection() as conn:
        await messaging.suppress(conn, auth.project_id, body)
    return Response(status_code=204)


@router.delete(
    "/suppressions",
    status_code=204,
    response_class=Response,
    responses=FOUND,
    openapi_extra=body_schema(Suppression),
    summary="Send to a suppressed address again",
)
async def remove_suppression(auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, Suppression)
    async with request.app.state.pool.connection() as conn:
        try:
            await messaging.unsuppress(conn, auth.project_id, body)
        except MessagingError as exc:
            raise _problem(exc) from None
    return Response(status_code=204)


@router.post(
    "/messages",
    status_code=202,
    responses=FOUND,
    openapi_extra=body_schema(Send),
    summary="Send a template to a user now (transactional), once per key: 202 queued, 200 the earlier one",
)
async def send_message(auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, Send)
    async with request.app.state.pool.connection() as conn:
        try:
            found, created = await messaging.send(conn, auth.project_id, body)
        except MessagingError as exc:
            raise _problem(exc) from None
    return _json(found, 202 if created else 200)


@router.get("/messages/{message_id}", responses=FOUND, summary="A message: its state and every event of it")
async def get_message(message_id: UUID, auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        found = await messaging.message(conn, auth.project_id, message_id)
    if found is None:
        raise ProblemError(404, f"message {message_id}: not found in this project")
    return _json(found)


@router.get(
    "/journeys/{journey_id}/messages",
    responses=ERRORS,
    summary="Per send step of a journey: sent, delivered, opened, clicked, bounced, ... (unique)",
)
async def journey_messages(journey_id: UUID, auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        return _json(await messaging.journey_step_stats(conn, auth.project_id, journey_id))


# -- campaigns ------------------------------------------------------------------------------------------------


def _campaign_problem(exc: campaigns.CampaignError) -> ProblemError:
    return ProblemError(exc.status, str(exc))


@router.post(
    "/campaigns",
    status_code=201,
    responses=FOUND,
    openapi_extra=body_schema(CreateCampaign),
    summary="Create a campaign (a draft): a template to a list",
)
async def create_campaign(auth: Operator, request: Request) -> Response:
    _, body = await accept(request, Permission.WRITE, CreateCampaign)
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await campaigns.create(conn, auth.project_id, body), 201)
        except campaigns.CampaignError as exc:
            raise _campaign_problem(exc) from None


@router.get("/campaigns", responses=ERRORS, summary="Campaigns, newest first")
async def list_campaigns(auth: Operator, request: Request, limit: Limit = 100, offset: Offset = 0) -> Response:
    async with request.app.state.pool.connection() as conn:
        return _json(await campaigns.page(conn, auth.project_id, limit, offset))


@router.get("/campaigns/{campaign_id}", responses=FOUND, summary="A campaign: progress and statistics")
async def get_campaign(campaign_id: UUID, auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        found = await campaigns.detail(conn, auth.project_id, campaign_id)
    if found is None:
        raise ProblemError(404, f"campaign {campaign_id}: not found in this project")
    return _json(found)


@router.get(
    "/campaigns/{campaign_id}/timeline",
    responses=FOUND,
    summary="Sent, delivered, opened, clicked, bounced, unsubscribed per period (the chart)",
)
async def campaign_timeline(
    campaign_id: UUID,
    auth: Operator,
    request: Request,
    bucket_seconds: Annotated[int, Query(ge=60, le=86400 * 31)] = 3600,
) -> Response:
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await campaigns.timeline(conn, auth.project_id, campaign_id, bucket_seconds))
        except campaigns.CampaignError as exc:
            raise _campaign_problem(exc) from None


@router.post(
    "/campaigns/{campaign_id}/schedule",
    responses=CHANGE,
    openapi_extra=body_schema(ScheduleCampaign),
    summary="Send now or at send_at (optionally at that local time in each recipient's timezone)",
)
async def schedule_campaign(campaign_id: UUID, auth: Operator, request: Request) -> Response:
    body = ScheduleCampaign()
    if (await request.body()).strip():
        _, body = await accept(request, Permission.WRITE, ScheduleCampaign)
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await campaigns.act(conn, auth.project_id, campaign_id, "schedule", body))
        except campaigns.CampaignError as exc:
            raise _campaign_problem(exc) from None


async def _campaign_action(campaign_id: UUID, auth: Operator, request: Request, action: str) -> Response:
    async with request.app.state.pool.connection() as conn:
        try:
            return _json(await campaigns.act(conn, auth.project_id, campaign_id, action))
        except campaigns.CampaignError as exc:
            raise _campaign_problem(exc) from None


@router.post("/campaigns/{campaign_id}/pause", responses=CHANGE, summary="Pause: queued messages wait")
async def pause_campaign(campaign_id: UUID, auth: Operator, request: Request) -> Response:
    return await _campaign_action(campaign_id, auth, request, "pause")


@router.post("/campaigns/{campaign_id}/resume", responses=CHANGE, summary="Resume a paused campaign")
async def resume_campaign(campaign_id: UUID, auth: Operator, request: Request) -> Response:
    return await _campaign_action(campaign_id, auth, request, "resume")


@router.post("/campaigns/{campaign_id}/cancel", responses=CHANGE, summary="Cancel: what was not sent is not")
async def cancel_campaign(campaign_id: UUID, auth: Operator, request: Request) -> Response:
    return await _campaign_action(campaign_id, auth, request, "cancel")


@router.get(
    "/providers/{provider_id}/feedback-url",
    responses=FOUND,
    summary="The URL to give the provider for its delivery, bounce and complaint webhooks (a secret)",
)
async def provider_feedback_url(provider_id: UUID, auth: Operator, request: Request) -> Response:
    async with request.app.state.pool.connection() as conn:
        found = await providers_service.get(conn, auth.project_id, provider_id)
    if found is None:
        raise ProblemError(404, f"provider {provider_id}: not found in this project")
    return _json({"url": feedback.feedback_url(request.app.state.links, provider_id)})
