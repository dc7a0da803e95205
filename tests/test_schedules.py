"""Schedules: POST/DELETE /api/client/{users,organizations}/scheduled and the schedulers that fire them.

Everything is real: `lunogram serve` subprocesses over HTTP and PostgreSQL inspected directly. Where a test
needs to control time it runs `Scheduler`s in this process, with an injected clock, against the database of
a server started with LUNOGRAM_SCHEDULER_TASKS=0 (so that only the test's schedulers fire) and its event
workers on (so that what fires reaches user_events / organization_events through the normal pipeline).

Servers and the processes they start are this module's own; only those are ever killed.
"""

from __future__ import annotations

import asyncio
import calendar
import collections
import os
import random
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from helpers import Server, ident, loopback_client, uid, wait_until
from lunogram_server.db import open_pool
from lunogram_server.schedules.scheduler import Scheduler

USERS = "/client/users/scheduled"
ORGS = "/client/organizations/scheduled"
ROUTES = {"user": USERS, "organization": ORGS}
FAST = {"LUNOGRAM_EVENT_POLL_SECONDS": "0.02", "LUNOGRAM_SCHEDULER_POLL_SECONDS": "0.05"}
# The server's event workers apply what fires; only the test's own schedulers fire.
PAUSED = {**FAST, "LUNOGRAM_SCHEDULER_TASKS": "0"}
FUTURE = "2131-06-01T09:00:00Z"


# -- fixtures and helpers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paused(server_factory: Callable[..., Server]) -> Server:
    return server_factory(extra_env=PAUSED)


@pytest.fixture(scope="module")
def live(server_factory: Callable[..., Server]) -> Server:
    """A server with its own scheduler and event workers."""
    return server_factory(extra_env=FAST)


@pytest.fixture
def db(paused: Server) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(paused.database_url, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        yield conn


@pytest.fixture
def client(paused: Server) -> Iterator[httpx.Client]:
    with paused.client() as c:
        yield c


@pytest.fixture
def clean(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The paused server's database with no schedules: a test's clock then fires only its own schedules."""
    db.execute("DELETE FROM schedules")
    return db


@pytest.fixture
def base() -> datetime:
    """A whole second a day from now: schedules at and after it are in the future for the API (real time)."""
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)


@asynccontextmanager
async def scheduler_pool(server: Server, size: int = 4) -> AsyncIterator[AsyncConnectionPool[Any]]:
    pool = await open_pool(server.database_url, min_size=1, max_size=size)
    try:
        yield pool
    finally:
        await pool.close()


def fire_at(server: Server, at: datetime) -> int:
    """One batch of an in-process scheduler whose clock reads `at`; how many it fired."""

    async def once() -> int:
        async with scheduler_pool(server) as pool:
            return await Scheduler(pool, clock=lambda: at).run_once()

    return asyncio.run(once())


def one(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def post(client: httpx.Client, body: dict[str, Any], kind: str = "user") -> dict[str, Any]:
    response = client.post(ROUTES[kind], json=body)
    assert response.status_code == 202, response.text
    assert response.headers["content-type"] == "application/json"
    accepted: dict[str, Any] = response.json()
    return accepted


def delete(client: httpx.Client, name: str, *identifiers: dict[str, Any], kind: str = "user") -> httpx.Response:
    return client.request("DELETE", ROUTES[kind], json={"name": name, "identifier": list(identifiers)})


def assert_problem(response: httpx.Response, status: int, detail_start: str) -> None:
    titles = {400: "bad request", 401: "unauthorized", 403: "forbidden", 404: "resource not found"}
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    problem = response.json()
    assert problem["title"] == titles[status], problem
    assert problem["status"] == status, problem
    assert problem["detail"].startswith(detail_start), problem["detail"]


def profile_id(conn: psycopg.Connection[Any], external_id: str, kind: str = "user", source: str = "default") -> Any:
    row = conn.execute(
        f"SELECT {kind}_id FROM {kind}_identifiers WHERE source = %s AND external_id = %s", (source, external_id)
    ).fetchone()
    return None if row is None else row[0]


def schedule_row(conn: psycopg.Connection[Any], external_id: str, name: str, kind: str = "user") -> dict[str, Any]:
    cursor = conn.execute(
        f"SELECT s.id, s.name, s.data, s.anchor_at, s.interval_text, s.next_at, s.fired, s.last_fired_at"
        f" FROM schedules AS s JOIN {kind}_identifiers AS i ON i.{kind}_id = s.{kind}_id"
        f" WHERE i.source = 'default' AND i.external_id = %s AND s.name = %s",
        (external_id, name),
    )
    rows = cursor.fetchall()
    assert len(rows) == 1, rows
    keys = ("id", "name", "data", "anchor_at", "interval", "next_at", "fired", "last_fired_at")
    return dict(zip(keys, rows[0], strict=True))


def next_at(conn: psycopg.Connection[Any], external_id: str, name: str, kind: str = "user") -> datetime | None:
    value: datetime | None = schedule_row(conn, external_id, name, kind)["next_at"]
    return value


def settle(conn: psycopg.Connection[Any]) -> None:
    """Wait until the event workers have applied everything fired so far (an inbox row leaves only in the
    transaction that writes its history, so an empty inbox means every firing is in history)."""
    wait_until(
        lambda: one(conn, "SELECT count(*) FROM event_inbox WHERE dead_at IS NULL") == 0,
        timeout=30,
        what="the event inbox to drain",
    )
    assert one(conn, "SELECT count(*) FROM event_inbox WHERE dead_at IS NOT NULL") == 0


def history(conn: psycopg.Connection[Any], external_id: str, kind: str = "user") -> list[tuple[str, Any]]:
    """(name, data) of a profile's events, oldest first, after the pipeline has settled."""
    settle(conn)
    table = "user_events" if kind == "user" else "organization_events"
    rows = conn.execute(
        f"SELECT e.name, e.data FROM {table} AS e JOIN {kind}_identifiers AS i ON i.{kind}_id = e.{kind}_id"
        f" WHERE i.source = 'default' AND i.external_id = %s ORDER BY e.id",
        (external_id,),
    )
    return [(name, data) for name, data in rows.fetchall()]


def stored_for(conn: psycopg.Connection[Any], external_id: str) -> tuple[int, int, int]:
    """Schedules naming the identifier, users and organizations holding it."""
    return (
        one(conn, "SELECT count(*) FROM schedules WHERE identifiers @> %s", (Jsonb([{"external_id": external_id}]),)),
        one(conn, "SELECT count(*) FROM user_identifiers WHERE external_id = %s", (external_id,)),
        one(conn, "SELECT count(*) FROM organization_identifiers WHERE external_id = %s", (external_id,)),
    )


# -- 1. validation and permissions -----------------------------------------------------------------------------

BAD: list[tuple[str, dict[str, Any], str]] = [
    ("unparsable interval", {"interval": "every tuesday"}, "interval: unparsable interval 'every tuesday'"),
    ("empty interval", {"interval": ""}, "interval: unparsable interval: it is empty"),
    ("ambiguous interval", {"interval": "1M"}, "interval: unparsable interval '1M'"),
    ("zero interval", {"interval": "0h", "scheduled_at": FUTURE}, "interval: interval must be positive: '0h' is zero"),
    ("zero days", {"interval": "0 days"}, "interval: interval must be positive: '0 days' is zero"),
    ("negative interval", {"interval": "-1h"}, "interval: interval must be positive: '-1h' is negative"),
    ("below the minimum", {"interval": "30s"}, "interval: interval '30s' is below the minimum of 1 minute"),
    ("just below the minimum", {"interval": "59s"}, "interval: interval '59s' is below the minimum of 1 minute"),
    ("above the maximum", {"interval": "101 years"}, "interval: interval '101 years' is above the maximum"),
    ("interval not a string", {"interval": 3600}, "interval: must be a string"),
    ("naive scheduled_at", {"scheduled_at": "2131-06-01T09:00:00"}, "scheduled_at: must include a timezone offset"),
    (
        "naive start_at",
        {"start_at": "2131-06-01T09:00:00", "interval": "1 day"},
        "start_at: must include a timezone offset",
    ),
    ("not a timestamp", {"scheduled_at": "tomorrow"}, "scheduled_at: must be an RFC 3339 timestamp"),
    ("one-time without a time", {}, "scheduled_at: required for a one-time schedule"),
    ("empty name", {"name": "", "scheduled_at": FUTURE}, "name: must not be empty"),
    ("name too long", {"name": "n" * 246, "scheduled_at": FUTURE}, "name: longer than 245 characters"),
    ("blank name", {"name": "   ", "scheduled_at": FUTURE}, "name: must not be blank"),
    ("numeric timestamp", {"scheduled_at": 1900000000}, "scheduled_at: must be an RFC 3339 timestamp"),
    ("missing name", {"name": None, "scheduled_at": FUTURE}, "name: is required"),
    ("missing identifier", {"identifier": None, "scheduled_at": FUTURE}, "identifier: is required"),
    ("empty identifier", {"identifier": [], "scheduled_at": FUTURE}, "identifier: must contain at least 1 item"),
    ("data not an object", {"data": [1], "scheduled_at": FUTURE}, "data: must be an object"),
    ("unknown field", {"every": "1 day", "scheduled_at": FUTURE}, "every: is not a known field"),
    (
        "first firing after year 9999",
        {"scheduled_at": "2000-01-01T00:00:00Z", "start_at": "9998-12-31T12:00:00Z", "interval": "1 year"},
        "interval: the first firing would be after the year 9998",
    ),
]


@pytest.mark.parametrize("kind", ["user", "organization"])
@pytest.mark.parametrize(("case", "change", "detail"), BAD, ids=[case for case, _, _ in BAD])
def test_bad_schedule_is_refused_naming_the_rule_and_nothing_is_stored(
    client: httpx.Client, db: psycopg.Connection[Any], kind: str, case: str, change: dict[str, Any], detail: str
) -> None:
    external_id = uid("bad")
    body: dict[str, Any] = {"name": uid("s"), "identifier": [ident(external_id)], **change}
    body = {k: v for k, v in body.items() if v is not None}
    assert_problem(client.post(ROUTES[kind], json=body), 400, detail)
    # refused before anything is written: no schedule, and not even the profile it names
    assert stored_for(db, external_id) == (0, 0, 0), case


def test_name_at_the_limit_is_accepted(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    """245 characters: the event `scheduled.<name>` is then exactly at the 255-character name limit."""
    external_id = uid()
    accepted = post(client, {"name": "n" * 245, "identifier": [ident(external_id)], "scheduled_at": FUTURE})
    assert accepted["name"] == "n" * 245
    assert stored_for(db, external_id) == (1, 1, 0)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"identifier": [{"external_id": "x"}]}, "name: is required"),
        ({"name": "", "identifier": [{"external_id": "x"}]}, "name: must not be empty"),
        ({"name": "x"}, "identifier: is required"),
        ({"name": "x", "identifier": [{"external_id": ""}]}, "identifier[0].external_id: must not be empty"),
    ],
)
def test_bad_delete_is_refused_naming_the_rule(client: httpx.Client, body: dict[str, Any], detail: str) -> None:
    for route in ROUTES.values():
        assert_problem(client.request("DELETE", route, json=body), 400, detail)


@pytest.mark.parametrize("kind", ["user", "organization"])
def test_keys_public_may_schedule_but_only_secret_may_cancel(
    paused: Server, db: psycopg.Connection[Any], kind: str
) -> None:
    external_id = uid()
    name = uid("s")
    body = {"name": name, "identifier": [ident(external_id)], "scheduled_at": FUTURE}
    route = ROUTES[kind]
    with loopback_client(base_url=paused.base_url, timeout=30) as anonymous:
        assert_problem(anonymous.post(route, json=body), 401, "")
        assert_problem(anonymous.request("DELETE", route, json=body), 401, "")
    with paused.client("sk_not_a_key_of_this_server_000000") as wrong:
        assert_problem(wrong.post(route, json=body), 401, "")
        assert_problem(wrong.request("DELETE", route, json=body), 401, "")
    assert stored_for(db, external_id) == (0, 0, 0)

    with paused.client(paused.public_key) as public:
        assert post(public, body, kind)["name"] == name
        assert stored_for(db, external_id)[0] == 1
        assert_problem(delete(public, name, ident(external_id), kind=kind), 403, "")
    assert stored_for(db, external_id)[0] == 1  # the 403 cancelled nothing

    with paused.client() as secret:
        response = delete(secret, name, ident(external_id), kind=kind)
    assert response.status_code == 200, response.text
    assert response.content == b""
    assert "json" not in response.headers.get("content-type", "")
    assert stored_for(db, external_id)[0] == 0


# -- 2. what a POST answers, and how it plans the first firing --------------------------------------------------


def test_accepted_response_is_the_stored_schedule(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    external_id = uid()
    name = uid("trial_end")
    data = {"plan": "pro", "nested": {"list": [1, 2]}, "unicode": "héllo"}
    response = client.post(
        USERS, json={"name": name, "identifier": [ident(external_id)], "scheduled_at": FUTURE, "data": data}
    )
    assert response.status_code == 202, response.text
    assert response.headers["content-type"] == "application/json"
    accepted = response.json()
    assert set(accepted) == {"id", "name", "scheduled_at", "data"}
    assert accepted["name"] == name
    assert accepted["data"] == data
    assert ts(accepted["scheduled_at"]) == ts(FUTURE)
    row = schedule_row(db, external_id, name)
    assert row["id"] == UUID(accepted["id"])
    assert (row["data"], row["interval"], row["anchor_at"], row["next_at"]) == (data, None, ts(FUTURE), ts(FUTURE))
    assert (row["fired"], row["last_fired_at"]) == (0, None)

    # no data: an empty object, in the answer and in what each firing will carry
    other = post(client, {"name": uid("s"), "identifier": [ident(external_id)], "scheduled_at": FUTURE})
    assert other["data"] == {}


def _month_occurrences(anchor: datetime, count: int) -> list[datetime]:
    """anchor + n months for n < count, the day clamped to each month's length (independent of the server's
    arithmetic)."""
    out = []
    for n in range(count):
        month_index = anchor.month - 1 + n
        year, month = anchor.year + month_index // 12, month_index % 12 + 1
        out.append(anchor.replace(year=year, month=month, day=min(anchor.day, calendar.monthrange(year, month)[1])))
    return out


@pytest.mark.parametrize(
    ("spelling", "canonical", "step"),
    [
        ("7 days", "7 days", timedelta(days=7)),
        ("24h", "24 hours", timedelta(hours=24)),
        ("168h", "168 hours", timedelta(hours=168)),
        ("1h30m", "1 hour 30 minutes", timedelta(minutes=90)),
        ("1 month", "1 month", None),
        ("1 minute", "1 minute", timedelta(minutes=1)),
    ],
)
def test_both_sdk_interval_spellings_join_the_cadence_of_a_past_anchor(
    client: httpx.Client, db: psycopg.Connection[Any], spelling: str, canonical: str, step: timedelta | None
) -> None:
    anchor = datetime(2020, 1, 31, 8, 0, 7, tzinfo=UTC)
    external_id = uid()
    name = uid("s")
    before = datetime.now(UTC)
    accepted = post(
        client, {"name": name, "identifier": [ident(external_id)], "scheduled_at": iso(anchor), "interval": spelling}
    )
    after = datetime.now(UTC)
    first = ts(accepted["scheduled_at"])
    # the first occurrence at or after the moment of the request: never in the past, never a whole step late
    if step is None:
        candidates = [t for t in _month_occurrences(anchor, 12 * 100) if t >= before]
        assert first in candidates[:2], (first, candidates[:2])
        assert first == candidates[0] or candidates[0] < after
    else:
        assert (first - anchor) % step == timedelta(0), first
        assert before - timedelta(seconds=1) <= first < after + step
    row = schedule_row(db, external_id, name)
    assert (row["interval"], row["anchor_at"], row["next_at"]) == (canonical, anchor, first)


def test_first_firing_follows_scheduled_at_and_start_at(client: httpx.Client) -> None:
    def first(**fields: Any) -> datetime:
        accepted = post(client, {"name": uid("s"), "identifier": [ident(uid())], **fields})
        return ts(accepted["scheduled_at"])

    at = datetime(2131, 6, 1, 9, 0, tzinfo=UTC)
    # one-time: the later of the two times, whatever offset they are written with
    assert first(scheduled_at="2131-06-01T11:00:00+02:00") == at
    assert first(scheduled_at=iso(at), start_at=iso(at + timedelta(days=2))) == at + timedelta(days=2)
    assert first(scheduled_at=iso(at + timedelta(days=2)), start_at=iso(at)) == at + timedelta(days=2)
    assert first(start_at=iso(at)) == at
    # one-time in the past: due at once (its own time is kept)
    assert first(scheduled_at="2001-02-03T04:05:06Z") == datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    # recurring: anchored at scheduled_at, first occurrence at or after start_at
    assert first(scheduled_at=iso(at), start_at=iso(at + timedelta(days=2, hours=3)), interval="7 days") == (
        at + timedelta(days=7)
    )
    assert first(scheduled_at=iso(at), start_at=iso(at + timedelta(days=7)), interval="7 days") == (
        at + timedelta(days=7)
    )
    assert first(scheduled_at=iso(at + timedelta(days=3)), start_at=iso(at), interval="1 day") == (
        at + timedelta(days=3)
    )
    # recurring from start_at alone, and from now when neither is given
    assert first(start_at=iso(at), interval="24h") == at
    before = datetime.now(UTC)
    now_first = first(interval="1 hour")
    assert before - timedelta(seconds=1) <= now_first <= datetime.now(UTC)


# -- 3. firing, with the clock in the test's hands -------------------------------------------------------------


def test_one_time_schedule_fires_once(
    paused: Server, client: httpx.Client, clean: psycopg.Connection[Any], base: datetime
) -> None:
    db = clean
    external_id = uid()
    name = uid("once")
    at = base + timedelta(hours=1)
    post(client, {"name": name, "identifier": [ident(external_id)], "scheduled_at": iso(at), "data": {"k": 1}})
    assert fire_at(paused, at - timedelta(seconds=1)) == 0
    assert fire_at(paused, at) == 1
    assert fire_at(paused, at) == 0
    assert fire_at(paused, at + timedelta(days=30)) == 0
    assert history(db, external_id) == [(f"scheduled.{name}", {"k": 1})]
    row = schedule_row(db, external_id, name)
    assert (row["next_at"], row["fired"], row["last_fired_at"]) == (None, 1, at)
    # the event went through the inbox like any other: accepted, then applied
    assert one(db, "SELECT count(*) FROM user_events WHERE name = %s", (f"scheduled.{name}",)) == 1


def test_recurring_schedule_fires_on_its_cadence(
    paused: Server, client: httpx.Client, clean: psycopg.Connection[Any], base: datetime
) -> None:
    db = clean
    external_id = uid()
    name = uid("hourly")
    anchor = base + timedelta(hours=1)
    accepted = post(
        client,
        {
            "name": name,
            "identifier": [ident(external_id)],
            "scheduled_at": iso(anchor),
            "interval": "1 hour",
            "data": {"d": "x"},
        },
    )
    assert ts(accepted["scheduled_at"]) == anchor
    for step in range(5):
        occurrence = anchor + timedelta(hours=step)
        assert fire_at(paused, occurrence - timedelta(seconds=1)) == 0, step
        assert fire_at(paused, occurrence) == 1, step
        assert fire_at(paused, occurrence + timedelta(minutes=59)) == 0, step
        assert next_at(db, external_id, name) == occurrence + timedelta(hours=1)
        assert len(history(db, external_id)) == step + 1
    assert history(db, external_id) == [(f"scheduled.{name}", {"d": "x"})] * 5
    assert schedule_row(db, external_id, name)["fired"] == 5


def test_month_interval_from_january_31_clamps_to_each_month_end(
    paused: Server, client: httpx.Client, clean: psycopg.Connection[Any]
) -> None:
    db = clean
    external_id = uid()
    name = uid("monthly")
    anchor = datetime(2131, 1, 31, 10, 0, tzinfo=UTC)
    body = {"name": name, "identifier": [ident(external_id)], "scheduled_at": iso(anchor), "interval": "1 month"}
    assert ts(post(client, body)["scheduled_at"]) == anchor
    expected = [datetime(2131, month, day, 10, 0, tzinfo=UTC) for month, day in ((2, 28), (3, 31), (4, 30), (5, 31))]
    at = anchor
    for following in expected:
        assert fire_at(paused, at) == 1
        assert next_at(db, external_id, name) == following  # computed from the anchor: no drift to the 28th
        at = following
    assert len(history(db, external_id)) == 4

    # a leap year's February has a 29th
    leap_id = uid()
    body = {"name": name, "identifier": [ident(leap_id)], "scheduled_at": "2132-01-31T10:00:00Z", "interval": "1 mo"}
    post(client, body)
    # (the 2131 schedule is due too, at its May 31: after that downtime it fires once, no burst)
    assert fire_at(paused, datetime(2132, 1, 31, 10, 0, tzinfo=UTC)) == 2
    assert next_at(db, leap_id, name) == datetime(2132, 2, 29, 10, 0, tzinfo=UTC)
    assert next_at(db, external_id, name) == datetime(2132, 2, 29, 10, 0, tzinfo=UTC)
    assert len(history(db, external_id)) == 5


def test_upsert_replaces_time_interval_and_data(
    paused: Server, client: httpx.Client, clean: psycopg.Connection[Any], base: datetime
) -> None:
    db = clean
    external_id = uid()
    name = uid("r")
    t1 = base + timedelta(hours=1)
    first = post(
        client,
        {
            "name": name,
            "identifier": [ident(external_id)],
            "scheduled_at": iso(t1),
            "interval": "1 hour",
            "data": {"v": 1},
        },
    )
    assert fire_at(paused, t1) == 1
    assert next_at(db, external_id, name) == t1 + timedelta(hours=1)

    t2 = base + timedelta(hours=5)
    second = post(
        client,
        {
            "name": name,
            "identifier": [ident(external_id)],
            "scheduled_at": iso(t2),
            "interval": "2 hours",
            "data": {"v": 2},
        },
    )
    assert second["id"] == first["id"]  # the same schedule, replaced
    assert (ts(second["scheduled_at"]), second["data"]) == (t2, {"v": 2})
    row = schedule_row(db, external_id, name)
    assert (row["interval"], row["anchor_at"], row["next_at"], row["data"]) == ("2 hours", t2, t2, {"v": 2})
    assert one(db, "SELECT count(*) FROM schedules WHERE name = %s", (name,)) == 1

    # the old cadence is gone; the new one fires with the new data
    assert fire_at(paused, t1 + timedelta(hours=1)) == 0
    assert fire_at(paused, t2 - timedelta(seconds=1)) == 0
    assert fire_at(paused, t2) == 1
    assert next_at(db, external_id, name) == t2 + timedelta(hours=2)
    assert fire_at(paused, t2 + timedelta(hours=1)) == 0

    # replaced by a one-time schedule: it fires once and is done
    t3 = base + timedelta(hours=10)
    post(client, {"name": name, "identifier": [ident(external_id)], "scheduled_at": iso(t3), "data": {"v": 3}})
    assert schedule_row(db, external_id, name)["interval"] is None
    assert fire_at(paused, t3) == 1
    assert fire_at(paused, t3 + timedelta(days=400)) == 0
    assert next_at(db, external_id, name) is None
    event = f"scheduled.{name}"
    assert history(db, external_id) == [(event, {"v": 1}), (event, {"v": 2}), (event, {"v": 3})]


def test_delete_stops_the_schedule(
    paused: Server, client: httpx.Client, clean: psycopg.Connection[Any], base: datetime
) -> None:
    db = clean
    external_id = uid()
    alias = uid("alias")
    name = uid("d")
    kept = uid("kept")
    anchor = base + timedelta(hours=1)
    for schedule_name in (name, kept):
        post(
            client,
            {
                "name": schedule_name,
                "identifier": [ident(external_id)],
                "scheduled_at": iso(anchor),
                "interval": "1 hour",
            },
        )
    assert client.post("/client/users", json={"identifier": [ident(external_id), ident(alias)]}).status_code == 200
    assert fire_at(paused, anchor) == 2
    # any one of the user's identifiers names it
    response = delete(client, name, ident(alias))
    assert response.status_code == 200, response.text
    assert response.content == b""
    assert fire_at(paused, anchor + timedelta(hours=1)) == 1  # only the other name is left
    assert fire_at(paused, anchor + timedelta(days=10)) == 1
    assert [event for event, _ in history(db, external_id)].count(f"scheduled.{name}") == 1
    assert one(db, "SELECT count(*) FROM schedules WHERE name = %s", (name,)) == 0
    assert_problem(delete(client, name, ident(external_id)), 404, "name: no schedule")
    assert_problem(delete(client, uid("never"), ident(external_id)), 404, "name: no schedule")

    # a DELETE naming nobody answers 404 and creates no one
    stranger = uid("stranger")
    assert_problem(delete(client, kept, ident(stranger)), 404, "name: no schedule")
    assert_problem(delete(client, kept, ident(stranger), kind="organization"), 404, "name: no schedule")
    assert stored_for(db, stranger) == (0, 0, 0)


@pytest.mark.parametrize("lands_on_an_occurrence", [False, True])
def test_downtime_fires_once_then_resumes_the_cadence(
    paused: Server, client: httpx.Client, clean: psycopg.Connection[Any], base: datetime, lands_on_an_occurrence: bool
) -> None:
    db = clean
    external_id = uid()
    name = uid("down")
    anchor = base + timedelta(hours=1)
    post(
        client,
        {"name": name, "identifier": [ident(external_id)], "scheduled_at": iso(anchor), "interval": "1 hour"},
    )
    assert fire_at(paused, anchor) == 1
    # down for ten intervals (and a half, or exactly): one firing for the missed period, no burst
    back = anchor + timedelta(hours=10, minutes=0 if lands_on_an_occurrence else 30)
    assert fire_at(paused, back) == 1
    assert fire_at(paused, back) == 0
    row = schedule_row(db, external_id, name)
    assert (row["next_at"], row["fired"], row["last_fired_at"]) == (anchor + timedelta(hours=11), 2, back)
    # and the cadence goes on from the anchor's rhythm
    assert fire_at(paused, anchor + timedelta(hours=11)) == 1
    assert next_at(db, external_id, name) == anchor + timedelta(hours=12)
    assert len(history(db, external_id)) == 3


def test_organization_schedule_fires_into_organization_events(
    paused: Server, client: httpx.Client, clean: psycopg.Connection[Any], base: datetime
) -> None:
    db = clean
    org = uid("org")
    name = uid("renewal")
    at = base + timedelta(hours=2)
    body = {"name": name, "identifier": [ident(org)], "scheduled_at": iso(at), "data": {"seats": 5}}
    accepted = post(client, body, "organization")
    assert ts(accepted["scheduled_at"]) == at
    org_id = profile_id(db, org, "organization")
    assert org_id is not None  # the schedule created the organization it names
    assert profile_id(db, org) is None  # and no user
    row = schedule_row(db, org, name, "organization")
    assert row["next_at"] == at
    assert fire_at(paused, at) == 1
    assert history(db, org, "organization") == [(f"scheduled.{name}", {"seats": 5})]
    assert one(db, "SELECT count(*) FROM user_events WHERE name = %s", (f"scheduled.{name}",)) == 0

    # cancel and 404 on the organization route
    post(client, {**body, "interval": "1 day"}, "organization")
    assert delete(client, name, ident(org), kind="organization").status_code == 200
    assert_problem(delete(client, name, ident(org), kind="organization"), 404, "name: no schedule")
    # a user's and an organization's schedules are apart: the user route does not see the organization's
    post(client, body, "organization")
    assert_problem(delete(client, name, ident(org)), 404, "name: no schedule")
    assert stored_for(db, org)[0] == 1

    # deleting the organization deletes its schedules
    assert client.request("DELETE", "/client/organizations", json={"identifier": [ident(org)]}).status_code == 204
    assert one(db, "SELECT count(*) FROM schedules WHERE organization_id = %s", (org_id,)) == 0
    assert fire_at(paused, at + timedelta(days=1)) == 0


# -- 6. profiles: delete and merge -----------------------------------------------------------------------------


def test_deleting_a_user_deletes_its_schedules(
    paused: Server, client: httpx.Client, clean: psycopg.Connection[Any], base: datetime
) -> None:
    db = clean
    gone, stays = uid("gone"), uid("stays")
    at = base + timedelta(hours=1)
    for external_id in (gone, stays):
        for name in ("a", "b"):
            post(client, {"name": name, "identifier": [ident(external_id)], "scheduled_at": iso(at), "interval": "1h"})
    gone_id = profile_id(db, gone)
    assert one(db, "SELECT count(*) FROM schedules WHERE user_id = %s", (gone_id,)) == 2
    assert client.request("DELETE", "/client/users", json={"identifier": [ident(gone)]}).status_code == 204
    assert one(db, "SELECT count(*) FROM schedules WHERE user_id = %s", (gone_id,)) == 0
    assert stored_for(db, gone) == (0, 0, 0)
    assert fire_at(paused, at) == 2  # only the other user's
    assert len(history(db, stays)) == 2
    assert stored_for(db, gone) == (0, 0, 0)  # no firing brought the deleted user back


def test_merge_moves_schedules_to_the_survivor_and_its_own_win_a_clash(
    paused: Server, client: httpx.Client, clean: psycopg.Connection[Any], base: datetime
) -> None:
    db = clean
    anonymous = {"source": "anonymous", "external_id": uid("anon")}
    known = uid("known")
    at = base + timedelta(hours=1)

    def schedule(identifier: dict[str, Any], name: str, who: str) -> None:
        post(client, {"name": name, "identifier": [identifier], "scheduled_at": iso(at), "data": {"who": who}})

    schedule(anonymous, "moved", "anonymous")
    schedule(anonymous, "clash", "anonymous")
    schedule(ident(known), "clash", "known")
    schedule(ident(known), "own", "known")
    anonymous_id = profile_id(db, anonymous["external_id"], source="anonymous")
    known_id = profile_id(db, known)
    assert anonymous_id != known_id

    response = client.post("/client/users", json={"identifier": [ident(known), anonymous]})
    assert response.status_code == 200, response.text
    survivor = response.json()["id"]
    assert UUID(survivor) == known_id  # a profile with a non-anonymous identifier survives
    assert one(db, "SELECT count(*) FROM users WHERE id = %s", (anonymous_id,)) == 0
    rows = db.execute("SELECT name, data FROM schedules WHERE user_id = %s ORDER BY name", (known_id,)).fetchall()
    assert rows == [("clash", {"who": "known"}), ("moved", {"who": "anonymous"}), ("own", {"who": "known"})]
    assert one(db, "SELECT count(*) FROM schedules WHERE user_id = %s", (anonymous_id,)) == 0

    assert fire_at(paused, at) == 3
    assert sorted((name, data["who"]) for name, data in history(db, known)) == [
        ("scheduled.clash", "known"),
        ("scheduled.moved", "anonymous"),
        ("scheduled.own", "known"),
    ]
    assert (
        one(
            db,
            "SELECT count(*) FROM users WHERE id <> %s AND id IN (SELECT user_id FROM user_identifiers"
            " WHERE external_id IN (%s, %s))",
            (known_id, known, anonymous["external_id"]),
        )
        == 0
    )
    # the moved schedule is the survivor's now: replaced and cancelled through the survivor's identifier
    post(client, {"name": "moved", "identifier": [ident(known)], "scheduled_at": iso(at), "data": {"who": "new"}})
    assert one(db, "SELECT count(*) FROM schedules WHERE user_id = %s AND name = 'moved'", (known_id,)) == 1
    assert delete(client, "moved", ident(known)).status_code == 200


def test_organization_merge_moves_schedules_to_the_survivor(
    paused: Server, client: httpx.Client, clean: psycopg.Connection[Any], base: datetime
) -> None:
    db = clean
    older, newer = uid("older"), uid("newer")
    at = base + timedelta(hours=1)
    for org, names in ((older, ("clash", "a")), (newer, ("clash", "b"))):
        for name in names:
            body = {"name": name, "identifier": [ident(org)], "scheduled_at": iso(at), "data": {"from": org}}
            post(client, body, "organization")
    older_id, newer_id = profile_id(db, older, "organization"), profile_id(db, newer, "organization")
    response = client.post("/client/organizations", json={"identifier": [ident(newer), ident(older)]})
    assert response.status_code == 200, response.text
    assert UUID(response.json()["id"]) == older_id  # the oldest survives
    rows = db.execute(
        "SELECT name, data ->> 'from' FROM schedules WHERE organization_id = %s ORDER BY name", (older_id,)
    ).fetchall()
    assert rows == [("a", older), ("b", newer), ("clash", older)]
    assert one(db, "SELECT count(*) FROM schedules WHERE organization_id = %s", (newer_id,)) == 0
    assert fire_at(paused, at) == 3
    assert sorted(name for name, _ in history(db, older, "organization")) == [
        "scheduled.a",
        "scheduled.b",
        "scheduled.clash",
    ]


# -- timestamps PostgreSQL cannot hold once in UTC ------------------------------------------------------------


@pytest.mark.parametrize("moment", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00"])
def test_timestamp_outside_years_1_to_9999_in_utc_is_a_400(paused: Server, moment: str) -> None:
    with paused.client() as fresh:  # a 500 closes the connection
        response = fresh.post(USERS, json={"name": "edge", "identifier": [ident(uid())], "scheduled_at": moment})
    assert response.status_code == 400, response.text
    assert "scheduled_at" in response.json()["detail"]
    assert "9998" in response.json()["detail"]


def test_an_anchor_before_year_1_in_utc_does_not_stall_the_scheduler(
    paused: Server, clean: psycopg.Connection[Any], base: datetime
) -> None:
    db = clean
    victim = uid("victim")
    try:
        with paused.client() as fresh:
            poison = {"name": "poison", "identifier": [ident(uid())], "interval": "1 day"}
            response = fresh.post(USERS, json={**poison, "start_at": "0001-01-01T00:30:00+01:00"})
            assert response.status_code == 400, response.text
            post(
                fresh, {"name": "victim", "identifier": [ident(victim)], "scheduled_at": iso(base + timedelta(days=2))}
            )
        fire_at(paused, base + timedelta(days=3))
        assert len(history(db, victim)) == 1
    finally:
        db.execute("DELETE FROM schedules")


# -- 4. concurrent schedulers ----------------------------------------------------------------------------------

BULK_SETUP = """
WITH made AS (
    INSERT INTO users (project_id, data)
    SELECT %(project)s, jsonb_build_object('n', g) FROM generate_series(1, %(users)s) AS g
    RETURNING id, (data ->> 'n')::int AS n
), named AS (
    INSERT INTO user_identifiers (project_id, user_id, source, external_id)
    SELECT %(project)s, id, 'default', %(prefix)s || n FROM made
    RETURNING user_id, external_id
)
INSERT INTO schedules (project_id, kind, user_id, identifiers, name, data, anchor_at, interval_text, next_at)
SELECT %(project)s, 'user', m.id,
       jsonb_build_array(jsonb_build_object('source', 'default', 'external_id', i.external_id)),
       'bulk_' || k, jsonb_build_object('n', m.n, 'k', k),
       CASE WHEN (m.n + k) %% 2 = 0 THEN %(now)s - interval '1 minute' ELSE %(now)s - %(behind)s::interval END,
       CASE WHEN (m.n + k) %% 2 = 0 THEN NULL ELSE %(interval)s END,
       %(now)s - interval '1 minute' * (1 + (m.n * 7 + k) %% 50)
FROM made AS m JOIN named AS i ON i.user_id = m.id CROSS JOIN generate_series(1, %(names)s) AS k
"""


def bulk_schedules(
    conn: psycopg.Connection[Any], now: datetime, users: int, names: int, prefix: str, interval: str, behind: str
) -> None:
    """users x names due schedules (SQL setup, for speed): half one-time, half recurring with an anchor
    `behind` now (so each recurring one is due once, now)."""
    project = one(conn, "SELECT id FROM projects WHERE name = 'default'")
    conn.execute(
        BULK_SETUP,
        {
            "project": project,
            "users": users,
            "names": names,
            "prefix": prefix,
            "now": now,
            "interval": interval,
            "behind": behind,
        },
    )


def assert_each_fired_once(conn: psycopg.Connection[Any], total: int, prefix: str, context: str = "") -> None:
    settle(conn)
    per_schedule = conn.execute(
        "SELECT i.external_id, e.name, e.data, count(*) FROM user_events AS e"
        " JOIN user_identifiers AS i ON i.user_id = e.user_id"
        " WHERE i.external_id LIKE %s AND e.name LIKE 'scheduled.%%' GROUP BY 1, 2, 3",
        (prefix + "%",),
    ).fetchall()
    twice = [row for row in per_schedule if row[3] != 1]
    assert twice == [], f"{len(twice)} schedules fired more than once: {twice[:10]}; {context}"
    assert len(per_schedule) == total, f"{total - len(per_schedule)} schedules never fired; {context}"
    # each event is its own schedule's: the user's number and the schedule's name in its data
    wrong = [r for r in per_schedule if r[0] != f"{prefix}{r[2]['n']}" or r[1] != f"scheduled.bulk_{r[2]['k']}"]
    assert wrong == [], f"events on the wrong profile or with the wrong data: {wrong[:10]}; {context}"
    fired = dict(conn.execute("SELECT fired, count(*) FROM schedules GROUP BY 1").fetchall())
    assert fired == {1: total}, f"{fired}; {context}"


async def test_three_concurrent_schedulers_fire_each_of_1000_due_schedules_once(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(extra_env=PAUSED)
    now = datetime.now(UTC).replace(microsecond=0)
    prefix = uid("bulk") + "_"
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        bulk_schedules(conn, now, users=500, names=2, prefix=prefix, interval="1 hour", behind="10 hours 30 minutes")
        assert one(conn, "SELECT count(*) FROM schedules WHERE next_at <= %s", (now,)) == 1000

    async def due(pool: AsyncConnectionPool[Any]) -> int:
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT count(*) FROM schedules WHERE next_at <= %s", (now,))
            row = await cursor.fetchone()
            assert row is not None
            return int(row[0])

    fired = [0, 0, 0]
    batches = [0, 0, 0]

    async def run(index: int, scheduler: Scheduler) -> None:
        while True:
            n = await scheduler.run_once()
            fired[index] += n
            batches[index] += n > 0
            if n == 0:
                if await due(scheduler.pool) == 0:
                    return
                await asyncio.sleep(0.002)  # the rest is claimed by the others: look again

    pools = [await open_pool(server.database_url, min_size=1, max_size=2) for _ in range(3)]
    try:
        schedulers = [Scheduler(pool, batch_size=20, clock=lambda: now) for pool in pools]
        await asyncio.wait_for(asyncio.gather(*(run(n, s) for n, s in enumerate(schedulers))), timeout=60)
    finally:
        for pool in pools:
            await pool.close()

    context = f"fired per scheduler {fired} in {batches} batches"
    assert sum(fired) == 1000, context
    assert len([n for n in fired if n > 0]) >= 2, context  # they really shared the work
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        # the inbox got exactly one event per schedule (before or after the workers applied it)
        # (one statement, one snapshot: a worker moving events from one to the other is not counted twice)
        enqueued = one(conn, "SELECT (SELECT count(*) FROM event_inbox) + (SELECT count(*) FROM user_events)")
        assert enqueued == 1000, context
        assert_each_fired_once(conn, 1000, prefix, context)
        # recurring ones resumed their cadence after now: the occurrence after now, not a catch-up burst
        nexts = dict(
            conn.execute("SELECT interval_text IS NULL, array_agg(DISTINCT next_at) FROM schedules GROUP BY 1")
        )
        assert nexts == {True: [None], False: [now + timedelta(minutes=30)]}, nexts


# -- 5. the server's own scheduler, in real time and under kill -9 ----------------------------------------------


def test_server_scheduler_fires_due_schedules_by_itself(live: Server) -> None:
    external_id = uid()
    with live.client() as client, psycopg.connect(live.database_url, autocommit=True) as db:
        db.execute("SET TIME ZONE 'UTC'")
        post(
            client,
            {
                "name": "past",
                "identifier": [ident(external_id)],
                "scheduled_at": "2020-01-01T00:00:00Z",
                "data": {"late": True},
            },
        )
        before = datetime.now(UTC)
        accepted = post(client, {"name": "every", "identifier": [ident(external_id)], "interval": "1 minute"})
        first = ts(accepted["scheduled_at"])  # now: a recurring schedule with no times starts at once
        wait_until(lambda: len(history(db, external_id)) == 2, timeout=20, what="both schedules to fire")
        assert sorted(history(db, external_id), key=lambda e: e[0]) == [
            ("scheduled.every", {}),
            ("scheduled.past", {"late": True}),
        ]
        assert next_at(db, external_id, "past") is None
        assert next_at(db, external_id, "every") == first + timedelta(minutes=1)
        assert first >= before - timedelta(seconds=1)


def _start_expecting_a_kill(server: Server, errors: list[BaseException]) -> None:
    try:
        server.start()
    except AssertionError as exc:  # "server exited": fine when it is the test's own SIGKILL, during the start
        if server.process is None or server.process.poll() != -signal.SIGKILL:
            errors.append(exc)
    except BaseException as exc:
        errors.append(exc)


def _fired(conn: psycopg.Connection[Any]) -> int:
    return int(one(conn, "SELECT coalesce(sum(fired), 0) FROM schedules"))


def _kill_once_firing(
    server: Server, conn: psycopg.Connection[Any], beyond: int, total: int, start: bool
) -> int | None:
    """SIGKILL the server as soon as more than `beyond` schedules have fired (after starting it, with `start`:
    in a thread, since its scheduler may be at work before it reports ready). Returns how many had fired at
    the kill, or None when it fired them all before we could kill."""
    errors: list[BaseException] = []
    starter = threading.Thread(target=_start_expecting_a_kill, args=(server, errors), daemon=True)
    if start:
        starter.start()
    deadline = time.monotonic() + 60
    try:
        while True:
            n = _fired(conn)
            if n >= total:
                return None
            if n > beyond:
                server.kill()
                return _fired(conn)
            assert time.monotonic() < deadline, f"firing stuck at {n} of {total}; server log {server.log_path}"
            time.sleep(0.002)
    finally:
        if start:
            starter.join(timeout=90)
            assert not starter.is_alive()
            assert errors == [], errors


def test_sigkill_mid_firing_then_restart_fires_each_due_schedule_once(
    server_factory: Callable[..., Server],
) -> None:
    users, names = 300, 10
    total = users * names
    server = server_factory(extra_env={**FAST, "LUNOGRAM_SCHEDULER_BATCH_SIZE": "25"})
    prefix = uid("crash") + "_"
    seed = int(os.environ.get("LUNOGRAM_CRASH_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        now = datetime.now(UTC).replace(microsecond=0)
        # all due at once, in one transaction: the running server's scheduler starts on them when it commits
        bulk_schedules(conn, now, users=users, names=names, prefix=prefix, interval="1 day", behind="36 hours")

        # this life and the next are killed at random points (LUNOGRAM_CRASH_SEED=<seed> replays them)
        kills: list[int] = []
        for life in range(2):
            beyond = (kills[-1] if kills else 0) + rng.randrange(total // 4)
            at_kill = _kill_once_firing(server, conn, beyond=beyond, total=total, start=life > 0)
            if at_kill is None:
                break
            kills.append(at_kill)
            # what a killed life committed is whole: one enqueued event for each firing, no more, no less
            enqueued = one(
                conn,
                "SELECT (SELECT count(*) FROM event_inbox WHERE name LIKE 'scheduled.%')"
                " + (SELECT count(*) FROM user_events WHERE name LIKE 'scheduled.%')",
            )
            assert enqueued == at_kill, f"seed {seed}: {enqueued} events enqueued for {at_kill} firings"
        context = f"seed {seed}: killed at {kills} of {total} fired; server log {server.log_path}"
        print(context)
        assert kills, f"all {total} fired before the first kill: make the batches smaller; {context}"
        assert 0 < kills[0] < total, context
        if server.process is None or server.process.poll() is not None:
            server.start()

        wait_until(lambda: _fired(conn) >= total, timeout=60, what=f"all schedules to fire; {context}")
        assert_each_fired_once(conn, total, prefix, context)
        nexts = dict(
            conn.execute("SELECT interval_text IS NULL, array_agg(DISTINCT next_at) FROM schedules GROUP BY 1")
        )
        assert nexts == {True: [None], False: [now + timedelta(hours=12)]}, context
        per_user = collections.Counter(
            ext
            for (ext,) in conn.execute(
                "SELECT i.external_id FROM user_events AS e JOIN user_identifiers AS i USING (user_id)"
            )
        )
        assert set(per_user.values()) == {names}, context
