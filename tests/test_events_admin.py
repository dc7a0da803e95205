"""What operators see of events: histories (admin API), dead letters, /metrics and `lunogram status`."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from helpers import Server, ident, uid, wait_until


@pytest.fixture(scope="module")
def idle_server(server_factory: Callable[..., Server]) -> Server:
    """A server that accepts events but applies none: its queue holds still for inspection."""
    return server_factory(extra_env={"LUNOGRAM_EVENT_WORKER_TASKS": "0"})


@pytest.fixture
def idle_client(idle_server: Server) -> Iterator[httpx.Client]:
    with idle_server.client() as c:
        yield c


def post_events(client: httpx.Client, events: list[dict[str, Any]], kind: str = "users") -> None:
    response = client.post(f"/client/{kind}/events", json=events)
    assert response.status_code == 202, response.text


def user_id(client: httpx.Client, external_id: str) -> str:
    def found() -> str | None:
        response = client.get("/admin/users", params={"external_id": external_id})
        return str(response.json()["id"]) if response.status_code == 200 else None

    return str(wait_until(found, what=f"user {external_id}"))


def history(client: httpx.Client, path: str, **params: Any) -> dict[str, Any]:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def test_user_history_pages_newest_first(client: httpx.Client) -> None:
    ext = uid()
    post_events(client, [{"name": f"step_{n}", "data": {"n": n}, "identifier": [ident(ext)]} for n in range(5)])
    uid_ = user_id(client, ext)
    path = f"/admin/users/{uid_}/events"
    wait_until(lambda: len(history(client, path)["events"]) == 5, what="five events in history")

    first = history(client, path, limit=2)
    assert [e["name"] for e in first["events"]] == ["step_4", "step_3"]
    assert first["events"][0]["data"] == {"n": 4}
    second = history(client, path, limit=2, before=first["next_before"])
    assert [e["name"] for e in second["events"]] == ["step_2", "step_1"]
    last = history(client, path, limit=2, before=second["next_before"])
    assert [e["name"] for e in last["events"]] == ["step_0"]
    assert last["next_before"] is None


def test_organization_history(client: httpx.Client) -> None:
    ext = uid("org")
    event = {"name": "plan_changed", "data": {"plan": "pro"}, "identifier": [ident(ext)]}
    post_events(client, [event], "organizations")

    def org_id() -> str | None:
        response = client.get("/admin/organizations", params={"external_id": ext})
        return str(response.json()["id"]) if response.status_code == 200 else None

    oid = wait_until(org_id, what="organization")
    page = wait_until(lambda: history(client, f"/admin/organizations/{oid}/events")["events"], what="org history")
    assert page[0]["name"] == "plan_changed"
    assert page[0]["data"] == {"plan": "pro"}


def test_history_of_an_unknown_or_foreign_profile_is_404(client: httpx.Client, idle_client: httpx.Client) -> None:
    assert client.get(f"/admin/users/{uuid.uuid4()}/events").status_code == 404
    ext = uid()
    post_events(client, [{"name": "seen", "identifier": [ident(ext)]}])
    uid_ = user_id(client, ext)
    # the same id through another server's project (another database) is not found
    response = idle_client.get(f"/admin/users/{uid_}/events")
    assert response.status_code == 404
    assert uid_ in response.json()["detail"]


def test_history_refuses_public_keys_and_bad_paging(server: Server, client: httpx.Client) -> None:
    with server.client(server.public_key) as public:
        assert public.get(f"/admin/users/{uuid.uuid4()}/events").status_code == 403
    for params in ({"limit": 0}, {"limit": 1001}, {"before": 0}, {"before": "x"}, {"before": 2**63}):
        response = client.get(f"/admin/users/{uuid.uuid4()}/events", params=params)
        assert response.status_code == 400, (params, response.text)
        assert next(iter(params)) in response.json()["detail"]


def test_queue_figures_in_metrics_and_status(idle_server: Server, idle_client: httpx.Client) -> None:
    before = status(idle_server)
    post_events(idle_client, [{"name": "queued", "identifier": [ident(uid())]} for _ in range(3)])
    after = status(idle_server)
    assert after["depth"] == before["depth"] + 3
    assert after["accepted"] == before["accepted"] + 3
    assert after["lag_seconds"] > 0

    metrics = httpx.get(f"{idle_server.root_url}/metrics").text
    figures = dict(line.split(" ", 1) for line in metrics.splitlines() if line.startswith("lunogram_event"))
    assert int(figures["lunogram_event_queue_depth"]) == after["depth"]
    assert int(figures["lunogram_events_accepted_total"]) >= after["accepted"]
    assert float(figures["lunogram_event_queue_lag_seconds"]) > 0


def status(server: Server) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "lunogram_server", "status", "--json", "--database-url", server.database_url],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


def test_dead_letters_are_listed_and_can_be_retried(idle_server: Server, idle_client: httpx.Client) -> None:
    ext = uid()
    post_events(idle_client, [{"name": "doomed", "data": {"k": 1}, "identifier": [ident(ext)]}])
    with psycopg.connect(idle_server.database_url, autocommit=True) as conn:
        # what a worker does after the last failed attempt (worker tests cover how it gets there)
        row = conn.execute(
            "UPDATE event_inbox SET attempts = 8, last_error = 'boom', dead_at = now(), next_attempt_at = now()"
            " WHERE identifiers @> %s::jsonb RETURNING id",
            (json.dumps([{"external_id": ext}]),),
        ).fetchone()
        assert row is not None
        event_id = row[0]

    page = history(idle_client, "/admin/events/dead")
    parked = next(e for e in page["events"] if e["id"] == event_id)
    assert parked["name"] == "doomed"
    assert parked["attempts"] == 8
    assert parked["last_error"] == "boom"
    assert parked["identifier"][0]["external_id"] == ext
    assert status(idle_server)["dead"] >= 1

    with idle_server.client(idle_server.public_key) as public:
        assert public.post(f"/admin/events/dead/{event_id}/retry").status_code == 403
    assert idle_client.post(f"/admin/events/dead/{event_id}/retry").status_code == 204
    assert idle_client.post(f"/admin/events/dead/{event_id}/retry").status_code == 404  # no longer dead
    assert all(e["id"] != event_id for e in history(idle_client, "/admin/events/dead")["events"])
    with psycopg.connect(idle_server.database_url) as conn:
        attempts, dead_at = conn.execute(
            "SELECT attempts, dead_at FROM event_inbox WHERE id = %s", (event_id,)
        ).fetchone() or (None, None)
    assert attempts == 0
    assert dead_at is None
