"""Push devices: what `POST /client/users/devices` registers, and what the senders push to.

A device is an APNs token (ios), an FCM token (android) or a Web Push subscription (web: endpoint and
keys), registered per (user, device_id): registering the same device_id again updates it. A push address
(token or endpoint) belongs to one device of one user: registered for another (a second account signed in
on the same phone or browser), it moves there. A user keeps at most `MAX_DEVICES_PER_USER` devices, the
ones registered last; `users.has_push_device` says whether a user has any.

For the senders: `devices_of` (a batch of users' devices, one query) and `forget_device` (drop a device
whose provider answered that it will never be reached again: `Outcome.permanent_address_problem`).

Devices hang on their user: deleted with it (foreign key), moved to the survivor of a merge
(`lunogram_devices_on_user_merged`, sql/functions.sql).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import httpx
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, StringConstraints

from lunogram_server.db import fetch_scalar, load_queries
from lunogram_server.identity import Identifiers, StrictModel, normalize
from lunogram_server.identity.models import not_blank
from lunogram_server.messaging.providers.base import Device, DeviceOs, WebPushKeys
from lunogram_server.reactions import USER_MERGED, Reactions

Q = load_queries("lunogram_server.messaging", "devices.sql")

MAX_DEVICES_PER_USER = 100  # lunogram_max_devices_per_user() in sql/functions.sql
OS_VALUES: tuple[DeviceOs, ...] = ("web", "ios", "android")

Short = Annotated[str, StringConstraints(max_length=255)]


def _storable(value: datetime) -> datetime:
    # in UTC, years 1-9998: PostgreSQL refuses offsets beyond 15:59 (Python takes up to 23:59), and an offset
    # can push a year-9999 time out of Python's range
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not 1 <= utc.year <= 9998:
        raise ValueError("must lie between the years 1 and 9998 in UTC")
    return utc


Expiration = Annotated[AwareDatetime, AfterValidator(_storable)]


def register(reactions: Reactions) -> None:
    reactions.on(USER_MERGED, "lunogram_devices_on_user_merged")


# -- the request --------------------------------------------------------------------------------------------


class DeviceKeys(StrictModel):
    """A Web Push subscription's keys, base64url, as `PushSubscription.toJSON()` gives them."""

    p256dh: str | None = Field(default=None, max_length=200)
    auth: str | None = Field(default=None, max_length=100)


class DeviceConfig(StrictModel):
    """`token` for ios and android; `endpoint`, `keys` (and `expiration_time`) of a Web Push subscription for
    web. What the other kind would use is ignored."""

    token: str | None = Field(default=None, max_length=4096)
    endpoint: str | None = Field(default=None, max_length=2000)
    expiration_time: Expiration | None = Field(
        default=None, description="RFC 3339, or epoch milliseconds as a browser's subscription has it"
    )
    keys: DeviceKeys | None = None


class DeviceRegistration(StrictModel):
    """A device of the user `identifier` names (the user must exist). `os` says what `config` holds:
    android an FCM token, ios an APNs token, web a Web Push subscription."""

    identifier: Identifiers
    device_id: Annotated[str, StringConstraints(min_length=1, max_length=255), AfterValidator(not_blank)]
    os: str | None = Field(default=None, json_schema_extra={"enum": list(OS_VALUES)})
    os_version: Short | None = None
    model: Short | None = None
    app_version: Short | None = None
    data: Any = Field(default=None, json_schema_extra={"type": "object"})
    config: DeviceConfig


class DeviceError(ValueError):
    """A registration that is not usable: `field` and the rule, worded as upstream Lunogram words it."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


def _https(url: str) -> bool:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        return False
    return parsed.scheme == "https" and bool(parsed.host)


def device_row(body: DeviceRegistration) -> dict[str, Any]:
    """The row to store (the columns of `devices`); DeviceError for what the shape alone does not refuse."""
    if body.os is None:
        raise DeviceError("os", "os is required")
    if body.os not in OS_VALUES:
        raise DeviceError("os", "os must be ios, android, or web")
    if body.data is not None and not isinstance(body.data, dict):
        raise DeviceError("data", "data must be a JSON object")
    config = body.config
    row: dict[str, Any] = {
        "device_id": body.device_id,
        "os": body.os,
        "os_version": body.os_version,
        "model": body.model,
        "app_version": body.app_version,
        "data": body.data or {},
    }
    if body.os == "web":
        if not config.endpoint:
            raise DeviceError("config.endpoint", "config.endpoint is required for web")
        if config.keys is None or not config.keys.auth or not config.keys.p256dh:
            raise DeviceError("config.keys", "config.keys.auth and config.keys.p256dh are required for web")
        if not _https(config.endpoint):
            raise DeviceError("config.endpoint", "must be an https URL (a Web Push subscription's endpoint)")
        expires = config.expiration_time
        row.update(
            endpoint=config.endpoint,
            p256dh=config.keys.p256dh,
            auth=config.keys.auth,
            expiration_time=expires.isoformat() if isinstance(expires, datetime) else None,
        )
    else:
        if not config.token:
            raise DeviceError("config.token", "config.token is required for fcm/apns")
        if not config.token.strip():
            raise DeviceError("config.token", "must not be blank")
        row["token"] = config.token
    return row


# -- the operations -----------------------------------------------------------------------------------------


async def register_device(conn: AsyncConnection[Any], project_id: UUID, body: DeviceRegistration) -> bool:
    """Store the device (one round trip, one transaction); False when no user of the project has the
    identifiers. DeviceError when the registration is not usable."""
    row = device_row(body)
    params = {"project_id": project_id, "identifiers": Jsonb(normalize(body.identifier)), "device": Jsonb(row)}
    return bool(await fetch_scalar(conn, Q["register_device"], params))


async def vapid_public_key(conn: AsyncConnection[Any], project_id: UUID) -> str | None:
    """The VAPID public key browsers subscribe with: that of the project's default push provider when it is
    a webpush one, else of its oldest webpush provider; None when it has none."""
    value = await fetch_scalar(conn, Q["vapid_public_key"], {"project_id": project_id})
    return str(value) if value is not None else None


async def devices_of(
    conn: AsyncConnection[Any], project_id: UUID, user_ids: Iterable[UUID]
) -> dict[UUID, list[Device]]:
    """Each user's devices, most recently registered first (one query for the whole batch). Users without
    any are left out; so are Web Push subscriptions past their `expiration_time`."""
    ids = list(dict.fromkeys(user_ids))
    found: dict[UUID, list[Device]] = {}
    if not ids:
        return found
    cursor = await conn.execute(Q["devices_of"], {"project_id": project_id, "user_ids": ids})
    for user_id, os, token, endpoint, p256dh, auth in await cursor.fetchall():
        keys = WebPushKeys(p256dh, auth) if p256dh is not None and auth is not None else None
        found.setdefault(user_id, []).append(Device(os=os, token=token, endpoint=endpoint, keys=keys))
    return found


async def forget_device(conn: AsyncConnection[Any], project_id: UUID, token_or_endpoint: str) -> int:
    """Drop the device whose token (or Web Push endpoint) the provider said is dead; how many were dropped
    (0 or 1). `has_push_device` of its user follows. Runs in the caller's transaction when there is one."""
    return int(
        await fetch_scalar(conn, Q["forget_device"], {"project_id": project_id, "address": token_or_endpoint}) or 0
    )


class VapidPublicKey(BaseModel):
    """The project's VAPID public key (base64url), for `PushManager.subscribe({applicationServerKey})`."""

    public_key: str
