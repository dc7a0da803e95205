"""Identity resolution through the Client API: create, attach, merge (users and organizations), concurrency."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg

from helpers import Server, ident, uid


def upsert_user(client: httpx.Client, *identifiers: dict[str, Any], **fields: Any) -> dict[str, Any]:
    response = client.post("/client/users", json={"identifier": list(identifiers), **fields})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def upsert_org(client: httpx.Client, *identifiers: dict[str, Any], **fields: Any) -> dict[str, Any]:
    response = client.post("/client/organizations", json={"identifier": list(identifiers), **fields})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def add_member(client: httpx.Client, org: dict[str, Any], user: dict[str, Any], data: dict[str, Any]) -> None:
    body = {"organization": {"identifier": [org]}, "user": {"identifier": [user]}, "data": data}
    response = client.post("/client/organizations/users", json=body)
    assert response.status_code == 200, response.text


def pairs(profile: dict[str, Any]) -> set[tuple[str, str]]:
    return {(i["source"], i["external_id"]) for i in profile["identifier"]}


def user_of(db: psycopg.Connection[Any], external_id: str, source: str = "default") -> Any:
    row = db.execute(
        "SELECT user_id FROM user_identifiers WHERE source = %s AND external_id = %s", (source, external_id)
    ).fetchone()
    return str(row[0]) if row else None


def org_of(db: psycopg.Connection[Any], external_id: str, source: str = "default") -> Any:
    row = db.execute(
        "SELECT organization_id FROM organization_identifiers WHERE source = %s AND external_id = %s",
        (source, external_id),
    ).fetchone()
    return str(row[0]) if row else None


def user_exists(db: psycopg.Connection[Any], user_id: str) -> bool:
    return db.execute("SELECT 1 FROM users WHERE id = %s", (user_id,)).fetchone() is not None


def org_exists(db: psycopg.Connection[Any], org_id: str) -> bool:
    return db.execute("SELECT 1 FROM organizations WHERE id = %s", (org_id,)).fetchone() is not None


def memberships(db: psycopg.Connection[Any], user_id: str) -> dict[str, dict[str, Any]]:
    rows = db.execute("SELECT organization_id, data FROM organization_members WHERE user_id = %s", (user_id,))
    return {str(org): data for org, data in rows}


def merges(db: psycopg.Connection[Any], table: str, survivor: str) -> list[tuple[str, list[Any], dict[str, Any]]]:
    assert table in ("user_merges", "organization_merges")
    rows = db.execute(
        f"SELECT merged_id, identifiers, data FROM {table} WHERE survivor_id = %s ORDER BY id", (survivor,)
    )
    return [(str(merged), identifiers, data) for merged, identifiers, data in rows]


# --- no match, one match ---------------------------------------------------------------------------------------


def test_no_match_creates_one_user_with_every_identifier(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    a, b, c = uid(), uid(), uid()
    user = upsert_user(client, ident(a), ident(b, source="crm", tier="gold"), ident(c, source="anonymous"))
    assert pairs(user) == {("default", a), ("crm", b), ("anonymous", c)}
    assert next(i for i in user["identifier"] if i["source"] == "crm")["metadata"] == {"tier": "gold"}
    assert next(i for i in user["identifier"] if i["source"] == "default")["metadata"] == {}
    assert user["version"] == 1
    assert {user_of(db, a), user_of(db, b, "crm"), user_of(db, c, "anonymous")} == {user["id"]}


def test_one_match_updates_and_attaches_missing_identifiers_merging_metadata(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    a, b = uid(), uid()
    first = upsert_user(client, ident(a, x=1, y={"deep": 1}), data={"k": 1})
    second = upsert_user(client, ident(a, y={"other": 2}, z=3), ident(b, source="crm"), data={"j": 2})
    assert second["id"] == first["id"]
    assert pairs(second) == {("default", a), ("crm", b)}
    meta = next(i for i in second["identifier"] if i["external_id"] == a)["metadata"]
    # metadata merges at the top level: x kept, y replaced as a whole, z added
    assert meta == {"x": 1, "y": {"other": 2}, "z": 3}
    assert second["data"] == {"k": 1, "j": 2}
    assert second["version"] == 2
    assert user_of(db, b, "crm") == first["id"]
    # the attached identifier is findable on its own afterwards
    assert upsert_user(client, ident(b, source="crm"))["id"] == first["id"]


def test_version_increments_on_change_only(client: httpx.Client) -> None:
    a, b = uid(), uid()
    created = upsert_user(client, ident(a, m=1), email="v@example.com", data={"n": 1})
    assert created["version"] == 1
    same = upsert_user(client, ident(a, m=1), email="v@example.com", data={"n": 1})
    assert same["version"] == 1
    assert same["updated_at"] == created["updated_at"]
    assert upsert_user(client, ident(a))["version"] == 1  # naming the user alone changes nothing
    assert upsert_user(client, ident(a), data={"n": 2})["version"] == 2
    assert upsert_user(client, ident(a, m=2))["version"] == 3  # identifier metadata is a change
    assert upsert_user(client, ident(a), ident(b))["version"] == 4  # so is a new identifier
    assert upsert_user(client, ident(b), ident(a))["version"] == 4
    assert upsert_user(client, ident(a), timezone="Europe/Paris")["version"] == 5
    assert upsert_user(client, ident(a), timezone="Europe/Paris")["version"] == 5


def test_duplicate_identifiers_in_one_request_are_deduplicated(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    a = uid()
    user = upsert_user(client, ident(a, p=1), ident(a, q=2), ident(a, source="default", p=3))
    assert len(user["identifier"]) == 1
    assert user["identifier"][0]["metadata"] == {"p": 3, "q": 2}
    count = db.execute("SELECT count(*) FROM user_identifiers WHERE external_id = %s", (a,)).fetchone()
    assert count == (1,)
    # same external id under two sources is two identifiers, not a duplicate
    both = upsert_user(client, ident(a), ident(a, source="crm"), ident(a))
    assert both["id"] == user["id"]
    assert pairs(both) == {("default", a), ("crm", a)}


def test_organization_duplicates_and_version(client: httpx.Client) -> None:
    o = uid("o")
    org = upsert_org(client, ident(o, a=1), ident(o, b=2), name="Acme")
    assert len(org["identifier"]) == 1
    assert org["identifier"][0]["metadata"] == {"a": 1, "b": 2}
    assert org["version"] == 1
    assert upsert_org(client, ident(o), name="Acme")["version"] == 1
    assert upsert_org(client, ident(o), name="Acme Inc")["version"] == 2


# --- merges ------------------------------------------------------------------------------------------------------


def test_anonymous_profile_merges_into_identified_one_even_when_older(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    anon_ext, known_ext = uid("anon"), uid()
    org_a, org_b, org_shared = uid("o"), uid("o"), uid("o")
    anon = upsert_user(
        client,
        ident(anon_ext, source="anonymous"),
        email="anon@example.com",
        locale="en",
        data={"cart": 3, "shared": "anon", "only_anon": True},
    )
    known = upsert_user(client, ident(known_ext), timezone="Europe/Amsterdam", locale="nl", data={"shared": "known"})
    assert anon["created_at"] <= known["created_at"]
    add_member(client, ident(org_a), ident(anon_ext, source="anonymous"), {"role": "guest"})
    add_member(client, ident(org_b), ident(known_ext), {"role": "owner"})
    add_member(client, ident(org_shared), ident(anon_ext, source="anonymous"), {"seat": 1, "who": "anon"})
    add_member(client, ident(org_shared), ident(known_ext), {"who": "known"})
    known_before = upsert_user(client, ident(known_ext))

    # the anonymous identifier is listed first: the order of the request must not decide the survivor
    merged = upsert_user(client, ident(anon_ext, source="anonymous"), ident(known_ext))

    assert merged["id"] == known["id"]
    assert pairs(merged) == {("anonymous", anon_ext), ("default", known_ext)}
    assert merged["data"] == {"cart": 3, "shared": "known", "only_anon": True}
    assert merged["email"] == "anon@example.com"  # the survivor had none
    assert merged["locale"] == "nl"  # the survivor's own value stays
    assert merged["timezone"] == "Europe/Amsterdam"
    assert merged["version"] > known_before["version"]

    assert not user_exists(db, anon["id"])
    assert user_of(db, anon_ext, "anonymous") == known["id"]
    org_ids = {name: org_of(db, name) for name in (org_a, org_b, org_shared)}
    assert memberships(db, known["id"]) == {
        org_ids[org_a]: {"role": "guest"},
        org_ids[org_b]: {"role": "owner"},
        org_ids[org_shared]: {"seat": 1, "who": "known"},  # the survivor's membership data wins per key
    }
    assert memberships(db, anon["id"]) == {}

    recorded = merges(db, "user_merges", known["id"])
    assert len(recorded) == 1
    merged_id, identifiers, data = recorded[0]
    assert merged_id == anon["id"]
    assert {(i["source"], i["external_id"]) for i in identifiers} == {("anonymous", anon_ext)}
    assert data == {"cart": 3, "shared": "anon", "only_anon": True}

    # later requests by either identifier land on the survivor
    assert upsert_user(client, ident(anon_ext, source="anonymous"))["id"] == known["id"]


def test_oldest_identified_profile_survives(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    old_ext, new_ext = uid(), uid()
    old = upsert_user(client, ident(old_ext), data={"k": "old"})
    new = upsert_user(
        client,
        ident(new_ext, source="crm"),
        ident(uid("anon"), source="anonymous"),
        phone="+31612345678",
        data={"k": "new", "n": 1},
    )
    merged = upsert_user(client, ident(new_ext, source="crm"), ident(old_ext))
    assert merged["id"] == old["id"]
    assert merged["data"] == {"k": "old", "n": 1}
    assert merged["phone"] == "+31612345678"
    assert len(merged["identifier"]) == 3
    assert not user_exists(db, new["id"])
    assert [m[0] for m in merges(db, "user_merges", old["id"])] == [new["id"]]


def test_two_anonymous_profiles_oldest_survives(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    first_ext, second_ext = uid("anon"), uid("anon")
    first = upsert_user(client, ident(first_ext, source="anonymous"))
    second = upsert_user(client, ident(second_ext, source="anonymous"))
    merged = upsert_user(client, ident(second_ext, source="anonymous"), ident(first_ext, source="anonymous"))
    assert merged["id"] == first["id"]
    assert not user_exists(db, second["id"])


def test_three_way_merge(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    x_ext, y_ext, z_ext, fresh = uid(), uid(), uid(), uid()
    x = upsert_user(client, ident(x_ext), data={"k": "x"})
    y = upsert_user(client, ident(y_ext), email="y@example.com", data={"k": "y", "m": "y"})
    z = upsert_user(client, ident(z_ext), email="z@example.com", data={"k": "z", "m": "z", "n": "z"})
    merged = upsert_user(client, ident(z_ext), ident(fresh), ident(y_ext), ident(x_ext), data={"req": 1})
    assert merged["id"] == x["id"]
    assert pairs(merged) == {("default", e) for e in (x_ext, y_ext, z_ext, fresh)}
    # survivor's keys win, then older losers' over newer; the request's data applies last
    assert merged["data"] == {"k": "x", "m": "y", "n": "z", "req": 1}
    assert merged["email"] == "y@example.com"
    assert not user_exists(db, y["id"])
    assert not user_exists(db, z["id"])
    assert sorted(m[0] for m in merges(db, "user_merges", x["id"])) == sorted([y["id"], z["id"]])
    for ext in (x_ext, y_ext, z_ext, fresh):
        assert user_of(db, ext) == x["id"]


def test_organizations_merge(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    old_ext, new_ext, anon_ext = uid("o"), uid("o"), uid("o")
    u1, u2, u3 = uid(), uid(), uid()
    old = upsert_org(client, ident(old_ext), data={"plan": "pro", "seats": 5})
    new = upsert_org(client, ident(new_ext), name="Newco", data={"plan": "free", "region": "eu"})
    add_member(client, ident(old_ext), ident(u1), {"role": "admin"})
    add_member(client, ident(new_ext), ident(u2), {"role": "viewer"})
    add_member(client, ident(new_ext), ident(u1), {"role": "viewer", "since": 2020})

    merged = upsert_org(client, ident(new_ext), ident(old_ext))
    assert merged["id"] == old["id"]
    assert pairs(merged) == {("default", old_ext), ("default", new_ext)}
    assert merged["name"] == "Newco"  # the survivor had none
    assert merged["data"] == {"plan": "pro", "seats": 5, "region": "eu"}
    assert not org_exists(db, new["id"])
    rows = db.execute(
        "SELECT i.external_id, m.data FROM organization_members m JOIN user_identifiers i ON i.user_id = m.user_id "
        "WHERE m.organization_id = %s",
        (old["id"],),
    ).fetchall()
    assert dict(rows) == {u1: {"role": "admin", "since": 2020}, u2: {"role": "viewer"}}
    assert db.execute(
        "SELECT count(*) FROM organization_members WHERE organization_id = %s", (new["id"],)
    ).fetchone() == (0,)
    recorded = merges(db, "organization_merges", old["id"])
    assert [(m[0], m[2]) for m in recorded] == [(new["id"], {"plan": "free", "region": "eu"})]
    assert recorded[0][1] == [{"source": "default", "external_id": new_ext}]

    # an anonymous-only organization merges into the identified one even though it is older
    anon = upsert_org(client, ident(anon_ext, source="anonymous"))
    add_member(client, ident(anon_ext, source="anonymous"), ident(u3), {})
    fresh_ext = uid("o")
    fresh = upsert_org(client, ident(fresh_ext))
    both = upsert_org(client, ident(anon_ext, source="anonymous"), ident(fresh_ext))
    assert both["id"] == fresh["id"]
    assert not org_exists(db, anon["id"])
    member = db.execute(
        "SELECT m.organization_id FROM organization_members m JOIN user_identifiers i ON i.user_id = m.user_id "
        "WHERE i.external_id = %s",
        (u3,),
    ).fetchall()
    assert [str(r[0]) for r in member] == [fresh["id"]]

    # three organizations at once: the oldest survives
    thirds = [uid("o") for _ in range(3)]
    made = [upsert_org(client, ident(e)) for e in thirds]
    three = upsert_org(client, *(ident(e) for e in reversed(thirds)))
    assert three["id"] == made[0]["id"]
    assert len(merges(db, "organization_merges", made[0]["id"])) == 2


def assert_all_200(responses: list[httpx.Response]) -> None:
    assert responses
    failed = [f"{r.status_code} {r.text}" for r in responses if r.status_code != 200]
    assert not failed, failed


# --- concurrency -------------------------------------------------------------------------------------------------


async def _post_all(server: Server, path: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {server.secret_key}"},
        timeout=60,
        limits=limits,
    ) as http:
        return list(await asyncio.gather(*(http.post(path, json=b) for b in bodies)))


def test_fifty_concurrent_upserts_of_a_new_identifier_make_one_user(
    server: Server, db: psycopg.Connection[Any]
) -> None:
    ext = uid()
    bodies = [{"identifier": [ident(ext)], "data": {f"k{i}": i}} for i in range(50)]
    responses = asyncio.run(_post_all(server, "/client/users", bodies))
    assert_all_200(responses)
    assert len(responses) == 50
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    rows = db.execute("SELECT user_id FROM user_identifiers WHERE external_id = %s", (ext,)).fetchall()
    assert len(rows) == 1
    assert str(rows[0][0]) in ids
    data = db.execute("SELECT data FROM users WHERE id = %s", (rows[0][0],)).fetchone()
    assert data is not None
    assert data[0] == {f"k{i}": i for i in range(50)}  # no update was lost


def test_fifty_concurrent_organization_upserts_make_one_organization(
    server: Server, db: psycopg.Connection[Any]
) -> None:
    ext = uid("o")
    bodies = [{"identifier": [ident(ext)], "name": "Acme"} for _ in range(50)]
    responses = asyncio.run(_post_all(server, "/client/organizations", bodies))
    assert_all_200(responses)
    assert len({r.json()["id"] for r in responses}) == 1
    assert db.execute("SELECT count(*) FROM organization_identifiers WHERE external_id = %s", (ext,)).fetchone() == (1,)


def test_concurrent_bridges_from_both_sides_end_with_one_user(
    client: httpx.Client, server: Server, db: psycopg.Connection[Any]
) -> None:
    a1, a2, b1, b2 = uid(), uid(), uid(), uid()
    a = upsert_user(client, ident(a1), ident(a2, source="crm"))
    b = upsert_user(client, ident(b1), ident(b2, source="crm"))
    combos = [
        (ident(a1), ident(b1)),
        (ident(b1), ident(a1)),
        (ident(a2, source="crm"), ident(b2, source="crm")),
        (ident(b2, source="crm"), ident(a2, source="crm")),
        (ident(a1), ident(b2, source="crm")),
        (ident(b1), ident(a2, source="crm")),
    ]
    bodies = [{"identifier": list(combos[i % len(combos)]), "data": {f"k{i}": i}} for i in range(24)]
    responses = asyncio.run(_post_all(server, "/client/users", bodies))
    assert_all_200(responses)
    assert {r.json()["id"] for r in responses} == {a["id"]}
    assert not user_exists(db, b["id"])
    assert {user_of(db, a1), user_of(db, b1), user_of(db, a2, "crm"), user_of(db, b2, "crm")} == {a["id"]}
    assert len(merges(db, "user_merges", a["id"])) == 1


def test_concurrent_chain_of_bridges_ends_with_one_user(
    client: httpx.Client, server: Server, db: psycopg.Connection[Any]
) -> None:
    """Bridges over disjoint identifiers that link a chain of users: no lock covers them all at once."""
    for _ in range(5):
        n = 6
        heads = [uid("p") for _ in range(n)]
        tails = [uid("q") for _ in range(n)]
        users = [upsert_user(client, ident(heads[i]), ident(tails[i])) for i in range(n)]
        bodies = [{"identifier": [ident(tails[i]), ident(heads[i + 1])], "data": {f"b{i}": i}} for i in range(n - 1)]
        # and plain upserts of every profile while it is being merged away
        bodies += [{"identifier": [ident(heads[i])], "data": {f"u{i}": i}} for i in range(n)]
        responses = asyncio.run(_post_all(server, "/client/users", bodies))
        assert_all_200(responses)
        survivor = users[0]["id"]
        assert {user_of(db, e) for e in heads + tails} == {survivor}
        for user in users[1:]:
            assert not user_exists(db, user["id"])
        data = db.execute("SELECT data FROM users WHERE id = %s", (survivor,)).fetchone()
        assert data is not None
        assert set(data[0]) == {f"b{i}" for i in range(n - 1)} | {f"u{i}" for i in range(n)}


def test_concurrent_membership_adds_while_users_merge(
    client: httpx.Client, server: Server, db: psycopg.Connection[Any]
) -> None:
    for _ in range(5):
        org = uid("o")
        old_ext, new_ext = uid(), uid()
        old = upsert_user(client, ident(old_ext))
        upsert_user(client, ident(new_ext), ident(uid("x")))
        bodies: list[tuple[str, dict[str, Any]]] = [
            (
                "/client/organizations/users",
                {
                    "organization": {"identifier": [ident(org)]},
                    "user": {"identifier": [ident(new_ext)]},
                    "data": {f"m{i}": i},
                },
            )
            for i in range(8)
        ]
        bodies.insert(3, ("/client/users", {"identifier": [ident(old_ext), ident(new_ext)]}))

        async def run(bodies: list[tuple[str, dict[str, Any]]] = bodies) -> list[httpx.Response]:
            async with httpx.AsyncClient(
                base_url=server.base_url, headers={"Authorization": f"Bearer {server.secret_key}"}, timeout=60
            ) as http:
                return list(await asyncio.gather(*(http.post(p, json=b) for p, b in bodies)))

        responses = asyncio.run(run())
        assert_all_200(responses)
        assert user_of(db, new_ext) == old["id"]
        rows = db.execute(
            "SELECT m.user_id, m.data FROM organization_members m JOIN organization_identifiers o "
            "ON o.organization_id = m.organization_id WHERE o.external_id = %s",
            (org,),
        ).fetchall()
        assert [str(r[0]) for r in rows] == [old["id"]]
        assert rows[0][1] == {f"m{i}": i for i in range(8)}


def test_user_and_organization_merges_sharing_memberships_run_concurrently(
    client: httpx.Client, server: Server, db: psycopg.Connection[Any]
) -> None:
    """A user merge and an organization merge that move the same membership rows at the same time."""
    for _ in range(10):
        old_u, new_u, old_o, new_o = uid(), uid(), uid("o"), uid("o")
        upsert_user(client, ident(old_u))
        upsert_user(client, ident(new_u))
        upsert_org(client, ident(old_o))
        upsert_org(client, ident(new_o))
        for o in (old_o, new_o):
            for u in (old_u, new_u):
                add_member(client, ident(o), ident(u), {f"{o}": u})
        requests: list[tuple[str, dict[str, Any]]] = [
            ("/client/users", {"identifier": [ident(new_u), ident(old_u)]}),
            ("/client/organizations", {"identifier": [ident(new_o), ident(old_o)]}),
            (
                "/client/organizations/users",
                {"organization": {"identifier": [ident(new_o)]}, "user": {"identifier": [ident(new_u)]}},
            ),
            (
                "/client/organizations/users",
                {"organization": {"identifier": [ident(old_o)]}, "user": {"identifier": [ident(new_u)]}},
            ),
        ]

        async def run(requests: list[tuple[str, dict[str, Any]]] = requests) -> list[httpx.Response]:
            async with httpx.AsyncClient(
                base_url=server.base_url, headers={"Authorization": f"Bearer {server.secret_key}"}, timeout=60
            ) as http:
                return list(await asyncio.gather(*(http.post(p, json=b) for p, b in requests)))

        responses = asyncio.run(run())
        assert_all_200(responses)
        user_id, org_id = user_of(db, old_u), org_of(db, old_o)
        assert user_of(db, new_u) == user_id
        assert org_of(db, new_o) == org_id
        assert list(memberships(db, user_id)) == [org_id]


def test_merges_racing_deletes_of_the_other_side(
    client: httpx.Client, server: Server, db: psycopg.Connection[Any]
) -> None:
    """A merge copies memberships while the organization (user) at their other end is being deleted."""
    for _ in range(10):
        old_u, new_u, old_o, new_o, gone_o, gone_u = uid(), uid(), uid("o"), uid("o"), uid("o"), uid()
        upsert_user(client, ident(old_u))
        upsert_org(client, ident(old_o))
        for o, u in ((gone_o, new_u), (new_o, gone_u), (new_o, new_u)):
            add_member(client, ident(o), ident(u), {})
        requests: list[tuple[str, str, dict[str, Any]]] = [
            ("POST", "/client/users", {"identifier": [ident(new_u), ident(old_u)]}),
            ("DELETE", "/client/organizations", {"identifier": [ident(gone_o)]}),
            ("POST", "/client/organizations", {"identifier": [ident(new_o), ident(old_o)]}),
            ("DELETE", "/client/users", {"identifier": [ident(gone_u)]}),
        ]

        async def run(requests: list[tuple[str, str, dict[str, Any]]] = requests) -> list[httpx.Response]:
            async with httpx.AsyncClient(
                base_url=server.base_url, headers={"Authorization": f"Bearer {server.secret_key}"}, timeout=60
            ) as http:
                return list(await asyncio.gather(*(http.request(m, p, json=b) for m, p, b in requests)))

        responses = asyncio.run(run())
        assert [r.status_code for r in responses] == [200, 204, 200, 204], [r.text for r in responses]
        assert org_of(db, gone_o) is None
        assert user_of(db, gone_u) is None
        user_id, org_id = user_of(db, old_u), org_of(db, old_o)
        assert user_of(db, new_u) == user_id
        assert org_of(db, new_o) == org_id
        assert list(memberships(db, user_id)) == [org_id]


def test_delete_racing_a_merge_still_deletes(client: httpx.Client, server: Server, db: psycopg.Connection[Any]) -> None:
    """A delete that names the profile being merged away deletes the survivor it now belongs to, never 404s."""
    for _ in range(20):
        old_ext, new_ext, new_other = uid(), uid(), uid()
        upsert_user(client, ident(old_ext))
        upsert_user(client, ident(new_ext), ident(new_other))
        requests: list[tuple[str, str, dict[str, Any]]] = [
            ("POST", "/client/users", {"identifier": [ident(old_ext), ident(new_ext)]}),
            ("DELETE", "/client/users", {"identifier": [ident(new_other)]}),
        ]

        async def run(requests: list[tuple[str, str, dict[str, Any]]] = requests) -> list[httpx.Response]:
            async with httpx.AsyncClient(
                base_url=server.base_url, headers={"Authorization": f"Bearer {server.secret_key}"}, timeout=60
            ) as http:
                return list(await asyncio.gather(*(http.request(m, p, json=b) for m, p, b in requests)))

        merged, deleted = asyncio.run(run())
        assert merged.status_code == 200, merged.text
        assert deleted.status_code == 204, deleted.text
        assert user_of(db, new_other) is None


def test_membership_removal_racing_a_merge_still_removes(
    client: httpx.Client, server: Server, db: psycopg.Connection[Any]
) -> None:
    for _ in range(20):
        org, old_ext, new_ext, new_other = uid("o"), uid(), uid(), uid()
        upsert_user(client, ident(old_ext))
        upsert_user(client, ident(new_ext), ident(new_other))
        add_member(client, ident(org), ident(new_ext), {"role": "admin"})
        requests: list[tuple[str, str, dict[str, Any]]] = [
            ("POST", "/client/users", {"identifier": [ident(old_ext), ident(new_ext)]}),
            (
                "DELETE",
                "/client/organizations/users",
                {"organization": {"identifier": [ident(org)]}, "user": {"identifier": [ident(new_other)]}},
            ),
        ]

        async def run(requests: list[tuple[str, str, dict[str, Any]]] = requests) -> list[httpx.Response]:
            async with httpx.AsyncClient(
                base_url=server.base_url, headers={"Authorization": f"Bearer {server.secret_key}"}, timeout=60
            ) as http:
                return list(await asyncio.gather(*(http.request(m, p, json=b) for m, p, b in requests)))

        merged, removed = asyncio.run(run())
        assert merged.status_code == 200, merged.text
        assert removed.status_code == 204, removed.text
        assert memberships(db, user_of(db, old_ext)) == {}
