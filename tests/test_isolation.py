"""Project isolation: two projects in one database never see, change or merge each other's profiles."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from helpers import Server, ident, uid


@pytest.fixture
def b_on_a(server: Server, other: Server) -> Iterator[httpx.Client]:
    """Project B's secret key sent to the first server: the key, not the server, decides the project."""
    with server.client(other.secret_key) as c:
        yield c


def upsert(client: httpx.Client, path: str, *identifiers: dict[str, Any], **fields: Any) -> dict[str, Any]:
    response = client.post(path, json={"identifier": list(identifiers), **fields})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def member_body(org: str, user: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"organization": {"identifier": [ident(org)]}, "user": {"identifier": [ident(user)]}}
    if data is not None:
        body["data"] = data
    return body


def test_second_project_has_its_own_keys(client: httpx.Client, b: httpx.Client, db: psycopg.Connection[Any]) -> None:
    a_user = upsert(client, "/client/users", ident(uid()))
    b_user = upsert(b, "/client/users", ident(uid()))
    assert a_user["project_id"] != b_user["project_id"]
    projects = {str(r[0]) for r in db.execute("SELECT id FROM projects")}
    assert {a_user["project_id"], b_user["project_id"]} <= projects


def test_same_external_id_is_a_different_user_per_project(
    client: httpx.Client, b: httpx.Client, b_on_a: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    ext = uid()
    a_user = upsert(client, "/client/users", ident(ext), data={"who": "a"}, email="a@example.com")
    b_user = upsert(b, "/client/users", ident(ext), data={"who": "b"})
    assert b_user["id"] != a_user["id"]
    assert b_user["project_id"] != a_user["project_id"]
    assert b_user["version"] == 1  # created, not an update of A's user
    assert "email" not in b_user  # left out, never null
    assert b_user["data"] == {"who": "b"}
    # through the first server B's key still means project B
    assert upsert(b_on_a, "/client/users", ident(ext))["id"] == b_user["id"]
    assert client.get("/admin/users", params={"external_id": ext}).json()["data"] == {"who": "a"}
    rows = db.execute("SELECT project_id, user_id FROM user_identifiers WHERE external_id = %s", (ext,)).fetchall()
    assert len(rows) == 2
    assert len({r[0] for r in rows}) == 2


def test_other_project_cannot_read_a_user(client: httpx.Client, b: httpx.Client) -> None:
    ext = uid()
    a_user = upsert(client, "/client/users", ident(ext))
    by_id = b.get(f"/admin/users/{a_user['id']}")
    assert by_id.status_code == 404
    assert by_id.json()["title"] == "resource not found"
    assert b.get("/admin/users", params={"external_id": ext}).status_code == 404
    # while its owner can
    assert client.get(f"/admin/users/{a_user['id']}").status_code == 200


def test_other_project_cannot_read_an_organization(client: httpx.Client, b: httpx.Client) -> None:
    ext = uid("o")
    a_org = upsert(client, "/client/organizations", ident(ext), name="A's")
    assert b.get(f"/admin/organizations/{a_org['id']}").status_code == 404
    assert b.get("/admin/organizations", params={"external_id": ext}).status_code == 404
    b_org = upsert(b, "/client/organizations", ident(ext), name="B's")
    assert b_org["id"] != a_org["id"]
    assert b.get("/admin/organizations", params={"external_id": ext}).json()["name"] == "B's"
    assert client.get("/admin/organizations", params={"external_id": ext}).json()["name"] == "A's"


def test_other_project_cannot_delete_a_user_or_organization(
    client: httpx.Client, b: httpx.Client, b_on_a: httpx.Client
) -> None:
    ext, org = uid(), uid("o")
    a_user = upsert(client, "/client/users", ident(ext))
    a_org = upsert(client, "/client/organizations", ident(org))
    for c in (b, b_on_a):
        deleted = c.request("DELETE", "/client/users", json={"identifier": [ident(ext)]})
        assert deleted.status_code == 404
        assert deleted.json()["title"] == "resource not found"
        assert c.request("DELETE", "/client/organizations", json={"identifier": [ident(org)]}).status_code == 404
    assert client.get(f"/admin/users/{a_user['id']}").status_code == 200
    assert client.get(f"/admin/organizations/{a_org['id']}").status_code == 200

    # B's own profile with the same external id is the only one B's delete reaches
    b_user = upsert(b, "/client/users", ident(ext))
    assert b.request("DELETE", "/client/users", json={"identifier": [ident(ext)]}).status_code == 204
    assert b.get(f"/admin/users/{b_user['id']}").status_code == 404
    assert client.get(f"/admin/users/{a_user['id']}").status_code == 200


def test_other_project_memberships_do_not_touch_the_first(client: httpx.Client, b: httpx.Client) -> None:
    org, user = uid("o"), uid()
    assert client.post("/client/organizations/users", json=member_body(org, user, {"in": "a"})).status_code == 200
    a_org = client.get("/admin/organizations", params={"external_id": org}).json()

    # removing A's membership from B: B has no such organization
    removed = b.request("DELETE", "/client/organizations/users", json=member_body(org, user))
    assert removed.status_code == 404
    assert "organization" in removed.json()["detail"]

    # adding the same membership in B creates B's own organization and user
    assert b.post("/client/organizations/users", json=member_body(org, user, {"in": "b"})).status_code == 200
    b_org = b.get("/admin/organizations", params={"external_id": org}).json()
    b_user = b.get("/admin/users", params={"external_id": user}).json()
    assert b_org["id"] != a_org["id"]
    assert [m["user_id"] for m in b_org["members"]] == [b_user["id"]]
    assert [m["data"] for m in b_org["members"]] == [{"in": "b"}]

    after = client.get("/admin/organizations", params={"external_id": org}).json()
    assert after["member_count"] == 1
    assert after["members"] == a_org["members"]  # data {"in": "a"} untouched

    # B removes and deletes its own; A's membership and organization stay
    assert b.request("DELETE", "/client/organizations/users", json=member_body(org, user)).status_code == 204
    assert b.request("DELETE", "/client/organizations", json={"identifier": [ident(org)]}).status_code == 204
    final = client.get("/admin/organizations", params={"external_id": org})
    assert final.status_code == 200
    assert final.json()["member_count"] == 1


def test_identifiers_from_two_projects_never_merge(client: httpx.Client, b: httpx.Client) -> None:
    x, y = uid(), uid()
    ax = upsert(client, "/client/users", ident(x))
    ay = upsert(client, "/client/users", ident(y))
    both = upsert(b, "/client/users", ident(x), ident(y))  # B has neither: one new user in B
    assert both["id"] not in (ax["id"], ay["id"])
    assert client.get(f"/admin/users/{ax['id']}").status_code == 200
    assert client.get(f"/admin/users/{ay['id']}").status_code == 200
    assert [i["external_id"] for i in client.get(f"/admin/users/{ax['id']}").json()["identifier"]] == [x]
