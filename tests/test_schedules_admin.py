"""What operators see of schedules: the admin list per profile, /metrics and `lunogram status`."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from helpers import Server, ident, uid


@pytest.fixture(scope="module")
def still_server(server_factory: Callable[..., Server]) -> Server:
    """No scheduler runs here: due schedules stay due, for inspection."""
    return server_factory(extra_env={"LUNOGRAM_SCHEDULER_TASKS": "0"})


@pytest.fixture
def still(still_server: Server) -> Iterator[httpx.Client]:
    with still_server.client() as c:
        yield c


def schedule(client: httpx.Client, kind: str, body: dict[str, object]) -> dict[str, object]:
    response = client.post(f"/client/{kind}/scheduled", json=body)
    assert response.status_code == 202, response.text
    accepted: dict[str, object] = response.json()
    return accepted


def test_admin_lists_a_profiles_schedules_soonest_first(still: httpx.Client) -> None:
    ext = uid()
    weekly = schedule(
        still,
        "users",
        {"name": "weekly", "identifier": [ident(ext)], "interval": "7 days", "scheduled_at": "2030-01-07T09:00:00Z"},
    )
    schedule(still, "users", {"name": "once", "identifier": [ident(ext)], "scheduled_at": "2030-01-01T00:00:00Z"})
    user = still.get("/admin/users", params={"external_id": ext}).json()

    listed = still.get(f"/admin/users/{user['id']}/schedules").json()
    assert [s["name"] for s in listed] == ["once", "weekly"]
    assert listed[1]["id"] == weekly["id"]
    assert listed[1]["interval"] == "7 days"
    assert listed[1]["next_at"].startswith("2030-01-07T09:00:00")
    assert listed[0]["interval"] is None
    assert listed[0]["fired"] == 0

    assert still.get(f"/admin/users/{uuid.uuid4()}/schedules").status_code == 404


def test_admin_lists_organization_schedules(still: httpx.Client) -> None:
    ext = uid("org")
    schedule(still, "organizations", {"name": "billing", "identifier": [ident(ext)], "interval": "1 month"})
    org = still.get("/admin/organizations", params={"external_id": ext}).json()
    listed = still.get(f"/admin/organizations/{org['id']}/schedules").json()
    assert [(s["name"], s["interval"]) for s in listed] == [("billing", "1 month")]


def test_due_schedules_show_in_metrics_and_status(still_server: Server, still: httpx.Client) -> None:
    past = {"identifier": [ident(uid())], "scheduled_at": "2020-01-01T00:00:00Z"}
    schedule(still, "users", {"name": "overdue", **past})
    metrics = httpx.get(f"{still_server.root_url}/metrics").text
    figures = dict(line.split(" ", 1) for line in metrics.splitlines() if line.startswith("lunogram_schedule"))
    assert int(figures["lunogram_schedules_due"]) >= 1
    assert float(figures["lunogram_schedule_lag_seconds"]) > 3600 * 24 * 365  # due since 2020

    done = subprocess.run(
        [sys.executable, "-m", "lunogram_server", "status", "--json", "--database-url", still_server.database_url],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    due = json.loads(done.stdout)["schedules"]
    assert due["due"] >= 1
    assert due["active"] >= due["due"]
