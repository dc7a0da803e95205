"""Event ingest throughput and latency: N concurrent clients posting batches of identifier events.

    .venv/bin/python bench/ingest.py [--clients 8] [--duration 10] [--batch 100] [--users 1000] [--workers 2]
                                     [--pool 4] [--with-workers] [--rate EVENTS_PER_S]

Starts its own server on a fresh embedded PostgreSQL (or uses LUNOGRAM_BENCH_URL + LUNOGRAM_BENCH_KEY).
Each request is POST /api/client/users/events with `--batch` events of about `--users` distinct users (a few
anonymous visitors among them), with the names and data an app sends. The server's event workers are off
(LUNOGRAM_EVENT_WORKER_TASKS=0) so that ingest is measured alone; --with-workers keeps them, and then the
inbox depth left at the end shows whether the workers kept up.
By default each client sends its next batch as soon as the last is answered (the most the server takes, and
the latency at that saturation); --rate 20000 instead offers that many events/s on a fixed schedule, which
is the latency at the target load (a late answer counts from when the request was due).
Target: >= 20,000 events/s with p99 < 50 ms on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import random
from typing import Any

import orjson
import psycopg

from _harness import CpuMeter, LoadResult, bench_server, load_average, run, run_load

PAGES = ["/", "/pricing", "/docs/getting-started", "/blog/launch", "/account/settings", "/checkout", "/search"]
PRODUCTS = [("sku_1042", "Walnut desk", 349.0), ("sku_2210", "Desk lamp", 49.5), ("sku_3307", "Notebook", 7.9)]
REFERRERS = ["https://www.google.com/", "https://news.ycombinator.com/", "", "https://twitter.com/", "newsletter"]


def make_event(rng: random.Random, users: int) -> dict[str, Any]:
    """One event as an SDK sends it: mostly known users, now and then an anonymous visitor."""
    if rng.random() < 0.05:
        identifier = [{"source": "anonymous", "external_id": f"anon_{rng.randrange(users // 10 + 1):06x}"}]
    else:
        identifier = [{"external_id": f"user_{rng.randrange(users):07d}"}]
    kind = rng.random()
    if kind < 0.55:
        name, data = (
            "page_viewed",
            {"path": rng.choice(PAGES), "referrer": rng.choice(REFERRERS), "duration_ms": rng.randrange(50, 90_000)},
        )
    elif kind < 0.80:
        name, data = "button_clicked", {"button": rng.choice(["signup", "upgrade", "share", "save"]), "x": 0.4}
    elif kind < 0.92:
        sku, title, price = rng.choice(PRODUCTS)
        name, data = (
            "added_to_cart",
            {"product_id": sku, "title": title, "price": price, "currency": "EUR", "quantity": rng.randrange(1, 4)},
        )
    elif kind < 0.97:
        method = rng.choice(["password", "google", "magic_link"])
        name, data = "signed_in", {"method": method, "mfa": rng.random() < 0.3}
    else:
        sku, title, price = rng.choice(PRODUCTS)
        name, data = (
            "order_completed",
            {
                "order_id": f"ord_{rng.randrange(10**9):09d}",
                "total": round(price * rng.randrange(1, 4), 2),
                "currency": "EUR",
                "items": [{"product_id": sku, "title": title, "price": price}],
                "coupon": rng.choice([None, "SPRING10"]),
            },
        )
    return {"name": name, "identifier": identifier, "data": data}


def inbox_depth(database_url: str | None) -> str:
    if not database_url:
        return "unknown (no LUNOGRAM_BENCH_DATABASE_URL)"
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM event_inbox").fetchone()
    return f"{row[0] if row else 0:,} events"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--users", type=int, default=1000, help="distinct users the events name")
    parser.add_argument("--bodies", type=int, default=500, help="distinct request bodies, generated up front")
    parser.add_argument("--pool", type=int, default=4, help="server's LUNOGRAM_POOL_MAX_SIZE, per process")
    parser.add_argument("--workers", type=int, default=2, help="server's LUNOGRAM_WORKERS (HTTP processes)")
    parser.add_argument("--with-workers", action="store_true", help="keep the server's event workers running")
    parser.add_argument("--rate", type=float, default=None, help="offered events/s (default: as fast as answered)")
    args = parser.parse_args()
    rng = random.Random(11)
    # Bodies are made before the clock starts: the client must not compete with the server for the 2 cores.
    bodies = [orjson.dumps([make_event(rng, args.users) for _ in range(args.batch)]) for _ in range(args.bodies)]

    def body(client: int, seq: int) -> bytes:
        return bodies[(client * 7919 + seq) % len(bodies)]

    env = {"LUNOGRAM_WORKERS": str(args.workers), "LUNOGRAM_POOL_MAX_SIZE": str(args.pool)}
    if not args.with_workers:
        env["LUNOGRAM_EVENT_WORKER_TASKS"] = "0"
    print(f"before: {load_average()}; body {sum(map(len, bodies)) // len(bodies):,} bytes on average")
    with bench_server(env) as server:
        meter = CpuMeter({**server.pids, "bench client": os.getpid()})
        rate = args.rate / args.batch if args.rate else None
        load = run_load(
            server, "/api/client/users/events", body, clients=args.clients, duration=args.duration, rate=rate
        )
        result = run(load)
        assert isinstance(result, LoadResult)
        cpu = meter.report()
        workers = "event workers on" if args.with_workers else "event workers off"
        offered = f"offered {args.rate:,.0f} events/s" if args.rate else "closed loop"
        label = (
            f"ingest ({args.clients} clients, {offered}, {args.batch} events/request, "
            f"{args.workers} server processes, {workers})"
        )
        print(result.report(label, "events", per_request=args.batch))
        print(cpu)
        print(f"inbox after the run: {inbox_depth(server.database_url)}")


if __name__ == "__main__":
    main()
