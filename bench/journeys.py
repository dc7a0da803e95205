"""Journeys: how fast events enter runs, and how fast one worker process moves runs along.

    .venv/bin/python bench/journeys.py [--rate 1000] [--seconds 10] [--batch 10] [--runs 100000]
                                       [--five 20000] [--skip-latency] [--skip-burst] [--skip-steps]

Starts its own server on a fresh embedded PostgreSQL (one process: API, event workers, one journey runner),
users written with SQL beforehand.

1. Latency: `--rate` events/s (batches of `--batch`, each event for a different user) posted for
   `--seconds` s to a journey whose entrance is that event. Figure: from each event's acceptance (its
   inbox `accepted_at`) to the run's first step after the entrance (when the runner took it), p50/p99/max.
   Target p99 < 100 ms at 1,000 events/s.
2. Burst: `--runs` runs written waiting at a delay that ends for all at the same moment; the server's one
   runner takes them from then. Figure: from that moment to the last run past the delay. Target < 10 s for
   100,000.
3. Steps: `--five` runs written at the first of five steps (condition, split, experiment, update of the
   user, exit), all due now. Figure: steps per second of the one runner, until the last run ended.
   Target >= 5,000 steps/s.

Each phase prints the CPU the server, PostgreSQL and this script used.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb

from _harness import (
    BenchServer,
    CpuMeter,
    bench_server,
    external_id,
    load_average,
    machine_speed,
    project_id,
    run,
    run_load,
    seed_users,
)


def _client(server: BenchServer) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.secret_key}"}, timeout=60)


def _journey(server: BenchServer, steps: dict[str, Any]) -> str:
    with _client(server) as client:
        created = client.post("/admin/journeys", json={"name": f"bench {time.time()}", "graph": {"steps": steps}})
        created.raise_for_status()
        journey_id = str(created.json()["id"])
        client.post(f"/admin/journeys/{journey_id}/publish").raise_for_status()
    return journey_id


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def latency(server: BenchServer, conn: psycopg.Connection[Any], args: argparse.Namespace, offset: int) -> int:
    name = "bench.enter"
    journey_id = _journey(
        server,
        {
            "start": {"type": "entrance", "trigger": {"kind": "event", "event": name}, "next": "check"},
            "check": {
                "type": "condition",
                "rule": {"type": "property", "path": "data.n", "op": "gte", "value": 0},
                "then": "done",
                "else": "done",
            },
            "done": {"type": "exit"},
        },
    )
    users = int(args.rate * (args.seconds + 3)) + 1000
    seed_users(conn, project_id(server.database_url or ""), users, data_sql="jsonb_build_object('n', g)", start=offset)

    clients = 4

    def body(client_no: int, seq: int) -> bytes:
        first = (seq * clients + client_no) * args.batch  # every event of the run names a user of its own
        events = [
            {"name": name, "identifier": [{"external_id": external_id(offset + (first + i) % users)}], "data": {}}
            for i in range(args.batch)
        ]
        return json.dumps(events).encode()

    requests_per_second = args.rate / args.batch
    meter = CpuMeter(server.pids)
    result = run(
        run_load(
            server,
            "/api/client/users/events",
            body,
            clients=clients,
            duration=args.seconds,
            warmup=0.0,
            rate=requests_per_second,
        )
    )
    print(result.report("posted", unit="events", per_request=args.batch))  # type: ignore[attr-defined]
    deadline = time.monotonic() + 120
    while conn.execute("SELECT count(*) FROM event_inbox").fetchone() != (0,) and time.monotonic() < deadline:
        time.sleep(0.2)
    while time.monotonic() < deadline:
        pending = conn.execute(
            "SELECT count(*) FROM journey_runs WHERE journey_id = %s AND ended_at IS NULL", (journey_id,)
        ).fetchone()
        if pending == (0,):
            break
        time.sleep(0.2)
    print(meter.report())
    rows = conn.execute(
        "SELECT extract(epoch FROM t.at - (r.context -> 'event' ->> 'accepted_at')::timestamptz),"
        " extract(epoch FROM r.entered_at - (r.context -> 'event' ->> 'accepted_at')::timestamptz)"
        " FROM journey_runs AS r JOIN journey_steps_taken AS t ON t.run_id = r.id AND t.visit = 1"
        " WHERE r.journey_id = %s",
        (journey_id,),
    ).fetchall()
    delays = [float(d) for d, _ in rows]
    entered = [float(e) for _, e in rows]
    print(
        f"1. acceptance -> first step at {args.rate:,.0f} events/s: {len(delays):,} runs, "
        f"p50 {_percentile(delays, 50) * 1000:.1f} ms, p99 {_percentile(delays, 99) * 1000:.1f} ms, "
        f"max {max(delays, default=float('nan')) * 1000:.1f} ms  (target p99 < 100 ms); of which acceptance -> "
        f"entered p50 {_percentile(entered, 50) * 1000:.1f} ms, p99 {_percentile(entered, 99) * 1000:.1f} ms"
    )
    return users


def _write_runs(
    conn: psycopg.Connection[Any],
    journey_id: str,
    project: str,
    count: int,
    offset: int,
    *,
    status: str,
    step: str,
    due: datetime,
    seed: bool = True,
) -> None:
    if seed:
        seed_users(
            conn,
            project,
            count,
            data_sql="jsonb_build_object('n', g, 'tier', CASE WHEN g %% 2 = 0 THEN 'gold' ELSE 'silver' END)",
            start=offset,
        )
    with conn.transaction():
        conn.execute(
            """
            INSERT INTO journey_runs (project_id, journey_id, version, user_id, entrance, entry_key, lane, status,
                                      step, visit, due_at, context, entered_at, step_at)
            SELECT %(project)s, %(journey)s, 1, i.user_id, 'start', 'bench:' || i.user_id,
                   '00000000-0000-0000-0000-000000000000', %(status)s, %(step)s, 1, %(due)s, %(context)s, now(), now()
            FROM user_identifiers AS i
            WHERE i.project_id = %(project)s AND i.external_id >= %(first)s AND i.external_id <= %(last)s
            """,
            {
                "project": project,
                "journey": journey_id,
                "status": status,
                "step": step,
                "due": due,
                "context": Jsonb({"entered_at": datetime.now(UTC).isoformat(), "visited": ["start"]}),
                "first": external_id(offset),
                "last": external_id(offset + count - 1),
            },
        )
        conn.execute("ANALYZE journey_runs")


def _until_ended(conn: psycopg.Connection[Any], journey_id: str, count: int, timeout: float = 600) -> datetime:
    # Polled through the partial index of active runs (journey_runs_step): counting the ended ones instead
    # read every run each time, and that polling cost PostgreSQL a third of a core during the burst.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        active = conn.execute(
            "SELECT EXISTS (SELECT FROM journey_runs WHERE journey_id = %s AND ended_at IS NULL)", (journey_id,)
        ).fetchone()
        if active == (False,):
            row = conn.execute(
                "SELECT count(*), max(ended_at) FROM journey_runs WHERE journey_id = %s", (journey_id,)
            ).fetchone()
            assert row is not None
            assert row[0] >= count
            return row[1]  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise RuntimeError("runs did not finish in time")


def burst(server: BenchServer, conn: psycopg.Connection[Any], args: argparse.Namespace, offset: int) -> None:
    journey_id = _journey(
        server,
        {
            "start": {"type": "entrance", "trigger": {"kind": "api"}, "next": "wait"},
            "wait": {"type": "delay", "duration": {"value": 1, "unit": "hours"}, "next": "done"},
            "done": {"type": "exit"},
        },
    )
    project = project_id(server.database_url or "")
    moment = datetime.now(UTC) + timedelta(seconds=30)
    _write_runs(conn, journey_id, project, args.runs, offset, status="waiting", step="wait", due=moment)
    while datetime.now(UTC) < moment - timedelta(seconds=1):
        time.sleep(0.1)
    meter = CpuMeter(server.pids)
    last = _until_ended(conn, journey_id, args.runs)
    print(meter.report())
    print(
        f"2. {args.runs:,} runs whose delay ended at the same moment: all past it "
        f"{(last - moment).total_seconds():.2f} s later  (target < 10 s)"
    )


def steps(server: BenchServer, conn: psycopg.Connection[Any], args: argparse.Namespace, offset: int) -> None:
    journey_id = _journey(
        server,
        {
            "start": {"type": "entrance", "trigger": {"kind": "api"}, "next": "gold"},
            "gold": {
                "type": "condition",
                "rule": {"type": "property", "path": "data.tier", "op": "equals", "value": "gold"},
                "then": "route",
                "else": "route",
            },
            "route": {
                "type": "split",
                "branches": [{"rule": {"type": "property", "path": "data.n", "op": "lt", "value": 1000}, "next": "ab"}],
                "default": "ab",
            },
            "ab": {
                "type": "experiment",
                "variants": [{"name": "a", "weight": 1, "next": "mark"}, {"name": "b", "weight": 1, "next": "mark"}],
            },
            "mark": {"type": "update_user", "data": {"reached": True}, "next": "done"},
            "done": {"type": "exit"},
        },
    )
    project = project_id(server.database_url or "")
    _write_runs(
        conn,
        journey_id,
        project,
        args.five,
        offset,
        status="active",
        step="gold",
        due=datetime.now(UTC) + timedelta(days=1),
    )
    meter = CpuMeter(server.pids)
    started = datetime.now(UTC)
    conn.execute("UPDATE journey_runs SET due_at = %s WHERE journey_id = %s", (started, journey_id))
    last = _until_ended(conn, journey_id, args.five)
    print(meter.report())
    seconds = (last - started).total_seconds()
    print(
        f"3. {args.five:,} runs through a five-step journey in {seconds:.2f} s: "
        f"{args.five * 5 / seconds:,.0f} steps/s  (target >= 5,000 steps/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--five", type=int, default=20_000)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-burst", action="store_true")
    parser.add_argument("--skip-steps", action="store_true")
    parser.add_argument("--runner-tasks", type=int, default=2, help="LUNOGRAM_JOURNEY_RUNNER_TASKS of the server")
    parser.add_argument("--batch-size", type=int, default=1000, help="LUNOGRAM_JOURNEY_BATCH_SIZE of the server")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE", help="more server settings")
    args = parser.parse_args()
    print(machine_speed(), "|", load_average())
    env = {
        "LUNOGRAM_JOURNEY_POLL_SECONDS": "0.2",
        "LUNOGRAM_JOURNEY_RUNNER_TASKS": str(args.runner_tasks),
        "LUNOGRAM_JOURNEY_BATCH_SIZE": str(args.batch_size),
        **dict(item.split("=", 1) for item in args.server_env),
    }
    with bench_server(env) as server, psycopg.connect(server.database_url or "", autocommit=True) as conn:
        offset = 0
        if not args.skip_latency:
            offset += latency(server, conn, args, offset)
        if not args.skip_burst:
            burst(server, conn, args, offset)
            offset += args.runs
        if not args.skip_steps:
            steps(server, conn, args, offset)
    print(machine_speed())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
