"""Issue 14, finding 4: a public key's upsert discloses nothing stored that the request did not send, and may
merge profiles only when all but one of them are anonymous-only (the browser's identify).

Before: a `pk_` upsert naming `victim` answered victim's stored email, phone and data, and one naming
`mallory` and `alice` merged the two identified users.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from helpers import Server, ident, uid

USER_KEYS = {"id", "project_id", "identifier", "data", "version", "created_at", "updated_at"}


@pytest.fixture
def victim(client: httpx.Client) -> dict[str, Any]:
    """An identified user with everything stored: contact fields, data, a second identifier with metadata."""
    ext = uid("victim")
    body = {
        "identifier": [ident(ext), ident(f"{ext}-crm", "crm", secret_meta="m")],
        "email": f"{ext}@example.com",
        "phone": "+31612345678",
        "timezone": "Europe/Amsterdam",
        "locale": "nl-NL",
        "data": {"plan": "enterprise", "ssn": "123-45-6789"},
    }
    response = client.post("/client/users", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def no_stored_secrets(text: str, victim: dict[str, Any]) -> None:
    for secret in (victim["email"], victim["phone"], "Europe/Amsterdam", "enterprise", "123-45-6789", "crm"):
        assert secret not in text


@pytest.mark.parametrize("origin", [None, "https://app.example.com"])  # fast lane, and the full stack (CORS)
def test_a_public_upsert_answers_only_what_was_sent(server: Server, victim: dict[str, Any], origin: str | None) -> None:
    headers = {"Origin": origin} if origin else {}
    ext = victim["identifier"][0]["external_id"]
    with server.client(server.public_key) as public:
        response = public.post("/client/users", json={"identifier": [ident(ext)]}, headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    no_stored_secrets(response.text, victim)
    assert set(answer) == USER_KEYS
    assert answer["id"] == victim["id"]
    assert answer["version"] == victim["version"]  # nothing changed
    assert answer["data"] == {}
    assert [(i["source"], i["external_id"], i["metadata"]) for i in answer["identifier"]] == [("default", ext, {})]
    assert answer["identifier"][0]["id"] == victim["identifier"][0]["id"]


def test_a_public_upsert_answers_the_fields_it_sent(server: Server, victim: dict[str, Any]) -> None:
    ext = victim["identifier"][0]["external_id"]
    body = {"identifier": [ident(ext, device="web")], "locale": "en", "email": None, "data": {"seen": True}}
    with server.client(server.public_key) as public:
        response = public.post("/client/users", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    no_stored_secrets(response.text, victim)
    assert set(answer) == USER_KEYS | {"locale"}  # email sent as null: cleared, so it has no value to show
    assert answer["locale"] == "en"
    assert answer["data"] == {"seen": True}
    assert answer["identifier"][0]["metadata"] == {"device": "web"}
    assert answer["version"] == victim["version"] + 1


def test_secret_keys_still_get_the_whole_profile(client: httpx.Client, victim: dict[str, Any]) -> None:
    ext = victim["identifier"][0]["external_id"]
    answer = client.post("/client/users", json={"identifier": [ident(ext)]}).json()
    assert answer["email"] == victim["email"]
    assert answer["data"] == victim["data"]
    assert len(answer["identifier"]) == 2


def test_a_public_keyed_upsert_and_its_replay_are_redacted(server: Server, victim: dict[str, Any]) -> None:
    ext, key = victim["identifier"][0]["external_id"], str(uuid.uuid4())
    with server.client(server.public_key) as public:
        first = public.post("/client/users", json={"identifier": [ident(ext)]}, headers={"Idempotency-Key": key})
        again = public.post("/client/users", json={"identifier": [ident(ext)]}, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    no_stored_secrets(first.text, victim)


def test_a_public_organization_upsert_is_redacted(server: Server, client: httpx.Client) -> None:
    org = uid("org")
    client.post("/client/organizations", json={"identifier": [ident(org)], "name": "Acme", "data": {"arr": 100}})
    with server.client(server.public_key) as public:
        response = public.post("/client/organizations", json={"identifier": [ident(org)]})
    assert response.status_code == 200, response.text
    assert "Acme" not in response.text
    assert response.json()["data"] == {}
    assert "name" not in response.json()


def test_a_public_key_may_not_merge_identified_profiles(
    server: Server, client: httpx.Client, victim: dict[str, Any]
) -> None:
    mallory = client.post("/client/users", json={"identifier": [ident(uid("mallory"))]}).json()
    pair = [mallory["identifier"][0], victim["identifier"][0]]
    body = {"identifier": [ident(i["external_id"]) for i in pair], "data": {"x": 1}}
    with server.client(server.public_key) as public:
        response = public.post("/client/users", json=body)
        keyed = public.post("/client/users", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
    for refused in (response, keyed):
        assert refused.status_code == 403, refused.text
        assert "a public key may merge profiles only when all but one" in refused.json()["detail"]
    # nothing changed: both still exist, with their own identifiers and data
    for user in (mallory, victim):
        detail = client.get(f"/admin/users/{user['id']}").json()
        assert detail["version"] == user["version"]
        assert [i["external_id"] for i in detail["identifier"]] == [i["external_id"] for i in user["identifier"]]
    # the secret key may merge them
    assert client.post("/client/users", json=body).status_code == 200
    assert client.get(f"/admin/users/{mallory['id']}").status_code == 404


def test_a_public_key_may_merge_anonymous_profiles_into_one_identified(server: Server, client: httpx.Client) -> None:
    """The JS SDK's identify: the browser's anonymous profile (and another device's) merge into the user."""
    known, anon_a, anon_b = uid("known"), uid("anon"), uid("anon")
    with server.client(server.public_key) as public:
        user = public.post("/client/users", json={"identifier": [ident(known)]}).json()
        first = public.post("/client/users", json={"identifier": [ident(anon_a, "anonymous")], "data": {"a": 1}})
        second = public.post("/client/users", json={"identifier": [ident(anon_b, "anonymous")], "data": {"b": 2}})
        identify = public.post(
            "/client/users",
            json={"identifier": [ident(anon_a, "anonymous"), ident(anon_b, "anonymous"), ident(known)]},
        )
    assert identify.status_code == 200, identify.text
    assert identify.json()["id"] == user["id"]
    assert identify.json()["data"] == {}  # merged data is stored, not disclosed to the public key
    merged = client.get(f"/admin/users/{user['id']}").json()
    assert merged["data"] == {"a": 1, "b": 2}
    for gone in (first.json(), second.json()):
        assert client.get(f"/admin/users/{gone['id']}").status_code == 404
