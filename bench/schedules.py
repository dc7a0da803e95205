"""Scheduler throughput and firing lateness: due schedules fired into the event pipeline by the server.

    .venv/bin/python bench/schedules.py [--schedules 100000] [--recurring] [--users N]
                                        [--rate 200] [--seconds 20] [--skip-burst] [--skip-stream]
                                        [--scheduler-tasks 1] [--batch-size 1000] [--poll-seconds 0.2]
                                        [--worker-tasks 2] [--workers 1] [--py-spy FILE.svg]

Starts its own server on a fresh embedded PostgreSQL (or uses LUNOGRAM_BENCH_URL + LUNOGRAM_BENCH_KEY +
LUNOGRAM_BENCH_DATABASE_URL, configured as it is) with its scheduler and event workers on: the options set
LUNOGRAM_SCHEDULER_TASKS, LUNOGRAM_SCHEDULER_BATCH_SIZE, LUNOGRAM_SCHEDULER_POLL_SECONDS,
LUNOGRAM_EVENT_WORKER_TASKS and LUNOGRAM_WORKERS (every HTTP process runs its own schedulers and workers).
Users with one identifier each are written with SQL beforehand, and the schedules with SQL too; one schedule
created through the API first checks that the SQL stores them as the server does.

1. Burst: `--schedules` schedules (one per user unless `--users` is smaller), all due 1 s ago: one-time, or
   with --recurring every '1 day' anchored then. They are written in one transaction, with ANALYZE in it
   (a running server's table has statistics), and the clock runs from its commit -- the idle scheduler
   finds them all due at its next poll -- until no schedule is due as of then any more (each fired and moved
   on): figure 1, fired/s. With event workers on, figure 1b: until the events have left the inbox for
   user_events. Both are checked: one event per schedule, no more.
2. Steady stream: `--rate` schedules/s falling due over `--seconds` s (written beforehand, the first due 2 s
   after), fired by the running scheduler with its poll. Lateness = last_fired_at (the scheduler's clock
   when it claimed the batch) - anchor_at (the due time as written: these schedules, one-time or recurring,
   are written with anchor_at = next_at, which firing does not change). Figure 2: lateness p50/p99/max; with
   workers on also until in user_events (its created_at: the start of the worker's transaction).

Each phase prints the CPU the server, PostgreSQL and this script used. --py-spy records the server during
the burst (FILE.svg: a flame graph, FILE.txt: collapsed stacks; needs ptrace permission).

Targets (2 cores): 100,000 due schedules fired in < 10 s; stream lateness p99 < 1 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from _harness import CpuMeter, bench_server, external_id, load_average, project_id, seed_users

INTERVAL = "1 day"  # canonical text (intervals.Interval.__str__), as the server stores it
STREAM_LEAD_SECONDS = 2.0  # the stream's first schedule falls due this long after it is written

# `count` schedules for users 0..users-1 (schedule g on user mod(g, users), named <prefix><g / users>, so
# (user_id, name) stays unique), due at first + g * step seconds; anchored there, recurring when interval.
CREATE = """
INSERT INTO schedules (project_id, kind, user_id, identifiers, name, data, anchor_at, interval_text, next_at)
SELECT %(project)s, 'user', i.user_id,
       jsonb_build_array(jsonb_build_object('source', 'default', 'external_id', i.external_id)),
       %(prefix)s || (g / %(users)s)::text,
       jsonb_build_object('plan', 'trial', 'seq', g),
       t.due, %(interval)s, t.due
FROM generate_series(0, %(count)s::int - 1) AS g
CROSS JOIN LATERAL (SELECT %(first)s::timestamptz + g * %(step)s::float8 * interval '1 second' AS due) AS t
JOIN user_identifiers AS i
  ON i.project_id = %(project)s AND i.source = 'default'
 AND i.external_id = 'user_' || lpad(mod(g, %(users)s)::text, 7, '0')
"""
# How far the scheduler has come: is anything of the phase still due as of `upto`?
ANY_DUE = "SELECT EXISTS (SELECT 1 FROM schedules WHERE next_at <= %(upto)s AND name LIKE %(like)s)"
COUNT_DUE = "SELECT count(*) FROM schedules WHERE next_at <= %(upto)s AND name LIKE %(like)s"
INBOX_LEFT = "SELECT EXISTS (SELECT 1 FROM event_inbox WHERE dead_at IS NULL)"
DEAD = "SELECT count(*) FROM event_inbox WHERE dead_at IS NOT NULL"


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank), as the other benchmarks compute it."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def scalar(conn: psycopg.Connection[Any], query: str, params: dict[str, Any] | None = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def table_state(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        "SELECT n_live_tup, n_dead_tup, coalesce(last_autovacuum::text, 'never') FROM pg_stat_user_tables"
        " WHERE relname = 'schedules'"
    ).fetchone()
    return (
        f"schedules table (pg_stat, lags): {row[0]:,} live, {row[1]:,} dead rows, last autovacuum {row[2]}"
        if row
        else ""
    )


def check_probe(conn: psycopg.Connection[Any], server_url: str, key: str, project: str) -> None:
    """One schedule through the API (not due for decades): the SQL fill must store what the server stores."""
    response = httpx.post(
        f"{server_url}/client/users/scheduled",
        json={
            "name": "bench_probe",
            "identifier": [{"external_id": external_id(0)}],
            "scheduled_at": "2099-01-01T00:00:00Z",
            "interval": INTERVAL,
        },
        headers={"Authorization": f"Bearer {key}"},
    )
    if response.status_code != 202:
        raise SystemExit(f"POST /client/users/scheduled answered {response.status_code}: {response.text}")
    row = conn.execute(
        """
        SELECT s.identifiers = jsonb_build_array(jsonb_build_object('source', 'default', 'external_id', %(ext)s)),
               s.user_id = i.user_id, s.interval_text, s.kind
        FROM schedules AS s
        JOIN user_identifiers AS i ON i.project_id = %(project)s AND i.source = 'default' AND i.external_id = %(ext)s
        WHERE s.name = 'bench_probe'
        """,
        {"ext": external_id(0), "project": project},
    ).fetchone()
    if row is None or not (row[0] and row[1] and row[2] == INTERVAL and row[3] == "user"):
        raise SystemExit(f"the SQL fill would differ from the server's schedules (probe row {row}): fix CREATE")
    conn.execute("DELETE FROM schedules WHERE name = 'bench_probe'")


def create(
    conn: psycopg.Connection[Any],
    project: str,
    *,
    prefix: str,
    count: int,
    users: int,
    first: datetime,
    step: float,
    recurring: bool,
) -> None:
    conn.execute(
        CREATE,
        {
            "project": project,
            "prefix": prefix,
            "count": count,
            "users": users,
            "first": first,
            "step": step,
            "interval": INTERVAL if recurring else None,
        },
    )


def start_py_spy(pid: int, output: str) -> subprocess.Popen[bytes]:
    py_spy = Path(sys.executable).with_name("py-spy")
    fmt = "raw" if output.endswith(".txt") else "flamegraph"  # raw: collapsed stacks, one per line
    return subprocess.Popen(
        [str(py_spy), "record", "--pid", str(pid), "--subprocesses", "--rate", "200", "--format", fmt, "-o", output],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop_py_spy(proc: subprocess.Popen[bytes], output: str) -> None:
    proc.send_signal(signal.SIGINT)  # py-spy writes the flame graph on SIGINT
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if not Path(output).exists():
        print(f"  py-spy wrote no profile: {err.decode(errors='replace').strip()[-300:]}")
    else:
        print(f"  py-spy profile of the server during the burst: {output}")


def burst(conn: psycopg.Connection[Any], project: str, roots: dict[str, int], args: argparse.Namespace) -> None:
    kind = f"recurring (every {INTERVAL})" if args.recurring else "one-time"
    like = "burst\\_%"
    spy = start_py_spy(roots["server"], args.py_spy) if args.py_spy else None
    if spy:
        time.sleep(1.0)  # py-spy attaches
    due = datetime.now(UTC) - timedelta(seconds=1)
    t0 = time.perf_counter()
    with conn.transaction():
        create(
            conn,
            project,
            prefix="burst_",
            count=args.schedules,
            users=args.users,
            first=due,
            step=0.0,
            recurring=args.recurring,
        )
        conn.execute("ANALYZE schedules")
        t1 = time.perf_counter()
        meter = CpuMeter(roots)
    committed = time.perf_counter()  # the scheduler may claim them from here on
    committed_at = datetime.now(UTC)
    print(f"burst: {args.schedules:,} {kind} schedules due 1 s ago written in {t1 - t0:.1f}s; {load_average()}")
    last_print = committed
    params = {"upto": due, "like": like}
    while scalar(conn, ANY_DUE, params):
        now = time.perf_counter()
        if now - last_print >= 1:
            left = scalar(conn, COUNT_DUE, params)
            print(f"  {now - committed:5.1f}s: {args.schedules - left:,} fired, {left:,} due")
            last_print = now
        time.sleep(0.01)
    fired_s = time.perf_counter() - committed
    fired_cpu = meter.report()
    if spy:
        stop_py_spy(spy, args.py_spy)
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE fired = 1), count(*) FILTER (WHERE fired > 1), min(last_fired_at),"
        " max(last_fired_at), count(DISTINCT last_fired_at) FROM schedules WHERE name LIKE %(like)s",
        {"like": like},
    ).fetchone()
    assert row is not None  # an aggregate
    once, more, first_claim, last_claim, batches = row
    first_s, last_s = ((at - committed_at).total_seconds() if at else float("nan") for at in (first_claim, last_claim))
    events = scalar(
        conn,
        "SELECT (SELECT count(*) FROM event_inbox WHERE name LIKE %(event)s)"
        " + (SELECT count(*) FROM user_events WHERE name LIKE %(event)s)",
        {"event": "scheduled." + like},
    )
    check = "ok" if once == args.schedules and more == 0 and events == args.schedules else "MISMATCH"
    print(
        f"burst fired: {once:,} of {args.schedules:,} {kind} schedules in {fired_s:.2f}s after the commit = "
        f"{once / fired_s:,.0f} fired/s ({check}: {events:,} events, {more} fired twice); "
        f"{batches:,} batches claimed, the first at {first_s:+.2f}s, the last at {last_s:+.2f}s (scheduler's clock)"
    )
    print(f"  {fired_cpu}")
    if args.worker_tasks == 0:
        return
    while scalar(conn, INBOX_LEFT):
        if scalar(conn, DEAD):
            raise SystemExit("events were parked as dead letters; see the server log")
        time.sleep(0.02)
    delivered_s = time.perf_counter() - committed
    delivered_cpu = meter.report()
    row = conn.execute(
        "SELECT count(*), count(DISTINCT user_id) FROM user_events WHERE name LIKE %(event)s",
        {"event": "scheduled." + like},
    ).fetchone()
    assert row is not None
    check = "ok" if row[0] == args.schedules and row[1] == min(args.users, args.schedules) else "MISMATCH"
    print(
        f"burst delivered: {row[0]:,} scheduled events in user_events ({check}, {row[1]:,} users) "
        f"{delivered_s:.2f}s after the commit = {row[0] / delivered_s:,.0f} events/s end to end"
    )
    print(f"  {delivered_cpu}")


def stream(conn: psycopg.Connection[Any], project: str, roots: dict[str, int], args: argparse.Namespace) -> None:
    count = round(args.rate * args.seconds)
    kind = f"recurring (every {INTERVAL})" if args.recurring else "one-time"
    like = "stream\\_%"
    first = datetime.now(UTC) + timedelta(seconds=STREAM_LEAD_SECONDS)
    last = first + timedelta(seconds=(count - 1) / args.rate)
    create(
        conn,
        project,
        prefix="stream_",
        count=count,
        users=args.users,
        first=first,
        step=1 / args.rate,
        recurring=args.recurring,
    )
    print(f"stream: {count:,} {kind} schedules, {args.rate:g}/s due over {args.seconds:g}s from {first:%H:%M:%S} UTC")
    print(f"  {table_state(conn)}; {load_average()}")
    meter = CpuMeter(roots)
    params = {"upto": last, "like": like}
    last_print = time.perf_counter()
    while datetime.now(UTC) < last or scalar(conn, ANY_DUE, params):
        now = time.perf_counter()
        if now - last_print >= 5:
            fired = scalar(conn, "SELECT count(*) FROM schedules WHERE name LIKE %(like)s AND fired > 0", params)
            elapsed = (datetime.now(UTC) - first).total_seconds()
            print(f"  {elapsed:5.1f}s after the first due: {fired:,} fired")
            last_print = now
        time.sleep(0.05)
    cpu = meter.report()
    rows = conn.execute(
        "SELECT extract(epoch FROM last_fired_at - anchor_at)::float8, fired FROM schedules WHERE name LIKE %(like)s",
        params,
    ).fetchall()
    late = [float(r[0]) for r in rows]
    check = "ok" if len(rows) == count and all(r[1] == 1 for r in rows) else "MISMATCH"
    print(
        f"stream lateness (claimed - due, {len(late):,} schedules, {check}): p50 {percentile(late, 50) * 1000:.0f} ms, "
        f"p90 {percentile(late, 90) * 1000:.0f} ms, p99 {percentile(late, 99) * 1000:.0f} ms, "
        f"max {max(late) * 1000:.0f} ms, min {min(late) * 1000:.0f} ms"
    )
    print(f"  {cpu}")
    if args.worker_tasks == 0:
        return
    while scalar(conn, INBOX_LEFT):
        if scalar(conn, DEAD):
            raise SystemExit("events were parked as dead letters; see the server log")
        time.sleep(0.05)
    delivered = [
        float(r[0])
        for r in conn.execute(
            """
            SELECT extract(epoch FROM e.created_at - s.anchor_at)::float8
            FROM schedules AS s JOIN user_events AS e ON e.user_id = s.user_id AND e.name = 'scheduled.' || s.name
            WHERE s.name LIKE %(like)s
            """,
            params,
        ).fetchall()
    ]
    check = "ok" if len(delivered) == count else "MISMATCH"
    print(
        f"stream lateness until in user_events ({len(delivered):,} events, {check}): "
        f"p50 {percentile(delivered, 50) * 1000:.0f} ms, p99 {percentile(delivered, 99) * 1000:.0f} ms, "
        f"max {max(delivered, default=float('nan')) * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedules", type=int, default=100_000, help="schedules due at once in the burst")
    parser.add_argument("--recurring", action="store_true", help=f"recurring schedules (every {INTERVAL})")
    parser.add_argument("--users", type=int, default=None, help="users they are spread over (default: one each)")
    parser.add_argument("--rate", type=float, default=200.0, help="stream: schedules falling due per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="stream: for this long")
    parser.add_argument("--skip-burst", action="store_true")
    parser.add_argument("--skip-stream", action="store_true")
    parser.add_argument("--scheduler-tasks", type=int, default=1, help="LUNOGRAM_SCHEDULER_TASKS per process")
    parser.add_argument("--batch-size", type=int, default=None, help="LUNOGRAM_SCHEDULER_BATCH_SIZE (default 1000)")
    parser.add_argument("--poll-seconds", type=float, default=None, help="LUNOGRAM_SCHEDULER_POLL_SECONDS (0.2)")
    parser.add_argument("--worker-tasks", type=int, default=2, help="LUNOGRAM_EVENT_WORKER_TASKS per process")
    parser.add_argument("--workers", type=int, default=1, help="LUNOGRAM_WORKERS (HTTP processes)")
    parser.add_argument(
        "--py-spy", metavar="FILE", default=None, help="record the server in the burst: .svg flame graph, .txt stacks"
    )
    args = parser.parse_args()
    stream_count = 0 if args.skip_stream else round(args.rate * args.seconds)
    if args.users is None:
        args.users = max(0 if args.skip_burst else args.schedules, stream_count, 1)
    if args.scheduler_tasks < 1:
        raise SystemExit("--scheduler-tasks must be at least 1: the scheduler is what is measured")
    env = {
        "LUNOGRAM_SCHEDULER_TASKS": str(args.scheduler_tasks),
        "LUNOGRAM_EVENT_WORKER_TASKS": str(args.worker_tasks),
        "LUNOGRAM_WORKERS": str(args.workers),
    }
    if args.batch_size:
        env["LUNOGRAM_SCHEDULER_BATCH_SIZE"] = str(args.batch_size)
    if args.poll_seconds is not None:
        env["LUNOGRAM_SCHEDULER_POLL_SECONDS"] = str(args.poll_seconds)
    with bench_server(env) as server:
        if not server.database_url:
            raise SystemExit("set LUNOGRAM_BENCH_DATABASE_URL with LUNOGRAM_BENCH_URL")
        project = project_id(server.database_url, server.secret_key)
        print(
            f"server: {args.workers} process(es), each {args.scheduler_tasks} scheduler task(s) (batch "
            f"{args.batch_size or 1000}, poll {args.poll_seconds if args.poll_seconds is not None else 0.2}s) "
            f"and {args.worker_tasks} event worker task(s)"
        )
        with psycopg.connect(server.database_url, autocommit=True) as conn:
            t0 = time.perf_counter()
            seed_users(conn, project, args.users, data_sql="jsonb_build_object('plan', 'trial', 'seq', g)")
            conn.execute("VACUUM ANALYZE users")
            conn.execute("VACUUM ANALYZE user_identifiers")
            check_probe(conn, server.base_url, server.secret_key, project)
            print(f"setup: {args.users:,} users in {time.perf_counter() - t0:.1f}s")
            roots = {**server.pids, "bench": os.getpid()}
            if not args.skip_burst:
                burst(conn, project, roots, args)
            if not args.skip_stream:
                stream(conn, project, roots, args)


if __name__ == "__main__":
    main()
