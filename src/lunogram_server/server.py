"""`lunogram serve`: database (embedded or DATABASE_URL), migrations, first-start keys, then the HTTP API.

A lock file in the data directory (flock, so the kernel releases it when the process dies, `kill -9`
included) stops two servers from sharing one embedded PostgreSQL; a leftover lock from a killed server is
simply taken over, and so is the PostgreSQL it left running.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import psycopg
import structlog
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

from lunogram_server.app import build_app, settle_garbage_collector
from lunogram_server.background import background, loop_count
from lunogram_server.config import Settings
from lunogram_server.db import open_pool
from lunogram_server.db.embedded import EmbeddedPostgres
from lunogram_server.db.migrate import migrate
from lunogram_server.http.protocol import OneWriteHttpToolsProtocol
from lunogram_server.messaging import crypto
from lunogram_server.projects.service import Bootstrap, bootstrap

log = structlog.get_logger("lunogram.server")


class AlreadyRunning(RuntimeError):
    pass


@contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "serve.lock"
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise AlreadyRunning(
            f"another `lunogram serve` (pid {holder}) is using {data_dir}; stop it or pass --data-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


async def _bootstrap(conninfo: str, settings: Settings) -> Bootstrap | None:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        return await bootstrap(
            conn,
            settings.bootstrap_project,
            public_key=settings.bootstrap_public_key,
            secret_key=settings.bootstrap_secret_key,
        )


def banner(settings: Settings, boot: Bootstrap | None, out: TextIO) -> None:
    root = settings.base_url.removesuffix("/api")
    lines = [
        "",
        "Lunogram is running.",
        f"  API base URL : {settings.base_url}",
        f"  API docs     : {root}/docs",
        f"  Health       : {root}/healthz   Metrics: {root}/metrics",
    ]
    if boot is not None and boot.new_keys:
        lines.append(f"  Project      : {boot.project['name']} ({boot.project['id']})")
        for key in boot.new_keys:
            label = "Public key " if key.kind == "public" else "Secret key "
            use = "browser-safe" if key.kind == "public" else "server-side only"
            lines.append(f"  {label}  : {key.key}   ({use})")
        lines.append("  Keys are stored hashed and shown only now: keep them.")
    else:
        lines.append("  API keys     : stored hashed; `lunogram keys list` lists them, `lunogram keys create` adds one")
    lines += [
        "",
        "  Try it:",
        f"    curl -s {settings.base_url}/client/users -H 'Authorization: Bearer <secret key>' \\",
        '      -H \'Content-Type: application/json\' -d \'{"identifier":[{"external_id":"user_123"}]}\'',
        "",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()


class _Server(uvicorn.Server):
    """uvicorn's server, minus re-raising the stop signal once it has shut down gracefully.

    uvicorn re-raises a captured SIGTERM/SIGINT after shutdown; with the default handler SIGTERM would kill
    the process there and then, skipping the embedded PostgreSQL's stop and exiting with -15 instead of 0.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


_UVICORN_OPTIONS: dict[str, Any] = {
    "http": OneWriteHttpToolsProtocol,
    "log_level": "warning",
    "access_log": False,
    "lifespan": "on",
    "server_header": False,
    "timeout_graceful_shutdown": 10,
}


async def _serve(settings: Settings, conninfo: str, boot: Bootstrap | None) -> None:
    app = build_app(settings, conninfo)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, **_UVICORN_OPTIONS)
    server = _Server(config)

    async def announce() -> None:
        while not server.started and not server.should_exit:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.05)
        if server.started:
            banner(settings, boot, sys.stdout)

    task = asyncio.create_task(announce())
    try:
        await server.serve()
    finally:
        task.cancel()
    if not server.started:
        raise SystemExit(f"could not listen on {settings.host}:{settings.port}")


WORKER_CONNINFO_ENV = "LUNOGRAM_WORKER_CONNINFO"
WORKER_PARENT_ENV = "LUNOGRAM_WORKER_PARENT"


def _serve_workers(settings: Settings, conninfo: str, boot: Bootstrap | None) -> None:
    """`--workers N`: N processes accept on one socket bound here, each with its own event loop and pool.

    One asyncio loop tops out well before PostgreSQL does (bench/upsert.py: two processes on 2 cores give
    ~1.6x one). The children get the database from the environment and die with this process
    (PR_SET_PDEATHSIG, see app.app_from_env), so a `kill -9` here never leaves them holding the port.
    """
    os.environ[WORKER_CONNINFO_ENV] = conninfo
    os.environ[WORKER_PARENT_ENV] = str(os.getpid())
    if settings.encryption_key:  # the children read their settings from the environment
        os.environ[crypto.KEY_ENV] = settings.encryption_key
    config = uvicorn.Config(
        "lunogram_server.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        **_UVICORN_OPTIONS,
    )
    _refuse_a_port_in_use(settings.host, settings.port)
    sockets = [_reuse_port_socket(settings.host, settings.port) for _ in range(settings.workers)]
    banner(settings, boot, sys.stdout)
    supervisor = _OneSocketEach(config, sockets=sockets)
    supervisor.run()
    # uvicorn's supervisor gives up when a worker fails at startup, but returns as if asked to stop
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise SystemExit(f"the HTTP workers failed to start on {settings.host}:{settings.port}")


def _refuse_a_port_in_use(host: str, port: int) -> None:
    """SO_REUSEPORT would let a second `serve --workers` of the same user bind a port this one listens on,
    and the kernel would then split the connections between the two without a word. A bind without it
    fails if anything listens on the port (SO_REUSEADDR, as uvicorn does: TIME_WAIT leftovers do not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"could not listen on {host}:{port}: {exc.strerror}") from None


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    """One listening socket per worker on the same port: the kernel spreads new connections evenly
    across SO_REUSEPORT sockets, where one shared socket lets whichever worker wakes first take them all."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"could not listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _OneSocketEach(Multiprocess):
    """uvicorn's supervisor, starting each worker on its own socket (see _reuse_port_socket).

    uvicorn hands a replacement worker (after a crash, or SIGHUP) every socket, so the kernel's even spread
    would be lost: its checks and restarts run here one worker at a time, with only that worker's socket in
    view. SIGTTIN/SIGTTOU are refused: a worker removed would leave its socket listening with nobody
    accepting, and the connections the kernel sends there would hang.
    """

    def init_processes(self) -> None:
        for sock in self.sockets:
            process = Process(self.config, [sock])
            process.start()
            self.processes.append(process)

    def keep_subprocess_alive(self) -> None:
        self._each_alone(super().keep_subprocess_alive)

    def restart_all(self) -> None:
        self._each_alone(super().restart_all)

    def _each_alone(self, step: Callable[[], None]) -> None:
        sockets, processes = self.sockets, self.processes
        try:
            for index, sock in enumerate(sockets):
                if self.should_exit.is_set():
                    return
                self.sockets, self.processes = [sock], [processes[index]]
                step()
                processes[index] = self.processes[0]
        finally:
            self.sockets, self.processes = sockets, processes

    def handle_ttin(self) -> None:
        log.warning("SIGTTIN ignored: the number of workers is --workers")

    def handle_ttou(self) -> None:
        log.warning("SIGTTOU ignored: the number of workers is --workers")


def _run_uvloop(coro: Any) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        asyncio.run(coro)


async def _background_only(settings: Settings, conninfo: str) -> None:
    """`--role worker` / `--role scheduler`: those loops and no HTTP API, until SIGTERM or SIGINT."""
    pool = await open_pool(conninfo, min_size=1, max_size=loop_count(settings) + 1)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with background(pool, settings):
            settle_garbage_collector()
            sys.stdout.write(f"Lunogram {settings.role} is running ({loop_count(settings)} tasks).\n")
            sys.stdout.flush()
            await stop.wait()
    finally:
        await pool.close()


def _serve_on(settings: Settings, conninfo: str) -> None:
    migrate(conninfo)
    boot = asyncio.run(_bootstrap(conninfo, settings))
    if settings.role in ("worker", "scheduler"):
        _run_uvloop(_background_only(settings, conninfo))
    elif settings.workers > 1:
        _serve_workers(settings, conninfo, boot)
    else:
        _run_uvloop(_serve(settings, conninfo, boot))


def _encryption_key(settings: Settings) -> Settings:
    """The settings with the key that encrypts secrets at rest: the embedded server makes one in its data dir
    the first time (messaging/crypto.py). A malformed key stops the start with the rule."""
    if settings.embedded and not settings.encryption_key:
        path, made = crypto.ensure_key_file(settings.data_dir)
        if made:
            sys.stdout.write(
                f"Made the key that encrypts provider secrets: {path.resolve()} (mode 0600). Back it up with the "
                f"data dir; set {crypto.KEY_ENV} to use your own.\n"
            )
            sys.stdout.flush()
        settings = replace(settings, encryption_key=path.read_text().strip())
    try:
        crypto.keyring(settings)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    return settings


def serve(settings: Settings) -> None:
    if settings.database_url:
        _serve_on(_encryption_key(settings), settings.database_url)
        return
    with data_dir_lock(settings.data_dir):
        settings = _encryption_key(settings)
        embedded = EmbeddedPostgres(settings.pg_dir)
        conninfo, _ = embedded.start()
        try:
            _serve_on(settings, conninfo)
        finally:
            log.info("stopping embedded PostgreSQL", data_dir=str(settings.pg_dir))
            embedded.stop()
