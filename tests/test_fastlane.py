"""The fast lane (http/fastlane.py) serves Client API writes with the same answers, errors and metrics as
the full app; browser requests (Origin) still get their CORS headers from the full stack."""

from __future__ import annotations

import re

import httpx

from helpers import Server, ident, uid


def metric(server: Server, pattern: str) -> float:
    text = httpx.get(f"{server.root_url}/metrics", timeout=10).text
    match = re.search(pattern + r" ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_writes_are_counted_by_route_template(server: Server, client: httpx.Client) -> None:
    counted = r'lunogram_http_requests_total\{method="POST",route="/api/client/users",status="200"\}'
    refused = r'lunogram_http_requests_total\{method="POST",route="/api/client/users",status="400"\}'
    before, before_refused = metric(server, counted), metric(server, refused)
    assert client.post("/client/users", json={"identifier": [ident(uid())]}).status_code == 200
    response = client.post("/client/users", json={"identifier": []})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("identifier")
    assert metric(server, counted) == before + 1
    assert metric(server, refused) == before_refused + 1


def test_upserts_report_their_commits(server: Server, client: httpx.Client) -> None:
    calls = r'lunogram_upsert_calls_total\{kind="users"\}'
    before = metric(server, calls)
    assert client.post("/client/users", json={"identifier": [ident(uid())]}).status_code == 200
    assert metric(server, calls) >= before + 1
    assert metric(server, r'lunogram_upsert_commits_total\{kind="users"\}') >= 1


def test_browser_requests_get_cors_headers(server: Server) -> None:
    headers = {"Authorization": f"Bearer {server.public_key}", "Origin": "https://shop.example"}
    response = httpx.post(
        f"{server.base_url}/client/users", json={"identifier": [ident(uid())]}, headers=headers, timeout=10
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"


def test_unknown_key_is_refused_on_the_lane(server: Server) -> None:
    response = httpx.post(
        f"{server.base_url}/client/users",
        json={"identifier": [ident(uid())]},
        headers={"Authorization": "Bearer sk_nobody"},
        timeout=10,
    )
    assert response.status_code == 401
    assert response.json()["status"] == 401


def test_bare_alias_takes_the_lane_too(server: Server) -> None:
    response = httpx.post(
        f"{server.root_url}/client/users",
        json={"identifier": [ident(uid())], "data": {"via": "alias"}},
        headers={"Authorization": f"Bearer {server.secret_key}"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.json()["data"] == {"via": "alias"}
