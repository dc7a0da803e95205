"""GET /api/admin/users and /api/admin/organizations: the operator's read API."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from helpers import ident, uid


def post(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json() if response.content else {}


def get_ok(client: httpx.Client, path: str, **params: str) -> dict[str, Any]:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    result: dict[str, Any] = response.json()
    return result


def assert_problem(response: httpx.Response, status: int, title: str, mentions: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    problem = response.json()
    assert problem["title"] == title
    assert problem["status"] == status
    assert mentions in problem["detail"]


def member(org: str, user: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"organization": {"identifier": [ident(org)]}, "user": {"identifier": [ident(user)]}, "data": data}


def test_user_by_id_and_by_external_id(client: httpx.Client) -> None:
    ext, crm, org1, org2 = uid(), uid("crm"), uid("o"), uid("o")
    user = post(
        client,
        "/client/users",
        {
            "identifier": [ident(ext, seen=True), ident(crm, source="crm")],
            "email": "reader@example.com",
            "data": {"plan": "pro"},
        },
    )
    post(client, "/client/organizations", {"identifier": [ident(org1)], "name": "First"})
    post(client, "/client/organizations/users", member(org1, ext, {"role": "admin"}))
    post(client, "/client/organizations/users", member(org2, ext, {"role": "viewer"}))

    by_id = get_ok(client, f"/admin/users/{user['id']}")
    by_default = get_ok(client, "/admin/users", external_id=ext)  # source defaults to "default"
    by_crm = get_ok(client, "/admin/users", source="crm", external_id=crm)
    assert by_id == by_default == by_crm

    for key, value in user.items():  # the admin view is the User object plus memberships
        assert by_id[key] == value, key
    assert {(i["source"], i["external_id"]) for i in by_id["identifier"]} == {("default", ext), ("crm", crm)}
    assert next(i for i in by_id["identifier"] if i["source"] == "default")["metadata"] == {"seen": True}
    orgs = {m.get("organization_name"): m for m in by_id["memberships"]}  # an unnamed one has none
    assert set(orgs) == {"First", None}
    assert orgs["First"]["data"] == {"role": "admin"}
    assert orgs[None]["data"] == {"role": "viewer"}
    assert orgs["First"]["organization_id"] == get_ok(client, "/admin/organizations", external_id=org1)["id"]
    for m in by_id["memberships"]:
        assert m["created_at"]
        assert m["updated_at"]


def test_user_lookup_respects_the_source(client: httpx.Client) -> None:
    crm = uid("crm")
    post(client, "/client/users", {"identifier": [ident(crm, source="crm")]})
    # the same external id under the default source is someone else (nobody here)
    assert_problem(client.get("/admin/users", params={"external_id": crm}), 404, "resource not found", crm)
    assert_problem(
        client.get("/admin/users", params={"external_id": crm, "source": "other"}), 404, "resource not found", "other"
    )


def test_organization_by_id_and_external_id_with_members(client: httpx.Client) -> None:
    org, crm = uid("o"), uid("crm")
    users = [uid() for _ in range(3)]
    created = post(
        client,
        "/client/organizations",
        {
            "identifier": [ident(org), ident(crm, source="crm")],
            "name": "Acme",
            "data": {"tier": 1},
        },
    )
    for n, user in enumerate(users):
        post(client, "/client/organizations/users", member(org, user, {"n": n}))
    user_ids = [get_ok(client, "/admin/users", external_id=u)["id"] for u in users]

    by_id = get_ok(client, f"/admin/organizations/{created['id']}")
    by_ext = get_ok(client, "/admin/organizations", external_id=org)
    by_crm = get_ok(client, "/admin/organizations", source="crm", external_id=crm)
    assert by_ext == by_crm
    assert by_id["member_count"] == 3
    assert by_id["name"] == "Acme"
    assert by_id["data"] == {"tier": 1}
    assert {(i["source"], i["external_id"]) for i in by_id["identifier"]} == {("default", org), ("crm", crm)}
    # oldest first
    assert [m["user_id"] for m in by_id["members"]] == user_ids
    assert [m["data"] for m in by_id["members"]] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert by_id["version"] == created["version"]

    client.request(
        "DELETE",
        "/client/organizations/users",
        json={"organization": {"identifier": [ident(org)]}, "user": {"identifier": [ident(users[1])]}},
    ).raise_for_status()
    after = get_ok(client, "/admin/organizations", external_id=org)
    assert after["member_count"] == 2
    assert [m["user_id"] for m in after["members"]] == [user_ids[0], user_ids[2]]


def test_organization_without_members(client: httpx.Client) -> None:
    org = uid("o")
    post(client, "/client/organizations", {"identifier": [ident(org)]})
    detail = get_ok(client, "/admin/organizations", external_id=org)
    assert (detail["member_count"], detail["members"]) == (0, [])
    assert "name" not in detail


@pytest.mark.parametrize("path", ["/admin/users", "/admin/organizations"])
def test_unknown_ids_are_404(client: httpx.Client, path: str) -> None:
    missing = str(uuid.uuid4())
    assert_problem(client.get(f"{path}/{missing}"), 404, "resource not found", missing)
    ext = uid("nobody")
    assert_problem(client.get(path, params={"external_id": ext}), 404, "resource not found", ext)


def test_a_user_id_is_not_an_organization_id(client: httpx.Client) -> None:
    user = post(client, "/client/users", {"identifier": [ident(uid())]})
    assert client.get(f"/admin/organizations/{user['id']}").status_code == 404
    org = post(client, "/client/organizations", {"identifier": [ident(uid("o"))]})
    assert client.get(f"/admin/users/{org['id']}").status_code == 404


def test_deleted_user_is_404(client: httpx.Client) -> None:
    ext = uid()
    user = post(client, "/client/users", {"identifier": [ident(ext)]})
    client.request("DELETE", "/client/users", json={"identifier": [ident(ext)]}).raise_for_status()
    assert_problem(client.get(f"/admin/users/{user['id']}"), 404, "resource not found", user["id"])


@pytest.mark.parametrize("path", ["/admin/users/not-a-uuid", "/admin/organizations/1234", "/admin/users/%20"])
def test_malformed_uuid_is_400(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    problem = response.json()
    assert problem["title"] == "bad request"
    assert "_id" in problem["detail"]
    assert "UUID" in problem["detail"]


@pytest.mark.parametrize("params", [{}, {"external_id": ""}, {"external_id": "x", "source": ""}])
def test_lookup_by_external_id_needs_one(client: httpx.Client, params: dict[str, str]) -> None:
    for path in ("/admin/users", "/admin/organizations"):
        response = client.get(path, params=params)
        assert response.status_code == 400, response.text
        assert response.json()["title"] == "bad request"
