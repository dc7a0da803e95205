"""Messaging for operators: subscription groups and users' subscriptions, the project's sending rules
(quiet hours, frequency caps), suppressed addresses, the transactional send API and what became of each
message. Every function is scoped by project."""

from __future__ import annotations

from datetime import time
from typing import Annotated, Any, Literal
from uuid import UUID

from psycopg import AsyncConnection, errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from lunogram_server.db import fetch_scalar, load_queries
from lunogram_server.identity import Identifiers, normalize
from lunogram_server.journeys.timing import zone

Q = load_queries("lunogram_server.messaging", "admin.sql")
OUTBOX = load_queries("lunogram_server.messaging", "outbox.sql")
GroupChannel = Literal["email", "sms", "push", "inbox", "whatsapp", "webhook"]
MAX_SEND_DATA_KEYS = 100


class MessagingError(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Name = Annotated[str, StringConstraints(min_length=1, max_length=255, strip_whitespace=True)]


class CreateGroup(_Strict):
    name: Name
    channel: GroupChannel
    kind: Literal["marketing", "transactional"] = "marketing"
    default_subscribed: bool = True


class UpdateGroup(_Strict):
    name: Name | None = None
    default_subscribed: bool | None = None


class SetSubscription(_Strict):
    group_id: UUID
    subscribed: bool


class Cap(_Strict):
    count: int = Field(ge=1, le=1_000_000)
    period_seconds: int = Field(ge=60, le=366 * 86400)


class Rules(_Strict):
    """Quiet hours (HH:MM, local to each user; both or neither) defer marketing sends; caps skip them."""

    quiet_start: time | None = None
    quiet_end: time | None = None
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    frequency_caps: dict[GroupChannel, Cap] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known(cls, value: str) -> str:
        if zone(value, "").key != value:
            raise ValueError(f"{value!r} is not an IANA timezone")
        return value

    @field_validator("quiet_start", "quiet_end")
    @classmethod
    def _local(cls, value: time | None) -> time | None:
        # a wall-clock time in each user's timezone: an offset would mean nothing (and one past +-15:59
        # was a 500 from the database's `time` column)
        if value is not None and value.tzinfo is not None:
            raise ValueError("a local time (HH:MM) without an offset: quiet hours are in each user's timezone")
        return value


class Send(_Strict):
    """The transactional send: `template_id` to the user `identifier` names (created if unknown, as every
    write), now, with `data`, once per `key`."""

    template_id: UUID
    identifier: Identifiers
    data: dict[str, Any] = Field(default_factory=dict, max_length=MAX_SEND_DATA_KEYS)
    key: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    provider_id: UUID | None = None


class Suppression(_Strict):
    channel: Literal["email", "sms", "whatsapp"]
    address: Annotated[str, StringConstraints(min_length=1, max_length=320)]


def _group(row: dict[str, Any]) -> dict[str, Any]:
    return dict(row)


async def create_group(conn: AsyncConnection[Any], project_id: UUID, body: CreateGroup) -> dict[str, Any]:
    try:
        async with conn.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(Q["group_create"], {"project_id": project_id, **body.model_dump()})
            row = await cursor.fetchone()
    except errors.UniqueViolation:
        raise MessagingError(f"name: a subscription group named {body.name!r} exists already", 409) from None
    assert row is not None
    return _group(row)


async def groups(conn: AsyncConnection[Any], project_id: UUID) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(Q["group_list"], {"project_id": project_id})
        return [_group(row) for row in await cursor.fetchall()]


async def update_group(
    conn: AsyncConnection[Any], project_id: UUID, group_id: UUID, body: UpdateGroup
) -> dict[str, Any]:
    try:
        async with conn.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(Q["group_update"], {"project_id": project_id, "id": group_id, **body.model_dump()})
            row = await cursor.fetchone()
    except errors.UniqueViolation:
        raise MessagingError(f"name: a subscription group named {body.name!r} exists already", 409) from None
    if row is None:
        raise MessagingError(f"subscription group {group_id}: not found in this project", 404)
    return _group(row)


async def delete_group(conn: AsyncConnection[Any], project_id: UUID, group_id: UUID) -> None:
    if await fetch_scalar(conn, Q["group_delete"], {"project_id": project_id, "id": group_id}) is None:
        raise MessagingError(f"subscription group {group_id}: not found in this project", 404)


async def subscriptions_of(conn: AsyncConnection[Any], project_id: UUID, user_id: UUID) -> list[dict[str, Any]]:
    if await fetch_scalar(conn, Q["user_in_project"], {"project_id": project_id, "user_id": user_id}) is None:
        raise MessagingError(f"user {user_id}: not found in this project", 404)
    cursor = await conn.execute(Q["user_subscriptions"], {"project_id": project_id, "user_id": user_id})
    return [
        {
            "group_id": gid,
            "name": name,
            "channel": channel,
            "kind": kind,
            "subscribed": subscribed,
            "source": source,
            "updated_at": updated,
        }
        for gid, name, channel, kind, subscribed, source, updated in await cursor.fetchall()
    ]


async def set_subscription(
    conn: AsyncConnection[Any], project_id: UUID, user_id: UUID, body: SetSubscription
) -> list[dict[str, Any]]:
    params = {
        "project_id": project_id,
        "user_id": user_id,
        "group_id": body.group_id,
        "subscribed": body.subscribed,
        "source": "api",
    }
    if await (await conn.execute(Q["set_subscription"], params)).fetchone() is None:
        raise MessagingError(
            f"group_id: {body.group_id} is not a marketing subscription group of this project, or user {user_id} "
            "is not in it (transactional groups cannot be left)",
            404,
        )
    return await subscriptions_of(conn, project_id, user_id)


async def rules(conn: AsyncConnection[Any], project_id: UUID) -> dict[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(Q["settings_get"], {"project_id": project_id})
        row = await cursor.fetchone()
    return dict(row) if row is not None else Rules().model_dump(mode="json") | {"updated_at": None}


async def set_rules(conn: AsyncConnection[Any], project_id: UUID, body: Rules) -> dict[str, Any]:
    if (body.quiet_start is None) != (body.quiet_end is None):
        raise MessagingError("quiet_start: give both quiet_start and quiet_end, or neither")
    params = {
        "project_id": project_id,
        "quiet_start": body.quiet_start,
        "quiet_end": body.quiet_end,
        "timezone": body.timezone,
        "frequency_caps": Jsonb({ch: cap.model_dump() for ch, cap in body.frequency_caps.items()}),
    }
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(Q["settings_put"], params)
        row = await cursor.fetchone()
    assert row is not None
    return dict(row)


async def suppressions(
    conn: AsyncConnection[Any], project_id: UUID, channel: str | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(
            Q["suppression_list"], {"project_id": project_id, "channel": channel, "limit": limit, "offset": offset}
        )
        return [dict(row) for row in await cursor.fetchall()]


async def suppress(conn: AsyncConnection[Any], project_id: UUID, body: Suppression) -> None:
    await conn.execute(
        Q["suppression_add"], {"project_id": project_id, "channel": body.channel, "address": body.address.lower()}
    )


async def unsuppress(conn: AsyncConnection[Any], project_id: UUID, body: Suppression) -> None:
    params = {"project_id": project_id, "channel": body.channel, "address": body.address.lower()}
    if await fetch_scalar(conn, Q["suppression_remove"], params) is None:
        raise MessagingError(f"address: {body.address!r} is not suppressed on {body.channel}", 404)


async def send(conn: AsyncConnection[Any], project_id: UUID, body: Send) -> tuple[dict[str, Any], bool]:
    """The message queued for this key (and whether this call queued it): at once or as it is now."""
    async with conn.transaction():
        channel = await fetch_scalar(conn, Q["template_of_project"], {"project_id": project_id, "id": body.template_id})
        if channel is None:
            raise MessagingError(f"template_id: template {body.template_id} does not exist in this project", 404)
        if body.provider_id is not None:
            provider_channel = await fetch_scalar(
                conn, Q["provider_of_project"], {"project_id": project_id, "id": body.provider_id}
            )
            if provider_channel is None:
                raise MessagingError(f"provider_id: provider {body.provider_id} does not exist in this project", 404)
            if provider_channel != channel:
                raise MessagingError(f"provider_id: a {provider_channel} provider cannot send a {channel} template")
        existing = await fetch_scalar(conn, OUTBOX["by_key"], {"project_id": project_id, "send_key": body.key})
        created = existing is None
        if created:
            user_id = await fetch_scalar(
                conn, Q["resolve_user"], {"project_id": project_id, "identifiers": Jsonb(normalize(body.identifier))}
            )
            params = {
                "project_id": project_id,
                "user_id": user_id,
                "channel": channel,
                "template_id": body.template_id,
                "provider_id": body.provider_id,
                "data": Jsonb(body.data),
                "send_key": body.key,
            }
            existing = await fetch_scalar(conn, OUTBOX["queue_one"], params)
            if existing is None:  # a concurrent call with the key won
                existing = await fetch_scalar(conn, OUTBOX["by_key"], {"project_id": project_id, "send_key": body.key})
                created = False
    found = await message(conn, project_id, existing)
    assert found is not None
    return found, created


async def message(conn: AsyncConnection[Any], project_id: UUID, message_id: UUID) -> dict[str, Any] | None:
    result = await fetch_scalar(conn, OUTBOX["message"], {"project_id": project_id, "id": message_id})
    return None if result is None else dict(result)


async def messages_of_user(
    conn: AsyncConnection[Any], project_id: UUID, user_id: UUID, limit: int
) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        OUTBOX["messages_of_user"], {"project_id": project_id, "user_id": user_id, "limit": limit}
    )
    return [row[0] for row in await cursor.fetchall()]


async def journey_step_stats(conn: AsyncConnection[Any], project_id: UUID, journey_id: UUID) -> dict[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(Q["stats_of_journey_steps"], {"project_id": project_id, "journey_id": journey_id})
        return {row.pop("step"): row for row in await cursor.fetchall()}
