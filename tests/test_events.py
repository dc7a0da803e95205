"""POST /api/client/users/events and /api/client/organizations/events, and the workers that apply them.

Everything is real: `lunogram serve` subprocesses over HTTP, PostgreSQL inspected directly, and (where a test
needs to drive the workers itself) `EventWorker`s run in this process against the server's database, next
to a server started with LUNOGRAM_EVENT_WORKER_TASKS=0 so that only the test's workers apply events.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from event_plugins import LOG_TABLE
from helpers import PgCluster, Server, ident, uid, wait_until
from lunogram_server.config import EventSettings
from lunogram_server.db import open_pool
from lunogram_server.events.models import ProcessedEvent
from lunogram_server.events.worker import EventWorker

MAX_EVENTS = 50
MAX_NAME = 16
# Servers whose events only the test's own workers apply, with small documented limits.
PAUSED = {
    "LUNOGRAM_EVENT_WORKER_TASKS": "0",
    "LUNOGRAM_MAX_EVENTS_PER_REQUEST": str(MAX_EVENTS),
    "LUNOGRAM_MAX_NAME_LENGTH": str(MAX_NAME),
}
TESTS_DIR = str(Path(__file__).resolve().parent)
PLUGIN_PATH = os.pathsep.join(p for p in (TESTS_DIR, os.environ.get("PYTHONPATH", "")) if p)


# -- fixtures and helpers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(server_factory: Callable[..., Server]) -> Server:
    """A server with its own workers, on a database of its own; broadcasts fan out 1,000 targets a step."""
    return server_factory(extra_env={"LUNOGRAM_BROADCAST_CHUNK": "1000", "LUNOGRAM_EVENT_POLL_SECONDS": "0.02"})


@pytest.fixture
def live_db(live: Server) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(live.database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def live_client(live: Server) -> Iterator[httpx.Client]:
    with live.client() as c:
        yield c


@pytest.fixture(scope="module")
def validating(server_factory: Callable[..., Server]) -> Server:
    """A paused server for validation: what it accepts stays in the inbox, where the test can count it."""
    return server_factory(extra_env=PAUSED)


@pytest.fixture
def paused(server_factory: Callable[..., Server]) -> Server:
    """A fresh paused server per test: the test's workers are the only ones, and its inbox is its own."""
    return server_factory(extra_env=PAUSED)


def scalar(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def column(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> list[Any]:
    return [row[0] for row in conn.execute(sql, params).fetchall()]


def post_events(client: httpx.Client, events: list[dict[str, Any]], kind: str = "users") -> None:
    response = client.post(f"/client/{kind}/events", json=events)
    assert_accepted(response)


def assert_accepted(response: httpx.Response) -> None:
    assert response.status_code == 202, response.text
    assert response.content == b""
    assert "json" not in response.headers.get("content-type", "")


def assert_problem(response: httpx.Response, status: int, title: str, detail_start: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    problem: dict[str, Any] = response.json()
    assert {"title", "detail", "status"} <= problem.keys(), problem
    assert problem["title"] == title
    assert problem["status"] == status
    assert isinstance(problem["detail"], str)
    assert problem["detail"].startswith(detail_start), problem["detail"]
    return problem


def user_id_of(conn: psycopg.Connection[Any], external_id: str, source: str = "default") -> UUID | None:
    row = conn.execute(
        "SELECT user_id FROM user_identifiers WHERE source = %s AND external_id = %s", (source, external_id)
    ).fetchone()
    return None if row is None else UUID(str(row[0]))


def history(conn: psycopg.Connection[Any], user_id: UUID | None) -> list[tuple[str, Any]]:
    """A user's events (name, data) in history order."""
    rows = conn.execute("SELECT name, data FROM user_events WHERE user_id = %s ORDER BY id", (user_id,))
    return [(name, data) for name, data in rows.fetchall()]


def upsert_user(client: httpx.Client, *identifiers: dict[str, Any], **fields: Any) -> dict[str, Any]:
    response = client.post("/client/users", json={"identifier": list(identifiers), **fields})
    assert response.status_code == 200, response.text
    user: dict[str, Any] = response.json()
    return user


def aclient(server: Server, key: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.base_url, headers={"Authorization": f"Bearer {key or server.secret_key}"}, timeout=30
    )


async def apost_events(client: httpx.AsyncClient, events: list[dict[str, Any]], kind: str = "users") -> None:
    assert_accepted(await client.post(f"/client/{kind}/events", json=events))


@asynccontextmanager
async def worker_pool(server: Server, size: int = 8, warm: int = 1) -> AsyncIterator[AsyncConnectionPool[Any]]:
    pool = await open_pool(server.database_url, min_size=warm, max_size=size)
    try:
        yield pool
    finally:
        await pool.close()


async def afetch(pool: AsyncConnectionPool[Any], sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cursor = await conn.execute(sql, params)
        return await cursor.fetchall()


async def pending(pool: AsyncConnectionPool[Any]) -> int:
    """Inbox events still to be applied (dead letters excluded)."""
    rows = await afetch(pool, "SELECT count(*) FROM event_inbox WHERE dead_at IS NULL")
    return int(rows[0][0])


async def drain(
    pool: AsyncConnectionPool[Any],
    workers: Sequence[EventWorker],
    until: Callable[[], Awaitable[bool]] | None = None,
    within: float = 30.0,
) -> None:
    """Run the workers concurrently, each calling `run_once` until `until()` holds (default: nothing pending).

    `run_once` raises whatever a batch raises, so a broken worker fails the test instead of hanging it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within

    async def done() -> bool:
        return await until() if until is not None else await pending(pool) == 0

    async def work(worker: EventWorker) -> None:
        while not await done():
            if loop.time() > deadline:
                raise AssertionError(f"{worker.name}: the inbox did not drain within {within}s")
            if await worker.run_once() == 0:
                # nothing due that another worker does not hold (or a retry's backoff is running): look again
                await asyncio.sleep(0.005)

    await asyncio.gather(*(work(worker) for worker in workers))


class Recorder:
    """A subscriber that keeps what it is handed, and checks it is called inside the worker's transaction:
    the history of each event it gets is already written (visible) on the connection it is given."""

    def __init__(self) -> None:
        self.events: list[ProcessedEvent] = []
        self.history_visible: list[bool] = []

    async def on_events(self, conn: psycopg.AsyncConnection[Any], events: Sequence[ProcessedEvent]) -> None:
        for event in events:
            table, column_name = (
                ("user_events", "user_id") if event.kind == "user" else ("organization_events", "organization_id")
            )
            cursor = await conn.execute(
                f"SELECT count(*) FROM {table} WHERE inbox_id = %s AND {column_name} = %s",
                (event.inbox_id, event.target_id),
            )
            row = await cursor.fetchone()
            self.history_visible.append(row is not None and row[0] == 1)
        self.events.extend(events)


class Poison:
    """A subscriber that fails on events whose data has {"poison": true}."""

    def __init__(self) -> None:
        self.calls = 0

    async def on_events(self, conn: psycopg.AsyncConnection[Any], events: Sequence[ProcessedEvent]) -> None:
        self.calls += 1
        for event in events:
            if event.data.get("poison") is True:
                raise RuntimeError(f"poisoned event {event.name}")


# -- ingest: 202, identities, data ----------------------------------------------------------------------------


def test_batch_of_mixed_users_lands_in_each_users_history(
    live_client: httpx.Client, live_db: psycopg.Connection[Any]
) -> None:
    tok = uid("t")
    known, known_email = uid("known"), f"{uid('mail')}@example.com"
    existing = upsert_user(live_client, ident(known), ident(known_email, source="email"))
    fresh, fresh_crm = uid("fresh"), uid("crm")
    repeat = uid("repeat")
    batch = [
        {"name": f"{tok}.a", "data": {"n": 1, "nested": {"k": [1, 2]}}, "identifier": [ident(known)]},
        {"name": f"{tok}.b", "data": {"n": 2}, "identifier": [ident(fresh), ident(fresh_crm, source="crm")]},
        {"name": f"{tok}.r1", "identifier": [ident(repeat)]},  # `data` omitted
        {"name": f"{tok}.c", "data": {"n": 3}, "identifier": [ident(known_email, source="email")]},
        {"name": f"{tok}.r2", "data": None, "identifier": [ident(repeat)]},  # the Go SDK's nil map
        {"name": f"{tok}.r3", "data": {"n": 4}, "identifier": [ident(repeat, plan="pro")]},
        {"name": f"{tok}.d", "data": {"n": 5}, "identifier": [ident(fresh_crm, source="crm")]},
    ]
    response = live_client.post("/client/users/events", json=batch)
    assert_accepted(response)

    wait_until(
        lambda: (
            scalar(live_db, "SELECT count(*) FROM user_events WHERE name LIKE %s", (f"{tok}.%",)) == len(batch)
            and scalar(live_db, "SELECT count(*) FROM event_inbox WHERE name LIKE %s", (f"{tok}.%",)) == 0
        ),
        what="the batch to be applied",
    )
    known_id = UUID(existing["id"])
    assert user_id_of(live_db, known) == known_id
    # by either of its identifiers: the existing user (the two events hash to different partitions, so no order)
    assert sorted(history(live_db, known_id), key=lambda e: e[0]) == [
        (f"{tok}.a", {"n": 1, "nested": {"k": [1, 2]}}),
        (f"{tok}.c", {"n": 3}),
    ]
    # a new user made with all of its identifiers; found later through the second one too
    fresh_id = user_id_of(live_db, fresh)
    assert fresh_id is not None
    assert user_id_of(live_db, fresh_crm, "crm") == fresh_id
    assert history(live_db, fresh_id) == [(f"{tok}.b", {"n": 2}), (f"{tok}.d", {"n": 5})]
    # three events of one new identifier in one batch: one user, in order, omitted/null data stored as {}
    repeat_id = user_id_of(live_db, repeat)
    assert history(live_db, repeat_id) == [(f"{tok}.r1", {}), (f"{tok}.r2", {}), (f"{tok}.r3", {"n": 4})]
    assert scalar(live_db, "SELECT count(*) FROM user_identifiers WHERE external_id = %s", (repeat,)) == 1

    found = live_client.get("/admin/users", params={"external_id": fresh})
    assert found.status_code == 200, found.text
    assert found.json()["id"] == str(fresh_id)
    assert {(i["source"], i["external_id"]) for i in found.json()["identifier"]} == {
        ("default", fresh),
        ("crm", fresh_crm),
    }
    by_crm = live_client.get("/admin/users", params={"external_id": fresh_crm, "source": "crm"})
    assert by_crm.status_code == 200, by_crm.text
    assert by_crm.json()["id"] == str(fresh_id)
    # identifier metadata sent with an event is stored like an upsert's
    repeat_user = live_client.get("/admin/users", params={"external_id": repeat}).json()
    assert repeat_user["identifier"][0]["metadata"] == {"plan": "pro"}
    # the history API shows the same, newest first
    page = live_client.get(f"/admin/users/{repeat_id}/events")
    assert page.status_code == 200, page.text
    assert [e["name"] for e in page.json()["events"]] == [f"{tok}.r3", f"{tok}.r2", f"{tok}.r1"]


# -- validation: the whole batch or nothing -------------------------------------------------------------------


def _ok(name: str = "ok") -> dict[str, Any]:
    return {"name": name, "data": {}, "identifier": [ident(uid())]}


INVALID: list[tuple[str, Any, int, str, str]] = [
    ("identifier and match", [_ok(), {**_ok(), "match": {"plan": "pro"}}], 400, "bad request", "[1].match"),
    ("neither identifier nor match", [_ok(), _ok(), {"name": "x", "data": {}}], 400, "bad request", "[2].identifier"),
    ("empty array", [], 400, "bad request", "body"),
    ("object instead of array", _ok(), 400, "bad request", "body: must be a JSON array"),
    ("string instead of array", "events", 400, "bad request", "body: must be a JSON array"),
    ("empty name", [_ok(), {**_ok(), "name": ""}], 400, "bad request", "[1].name"),
    ("missing name", [{"data": {}, "identifier": [ident("x")]}], 400, "bad request", "[0].name"),
    ("name too long", [_ok(), _ok("n" * (MAX_NAME + 1))], 400, "bad request", "[1].name"),
    ("too many events", [_ok() for _ in range(MAX_EVENTS + 1)], 413, "payload too large", "body"),
    (
        "bad identifier in event 3",
        [_ok(), _ok(), _ok(), {"name": "x", "data": {}, "identifier": [{"external_id": ""}]}],
        400,
        "bad request",
        "[3].identifier[0].external_id",
    ),
    ("empty identifier list", [{"name": "x", "data": {}, "identifier": []}], 400, "bad request", "[0].identifier"),
    ("data not an object", [{**_ok(), "data": [1, 2]}], 400, "bad request", "[0].data"),
    ("match not an object", [{"name": "x", "data": {}, "match": "pro"}], 400, "bad request", "[0].match"),
    ("unknown field", [{**_ok(), "user_id": "u1"}], 400, "bad request", "[0].user_id"),
]


def _stored(conn: psycopg.Connection[Any]) -> tuple[int, int, int, int]:
    """What a request could have stored: inbox rows, the inbox id sequence, histories, users."""
    return (
        scalar(conn, "SELECT count(*) FROM event_inbox"),
        scalar(conn, "SELECT coalesce(pg_sequence_last_value('event_inbox_id_seq'), 0)"),
        scalar(conn, "SELECT count(*) FROM user_events") + scalar(conn, "SELECT count(*) FROM organization_events"),
        scalar(conn, "SELECT count(*) FROM users"),
    )


@pytest.mark.parametrize("kind", ["users", "organizations"])
@pytest.mark.parametrize(("body", "status", "title", "detail"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_batch_is_refused_whole(
    validating: Server, kind: str, body: Any, status: int, title: str, detail: str
) -> None:
    with validating.client() as client, psycopg.connect(validating.database_url, autocommit=True) as conn:
        before = _stored(conn)
        response = client.post(f"/client/{kind}/events", json=body)
        assert_problem(response, status, title, detail)
        assert _stored(conn) == before


def test_batch_at_the_limits_is_accepted(validating: Server) -> None:
    with validating.client() as client, psycopg.connect(validating.database_url, autocommit=True) as conn:
        inbox = scalar(conn, "SELECT count(*) FROM event_inbox")
        tok = uid("lim")[-MAX_NAME:]
        assert len(tok) == MAX_NAME
        post_events(client, [{**_ok(), "name": tok}] + [_ok() for _ in range(MAX_EVENTS - 1)])
        assert scalar(conn, "SELECT count(*) FROM event_inbox") == inbox + MAX_EVENTS
        stored = conn.execute(
            "SELECT kind, name, data, identifiers, match FROM event_inbox WHERE name = %s", (tok,)
        ).fetchall()
        assert len(stored) == 1
        assert stored[0][0] == "user"
        assert stored[0][2] == {}
        assert stored[0][3][0]["source"] == "default"  # the default source is filled in at ingest
        assert stored[0][4] is None
        # an organization match event, `data` omitted
        post_events(client, [{"name": tok, "match": {"tier": "gold"}}], kind="organizations")
        org_row = conn.execute(
            "SELECT kind, data, identifiers, match FROM event_inbox WHERE name = %s AND kind = 'organization'", (tok,)
        ).fetchone()
        assert org_row == ("organization", {}, None, {"tier": "gold"})


# -- permissions ----------------------------------------------------------------------------------------------


def test_public_key_may_post_identifier_events_but_not_match(live: Server, live_db: psycopg.Connection[Any]) -> None:
    tok = uid("pk")
    target = uid("pkuser")
    sequence = "SELECT coalesce(pg_sequence_last_value('event_inbox_id_seq'), 0)"
    with live.client(live.public_key) as public:
        post_events(public, [{"name": f"{tok}.ok", "data": {"a": 1}, "identifier": [ident(target)]}])
        wait_until(lambda: user_id_of(live_db, target) is not None, what="the public key's event to be applied")
        assert history(live_db, user_id_of(live_db, target)) == [(f"{tok}.ok", {"a": 1})]

        before = scalar(live_db, sequence)
        for kind in ("users", "organizations"):
            refused = public.post(
                f"/client/{kind}/events",
                json=[
                    {"name": f"{tok}.first", "data": {}, "identifier": [ident(uid())]},
                    {"name": f"{tok}.all", "data": {}, "match": {"plan": "pro"}},
                ],
            )
            assert_problem(refused, 403, "forbidden", "[1].match")
        assert scalar(live_db, sequence) == before  # not even the allowed first event was stored

    batch = [{"name": f"{tok}.anon", "data": {}, "identifier": [ident(uid())]}]
    no_key = httpx.post(f"{live.base_url}/client/users/events", json=batch)
    assert_problem(no_key, 401, "unauthorized", "")
    bad_key = httpx.post(
        f"{live.base_url}/client/users/events", json=batch, headers={"Authorization": "Bearer sk_not_a_real_key"}
    )
    assert_problem(bad_key, 401, "unauthorized", "")
    assert scalar(live_db, sequence) == before
    # a bare key (no `Bearer `) is accepted, and a secret key may broadcast
    bare = httpx.post(f"{live.base_url}/client/users/events", json=batch, headers={"Authorization": live.secret_key})
    assert_accepted(bare)
    with live.client() as secret:
        post_events(secret, [{"name": f"{tok}.all", "data": {}, "match": {"plan": uid("nobody")}}])
    assert scalar(live_db, sequence) == before + 2


# -- workers: order, broadcasts, organizations, subscribers, failures -----------------------------------------


async def test_per_user_order_survives_four_concurrent_workers(paused: Server) -> None:
    users = [uid(f"ord{n}") for n in range(20)]
    per_user = 30
    async with aclient(paused) as client:
        for external_id in users[::2]:  # half of them exist before their events, half are created by them
            assert (await client.post("/client/users", json={"identifier": [ident(external_id)]})).status_code == 200
        interleaved = [
            {"name": "seq", "data": {"seq": seq}, "identifier": [ident(external_id)]}
            for seq in range(per_user)
            for external_id in users
        ]
        for start in range(0, len(interleaved), MAX_EVENTS):
            await apost_events(client, interleaved[start : start + MAX_EVENTS])

    with psycopg.connect(paused.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE test_deliveries (inbox_id bigint NOT NULL, target_id uuid NOT NULL)")
        assert scalar(conn, "SELECT count(*) FROM event_inbox") == len(interleaved)
        partitions = scalar(conn, "SELECT count(DISTINCT partition) FROM event_inbox")
        assert partitions > 4  # enough partitions for four workers to hold some each

    class Deliveries:
        """Writes what it is handed in the worker's transaction: committed deliveries only."""

        async def on_events(self, conn: psycopg.AsyncConnection[Any], events: Sequence[ProcessedEvent]) -> None:
            await conn.execute(
                "INSERT INTO test_deliveries SELECT * FROM unnest(%s::bigint[], %s::uuid[])",
                ([e.inbox_id for e in events], [e.target_id for e in events]),
            )

    settings = EventSettings(batch_size=7, partitions_per_claim=2, poll_seconds=0.01)
    async with worker_pool(paused) as pool:
        workers = [EventWorker(pool, settings, [Deliveries()], name=f"test-order-{n}") for n in range(4)]
        await drain(pool, workers)
        stats = dict(await afetch(pool, "SELECT worker, processed FROM event_worker_stats"))

    with psycopg.connect(paused.database_url, autocommit=True) as conn:
        assert scalar(conn, "SELECT count(*) FROM user_events") == len(interleaved)
        assert scalar(conn, "SELECT count(*) FROM users") == len(users)
        for external_id in users:
            seqs = column(
                conn,
                "SELECT (e.data ->> 'seq')::int FROM user_events AS e JOIN user_identifiers AS i USING (user_id)"
                " WHERE i.external_id = %s ORDER BY e.id",
                (external_id,),
            )
            assert seqs == list(range(per_user)), external_id
        # every applied event reached the subscriber exactly once, in the transaction that committed it
        delivered = conn.execute("SELECT inbox_id, target_id FROM test_deliveries").fetchall()
        applied = conn.execute("SELECT inbox_id, user_id FROM user_events").fetchall()
        assert sorted(delivered) == sorted(applied)
    # the four really shared the work, and counted each event once
    assert len([w for w in workers if stats.get(w.name, 0) > 0]) >= 2, stats
    assert sum(stats.values()) == len(interleaved)


async def test_a_claim_does_not_reapply_events_another_worker_committed(paused: Server) -> None:
    """Two real workers with the interleaving forced: W1 holds a partition (its subscriber waits); W2's claim
    starts while W1 holds it; W1 commits while W2's claim is still looking for due partitions. W2 then gets
    the partition, and must find it empty rather than apply (and hand on) W1's events a second time."""
    with psycopg.connect(paused.database_url, autocommit=True) as conn:
        # events not yet due, many of them: every claim spends tens of milliseconds deciding they are not work
        conn.execute(
            "INSERT INTO event_inbox (project_id, kind, partition, name, data, identifiers, next_attempt_at)"
            " SELECT gen_random_uuid(), 'user', 0, 'later', '{}', '[]', 'infinity'"
            " FROM generate_series(1, 400000)"
        )
        conn.execute("ANALYZE event_inbox")

    class Holding(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.holding = asyncio.Event()
            self.release = asyncio.Event()

        async def on_events(self, conn: psycopg.AsyncConnection[Any], events: Sequence[ProcessedEvent]) -> None:
            await super().on_events(conn, events)
            self.holding.set()
            await self.release.wait()

    first, second = Holding(), Recorder()
    settings = EventSettings(partitions_per_claim=64)
    target = uid("race")
    async with worker_pool(paused, size=3, warm=3) as pool:
        w1 = EventWorker(pool, settings, [first], name="test-race-1")
        w2 = EventWorker(pool, settings, [second], name="test-race-2")
        # A new backend's first statement loads catalogs for milliseconds before it takes its snapshot: claim
        # (nothing is due yet) on all three connections at once, so that W2's claim "runs" only when it runs.
        assert await asyncio.gather(w1.run_once(), w2.run_once(), w2.run_once()) == [0, 0, 0]
        async with aclient(paused) as client:
            events = [{"name": "once", "data": {"n": n}, "identifier": [ident(target)]} for n in range(3)]
            await apost_events(client, events)

        task1 = asyncio.create_task(w1.run_once())
        await asyncio.wait_for(first.holding.wait(), 30)  # W1 holds the partition, its events applied
        task2 = asyncio.create_task(w2.run_once())
        deadline = asyncio.get_running_loop().time() + 30
        async with pool.connection() as watcher:
            while True:  # until W2's claim runs, its snapshot taken while the partition is still held
                cursor = await watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE state = 'active' AND backend_xmin IS NOT NULL AND query LIKE %s",
                    ("%FOR UPDATE SKIP LOCKED%",),
                )
                row = await cursor.fetchone()
                if row is not None and row[0] > 0:
                    break
                assert not task2.done(), "W2's claim was never seen running"
                assert asyncio.get_running_loop().time() < deadline, "W2's claim did not start"
        first.release.set()
        assert await asyncio.wait_for(task1, 30) == 3
        second_handled = await asyncio.wait_for(task2, 30)
        stats = dict(await afetch(pool, "SELECT worker, processed FROM event_worker_stats WHERE processed > 0"))

    assert [e.data for e in first.events] == [{"n": 0}, {"n": 1}, {"n": 2}]
    with psycopg.connect(paused.database_url, autocommit=True) as conn:
        assert history(conn, user_id_of(conn, target)) == [("once", {"n": n}) for n in range(3)]
    # W2 found nothing to do: no event handed on twice, none counted twice in the metrics
    assert second.events == []
    assert second_handled == 0
    assert stats == {"test-race-1": 3}


def test_match_broadcast_delivers_once_to_each_of_10000_users(
    live_client: httpx.Client, live_db: psycopg.Connection[Any]
) -> None:
    cohort, other = uid("cohort"), uid("cohort")
    project = upsert_user(live_client, ident(uid()))["project_id"]
    matching, not_matching = 10_000, 600
    # setup, one statement per group: users with data and an identifier each
    populate = """
        WITH made AS (
            INSERT INTO users (project_id, data)
            SELECT %(project)s, (%(variants)s::jsonb[])[1 + mod(g, %(count)s)]
            FROM generate_series(1, %(n)s) AS g
            RETURNING id
        )
        INSERT INTO user_identifiers (project_id, user_id, source, external_id)
        SELECT %(project)s, id, 'default', %(prefix)s || id::text FROM made
    """
    in_cohort = [{"cohort": cohort}, {"cohort": cohort, "plan": "pro"}]
    outside = [{"cohort": other}, {"other": cohort}, {"nested": {"cohort": cohort}}, {}, {"cohort": [cohort]}]
    for variants, n in ((in_cohort, matching), (outside, not_matching)):
        live_db.execute(
            populate,
            {
                "project": project,
                "variants": [Jsonb(v) for v in variants],
                "count": len(variants),
                "n": n,
                "prefix": f"{cohort}-",
            },
        )
    assert scalar(live_db, "SELECT count(*) FROM users WHERE data @> %s", (Jsonb({"cohort": cohort}),)) == matching
    outsiders = scalar(
        live_db,
        "SELECT count(*) FROM user_identifiers AS i JOIN users AS u ON u.id = i.user_id"
        " WHERE i.external_id LIKE %s AND NOT u.data @> %s",
        (f"{cohort}-%", Jsonb({"cohort": cohort})),
    )
    assert outsiders == not_matching

    name = f"{cohort}.launch"
    post_events(live_client, [{"name": name, "data": {"wave": 1}, "match": {"cohort": cohort}}])

    def delivered() -> int:
        done = scalar(live_db, "SELECT count(*) FROM event_inbox WHERE name = %s", (name,)) == 0
        return done and scalar(live_db, "SELECT count(*) FROM user_events WHERE name = %s", (name,))

    wait_until(delivered, timeout=60, what="the broadcast to finish")
    rows = live_db.execute(
        "SELECT count(*), count(DISTINCT e.user_id), count(DISTINCT e.inbox_id), count(DISTINCT e.created_at),"
        "       count(*) FILTER (WHERE NOT u.data @> %s), count(*) FILTER (WHERE e.data <> %s)"
        " FROM user_events AS e JOIN users AS u ON u.id = e.user_id WHERE e.name = %s",
        (Jsonb({"cohort": cohort}), Jsonb({"wave": 1}), name),
    ).fetchone()
    total, distinct_users, inboxes, transactions, wrong_users, wrong_data = rows or ()
    assert total == matching
    assert distinct_users == matching
    assert inboxes == 1
    assert wrong_users == 0
    assert wrong_data == 0
    # LUNOGRAM_BROADCAST_CHUNK=1000: ten steps, each its own transaction (created_at is the transaction's now())
    assert transactions == matching // 1000


async def test_broadcast_interrupted_midway_still_delivers_once(paused: Server) -> None:
    """A fan-out step that fails is undone and redone (first in the immediate one-by-one retry, then after a
    backoff): history and subscribers still get every target exactly once."""
    group = uid("grp")
    members = [uid("bm") for _ in range(25)]
    async with aclient(paused) as client:
        responses = await asyncio.gather(
            *(client.post("/client/users", json={"identifier": [ident(m)], "data": {"grp": group}}) for m in members)
        )
        assert [r.status_code for r in responses] == [200] * len(members)
        outsider = await client.post("/client/users", json={"identifier": [ident(uid())], "data": {"grp": "x"}})
        assert outsider.status_code == 200
        await apost_events(client, [{"name": "wave", "data": {"w": 1}, "match": {"grp": group}}])
    with psycopg.connect(paused.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE test_deliveries (inbox_id bigint NOT NULL, target_id uuid NOT NULL)")

    class FailsTwice:
        """Fails on its second and third calls (the second chunk, and its one-by-one retry)."""

        def __init__(self) -> None:
            self.calls = 0

        async def on_events(self, conn: psycopg.AsyncConnection[Any], events: Sequence[ProcessedEvent]) -> None:
            self.calls += 1
            assert all(e.broadcast for e in events)
            await conn.execute(
                "INSERT INTO test_deliveries SELECT * FROM unnest(%s::bigint[], %s::uuid[])",
                ([e.inbox_id for e in events], [e.target_id for e in events]),
            )
            if self.calls in (2, 3):
                raise RuntimeError("subscriber hiccup")

    subscriber = FailsTwice()
    settings = EventSettings(broadcast_chunk=10, max_attempts=5, retry_base_seconds=0.05)
    async with worker_pool(paused) as pool:
        await drain(pool, [EventWorker(pool, settings, [subscriber], name="test-hiccup")])
        stats = (await afetch(pool, "SELECT delivered, failed, dead FROM event_worker_stats"))[0]

    assert subscriber.calls == 5  # chunk 1, chunk 2 failing twice, chunk 2 again, the last 5 targets
    assert stats == (len(members), 1, 0)
    with psycopg.connect(paused.database_url, autocommit=True) as conn:
        applied = conn.execute("SELECT inbox_id, user_id FROM user_events WHERE name = 'wave'").fetchall()
        delivered = conn.execute("SELECT inbox_id, target_id FROM test_deliveries").fetchall()
        assert len(applied) == len({user for _, user in applied}) == len(members)
        assert sorted(delivered) == sorted(applied)
        member_ids = {user_id_of(conn, m) for m in members}
        assert {UUID(str(user)) for _, user in applied} == member_ids


def test_organization_events_reach_their_organizations(
    live_client: httpx.Client, live_db: psycopg.Connection[Any]
) -> None:
    tok, tier = uid("org"), uid("tier")

    def upsert_org(external_id: str, data: dict[str, Any]) -> str:
        response = live_client.post("/client/organizations", json={"identifier": [ident(external_id)], "data": data})
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    acme, globex, initech = uid("acme"), uid("globex"), uid("initech")
    acme_id = upsert_org(acme, {"tier": tier, "size": 10})
    globex_id = upsert_org(globex, {"tier": tier})
    initech_id = upsert_org(initech, {"tier": f"{tier}-not"})
    newco = uid("newco")
    post_events(
        live_client,
        [
            {"name": f"{tok}.direct", "data": {"x": 1}, "identifier": [ident(acme)]},
            {"name": f"{tok}.created", "identifier": [ident(newco)]},
            {"name": f"{tok}.all", "data": {"y": 2}, "match": {"tier": tier}},
        ],
        kind="organizations",
    )

    def org_history() -> list[tuple[str, str, Any]]:
        rows = live_db.execute(
            "SELECT organization_id::text, name, data FROM organization_events WHERE name LIKE %s ORDER BY id",
            (f"{tok}.%",),
        )
        return [(org, name, data) for org, name, data in rows.fetchall()]

    wait_until(
        lambda: (
            len(org_history()) == 4
            and scalar(live_db, "SELECT count(*) FROM event_inbox WHERE name LIKE %s", (f"{tok}.%",)) == 0
        ),
        what="organization events to be applied",
    )
    created = live_client.get("/admin/organizations", params={"external_id": newco})
    assert created.status_code == 200, created.text
    newco_id = created.json()["id"]
    assert sorted(org_history()) == sorted(
        [
            (acme_id, f"{tok}.direct", {"x": 1}),
            (newco_id, f"{tok}.created", {}),
            (acme_id, f"{tok}.all", {"y": 2}),
            (globex_id, f"{tok}.all", {"y": 2}),
        ]
    )
    assert initech_id not in {org for org, _, _ in org_history()}
    # organization events do not write user history
    assert scalar(live_db, "SELECT count(*) FROM user_events WHERE name LIKE %s", (f"{tok}.%",)) == 0
    page = live_client.get(f"/admin/organizations/{acme_id}/events")
    assert page.status_code == 200, page.text
    # a broadcast has no order relative to identifier events (docs/api.md "Events"): compare as a set
    assert sorted(e["name"] for e in page.json()["events"]) == [f"{tok}.all", f"{tok}.direct"]


async def test_subscribers_get_organization_events_with_members(paused: Server) -> None:
    org, lonely, tier = uid("org"), uid("lonely"), uid("tier")
    members = [uid("member") for _ in range(3)]
    async with aclient(paused) as client:
        for external_id, data in ((org, {"tier": tier}), (lonely, {"tier": tier})):
            response = await client.post(
                "/client/organizations", json={"identifier": [ident(external_id)], "data": data}
            )
            assert response.status_code == 200, response.text
        for member in members:  # adding a membership creates the user
            response = await client.post(
                "/client/organizations/users",
                json={"organization": {"identifier": [ident(org)]}, "user": {"identifier": [ident(member)]}},
            )
            assert response.status_code == 200, response.text
        org_id = UUID((await client.get("/admin/organizations", params={"external_id": org})).json()["id"])
        lonely_id = UUID((await client.get("/admin/organizations", params={"external_id": lonely})).json()["id"])
        member_ids = []
        for member in members:
            member_ids.append(UUID((await client.get("/admin/users", params={"external_id": member})).json()["id"]))
        await apost_events(
            client,
            [
                {"name": "renewed", "data": {"plan": "pro"}, "identifier": [ident(org)]},
                {"name": "tiered", "match": {"tier": tier}},
            ],
            kind="organizations",
        )
        await apost_events(client, [{"name": "clicked", "data": {"b": 1}, "identifier": [ident(members[0])]}])

    recorder = Recorder()
    async with worker_pool(paused) as pool:
        await drain(pool, [EventWorker(pool, EventSettings(), [recorder], name="test-subscriber")])
        inbox_of = dict(await afetch(pool, "SELECT name, inbox_id FROM organization_events WHERE name = 'renewed'"))

    assert all(recorder.history_visible), recorder.history_visible
    by_key = {(e.name, e.target_id): e for e in recorder.events}
    assert len(by_key) == len(recorder.events) == 4  # each event once per target
    renewed = by_key["renewed", org_id]
    assert renewed.kind == "organization"
    assert renewed.inbox_id == inbox_of["renewed"]
    assert renewed.data == {"plan": "pro"}
    assert not renewed.broadcast
    assert sorted(renewed.member_ids) == sorted(member_ids)
    tiered = by_key["tiered", org_id]
    assert tiered.broadcast
    assert tiered.data == {}
    assert sorted(tiered.member_ids) == sorted(member_ids)
    assert by_key["tiered", lonely_id].member_ids == ()
    clicked = by_key["clicked", member_ids[0]]
    assert (clicked.kind, clicked.data, clicked.member_ids, clicked.broadcast) == ("user", {"b": 1}, (), False)


async def test_poison_event_is_retried_then_parked_while_others_flow(paused: Server) -> None:
    before_user, poison_user, after_user, later_user = (uid(p) for p in ("before", "poisoned", "after", "later"))
    async with aclient(paused) as client:
        await apost_events(
            client,
            [
                {"name": "before", "data": {"k": 1}, "identifier": [ident(before_user)]},
                {"name": "bad", "data": {"poison": True}, "identifier": [ident(poison_user)]},
                {"name": "after", "data": {"k": 2}, "identifier": [ident(after_user)]},
            ],
        )
        settings = EventSettings(max_attempts=3, retry_base_seconds=0.05, retry_max_seconds=1, partitions_per_claim=64)
        poison = Poison()
        async with worker_pool(paused) as pool:
            worker = EventWorker(pool, settings, [poison], name="test-poison")

            async def bad_row() -> tuple[Any, ...]:
                rows = await afetch(
                    pool,
                    "SELECT id, attempts, last_error, dead_at, next_attempt_at FROM event_inbox WHERE name = 'bad'",
                )
                assert len(rows) <= 1, rows
                return rows[0] if rows else ()

            # one call: the batch fails, its events are retried one by one; only the poison is held back
            tried_after = (await afetch(pool, "SELECT clock_timestamp()"))[0][0]
            assert await worker.run_once() == 3
            inbox_id, attempts, last_error, dead_at, next_attempt_at = await bad_row()
            assert attempts == 1
            assert last_error == "RuntimeError: poisoned event bad"
            assert dead_at is None
            # backed off past the failed attempt (compared with a time before it: 50 ms may be over by now)
            assert next_attempt_at > tried_after

            # events posted after the failure flow past it; the poison is tried twice more, then parked
            await apost_events(client, [{"name": "later", "data": {"k": 3}, "identifier": [ident(later_user)]}])
            seen_attempts = [1]

            async def parked() -> bool:
                row = await bad_row()
                if row and row[1] != seen_attempts[-1]:
                    seen_attempts.append(row[1])
                return await pending(pool) == 0

            await drain(pool, [worker], until=parked)
            _, attempts, last_error, dead_at, _ = await bad_row()
            assert attempts == 3
            assert seen_attempts == [1, 2, 3]
            assert dead_at is not None
            assert last_error == "RuntimeError: poisoned event bad"
            stats = (await afetch(pool, "SELECT failed, dead FROM event_worker_stats WHERE worker = 'test-poison'"))[0]
            assert stats == (3, 1)

        dead = await client.get("/admin/events/dead")
        assert dead.status_code == 200, dead.text
        assert [(e["id"], e["attempts"], e["data"]) for e in dead.json()["events"]] == [(inbox_id, 3, {"poison": True})]

    with psycopg.connect(paused.database_url, autocommit=True) as conn:
        assert history(conn, user_id_of(conn, before_user)) == [("before", {"k": 1})]
        assert history(conn, user_id_of(conn, after_user)) == [("after", {"k": 2})]
        assert history(conn, user_id_of(conn, later_user)) == [("later", {"k": 3})]
        assert scalar(conn, "SELECT count(*) FROM user_events WHERE inbox_id = %s", (inbox_id,)) == 0
        # its resolution was rolled back with it: the poison's user was never created
        assert user_id_of(conn, poison_user) is None

    # an operator retries the dead letter; with the failing subscriber gone, it is applied
    async with aclient(paused) as client:
        retried = await client.post(f"/admin/events/dead/{inbox_id}/retry")
        assert retried.status_code == 204, retried.text
    async with worker_pool(paused) as pool:
        await drain(pool, [EventWorker(pool, settings, [], name="test-poison-fixed")])
    with psycopg.connect(paused.database_url, autocommit=True) as conn:
        assert history(conn, user_id_of(conn, poison_user)) == [("bad", {"poison": True})]
        assert scalar(conn, "SELECT count(*) FROM event_inbox") == 0


# -- profiles: merges and deletes carry history ---------------------------------------------------------------


def test_merge_moves_anonymous_history_to_the_survivor(
    live_client: httpx.Client, live_db: psycopg.Connection[Any]
) -> None:
    tok = uid("m")
    anon = {"source": "anonymous", "external_id": uid("anon")}
    post_events(
        live_client,
        [
            {"name": f"{tok}.view1", "data": {"p": 1}, "identifier": [anon]},
            {"name": f"{tok}.view2", "data": {"p": 2}, "identifier": [anon]},
        ],
    )
    wait_until(lambda: len(history(live_db, user_id_of(live_db, anon["external_id"], "anonymous"))) == 2)
    anon_id = user_id_of(live_db, anon["external_id"], "anonymous")

    known = uid("known")
    known_id = UUID(upsert_user(live_client, ident(known))["id"])  # younger than the anonymous profile
    post_events(live_client, [{"name": f"{tok}.login", "data": {}, "identifier": [ident(known)]}])
    wait_until(lambda: len(history(live_db, known_id)) == 1)

    merged = upsert_user(live_client, anon, ident(known))
    assert merged["id"] == str(known_id)  # the identified profile survives, though the anonymous one is older
    assert scalar(live_db, "SELECT count(*) FROM users WHERE id = %s", (anon_id,)) == 0
    assert scalar(live_db, "SELECT count(*) FROM user_events WHERE user_id = %s", (anon_id,)) == 0
    assert sorted(history(live_db, known_id)) == [
        (f"{tok}.login", {}),
        (f"{tok}.view1", {"p": 1}),
        (f"{tok}.view2", {"p": 2}),
    ]

    # an event naming a second anonymous id and the known one merges them too, in the worker
    anon2 = {"source": "anonymous", "external_id": uid("anon")}
    post_events(live_client, [{"name": f"{tok}.view3", "data": {}, "identifier": [anon2]}])
    wait_until(lambda: user_id_of(live_db, anon2["external_id"], "anonymous") is not None)
    anon2_id = user_id_of(live_db, anon2["external_id"], "anonymous")
    assert anon2_id != known_id
    post_events(live_client, [{"name": f"{tok}.buy", "data": {}, "identifier": [anon2, ident(known)]}])
    wait_until(lambda: len(history(live_db, known_id)) == 5, what="the merge through an event")
    assert user_id_of(live_db, anon2["external_id"], "anonymous") == known_id
    assert scalar(live_db, "SELECT count(*) FROM users WHERE id = %s", (anon2_id,)) == 0
    page = live_client.get(f"/admin/users/{known_id}/events", params={"limit": 10})
    assert page.status_code == 200, page.text
    assert sorted(e["name"] for e in page.json()["events"]) == sorted(
        f"{tok}.{n}" for n in ("view1", "view2", "login", "view3", "buy")
    )


def test_deleting_a_user_deletes_its_history(live_client: httpx.Client, live_db: psycopg.Connection[Any]) -> None:
    tok = uid("del")
    doomed, kept = uid("doomed"), uid("kept")
    post_events(
        live_client,
        [{"name": f"{tok}.e{n}", "data": {"n": n}, "identifier": [ident(doomed)]} for n in range(3)]
        + [{"name": f"{tok}.k", "data": {}, "identifier": [ident(kept)]}],
    )
    wait_until(lambda: scalar(live_db, "SELECT count(*) FROM user_events WHERE name LIKE %s", (f"{tok}.%",)) == 4)
    doomed_id, kept_id = user_id_of(live_db, doomed), user_id_of(live_db, kept)

    deleted = live_client.request("DELETE", "/client/users", json={"identifier": [ident(doomed)]})
    assert deleted.status_code == 204, deleted.text
    assert scalar(live_db, "SELECT count(*) FROM user_events WHERE user_id = %s", (doomed_id,)) == 0
    assert history(live_db, kept_id) == [(f"{tok}.k", {})]
    assert live_client.get(f"/admin/users/{doomed_id}/events").status_code == 404

    # a later event for the deleted identifier starts a new profile with a fresh history
    post_events(live_client, [{"name": f"{tok}.again", "data": {}, "identifier": [ident(doomed)]}])
    wait_until(lambda: user_id_of(live_db, doomed) is not None)
    reborn = user_id_of(live_db, doomed)
    assert reborn != doomed_id
    wait_until(lambda: history(live_db, reborn) == [(f"{tok}.again", {})], what="the new profile's event")


# -- subscriber plugins in a real server ----------------------------------------------------------------------


def test_server_loads_subscriber_plugins(server_factory: Callable[..., Server], pg: PgCluster) -> None:
    database = pg.new_database()
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(LOG_TABLE)
    server = server_factory(
        database_url=database,
        extra_env={"LUNOGRAM_EVENT_SUBSCRIBERS": "event_plugins:TableRecorder", "PYTHONPATH": PLUGIN_PATH},
    )
    org, member, solo = uid("org"), uid("member"), uid("solo")
    with server.client() as client, psycopg.connect(database, autocommit=True) as conn:
        added = client.post(
            "/client/organizations/users",
            json={"organization": {"identifier": [ident(org)]}, "user": {"identifier": [ident(member)]}},
        )
        assert added.status_code == 200, added.text
        member_id = client.get("/admin/users", params={"external_id": member}).json()["id"]
        post_events(client, [{"name": "org.paid", "data": {"v": 1}, "identifier": [ident(org)]}], "organizations")
        post_events(client, [{"name": "solo.seen", "identifier": [ident(solo)]}])
        wait_until(lambda: scalar(conn, "SELECT count(*) FROM test_subscriber_log") >= 2, what="the plugin's rows")
        wait_until(lambda: scalar(conn, "SELECT count(*) FROM event_inbox") == 0, what="the inbox to drain")
        logged = conn.execute(
            "SELECT l.kind, l.name, l.data, l.broadcast, l.member_ids,"
            "       coalesce(o.organization_id, u.user_id) = l.target_id"
            " FROM test_subscriber_log AS l"
            " LEFT JOIN organization_events AS o ON o.inbox_id = l.inbox_id AND l.kind = 'organization'"
            " LEFT JOIN user_events AS u ON u.inbox_id = l.inbox_id AND l.kind = 'user'"
            " ORDER BY l.name"
        ).fetchall()
    assert logged == [
        ("organization", "org.paid", {"v": 1}, False, member_id, True),
        ("user", "solo.seen", {}, False, "", True),
    ]


def test_server_refuses_to_start_with_a_bad_subscriber(server_factory: Callable[..., Server]) -> None:
    server = server_factory(
        extra_env={"LUNOGRAM_EVENT_SUBSCRIBERS": "event_plugins:NoSuchSubscriber", "PYTHONPATH": PLUGIN_PATH},
        start=False,
    )
    with pytest.raises(AssertionError, match="server exited"):
        server.start(timeout=30)
    assert "event_plugins:NoSuchSubscriber" in server.log()


@pytest.mark.parametrize("kind", ["users", "organizations"])
async def test_a_profile_merged_away_later_in_the_same_batch_gets_its_events_on_the_survivor(
    paused: Server, kind: str
) -> None:
    """Event 1 creates a profile for a new identifier; event 2, in the same batch, names that identifier and
    an older profile's, so resolution merges the new profile into the older one: both events must land on
    the survivor (not fail the batch on a profile that no longer exists)."""
    new, old = uid("new"), uid("old")
    with paused.client() as client:
        response = client.post(f"/client/{kind}", json={"identifier": [ident(old)]})
        assert response.status_code == 200, response.text
        survivor = response.json()["id"]
        post_events(
            client,
            [
                {"name": "first", "identifier": [ident(new)]},
                {"name": "second", "identifier": [ident(new), ident(old)]},
            ],
            kind,
        )
    table, column_name = ("user_events", "user_id") if kind == "users" else ("organization_events", "organization_id")
    async with worker_pool(paused) as pool:
        await drain(pool, [EventWorker(pool, EventSettings(batch_size=50))])
        rows = await afetch(pool, f"SELECT name, {column_name}::text FROM {table} ORDER BY id DESC LIMIT 2")
        dead = await afetch(pool, "SELECT count(*) FROM event_inbox WHERE dead_at IS NOT NULL")
    assert sorted(rows) == [("first", survivor), ("second", survivor)]
    assert dead == [(0,)]
