"""The Python SDK's device, VAPID and inbox calls against a real `lunogram serve`, sync and async."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import lunogram
import psycopg
import pytest
from lunogram import ExternalID
from psycopg.types.json import Jsonb

from helpers import Server, loopback_client, uid
from lunogram_server.messaging.providers import generate_vapid_keys

P256DH = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
AUTH = "tBHItJI5svbpez7KI4CCXg"


@pytest.fixture
def sdk(server: Server) -> Iterator[lunogram.Client]:
    with lunogram.Client(server.secret_key, base_url=server.base_url, max_retries=0) as client:
        yield client


@pytest.fixture
async def async_sdk(server: Server) -> AsyncIterator[lunogram.AsyncClient]:
    async with lunogram.AsyncClient(server.secret_key, base_url=server.base_url, max_retries=0) as client:
        yield client


def devices_of(db: psycopg.Connection[Any], user_id: str) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT device_id, os, token, endpoint, p256dh, auth, expiration_time, model, data FROM devices"
        " WHERE user_id = %s ORDER BY device_id",
        (user_id,),
    ).fetchall()


def test_devices_register(sdk: lunogram.Client, server: Server, db: psycopg.Connection[Any]) -> None:
    external = uid()
    user = sdk.users.upsert(external)
    assert user.has_push_device is False
    assert (
        sdk.users.devices.register(external, device_id="phone", os="android", token="fcm-token", model="Pixel") is None
    )
    expires = datetime.now(UTC) + timedelta(days=30)
    subscription = {
        "endpoint": "https://push.example.com/send/1",
        "expirationTime": int(expires.timestamp() * 1000),
        "keys": {"p256dh": P256DH, "auth": AUTH},
    }
    sdk.users.devices.register(ExternalID(external), device_id="browser", os="web", subscription=subscription)
    sdk.users.devices.register(external, device_id="ipad", os="ios", token="apns-token", data={"beta": True})
    rows = devices_of(db, user.id)
    assert [row[:6] for row in rows] == [
        ("browser", "web", None, "https://push.example.com/send/1", P256DH, AUTH),
        ("ipad", "ios", "apns-token", None, None, None),
        ("phone", "android", "fcm-token", None, None, None),
    ]
    assert abs((rows[0][6] - expires).total_seconds()) < 1
    assert rows[1][8] == {"beta": True}
    assert sdk.users.upsert(external).has_push_device is True

    with pytest.raises(lunogram.NotFoundError) as missing:
        sdk.users.devices.register(uid("nobody"), device_id="d", os="android", token="t")
    assert "user not found" in missing.value.detail
    with pytest.raises(lunogram.ValidationError) as refused:
        sdk.users.devices.register(
            external,
            device_id="insecure",
            os="web",
            subscription={"endpoint": "http://push.example.com/x", "keys": {"p256dh": P256DH, "auth": AUTH}},
        )
    assert "config.endpoint" in refused.value.detail
    # refused before anything is sent
    with pytest.raises(ValueError, match="FCM token"):
        sdk.users.devices.register(external, device_id="d", os="android")
    with pytest.raises(ValueError, match="subscription"):
        sdk.users.devices.register(external, device_id="d", os="web", token="t")
    with pytest.raises(ValueError, match="os"):
        sdk.users.devices.register(external, device_id="d", os="windows", token="t")  # type: ignore[arg-type]

    # a public key may register devices (a browser does)
    with lunogram.Client(server.public_key, base_url=server.base_url, max_retries=0) as public:
        assert public.users.devices.register(external, device_id="tablet", os="android", token=uid("t")) is None
    assert len(devices_of(db, user.id)) == 4


def ensure_webpush_provider(db: psycopg.Connection[Any], project_id: str) -> str:
    """The project's VAPID public key, storing a webpush provider (as the settings API stores one, less its
    sealed private key, which serving the public key does not need) when it has none."""
    row = db.execute(
        "SELECT config ->> 'public_key' FROM providers WHERE project_id = %s AND kind = 'webpush'"
        " ORDER BY is_default DESC, created_at, id LIMIT 1",
        (project_id,),
    ).fetchone()
    if row is not None:
        return str(row[0])
    public_key, _ = generate_vapid_keys()
    config = {"subject": "mailto:ops@example.com", "public_key": public_key}
    db.execute(
        "INSERT INTO providers (id, project_id, channel, kind, name, config)"
        " VALUES (%s, %s, 'push', 'webpush', %s, %s)",
        (uuid.uuid4(), project_id, uid("webpush"), Jsonb(config)),
    )
    return public_key


def test_push_vapid(sdk: lunogram.Client, server: Server, db: psycopg.Connection[Any]) -> None:
    project_id = sdk.users.upsert(uid()).project_id
    with lunogram.Client(server.public_key, base_url=server.base_url, max_retries=0) as public:
        if (
            db.execute("SELECT 1 FROM providers WHERE project_id = %s AND kind = 'webpush'", (project_id,)).fetchone()
            is None
        ):
            with pytest.raises(lunogram.NotFoundError) as missing:
                public.push.vapid()
            assert "vapid key not found" in missing.value.detail
        expected = ensure_webpush_provider(db, project_id)
        key = public.push.vapid()
    assert isinstance(key, lunogram.VapidPublicKey)
    assert key.public_key == expected


async def test_async_devices_and_vapid(async_sdk: lunogram.AsyncClient, db: psycopg.Connection[Any]) -> None:
    external = uid()
    user = await async_sdk.users.upsert(external)
    await async_sdk.users.devices.register(
        external,
        device_id="browser",
        os="web",
        subscription={"endpoint": "https://push.example.com/a", "keys": {"p256dh": P256DH, "auth": AUTH}},
    )
    assert (await async_sdk.users.upsert(external)).has_push_device is True
    expected = ensure_webpush_provider(db, user.project_id)
    assert (await async_sdk.push.vapid()).public_key == expected


def test_user_inbox_every_call(sdk: lunogram.Client, server: Server) -> None:
    external = uid()
    now = datetime.now(UTC)
    assert (
        sdk.users.inbox.post(
            [
                {
                    "target": external,
                    "identifier": "welcome",
                    "channel": "inbox",
                    "content": {"title": "Welcome", "body": "Hi"},
                    "data": {"cta": "/start"},
                    "tags": ("onboarding", "web"),
                    "priority": 1,
                    "source": "lifecycle",
                    "expires_at": now + timedelta(days=1),
                },
                {"target": [ExternalID(external)], "identifier": ExternalID("tip", "tips"), "channel": "inbox"},
                {
                    "target": external,
                    "identifier": "later",
                    "channel": "inbox",
                    "scheduled_at": now + timedelta(hours=1),
                },
            ]
        )
        is None
    )
    # the same identifier again stores nothing new
    sdk.users.inbox.post([{"target": external, "identifier": "welcome", "channel": "inbox"}])
    page = sdk.users.inbox.list(external, channel="inbox")
    assert isinstance(page, lunogram.InboxMessageList)
    assert (page.total, page.limit, page.offset) == (2, 20, 0)
    assert {m.identifier.external_id for m in page.results} == {"welcome", "tip"}
    welcome = next(m for m in page.results if m.identifier.external_id == "welcome")
    assert isinstance(welcome, lunogram.InboxMessage)
    assert welcome.content == {"title": "Welcome", "body": "Hi"}
    assert (welcome.data, welcome.tags, welcome.priority, welcome.source) == (
        {"cta": "/start"},
        ["onboarding", "web"],
        1,
        "lifecycle",
    )
    assert welcome.status == "unread"
    assert welcome.user_id is not None
    assert welcome.organization_id is None
    assert welcome.expires_at is not None
    assert welcome.expires_at.tzinfo is not None
    tip = next(m for m in page.results if m.identifier.external_id == "tip")
    assert tip.identifier.source == "tips"

    assert [
        m.identifier.external_id for m in sdk.users.inbox.list(external, channel="inbox", tags=["web"]).results
    ] == ["welcome"]
    assert sdk.users.inbox.list(external, channel="inbox", tags="web,onboarding").total == 1
    assert sdk.users.inbox.list(external, channel="inbox", priority=3).total == 1
    assert sdk.users.inbox.list(external, channel="inbox", message_source="lifecycle").total == 1
    assert len(sdk.users.inbox.list(external, channel="inbox", limit=1, offset=1).results) == 1
    assert sdk.users.inbox.list(external, channel="email").total == 0

    counted = sdk.users.inbox.count(external, channel="inbox")
    assert isinstance(counted, lunogram.InboxCount)
    assert (counted.unread, counted.total) == (2, 2)
    assert sdk.users.inbox.read(external, welcome.id) is None
    assert sdk.users.inbox.count(external, channel="inbox") == lunogram.InboxCount(unread=1, total=2)
    assert sdk.users.inbox.list(external, channel="inbox", status="read").results[0].read_at is not None
    sdk.users.inbox.archive(external, [welcome.id, tip.id])
    assert sdk.users.inbox.count(external, channel="inbox") == lunogram.InboxCount(unread=0, total=0)
    archived = sdk.users.inbox.list(external, channel="inbox", status="archived")
    assert {m.status for m in archived.results} == {"archived"}
    assert archived.total == 2

    with pytest.raises(lunogram.NotFoundError):
        sdk.users.inbox.list(uid("nobody"), channel="inbox")
    with pytest.raises(lunogram.ValidationError) as too_many:
        sdk.users.inbox.list(external, channel="inbox", limit=500)
    assert "limit" in too_many.value.detail
    with pytest.raises(ValueError, match="at most 100"):
        sdk.users.inbox.post([{"target": external, "identifier": f"m{n}", "channel": "inbox"} for n in range(101)])
    with pytest.raises(ValueError, match="needs 'channel'"):
        sdk.users.inbox.post([{"target": external, "identifier": "x"}])  # type: ignore[typeddict-item]
    with pytest.raises(ValueError, match="naive datetime"):
        sdk.users.inbox.post(
            [{"target": external, "identifier": "x", "channel": "inbox", "scheduled_at": datetime(2030, 1, 1)}]
        )

    # a public key may not post or read inboxes
    with lunogram.Client(server.public_key, base_url=server.base_url, max_retries=0) as public:
        with pytest.raises(lunogram.ForbiddenError):
            public.users.inbox.list(external, channel="inbox")
        with pytest.raises(lunogram.ForbiddenError):
            public.users.inbox.post([{"target": external, "identifier": "x", "channel": "inbox"}])


def test_organization_inbox_every_call(sdk: lunogram.Client) -> None:
    org = uid("org")
    sdk.organizations.inbox.post(
        [{"target": org, "identifier": "notice", "channel": "push", "content": {"title": "Hi"}}]
    )
    page = sdk.organizations.inbox.list(org, channel="push")
    [notice] = page.results
    assert notice.organization_id is not None
    assert notice.user_id is None
    assert sdk.organizations.inbox.count(org, channel="push") == lunogram.InboxCount(unread=1, total=1)
    sdk.organizations.inbox.read(org, [notice.id])
    assert sdk.organizations.inbox.count(org, channel="push") == lunogram.InboxCount(unread=0, total=1)
    sdk.organizations.inbox.archive(org, notice.id)
    assert sdk.organizations.inbox.count(org, channel="push") == lunogram.InboxCount(unread=0, total=0)


async def test_async_inbox(async_sdk: lunogram.AsyncClient) -> None:
    external = uid()
    await async_sdk.users.inbox.post([{"target": external, "identifier": "m", "channel": "inbox"}])
    page = await async_sdk.users.inbox.list(external, channel="inbox")
    assert [m.identifier.external_id for m in page.results] == ["m"]
    await async_sdk.users.inbox.read(external, page.results[0].id)
    assert await async_sdk.users.inbox.count(external, channel="inbox") == lunogram.InboxCount(unread=0, total=1)
    org = uid("org")
    await async_sdk.organizations.inbox.post([{"target": org, "identifier": "n", "channel": "inbox"}])
    assert (await async_sdk.organizations.inbox.count(org, channel="inbox")).total == 1


def test_get_requests_carry_no_body(server: Server) -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> None:
        seen.append(request)

    http = loopback_client(event_hooks={"request": [record]})
    with lunogram.Client(server.secret_key, base_url=server.base_url, max_retries=0, http_client=http) as client:
        external = uid()
        client.users.inbox.post([{"target": external, "identifier": "m", "channel": "inbox"}])
        client.users.inbox.list({"external_id": external, "source": "default"}, channel="inbox", tags=["a", "b"])
    http.close()
    get = seen[-1]
    assert get.method == "GET"
    assert get.content == b""
    assert "content-type" not in get.headers
    assert "idempotency-key" not in get.headers
    assert dict(get.url.params) == {"source": "default", "external_id": external, "channel": "inbox", "tags": "a,b"}
    assert "idempotency-key" in seen[0].headers
