"""Group commit of upserts (db/coalesce.py): concurrent calls share a statement and a commit, yet each gets
its own answer, in order, and a failing call fails alone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from psycopg import errors

from helpers import Server, ident, uid
from lunogram_server.db import open_pool
from lunogram_server.db.coalesce import Coalescer
from lunogram_server.users import service as users


def project_of(client: httpx.Client) -> str:
    """The project the secret key belongs to (its first user tells)."""
    user = client.post("/client/users", json={"identifier": [ident(uid("probe"))]}).json()
    return str(user["project_id"])


@pytest.fixture
async def coalescer(server: Server) -> AsyncIterator[Coalescer]:
    pool = await open_pool(server.database_url, min_size=1, max_size=2)
    try:
        yield users.upsert_coalescer(pool, slots=1, max_batch=64)
    finally:
        await pool.close()


def upsert_args(project: str, external_id: str, **fields: Any) -> tuple[Any, ...]:
    return (project, [{"source": "default", "external_id": external_id}], fields)


async def test_concurrent_calls_share_batches_and_each_gets_its_answer(
    coalescer: Coalescer, db: psycopg.Connection[Any], client: httpx.Client
) -> None:
    project = project_of(client)
    names = [uid("together") for _ in range(30)]
    answers = await asyncio.gather(*(coalescer.call(*upsert_args(project, n, data={"n": n})) for n in names))
    assert coalescer.calls == 30
    assert coalescer.batches < 30
    for name, answer in zip(names, answers, strict=True):
        user = orjson.loads(answer)
        assert user["identifier"][0]["external_id"] == name
        assert user["data"] == {"n": name}
    stored = db.execute("SELECT count(*) FROM user_identifiers WHERE external_id = ANY (%s)", (names,)).fetchone()
    assert stored == (30,)


async def test_the_same_new_identifier_in_one_batch_makes_one_user_and_applies_calls_in_order(
    coalescer: Coalescer, db: psycopg.Connection[Any], client: httpx.Client
) -> None:
    project = project_of(client)
    name = uid("same")
    answers = await asyncio.gather(
        *(coalescer.call(*upsert_args(project, name, data={"last": n, f"k{n}": True})) for n in range(10))
    )
    users_seen = [orjson.loads(a) for a in answers]
    assert len({u["id"] for u in users_seen}) == 1
    assert [u["version"] for u in users_seen] == list(range(1, 11))
    final = users_seen[-1]["data"]
    assert final["last"] == 9
    assert all(final[f"k{n}"] for n in range(10))


async def test_a_failing_call_fails_alone(
    coalescer: Coalescer, db: psycopg.Connection[Any], client: httpx.Client
) -> None:
    project = project_of(client)
    names = [uid("fine") for _ in range(8)]
    calls = [coalescer.call(*upsert_args(project, n)) for n in names]
    calls.insert(4, coalescer.call(*upsert_args(str(uuid.uuid4()), uid("orphan"))))  # no such project
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[4], errors.ForeignKeyViolation)
    assert all(isinstance(r, str) for i, r in enumerate(results) if i != 4)
    stored = db.execute("SELECT count(*) FROM user_identifiers WHERE external_id = ANY (%s)", (names,)).fetchone()
    assert stored == (8,)


def test_concurrent_http_upserts_are_each_answered_after_commit(server: Server, db: psycopg.Connection[Any]) -> None:
    """Through the server: 64 concurrent upserts, each answered with its own user, each stored."""

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=server.base_url, headers={"Authorization": f"Bearer {server.secret_key}"}, timeout=30
        ) as http:
            return await asyncio.gather(
                *(http.post("/client/users", json={"identifier": [ident(n)], "data": {"me": n}}) for n in names)
            )

    names = [uid("burst") for _ in range(64)]
    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 64
    assert [r.json()["data"]["me"] for r in responses] == names
    ids = {r.json()["id"] for r in responses}
    stored = db.execute(
        "SELECT count(DISTINCT user_id) FROM user_identifiers WHERE external_id = ANY (%s)", (names,)
    ).fetchone()
    assert len(ids) == 64
    assert stored == (64,)
