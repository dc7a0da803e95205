"""Issue 14, findings 3 and 7 (and 8's rule errors): CSV imports that stalled every project, and limits that
lists, rules and broadcasts lacked."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import psycopg
import pytest

from helpers import Server, ident, loopback_client, uid, wait_until
from lunogram_server.lists.rules import Property, compile_property


def create_list(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/admin/lists", json={"name": uid("list"), **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


def post_csv(client: httpx.Client, list_id: str, text: bytes) -> httpx.Response:
    return client.post(f"/admin/lists/{list_id}/imports", content=text, headers={"Content-Type": "text/csv"})


class HealthProbe:
    """GET /healthz over and over on its own connection; the slowest answer while it ran."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.seconds: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with loopback_client(base_url=self.server.root_url, timeout=30) as http:
            while not self._stop.is_set():
                start = time.perf_counter()
                assert http.get("/healthz").status_code == 200
                self.seconds.append(time.perf_counter() - start)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        wait_until(lambda: len(self.seconds) >= 5, what="healthz answering")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def timed_import(server: Server, client: httpx.Client, list_id: str, text: bytes) -> tuple[httpx.Response, float]:
    """The import's answer, and the slowest /healthz answer while it ran. Measured a second time when the
    first is over 100 ms: with the whole suite on two cores, one answer in a few hundred was once delayed to
    107 ms by the machine (quiet, the slowest is 25-40 ms); an import that stalls the event loop (seconds,
    as before the fix) is slow both times."""
    slowest = 0.0
    for _ in range(2):
        with HealthProbe(server) as probe:
            counted = len(probe.seconds)
            response = post_csv(client, list_id, text)
            # the probe answered during the import: its slowest answer then is what the import cost others
            wait_until(lambda at=counted: len(probe.seconds) > at + 2, what="healthz after the import")
        slowest = max(probe.seconds[counted:])
        if slowest < 0.1:
            break
    return response, slowest


def test_a_40000_column_header_is_refused_fast_and_healthz_answers(server: Server, client: httpx.Client) -> None:
    """Before: 202 after 16 s (duplicate names were counted over the whole header for each name), during
    which /healthz did not answer."""
    made = create_list(client)
    header = ",".join(["external_id", *(f"column_{n:05d}" for n in range(40_000))])
    text = f"{header}\nx{',v' * 40_000}\n".encode()
    start = time.perf_counter()
    response, slowest = timed_import(server, client, made["id"], text)
    took = time.perf_counter() - start
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == "header: 40001 columns; at most 1000 are accepted"
    print(f"40,000 columns: refused in {took * 1000:.0f} ms, slowest /healthz {slowest * 1000:.1f} ms")
    assert slowest < 0.1
    assert took < 5


def test_long_column_names_are_refused_by_name(client: httpx.Client) -> None:
    """Before: a 5.2 MB file of 10,000 columns of 250-character names was a 500 after 22 s (each row's jsonb
    repeated every name)."""
    made = create_list(client)
    names = [f"{n:05d}".ljust(250, "c") for n in range(10_000)]
    row = "x" + ",v" * 10_000
    text = ("\n".join([",".join(["external_id", *names]), *([row] * 100)]) + "\n").encode()
    start = time.perf_counter()
    response = post_csv(client, made["id"], text)
    assert response.status_code == 400, response.text
    assert "at most 1000 are accepted" in response.json()["detail"]
    assert time.perf_counter() - start < 5
    named = post_csv(client, made["id"], f"external_id,{'n' * 256}\nx,1\n".encode())
    assert named.status_code == 400
    assert "longer than 255 characters" in named.json()["detail"]


def test_a_large_import_keeps_healthz_answering_and_is_stored_compactly(
    server: Server, client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """1,000 columns of 100-character names, 120 rows of 40-character cells (~5 MB): parsed in a thread,
    stored with the names once."""
    made = create_list(client)
    tag = uid("wide")
    names = [f"{n:04d}".ljust(100, "c") for n in range(999)]
    rows = [",".join([f"{tag}-{r}", *(f"{(r + n) % 10}".ljust(40, "v") for n in range(999))]) for r in range(120)]
    text = ("\n".join([",".join(["external_id", *names]), *rows]) + "\n").encode()
    assert 4_500_000 < len(text) < 5 * 1024 * 1024
    response, slowest = timed_import(server, client, made["id"], text)
    assert response.status_code == 202, response.text
    print(f"{len(text) / 1e6:.1f} MB import: slowest /healthz {slowest * 1000:.1f} ms")
    assert slowest < 0.1
    stored = db.execute(
        "SELECT pg_column_size(rows), cardinality(columns) FROM list_imports WHERE id = %s", (response.json()["id"],)
    ).fetchone()
    assert stored is not None
    assert stored[1] == 999
    assert stored[0] < len(text)  # one data object per row would hold every name again: +12 MB
    done = wait_until(
        lambda: (
            (s := client.get(f"/admin/lists/{made['id']}/imports/{response.json()['id']}").json())["status"] == "done"
            and s
        ),
        timeout=120,
        what="import applied",
    )
    assert done["imported"] == 120
    user = client.get("/admin/users", params={"external_id": f"{tag}-7"}).json()
    assert len(user["data"]) == 999
    assert user["data"][names[3]] == "0".ljust(40, "v")


def test_a_row_whose_data_cannot_fit_a_profile_is_reported_by_line(client: httpx.Client) -> None:
    made = create_list(client)
    tag = uid("big")
    big = "x" * 100_000
    text = f"external_id,a,b,c\n{tag}-1,1,2,3\n{tag}-2,{big},{big},{big}\n".encode()
    response = post_csv(client, made["id"], text)
    assert response.status_code == 202, response.text
    assert response.json()["total_rows"] == 2
    [error] = response.json()["errors"]
    assert error["line"] == 3
    assert error["error"].startswith("data: at least 300")
    assert error["error"].endswith("a user's data holds at most 262144 (LUNOGRAM_MAX_PROFILE_DATA_BYTES)")


# Finding 7: rules


def event_condition(n: int, where: int) -> dict[str, Any]:
    conditions = [{"type": "property", "path": f"data.k{w}", "op": "exists"} for w in range(where)]
    return {"type": "event", "name": f"e{n}", "where": conditions}


def test_where_conditions_count_toward_the_condition_limit(client: httpx.Client) -> None:
    """Before: 50 event conditions with 20 `where` each counted 51, and cost seconds per matching event."""
    heavy = {"type": "any", "rules": [event_condition(n, 20) for n in range(10)]}  # 1 + 10 + 200
    response = client.post("/admin/lists", json={"name": "heavy", "rule": heavy})
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("rule: more than 200 conditions (`where` conditions count too)")
    fits = {"type": "any", "rules": [event_condition(n, 18) for n in range(10)]}  # 1 + 10 + 180
    assert client.post("/admin/lists", json={"name": "fits", "rule": fits}).status_code == 201


def test_in_values_are_limited_in_all(client: httpx.Client) -> None:
    many = {
        "type": "any",
        "rules": [{"type": "property", "path": f"data.k{n}", "op": "in", "value": list(range(600))} for n in range(2)],
    }
    response = client.post("/admin/lists", json={"name": "many", "rule": many})
    assert response.status_code == 400, response.text
    assert "more than 1000 values in `in` lists in all, at rule.rules[1]" in response.json()["detail"]


@pytest.mark.parametrize(
    ("rule", "detail"),
    [
        (
            {"type": "event", "name": "x", "where": [{"type": "property", "path": "data.a..b", "op": "exists"}]},
            "rule.where[0].path: must be data.<key>",
        ),
        (
            {"type": "organization", "where": [{"type": "property", "path": "nope", "op": "exists"}]},
            "rule.where[0].path: must be name, or data.<key>",
        ),
        (
            {
                "type": "all",
                "rules": [event_condition(0, 1) | {"where": [{"type": "property", "path": "data.", "op": "exists"}]}],
            },
            "rule.rules[0].where[0].path:",
        ),
    ],
)
def test_rule_errors_name_the_node_by_its_path(client: httpx.Client, rule: dict[str, Any], detail: str) -> None:
    """Before: `rule..where[0].path` and `rule.rule: more than 200 conditions`."""
    response = client.post("/admin/lists", json={"name": "bad", "rule": rule})
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(detail), response.json()["detail"]
    assert ".." not in response.json()["detail"].split(":")[0]


def test_in_null_is_refused_and_never_compared_as_none(client: httpx.Client) -> None:
    rule = {"type": "property", "path": "email", "op": "in", "value": [None, "a@example.com"]}
    response = client.post("/admin/lists", json={"name": "nulls", "rule": rule})
    assert response.status_code == 400, response.text
    assert "not null (use not_exists for absence)" in response.json()["detail"]
    # a rule stored before the check compiles null (and objects, which no column holds) to SQL NULL, equal
    # to nothing: never to the text 'None'
    stored = Property.model_construct(type="property", path="email", op="in", value=[None, {"a": 1}, "x"])
    compiled = compile_property("u", stored).as_string(None)
    assert "None" not in compiled
    assert "'a'" not in compiled


def test_lists_cannot_refer_to_each_other_in_a_cycle(client: httpx.Client) -> None:
    """Before: A = member of B, B = not member of A was accepted."""
    b = create_list(client, rule={"type": "property", "path": "email", "op": "exists"})
    a = create_list(client, rule={"type": "list", "list_id": b["id"]})
    c = create_list(client, rule={"type": "list", "list_id": a["id"], "member": False})
    direct = client.patch(
        f"/admin/lists/{b['id']}", json={"rule": {"type": "list", "list_id": a["id"], "member": False}}
    )
    assert direct.status_code == 400, direct.text
    assert f"({b['id']} -> {a['id']} -> {b['id']})" in direct.json()["detail"]
    through = client.patch(f"/admin/lists/{b['id']}", json={"rule": {"type": "list", "list_id": c["id"]}})
    assert through.status_code == 400, through.text
    assert f"({b['id']} -> {c['id']} -> {a['id']} -> {b['id']})" in through.json()["detail"]
    assert client.get(f"/admin/lists/{b['id']}").json()["rule_version"] == b["rule_version"]
    # referring to a list that does not lead back is fine
    other = create_list(client, rule={"type": "property", "path": "phone", "op": "exists"})
    assert client.patch(f"/admin/lists/{b['id']}", json={"rule": {"type": "list", "list_id": other["id"]}}).is_success


def test_a_list_cannot_be_renamed_blank(client: httpx.Client) -> None:
    made = create_list(client)
    response = client.patch(f"/admin/lists/{made['id']}", json={"name": "   "})
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == "name: must not be blank"
    assert client.get(f"/admin/lists/{made['id']}").json()["name"] == made["name"]


def test_an_empty_match_is_refused(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    """Before: 100 events with `match: {}` made 505,000 history rows in one request."""
    name = uid("everyone")
    batch = [{"name": name, "identifier": [ident(uid())]}, {"name": name, "match": {}}]
    response = client.post("/client/users/events", json=batch)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("[1].match: must not be empty; use a non-empty match")
    assert db.execute("SELECT count(*) FROM event_inbox WHERE name = %s", (name,)).fetchone() == (0,)
    assert client.post("/client/users/events", json=[{"name": name, "match": {"plan": "none"}}]).status_code == 202
