"""Lists: the admin API, rule validation, every rule operator compiled to SQL, recompute, static members,
merges, deletes and project isolation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import TypeAdapter

from helpers import Server, ident, uid, wait_until
from lunogram_server.lists.rules import Node

NODE: TypeAdapter[Node] = TypeAdapter(Node)


def upsert(client: httpx.Client, external_id: str, **fields: Any) -> dict[str, Any]:
    response = client.post("/client/users", json={"identifier": [ident(external_id)], **fields})
    assert response.status_code == 200, response.text
    return dict(response.json())


def create_list(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/admin/lists", json={"name": uid("list"), **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


def ready(client: httpx.Client, list_id: str) -> dict[str, Any]:
    return dict(wait_until(lambda: (d := client.get(f"/admin/lists/{list_id}").json())["state"] == "ready" and d))


def member_ids(client: httpx.Client, list_id: str) -> set[str]:
    found: set[str] = set()
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/admin/lists/{list_id}/members", params=params).json()
        found |= {m["user_id"] for m in page["members"]}
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def tagged(tag: str, *conditions: dict[str, Any], kind: str = "all") -> dict[str, Any]:
    """A rule limited to this test's users (the database is shared by the whole session)."""
    return {"type": "all", "rules": [prop("data.tag", "equals", tag), {"type": kind, "rules": list(conditions)}]}


def prop(path: str, op: str, value: Any = None, **extra: Any) -> dict[str, Any]:
    rule = {"type": "property", "path": path, "op": op, **extra}
    if value is not None:
        rule["value"] = value
    return rule


@pytest.fixture(scope="module")
def people(server: Server) -> tuple[str, dict[str, str]]:
    """Five users with varied properties; the tag scopes rules to them."""
    tag = uid("tag")
    now = datetime.now(UTC)
    specs = {
        "ann": {
            "email": "ann@shop.example",
            "timezone": "Europe/Amsterdam",
            "locale": "nl-NL",
            "data": {
                "plan": "pro",
                "age": 31,
                "seen": (now - timedelta(days=2)).isoformat(),
                "address": {"city": "Utrecht"},
            },
        },
        "bob": {
            "email": "bob@mail.example",
            "timezone": "America/New_York",
            "data": {"plan": "free", "age": 17, "seen": (now - timedelta(days=40)).isoformat()},
        },
        "cy": {"data": {"plan": "pro", "age": "unknown", "seen": "not a date"}},
        "dee": {
            "email": "dee@shop.example",
            "data": {"plan": "enterprise", "age": 45.5, "renews": (now + timedelta(days=3)).isoformat()},
        },
        "eve": {"phone": "+31612345678", "data": {"plan": None}},
    }
    ids = {}
    with server.client() as client:
        for name, fields in specs.items():
            fields["data"] = {**fields["data"], "tag": tag}  # type: ignore[index]
            ids[name] = upsert(client, f"{tag}-{name}", **fields)["id"]
    return tag, ids


CASES: list[tuple[dict[str, Any], set[str]]] = [
    (prop("email", "equals", "ann@shop.example"), {"ann"}),
    (prop("email", "not_equals", "ann@shop.example"), {"bob", "cy", "dee", "eve"}),
    (prop("email", "contains", "shop"), {"ann", "dee"}),
    (prop("email", "starts_with", "bo"), {"bob"}),
    (prop("email", "exists"), {"ann", "bob", "dee"}),
    (prop("phone", "exists"), {"eve"}),
    (prop("locale", "not_exists"), {"bob", "cy", "dee", "eve"}),
    (prop("timezone", "in", ["Europe/Amsterdam", "America/New_York"]), {"ann", "bob"}),
    (prop("data.plan", "equals", "pro"), {"ann", "cy"}),
    (prop("data.plan", "in", ["free", "enterprise"]), {"bob", "dee"}),
    (prop("data.plan", "not_exists"), {"eve"}),  # null counts as absent
    (prop("data.plan", "starts_with", "ent"), {"dee"}),
    (prop("data.address.city", "equals", "Utrecht"), {"ann"}),
    (prop("data.age", "gt", 30), {"ann", "dee"}),
    (prop("data.age", "gte", 45.5), {"dee"}),
    (prop("data.age", "lt", 18), {"bob"}),  # "unknown" is not a number: false, not an error
    (prop("data.age", "lte", 31), {"ann", "bob"}),
    (prop("data.seen", "after", "2000-01-01T00:00:00Z"), {"ann", "bob"}),  # "not a date": false
    (prop("data.seen", "before", (datetime.now(UTC) - timedelta(days=30)).isoformat()), {"bob"}),
    (prop("data.seen", "within_last", window={"value": 7, "unit": "days"}), {"ann"}),
    (prop("data.renews", "within_next", window={"value": 1, "unit": "weeks"}), {"dee"}),
    (prop("data.renews", "within_next", window={"value": 2, "unit": "days"}), set()),
]


@pytest.mark.parametrize(("condition", "expected"), CASES, ids=[f"{c['path']}-{c['op']}" for c, _ in CASES])
def test_each_property_operator(
    client: httpx.Client, people: tuple[str, dict[str, str]], condition: dict[str, Any], expected: set[str]
) -> None:
    tag, ids = people
    made = create_list(client, rule=tagged(tag, condition))
    ready(client, made["id"])
    assert member_ids(client, made["id"]) == {ids[n] for n in expected}


def test_groups_nest_and_or(client: httpx.Client, people: tuple[str, dict[str, str]]) -> None:
    tag, ids = people
    rule = tagged(
        tag,
        prop("data.plan", "equals", "enterprise"),
        {"type": "all", "rules": [prop("data.plan", "equals", "pro"), prop("email", "exists")]},
        kind="any",
    )
    made = create_list(client, rule=rule)
    assert ready(client, made["id"])["member_count"] == 2
    assert member_ids(client, made["id"]) == {ids["ann"], ids["dee"]}


def test_event_rules_count_and_window(client: httpx.Client, server: Server, db: psycopg.Connection[Any]) -> None:
    tag = uid("ev")
    ids = {n: upsert(client, f"{tag}-{n}", data={"tag": tag})["id"] for n in ("a", "b", "c")}
    events = [{"name": "purchase", "identifier": [ident(f"{tag}-a")], "data": {"total": 10}} for _ in range(3)]
    events += [{"name": "purchase", "identifier": [ident(f"{tag}-b")], "data": {"total": 99}}]
    assert client.post("/client/users/events", json=events).status_code == 202
    wait_until(
        lambda: (
            db.execute(
                "SELECT count(*) FROM user_events WHERE user_id = ANY (%s::uuid[])", (list(ids.values()),)
            ).fetchone()
            == (4,)
        )
    )
    db.execute("UPDATE user_events SET created_at = now() - interval '60 days' WHERE user_id = %s", (ids["b"],))

    def members_of(condition: dict[str, Any]) -> set[str]:
        made = create_list(client, rule=tagged(tag, condition))
        ready(client, made["id"])
        names = {v: k for k, v in ids.items()}
        return {names[m] for m in member_ids(client, made["id"])}

    base = {"type": "event", "name": "purchase"}
    assert members_of(base) == {"a", "b"}
    assert members_of({**base, "did": False}) == {"c"}
    assert members_of({**base, "count": {"op": "at_least", "value": 2}}) == {"a"}
    assert members_of({**base, "count": {"op": "at_most", "value": 1}}) == {"b", "c"}
    assert members_of({**base, "within": {"value": 30, "unit": "days"}}) == {"a"}
    assert members_of({**base, "where": [prop("data.total", "gt", 50)]}) == {"b"}


def test_organization_and_list_membership(client: httpx.Client) -> None:
    tag = uid("org")
    ids = {n: upsert(client, f"{tag}-{n}", data={"tag": tag})["id"] for n in ("a", "b")}
    org = {"identifier": [ident(uid("acme"))], "name": "Acme"}
    assert client.post("/client/organizations", json={**org, "data": {"tier": "gold"}}).status_code == 200
    membership = {"organization": {"identifier": org["identifier"]}, "user": {"identifier": [ident(f"{tag}-a")]}}
    joined = client.post("/client/organizations/users", json=membership)
    assert joined.status_code == 200
    gold = create_list(
        client, rule=tagged(tag, {"type": "organization", "where": [prop("data.tier", "equals", "gold")]})
    )
    assert member_ids(client, ready(client, gold["id"])["id"]) == {ids["a"]}
    outside = create_list(client, rule=tagged(tag, {"type": "list", "list_id": gold["id"], "member": False}))
    assert member_ids(client, ready(client, outside["id"])["id"]) == {ids["b"]}


def test_changing_a_rule_recomputes_and_records_changes(
    client: httpx.Client, people: tuple[str, dict[str, str]], db: psycopg.Connection[Any]
) -> None:
    tag, ids = people
    made = create_list(client, rule=tagged(tag, prop("data.plan", "equals", "pro")))
    ready(client, made["id"])
    changed = client.patch(
        f"/admin/lists/{made['id']}", json={"rule": tagged(tag, prop("data.plan", "equals", "free"))}
    )
    assert changed.status_code == 200
    assert changed.json()["rule_version"] == 2
    assert ready(client, made["id"])["member_count"] == 1
    assert member_ids(client, made["id"]) == {ids["bob"]}
    changes = db.execute(
        "SELECT user_id::text, change FROM list_changes WHERE list_id = %s ORDER BY id", (made["id"],)
    ).fetchall()
    assert sorted(changes[:2]) == sorted([(ids["ann"], "entered"), (ids["cy"], "entered")])
    assert sorted(changes[2:]) == sorted([(ids["bob"], "entered"), (ids["ann"], "exited"), (ids["cy"], "exited")])


@pytest.mark.parametrize(
    ("rule", "detail"),
    [
        ({"type": "property", "path": "birthday", "op": "equals", "value": 1}, "rule.path: must be email, phone"),
        ({"type": "property", "path": "data.x", "op": "gt", "value": "ten"}, "needs a number"),
        ({"type": "property", "path": "data.x", "op": "within_last"}, "needs a window"),
        ({"type": "property", "path": "data.x", "op": "in", "value": []}, "list of 1 to 1000"),
        ({"type": "property", "path": "data.x", "op": "before", "value": "yesterday"}, "RFC 3339"),
        ({"type": "any", "rules": []}, "rule.any.rules"),
        (
            {"type": "property", "path": "data.x", "op": "within_last", "window": {"value": 1201, "unit": "months"}},
            "at most 1200 months",
        ),
        (
            {
                "type": "all",
                "rules": [{"type": "all", "rules": [{"type": "property", "path": "nope", "op": "exists"}]}],
            },
            "rule.rules[0].rules[0].path",
        ),
        ({"type": "event", "name": "x", "did": False, "count": {"op": "at_least", "value": 1}}, "count: not"),
        ({"type": "list", "list_id": "00000000-0000-0000-0000-000000000000"}, "does not exist in this project"),
        ({"type": "cohort"}, "rule"),
    ],
)
def test_bad_rules_are_refused_naming_the_node(client: httpx.Client, rule: dict[str, Any], detail: str) -> None:
    before = len(client.get("/admin/lists", params={"limit": 1000}).json())
    response = client.post("/admin/lists", json={"name": "bad", "rule": rule})
    assert response.status_code == 400, response.text
    assert detail in response.json()["detail"]
    assert len(client.get("/admin/lists", params={"limit": 1000}).json()) == before


def test_static_lists_add_and_remove_by_identifier(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    made = create_list(client)
    assert made["kind"] == "static"
    assert made["state"] == "ready"
    known = upsert(client, uid("known"))
    fresh = uid("fresh")
    users = {"users": [[ident(known["identifier"][0]["external_id"])], [ident(fresh)]]}
    added = client.post(f"/admin/lists/{made['id']}/members", json=users)
    assert added.json() == {"changed": 2}
    assert client.post(f"/admin/lists/{made['id']}/members", json=users).json() == {"changed": 0}
    assert client.get("/admin/users", params={"external_id": fresh}).status_code == 200  # created
    assert len(member_ids(client, made["id"])) == 2
    removed = client.request("DELETE", f"/admin/lists/{made['id']}/members", json={"users": [[ident(fresh)]]})
    assert removed.json() == {"changed": 1}
    assert member_ids(client, made["id"]) == {known["id"]}
    rule_list = create_list(client, rule={"type": "property", "path": "email", "op": "exists"})
    refused = client.post(f"/admin/lists/{rule_list['id']}/members", json=users)
    assert refused.status_code == 409


def test_merges_and_deletes_leave_no_stale_memberships(client: httpx.Client) -> None:
    made = create_list(client)
    anonymous, known = uid("anon"), uid("known")
    upsert(client, known)
    anon_user = client.post("/client/users", json={"identifier": [ident(anonymous, "anonymous")]}).json()
    client.post(f"/admin/lists/{made['id']}/members", json={"users": [[ident(anonymous, "anonymous")]]})
    merged = client.post("/client/users", json={"identifier": [ident(anonymous, "anonymous"), ident(known)]}).json()
    assert merged["id"] != anon_user["id"]
    assert member_ids(client, made["id"]) == {merged["id"]}
    assert client.request("DELETE", "/client/users", json={"identifier": [ident(known)]}).status_code == 204
    assert member_ids(client, made["id"]) == set()


def test_crud_and_errors(client: httpx.Client, public_client: httpx.Client) -> None:
    made = create_list(client)
    renamed = client.patch(f"/admin/lists/{made['id']}", json={"name": "Renamed"})
    assert renamed.json()["name"] == "Renamed"
    assert (
        client.patch(
            f"/admin/lists/{made['id']}", json={"rule": {"type": "property", "path": "email", "op": "exists"}}
        ).status_code
        == 400
    )
    assert any(entry["id"] == made["id"] for entry in client.get("/admin/lists").json())
    assert public_client.get("/admin/lists").status_code == 403
    assert client.post("/admin/lists", json={"name": " "}).status_code == 400
    assert client.get("/admin/lists/not-a-uuid").status_code == 400
    assert client.get(f"/admin/lists/{made['id']}/members", params={"cursor": "junk"}).status_code == 400
    assert client.delete(f"/admin/lists/{made['id']}").status_code == 204
    assert client.get(f"/admin/lists/{made['id']}").status_code == 404
    assert client.delete(f"/admin/lists/{made['id']}").status_code == 404


def test_lists_are_project_scoped(client: httpx.Client, b: httpx.Client) -> None:
    tag = uid("iso")
    upsert(client, f"{tag}-a", data={"tag": tag})
    upsert(b, f"{tag}-a", data={"tag": tag})
    mine = create_list(client, rule={"type": "property", "path": "data.tag", "op": "equals", "value": tag})
    theirs = create_list(b, rule={"type": "property", "path": "data.tag", "op": "equals", "value": tag})
    assert ready(client, mine["id"])["member_count"] == 1
    assert ready(b, theirs["id"])["member_count"] == 1
    assert member_ids(client, mine["id"]) != member_ids(b, theirs["id"])
    assert b.get(f"/admin/lists/{mine['id']}").status_code == 404
    assert b.delete(f"/admin/lists/{mine['id']}").status_code == 404
    assert (
        b.post("/admin/lists", json={"name": "x", "rule": {"type": "list", "list_id": mine["id"]}}).status_code == 400
    )
    assert all(entry["id"] != mine["id"] for entry in b.get("/admin/lists").json())


def test_a_rule_that_cannot_be_evaluated_fails_alone(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    """A stored rule the database cannot evaluate (here: a window far beyond the timestamp range, written
    around the API's validation) is marked failed with the reason; lists behind it are still computed."""
    project = upsert(client, uid("p"))["project_id"]
    rule = {"type": "property", "path": "data.x", "op": "within_last", "window": {"value": 99_999_999, "unit": "days"}}
    broken = db.execute(
        "INSERT INTO lists (project_id, name, kind, rule, updated_at) VALUES (%s, 'broken', 'rule', %s, now() - "
        "interval '1 hour') RETURNING id::text",
        (project, psycopg.types.json.Jsonb(rule)),
    ).fetchone()[0]
    fine = create_list(client, rule={"type": "property", "path": "email", "op": "exists"})
    ready(client, fine["id"])
    failed = client.get(f"/admin/lists/{broken}").json()
    assert failed["state"] == "failed"
    assert "window" in failed["error"]


def test_an_event_moves_a_user_in_and_out_incrementally(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    tag = uid("inc")
    user = upsert(client, f"{tag}-a", data={"tag": tag})
    paid = create_list(client, rule=tagged(tag, {"type": "event", "name": "paid"}))
    unpaid = create_list(client, rule=tagged(tag, {"type": "event", "name": "paid", "did": False}))
    ready(client, paid["id"])
    ready(client, unpaid["id"])
    assert member_ids(client, unpaid["id"]) == {user["id"]}
    event = [{"name": "paid", "identifier": [ident(f"{tag}-a")], "data": {}}]
    assert client.post("/client/users/events", json=event).status_code == 202
    wait_until(lambda: member_ids(client, paid["id"]) == {user["id"]}, what="entry on event")
    assert member_ids(client, unpaid["id"]) == set()
    changes = db.execute(
        "SELECT list_id::text, change FROM list_changes WHERE user_id = %s ORDER BY id", (user["id"],)
    ).fetchall()
    assert changes[0] == (unpaid["id"], "entered")
    assert sorted(changes[1:]) == sorted([(paid["id"], "entered"), (unpaid["id"], "exited")])


def test_a_profile_change_moves_a_user_and_lists_of_lists_follow(client: httpx.Client) -> None:
    tag = uid("prof")
    user = upsert(client, f"{tag}-a", data={"tag": tag, "plan": "free"})
    pro = create_list(client, rule=tagged(tag, prop("data.plan", "equals", "pro")))
    ready(client, pro["id"])
    of_pro = create_list(client, rule={"type": "list", "list_id": pro["id"]})
    ready(client, of_pro["id"])
    assert member_ids(client, pro["id"]) == set()
    upsert(client, f"{tag}-a", data={"plan": "pro"})
    wait_until(lambda: member_ids(client, pro["id"]) == {user["id"]}, what="entry on profile change")
    wait_until(lambda: member_ids(client, of_pro["id"]) == {user["id"]}, what="entry via the other list")
    upsert(client, f"{tag}-a", data={"plan": "free"})
    wait_until(lambda: member_ids(client, pro["id"]) == set(), what="exit on profile change")
    wait_until(lambda: member_ids(client, of_pro["id"]) == set(), what="exit via the other list")


def test_time_windows_expire_with_the_clock(server: Server, client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    """Recompute with an injected clock: 8 days later, a 'visited in the last 7 days' user has left."""
    from lunogram_server.db import open_pool
    from lunogram_server.lists import membership

    tag = uid("time")
    user = upsert(client, f"{tag}-a", data={"tag": tag})
    visit = [{"name": "visit", "identifier": [ident(f"{tag}-a")], "data": {}}]
    assert client.post("/client/users/events", json=visit).status_code == 202
    window = {"type": "event", "name": "visit", "within": {"value": 7, "unit": "days"}}
    recent = create_list(client, rule=tagged(tag, window))
    wait_until(lambda: member_ids(client, recent["id"]) == {user["id"]}, what="entry")
    # an evaluation that had to wait for the first recompute is queued: let it run at today's time first
    pending = "SELECT count(*) FROM list_pending_users WHERE user_id = %s"
    wait_until(lambda: db.execute(pending, (user["id"],)).fetchone() == (0,), what="queue drained")

    async def eight_days_later() -> None:
        pool = await open_pool(server.database_url, min_size=1, max_size=1)
        try:
            async with pool.connection() as conn:
                later = datetime.now(UTC) + timedelta(days=8)
                while await membership.recompute_one(conn, later, time_every=3600):
                    pass
        finally:
            await pool.close()

    asyncio.run(eight_days_later())
    assert member_ids(client, recent["id"]) == set()


def post_csv(client: httpx.Client, list_id: str, text: str, media: str = "text/csv") -> httpx.Response:
    return client.post(f"/admin/lists/{list_id}/imports", content=text.encode(), headers={"Content-Type": media})


def test_csv_import_applies_good_rows_and_reports_bad_ones(client: httpx.Client) -> None:
    made = create_list(client)
    tag = uid("csv")
    existing = upsert(client, f"{tag}-1", data={"kept": "yes", "plan": "free"})
    text = (
        "external_id,source,plan,city\n"
        f"{tag}-1,,pro,Utrecht\n"  # known user: data merged
        f"{tag}-2,crm,free,\n"  # new user under source crm, empty city omitted
        ",,pro,Delft\n"  # line 4: no external_id
        f"{tag}-3,,free\n"  # line 5: a cell short
        "\n"
        f'"{tag}-4",,"enterprise, EU","Den Haag"\n'
    )
    response = post_csv(client, made["id"], text)
    assert response.status_code == 202, response.text
    started = response.json()
    assert started["total_rows"] == 5
    assert started["failed"] == 2

    def finished() -> dict[str, Any] | None:
        status = client.get(f"/admin/lists/{made['id']}/imports/{started['id']}").json()
        return status if status["status"] == "done" else None

    done = wait_until(finished, what="import done")
    assert done["imported"] == 3
    assert done["processed_rows"] == 5
    assert done["errors"] == [
        {"line": 4, "error": "external_id: is required"},
        {"line": 5, "error": "has 3 cells; the header names 4 columns"},
    ]
    assert len(member_ids(client, made["id"])) == 3
    updated = client.get("/admin/users", params={"external_id": f"{tag}-1"}).json()
    assert updated["id"] == existing["id"]
    assert updated["data"]["plan"] == "pro"
    assert updated["data"]["kept"] == "yes"
    crm = client.get("/admin/users", params={"external_id": f"{tag}-2", "source": "crm"}).json()
    assert crm["data"] == {"plan": "free"}
    quoted = client.get("/admin/users", params={"external_id": f"{tag}-4"}).json()
    assert quoted["data"] == {"plan": "enterprise, EU", "city": "Den Haag"}


@pytest.mark.parametrize(
    ("text", "media", "status", "detail"),
    [
        ("email\nx@example.com\n", "text/csv", 400, "header: needs an external_id column"),
        ("external_id\n", "text/csv", 400, "no rows"),
        ("", "text/csv", 400, "empty"),
        ("external_id,a,a\n1,2,3\n", "text/csv", 400, "appears twice"),
        ("external_id\n1\n", "application/json", 415, "text/csv"),
    ],
)
def test_bad_files_are_refused_whole(client: httpx.Client, text: str, media: str, status: int, detail: str) -> None:
    made = create_list(client)
    response = post_csv(client, made["id"], text, media)
    assert response.status_code == status
    assert detail in response.json()["detail"]
    assert member_ids(client, made["id"]) == set()


def test_imports_only_into_static_lists_of_the_project(client: httpx.Client, b: httpx.Client) -> None:
    rule_list = create_list(client, rule={"type": "property", "path": "email", "op": "exists"})
    assert post_csv(client, rule_list["id"], "external_id\nx\n").status_code == 409
    static = create_list(client)
    assert post_csv(b, static["id"], "external_id\nx\n").status_code == 404
    started = post_csv(client, static["id"], "external_id\nx\n").json()
    assert b.get(f"/admin/lists/{static['id']}/imports/{started['id']}").status_code == 404


def test_a_merge_re_evaluates_event_lists_for_the_survivor(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    """Each of two profiles bought once ('at most 1 purchase': both in); merged, the survivor has two."""
    tag = uid("merge")
    anonymous, known = f"{tag}-anon", f"{tag}-known"
    upsert(client, known, data={"tag": tag})
    client.post("/client/users", json={"identifier": [ident(anonymous, "anonymous")], "data": {"tag": tag}})
    buys = [
        {"name": "purchase", "identifier": [ident(anonymous, "anonymous")], "data": {}},
        {"name": "purchase", "identifier": [ident(known)], "data": {}},
    ]
    assert client.post("/client/users/events", json=buys).status_code == 202
    count = (
        "SELECT count(*) FROM user_events AS e JOIN user_identifiers AS i USING (user_id)"
        " WHERE i.external_id = ANY (%s)"
    )
    wait_until(lambda: db.execute(count, ([anonymous, known],)).fetchone() == (2,), what="both purchases applied")
    at_most_once = {"type": "event", "name": "purchase", "count": {"op": "at_most", "value": 1}}
    once = create_list(client, rule=tagged(tag, at_most_once))
    assert ready(client, once["id"])["member_count"] == 2
    client.post("/client/users", json={"identifier": [ident(anonymous, "anonymous"), ident(known)]})
    wait_until(lambda: member_ids(client, once["id"]) == set(), what="the survivor leaves")


def test_a_recompute_goes_by_chunks_and_reports_progress(pg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a database of its own (no server racing for the list): 10 users, chunks of 3, half of them
    matching; the members are exactly right, including exits, and progress is heard after each chunk."""
    from lunogram_server.db import open_pool
    from lunogram_server.db.migrate import migrate
    from lunogram_server.lists import membership

    conninfo = pg.new_database()
    migrate(conninfo)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        project = conn.execute("INSERT INTO projects (name) VALUES ('chunks') RETURNING id").fetchone()[0]
        users = [
            conn.execute(
                "INSERT INTO users (project_id, data) VALUES (%s, %s) RETURNING id",
                (project, psycopg.types.json.Jsonb({"even": n % 2 == 0})),
            ).fetchone()[0]
            for n in range(10)
        ]
        rule = {"type": "property", "path": "data.even", "op": "equals", "value": True}
        list_id = conn.execute(
            "INSERT INTO lists (project_id, name, kind, rule) VALUES (%s, 'even', 'rule', %s) RETURNING id",
            (project, psycopg.types.json.Jsonb(rule)),
        ).fetchone()[0]
        stale_member = users[1]  # odd: must leave
        conn.execute(
            "INSERT INTO list_members (list_id, user_id, project_id) VALUES (%s, %s, %s)",
            (list_id, stale_member, project),
        )
    monkeypatch.setattr(membership, "CHUNK", 3)
    heard: list[tuple[int, int]] = []

    async def progress(_: Any, done: int, total: int, __: Any) -> None:
        heard.append((done, total))

    async def run() -> bool:
        pool = await open_pool(conninfo, min_size=1, max_size=1)
        try:
            async with pool.connection() as conn:
                return await membership.recompute_one(conn, progress=progress)
        finally:
            await pool.close()

    assert asyncio.run(run())
    assert heard == [(3, 10), (6, 10), (9, 10)]
    with psycopg.connect(conninfo) as conn:
        members = {row[0] for row in conn.execute("SELECT user_id FROM list_members WHERE list_id = %s", (list_id,))}
        assert members == {u for n, u in enumerate(users) if n % 2 == 0}
        state = conn.execute("SELECT computed_version, rule_version, error FROM lists WHERE id = %s", (list_id,))
        assert state.fetchone() == (1, 1, None)
        assert conn.execute("SELECT count(*) FROM list_recompute_progress").fetchone() == (0,)
