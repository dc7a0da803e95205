"""Push devices, the VAPID key and the in-app inbox through the Client API of a real server: validation
(400 naming the field, nothing stored), who may call what, idempotency, the feeds' filters, merges and
deletes, project isolation, the caps, and the functions the senders call (devices_of, forget_device,
deliver) against the same database."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from helpers import Server, ident, uid
from lunogram_server.messaging import devices as devices_service
from lunogram_server.messaging import inbox as inbox_service
from lunogram_server.messaging.providers import generate_vapid_keys

P256DH = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
AUTH = "tBHItJI5svbpez7KI4CCXg"


def upsert(client: httpx.Client, *identifiers: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/client/users", json={"identifier": list(identifiers)})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def user_detail(client: httpx.Client, external_id: str) -> dict[str, Any]:
    response = client.get("/admin/users", params={"external_id": external_id})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def android(user: str, device_id: str = "phone", token: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "identifier": [ident(user)],
        "device_id": device_id,
        "os": "android",
        "config": {"token": token or uid("fcm")},
        **extra,
    }


def web(user: str, device_id: str = "browser", endpoint: str | None = None, **config: Any) -> dict[str, Any]:
    subscription = {
        "endpoint": endpoint or f"https://push.example.com/send/{uid()}",
        "keys": {"p256dh": P256DH, "auth": AUTH},
    }
    return {"identifier": [ident(user)], "device_id": device_id, "os": "web", "config": {**subscription, **config}}


def assert_empty(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.content == b""
    assert "json" not in response.headers.get("content-type", "")


def assert_problem(response: httpx.Response, status: int, *mentions: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    for words in mentions:
        assert words in problem["detail"], problem
    return problem


def device_rows(db: psycopg.Connection[Any], user_id: str) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT device_id, os, token, endpoint, p256dh, auth, data, model FROM devices WHERE user_id = %s"
        " ORDER BY device_id",
        (user_id,),
    ).fetchall()


def inbox_rows(db: psycopg.Connection[Any], owner_id: str) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT identifier_external_id, channel FROM inbox_messages WHERE owner_id = %s ORDER BY 1, 2", (owner_id,)
    ).fetchall()


# -- devices ------------------------------------------------------------------------------------------------


REFUSED_DEVICES = [
    ({"os": None}, "os: os is required"),
    ({"os": "windows"}, "os: os must be ios, android, or web"),
    ({"config": {}}, "config.token: config.token is required for fcm/apns"),
    ({"os": "ios", "config": {"token": ""}}, "config.token: config.token is required for fcm/apns"),
    (
        {"os": "web", "config": {"keys": {"p256dh": P256DH, "auth": AUTH}}},
        "config.endpoint: config.endpoint is required for web",
    ),
    (
        {"os": "web", "config": {"endpoint": "https://push.example.com/x"}},
        "config.keys: config.keys.auth and config.keys.p256dh are required for web",
    ),
    (
        {"os": "web", "config": {"endpoint": "https://push.example.com/x", "keys": {"p256dh": P256DH, "auth": ""}}},
        "config.keys: config.keys.auth and config.keys.p256dh are required for web",
    ),
    (
        {"os": "web", "config": {"endpoint": "http://push.example.com/x", "keys": {"p256dh": P256DH, "auth": AUTH}}},
        "config.endpoint: must be an https URL",
    ),
    ({"data": [1, 2]}, "data: data must be a JSON object"),
    ({"data": "text"}, "data: data must be a JSON object"),
    ({"device_id": None}, "device_id: must be a string"),
    ({"device_id": " "}, "device_id: must not be blank"),
    ({"identifier": []}, "identifier: must contain at least 1 item(s)"),
    ({"config": {"token": "t", "tokn": "typo"}}, "config.tokn: is not a known field"),
    ({"config": {"token": "t", "expiration_time": "2030-01-01T00:00:00"}}, "config.expiration_time"),
    (
        {"os": "web", "config": {**web("x")["config"], "expiration_time": "9999-12-31T23:00:00-05:00"}},
        "config.expiration_time: must lie between the years 1 and 9998 in UTC",
    ),
]


@pytest.mark.parametrize(("change", "detail"), REFUSED_DEVICES)
def test_device_registration_refusals_name_the_field(
    client: httpx.Client, db: psycopg.Connection[Any], change: dict[str, Any], detail: str
) -> None:
    external = uid()
    user = upsert(client, ident(external))
    body = {**android(external), **change}
    body = {key: value for key, value in body.items() if value is not None or key != "os"}
    assert_problem(client.post("/client/users/devices", json=body), 400, detail)
    assert device_rows(db, user["id"]) == []
    assert user_detail(client, external)["has_push_device"] is False


def test_device_of_an_unknown_user_is_404_and_creates_nothing(client: httpx.Client) -> None:
    external = uid()
    assert_problem(client.post("/client/users/devices", json=android(external)), 404, "user not found")
    assert client.get("/admin/users", params={"external_id": external}).status_code == 404


def test_device_registration_upserts_by_device_id_and_sets_has_push_device(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    external = uid()
    user = upsert(client, ident(external))
    assert user["has_push_device"] is False
    first = android(external, token="token-1", os_version="14", model="Pixel 8", app_version="2.1", data={"beta": True})
    assert_empty(client.post("/client/users/devices", json=first), 201)
    after = user_detail(client, external)
    assert after["has_push_device"] is True
    assert after["version"] == user["version"] + 1

    # the same device_id again: updated in place, not a second device; has_push_device unchanged (no new version)
    assert_empty(client.post("/client/users/devices", json=android(external, token="token-2", model="Pixel 9")), 201)
    assert device_rows(db, user["id"]) == [("phone", "android", "token-2", None, None, None, {}, "Pixel 9")]
    assert user_detail(client, external)["version"] == after["version"]

    # a second device, a browser's Web Push subscription (epoch-millisecond expiration as browsers give it)
    expires_ms = int((datetime.now(UTC) + timedelta(days=30)).timestamp() * 1000)
    subscription = web(external, endpoint="https://push.example.com/send/abc", expiration_time=expires_ms)
    assert_empty(client.post("/client/users/devices", json=subscription), 201)
    rows = device_rows(db, user["id"])
    assert [row[:6] for row in rows] == [
        ("browser", "web", None, "https://push.example.com/send/abc", P256DH, AUTH),
        ("phone", "android", "token-2", None, None, None),
    ]
    stored = db.execute("SELECT expiration_time FROM devices WHERE user_id = %s AND os = 'web'", (user["id"],))
    assert abs(stored.fetchone()[0].timestamp() * 1000 - expires_ms) < 1  # type: ignore[index]

    # the bare alias (no /api) answers the same
    bare = httpx.post(
        f"{client.base_url.scheme}://{client.base_url.host}:{client.base_url.port}/client/users/devices",
        json=android(external, device_id="tablet"),
        headers={"Authorization": client.headers["authorization"]},
    )
    assert_empty(bare, 201)
    assert len(device_rows(db, user["id"])) == 3


def test_a_push_address_moves_to_the_user_who_registers_it_last(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    alice, bob = uid("alice"), uid("bob")
    alice_id, bob_id = upsert(client, ident(alice))["id"], upsert(client, ident(bob))["id"]
    shared = uid("token")
    assert_empty(client.post("/client/users/devices", json=android(alice, token=shared)), 201)
    assert user_detail(client, alice)["has_push_device"] is True
    # bob signs in on the same phone
    assert_empty(client.post("/client/users/devices", json=android(bob, device_id="bobs-phone", token=shared)), 201)
    assert device_rows(db, alice_id) == []
    assert [row[0] for row in device_rows(db, bob_id)] == ["bobs-phone"]
    assert user_detail(client, alice)["has_push_device"] is False
    assert user_detail(client, bob)["has_push_device"] is True


def test_devices_are_capped_per_user_keeping_the_newest(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    assert db.execute("SELECT lunogram_max_devices_per_user()").fetchone() == (devices_service.MAX_DEVICES_PER_USER,)
    external = uid()
    user_id = upsert(client, ident(external))["id"]
    for n in range(devices_service.MAX_DEVICES_PER_USER + 1):
        assert_empty(client.post("/client/users/devices", json=android(external, device_id=f"d{n:03d}")), 201)
    kept = [row[0] for row in device_rows(db, user_id)]
    assert len(kept) == devices_service.MAX_DEVICES_PER_USER
    assert "d000" not in kept
    assert "d100" in kept


def test_device_registration_honours_an_idempotency_key(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    external = uid()
    user_id = upsert(client, ident(external))["id"]
    key = str(uuid.uuid4())
    body = android(external, token="idem-token")
    for _ in range(2):
        assert_empty(client.post("/client/users/devices", json=body, headers={"Idempotency-Key": key}), 201)
    assert len(device_rows(db, user_id)) == 1
    changed = android(external, token="other-token")
    assert_problem(client.post("/client/users/devices", json=changed, headers={"Idempotency-Key": key}), 409)


# -- who may call what --------------------------------------------------------------------------------------


def test_a_public_key_registers_devices_but_cannot_touch_inboxes(
    server: Server, client: httpx.Client, public_client: httpx.Client
) -> None:
    external = uid()
    upsert(client, ident(external))
    assert_empty(public_client.post("/client/users/devices", json=android(external)), 201)
    assert user_detail(client, external)["has_push_device"] is True
    # the VAPID key is readable with a public key (this project has no webpush provider: 404, not 403)
    assert_problem(public_client.get("/client/push/vapid"), 404, "vapid key not found")

    message = {"target": [ident(external)], "identifier": ident(uid("m")), "channel": "inbox"}
    query = {"external_id": external, "channel": "inbox"}
    for plural in ("users", "organizations"):
        assert_problem(public_client.post(f"/client/{plural}/inbox", json=[message]), 403, "secret key")
        assert_problem(public_client.get(f"/client/{plural}/inbox", params=query), 403, "--allow read")
        assert_problem(public_client.get(f"/client/{plural}/inbox/count", params=query), 403, "--allow read")
        for mark in ("read", "archived"):
            refs = [{"target": [ident(external)], "message_id": str(uuid.uuid4())}]
            assert_problem(public_client.post(f"/client/{plural}/inbox/{mark}", json=refs), 403, "--allow read")
    # without a key: 401 everywhere
    assert httpx.get(f"{server.base_url}/client/push/vapid").status_code == 401
    assert httpx.post(f"{server.base_url}/client/users/devices", json=android(external)).status_code == 401


def test_a_public_key_widened_with_read_reads_inboxes(server: Server, client: httpx.Client) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNOGRAM_") and k != "DATABASE_URL"}
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "lunogram_server",
            "keys",
            "create",
            "--public",
            "--allow",
            "read",
            "--database-url",
            server.database_url,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    [key] = re.findall(r"^(pk_[A-Za-z0-9_-]{16,})\s*$", made.stdout, re.MULTILINE)
    external = uid()
    post_messages(client, "users", [message(external, "m1")])
    query = {"external_id": external, "channel": "inbox"}
    with server.client(key) as reader:
        assert ids(feed(reader, "users", external)) == ["m1"]
        assert reader.get("/client/users/inbox/count", params=query).json() == {"unread": 1, "total": 1}
        refs = [{"target": [ident(external)], "message_id": feed(reader, "users", external)["results"][0]["id"]}]
        assert_empty(reader.post("/client/users/inbox/read", json=refs), 202)
        assert reader.get("/client/users/inbox/count", params=query).json() == {"unread": 0, "total": 1}
        assert_problem(reader.post("/client/users/inbox", json=[message(external, "m2")]), 403, "secret key")


# -- the VAPID key ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(server_factory: Callable[..., Server]) -> Server:
    """A server with an encryption key, so that webpush providers (a secret private key) can be created."""
    return server_factory(extra_env={"LUNOGRAM_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode()})


def test_vapid_key_is_the_default_webpush_providers(keyed: Server) -> None:
    with keyed.client() as admin, keyed.client(keyed.public_key) as browser:
        assert_problem(browser.get("/client/push/vapid"), 404, "vapid key not found")
        # a non-webpush push provider is not a VAPID key
        fcm = admin.post(
            "/admin/providers",
            json={
                "name": uid("fcm"),
                "kind": "fcm",
                "config": {"project_id": "demo"},
                "secrets": {"service_account": fcm_account()},
            },
        )
        assert fcm.status_code == 201, fcm.text
        assert_problem(browser.get("/client/push/vapid"), 404, "vapid key not found")

        public, private = generate_vapid_keys()
        first = admin.post(
            "/admin/providers",
            json={
                "name": uid("webpush"),
                "kind": "webpush",
                "config": {"subject": "mailto:ops@example.com", "public_key": public},
                "secrets": {"private_key": private},
            },
        )
        assert first.status_code == 201, first.text
        answer = browser.get("/client/push/vapid")
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == {"public_key": public}

        # a second webpush provider made the default wins; generated keys are served the same way
        second = admin.post(
            "/admin/providers",
            json={
                "name": uid("webpush"),
                "kind": "webpush",
                "config": {"subject": "mailto:ops@example.com"},
                "is_default": True,
            },
        )
        assert second.status_code == 201, second.text
        assert browser.get("/client/push/vapid").json() == {"public_key": second.json()["config"]["public_key"]}
        assert second.json()["config"]["public_key"] != public


def fcm_account() -> dict[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "demo",
        "private_key": pem,
        "client_email": "sender@demo.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


# -- the inbox ----------------------------------------------------------------------------------------------


def message(target: str, identifier: str, channel: str = "inbox", **fields: Any) -> dict[str, Any]:
    return {"target": [ident(target)], "identifier": ident(identifier), "channel": channel, **fields}


def post_messages(client: httpx.Client, plural: str, messages: list[dict[str, Any]]) -> None:
    assert_empty(client.post(f"/client/{plural}/inbox", json=messages), 202)


def feed(client: httpx.Client, plural: str, external_id: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/client/{plural}/inbox", params={"external_id": external_id, "channel": "inbox", **params})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    result: dict[str, Any] = response.json()
    return result


def ids(page: dict[str, Any]) -> list[str]:
    return [item["identifier"]["external_id"] for item in page["results"]]


def count(client: httpx.Client, plural: str, external_id: str, channel: str = "inbox") -> dict[str, Any]:
    response = client.get(f"/client/{plural}/inbox/count", params={"external_id": external_id, "channel": channel})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_inbox_messages_are_idempotent_by_identifier_and_shaped(client: httpx.Client) -> None:
    external = uid()
    now = datetime.now(UTC)
    first = message(
        external,
        "welcome",
        content={"title": "Welcome", "body": "Hello"},
        data={"cta": "/start"},
        tags=["onboarding", "web"],
        priority=1,
        source="lifecycle",
        expires_at=(now + timedelta(days=7)).isoformat(),
    )
    post_messages(client, "users", [first])  # the user did not exist: created, as by any write
    user = user_detail(client, external)
    # the same identifier again (changed content): nothing new; another channel is another message
    post_messages(client, "users", [{**first, "content": {"title": "Changed"}}, message(external, "welcome", "email")])
    page = feed(client, "users", external)
    assert page["total"] == 1
    assert page["limit"] == 20
    assert page["offset"] == 0
    [item] = page["results"]
    assert item["identifier"] == {"source": "default", "external_id": "welcome"}
    assert item["external_id"] == "welcome"
    assert item["user_id"] == user["id"]
    assert "organization_id" not in item
    assert item["project_id"] == user["project_id"]
    assert (item["channel"], item["content"], item["data"]) == (
        "inbox",
        {"title": "Welcome", "body": "Hello"},
        {"cta": "/start"},
    )
    assert (item["tags"], item["priority"], item["source"], item["status"]) == (
        ["onboarding", "web"],
        1,
        "lifecycle",
        "unread",
    )
    assert item["read_at"] is None
    assert item["archived_at"] is None
    assert datetime.fromisoformat(item["expires_at"]) > now
    assert datetime.fromisoformat(item["scheduled_at"]) <= datetime.fromisoformat(item["created_at"]) + timedelta(
        seconds=1
    )
    uuid.UUID(item["id"])
    assert ids(feed(client, "users", external, channel="email")) == ["welcome"]

    # an offset PostgreSQL would not take (Python does) is stored as the same instant
    far = message(external, "far-offset", scheduled_at="2020-01-01T23:00:00+23:30")
    post_messages(client, "users", [far])
    shown = next(m for m in feed(client, "users", external)["results"] if m["external_id"] == "far-offset")
    assert datetime.fromisoformat(shown["scheduled_at"]) == datetime(2019, 12, 31, 23, 30, tzinfo=UTC)

    # defaults: priority 3, no tags, empty content and data, no source
    post_messages(client, "users", [message(external, "plain")])
    plain = feed(client, "users", external, limit=1)["results"][0]
    assert (plain["priority"], plain["tags"], plain["content"], plain["data"], plain["source"]) == (3, [], {}, {}, None)


def test_inbox_feed_filters_and_pages(client: httpx.Client) -> None:
    external = uid()
    now = datetime.now(UTC)
    messages = [
        message(
            external,
            f"m{n}",
            tags=["a", "b"] if n % 2 else ["a"],
            priority=1 + n % 5,
            source="s1" if n < 5 else "s2",
            scheduled_at=(now - timedelta(minutes=10 - n)).isoformat(),
        )
        for n in range(10)
    ]
    messages.append(message(external, "future", scheduled_at=(now + timedelta(hours=1)).isoformat()))
    messages.append(message(external, "expired", expires_at=(now - timedelta(seconds=1)).isoformat()))
    messages.append(message(external, "elsewhere", "push"))
    post_messages(client, "users", messages)

    everything = feed(client, "users", external)
    assert ids(everything) == [f"m{n}" for n in range(9, -1, -1)], "newest first; future, expired, other channel hidden"
    assert everything["total"] == 10
    paged = feed(client, "users", external, limit=3, offset=3)
    assert ids(paged) == ["m6", "m5", "m4"]
    assert paged["total"] == 10
    assert (paged["limit"], paged["offset"]) == (3, 3)
    assert feed(client, "users", external, offset=50)["results"] == []
    assert ids(feed(client, "users", external, tags="b")) == ["m9", "m7", "m5", "m3", "m1"]
    assert ids(feed(client, "users", external, tags="a, b")) == ["m9", "m7", "m5", "m3", "m1"]
    assert ids(feed(client, "users", external, tags="a,c")) == []
    assert ids(feed(client, "users", external, priority=2)) == ["m6", "m1"]
    assert ids(feed(client, "users", external, message_source="s1")) == ["m4", "m3", "m2", "m1", "m0"]
    assert count(client, "users", external) == {"unread": 10, "total": 10}
    assert count(client, "users", external, "push") == {"unread": 1, "total": 1}


def test_inbox_read_and_archive(client: httpx.Client) -> None:
    external, stranger = uid(), uid("stranger")
    post_messages(client, "users", [message(external, f"m{n}") for n in range(3)] + [message(stranger, "theirs")])
    by_name = {item["identifier"]["external_id"]: item["id"] for item in feed(client, "users", external)["results"]}
    theirs = feed(client, "users", stranger)["results"][0]["id"]

    read = [
        {"target": [ident(external)], "message_id": by_name["m0"]},
        {"target": [ident(external)], "message_id": theirs},
    ]
    read.append({"target": [ident(external)], "message_id": str(uuid.uuid4())})  # unknown: skipped
    assert_empty(client.post("/client/users/inbox/read", json=read), 202)
    assert count(client, "users", external) == {"unread": 2, "total": 3}
    assert count(client, "users", stranger) == {"unread": 1, "total": 1}, "another user's message is not theirs to mark"
    assert ids(feed(client, "users", external, status="read")) == ["m0"]
    assert ids(feed(client, "users", external, status="unread")) == ["m2", "m1"]
    first_read = feed(client, "users", external, status="read")["results"][0]
    assert first_read["status"] == "read"
    assert first_read["read_at"] is not None

    archive = [{"target": [ident(external)], "message_id": by_name[name]} for name in ("m0", "m1")]
    assert_empty(client.post("/client/users/inbox/archived", json=archive), 202)
    assert count(client, "users", external) == {"unread": 1, "total": 1}
    assert ids(feed(client, "users", external)) == ["m2"], "archived ones leave the default feed"
    archived = feed(client, "users", external, status="archived")
    assert ids(archived) == ["m1", "m0"]
    assert {item["status"] for item in archived["results"]} == {"archived"}
    # marking again changes nothing (read_at stays the first one)
    assert_empty(client.post("/client/users/inbox/read", json=read[:1]), 202)
    again = next(
        item for item in feed(client, "users", external, status="archived")["results"] if item["id"] == by_name["m0"]
    )
    assert again["read_at"] == first_read["read_at"]


def test_organization_inbox(client: httpx.Client) -> None:
    org, member = uid("org"), uid("member")
    assert (
        client.post(
            "/client/organizations/users",
            json={"organization": {"identifier": [ident(org)]}, "user": {"identifier": [ident(member)]}},
        ).status_code
        == 200
    )
    post_messages(client, "organizations", [message(org, "notice", content={"title": "Maintenance"})])
    page = feed(client, "organizations", org)
    [item] = page["results"]
    assert item["organization_id"]
    assert "user_id" not in item
    assert count(client, "organizations", org) == {"unread": 1, "total": 1}
    assert feed(client, "users", member)["results"] == [], "an organization's messages are its own feed"
    assert_empty(
        client.post("/client/organizations/inbox/read", json=[{"target": [ident(org)], "message_id": item["id"]}]), 202
    )
    assert count(client, "organizations", org) == {"unread": 0, "total": 1}
    assert_problem(
        client.get("/client/organizations/inbox", params={"external_id": uid("nobody"), "channel": "inbox"}),
        404,
        "organization not found",
    )


REFUSED_MESSAGES = [
    ({"channel": None}, "[0].channel: is required"),
    ({"channel": "fax"}, "[0].channel"),
    ({"identifier": None}, "[0].identifier: is required"),
    ({"target": []}, "[0].target: must contain at least 1 item(s)"),
    ({"priority": 6}, "[0].priority"),
    ({"priority": 0}, "[0].priority"),
    ({"tags": ["ok", " "]}, "[0].tags[1]: must not be blank"),
    ({"content": [1]}, "[0].content: must be an object"),
    ({"scheduled_at": "2030-01-01T00:00:00"}, "[0].scheduled_at: must include a timezone offset"),
    (
        {"scheduled_at": "2030-01-02T00:00:00Z", "expires_at": "2030-01-01T00:00:00Z"},
        "[0].expires_at: must be after scheduled_at",
    ),
    ({"colour": "red"}, "[0].colour: is not a known field"),
    ({"expires_at": "9999-12-31T23:00:00-05:00"}, "[0].expires_at: must lie between the years 1 and 9998 in UTC"),
    ({"scheduled_at": 1700000000}, "[0].scheduled_at: must be an RFC 3339 timestamp"),
]


@pytest.mark.parametrize(("change", "detail"), REFUSED_MESSAGES)
def test_inbox_message_refusals_name_the_field(client: httpx.Client, change: dict[str, Any], detail: str) -> None:
    external = uid()
    body = {key: value for key, value in {**message(external, "m"), **change}.items() if value is not None}
    assert_problem(client.post("/client/users/inbox", json=[body]), 400, detail)
    assert client.get("/admin/users", params={"external_id": external}).status_code == 404, "nothing stored"


def test_inbox_batch_and_query_limits(client: httpx.Client) -> None:
    external = uid()
    assert_problem(
        client.post("/client/users/inbox", json=[message(external, f"m{n}") for n in range(101)]),
        400,
        "batch size exceeds maximum of 100",
    )
    assert_problem(client.post("/client/users/inbox", json=[]), 400, "body: must contain at least 1 item(s)")
    assert_problem(client.post("/client/users/inbox", json={"target": []}), 400, "body: must be an array")
    big = {"blob": "x" * 70_000}
    assert_problem(client.post("/client/users/inbox", json=[message(external, "m", data=big)]), 413, "[0].data")
    refs = [{"target": [ident(external)], "message_id": str(uuid.uuid4())}] * 101
    assert_problem(client.post("/client/users/inbox/read", json=refs), 400, "batch size exceeds maximum of 100")
    assert_problem(
        client.post("/client/users/inbox/archived", json=[{"target": [ident(external)], "message_id": "nope"}]),
        400,
        "[0].message_id: must be a UUID",
    )
    assert client.get("/admin/users", params={"external_id": external}).status_code == 404, "nothing stored"

    post_messages(client, "users", [message(external, "m")])
    base = {"external_id": external, "channel": "inbox"}
    for params, detail in (
        ({"external_id": external}, "channel"),
        ({**base, "channel": "fax"}, "channel"),
        ({"channel": "inbox"}, "external_id"),
        ({**base, "limit": 101}, "limit"),
        ({**base, "limit": 0}, "limit"),
        ({**base, "offset": -1}, "offset"),
        ({**base, "status": "deleted"}, "status"),
        ({**base, "priority": 9}, "priority"),
        ({**base, "external_id": "a\x00b"}, "external_id"),
        ({**base, "message_source": "\x00"}, "message_source"),
        ({**base, "tags": ",".join(f"t{n}" for n in range(21))}, "tags: at most 20 tags"),
    ):
        assert_problem(client.get("/client/users/inbox", params=params), 400, detail)
    assert_problem(client.get("/client/users/inbox/count", params={"external_id": external}), 400, "channel")
    assert_problem(client.get("/client/users/inbox", params={**base, "external_id": uid()}), 404, "user not found")
    assert_problem(
        client.get("/client/users/inbox/count", params={**base, "external_id": uid()}), 404, "user not found"
    )


def test_inbox_is_capped_per_target_and_channel_keeping_the_newest(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    cap = inbox_service.MAX_INBOX_MESSAGES
    assert db.execute("SELECT lunogram_max_inbox_messages()").fetchone() == (cap,)
    external = uid()
    start = datetime.now(UTC) - timedelta(days=1)
    every = [
        message(external, f"m{n:04d}", scheduled_at=(start + timedelta(seconds=n)).isoformat()) for n in range(cap + 1)
    ]
    for chunk in range(0, len(every), 100):
        post_messages(client, "users", every[chunk : chunk + 100])
    post_messages(client, "users", [message(external, "other-channel", "sms")])
    assert count(client, "users", external) == {"unread": cap, "total": cap}
    assert count(client, "users", external, "sms") == {"unread": 1, "total": 1}
    oldest = feed(client, "users", external, limit=1, offset=cap - 1)
    assert ids(oldest) == ["m0001"], "the oldest went"


# -- merges, deletes, projects ------------------------------------------------------------------------------


def test_a_merge_moves_devices_and_inbox_to_the_survivor(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    a, b = uid("a"), uid("b")
    survivor = upsert(client, ident(a))
    merged = upsert(client, ident(b))
    assert_empty(client.post("/client/users/devices", json=android(a, device_id="shared-id", token=uid("old"))), 201)
    assert_empty(
        client.post("/client/users/devices", json=android(b, device_id="shared-id", token="newest-token")), 201
    )
    assert_empty(client.post("/client/users/devices", json=web(b, device_id="laptop")), 201)
    post_messages(client, "users", [message(a, "both"), message(a, "only-a"), message(b, "both"), message(b, "only-b")])

    assert upsert(client, ident(a), ident(b))["id"] == survivor["id"]
    rows = device_rows(db, survivor["id"])
    assert [(row[0], row[2]) for row in rows] == [("laptop", None), ("shared-id", "newest-token")], (
        "the newer device_id wins"
    )
    assert device_rows(db, merged["id"]) == []
    assert user_detail(client, a)["has_push_device"] is True
    assert sorted(ids(feed(client, "users", a))) == ["both", "only-a", "only-b"]
    assert inbox_rows(db, merged["id"]) == []

    # a merge of a user without devices into one without: has_push_device stays false; with: becomes true
    c, d = uid("c"), uid("d")
    upsert(client, ident(c))
    upsert(client, ident(d))
    assert_empty(client.post("/client/users/devices", json=android(d)), 201)
    assert upsert(client, ident(c), ident(d))["has_push_device"] is True


def test_an_organization_merge_moves_its_inbox(client: httpx.Client) -> None:
    a, b = uid("orga"), uid("orgb")
    for org in (a, b):
        assert client.post("/client/organizations", json={"identifier": [ident(org)]}).status_code == 200
    post_messages(client, "organizations", [message(a, "x"), message(b, "y"), message(b, "x")])
    assert client.post("/client/organizations", json={"identifier": [ident(a), ident(b)]}).status_code == 200
    assert sorted(ids(feed(client, "organizations", a))) == ["x", "y"]


def test_deleting_a_user_removes_its_devices_and_inbox(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    external = uid()
    user_id = upsert(client, ident(external))["id"]
    assert_empty(client.post("/client/users/devices", json=android(external)), 201)
    post_messages(client, "users", [message(external, "m")])
    assert client.request("DELETE", "/client/users", json={"identifier": [ident(external)]}).status_code == 204
    assert device_rows(db, user_id) == []
    assert inbox_rows(db, user_id) == []
    assert_problem(client.get("/client/users/inbox", params={"external_id": external, "channel": "inbox"}), 404)


def test_projects_are_isolated(client: httpx.Client, b: httpx.Client, db: psycopg.Connection[Any]) -> None:
    external = uid()
    user_id = upsert(client, ident(external))["id"]
    assert_empty(client.post("/client/users/devices", json=android(external, token="project-a-token")), 201)
    post_messages(client, "users", [message(external, "secret-of-a")])
    message_id = feed(client, "users", external)["results"][0]["id"]

    # project B does not see A's user, devices or messages, and cannot mark them
    assert_problem(b.post("/client/users/devices", json=android(external)), 404, "user not found")
    assert_problem(b.get("/client/users/inbox", params={"external_id": external, "channel": "inbox"}), 404)
    other_id = upsert(b, ident(external))["id"]
    assert other_id != user_id
    assert feed(b, "users", external)["results"] == []
    assert_empty(
        b.post("/client/users/inbox/read", json=[{"target": [ident(external)], "message_id": message_id}]), 202
    )
    assert count(client, "users", external) == {"unread": 1, "total": 1}
    # the same token in B is B's own device: A keeps its
    assert_empty(b.post("/client/users/devices", json=android(external, token="project-a-token")), 201)
    assert len(device_rows(db, user_id)) == 1
    assert len(device_rows(db, other_id)) == 1


# -- for the senders ----------------------------------------------------------------------------------------


def test_sender_functions(client: httpx.Client, server: Server) -> None:
    alice, bob = uid("alice"), uid("bob")
    alice_user, bob_user = upsert(client, ident(alice)), upsert(client, ident(bob))
    project_id = uuid.UUID(alice_user["project_id"])
    alice_id, bob_id = uuid.UUID(alice_user["id"]), uuid.UUID(bob_user["id"])
    token = uid("fcm")
    assert_empty(client.post("/client/users/devices", json=android(alice, token=token)), 201)
    assert_empty(client.post("/client/users/devices", json=web(alice, endpoint="https://push.example.com/alice")), 201)
    past = int((datetime.now(UTC) - timedelta(days=1)).timestamp() * 1000)
    assert_empty(client.post("/client/users/devices", json=web(bob, expiration_time=past)), 201)
    outbox_id, rolled = uuid.uuid4(), uuid.uuid4()

    async def senders() -> uuid.UUID:
        async with await psycopg.AsyncConnection.connect(server.database_url, autocommit=True) as conn:

            async def has_push_device() -> bool:
                row = await (
                    await conn.execute("SELECT has_push_device FROM users WHERE id = %s", (alice_id,))
                ).fetchone()
                assert row is not None
                return bool(row[0])

            found = await devices_service.devices_of(conn, project_id, [alice_id, bob_id, alice_id])
            assert list(found) == [alice_id], "bob's only subscription has expired"
            by_os = {device.os: device for device in found[alice_id]}
            assert (by_os["android"].token, by_os["android"].endpoint) == (token, None)
            assert by_os["web"].endpoint == "https://push.example.com/alice"
            assert by_os["web"].keys is not None
            assert (by_os["web"].keys.p256dh, by_os["web"].keys.auth) == (P256DH, AUTH)
            assert await devices_service.devices_of(conn, uuid.uuid4(), [alice_id]) == {}, "scoped by project"

            assert await devices_service.forget_device(conn, uuid.uuid4(), token) == 0, "scoped by project"
            assert await devices_service.forget_device(conn, project_id, token) == 1
            assert await has_push_device(), "the browser is left"
            assert await devices_service.forget_device(conn, project_id, "https://push.example.com/alice") == 1
            assert not await has_push_device()
            assert await devices_service.forget_device(conn, project_id, token) == 0

            async with conn.transaction():
                first = await inbox_service.deliver(
                    conn,
                    project_id,
                    alice_id,
                    outbox_id,
                    title="Hi",
                    body="There",
                    data={"k": 1},
                    url="https://x.example",
                )
            assert first is not None
            assert await inbox_service.deliver(conn, project_id, alice_id, outbox_id, title="Hi", body="There") == first
            assert await inbox_service.deliver(conn, uuid.uuid4(), alice_id, uuid.uuid4(), title="x") is None
            assert await inbox_service.deliver(conn, project_id, uuid.uuid4(), uuid.uuid4(), title="x") is None

            async def failed_send() -> None:
                async with conn.transaction():
                    await inbox_service.deliver(conn, project_id, alice_id, rolled, title="never")
                    raise RuntimeError("the send failed")

            with pytest.raises(RuntimeError, match="the send failed"):
                await failed_send()
            return first

    first = asyncio.run(senders())
    [item] = feed(client, "users", alice)["results"]  # the rolled-back one is not there
    assert item["id"] == str(first)
    assert item["identifier"] == {"source": "outbox", "external_id": str(outbox_id)}
    assert item["content"] == {"title": "Hi", "body": "There", "url": "https://x.example"}
    assert (item["data"], item["channel"]) == ({"k": 1}, "inbox")
    assert user_detail(client, alice)["has_push_device"] is False


def test_the_schema_documents_the_routes(server: Server) -> None:
    schema = httpx.get(f"{server.root_url}/openapi.json", timeout=30).json()
    paths = schema["paths"]
    assert set(paths["/api/client/users/devices"]) == {"post"}
    assert "201" in paths["/api/client/users/devices"]["post"]["responses"]
    assert set(paths["/api/client/push/vapid"]) == {"get"}
    for plural in ("users", "organizations"):
        assert set(paths[f"/api/client/{plural}/inbox"]) == {"get", "post"}
        assert set(paths[f"/api/client/{plural}/inbox/count"]) == {"get"}
        assert set(paths[f"/api/client/{plural}/inbox/read"]) == {"post"}
        assert set(paths[f"/api/client/{plural}/inbox/archived"]) == {"post"}
    schemas = schema["components"]["schemas"]
    for name in ("DeviceRegistration", "InboxMessageCreate", "InboxMessageRef", "InboxMessage", "InboxMessageList"):
        assert name in schemas
    assert not any(path.startswith("/client/") for path in paths), "the bare alias stays out of the schema"


def test_bodies_as_upstreams_sdks_send_them(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    """Every optional field present, as null where unset (the JS SDK snake-cases its camelCase keys)."""
    external = uid()
    user_id = upsert(client, ident(external))["id"]
    device = {
        "identifier": [{"source": "default", "external_id": external, "metadata": None}],
        "device_id": "browser-1",
        "os": "web",
        "os_version": None,
        "model": None,
        "app_version": None,
        "data": None,
        "config": {
            "endpoint": "https://updates.push.services.mozilla.com/wpush/v2/gAAAA",
            "expiration_time": None,
            "keys": {"p256dh": P256DH, "auth": AUTH},
        },
    }
    assert_empty(client.post("/client/users/devices", json=device), 201)
    assert len(device_rows(db, user_id)) == 1
    nulls = {
        "sender_identity_id": None,
        "campaign_id": str(uuid.uuid4()),
        "broadcast_id": None,
        "content": None,
        "data": None,
        "tags": None,
        "priority": None,
        "source": None,
        "scheduled_at": None,
        "expires_at": None,
    }
    post_messages(client, "users", [message(external, "from-js", **nulls)])
    [item] = feed(client, "users", external)["results"]
    assert (item["content"], item["data"], item["tags"], item["priority"]) == ({}, {}, [], 3)
