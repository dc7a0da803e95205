"""The set-wise batch upsert (identity/sql/batch.sql), called as db/coalesce.py calls it: each item gets the
answer of its own write, the common items are done for the whole batch, and everything else (duplicates,
several identifiers, metadata, merges) still follows the one-by-one rules."""

from __future__ import annotations

from typing import Any

import orjson
import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from helpers import uid


def new_project(db: psycopg.Connection[Any]) -> str:
    row = db.execute("INSERT INTO projects (name) VALUES (%s) RETURNING id::text", (uid("batch"),)).fetchone()
    assert row is not None
    return str(row[0])


def item(project: str, *external_ids: str, metadata: dict[str, Any] | None = None, **fields: Any) -> list[Any]:
    identifiers: list[dict[str, Any]] = [{"source": "default", "external_id": e} for e in external_ids]
    if metadata is not None:
        identifiers[0]["metadata"] = metadata
    return [project, identifiers, fields]


def batch(db: psycopg.Connection[Any], items: list[list[Any]]) -> list[dict[str, Any]]:
    rows = db.execute("SELECT * FROM lunogram_upsert_users(%s)", (Jsonb(items),)).fetchall()
    return [orjson.loads(row[0]) for row in rows]


def one_by_one(db: psycopg.Connection[Any], items: list[list[Any]]) -> list[dict[str, Any]]:
    return [
        orjson.loads(
            db.execute(
                "SELECT lunogram_upsert_user(%s, %s, %s)::text", (project, Jsonb(identifiers), Jsonb(fields))
            ).fetchone()[0]  # type: ignore[index]
        )
        for project, identifiers, fields in items
    ]


def user_by(db: psycopg.Connection[Any], project: str, external_id: str) -> dict[str, Any]:
    row = db.execute(
        "SELECT lunogram_user_json(user_id)::text FROM user_identifiers WHERE project_id = %s AND external_id = %s",
        (project, external_id),
    ).fetchone()
    assert row is not None, external_id
    return dict(orjson.loads(row[0]))


def test_a_mixed_batch_answers_each_item_in_order(db: psycopg.Connection[Any]) -> None:
    project, elsewhere = new_project(db), new_project(db)
    known, second = uid("known"), uid("second")
    batch(db, [item(project, known, email="a@example.com", data={"plan": "free", "keep": 1})])
    db.execute(
        "INSERT INTO user_identifiers (project_id, user_id, source, external_id) "
        "SELECT project_id, user_id, 'default', %s FROM user_identifiers WHERE external_id = %s",
        (second, known),
    )
    fresh, merged_in, with_metadata = uid("fresh"), uid("merged"), uid("meta")
    items = [
        item(project, known, data={"plan": "pro"}),  # known: set path
        item(project, fresh, locale="nl-NL"),  # new: set path
        item(project, fresh, data={"again": True}),  # same new identifier: one by one, after
        item(project, second, timezone="Europe/Amsterdam"),  # same profile by its other identifier
        item(project, merged_in, known, data={"both": True}),  # several identifiers: attaches merged_in
        item(project, with_metadata, metadata={"device": "ios"}),  # metadata: one by one
        item(elsewhere, known, data={"other": True}),  # same external id, other project: its own user
    ]
    answers = batch(db, items)

    assert [a["identifier"][0]["external_id"] for a in answers[:2]] == [known, fresh]
    assert answers[0]["data"] == {"plan": "pro", "keep": 1}
    assert answers[0]["email"] == "a@example.com"
    assert answers[0]["version"] == 2
    assert answers[1]["locale"] == "nl-NL"
    assert answers[1]["version"] == 1
    assert answers[2]["id"] == answers[1]["id"]
    assert answers[2]["version"] == 2
    assert answers[2]["data"] == {"again": True}
    assert answers[3]["id"] == answers[0]["id"]
    assert answers[3]["timezone"] == "Europe/Amsterdam"
    assert answers[4]["id"] == answers[0]["id"]
    assert {i["external_id"] for i in answers[4]["identifier"]} == {known, second, merged_in}
    assert answers[5]["identifier"][0]["metadata"] == {"device": "ios"}
    assert answers[6]["project_id"] == elsewhere
    assert answers[6]["id"] != answers[0]["id"]

    final = user_by(db, project, known)
    assert final["data"] == {"plan": "pro", "keep": 1, "both": True}
    assert final["timezone"] == "Europe/Amsterdam"
    assert final["version"] == 4
    assert user_by(db, elsewhere, known)["data"] == {"other": True}
    users = db.execute("SELECT count(*) FROM users WHERE project_id = %s", (project,)).fetchone()
    assert users == (3,)  # known, fresh, with_metadata


def test_a_merge_in_the_batch_follows_the_set_path_writes(db: psycopg.Connection[Any]) -> None:
    project = new_project(db)
    anonymous, known = uid("anon"), uid("known")
    db.execute(
        "SELECT lunogram_upsert_user(%s, %s, %s)",
        (project, Jsonb([{"source": "anonymous", "external_id": anonymous}]), Jsonb({"data": {"cart": 2}})),
    )
    batch(db, [item(project, known, data={"plan": "free"})])
    answers = batch(
        db,
        [
            item(project, known, data={"plan": "pro"}),
            [
                project,
                [{"source": "anonymous", "external_id": anonymous}, {"source": "default", "external_id": known}],
                {},
            ],
        ],
    )
    assert answers[0]["data"] == {"plan": "pro"}
    assert answers[1]["id"] == answers[0]["id"]  # the identified profile survives
    assert answers[1]["data"] == {"plan": "pro", "cart": 2}
    assert db.execute("SELECT count(*) FROM users WHERE project_id = %s", (project,)).fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM user_merges WHERE project_id = %s", (project,)).fetchone() == (1,)


def test_an_unchanged_profile_keeps_its_version_and_null_clears_a_field(db: psycopg.Connection[Any]) -> None:
    project = new_project(db)
    name = uid("same")
    batch(db, [item(project, name, email="x@example.com", phone="+31612345678", data={"a": 1})])
    again = batch(db, [item(project, name, email="x@example.com", data={"a": 1})])
    assert again[0]["version"] == 1
    cleared = batch(db, [item(project, name, phone=None, data=None)])
    assert cleared[0]["version"] == 2
    assert "phone" not in cleared[0]  # cleared: left out, never null
    assert cleared[0]["email"] == "x@example.com"
    assert cleared[0]["data"] == {"a": 1}  # data: null changes nothing, as one by one


def test_a_batch_queues_changed_users_for_profile_lists_only(db: psycopg.Connection[Any]) -> None:
    project = new_project(db)
    still, changed, created = uid("still"), uid("changed"), uid("created")
    batch(db, [item(project, still, data={"a": 1}), item(project, changed, data={"a": 1})])
    # uncommitted throughout, so the server's lists loop neither evaluates the list nor takes the queue
    with db.transaction(force_rollback=True):
        db.execute(
            "INSERT INTO lists (project_id, name, kind, rule, uses_profile) VALUES (%s, %s, 'rule', %s, true)",
            (project, uid("list"), Jsonb({"all": []})),
        )
        answers = batch(
            db, [item(project, still, data={"a": 1}), item(project, changed, data={"a": 2}), item(project, created)]
        )
        queued = {
            row[0]
            for row in db.execute("SELECT user_id::text FROM list_pending_users WHERE project_id = %s", (project,))
        }
    assert queued == {answers[1]["id"], answers[2]["id"]}


_fields = st.fixed_dictionaries(
    {},
    optional={
        "email": st.none() | st.sampled_from(["a@example.com", "b@example.com"]),
        "locale": st.none() | st.sampled_from(["en", "nl-NL"]),
        "timezone": st.none() | st.sampled_from(["UTC", "Europe/Amsterdam"]),
        "data": st.none()
        | st.dictionaries(
            st.sampled_from(["a", "b", "c"]),
            # no NUL: PostgreSQL cannot store it in jsonb, and the API refuses it before (http/body.py)
            st.integers(0, 3) | st.none() | st.text(st.characters(exclude_characters="\x00"), max_size=3),
        ),
    },
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.integers(0, 5), _fields), min_size=1, max_size=12, unique_by=lambda t: t[0]),
    st.lists(st.tuples(st.integers(0, 5), _fields), max_size=6, unique_by=lambda t: t[0]),
)
def test_distinct_identifiers_give_what_one_by_one_gives(
    db: psycopg.Connection[Any], first: list[tuple[int, dict[str, Any]]], then: list[tuple[int, dict[str, Any]]]
) -> None:
    """Whatever mix of new and known profiles and of fields: the same answers and the same stored profiles."""
    via_batch, via_each = new_project(db), new_project(db)
    for rounds in (first, then):
        got = batch(db, [item(via_batch, f"p{n}", **fields) for n, fields in rounds])
        want = one_by_one(db, [item(via_each, f"p{n}", **fields) for n, fields in rounds])
        for answer, expected in zip(got, want, strict=True):
            for key in ("email", "locale", "timezone", "data", "version", "phone"):
                assert answer.get(key) == expected.get(key), key  # both leave an unset field out
            assert [i["external_id"] for i in answer["identifier"]] == [
                i["external_id"] for i in expected["identifier"]
            ]


def keyed_batch(db: psycopg.Connection[Any], items: list[list[Any]]) -> list[dict[str, Any]]:
    rows = db.execute("SELECT * FROM lunogram_keyed_upsert_users(%s)", (Jsonb(items),)).fetchall()
    return [orjson.loads(row[0]) for row in rows]


def keyed(project: str, key: str, digest: str, external_id: str, **fields: Any) -> list[Any]:
    return [project, key, digest, [{"source": "default", "external_id": external_id}], fields]


def test_keyed_batches_follow_the_idempotency_rules(db: psycopg.Connection[Any]) -> None:
    project = new_project(db)
    seen, old, expired = uid("seen"), uid("old"), uid("expired")
    first = keyed_batch(db, [keyed(project, "k-old", "aa", old, data={"n": 1})])
    assert first[0]["status"] == 200
    keyed_batch(db, [keyed(project, "k-expired", "cc", expired, data={"n": 1})])
    db.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE project_id = %s AND key = %s",
        (project, "k-expired"),
    )
    answers = keyed_batch(
        db,
        [
            keyed(project, "k-new", "bb", seen, data={"n": 1}),  # claims its key
            keyed(project, "k-new", "bb", seen, data={"n": 1}),  # a retry in the same batch: the same answer
            keyed(project, "k-new", "ff", seen, data={"n": 2}),  # another request under the key: 409
            keyed(project, "k-old", "aa", old, data={"n": 1}),  # a retry of an earlier batch: the stored answer
            keyed(project, "k-expired", "dd", expired, data={"n": 2}),  # an expired key: a new request
        ],
    )
    assert [a["status"] for a in answers] == [200, 200, 409, 200, 200]
    assert answers[1]["body"] == answers[0]["body"]
    assert orjson.loads(answers[0]["body"])["version"] == 1
    assert answers[3]["body"] == first[0]["body"]
    assert orjson.loads(answers[4]["body"])["data"] == {"n": 2}
    assert user_by(db, project, seen)["version"] == 1
    assert user_by(db, project, old)["version"] == 1
    stored = db.execute(
        "SELECT status, convert_from(body, 'UTF8') FROM idempotency_keys WHERE project_id = %s AND key = 'k-new'",
        (project,),
    ).fetchone()
    assert stored is not None
    assert stored[0] == 200
    assert orjson.loads(stored[1]) == orjson.loads(answers[0]["body"])


def raw_batch(db: psycopg.Connection[Any], items: list[list[Any]]) -> list[Any]:
    rows = db.execute("SELECT * FROM lunogram_upsert_users(%s)", (Jsonb(items),)).fetchall()
    return [orjson.loads(row[0]) for row in rows]


def test_a_refused_item_fails_alone_in_its_batch(db: psycopg.Connection[Any]) -> None:
    """Issue 14: data over LUNOGRAM_MAX_PROFILE_DATA_BYTES (after merging) and a public key's merge of two
    identified profiles are refused item by item: the refused item changed nothing, the others are done."""
    project = new_project(db)
    big, known, other = uid("big"), uid("known"), uid("other")
    batch(db, [item(project, known, data={"a": "x" * 200_000}), item(project, other)])
    public_merge = [*item(project, known, other), True]
    answers = raw_batch(
        db,
        [
            item(project, uid("fine"), data={"ok": 1}),
            item(project, big, data={"a": "x" * 300_000}),  # new, over the cap on its own
            item(project, known, data={"b": "y" * 100_000}),  # known, over the cap once merged
            item(project, known, data={"c": 1}),  # the same profile: still done, after the refused one
            public_merge,
            item(project, uid("after"), email="after@example.com"),
        ],
    )
    assert isinstance(answers[0], dict)
    assert answers[1][0] == 413
    assert answers[1][1].startswith("data: ")
    assert answers[2][0] == 413
    assert sorted(answers[3]["data"]) == ["a", "c"]
    assert answers[4][0] == 403
    assert answers[5]["email"] == "after@example.com"
    assert db.execute("SELECT count(*) FROM user_identifiers WHERE external_id = %s", (big,)).fetchone() == (0,)
    assert user_by(db, project, known)["version"] == 2
    assert user_by(db, project, other)["id"] != user_by(db, project, known)["id"]  # not merged


def test_a_refused_keyed_upsert_releases_its_key(db: psycopg.Connection[Any]) -> None:
    project, ext = new_project(db), uid("keyed")
    refused = keyed_batch(db, [keyed(project, "k-big", "aa", ext, data={"a": "x" * 300_000})])
    assert refused[0]["status"] == 413
    assert "LUNOGRAM_MAX_PROFILE_DATA_BYTES" in refused[0]["problem"]
    stored = db.execute("SELECT count(*) FROM idempotency_keys WHERE project_id = %s", (project,)).fetchone()
    assert stored == (0,)  # a refusal is not remembered
    done = keyed_batch(db, [keyed(project, "k-big", "bb", ext, data={"a": 1})])
    assert done[0]["status"] == 200
