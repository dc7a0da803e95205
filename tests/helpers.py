"""Helpers shared by the tests: unique ids, polling, and handles on real servers and PostgreSQL."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from lunogram_server.db.embedded import EmbeddedPostgres

PUBLIC_KEY = "pk_test_public_key_0123456789"
SECRET_KEY = "sk_test_secret_key_0123456789"


def uid(prefix: str = "u") -> str:
    """A fresh external id, so tests sharing a server never see each other's profiles."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


# One TLS context for every test client of this process: httpx builds one for each client otherwise, loading
# the CA bundle (53 ms of CPU), and a readiness poll every 50 ms made a client each time. Tests speak plain
# HTTP on loopback; the context is only what httpx insists on having.
LOOPBACK_TLS = ssl.create_default_context()


def loopback_client(**options: Any) -> httpx.Client:
    return httpx.Client(verify=LOOPBACK_TLS, **options)


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether GET `url` answers 200 now."""
    try:
        with loopback_client(timeout=timeout) as client:
            return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def _port_block() -> range:
    """This test process's own ports: below the kernel's ephemeral range, one block per xdist worker."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            ephemeral_low = int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    size = 1500
    start = 12000 + index * size
    if start + size > ephemeral_low:  # an unusual range: take what the kernel hands out
        return range(0)
    return range(start, start + size)


_PORTS = _port_block()
_NEXT_PORT = itertools.count()


def free_port() -> int:
    """A loopback port nobody listens on. Taken in turn from this process's own block, below the ephemeral
    range: a port the kernel handed out (bind to 0) could be taken as the source port of any outgoing
    connection before the test server bound it ("address already in use"), or handed again to the next
    fake server while a previous test's late retry still aimed at it."""
    for _ in range(len(_PORTS)):
        port = _PORTS[next(_NEXT_PORT) % len(_PORTS)]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll `condition` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


@dataclass
class PgCluster:
    embedded: EmbeddedPostgres
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def new_database(self) -> str:
        name = f"test_{os.getpid()}_{next(self.counter)}"
        with psycopg.connect(self.embedded.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.embedded.conninfo(name)


@dataclass
class Server:
    """A running `lunogram serve` subprocess."""

    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    public_key: str = PUBLIC_KEY
    secret_key: str = SECRET_KEY
    cwd: Path | None = None

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/api"

    @property
    def database_url(self) -> str:
        return self.env.get("DATABASE_URL", "")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 60.0) -> Server:
        handle = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lunogram_server", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.cwd,
        )
        handle.close()

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            return answers(f"{self.root_url}/readyz")

        wait_until(ready, timeout=timeout, what="server readiness")
        # the banner is printed right after the listener is up
        wait_until(lambda: "Lunogram is running" in self.log(), timeout=10, what="banner")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def client(self, key: str | None = None) -> httpx.Client:
        return loopback_client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {key or self.secret_key}"},
            timeout=30,
        )


def ident(external_id: str, source: str | None = None, **metadata: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"external_id": external_id}
    if source is not None:
        out["source"] = source
    if metadata:
        out["metadata"] = metadata
    return out
