"""Event worker throughput: a backlog of identifier events in the inbox, drained by in-process workers.

    .venv/bin/python bench/process.py [--events 1000000] [--users 100000] [--workers 1] [--processes 1]
                                      [--new-users] [--batch-size 500] [--partitions-per-claim 32] [--breakdown]

Starts its own server on a fresh embedded PostgreSQL (its event workers off; it only provides the database,
migrated and bootstrapped) or uses LUNOGRAM_BENCH_URL + LUNOGRAM_BENCH_KEY + LUNOGRAM_BENCH_DATABASE_URL.
The backlog is written with one INSERT ... SELECT generate_series, each event naming a random one of
`--users` users, in the partition the `enqueue` query would give it (checked against an event posted through
the API). By default the users exist beforehand, so the run measures the fast path (lookup, write history);
--new-users leaves them to the workers to create (the slow path, full resolution).
Then `--workers` EventWorker tasks (lunogram_server.events.worker, EventSettings from lunogram_server.config),
spread over `--processes` processes, call run_once() until the inbox is empty; the figure is events/s per
worker. --breakdown adds where each batch's time went, per query (wall time as the worker saw it).
Target: >= 5,000 events/s per worker.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import queue as queues_module
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from psycopg_pool import AsyncConnectionPool

from _harness import CpuMeter, bench_server, load_average, project_id, seed_users

PROJECT_DATA = (
    "jsonb_build_object('plan', (ARRAY['free', 'pro', 'enterprise'])[1 + mod(g, 3)], 'signup_no', g, "
    "'country', (ARRAY['NL', 'DE', 'US', 'FR', 'GB'])[1 + mod(g, 5)])"
)
# The partition exactly as the `enqueue` query computes it, for identifier [{source: default, external_id}].
PARTITION_SQL = (
    "mod(abs(hashtextextended(%(project)s::uuid::text || ':' || 'user' || ':' || 'default' || ':' || {ext}, 0)), 64)"
)
FILL = f"""
INSERT INTO event_inbox (project_id, kind, partition, name, data, identifiers)
SELECT %(project)s::uuid, 'user', {PARTITION_SQL.format(ext="x.ext")},
       (ARRAY['page_viewed', 'page_viewed', 'button_clicked', 'added_to_cart', 'signed_in'])[1 + mod(g, 5)],
       jsonb_build_object('path', (ARRAY['/', '/pricing', '/docs', '/blog/launch', '/checkout'])[1 + mod(g, 5)],
                          'referrer', 'https://www.google.com/', 'duration_ms', mod(g, 90000), 'seq', g),
       jsonb_build_array(jsonb_build_object('source', 'default', 'external_id', x.ext))
FROM generate_series(1, %(events)s::int) AS g,
     LATERAL (SELECT 'user_' || lpad(mod(abs(hashint4(g)::bigint), %(users)s)::text, 7, '0') AS ext) AS x
"""


@dataclass
class Breakdown:
    """Wall time per named query and per transaction end (commit), summed over the batches."""

    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, seconds: float, calls: int = 1) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + calls

    def merge(self, other: Breakdown) -> None:
        for name, seconds in other.seconds.items():
            self.add(name, seconds, other.calls[name])

    def report(self, batches_seconds: float) -> str:
        lines = [f"  where the workers' batch time went ({batches_seconds:.1f}s in run_once, all tasks):"]
        for name, seconds in sorted(self.seconds.items(), key=lambda item: -item[1]):
            share = seconds / batches_seconds if batches_seconds else 0.0
            per_call = seconds / self.calls[name] * 1000
            lines.append(f"    {name:<22} {share:6.1%}  {self.calls[name]:>7,} calls  {per_call:8.2f} ms/call")
        rest = batches_seconds - sum(self.seconds.values())
        lines.append(f"    {'python, pool, other':<22} {rest / batches_seconds if batches_seconds else 0:6.1%}")
        return "\n".join(lines)


def instrument(breakdown: Breakdown) -> None:
    """Time every statement the workers run by its name in the pipeline's SQL, and every transaction end."""
    from lunogram_server.events.queries import BY_KIND, SHARED

    names = {text: name for name, text in SHARED.items()}
    for kind, queries in BY_KIND.items():
        names.update({text: f"{name} ({kind})" for name, text in queries.items()})
    execute = psycopg.AsyncConnection.execute
    exit_transaction = psycopg.AsyncTransaction.__aexit__

    async def timed_execute(self: psycopg.AsyncConnection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await execute(self, query, *args, **kwargs)
        finally:
            name = names.get(query, "other statements") if isinstance(query, str) else "other statements"
            breakdown.add(name, time.perf_counter() - t0)

    async def timed_exit(self: psycopg.AsyncTransaction, *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await exit_transaction(self, *args)
        finally:
            breakdown.add("commit", time.perf_counter() - t0)

    psycopg.AsyncConnection.execute = timed_execute  # type: ignore[method-assign]
    psycopg.AsyncTransaction.__aexit__ = timed_exit  # type: ignore[method-assign,assignment]


@dataclass
class WorkResult:
    handled: int = 0
    batches: int = 0
    batch_seconds: float = 0.0
    breakdown: Breakdown = field(default_factory=Breakdown)


async def drain(conninfo: str, tasks: int, settings: dict[str, int], breakdown: bool, first: int) -> WorkResult:
    """`tasks` EventWorkers on one pool, each calling run_once() until the inbox has nothing left."""
    from lunogram_server.config import EventSettings, Settings
    from lunogram_server.db import open_pool
    from lunogram_server.domains import build_reactions
    from lunogram_server.events.worker import EventWorker

    result = WorkResult()
    if breakdown:
        instrument(result.breakdown)
    config = EventSettings(worker_tasks=tasks, **settings)
    pool: AsyncConnectionPool[Any] = await open_pool(conninfo, min_size=tasks + 1, max_size=tasks + 1)

    async def empty() -> bool:
        async with pool.connection() as conn, conn.cursor() as cursor:  # a cursor's execute: not in the breakdown
            await cursor.execute("SELECT NOT EXISTS (SELECT 1 FROM event_inbox WHERE dead_at IS NULL)")
            row = await cursor.fetchone()
            return bool(row and row[0])

    async def one(worker: EventWorker) -> None:
        while True:
            t0 = time.perf_counter()
            handled = await worker.run_once()
            if handled > 0:
                result.batch_seconds += time.perf_counter() - t0
                result.batches += 1
                result.handled += handled
            elif handled == 0 and await empty():
                return
            else:  # every partition with events is held by another worker, or a lost race
                await asyncio.sleep(0.005)

    try:
        subscribers = build_reactions(Settings()).event_subscribers  # as in `serve`: lists included
        workers = [
            EventWorker(pool, config, subscribers, name=f"bench:{os.getpid()}:{first + n}") for n in range(tasks)
        ]
        await asyncio.gather(*(one(worker) for worker in workers))
    finally:
        await pool.close()
    return result


def child(
    conninfo: str, tasks: int, settings: dict[str, int], breakdown: bool, first: int, go: Any, results: Any
) -> None:
    import uvloop

    go.wait()  # every process starts on the parent's signal, once all have imported what they need
    results.put(uvloop.run(drain(conninfo, tasks, settings, breakdown, first)))


def build_backlog(conninfo: str, server_url: str, key: str, args: argparse.Namespace) -> str:
    project = project_id(conninfo, key)
    # One event through the API first: the SQL fill must put an identifier in the same partition as enqueue.
    probe = "user_" + "0" * 7
    response = httpx.post(
        f"{server_url}/client/users/events",
        json=[{"name": "probe", "identifier": [{"external_id": probe}]}],
        headers={"Authorization": f"Bearer {key}"},
    )
    response.raise_for_status()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT partition = {PARTITION_SQL.format(ext='%(ext)s')} FROM event_inbox WHERE name = 'probe'",
            {"project": project, "ext": probe},
        ).fetchone()
        if not (row and row[0]):
            raise RuntimeError("the fill's partition differs from the enqueue query's: fix PARTITION_SQL")
        conn.execute("DELETE FROM event_inbox WHERE name = 'probe'")
        t0 = time.perf_counter()
        if not args.new_users:
            seed_users(conn, project, args.users, data_sql=PROJECT_DATA)
        t1 = time.perf_counter()
        conn.execute(FILL, {"project": project, "events": args.events, "users": args.users})
        t2 = time.perf_counter()
        # Statistics for the tables just filled (as autovacuum would soon have them), none for empty ones: an
        # empty table analyzed would look empty to the planner for the whole run, which is not what a server
        # that has been running sees.
        for table in ("event_inbox",) if args.new_users else ("event_inbox", "users", "user_identifiers"):
            conn.execute(f"VACUUM ANALYZE {table}")
        t3 = time.perf_counter()
    users = "left to the workers" if args.new_users else f"{args.users:,} users in {t1 - t0:.1f}s"
    print(f"backlog: {users}, {args.events:,} inbox events in {t2 - t1:.1f}s, vacuum analyze {t3 - t2:.1f}s")
    return project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1, help="EventWorker tasks in all")
    parser.add_argument("--processes", type=int, default=1, help="processes the tasks are spread over")
    parser.add_argument("--new-users", action="store_true", help="users do not exist yet: measure creation")
    parser.add_argument("--batch-size", type=int, default=None, help="LUNOGRAM_EVENT_BATCH_SIZE (default 500)")
    parser.add_argument("--partitions-per-claim", type=int, default=None, help="default 32")
    parser.add_argument("--breakdown", action="store_true", help="time each query the workers run")
    args = parser.parse_args()
    settings = {
        name: value
        for name, value in (("batch_size", args.batch_size), ("partitions_per_claim", args.partitions_per_claim))
        if value is not None
    }
    processes = max(1, min(args.processes, args.workers))
    spread = [args.workers // processes + (1 if n < args.workers % processes else 0) for n in range(processes)]

    env = {"LUNOGRAM_EVENT_WORKER_TASKS": "0", "LUNOGRAM_WORKERS": "1", "LUNOGRAM_POOL_MAX_SIZE": "2"}
    with bench_server(env) as server:
        if not server.database_url:
            raise SystemExit("set LUNOGRAM_BENCH_DATABASE_URL with LUNOGRAM_BENCH_URL")
        conninfo = server.database_url
        build_backlog(conninfo, server.base_url, server.secret_key, args)
        print(f"before: {load_average()}")
        ctx = multiprocessing.get_context("spawn")
        go = ctx.Event()
        queues = [ctx.Queue() for _ in spread]
        procs = [
            ctx.Process(
                target=child,
                args=(conninfo, tasks, settings, args.breakdown, sum(spread[:n]), go, queues[n]),
                daemon=True,
            )
            for n, tasks in enumerate(spread)
        ]
        for proc in procs:
            proc.start()
        time.sleep(1.0)  # let the children import everything before the clock starts
        roots = {**server.pids, **{f"worker process {n}": proc.pid for n, proc in enumerate(procs) if proc.pid}}
        meter = CpuMeter(roots)
        t0 = time.perf_counter()
        go.set()
        results: list[WorkResult] = []
        last = (t0, 0)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            pending = list(queues)
            while pending:
                for queue in list(pending):
                    try:
                        results.append(queue.get(timeout=0.05))
                        pending.remove(queue)
                    except queues_module.Empty:  # still working
                        pass
                now = time.perf_counter()
                if now - last[0] >= 5 and pending:
                    row = conn.execute("SELECT coalesce(sum(processed), 0) FROM event_worker_stats").fetchone()
                    done = int(row[0]) if row else 0
                    rate = (done - last[1]) / (now - last[0])
                    print(f"  {now - t0:5.1f}s: {done:,} applied, {rate:,.0f} events/s since the last line")
                    last = (now, done)
            elapsed = time.perf_counter() - t0
            cpu = meter.report()
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM user_events), (SELECT count(*) FROM users),"
                " (SELECT count(*) FROM event_inbox)"
            ).fetchone()
        for proc in procs:
            proc.join(10)
    handled = sum(r.handled for r in results)
    batches = sum(r.batches for r in results)
    mode = "new users (slow path)" if args.new_users else "known users (fast path)"
    print(
        f"process ({args.workers} worker{'s' if args.workers > 1 else ''} in {processes} process"
        f"{'es' if processes > 1 else ''}, {mode}, batch {settings.get('batch_size', 500)}, "
        f"{settings.get('partitions_per_claim', 8)} partitions/claim): {handled:,} events in {elapsed:.1f}s = "
        f"{handled / elapsed:,.0f} events/s, {handled / elapsed / args.workers:,.0f} events/s per worker; "
        f"{batches:,} batches, {handled / max(batches, 1):.0f} events/batch"
    )
    print(cpu)
    if counts:
        print(f"after: {counts[0]:,} history rows, {counts[1]:,} users, {counts[2]:,} left in the inbox")
    if args.breakdown:
        total = Breakdown()
        for r in results:
            total.merge(r.breakdown)
        print(total.report(sum(r.batch_seconds for r in results)))


if __name__ == "__main__":
    main()
