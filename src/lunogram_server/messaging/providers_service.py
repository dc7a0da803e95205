"""Per-project provider settings: create, list, read, update, delete, choose one for a send.

Non-secret settings are stored as JSON; secret ones sealed with the server's key (crypto.py), bound to
the row's id. Secrets are write-only: answers say which secret fields are set, never their values. Every
statement is scoped by project.

For the senders: `choose` (the provider a send on a channel goes through; for push, by the device's os)
and `load` give `ProviderSettings` with the secrets opened; `ProviderRegistry` keeps one built provider
per settings version, so connections and access tokens are reused between sends.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import orjson
from psycopg import AsyncConnection, errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lunogram_server.db import fetch_scalar, load_queries
from lunogram_server.messaging.crypto import Keyring, NoEncryptionKey, Undecryptable
from lunogram_server.messaging.providers import (
    KINDS,
    Channel,
    Device,
    DeviceOs,
    Message,
    Network,
    Outcome,
    Provider,
    ProviderConfigError,
    WebPushKeys,
    build_provider,
    generate_vapid_keys,
    validate,
)

Q = load_queries("lunogram_server.messaging", "providers.sql")

MAX_PROVIDERS_PER_PROJECT = 100
MAX_SETTINGS_BYTES = 32 * 1024  # config or secrets, as JSON
MAX_RATE_PER_SECOND = 100_000.0

KindName = Literal[
    "smtp",
    "ses",
    "sendgrid",
    "mailgun",
    "postmark",
    "twilio",
    "vonage",
    "whatsapp",
    "webpush",
    "fcm",
    "apns",
    "webhook",
]
# push devices by os: the kinds that can reach them, preferred first
PUSH_KINDS: dict[DeviceOs, list[str]] = {"web": ["webpush", "fcm"], "ios": ["apns", "fcm"], "android": ["fcm"]}


class Conflict(RuntimeError):
    """A change the project's current state does not allow (a taken name, too many providers)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _not_blank(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("must not be blank")
    return value


class CreateProvider(_Strict):
    """A provider of `kind` for its channel. `config` holds the non-secret settings, `secrets` the secret
    ones (stored encrypted, never returned). `is_default` unset: default when it is the channel's first."""

    name: str = Field(min_length=1, max_length=255)
    kind: KindName
    config: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, Any] = Field(default_factory=dict)
    rate_per_second: float | None = Field(default=None, gt=0, le=MAX_RATE_PER_SECOND)
    is_default: bool | None = None

    _name = field_validator("name")(_not_blank)


class UpdateProvider(_Strict):
    """Fields left out stay as they are. `config` replaces the whole config; `secrets` is merged field by
    field (a value replaces that secret, null removes it); `rate_per_second: null` removes the limit."""

    name: str | None = Field(default=None, min_length=1, max_length=255)
    config: dict[str, Any] | None = None
    secrets: dict[str, Any] | None = None
    rate_per_second: float | None = Field(default=None, gt=0, le=MAX_RATE_PER_SECOND)
    is_default: bool | None = None

    _name = field_validator("name")(_not_blank)


class ProviderOut(BaseModel):
    id: UUID
    project_id: UUID
    channel: Channel
    kind: str
    name: str
    config: dict[str, Any]  # every non-secret setting, defaults included
    secrets_set: list[str]  # the secret fields that have a value (values are never returned)
    rate_per_second: float | None
    is_default: bool
    created_at: datetime
    updated_at: datetime


class ProviderTestWebPushKeys(_Strict):
    p256dh: str = Field(min_length=1, max_length=200)
    auth: str = Field(min_length=1, max_length=100)


class ProviderTestDevice(_Strict):
    os: DeviceOs
    token: str | None = Field(default=None, min_length=1, max_length=4096)
    endpoint: str | None = Field(default=None, min_length=1, max_length=2000)
    keys: ProviderTestWebPushKeys | None = None


class ProviderTest(_Strict):
    """Where the test message goes: an email address, a phone number, a device token or a URL. A Web Push
    test needs the subscription in `device`."""

    to: str = Field(min_length=1, max_length=4096)
    device: ProviderTestDevice | None = None
    subject: str = Field(default="Lunogram test message", max_length=998)
    text: str = Field(default="This is a test message from Lunogram: the provider works.", max_length=10_000)


class ProviderTestOutcome(BaseModel):
    status: Literal["sent", "retry", "failed"]
    provider_message_id: str | None
    error: str | None
    retry_after: float | None
    permanent_address_problem: bool


@dataclass(frozen=True)
class ProviderSettings:
    """A provider row with its secrets opened: what `build_provider` takes, and its version (`updated_at`)."""

    id: UUID
    project_id: UUID
    channel: Channel
    kind: str
    name: str
    config: dict[str, Any]
    secrets: dict[str, Any]
    rate_per_second: float | None
    is_default: bool
    updated_at: datetime


# -- sealing ------------------------------------------------------------------------------------------------


def _context(provider_id: UUID) -> bytes:
    return b"lunogram provider secrets " + provider_id.bytes


def _seal(keyring: Keyring | None, provider_id: UUID, secrets: dict[str, Any]) -> bytes | None:
    if not secrets:
        return None
    if keyring is None:
        raise NoEncryptionKey()
    return keyring.seal(orjson.dumps(secrets), _context(provider_id))


def _open(keyring: Keyring | None, provider_id: UUID, sealed: bytes | None) -> dict[str, Any]:
    if sealed is None:
        return {}
    if keyring is None:
        raise Undecryptable("this server has no encryption key to open the provider's secrets")
    opened = orjson.loads(keyring.open(bytes(sealed), _context(provider_id)))
    assert isinstance(opened, dict)
    return opened


# -- checks -------------------------------------------------------------------------------------------------


def _size_checked(name: str, value: dict[str, Any]) -> None:
    if len(orjson.dumps(value)) > MAX_SETTINGS_BYTES:
        raise ProviderConfigError(name, f"is larger than {MAX_SETTINGS_BYTES} bytes as JSON")


async def _checked(kind: str, config: dict[str, Any], secrets: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config to store, secrets to store) once a provider builds from them; ProviderConfigError otherwise.

    Stored config keeps only what was given, so defaults follow the code; secrets keep only set values."""
    _size_checked("config", config)
    _size_checked("secrets", secrets)
    parsed_config, parsed_secrets = validate(kind, config, secrets)
    provider = build_provider(kind, config, secrets)  # the kinds check keys and pairs when built
    await provider.aclose()
    stored_secrets = {
        name: value
        for name, value in parsed_secrets.model_dump(mode="json", exclude_none=True).items()
        if value not in ({}, [], "")
    }
    return parsed_config.model_dump(mode="json", exclude_unset=True), stored_secrets


def _with_vapid_keys(
    kind: str, config: dict[str, Any], secrets: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Web Push provider given no key pair gets a new one (the public key is what browsers subscribe with)."""
    if kind == "webpush" and "public_key" not in config and "private_key" not in secrets:
        public, private = generate_vapid_keys()
        return {**config, "public_key": public}, {**secrets, "private_key": private}
    return config, secrets


# -- rows ---------------------------------------------------------------------------------------------------


def _out(row: dict[str, Any]) -> ProviderOut:
    try:  # every setting, defaults included
        config = KINDS[row["kind"]].config.model_validate(row["config"]).model_dump(mode="json")
    except (KeyError, ValidationError):  # stored by a version that knew other settings: shown as stored
        config = row["config"]
    return ProviderOut(
        id=row["id"],
        project_id=row["project_id"],
        channel=row["channel"],
        kind=row["kind"],
        name=row["name"],
        config=config,
        secrets_set=sorted(row["secret_fields"]),
        rate_per_second=row["rate_per_second"],
        is_default=row["is_default"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def _row(
    conn: AsyncConnection[Any], project_id: UUID, provider_id: UUID, *, lock: bool = False
) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(
            Q["provider_get_for_update" if lock else "provider_get"], {"id": provider_id, "project_id": project_id}
        )
        return await cursor.fetchone()


async def _make_default(conn: AsyncConnection[Any], project_id: UUID, channel: str, provider_id: UUID) -> None:
    await conn.execute(Q["provider_clear_default"], {"project_id": project_id, "channel": channel, "id": provider_id})


# -- the admin operations -----------------------------------------------------------------------------------


async def create(
    conn: AsyncConnection[Any], keyring: Keyring | None, project_id: UUID, body: CreateProvider
) -> ProviderOut:
    """ProviderConfigError (400), NoEncryptionKey and Conflict (409)."""
    config, secrets = _with_vapid_keys(body.kind, body.config, body.secrets)
    config, secrets = await _checked(body.kind, config, secrets)
    provider_id = uuid.uuid4()
    sealed = _seal(keyring, provider_id, secrets)
    channel = KINDS[body.kind].channel
    async with conn.transaction():
        if await fetch_scalar(conn, Q["provider_count"], {"project_id": project_id}) >= MAX_PROVIDERS_PER_PROJECT:
            raise Conflict(f"a project has at most {MAX_PROVIDERS_PER_PROJECT} providers; delete one first")
        if body.is_default:
            await _make_default(conn, project_id, channel, provider_id)
        params = {
            "id": provider_id,
            "project_id": project_id,
            "channel": channel,
            "kind": body.kind,
            "name": body.name,
            "config": Jsonb(config),
            "secrets": sealed,
            "secret_fields": sorted(secrets),
            "rate_per_second": body.rate_per_second,
            "is_default": body.is_default,
        }
        try:
            async with conn.transaction():
                await conn.execute(Q["provider_insert"], params)
        except errors.UniqueViolation as exc:
            raise _taken(exc, body.name) from None
        row = await _row(conn, project_id, provider_id)
    assert row is not None
    return _out(row)


def _taken(exc: errors.UniqueViolation, name: str) -> Conflict:
    if exc.diag.constraint_name == "providers_default":  # two concurrent creations both made default
        return Conflict("is_default: another provider of this channel became the default meanwhile; try again")
    return Conflict(f"name: a provider named {name!r} exists already in this project")


async def page(
    conn: AsyncConnection[Any], project_id: UUID, channel: Channel | None, limit: int, offset: int
) -> list[ProviderOut]:
    async with conn.cursor(row_factory=dict_row) as cursor:
        params = {"project_id": project_id, "channel": channel, "limit": limit, "offset": offset}
        await cursor.execute(Q["provider_page"], params)
        return [_out(row) for row in await cursor.fetchall()]


async def get(conn: AsyncConnection[Any], project_id: UUID, provider_id: UUID) -> ProviderOut | None:
    row = await _row(conn, project_id, provider_id)
    return None if row is None else _out(row)


async def update(
    conn: AsyncConnection[Any], keyring: Keyring | None, project_id: UUID, provider_id: UUID, body: UpdateProvider
) -> ProviderOut | None:
    """None when there is no such provider; ProviderConfigError (400), NoEncryptionKey, Undecryptable and
    Conflict (409)."""
    given = body.model_fields_set
    async with conn.transaction():
        row = await _row(conn, project_id, provider_id, lock=True)
        if row is None:
            return None
        config, sealed, secret_fields = row["config"], row["secrets"], row["secret_fields"]
        if body.config is not None or body.secrets is not None:  # else the settings stay as stored, sealed
            secrets = _open(keyring, provider_id, sealed)
            for name, value in (body.secrets or {}).items():
                if value is None:
                    secrets.pop(name, None)
                else:
                    secrets[name] = value
            config, secrets = await _checked(row["kind"], body.config if body.config is not None else config, secrets)
            sealed, secret_fields = _seal(keyring, provider_id, secrets), sorted(secrets)
        is_default = row["is_default"] if body.is_default is None else body.is_default
        if is_default and not row["is_default"]:
            await _make_default(conn, project_id, row["channel"], provider_id)
        params = {
            "id": provider_id,
            "project_id": project_id,
            "name": body.name if body.name is not None else row["name"],
            "config": Jsonb(config),
            "secrets": sealed,
            "secret_fields": secret_fields,
            "rate_per_second": body.rate_per_second if "rate_per_second" in given else row["rate_per_second"],
            "is_default": is_default,
        }
        try:
            async with conn.transaction():
                await conn.execute(Q["provider_update"], params)
        except errors.UniqueViolation as exc:
            raise _taken(exc, str(params["name"])) from None
        updated = await _row(conn, project_id, provider_id)
    assert updated is not None
    return _out(updated)


async def delete(conn: AsyncConnection[Any], project_id: UUID, provider_id: UUID) -> bool:
    cursor = await conn.execute(Q["provider_delete"], {"id": provider_id, "project_id": project_id})
    return cursor.rowcount == 1


# -- for the senders ----------------------------------------------------------------------------------------


def _settings(keyring: Keyring | None, row: dict[str, Any]) -> ProviderSettings:
    return ProviderSettings(
        id=row["id"],
        project_id=row["project_id"],
        channel=row["channel"],
        kind=row["kind"],
        name=row["name"],
        config=row["config"],
        secrets=_open(keyring, row["id"], row["secrets"]),
        rate_per_second=row["rate_per_second"],
        is_default=row["is_default"],
        updated_at=row["updated_at"],
    )


async def load(
    conn: AsyncConnection[Any], keyring: Keyring | None, project_id: UUID, provider_id: UUID
) -> ProviderSettings | None:
    """A provider's settings with its secrets opened; Undecryptable when the keys cannot open them."""
    row = await _row(conn, project_id, provider_id)
    return None if row is None else _settings(keyring, row)


async def choose(
    conn: AsyncConnection[Any],
    keyring: Keyring | None,
    project_id: UUID,
    channel: Channel,
    *,
    os: DeviceOs | None = None,
) -> ProviderSettings | None:
    """The provider a send on `channel` goes through: the channel's default, else its oldest. For push
    with a device's `os`, only kinds that reach it count (web: webpush then fcm; ios: apns then fcm;
    android: fcm). None when the project has none."""
    kinds = PUSH_KINDS[os] if channel == "push" and os is not None else None
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(Q["provider_choose"], {"project_id": project_id, "channel": channel, "kinds": kinds})
        row = await cursor.fetchone()
    return None if row is None else _settings(keyring, row)


class ProviderRegistry:
    """Built providers, one per provider id and settings version, reused between sends of one process.

    A provider whose settings changed is built again on its next use and the old instance closed.
    `allowed_networks` are the private networks webhook and Web Push URLs may reach (none by default).
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, allowed_networks: Sequence[Network] = ()) -> None:
        self._ssl_context = ssl_context
        self._allowed = list(allowed_networks)
        self._built: dict[UUID, tuple[datetime, Provider]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def provider(self, settings: ProviderSettings) -> Provider:
        """The built provider for these settings; ProviderConfigError if they no longer build."""
        known = self._built.get(settings.id)
        if known is not None and known[0] == settings.updated_at:
            return known[1]
        built = build_provider(
            settings.kind,
            settings.config,
            settings.secrets,
            ssl_context=self._ssl_context,
            allowed_networks=self._allowed,
        )
        self._built[settings.id] = (settings.updated_at, built)
        if known is not None:
            task = asyncio.get_running_loop().create_task(known[1].aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return built

    async def aclose(self) -> None:
        built, self._built = self._built, {}
        await asyncio.gather(
            *(provider.aclose() for _, provider in built.values()), *self._closing, return_exceptions=True
        )


async def send_test_message(registry: ProviderRegistry, settings: ProviderSettings, body: ProviderTest) -> Outcome:
    """Send a test message through a provider, by its channel."""
    device = None
    if body.device is not None:
        keys = WebPushKeys(body.device.keys.p256dh, body.device.keys.auth) if body.device.keys else None
        device = Device(os=body.device.os, token=body.device.token, endpoint=body.device.endpoint, keys=keys)
    elif settings.channel == "push":
        os: DeviceOs = "ios" if settings.kind == "apns" else "android"
        device = Device(os=os, token=body.to)
    message = Message(
        id=f"test-{uuid.uuid4()}",
        channel=settings.channel,
        to=body.to,
        subject=body.subject,
        text=body.text,
        html=f"<p>{_escape(body.text)}</p>",
        body=body.text,
        title=body.subject,
        url=body.to if settings.channel == "webhook" else None,
        json_body={"test": True, "text": body.text} if settings.channel == "webhook" else None,
        device=device,
    )
    return await registry.provider(settings).send(message)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


async def reseal_all(conn: AsyncConnection[Any], keyring: Keyring, *, batch: int = 500) -> int:
    """Re-seal every provider's secrets sealed with an old key under the current one (the last step of a
    key rotation); returns how many were re-sealed. Safe to run while servers send."""
    done = 0
    after = UUID(int=0)
    while True:
        rows = await (await conn.execute(Q["provider_sealed_batch"], {"after": after, "limit": batch})).fetchall()
        if not rows:
            return done
        for provider_id, sealed in rows:
            after = provider_id
            sealed = bytes(sealed)
            if keyring.sealed_with_current(sealed):
                continue
            plaintext = keyring.open(sealed, _context(provider_id))
            fresh = keyring.seal(plaintext, _context(provider_id))
            cursor = await conn.execute(Q["provider_reseal"], {"id": provider_id, "secrets": fresh, "old": sealed})
            done += cursor.rowcount
