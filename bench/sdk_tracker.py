"""Python SDK `Tracker` throughput: one process hands N events to a tracker and waits until the server has them.

    .venv/bin/python bench/sdk_tracker.py [--events 200000] [--flush-at 1000] [--max-batch 1000]
                                          [--max-queue-size N] [--workers 2] [--pool 4]

Starts its own server on a fresh embedded PostgreSQL (or uses LUNOGRAM_BENCH_URL + LUNOGRAM_BENCH_KEY +
LUNOGRAM_BENCH_DATABASE_URL) with the event workers off (LUNOGRAM_EVENT_WORKER_TASKS=0), so "delivered" means
accepted by the server, and counts the delivered events in event_inbox. The events (the mix of bench/ingest.py)
are made before the clock starts; the clock covers `track()` of every event and the final `flush()`.
The queue holds all N events by default so none is dropped (with a smaller --max-queue-size, a producer that
outruns the network drops the newest events: `dropped` in the output).
Prints events/s handed to the tracker and events/s delivered. Target: >= 20,000 events/s delivered.
"""

from __future__ import annotations

import argparse
import os
import random
import time

import lunogram
import psycopg

from _harness import CpuMeter, bench_server, load_average
from ingest import make_event


def inbox_count(database_url: str | None) -> int | None:
    if not database_url:
        return None
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM event_inbox").fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=1000, help="distinct users the events name")
    parser.add_argument("--flush-at", type=int, default=1000)
    parser.add_argument("--max-batch", type=int, default=1000)
    parser.add_argument("--max-queue-size", type=int, default=None, help="default: --events (nothing dropped)")
    parser.add_argument("--pool", type=int, default=4, help="server's LUNOGRAM_POOL_MAX_SIZE, per process")
    parser.add_argument("--workers", type=int, default=2, help="server's LUNOGRAM_WORKERS (HTTP processes)")
    args = parser.parse_args()
    rng = random.Random(5)
    events = [make_event(rng, args.users) for _ in range(args.events)]
    env = {
        "LUNOGRAM_WORKERS": str(args.workers),
        "LUNOGRAM_POOL_MAX_SIZE": str(args.pool),
        "LUNOGRAM_EVENT_WORKER_TASKS": "0",
    }
    print(f"before: {load_average()}")
    with bench_server(env) as server:
        before = inbox_count(server.database_url)
        errors: list[str] = []
        tracker = lunogram.Tracker(
            server.secret_key,
            base_url=server.base_url,
            flush_at=args.flush_at,
            max_batch=args.max_batch,
            max_queue_size=args.max_queue_size or args.events,
            on_error=lambda exc, batch: errors.append(f"{len(batch)} events: {exc!r}"),
        )
        meter = CpuMeter({**server.pids, "bench (tracker)": os.getpid()})
        track = tracker.track
        start = time.perf_counter()
        for event in events:
            track(event["identifier"], event["name"], event["data"])
        handed = time.perf_counter() - start
        tracker.flush()
        delivered_s = time.perf_counter() - start
        cpu = meter.report()
        tracker.shutdown()
        after = inbox_count(server.database_url)
        n = args.events
        print(
            f"tracker: {n:,} events, flush_at {args.flush_at}, batches of <= {args.max_batch}, "
            f"{args.workers} server processes, event workers off"
        )
        print(f"  handed to the tracker: {n / handed:,.0f} events/s ({handed:.2f} s)")
        print(f"  delivered (flush returned): {tracker.sent / delivered_s:,.0f} events/s ({delivered_s:.2f} s)")
        print(f"  sent {tracker.sent:,}, failed {tracker.failed:,}, dropped {tracker.dropped:,}")
        if after is not None and before is not None:
            print(f"  event_inbox gained {after - before:,} rows")
        for line in errors[:5]:
            print(f"  error: {line}")
        print(cpu)


if __name__ == "__main__":
    main()
