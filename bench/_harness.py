"""Shared by the benchmarks: a throwaway server on an embedded PostgreSQL, and a lean HTTP load generator.

The load generator speaks HTTP/1.1 keep-alive over raw asyncio streams: on a 2-core machine a full client
library would spend more CPU than the server under test and the figures would measure the client.
"""

from __future__ import annotations

import asyncio
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
from dataclasses import dataclass
from pathlib import Path

import httpx

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
    database_url: str | None
    extra_ports: tuple[int, ...] = ()

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
        yield BenchServer(urls[0].host, ports[0], key, None, ports[1:])
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
        yield BenchServer("127.0.0.1", port, SECRET_KEY, None)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


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

    def report(self, label: str, unit: str = "requests") -> str:
        return (
            f"{label}: {self.throughput:,.0f} {unit}/s over {self.seconds:.1f}s "
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
) -> LoadResult:
    """`clients` keep-alive connections, each sending the next request as soon as the last answered."""
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
        try:
            while True:
                now = time.perf_counter()
                if now >= stop_at:
                    return
                body = make_body(client_no, seq)
                seq += 1
                head = (
                    f"{method} {path} HTTP/1.1\r\nHost: {server.host}\r\n{auth}"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                )
                t0 = time.perf_counter()
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
