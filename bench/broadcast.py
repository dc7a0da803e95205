"""Match broadcast fan-out: one `match` event posted through the API, delivered to every matching user.

    .venv/bin/python bench/broadcast.py [--users 100000] [--others 25000] [--broadcast-chunk 5000]
                                        [--worker-tasks 2] [--workers 1]

Starts its own server on a fresh embedded PostgreSQL (or uses LUNOGRAM_BENCH_URL + LUNOGRAM_BENCH_KEY +
LUNOGRAM_BENCH_DATABASE_URL), with its event workers on. `--users` users whose data matches and `--others`
that do not are written with SQL beforehand; then one event with `match` is posted and the clock runs from
the 202 until the broadcast has left the inbox (every target has it in user_events, which is then checked).
Target: 100,000 targets in < 10 s.
"""

from __future__ import annotations

import argparse
import os
import time

import httpx
import psycopg

from _harness import CpuMeter, bench_server, load_average, project_id, seed_users

MATCHING = (
    "jsonb_build_object('plan', 'pro', 'country', (ARRAY['NL', 'DE', 'US', 'FR', 'GB'])[1 + mod(g, 5)], "
    "'seats', 1 + mod(g, 40), 'newsletter', mod(g, 2) = 0)"
)
OTHERS = (
    "jsonb_build_object('plan', (ARRAY['free', 'enterprise'])[1 + mod(g, 2)], "
    "'country', (ARRAY['NL', 'DE', 'US', 'FR', 'GB'])[1 + mod(g, 5)], 'seats', 1 + mod(g, 40))"
)
EVENT = {
    "name": "plan_price_changed",
    "match": {"plan": "pro"},
    "data": {"old_price": 29.0, "new_price": 25.0, "currency": "EUR", "effective": "2025-07-01"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000, help="users the match selects")
    parser.add_argument("--others", type=int, default=25_000, help="users it does not select")
    parser.add_argument("--broadcast-chunk", type=int, default=None, help="LUNOGRAM_BROADCAST_CHUNK (default 5000)")
    parser.add_argument("--worker-tasks", type=int, default=2, help="LUNOGRAM_EVENT_WORKER_TASKS per process")
    parser.add_argument("--workers", type=int, default=1, help="LUNOGRAM_WORKERS (HTTP processes)")
    args = parser.parse_args()
    env = {"LUNOGRAM_EVENT_WORKER_TASKS": str(args.worker_tasks), "LUNOGRAM_WORKERS": str(args.workers)}
    if args.broadcast_chunk:
        env["LUNOGRAM_BROADCAST_CHUNK"] = str(args.broadcast_chunk)
    with bench_server(env) as server:
        if not server.database_url:
            raise SystemExit("set LUNOGRAM_BENCH_DATABASE_URL with LUNOGRAM_BENCH_URL")
        project = project_id(server.database_url, server.secret_key)
        with psycopg.connect(server.database_url, autocommit=True) as conn:
            t0 = time.perf_counter()
            seed_users(conn, project, args.users, data_sql=MATCHING)
            if args.others:
                seed_users(conn, project, args.others, data_sql=OTHERS, start=args.users)
            conn.execute("VACUUM ANALYZE users")
            conn.execute("VACUUM ANALYZE user_identifiers")
            print(f"setup: {args.users:,} matching + {args.others:,} other users in {time.perf_counter() - t0:.1f}s")
            print(f"before: {load_average()}")
            meter = CpuMeter({**server.pids, "bench": os.getpid()})
            response = httpx.post(
                f"{server.base_url}/client/users/events",
                json=[EVENT],
                headers={"Authorization": f"Bearer {server.secret_key}"},
            )
            accepted = time.perf_counter()
            if response.status_code != 202:
                raise SystemExit(f"POST answered {response.status_code}: {response.text}")
            last_print = accepted
            while True:
                row = conn.execute("SELECT count(*) FROM event_inbox WHERE match IS NOT NULL AND dead_at IS NULL")
                left = row.fetchone()
                now = time.perf_counter()
                if left is not None and left[0] == 0:
                    break
                if now - last_print >= 1:
                    written = conn.execute("SELECT count(*) FROM user_events").fetchone()
                    print(f"  {now - accepted:5.1f}s: {written[0] if written else 0:,} delivered")
                    last_print = now
                dead = conn.execute("SELECT count(*) FROM event_inbox WHERE dead_at IS NOT NULL").fetchone()
                if dead and dead[0]:
                    raise SystemExit("the broadcast was parked as a dead letter; see the server log")
                time.sleep(0.02)
            elapsed = time.perf_counter() - accepted
            cpu = meter.report()
            delivered = conn.execute(
                "SELECT count(*), count(DISTINCT user_id) FROM user_events WHERE name = %s", (EVENT["name"],)
            ).fetchone()
    count = delivered[0] if delivered else 0
    chunk = args.broadcast_chunk or 5000
    status = "all targets" if count == args.users else f"MISMATCH: expected {args.users:,}"
    print(
        f"broadcast ({args.users:,} targets of {args.users + args.others:,} users, chunk {chunk:,}, "
        f"{args.worker_tasks} worker tasks x {args.workers} processes): delivered {count:,} ({status}) "
        f"in {elapsed:.2f}s after the 202 = {count / elapsed:,.0f} targets/s"
    )
    print(cpu)


if __name__ == "__main__":
    main()
