"""The web console at scale: server time of its heaviest pages with 1,000,000 users and 10,000,000 events.

    .venv/bin/python bench/console.py [--users 1000000] [--events 10000000] [--requests 300]

Starts its own server on a fresh embedded PostgreSQL (or uses LUNOGRAM_BENCH_URL + LUNOGRAM_BENCH_KEY +
LUNOGRAM_BENCH_DATABASE_URL). `--users` users (e-mail `user_<n>@example.com`, data `{plan, age}`) and
`--events` history rows are written with SQL (generate_series); one user gets 1,000 more events. A rule list
(plan = pro: a third of the users) and a static list are made through the admin API. A console owner signs
in; then each page is requested `--requests` times, one at a time over one keep-alive connection, and the
time from request to the last byte of the answer is reported (p50, p99): the overview, user search (identifier
prefix, e-mail prefix, data `plan=pro`, a data value nobody has), the profile of the user with 1,000 events,
the lists page and the big list's page (its member count and first members).
Target (issue 17, 2 cores): p99 < 200 ms each.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from typing import Any

import httpx
import psycopg
from argon2 import PasswordHasher

from _harness import CpuMeter, bench_server, load_average, machine_speed, project_id

PASSWORD = "bench console password"
EMAIL = "bench-owner@example.com"
SEED_USERS = """
WITH u AS (
    INSERT INTO users (project_id, email, data)
    SELECT %(project)s, 'user_' || lpad(g::text, 7, '0') || '@example.com',
           jsonb_build_object('plan', (ARRAY['free', 'pro', 'enterprise'])[1 + mod(g, 3)], 'age', mod(g, 90))
    FROM generate_series(%(first)s::int, %(last)s::int) AS g
    RETURNING id, email
)
INSERT INTO user_identifiers (project_id, user_id, source, external_id)
SELECT %(project)s, id, 'default', split_part(email, '@', 1) FROM u
"""
NUMBER_USERS = (
    "CREATE TEMP TABLE bench_users AS SELECT (row_number() OVER (ORDER BY id) - 1)::int AS n, id FROM users"
    " WHERE project_id = %(project)s"
)
FILL_EVENTS = """
INSERT INTO user_events (project_id, user_id, inbox_id, name, data, accepted_at, created_at)
SELECT %(project)s, b.id, s.g, s.name, jsonb_build_object('n', s.g), s.at, s.at
FROM (SELECT g, mod(abs(hashint8(g)::bigint), %(users)s)::int AS n,
             (ARRAY['purchase', 'login', 'view', 'signup'])[1 + mod(abs(hashint8(g + 7)::bigint), 4)] AS name,
             now() - random() * interval '90 days' AS at
      FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g) AS s
JOIN bench_users AS b ON b.n = s.n
"""
HEAVY_EVENTS = """
INSERT INTO user_events (project_id, user_id, inbox_id, name, data, accepted_at, created_at)
SELECT %(project)s, %(user)s, %(base)s + g, 'page_viewed', jsonb_build_object('path', '/page/' || g),
       now() - g * interval '1 minute', now() - g * interval '1 minute'
FROM generate_series(1, 1000) AS g
"""
ADD_OWNER = """
WITH u AS (
    INSERT INTO console_users (email, name, password_hash, superuser) VALUES (%(email)s, 'Bench', %(hash)s, true)
    ON CONFLICT (email) DO UPDATE SET password_hash = excluded.password_hash RETURNING id
)
SELECT id FROM u
"""


def seed(database_url: str, project: str, users: int, events: int) -> str:
    """Users and events by SQL; returns the id of the user with 1,000 extra events."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        started = time.monotonic()
        chunk = 100_000
        for first in range(0, users, chunk):
            conn.execute(SEED_USERS, {"project": project, "first": first, "last": min(users, first + chunk) - 1})
        print(f"  {users:,} users in {time.monotonic() - started:.0f} s", flush=True)
        started = time.monotonic()
        conn.execute(NUMBER_USERS, {"project": project})
        conn.execute("CREATE INDEX ON bench_users (n)")
        chunk = 1_000_000
        for first in range(1, events + 1, chunk):
            last = min(events, first + chunk - 1)
            conn.execute(FILL_EVENTS, {"project": project, "users": users, "first": first, "last": last})
            print(f"  {last:,} events ({time.monotonic() - started:.0f} s)", flush=True)
        heavy = conn.execute("SELECT id FROM bench_users WHERE n = 4242").fetchone()
        assert heavy is not None
        conn.execute(HEAVY_EVENTS, {"project": project, "user": heavy[0], "base": events + 10})
        started = time.monotonic()
        conn.execute("VACUUM ANALYZE users, user_identifiers, user_events")
        print(f"  vacuum analyze in {time.monotonic() - started:.0f} s", flush=True)
        return str(heavy[0])


def sign_in(base: str, database_url: str) -> httpx.Client:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(ADD_OWNER, {"email": EMAIL, "hash": PasswordHasher().hash(PASSWORD)})
    http = httpx.Client(base_url=base, timeout=60)
    page = http.get("/console/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token, page.text[:500]
    signed = http.post(
        "/console/login", data={"email": EMAIL, "password": PASSWORD, "login_token": token.group(1), "next": "/console"}
    )
    assert signed.status_code == 303, signed.text[:500]
    return http


def make_lists(http: httpx.Client, key: str) -> tuple[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    rule = {"type": "property", "path": "data.plan", "op": "equals", "value": "pro"}
    big = http.post("/api/admin/lists", json={"name": "Pro users", "rule": rule}, headers=headers).json()
    static = http.post("/api/admin/lists", json={"name": "Hand-picked"}, headers=headers).json()
    started = time.monotonic()
    while http.get(f"/api/admin/lists/{big['id']}", headers=headers).json()["state"] != "ready":
        time.sleep(1)
    count = http.get(f"/api/admin/lists/{big['id']}", headers=headers).json()["member_count"]
    print(f"  rule list of {count:,} members computed in {time.monotonic() - started:.0f} s", flush=True)
    return str(big["id"]), str(static["id"])


def measure(http: httpx.Client, label: str, paths: list[str], requests: int) -> dict[str, Any]:
    for path in paths[:3]:  # warm: plans cached, pages read once
        http.get(path)
    times: list[float] = []
    for n in range(requests):
        path = paths[n % len(paths)]
        started = time.perf_counter()
        answer = http.get(path)
        times.append(time.perf_counter() - started)
        if answer.status_code != 200:
            raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:300]}")
    ordered = sorted(times)
    p50, p99 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    verdict = "ok" if p99 < 0.2 else "OVER TARGET"
    mean = statistics.fmean(times)
    print(
        f"{label:<44} p50 {p50 * 1000:6.1f} ms   p99 {p99 * 1000:6.1f} ms   mean {mean * 1000:6.1f} ms"
        f"   ({requests} requests)  {verdict}",
        flush=True,
    )
    return {"label": label, "p50": p50, "p99": p99}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    print(f"bench/console.py: {args.users:,} users, {args.events:,} events; {machine_speed()}; {load_average()}")
    with bench_server() as server:
        if server.database_url is None:
            sys.exit("LUNOGRAM_BENCH_DATABASE_URL is needed with LUNOGRAM_BENCH_URL")
        project = project_id(server.database_url, server.secret_key)
        heavy = seed(server.database_url, project, args.users, args.events)
        base = server.base_url.removesuffix("/api")
        http = sign_in(base, server.database_url)
        big, static = make_lists(http, server.secret_key)
        rng = random.Random(17)
        prefixes = [f"user_{rng.randrange(args.users):07d}"[: rng.choice([8, 9, 10, 12])] for _ in range(50)]
        emails = [f"user_{rng.randrange(args.users):07d}@example.com"[: rng.choice([13, 16, 20])] for _ in range(50)]
        meter = CpuMeter(server.pids) if server.pids else None
        print(f"server time, sequential requests on loopback, signed in as a console owner; {load_average()}")
        results = [
            measure(http, "overview (/console)", ["/console"], args.requests),
            measure(
                http,
                "user search: identifier prefix",
                [f"/console/users/results?q={p}" for p in prefixes],
                args.requests,
            ),
            measure(
                http, "user search: e-mail prefix", [f"/console/users/results?q={e}" for e in emails], args.requests
            ),
            measure(
                http, "user search: data plan=pro (1/3 match)", ["/console/users/results?q=plan%3Dpro"], args.requests
            ),
            measure(http, "user search: data nobody has", ["/console/users/results?q=plan%3Dnone"], args.requests),
            measure(http, "user search page (newest users)", ["/console/users"], args.requests),
            measure(http, "profile of a user with 1,000 events", [f"/console/users/{heavy}"], args.requests),
            measure(http, "lists page", ["/console/lists"], args.requests),
            measure(http, f"list page ({args.users // 3:,} members)", [f"/console/lists/{big}"], args.requests),
            measure(http, "list page (static, empty)", [f"/console/lists/{static}"], args.requests),
        ]
        if meter is not None:
            print(meter.report())
        over = [r["label"] for r in results if r["p99"] >= 0.2]
        print("all p99 < 200 ms" if not over else f"over the 200 ms target: {', '.join(over)}")


if __name__ == "__main__":
    main()
