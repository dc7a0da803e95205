"""The reactions registry (reactions.py): every kind of change reaches the subscribers of its topic, inside
the transaction that made it.

A server on its own database gets, besides the domains' own handlers, a recording handler for every SQL
topic (installed the way migrate installs them: the registry's dispatchers, from a registry with one more
subscriber each). The test then makes each change through the HTTP API and reads what the handlers saw,
and in which transaction: the record's `xmin` is the change's own row's (the same transaction, or the same
savepoint within it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from helpers import Server, ident, uid, wait_until
from lunogram_server.db.migrate import migrate
from lunogram_server.domains import build_reactions
from lunogram_server.reactions import SQL_TOPICS, SqlTopic


def _recorder(topic: SqlTopic) -> str:
    return f"test_record_{topic.dispatcher}"


@pytest.fixture(scope="module")
def watched(server_factory: Callable[..., Server]) -> Iterator[tuple[Server, psycopg.Connection[Any]]]:
    server = server_factory()
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE reaction_log (id bigserial PRIMARY KEY, topic text NOT NULL, args jsonb NOT NULL)")
        registry = build_reactions()
        for topic in SQL_TOPICS:
            parameters = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in topic.parameters
            )
            arguments = sql.SQL(", ").join(sql.Identifier(name) for name, _ in topic.parameters)
            conn.execute(
                sql.SQL(
                    "CREATE FUNCTION {}({}) RETURNS void LANGUAGE sql AS "
                    "$$ INSERT INTO reaction_log (topic, args) VALUES ({}, jsonb_build_array({})) $$"
                ).format(sql.Identifier(_recorder(topic)), parameters, sql.Literal(topic.dispatcher), arguments)
            )
            registry.on(topic, _recorder(topic))
        migrate(server.database_url, registry)
        yield server, conn


def seen(conn: psycopg.Connection[Any], topic: SqlTopic, after: int = 0) -> list[tuple[list[Any], str]]:
    rows = conn.execute(
        "SELECT args, xmin::text FROM reaction_log WHERE topic = %s AND id > %s ORDER BY id", (topic.dispatcher, after)
    ).fetchall()
    return [(args, xid) for args, xid in rows]


def mark(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(max(id), 0) FROM reaction_log").fetchone()
    assert row is not None
    return int(row[0])


def upsert(client: httpx.Client, *external_ids: str, source: str | None = None, **fields: Any) -> dict[str, Any]:
    body = {"identifier": [ident(e, source) for e in external_ids], **fields}
    response = client.post("/client/users", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def list_changes_of(topic_rows: list[tuple[list[Any], str]]) -> set[tuple[str, str, str]]:
    """(list, user, change) of LIST_CHANGES records."""
    found = set()
    for (_, list_id, users, changes, _), _ in topic_rows:
        found |= {(list_id, user, change) for user, change in zip(users, changes, strict=True)}
    return found


def test_a_merge_is_announced_with_what_moved(watched: tuple[Server, psycopg.Connection[Any]]) -> None:
    server, conn = watched
    from lunogram_server.reactions import LIST_CHANGES, SCHEDULES_CANCELLED, USER_MERGED

    with server.client() as client:
        tag = uid("m")
        visitor = upsert(client, f"{tag}-anon", source="anonymous")
        known = upsert(client, f"{tag}-known")
        static = client.post("/admin/lists", json={"name": uid("l")}).json()
        added = client.post(
            f"/admin/lists/{static['id']}/members", json={"users": [[ident(f"{tag}-anon", "anonymous")]]}
        )
        assert added.status_code == 200, added.text
        for who in (ident(f"{tag}-anon", "anonymous"), ident(f"{tag}-known")):
            body = {"name": "trial", "identifier": [who], "scheduled_at": "2099-01-01T00:00:00Z"}
            assert client.post("/client/users/scheduled", json=body).status_code == 202
        clashing = conn.execute(
            "SELECT id::text FROM schedules WHERE user_id = %s AND name = 'trial'", (visitor["id"],)
        ).fetchone()
        before = mark(conn)
        both = {"identifier": [ident(f"{tag}-known"), ident(f"{tag}-anon", "anonymous")]}
        merged = client.post("/client/users", json=both).json()  # the anonymous profile merges into the known
        assert merged["id"] == known["id"]

    merges = seen(conn, USER_MERGED, before)
    assert [args[1:] for args, _ in merges] == [[known["id"], visitor["id"]]]
    # the merged profile's memberships moved: the survivor entered the list, in the merge's transaction
    entries = seen(conn, LIST_CHANGES, before)
    assert list_changes_of(entries) == {(static["id"], known["id"], "entered")}
    assert {xid for _, xid in entries} == {merges[0][1]}
    # its schedule of the same name lost to the survivor's: cancelled, in the same transaction
    cancelled = seen(conn, SCHEDULES_CANCELLED, before)
    assert cancelled == [([known["project_id"], [clashing[0] if clashing else None]], merges[0][1])]


def test_deletes_are_announced_before_the_rows_go(watched: tuple[Server, psycopg.Connection[Any]]) -> None:
    server, conn = watched
    from lunogram_server.reactions import LIST_CHANGES, SCHEDULES_CANCELLED, USERS_DELETED

    with server.client() as client:
        tag = uid("d")
        user = upsert(client, tag)
        static = client.post("/admin/lists", json={"name": uid("l")}).json()
        client.post(f"/admin/lists/{static['id']}/members", json={"users": [[ident(tag)]]}).raise_for_status()
        body = {"name": "renewal", "identifier": [ident(tag)], "scheduled_at": "2099-01-01T00:00:00Z"}
        schedule = client.post("/client/users/scheduled", json=body).json()
        before = mark(conn)
        deleted = client.request("DELETE", "/client/users", json={"identifier": [ident(tag)]})
        assert deleted.status_code == 204

    deletes = seen(conn, USERS_DELETED, before)
    assert [args[1] for args, _ in deletes] == [[user["id"]]]
    xid = deletes[0][1]
    assert list_changes_of(seen(conn, LIST_CHANGES, before)) == {(static["id"], user["id"], "exited")}
    assert seen(conn, SCHEDULES_CANCELLED, before) == [([user["project_id"], [schedule["id"]]], xid)]
    assert {x for _, x in seen(conn, LIST_CHANGES, before)} == {xid}


def test_list_changes_of_every_origin(watched: tuple[Server, psycopg.Connection[Any]]) -> None:
    server, conn = watched
    from lunogram_server.reactions import LIST_CHANGES

    with server.client() as client:
        tag = uid("l")
        a = upsert(client, f"{tag}-a", data={"tag": tag})
        static = client.post("/admin/lists", json={"name": uid("l")}).json()
        before = mark(conn)
        # static add and remove
        client.post(f"/admin/lists/{static['id']}/members", json={"users": [[ident(f"{tag}-a")]]}).raise_for_status()
        removed = client.request(
            "DELETE", f"/admin/lists/{static['id']}/members", json={"users": [[ident(f"{tag}-a")]]}
        )
        assert removed.status_code == 200, removed.text
        # a CSV import
        csv = f"external_id\n{tag}-b\n"
        imported = client.post(
            f"/admin/lists/{static['id']}/imports", content=csv.encode(), headers={"Content-Type": "text/csv"}
        )
        assert imported.status_code == 202, imported.text

        def imported_user() -> dict[str, Any] | None:
            found = client.get("/admin/users", params={"external_id": f"{tag}-b"})
            return dict(found.json()) if found.status_code == 200 else None

        b = wait_until(imported_user, what="imported user")
        # a rule list's evaluation
        rule = {"type": "property", "path": "data.tag", "op": "equals", "value": tag}
        ruled = client.post("/admin/lists", json={"name": uid("r"), "rule": rule}).json()
        expected = {
            (static["id"], a["id"], "entered"),
            (static["id"], a["id"], "exited"),
            (static["id"], b["id"], "entered"),
            (ruled["id"], a["id"], "entered"),
        }
        wait_until(lambda: expected <= list_changes_of(seen(conn, LIST_CHANGES, before)), what="all changes")
    # each announcement is made in the transaction that recorded the change
    pairs = conn.execute(
        "SELECT c.xmin::text, c.list_id::text, c.user_id::text, c.change FROM list_changes AS c "
        "WHERE c.list_id = ANY (%s::uuid[])",
        ([static["id"], ruled["id"]],),
    ).fetchall()
    xids = {(list_id, user, change): xid for xid, list_id, user, change in pairs}
    for args, xid in seen(conn, LIST_CHANGES, before):
        for user, change in zip(args[2], args[3], strict=True):
            assert xids[(args[1], user, change)] == xid


def test_schedules_written_fired_and_cancelled(watched: tuple[Server, psycopg.Connection[Any]]) -> None:
    server, conn = watched
    from lunogram_server.reactions import SCHEDULES_CANCELLED, SCHEDULES_FIRED, SCHEDULES_WRITTEN

    with server.client() as client:
        tag = uid("s")
        before = mark(conn)
        body = {"name": "ping", "identifier": [ident(tag)], "scheduled_at": "2099-01-01T00:00:00Z"}
        first = client.post("/client/users/scheduled", json=body).json()
        replaced = client.post("/client/users/scheduled", json={**body, "scheduled_at": "2098-01-01T00:00:00Z"})
        assert replaced.json()["id"] == first["id"]
        written = seen(conn, SCHEDULES_WRITTEN, before)
        assert [args[1] for args, _ in written] == [[first["id"]], [first["id"]]]
        soon = {"name": "now", "identifier": [ident(tag)], "scheduled_at": "2000-01-01T00:00:00Z"}
        due = client.post("/client/users/scheduled", json=soon).json()
        fired = wait_until(lambda: [a for a, _ in seen(conn, SCHEDULES_FIRED, before) if due["id"] in a[0]])
        assert len(fired) == 1
        gone = client.request("DELETE", "/client/users/scheduled", json={"name": "ping", "identifier": [ident(tag)]})
        assert gone.status_code == 200
        assert [args[1] for args, _ in seen(conn, SCHEDULES_CANCELLED, before)] == [[first["id"]]]


def test_organizations_merged_and_deleted(watched: tuple[Server, psycopg.Connection[Any]]) -> None:
    server, conn = watched
    from lunogram_server.reactions import ORGANIZATION_MERGED, ORGANIZATIONS_DELETED

    with server.client() as client:
        tag = uid("o")
        first = client.post("/client/organizations", json={"identifier": [ident(f"{tag}-1")]}).json()
        second = client.post("/client/organizations", json={"identifier": [ident(f"{tag}-2")]}).json()
        before = mark(conn)
        both = client.post("/client/organizations", json={"identifier": [ident(f"{tag}-1"), ident(f"{tag}-2")]})
        assert both.json()["id"] == first["id"]
        assert [args[1:] for args, _ in seen(conn, ORGANIZATION_MERGED, before)] == [[first["id"], second["id"]]]
        gone = client.request("DELETE", "/client/organizations", json={"identifier": [ident(f"{tag}-1")]})
        assert gone.status_code == 204
        assert [args[1] for args, _ in seen(conn, ORGANIZATIONS_DELETED, before)] == [[first["id"]]]


def test_a_missing_handler_fails_migrate(watched: tuple[Server, psycopg.Connection[Any]]) -> None:
    server, _ = watched
    from lunogram_server.reactions import USER_MERGED

    registry = build_reactions()
    registry.on(USER_MERGED, "no_such_handler")
    with pytest.raises(
        RuntimeError, match=r"no_such_handler\(uuid,uuid,uuid\), registered for lunogram_on_user_merged"
    ):
        migrate(server.database_url, registry)
