"""Rule lists: a full recompute over a large history, and how soon after an event a user enters a list.

    .venv/bin/python bench/lists.py [--users 1000000] [--events 10000000] [--incremental 1000] [--rate 100]
                                    [--no-plan]

Starts its own server on a fresh embedded PostgreSQL (or uses LUNOGRAM_BENCH_URL + LUNOGRAM_BENCH_KEY +
LUNOGRAM_BENCH_DATABASE_URL), one HTTP process, its background loops on. `--users` users (plan free, pro or
enterprise) and `--events` history rows over the last 90 days (purchase, login, view) are written with SQL.
Full recompute: a rule list "pro AND at least 2 purchases in 30 days" is created through the admin API; the
clock runs from the 201 until the list is ready; with --plan, EXPLAIN (ANALYZE, BUFFERS) of its predicate.
Incremental: a list "bench = TAG AND did signup_done", then `--incremental` new users, each sent one
signup_done at `--rate` events/s; per user, list entry minus the event's acceptance (and minus its processing).
Targets (issue 7, 2 cores): full recompute at 1M users / 10M events < 60 s; entry after the event's
processing p99 < 100 ms.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from psycopg import sql
from pydantic import TypeAdapter

from _harness import CpuMeter, bench_server, load_average, project_id, seed_users

USER_DATA = "jsonb_build_object('plan', (ARRAY['free', 'pro', 'enterprise'])[1 + mod(g, 3)], 'age', mod(g, 90))"
NUMBER_USERS = (
    "CREATE TEMP TABLE bench_users AS SELECT (row_number() OVER (ORDER BY id) - 1)::int AS n, id FROM users"
    " WHERE project_id = %(project)s"
)
FILL_EVENTS = """
INSERT INTO user_events (project_id, user_id, inbox_id, name, data, accepted_at, created_at)
SELECT %(project)s, b.id, s.g, s.name,
       CASE WHEN s.name = 'purchase' THEN jsonb_build_object('total', 1 + mod(s.g, 500)) ELSE '{}'::jsonb END,
       s.at, s.at
FROM (SELECT g, mod(abs(hashint8(g)::bigint), %(users)s)::int AS n,
             (ARRAY['purchase', 'login', 'view'])[1 + mod(abs(hashint8(g + 7)::bigint), 3)] AS name,
             now() - random() * interval '90 days' AS at
      FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g) AS s
JOIN bench_users AS b ON b.n = s.n
"""
RULE: dict[str, Any] = {
    "type": "all",
    "rules": [
        {"type": "property", "path": "data.plan", "op": "equals", "value": "pro"},
        {
            "type": "event",
            "name": "purchase",
            "count": {"op": "at_least", "value": 2},
            "within": {"value": 30, "unit": "days"},
        },
    ],
}
DELAYS = """
SELECT count(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY d_acc), percentile_cont(0.99) WITHIN GROUP (ORDER BY d_acc),
       max(d_acc),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY d_proc), percentile_cont(0.99) WITHIN GROUP (ORDER BY d_proc),
       max(d_proc)
FROM (SELECT extract(epoch FROM c.at - e.accepted_at) * 1000 AS d_acc,
             extract(epoch FROM c.at - e.created_at) * 1000 AS d_proc
      FROM list_changes AS c JOIN user_events AS e ON e.user_id = c.user_id AND e.name = 'signup_done'
      WHERE c.list_id = %(list_id)s AND c.change = 'entered') AS d
"""


def seed(conn: psycopg.Connection[Any], project: str, args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    for start in range(0, args.users, args.user_chunk):
        seed_users(conn, project, min(args.user_chunk, args.users - start), data_sql=USER_DATA, start=start)
    t1 = time.perf_counter()
    conn.execute(NUMBER_USERS, {"project": project})
    conn.execute("ALTER TABLE bench_users ADD PRIMARY KEY (n)")
    conn.execute("ANALYZE bench_users")
    for first in range(1, args.events + 1, args.event_chunk):
        last = min(first + args.event_chunk - 1, args.events)
        conn.execute(FILL_EVENTS, {"project": project, "users": args.users, "first": first, "last": last})
    conn.execute("DROP TABLE bench_users")
    t2 = time.perf_counter()
    for table in ("users", "user_events", "user_identifiers"):
        conn.execute(f"ANALYZE {table}")
    t3 = time.perf_counter()
    print(
        f"seed: {args.users:,} users in {t1 - t0:.1f}s, {args.events:,} history rows in {t2 - t1:.1f}s, "
        f"analyze {t3 - t2:.1f}s"
    )


def create_list(client: httpx.Client, name: str, rule: dict[str, Any]) -> tuple[str, float]:
    """(the list's id, when the 201 arrived)."""
    response = client.post("/admin/lists", json={"name": name, "rule": rule})
    answered = time.perf_counter()
    response.raise_for_status()
    return str(response.json()["id"]), answered


def wait_ready(client: httpx.Client, list_id: str) -> dict[str, Any]:
    while True:
        detail: dict[str, Any] = client.get(f"/admin/lists/{list_id}").raise_for_status().json()
        if detail["state"] == "ready":
            return detail
        if detail["state"] == "failed":
            print(f"list {list_id} failed: {detail['error']}")
            sys.exit(1)
        time.sleep(0.1)


def full_recompute(client: httpx.Client, conn: psycopg.Connection[Any], project: str, args: Any, roots: Any) -> None:
    print(f"before: {load_average()}")
    meter = CpuMeter(roots)
    list_id, answered = create_list(client, "bench: pro buyers", RULE)
    detail = wait_ready(client, list_id)
    elapsed = time.perf_counter() - answered
    print(
        f"full recompute ({args.users:,} users, {args.events:,} history rows): ready {elapsed:.2f}s after the 201, "
        f"{detail['member_count']:,} members"
    )
    print(meter.report())
    if not args.plan:
        return
    from lunogram_server.lists.rules import Node, compile_rule

    predicate = compile_rule(TypeAdapter(Node).validate_python(RULE))
    query = sql.SQL("SELECT count(*) FROM users AS u WHERE u.project_id = %(project_id)s AND {}").format(predicate)
    explain = sql.SQL("EXPLAIN (ANALYZE, BUFFERS) {}").format(query)
    rows = conn.execute(explain, {"project_id": project, "now": datetime.now(UTC)}).fetchall()
    print("plan of the rule's predicate:")
    for (line,) in rows:
        print(f"  {line}")


def incremental(client: httpx.Client, conn: psycopg.Connection[Any], args: Any, roots: Any) -> None:
    tag = uuid.uuid4().hex[:12]
    rule = {
        "type": "all",
        "rules": [
            {"type": "property", "path": "data.bench", "op": "equals", "value": tag},
            {"type": "event", "name": "signup_done"},
        ],
    }
    list_id, _ = create_list(client, f"bench: signup {tag}", rule)
    wait_ready(client, list_id)
    t0 = time.perf_counter()
    for n in range(args.incremental):
        body = {"identifier": [{"external_id": f"inc_{tag}_{n}"}], "data": {"bench": tag}}
        client.post("/client/users", json=body).raise_for_status()
    print(f"incremental: {args.incremental:,} users created through the API in {time.perf_counter() - t0:.1f}s")
    meter = CpuMeter(roots)
    interval = 1 / args.rate
    start = due = time.perf_counter()
    for n in range(args.incremental):
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        due += interval
        event = [{"name": "signup_done", "identifier": [{"external_id": f"inc_{tag}_{n}"}], "data": {}}]
        client.post("/client/users/events", json=event).raise_for_status()
    sent = time.perf_counter() - start
    print(f"incremental: {args.incremental:,} events sent in {sent:.1f}s = {args.incremental / sent:,.0f} events/s")
    deadline = time.perf_counter() + args.timeout
    members = 0
    while time.perf_counter() < deadline:
        row = conn.execute("SELECT count(*) FROM list_members WHERE list_id = %s", (list_id,)).fetchone()
        members = int(row[0]) if row else 0
        if members >= args.incremental:
            break
        time.sleep(0.1)
    if members == 0:
        print(f"incremental: no entries after {args.timeout:.0f} s (not implemented yet?)")
        return
    if members < args.incremental:
        print(f"incremental: only {members:,} of {args.incremental:,} users entered within {args.timeout:.0f} s")
    row = conn.execute(DELAYS, {"list_id": list_id}).fetchone()
    assert row is not None
    count, *ms = (row[0], *(float(v) for v in row[1:]))
    print(
        f"incremental ({count:,} entries, events at {args.rate:,.0f}/s): entry after acceptance p50 {ms[0]:.0f} ms, "
        f"p99 {ms[1]:.0f} ms, max {ms[2]:.0f} ms; after processing p50 {ms[3]:.0f} ms, p99 {ms[4]:.0f} ms, "
        f"max {ms[5]:.0f} ms"
    )
    print(meter.report())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000, help="history rows over the last 90 days")
    parser.add_argument("--user-chunk", type=int, default=100_000, help="users per seeding statement")
    parser.add_argument("--event-chunk", type=int, default=1_000_000, help="history rows per seeding statement")
    parser.add_argument("--incremental", type=int, default=1_000, help="users who enter the second list")
    parser.add_argument("--rate", type=float, default=100.0, help="their events per second")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the last entries")
    parser.add_argument("--plan", action=argparse.BooleanOptionalAction, default=True, help="EXPLAIN the rule")
    args = parser.parse_args()
    with bench_server({"LUNOGRAM_WORKERS": "1"}) as server:
        if not server.database_url:
            raise SystemExit("set LUNOGRAM_BENCH_DATABASE_URL with LUNOGRAM_BENCH_URL")
        project = project_id(server.database_url, server.secret_key)
        headers = {"Authorization": f"Bearer {server.secret_key}"}
        with (
            psycopg.connect(server.database_url, autocommit=True) as conn,
            httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client,
        ):
            seed(conn, project, args)
            full_recompute(client, conn, project, args, server.pids)
            incremental(client, conn, args, server.pids)


if __name__ == "__main__":
    main()
