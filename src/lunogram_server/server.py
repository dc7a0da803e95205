"""`lunogram serve`: database (embedded or DATABASE_URL), migrations, first-start keys, then the HTTP API.

What can stop a start (the port taken, the data directory, the database unreachable, a full disk) is
checked as early as it can be and reported by `describe_failure` in one line; `lunogram serve` prints that
line and exits 1 (the traceback only with LUNOGRAM_LOG_LEVEL=debug).

A lock file in the data directory (flock, so the kernel releases it when the process dies, `kill -9`
included) stops two servers from sharing one embedded PostgreSQL; a leftover lock from a killed server is
simply taken over, and so is the PostgreSQL it left running.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import pwd
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import psycopg
import psycopg.conninfo
import structlog
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

from lunogram_server.app import build_app, settle_garbage_collector
from lunogram_server.background import background, loop_connections
from lunogram_server.config import Settings
from lunogram_server.console import accounts
from lunogram_server.db import open_pool
from lunogram_server.db.embedded import EmbeddedPostgres, EmbeddedPostgresError, Watchdog
from lunogram_server.db.migrate import migrate
from lunogram_server.db.session import with_session_settings
from lunogram_server.http.protocol import OneWriteHttpToolsProtocol
from lunogram_server.messaging import crypto
from lunogram_server.projects.service import Bootstrap, InvalidKeyError, bootstrap

log = structlog.get_logger("lunogram.server")


class StartupError(RuntimeError):
    """`serve` cannot start; the message is one line saying why and what to do."""


class AlreadyRunning(StartupError):
    pass


@contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    path = data_dir / "serve.lock"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+")
    except PermissionError as exc:
        owner = _owner_of(data_dir)
        raise StartupError(
            f"cannot write to the data directory {data_dir} ({exc.strerror}: {exc.filename}){owner}; "
            f"run `lunogram serve` as its owner or choose another --data-dir"
        ) from None
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


def _owner_of(path: Path) -> str:
    for candidate in (path, *path.parents):
        try:
            uid = candidate.stat().st_uid
        except OSError:
            continue
        try:
            return f"; {candidate} belongs to {pwd.getpwuid(uid).pw_name}"
        except KeyError:
            return f"; {candidate} belongs to uid {uid}"
    return ""


def _where(conninfo: str) -> str:
    """A conninfo or URL without its password: user@host:port/dbname."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "an unreadable DATABASE_URL"
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"{user}{host}:{parts.get('port') or 5432}/{parts.get('dbname') or ''}"


def check_database(conninfo: str, what: str) -> None:
    """Connect once before anything else, so an unreachable database or a wrong password is one clear line."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        raise StartupError(f"{what} is not a valid PostgreSQL URL or conninfo: {_one_line(str(exc))}") from None
    timeout = {} if parts.get("connect_timeout") else {"connect_timeout": 10}
    try:
        psycopg.connect(conninfo, **timeout).close()  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        reason = _one_line(str(exc)).removeprefix("connection failed: ")
        raise StartupError(f"cannot connect to {what} ({_where(conninfo)}): {reason}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def describe_failure(exc: BaseException, settings: Settings) -> str:
    """One line for an exception that ended `serve`: ours carry it; the usual others are put in words."""
    if isinstance(exc, StartupError | EmbeddedPostgresError):
        return _one_line(str(exc))
    if isinstance(exc, InvalidKeyError):  # a pinned LUNOGRAM_BOOTSTRAP_*_KEY
        return f"LUNOGRAM_BOOTSTRAP_*_KEY: {_one_line(str(exc))}"
    where = f"DATABASE_URL ({_where(settings.database_url)})" if settings.database_url else "the embedded PostgreSQL"
    if isinstance(exc, psycopg.errors.DiskFull):
        return f"the disk of {where} is full: {_one_line(str(exc))}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"the disk is full (No space left on device: {exc.filename}); free some space"
    if isinstance(exc, psycopg.OperationalError):
        return f"lost the connection to {where}: {_one_line(str(exc))}"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    detail = _one_line(str(exc))
    return f"{type(exc).__name__}{': ' + detail if detail else ''} (LUNOGRAM_LOG_LEVEL=debug prints the traceback)"


@dataclass
class Started:
    """What the first steps of a start made: the first keys, and while the console has no user, a one-time
    link that creates its first owner."""

    boot: Bootstrap | None
    setup_token: str | None = None


async def _bootstrap(conninfo: str, settings: Settings) -> Started:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        boot = await bootstrap(
            conn,
            settings.bootstrap_project,
            public_key=settings.bootstrap_public_key,
            secret_key=settings.bootstrap_secret_key,
        )
        token = None
        if settings.role in ("all", "api"):
            token = await accounts.setup_link(conn, settings.console.link_hours)
        return Started(boot, token)


def banner(settings: Settings, started: Started | Bootstrap | None, out: TextIO) -> None:
    if not isinstance(started, Started):
        started = Started(started)
    boot = started.boot
    root = settings.base_url.removesuffix("/api")
    console_root = settings.public_url.rstrip("/") + "/console"
    lines = [
        "",
        "Lunogram is running.",
        f"  API base URL : {settings.base_url}",
        f"  API docs     : {root}/docs",
        f"  Console      : {console_root}",
        f"  Health       : {root}/healthz   Metrics: {root}/metrics",
    ]
    if started.setup_token is not None:
        hours = f"{settings.console.link_hours:g}"
        lines.append(
            f"  First owner  : {console_root}/setup/{started.setup_token}   (opens once, within {hours} h: "
            "creates the console's first owner)"
        )
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


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    # h11's name for the largest request head; our httptools protocol honours it too (http/protocol.py)
    return {**_UVICORN_OPTIONS, "h11_max_incomplete_event_size": settings.access.max_header_bytes}


async def _serve(settings: Settings, conninfo: str, boot: Started) -> None:
    app = build_app(settings, conninfo)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, **_uvicorn_options(settings))
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
        raise StartupError(f"could not start the HTTP API on {settings.host}:{settings.port} (see the log above)")


WORKER_CONNINFO_ENV = "LUNOGRAM_WORKER_CONNINFO"
WORKER_PARENT_ENV = "LUNOGRAM_WORKER_PARENT"


def _serve_workers(settings: Settings, conninfo: str, boot: Started) -> None:
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
        **_uvicorn_options(settings),
    )
    _refuse_a_port_in_use(settings.host, settings.port)
    sockets = [_reuse_port_socket(settings.host, settings.port) for _ in range(settings.workers)]
    banner(settings, boot, sys.stdout)
    supervisor = _OneSocketEach(config, sockets=sockets)
    supervisor.run()
    # uvicorn's supervisor gives up when a worker fails at startup, but returns as if asked to stop
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise StartupError(f"the HTTP workers failed to start on {settings.host}:{settings.port}")


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
            raise StartupError(f"could not listen on {host}:{port}: {exc.strerror}; {_port_remedy(exc)}") from None


def _port_remedy(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "stop what uses it or choose another --port (LUNOGRAM_PORT)"
    return "choose another --host or --port"


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
        raise StartupError(f"could not listen on {host}:{port}: {exc.strerror}; {_port_remedy(exc)}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


REPLACEMENT_READY_SECONDS = 60  # how long a SIGHUP replacement worker may take to be ready


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
        # uvicorn waits `timeout_worker_healthcheck` (5 s) for a replacement to be ready, then keeps the old
        # worker and gives the reload up: less than a worker's start on two busy cores (importing the app
        # alone takes ~1.5 s on an idle one). The same setting bounds each health ping of a running worker,
        # which should stay short, so only the reload gets longer.
        ping_seconds = self.config.timeout_worker_healthcheck
        self.config.timeout_worker_healthcheck = REPLACEMENT_READY_SECONDS
        try:
            self._each_alone(super().restart_all)
        finally:
            self.config.timeout_worker_healthcheck = ping_seconds

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
    pool = await open_pool(
        with_session_settings(conninfo, settings.limits),
        min_size=1,
        max_size=loop_connections(settings) + 1,
        wait_seconds=settings.pool_timeout_seconds,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with background(pool, settings):
            settle_garbage_collector()
            sys.stdout.write(f"Lunogram {settings.role} is running.\n")
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
    if settings.role in ("all", "api"):
        # before the database starts: a port in use should not cost an initdb to find out
        _refuse_a_port_in_use(settings.host, settings.port)
    if settings.database_url:
        check_database(settings.database_url, "DATABASE_URL")
        _serve_on(_encryption_key(settings), settings.database_url)
        return
    with data_dir_lock(settings.data_dir):
        settings = _encryption_key(settings)
        embedded = EmbeddedPostgres(settings.pg_dir)
        conninfo, _ = embedded.start()
        watchdog = Watchdog(embedded).start()  # this server owns the cluster: it comes back if it dies
        try:
            _serve_on(settings, conninfo)
        finally:
            watchdog.stop()
            log.info("stopping embedded PostgreSQL", data_dir=str(settings.pg_dir))
            embedded.stop()
