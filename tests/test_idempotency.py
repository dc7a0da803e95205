"""Idempotency-Key: a repeated POST gets the first answer and stores nothing twice (docs/api.md "Idempotency-Key")."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from helpers import Server, ident, uid, wait_until


@pytest.fixture
def db(server: Server) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        yield conn


def history_count(db: psycopg.Connection[Any], name: str) -> int:
    row = db.execute("SELECT count(*) FROM user_events WHERE name = %s", (name,)).fetchone()
    return int(row[0]) if row else 0


def inbox_count(db: psycopg.Connection[Any], name: str) -> int:
    row = db.execute("SELECT count(*) FROM event_inbox WHERE name = %s", (name,)).fetchone()
    return int(row[0]) if row else 0


def test_a_repeated_event_post_is_stored_once(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    name, key = uid("evt"), str(uuid.uuid4())
    batch = [{"name": name, "identifier": [ident(uid())]}, {"name": name, "identifier": [ident(uid())]}]
    for _ in range(3):
        response = client.post("/client/users/events", json=batch, headers={"Idempotency-Key": key})
        assert response.status_code == 202, response.text
        assert response.content == b""
        assert "json" not in response.headers.get("content-type", "")
    wait_until(lambda: history_count(db, name) == 2 and inbox_count(db, name) == 0, what="the batch applied")
    assert history_count(db, name) == 2


def test_concurrent_repeats_store_once(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    name, key = uid("evt"), str(uuid.uuid4())
    batch = [{"name": name, "identifier": [ident(uid())]}]

    def send(_: int) -> int:
        response = client.post("/client/users/events", json=batch, headers={"Idempotency-Key": key})
        return response.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(send, range(16)))
    assert statuses == [202] * 16
    wait_until(lambda: history_count(db, name) >= 1 and inbox_count(db, name) == 0, what="the event applied")
    assert history_count(db, name) == 1


def test_a_repeated_upsert_answers_the_first_response(client: httpx.Client) -> None:
    key, ext = str(uuid.uuid4()), uid()
    body = {"identifier": [ident(ext)], "data": {"n": 1}}
    first = client.post("/client/users", json=body, headers={"Idempotency-Key": key})
    again = client.post("/client/users", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert again.headers["content-type"] == "application/json"
    # without the key the same upsert is a new write (version moves on only if something changed)
    changed = client.post("/client/users", json={**body, "data": {"n": 2}})
    assert changed.json()["version"] == first.json()["version"] + 1


def test_a_repeated_schedule_answers_the_same_schedule(client: httpx.Client) -> None:
    key = str(uuid.uuid4())
    body = {"name": "report", "identifier": [ident(uid())], "interval": "7 days"}
    first = client.post("/client/users/scheduled", json=body, headers={"Idempotency-Key": key})
    again = client.post("/client/users/scheduled", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()


def test_the_same_key_with_another_request_is_a_409(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    key, name = str(uuid.uuid4()), uid("evt")
    assert (
        client.post(
            "/client/users/events",
            json=[{"name": name, "identifier": [ident(uid())]}],
            headers={"Idempotency-Key": key},
        ).status_code
        == 202
    )
    other = client.post(
        "/client/users/events",
        json=[{"name": f"{name}_other", "identifier": [ident(uid())]}],
        headers={"Idempotency-Key": key},
    )
    assert other.status_code == 409, other.text
    assert other.json()["title"] == "conflict"
    assert "Idempotency-Key" in other.json()["detail"]
    assert inbox_count(db, f"{name}_other") + history_count(db, f"{name}_other") == 0
    # the same body on another route is another request too
    assert (
        client.post(
            "/client/organizations/events",
            json=[{"name": name, "identifier": [ident(uid())]}],
            headers={"Idempotency-Key": key},
        ).status_code
        == 409
    )


def test_a_refused_request_is_not_remembered(client: httpx.Client) -> None:
    key, ext = str(uuid.uuid4()), uid()
    bad = client.post(
        "/client/users", json={"identifier": [ident(ext)], "email": "nope"}, headers={"Idempotency-Key": key}
    )
    assert bad.status_code == 400
    # nothing was stored under the key, so the corrected request with the same key is done
    good = client.post(
        "/client/users",
        json={"identifier": [ident(ext)], "email": "jane@example.com"},
        headers={"Idempotency-Key": key},
    )
    assert good.status_code == 200, good.text
    assert good.json()["email"] == "jane@example.com"


def test_a_key_belongs_to_the_api_key_that_sent_it(server: Server, client: httpx.Client) -> None:
    """Issue 14: keys are scoped by API key. A public key's holder (a browser) can neither occupy a key the
    secret key then uses (no 409 for it) nor replay the secret key's stored answer (the full profile)."""
    key, ext = str(uuid.uuid4()), uid()
    with server.client(server.public_key) as public:
        squatted = public.post(
            "/client/users", json={"identifier": [ident(uid())], "data": {"x": 1}}, headers={"Idempotency-Key": key}
        )
        assert squatted.status_code == 200, squatted.text
        body = {"identifier": [ident(ext)], "email": f"{ext}@example.com", "data": {"secret": "s"}}
        first = client.post("/client/users", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == 200, first.text  # not a 409: the public key's use was its own
        assert first.json()["identifier"][0]["external_id"] == ext
        replay = public.post("/client/users", json={"identifier": [ident(ext)]}, headers={"Idempotency-Key": key})
    assert replay.status_code == 409  # under the public key, the key names the public key's first request
    again = client.post("/client/users", json=body, headers={"Idempotency-Key": key})
    assert again.content == first.content


def test_a_replay_after_the_profile_was_deleted_is_a_404(client: httpx.Client) -> None:
    """Issue 14: the stored answer of an upsert whose user was deleted since is not given out again."""
    key, ext = str(uuid.uuid4()), uid()
    body = {"identifier": [ident(ext)], "email": f"{ext}@example.com"}
    first = client.post("/client/users", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 200, first.text
    assert client.request("DELETE", "/client/users", json={"identifier": [ident(ext)]}).status_code == 204
    replay = client.post("/client/users", json=body, headers={"Idempotency-Key": key})
    assert replay.status_code == 404, replay.text
    assert replay.json()["detail"].startswith("Idempotency-Key: the user this key's request wrote")
    assert ext not in replay.text
    assert "example.com" not in replay.text
    # nothing was written by the replay: the user stays deleted
    assert client.get("/admin/users", params={"external_id": ext}).status_code == 404
    # under a new key the request is done again
    fresh = client.post("/client/users", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
    assert fresh.status_code == 200
    assert fresh.json()["id"] != first.json()["id"]


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there"])
def test_a_malformed_key_is_a_400(client: httpx.Client, key: str) -> None:
    response = client.post("/client/users", json={"identifier": [ident(uid())]}, headers={"Idempotency-Key": key})
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("Idempotency-Key:")


def test_an_expired_key_is_a_new_request(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    key, name = str(uuid.uuid4()), uid("evt")
    first = [{"name": name, "identifier": [ident(uid())]}]
    assert client.post("/client/users/events", json=first, headers={"Idempotency-Key": key}).status_code == 202
    db.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key LIKE %s", (f"%:{key}",))
    # after 24 hours the key is forgotten: another request under it is done, not refused as a conflict
    second = [{"name": f"{name}_later", "identifier": [ident(uid())]}]
    response = client.post("/client/users/events", json=second, headers={"Idempotency-Key": key})
    assert response.status_code == 202, response.text
    wait_until(lambda: history_count(db, f"{name}_later") == 1, what="the later event applied")


def test_concurrent_keyed_upserts_store_once(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    """Keyed upserts are committed together with others (db/coalesce.py): repeats in one batch or across
    batches all get the first answer, and the upsert happened once (version 1)."""
    key, ext = str(uuid.uuid4()), uid()
    body = {"identifier": [ident(ext)], "data": {"counter": 1}}

    def send(_: int) -> bytes:
        response = client.post("/client/users", json=body, headers={"Idempotency-Key": key})
        assert response.status_code == 200
        return response.content

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = set(pool.map(send, range(16)))
    assert len(answers) == 1
    assert orjson.loads(answers.pop())["version"] == 1
    stored = db.execute("SELECT count(*) FROM user_identifiers WHERE external_id = %s", (ext,)).fetchone()
    assert stored == (1,)


def test_a_keyed_upsert_refuses_another_request_and_forgets_after_a_day(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    key, ext = str(uuid.uuid4()), uid()
    first = client.post(
        "/client/organizations", json={"identifier": [ident(ext)], "name": "A"}, headers={"Idempotency-Key": key}
    )
    assert first.status_code == 200
    other = client.post(
        "/client/organizations", json={"identifier": [ident(ext)], "name": "B"}, headers={"Idempotency-Key": key}
    )
    assert other.status_code == 409
    assert "Idempotency-Key" in other.json()["detail"]
    elsewhere = client.post("/client/users", json={"identifier": [ident(ext)]}, headers={"Idempotency-Key": key})
    assert elsewhere.status_code == 409  # the same key on another route is another request
    assert client.get("/admin/organizations", params={"external_id": ext}).json()["name"] == "A"
    db.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key LIKE %s", (f"%:{key}",))
    later = client.post(
        "/client/organizations", json={"identifier": [ident(ext)], "name": "B"}, headers={"Idempotency-Key": key}
    )
    assert later.status_code == 200
    assert later.json()["name"] == "B"
