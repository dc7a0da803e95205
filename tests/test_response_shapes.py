"""User and Organization answers follow upstream Lunogram's published Client API schemas: `email`, `phone`,
`timezone`, `locale` (User) and `name` (Organization) are strings when set and left out when not, never
`null`, on every path that returns one: the fast lane and the full stack (a browser's Origin), keyed
upserts and their replays, group-committed batches, merges, admin reads; and the OpenAPI says so."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import lunogram
import pytest

from helpers import Server, ident, uid

USER_OPTIONAL = ("email", "phone", "timezone", "locale")


def assert_no_nulls(profile: dict[str, Any], optional: tuple[str, ...]) -> None:
    """No top-level null; the optional fields, when present, are strings."""
    assert [key for key, value in profile.items() if value is None] == [], profile
    for key in optional:
        if key in profile:
            assert isinstance(profile[key], str), profile
    for identifier in profile["identifier"]:
        assert None not in identifier.values(), identifier


def post_ok(client: httpx.Client, path: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize("origin", [None, "https://shop.example"], ids=["fast lane", "full stack (Origin)"])
def test_a_user_without_contact_fields_has_none_of_them(client: httpx.Client, origin: str | None) -> None:
    headers = {"Origin": origin} if origin else {}
    user = post_ok(client, "/client/users", {"identifier": [ident(uid())]}, **headers)
    assert_no_nulls(user, USER_OPTIONAL)
    assert not set(USER_OPTIONAL) & set(user), user
    assert {"id", "project_id", "identifier", "data", "has_push_device", "version"} <= set(user)


def test_set_fields_are_strings_and_a_cleared_one_is_left_out(client: httpx.Client) -> None:
    ext = uid()
    full = post_ok(
        client,
        "/client/users",
        {
            "identifier": [ident(ext)],
            "email": "jane@example.com",
            "phone": "+31612345678",
            "timezone": "Europe/Amsterdam",
            "locale": "nl",
            "data": {"nested": {"kept": None}},
        },
    )
    assert_no_nulls(full, USER_OPTIONAL)
    assert {k: full[k] for k in USER_OPTIONAL} == {
        "email": "jane@example.com",
        "phone": "+31612345678",
        "timezone": "Europe/Amsterdam",
        "locale": "nl",
    }
    assert full["data"] == {"nested": {"kept": None}}, "a null inside data is the caller's and stays"

    cleared = post_ok(client, "/client/users", {"identifier": [ident(ext)], "phone": None, "locale": None})
    assert_no_nulls(cleared, USER_OPTIONAL)
    assert sorted(set(USER_OPTIONAL) & set(cleared)) == ["email", "timezone"]
    assert cleared["version"] == full["version"] + 1


def test_keyed_upserts_and_their_replays_leave_fields_out(client: httpx.Client) -> None:
    key = uid("idem")
    body = {"identifier": [ident(uid())], "data": {"a": 1}}
    first = client.post("/client/users", json=body, headers={"Idempotency-Key": key})
    again = client.post("/client/users", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json() == again.json()
    assert_no_nulls(again.json(), USER_OPTIONAL)
    assert not set(USER_OPTIONAL) & set(again.json())

    org_key = uid("idem")
    org_body = {"identifier": [ident(uid("o"))]}
    org_first = client.post("/client/organizations", json=org_body, headers={"Idempotency-Key": org_key})
    org_again = client.post("/client/organizations", json=org_body, headers={"Idempotency-Key": org_key})
    assert org_first.json() == org_again.json()
    assert_no_nulls(org_again.json(), ("name",))
    assert "name" not in org_again.json()


def test_concurrent_upserts_committed_together_leave_fields_out(server: Server) -> None:
    # many at once share commits (db/coalesce.py, the set-wise batch in identity/sql/batch.sql)
    def one(n: int) -> dict[str, Any]:
        with server.client() as client:
            body: dict[str, Any] = {"identifier": [ident(uid())]}
            if n % 2:
                body["email"] = f"n{n}@example.com"
            return post_ok(client, "/client/users", body)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(64)))
    for n, user in enumerate(answers):
        assert_no_nulls(user, USER_OPTIONAL)
        assert ("email" in user) == bool(n % 2), user


def test_a_merge_answer_leaves_fields_out(client: httpx.Client) -> None:
    a, b = uid(), uid()
    post_ok(client, "/client/users", {"identifier": [ident(a)]})
    post_ok(client, "/client/users", {"identifier": [ident(b, source="anonymous")], "locale": "en"})
    merged = post_ok(client, "/client/users", {"identifier": [ident(a), ident(b, source="anonymous")]})
    assert_no_nulls(merged, USER_OPTIONAL)
    assert len(merged["identifier"]) == 2
    assert merged["locale"] == "en"
    assert not {"email", "phone", "timezone"} & set(merged)


def test_admin_reads_leave_fields_out(client: httpx.Client) -> None:
    user_ext, org_ext = uid(), uid("o")
    body = {"organization": {"identifier": [ident(org_ext)]}, "user": {"identifier": [ident(user_ext)]}}
    assert client.post("/client/organizations/users", json=body).status_code == 200
    by_external = client.get("/admin/users", params={"external_id": user_ext})
    assert by_external.status_code == 200, by_external.text
    user = by_external.json()
    by_id = client.get(f"/admin/users/{user['id']}").json()
    for read in (user, by_id):
        assert_no_nulls(read, USER_OPTIONAL)
        assert not set(USER_OPTIONAL) & set(read)
        [membership] = read["memberships"]
        assert "organization_name" not in membership, "an unnamed organization's name is left out too"
        assert None not in membership.values()

    org = client.get("/admin/organizations", params={"external_id": org_ext}).json()
    assert_no_nulls(org, ("name",))
    assert "name" not in org
    named = post_ok(client, "/client/organizations", {"identifier": [ident(org_ext)], "name": "Acme"})
    assert named["name"] == "Acme"
    cleared = post_ok(client, "/client/organizations", {"identifier": [ident(org_ext)], "name": None})
    assert "name" not in cleared
    assert_no_nulls(cleared, ("name",))


def test_openapi_says_optional_strings_not_nullable(server: Server) -> None:
    schemas = httpx.get(f"{server.root_url}/openapi.json", timeout=30).json()["components"]["schemas"]
    for model, fields in (("User", USER_OPTIONAL), ("UserDetail", USER_OPTIONAL), ("Organization", ("name",))):
        schema = schemas[model]
        for name in fields:
            assert schema["properties"][name] == {"type": "string", "title": schema["properties"][name]["title"]}
            assert name not in schema["required"], (model, name)
    assert "organization_name" not in schemas["Membership"]["required"]
    # requests still take null: it clears the field
    assert {"type": "null"} in schemas["UpsertUser"]["properties"]["email"]["anyOf"]


def test_the_python_sdk_reads_absent_fields_as_none(server: Server) -> None:
    with lunogram.Client(server.secret_key, base_url=server.base_url, max_retries=0) as sdk:
        user = sdk.users.upsert(uid())
        organization = sdk.organizations.upsert(uid("o"))
    assert (user.email, user.phone, user.timezone, user.locale) == (None, None, None, None)
    assert organization.name is None
