"""Single-user upsert throughput and latency with N concurrent clients on loopback.

    .venv/bin/python bench/upsert.py [--clients 32] [--duration 10] [--new-ratio 0.5] [--workers 2] [--pool 4]
        [--keyed] [--role api] [--server-env LUNOGRAM_UPSERT_SLOTS=1 ...]

Starts its own server on a fresh embedded PostgreSQL (or uses LUNOGRAM_BENCH_URL + LUNOGRAM_BENCH_KEY).
Half the upserts create a user, half update one (identifier already known, data merged), by default.
Target (issue 3): >= 3,000 upserts/s with p99 < 20 ms on 2 cores. Concurrent upserts in one server process
share commits (db/coalesce.py), so throughput grows with clients until the cores are full: 8 clients leave
the cores partly idle, 16 nearly fill them (each batch waits for its WAL flush), 32 fill them: the
default, since throughput is measured at saturation (docs/performance.md has figures for 8, 16 and 32).
"""

from __future__ import annotations

import argparse
import os
import random

import orjson

from _harness import CpuMeter, bench_server, load_average, machine_speed, run, run_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32, help="32 fill the two cores; 16 leave ~15%% idle")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--new-ratio", type=float, default=0.5, help="share of upserts that create a user")
    parser.add_argument("--pool", type=int, default=4, help="server's LUNOGRAM_POOL_MAX_SIZE, per process")
    parser.add_argument("--workers", type=int, default=2, help="server's `serve --workers` (2 cores: 2)")
    parser.add_argument("--keyed", action="store_true", help="send an Idempotency-Key with each (as the Python SDK)")
    parser.add_argument("--role", default="all", help="server's LUNOGRAM_ROLE (`api`: no background loops)")
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE", help="another server setting (repeatable)"
    )
    args = parser.parse_args()
    rng = random.Random(7)

    def body(client: int, seq: int) -> bytes:
        if seq > 0 and rng.random() >= args.new_ratio:
            ext = f"bench_{client}_{rng.randrange(seq)}"
        else:
            ext = f"bench_{client}_{seq}"
        return orjson.dumps(
            {
                "identifier": [{"external_id": ext}],
                "email": f"{ext}@example.com",
                "timezone": "Europe/Amsterdam",
                "data": {"plan": rng.choice(["free", "pro", "enterprise"]), "seq": seq, "score": rng.random()},
            }
        )

    env = {"LUNOGRAM_WORKERS": str(args.workers), "LUNOGRAM_POOL_MAX_SIZE": str(args.pool)}
    if args.role != "all":
        env["LUNOGRAM_ROLE"] = args.role
    env.update(setting.split("=", 1) for setting in args.server_env)
    print(f"before: {load_average()}, {machine_speed()}")
    with bench_server(env) as server:
        meter = CpuMeter({**server.pids, "bench client": os.getpid()})
        keys = (lambda client, seq: f"Idempotency-Key: bench-{client}-{seq}\r\n") if args.keyed else None
        load = run_load(
            server, "/api/client/users", body, clients=args.clients, duration=args.duration, make_headers=keys
        )
        result = run(load)
        print(f"CPU: {meter.report()}")
        print(f"after: {machine_speed()}")
        keyed = ", keyed" if args.keyed else ""
        label = f"upsert ({args.clients} clients, {args.new_ratio:.0%} new, {args.workers} server processes{keyed})"
        print(result.report(label, "upserts"))  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
