"""Shared by the benchmarks: a throwaway server on an embedded PostgreSQL, and a lean HTTP load generator.

The load generator speaks HTTP/1.1 keep-alive over raw asyncio streams: on a 2-core machine a full client
library would spend more CPU than the server under test and the figures would measure the client.

Also: the bench project's id, bulk SQL seeding of users, and a CPU meter that says who used the cores during
a measurement (the server, PostgreSQL, the benchmark itself, or other work on the machine).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

SECRET_KEY = "sk_bench_secret_key_0123456789"
PUBLIC_KEY = "pk_bench_public_key_0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class BenchServer:
    host: str
    port: int
    secret_key: str
    database_url: str | None  # the embedded PostgreSQL's conninfo, or LUNOGRAM_BENCH_DATABASE_URL
    extra_ports: tuple[int, ...] = ()
    pids: dict[str, int] = field(default_factory=dict)  # "server", "postgres": roots of process trees

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"


@contextmanager
def bench_server(extra_env: dict[str, str] | None = None, base_url: str | None = None) -> Iterator[BenchServer]:
    """Use the server at `base_url` (LUNOGRAM_BENCH_URL) or start one on a fresh embedded PostgreSQL."""
    url = base_url or os.environ.get("LUNOGRAM_BENCH_URL")
    if url:
        urls = [httpx.URL(u) for u in url.split(",")]
        key = os.environ.get("LUNOGRAM_BENCH_KEY", SECRET_KEY)
        ports = tuple(u.port or 80 for u in urls)
        yield BenchServer(urls[0].host, ports[0], key, os.environ.get("LUNOGRAM_BENCH_DATABASE_URL"), ports[1:])
        return
    data_dir = Path(tempfile.mkdtemp(prefix="lunogram-bench-"))
    data_dir.chmod(0o755)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNOGRAM_") and k != "DATABASE_URL"}
    env.update(
        LUNOGRAM_DATA_DIR=str(data_dir),
        LUNOGRAM_PORT=str(port),
        LUNOGRAM_BOOTSTRAP_SECRET_KEY=SECRET_KEY,
        LUNOGRAM_BOOTSTRAP_PUBLIC_KEY=PUBLIC_KEY,
        **(extra_env or {}),
    )
    log = open(data_dir / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "lunogram_server", "serve"], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((data_dir / "serve.log").read_text())
            time.sleep(0.2)
        pg_dir = data_dir / "pg"
        pids = {"server": proc.pid, "postgres": int((pg_dir / "postmaster.pid").read_text().split()[0])}
        yield BenchServer("127.0.0.1", port, SECRET_KEY, _embedded_conninfo(pg_dir), pids=pids)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def _embedded_conninfo(pg_dir: Path) -> str:
    from lunogram_server.db.embedded import EmbeddedPostgres

    return str(EmbeddedPostgres(pg_dir).conninfo())


def project_id(database_url: str, secret_key: str = SECRET_KEY) -> str:
    """The id of the project `secret_key` belongs to (the server stores only the key's SHA-256)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT project_id::text FROM api_keys WHERE key_hash = %s", (hashlib.sha256(secret_key.encode()).digest(),)
        ).fetchone()
    if row is None:
        raise RuntimeError("the bench key is unknown to this database (LUNOGRAM_BENCH_KEY?)")
    return str(row[0])


def seed_users(
    conn: psycopg.Connection[Any], project: str, count: int, *, data_sql: str, start: int = 0, source: str = "default"
) -> None:
    """`count` users with one identifier each, `user_<n>` for n in [start, start + count), in two statements.

    `data_sql` is a SQL expression of `g` (the user number) giving the profile's `data` jsonb.
    """
    conn.execute(
        f"""
        WITH u AS (
            INSERT INTO users (project_id, data)
            SELECT %(project)s, {data_sql} FROM generate_series(%(first)s::int, %(last)s::int) AS g
            RETURNING id, data
        ), numbered AS (
            SELECT id, row_number() OVER () - 1 + %(first)s AS g FROM u
        )
        INSERT INTO user_identifiers (project_id, user_id, source, external_id)
        SELECT %(project)s, id, %(source)s, 'user_' || lpad(g::text, 7, '0') FROM numbered
        """,
        {"project": project, "first": start, "last": start + count - 1, "source": source},
    )


def external_id(n: int) -> str:
    """The external id `seed_users` gives user number `n`."""
    return f"user_{n:07d}"


def machine_speed() -> str:
    """Seconds a fixed pure-Python loop takes: this machine's speed varies by half from hour to hour, so
    figures from different runs compare only next to this (1.9-2.0 s on a quiet 2-core machine here)."""
    start = time.perf_counter()
    total = 0
    for i in range(30_000_000):
        total += i
    return f"fixed loop {time.perf_counter() - start:.2f} s"


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU seconds of it and its reaped children)."""
    tick = os.sysconf("SC_CLK_TCK")
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), sum(int(v) for v in fields[11:15]) / tick)
    return table


def _machine() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]
    return (sum(values) - idle) / tick, sum(values) / tick


class CpuMeter:
    """CPU used during a measurement by named process trees (a process counts for its nearest named
    ancestor), and by everything else on the machine: with other work running, figures are not comparable."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self._start = self._sample()

    def _sample(self) -> tuple[float, dict[str, float], float, float]:
        table = _proc_table()
        by_root = {pid: name for name, pid in self.roots.items()}
        used = dict.fromkeys(self.roots, 0.0)
        for pid, (_, seconds) in table.items():
            cursor = pid
            while cursor > 1 and cursor not in by_root:
                cursor = table.get(cursor, (0, 0.0))[0]
            if cursor in by_root:
                used[by_root[cursor]] += seconds
        busy, total = _machine()
        return time.monotonic(), used, busy, total

    def report(self) -> str:
        t0, used0, busy0, total0 = self._start
        t1, used1, busy1, total1 = self._sample()
        wall = max(t1 - t0, 1e-9)
        parts = [f"{name} {(used1[name] - used0[name]) / wall:.0%}" for name in self.roots]
        ours = sum(used1[name] - used0[name] for name in self.roots)
        cores = (total1 - total0) / wall
        others = max(0.0, (busy1 - busy0) - ours) / wall
        return (
            f"CPU over {wall:.1f}s (100% = one core, {cores:.0f} cores): {', '.join(parts)}, "
            f"other processes {others:.0%}"
        )


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    statuses: dict[int, int]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def report(self, label: str, unit: str = "requests", per_request: int = 1) -> str:
        """`per_request`: units each request carries (events in a batch), so the rate is in units/s."""
        return (
            f"{label}: {self.throughput * per_request:,.0f} {unit}/s over {self.seconds:.1f}s "
            f"({self.requests:,} ok, {self.errors} errors, statuses {dict(sorted(self.statuses.items()))}); "
            f"latency p50 {self.percentile(50) * 1000:.1f} ms, p99 {self.percentile(99) * 1000:.1f} ms, "
            f"mean {statistics.fmean(self.latencies) * 1000:.1f} ms"
        )


async def run_load(
    server: BenchServer,
    path: str,
    make_body: Callable[[int, int], bytes],
    *,
    clients: int,
    duration: float,
    method: str = "POST",
    warmup: float = 1.0,
    rate: float | None = None,
    make_headers: Callable[[int, int], str] | None = None,
) -> LoadResult:
    """`clients` keep-alive connections, each sending the next request as soon as the last answered.

    With `rate` (requests/s over all clients) each client instead sends on a fixed schedule, so latency is
    measured at that offered load; a request the server holds up past the next one's due time delays the
    next, and that one's latency counts from when it was due (no coordinated omission).
    """
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    auth = f"Authorization: Bearer {server.secret_key}\r\n"
    start_at = time.perf_counter() + warmup
    stop_at = start_at + duration

    async def one_client(client_no: int) -> None:
        nonlocal errors
        ports = (server.port, *server.extra_ports)
        reader, writer = await asyncio.open_connection(server.host, ports[client_no % len(ports)])
        seq = 0
        interval = clients / rate if rate else 0.0
        due = time.perf_counter() + interval * client_no / clients
        try:
            while True:
                now = time.perf_counter()
                if now >= stop_at:
                    return
                late = False
                if rate:
                    if now < due:
                        await asyncio.sleep(due - now)
                    else:
                        late = True
                body = make_body(client_no, seq)
                seq += 1
                extra = make_headers(client_no, seq) if make_headers else ""
                head = (
                    f"{method} {path} HTTP/1.1\r\nHost: {server.host}\r\n{auth}{extra}"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                )
                t0 = due if late else time.perf_counter()
                due += interval
                writer.write(head.encode() + body)
                status_line = await reader.readline()
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                t1 = time.perf_counter()
                status = int(status_line.split()[1])
                if t0 >= start_at:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status < 300:
                        latencies.append(t1 - t0)
                    else:
                        errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(one_client(i) for i in range(clients)))
    return LoadResult(len(latencies), errors, duration, latencies, statuses)


def run(coro: object) -> object:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
