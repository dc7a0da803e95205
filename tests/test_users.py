"""POST/DELETE /api/client/users: create, update, merge into data, delete."""

from __future__ import annotations

import httpx

from helpers import ident, uid


def test_upsert_creates_user_with_all_fields(client: httpx.Client) -> None:
    ext = uid()
    body = {
        "identifier": [ident(ext), ident(uid("ph"), source="posthog", synced=True)],
        "email": "Jane@Example.com",
        "phone": "+31612345678",
        "timezone": "Europe/Amsterdam",
        "locale": "nl-NL",
        "data": {"first_name": "Jane", "plan": "pro"},
    }
    response = client.post("/client/users", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    user = response.json()
    assert user["version"] == 1
    assert user["email"] == "Jane@example.com"
    assert user["phone"] == "+31612345678"
    assert user["timezone"] == "Europe/Amsterdam"
    assert user["locale"] == "nl-NL"
    assert user["data"] == {"first_name": "Jane", "plan": "pro"}
    assert user["has_push_device"] is False
    sources = {(i["source"], i["external_id"]) for i in user["identifier"]}
    assert ("default", ext) in sources
    assert any(i["source"] == "posthog" and i["metadata"] == {"synced": True} for i in user["identifier"])
    for key in ("id", "project_id", "created_at", "updated_at"):
        assert user[key]


def test_upsert_merges_data_keeps_omitted_fields_and_bumps_version(client: httpx.Client) -> None:
    ext = uid()
    first = client.post("/client/users", json={"identifier": [ident(ext)], "email": "a@b.co", "data": {"a": 1, "b": 1}})
    second = client.post("/client/users", json={"identifier": [ident(ext)], "data": {"b": 2, "c": 3}})
    assert second.status_code == 200
    user = second.json()
    assert user["id"] == first.json()["id"]
    assert user["data"] == {"a": 1, "b": 2, "c": 3}
    assert user["email"] == "a@b.co"
    assert user["version"] == 2


def test_upsert_without_change_keeps_version(client: httpx.Client) -> None:
    ext = uid()
    client.post("/client/users", json={"identifier": [ident(ext)], "data": {"a": 1}})
    again = client.post("/client/users", json={"identifier": [ident(ext)], "data": {"a": 1}})
    assert again.json()["version"] == 1


def test_null_clears_a_field(client: httpx.Client) -> None:
    ext = uid()
    client.post("/client/users", json={"identifier": [ident(ext)], "email": "x@y.org"})
    cleared = client.post("/client/users", json={"identifier": [ident(ext)], "email": None}).json()
    assert "email" not in cleared  # cleared: left out, never null


def test_delete_user_then_404(client: httpx.Client) -> None:
    ext = uid()
    client.post("/client/users", json={"identifier": [ident(ext)]})
    deleted = client.request("DELETE", "/client/users", json={"identifier": [ident(ext)]})
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert "content-type" not in deleted.headers
    again = client.request("DELETE", "/client/users", json={"identifier": [ident(ext)]})
    assert again.status_code == 404
    assert again.json()["title"] == "resource not found"
