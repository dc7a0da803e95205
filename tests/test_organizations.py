"""POST/DELETE /api/client/organizations and /api/client/organizations/users (memberships)."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from helpers import ident, uid


def upsert_org(client: httpx.Client, *identifiers: dict[str, Any], **fields: Any) -> dict[str, Any]:
    response = client.post("/client/organizations", json={"identifier": list(identifiers), **fields})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    result: dict[str, Any] = response.json()
    return result


def membership(org: str, user: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"organization": {"identifier": [ident(org)]}, "user": {"identifier": [ident(user)]}}
    if data is not None:
        body["data"] = data
    return body


def add(client: httpx.Client, org: str, user: str, data: dict[str, Any] | None = None) -> httpx.Response:
    return client.post("/client/organizations/users", json=membership(org, user, data))


def remove(client: httpx.Client, org: str, user: str) -> httpx.Response:
    return client.request("DELETE", "/client/organizations/users", json=membership(org, user))


def org_detail(client: httpx.Client, org: str) -> dict[str, Any]:
    response = client.get("/admin/organizations", params={"external_id": org})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def user_detail(client: httpx.Client, user: str) -> dict[str, Any]:
    response = client.get("/admin/users", params={"external_id": user})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def assert_no_body(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.content == b""
    assert "json" not in response.headers.get("content-type", "")


def assert_problem(response: httpx.Response, status: int, title: str, mentions: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    problem: dict[str, Any] = response.json()
    assert problem["title"] == title
    assert problem["status"] == status
    assert mentions in problem["detail"]
    return problem


# --- organizations -----------------------------------------------------------------------------------------------


def test_upsert_organization_creates_with_name_and_data(client: httpx.Client) -> None:
    ext = uid("o")
    org = upsert_org(client, ident(ext, domain="acme.test"), name="Acme", data={"plan": "pro", "seats": 5})
    assert org["name"] == "Acme"
    assert org["data"] == {"plan": "pro", "seats": 5}
    assert org["version"] == 1
    assert [(i["source"], i["external_id"], i["metadata"]) for i in org["identifier"]] == [
        ("default", ext, {"domain": "acme.test"})
    ]
    for key in ("id", "project_id", "created_at", "updated_at"):
        assert org[key]


def test_upsert_organization_merges_data_keeps_name_and_bumps_version(client: httpx.Client) -> None:
    ext = uid("o")
    first = upsert_org(client, ident(ext), name="Acme", data={"plan": "free", "seats": 5, "nested": {"a": 1}})
    second = upsert_org(client, ident(ext), data={"plan": "pro", "nested": {"b": 2}})
    assert second["id"] == first["id"]
    assert second["name"] == "Acme"
    assert second["data"] == {"plan": "pro", "seats": 5, "nested": {"b": 2}}  # top-level merge
    assert second["version"] == 2
    assert upsert_org(client, ident(ext), data={"plan": "pro"})["version"] == 2  # no change, no bump
    renamed = upsert_org(client, ident(ext), name="Acme Inc")
    assert (renamed["name"], renamed["version"]) == ("Acme Inc", 3)
    cleared = upsert_org(client, ident(ext), name=None)
    assert cleared["version"] == 4
    assert "name" not in cleared  # cleared: left out, never null


def test_delete_organization_removes_memberships_not_users(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    org, other, user = uid("o"), uid("o"), uid()
    assert_no_body(add(client, org, user, {"role": "admin"}), 200)
    assert_no_body(add(client, other, user), 200)
    org_id = org_detail(client, org)["id"]

    deleted = client.request("DELETE", "/client/organizations", json={"identifier": [ident(org)]})
    assert_no_body(deleted, 204)

    assert db.execute("SELECT count(*) FROM organizations WHERE id = %s", (org_id,)).fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM organization_members WHERE organization_id = %s", (org_id,)).fetchone() == (
        0,
    )
    assert db.execute(
        "SELECT count(*) FROM organization_identifiers WHERE organization_id = %s", (org_id,)
    ).fetchone() == (0,)
    survivor = user_detail(client, user)
    assert [m["organization_id"] for m in survivor["memberships"]] == [org_detail(client, other)["id"]]
    assert client.get("/admin/organizations", params={"external_id": org}).status_code == 404

    again = client.request("DELETE", "/client/organizations", json={"identifier": [ident(org)]})
    assert_problem(again, 404, "resource not found", "organization")


def test_delete_unknown_organization_is_404(client: httpx.Client) -> None:
    response = client.request("DELETE", "/client/organizations", json={"identifier": [ident(uid("o"))]})
    assert_problem(response, 404, "resource not found", "no organization")


# --- memberships -------------------------------------------------------------------------------------------------


def test_add_membership_has_no_body_and_stores_its_data(client: httpx.Client) -> None:
    org, user = uid("o"), uid()
    upsert_org(client, ident(org), name="Acme")
    client.post("/client/users", json={"identifier": [ident(user)]}).raise_for_status()
    response = add(client, org, user, {"role": "admin", "team": "core"})
    assert_no_body(response, 200)
    detail = org_detail(client, org)
    assert detail["member_count"] == 1
    assert [m["data"] for m in detail["members"]] == [{"role": "admin", "team": "core"}]
    assert detail["members"][0]["user_id"] == user_detail(client, user)["id"]
    memberships = user_detail(client, user)["memberships"]
    assert [(m["organization_id"], m["organization_name"]) for m in memberships] == [(detail["id"], "Acme")]


def test_re_adding_a_membership_merges_its_data(client: httpx.Client) -> None:
    org, user = uid("o"), uid()
    assert_no_body(add(client, org, user, {"role": "viewer", "team": "core"}), 200)
    assert_no_body(add(client, org, user, {"role": "admin", "since": 2024}), 200)
    assert_no_body(add(client, org, user), 200)  # no data: keeps what is there
    detail = org_detail(client, org)
    assert detail["member_count"] == 1
    assert detail["members"][0]["data"] == {"role": "admin", "team": "core", "since": 2024}


def test_membership_for_unknown_user_and_organization_creates_them(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    org, user = uid("o"), uid()
    assert_no_body(add(client, org, user, {"k": 1}), 200)
    detail = org_detail(client, org)
    person = user_detail(client, user)
    assert "name" not in detail
    assert detail["version"] == 1
    assert [m["user_id"] for m in detail["members"]] == [person["id"]]
    assert [(i["source"], i["external_id"]) for i in person["identifier"]] == [("default", user)]
    # an existing org with a new user, and a new org with an existing user, each create just the missing one
    user2, org2 = uid(), uid("o")
    assert_no_body(add(client, org, user2), 200)
    assert_no_body(add(client, org2, user), 200)
    assert org_detail(client, org)["member_count"] == 2
    assert len(user_detail(client, user)["memberships"]) == 2
    count = db.execute(
        "SELECT count(*) FROM organization_identifiers WHERE external_id = ANY (%s)", ([org, org2],)
    ).fetchone()
    assert count == (2,)


def test_remove_membership(client: httpx.Client) -> None:
    org, user, stays = uid("o"), uid(), uid()
    add(client, org, user, {"a": 1}).raise_for_status()
    add(client, org, stays).raise_for_status()
    assert_no_body(remove(client, org, user), 204)
    detail = org_detail(client, org)
    assert detail["member_count"] == 1
    assert detail["members"][0]["user_id"] == user_detail(client, stays)["id"]
    assert user_detail(client, user)["memberships"] == []  # the user itself remains

    again = remove(client, org, user)
    assert_problem(again, 404, "resource not found", "not a member")


def test_remove_membership_names_what_is_missing(client: httpx.Client) -> None:
    org, user = uid("o"), uid()
    add(client, org, user).raise_for_status()
    unknown_org = assert_problem(remove(client, uid("o"), user), 404, "resource not found", "organization")
    assert unknown_org["detail"].startswith("organization.identifier")
    unknown_user = assert_problem(remove(client, org, uid()), 404, "resource not found", "user")
    assert unknown_user["detail"].startswith("user.identifier")
    # nothing was created by the failed removals
    assert org_detail(client, org)["member_count"] == 1


def test_delete_user_removes_identifiers_and_memberships(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    org, user = uid("o"), uid()
    client.post("/client/users", json={"identifier": [ident(user), ident(uid(), source="crm")]}).raise_for_status()
    add(client, org, user, {"role": "admin"}).raise_for_status()
    user_id = user_detail(client, user)["id"]

    deleted = client.request("DELETE", "/client/users", json={"identifier": [ident(user)]})
    assert_no_body(deleted, 204)

    assert db.execute("SELECT count(*) FROM user_identifiers WHERE user_id = %s", (user_id,)).fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM organization_members WHERE user_id = %s", (user_id,)).fetchone() == (0,)
    detail = org_detail(client, org)  # the organization remains, without the member
    assert (detail["member_count"], detail["members"]) == (0, [])
    # the identifier is free again: naming it creates a fresh user
    fresh = client.post("/client/users", json={"identifier": [ident(user)]}).json()
    assert fresh["id"] != user_id
