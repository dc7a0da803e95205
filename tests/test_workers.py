"""`lunogram serve --workers N`: N uvicorn processes on one port, each on its own SO_REUSEPORT socket.

Everything here is a real process: the parent is found by the pid of the `serve` we start, its workers by
/proc (children whose command line is multiprocessing's `spawn_main`), which worker answered a connection
by matching the connection in /proc/net/tcp to the socket inodes each worker holds. Every process started
here is killed at the end of the module, failures included, workers orphaned by a failed test too.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from helpers import PgCluster, Server, answers, free_port, ident, uid, wait_until
from lunogram_server.db.embedded import EmbeddedPostgres

WORKERS = {"LUNOGRAM_WORKERS": "2"}
LISTEN = "0A"  # TCP state in /proc/net/tcp


# -- /proc ---------------------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that may never come counts as gone)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == parent and stat[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return sorted(found)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def workers_of(parent: int) -> list[int]:
    """The uvicorn workers of a `serve --workers N` (not multiprocessing's resource tracker)."""
    return [pid for pid in children(parent) if b"spawn_main" in _cmdline(pid)]


def is_worker_of(pid: int, parent: int) -> bool:
    """`pid` is still a worker started by `parent`, even if `parent` is dead (pids can be reused)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return alive(pid) and f"LUNOGRAM_WORKER_PARENT={parent}".encode() in environ


def workers_started_by(parent: int) -> list[int]:
    """Live workers of `parent`, its children or, once it is gone, orphans."""
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and is_worker_of(int(e.name), parent)]


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _tcp_table() -> list[tuple[int, int, str, int]]:
    """(local port, remote port, state, inode) of every TCP socket, IPv4 and IPv6."""
    rows = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            rows.append((int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16), f[3], int(f[9])))
    return rows


def listeners(port: int) -> set[int]:
    """Inodes of the sockets listening on `port`."""
    return {inode for local, _, state, inode in _tcp_table() if local == port and state == LISTEN}


def owner_of_connection(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """Which of `pids` holds the server side of the connection from `client_port`."""
    inodes = {
        inode
        for local, remote, state, inode in _tcp_table()
        if local == server_port and remote == client_port and state != LISTEN and inode
    }
    owners = [pid for pid in pids if _socket_inodes(pid) & inodes]
    return owners[0] if len(owners) == 1 else None


def answering_workers(server: Server, parent: int, connections: int = 24) -> list[int]:
    """Open `connections` separate TCP connections, one request each; the worker pid that served each."""
    pids = workers_of(parent)
    served = []
    opened = []
    try:
        for _ in range(connections):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            opened.append(conn)
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            assert conn.sock is not None
            client_port = conn.sock.getsockname()[1]
            # the connection is still open (keep-alive): its server end sits in exactly one worker
            owner = wait_until(
                lambda p=client_port: owner_of_connection(server.port, p, pids), timeout=5, what="connection owner"
            )
            served.append(owner)
    finally:
        for conn in opened:
            conn.close()
    return served


def refused(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    except httpx.ConnectError:
        return True
    return False


# -- fixtures ------------------------------------------------------------------------------------------------


class Tracker:
    """Every server and worker pid seen here, so that the module's end can kill what a failure left behind."""

    def __init__(self) -> None:
        self.servers: list[Server] = []
        self.workers: list[tuple[int, int]] = []  # (worker, parent)

    def saw(self, server: Server) -> list[int]:
        assert server.process is not None
        pids = workers_of(server.process.pid)
        self.workers += [(pid, server.process.pid) for pid in pids if (pid, server.process.pid) not in self.workers]
        return pids

    def cleanup(self, only: Server | None = None) -> None:
        for server in self.servers if only is None else [only]:
            if server.process is None:
                continue
            if server.process.poll() is None:
                server.process.kill()
                server.process.wait(timeout=30)
            for pid, parent in self.workers:
                if parent == server.process.pid and is_worker_of(pid, parent):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def tracker() -> Iterator[Tracker]:
    made = Tracker()
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def workers_server(server_factory: Callable[..., Server], tracker: Tracker) -> Server:
    server = server_factory(extra_env=WORKERS, start=False)
    tracker.servers.append(server)
    server.start()
    assert server.process is not None
    wait_until(lambda: len(tracker.saw(server)) == 2, timeout=30, what="two workers")
    return server


def upsert(server: Server, external_id: str, **data: str) -> dict[str, object]:
    with server.client() as c:
        response = c.post("/client/users", json={"identifier": [ident(external_id)], "data": data})
    assert response.status_code == 200, response.text
    return dict(response.json())


def find(server: Server, external_id: str) -> httpx.Response:
    with server.client() as c:
        return c.get("/admin/users", params={"external_id": external_id})


# -- DATABASE_URL mode ---------------------------------------------------------------------------------------


def test_two_workers_both_serve_and_a_dead_one_is_replaced(workers_server: Server, tracker: Tracker) -> None:
    server = workers_server
    assert server.process is not None
    parent = server.process.pid
    log = server.log()
    assert "Lunogram is running" in log
    assert f"http://127.0.0.1:{server.port}/api" in log
    assert "Traceback" not in log

    ext = uid()
    user = upsert(server, ext, plan="pro")
    found = find(server, ext)
    assert found.status_code == 200, found.text
    assert found.json()["id"] == user["id"]

    first = workers_of(parent)
    assert len(first) == 2
    # each worker listens on a socket of its own (the parent holds them all, to hand to replacements)
    own = [_socket_inodes(pid) & listeners(server.port) for pid in first]
    assert [len(s) for s in own] == [1, 1], own
    assert own[0] != own[1]

    served = answering_workers(server, parent)
    assert set(served) == set(first), f"connections went to {served}, workers are {first}"

    # a worker killed outright: the others keep answering and the supervisor starts a replacement
    victim, survivor = first
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not alive(victim), timeout=10, what="the killed worker to die")
    # a connection the kernel hashes to the dead worker's socket waits in its backlog (the parent keeps the
    # socket open) until the replacement accepts it: slow, never refused
    for _ in range(10):
        assert httpx.get(f"{server.root_url}/readyz", timeout=30).status_code == 200

    def replaced() -> list[int]:
        now = workers_of(parent)
        return now if len(now) == 2 and victim not in now and survivor in now else []

    now = wait_until(replaced, timeout=30, what="a replacement worker")
    tracker.saw(server)
    replacement = next(pid for pid in now if pid != survivor)
    # the replacement serves: readiness first (its app starts after the process does), then real traffic
    wait_until(lambda: replacement in answering_workers(server, parent, connections=8), timeout=30, what="replacement")
    own = [_socket_inodes(pid) & listeners(server.port) for pid in now]
    assert [len(s) for s in own] == [1, 1], f"after the restart each worker should still have one socket: {own}"
    assert find(server, ext).status_code == 200
    assert server.process.poll() is None


def test_sighup_replaces_each_worker_on_its_own_socket_and_sigttou_is_refused(
    workers_server: Server, tracker: Tracker
) -> None:
    server = workers_server
    assert server.process is not None
    parent = server.process.pid
    before = workers_of(parent)
    assert len(before) == 2

    # SIGTTOU would retire a worker and leave its socket listening with nobody accepting
    server.process.send_signal(signal.SIGTTOU)
    wait_until(lambda: "SIGTTOU ignored" in server.log(), timeout=10, what="SIGTTOU to be refused")
    assert workers_of(parent) == before
    assert len(set(answering_workers(server, parent, connections=16))) == 2

    # SIGHUP: uvicorn replaces the workers one by one
    server.process.send_signal(signal.SIGHUP)
    after = wait_until(
        lambda: (now := workers_of(parent)) and len(now) == 2 and not set(now) & set(before) and now,
        # one at a time, each new worker importing the app before the next old one goes: 15 s alone, over 40 s
        # on two cores shared with two other test processes
        timeout=120,
        what="both workers to be replaced",
    )
    tracker.saw(server)
    own = [_socket_inodes(pid) & listeners(server.port) for pid in after]
    assert [len(s) for s in own] == [1, 1], f"each new worker should have one socket of its own: {own}"
    assert own[0] != own[1]
    wait_until(
        lambda: set(answering_workers(server, parent, connections=16)) == set(after), timeout=30, what="new workers"
    )
    assert server.process.poll() is None


def test_sigterm_stops_the_workers_and_exits_zero(workers_server: Server) -> None:
    server = workers_server
    assert server.process is not None
    parent = server.process.pid
    pids = workers_of(parent)
    assert len(pids) == 2
    others = [pid for pid in children(parent) if pid not in pids]  # multiprocessing's resource tracker
    assert server.stop(signal.SIGTERM) == 0, server.log()
    # the supervisor joins its workers before it exits; the tracker leaves when its pipe closes
    assert [pid for pid in pids if alive(pid)] == []
    wait_until(lambda: not any(alive(pid) for pid in others), timeout=10, what="the resource tracker to exit")
    assert refused(server.port)
    assert listeners(server.port) == set()
    assert "Traceback" not in server.log()


def test_kill_9_of_the_parent_takes_the_workers_down(workers_server: Server, tracker: Tracker, tmp_path: Path) -> None:
    server = workers_server
    assert server.process is not None
    parent = server.process.pid
    ext = uid()
    user = upsert(server, ext, plan="team")
    pids = workers_of(parent)
    assert len(pids) == 2

    server.kill()
    assert server.process.returncode == -signal.SIGKILL
    # PR_SET_PDEATHSIG: the kernel sends each worker SIGTERM, and they shut down by themselves
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=20, what="orphaned workers to exit")
    # also one the supervisor may have been replacing at the moment of the kill (it exits on finding its
    # parent gone: app.py _die_with_parent)
    wait_until(lambda: workers_started_by(parent) == [], timeout=20, what="every worker of the parent to exit")
    wait_until(lambda: not listeners(server.port), timeout=10, what="the port to be released")
    assert refused(server.port)

    # the same port and database again
    again = Server(port=server.port, env=dict(server.env), log_path=tmp_path / "again.log")
    tracker.servers.append(again)
    again.start()
    assert again.process is not None
    wait_until(lambda: len(tracker.saw(again)) == 2, timeout=30, what="two workers")
    found = find(again, ext)
    assert found.status_code == 200, found.text
    assert found.json()["id"] == user["id"]
    assert found.json()["data"] == {"plan": "team"}
    assert again.stop() == 0, again.log()


def test_a_second_workers_server_on_the_same_port_is_refused(
    workers_server: Server, pg: PgCluster, tracker: Tracker, tmp_path: Path
) -> None:
    """Two SO_REUSEPORT listeners of one user may share a port: the kernel would split the traffic between
    two servers (on two databases, here) without a word. The second one must refuse to start instead."""
    first = workers_server
    second = Server(port=first.port, env=dict(first.env, DATABASE_URL=pg.new_database()), log_path=tmp_path / "2.log")
    tracker.servers.append(second)
    with second.log_path.open("ab") as handle:
        second.process = subprocess.Popen(
            [sys.executable, "-m", "lunogram_server", "serve", "--port", str(first.port), "--workers", "2"],
            env=second.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    process = second.process
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        tracker.saw(second)
        pytest.fail(f"a second server started on port {first.port}, sharing it with the first:\n{second.log()}")
    output = second.log()
    assert code != 0, output
    assert f"could not listen on 127.0.0.1:{first.port}" in output
    assert "Lunogram is running" not in output
    assert "Traceback" not in output
    assert workers_started_by(process.pid) == []
    assert httpx.get(f"{first.root_url}/readyz", timeout=5).status_code == 200


def test_port_taken_by_a_plain_socket(pg: PgCluster) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUNOGRAM_") and k != "DATABASE_URL"}
        env.update(DATABASE_URL=pg.new_database(), PYTHONUNBUFFERED="1")
        result = subprocess.run(
            [sys.executable, "-m", "lunogram_server", "serve", "--port", str(port), "--workers", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"could not listen on 127.0.0.1:{port}" in output
    assert "Lunogram is running" not in output
    assert "Traceback" not in output


# -- embedded mode -------------------------------------------------------------------------------------------


def postmasters(pg_dir: Path) -> list[int]:
    """Live `postgres` processes whose command line names `pg_dir`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            argv = _cmdline(int(entry.name)).split(b"\0")
            if Path(argv[0].decode(errors="replace")).name == "postgres" and str(pg_dir).encode() in argv:
                found.append(int(entry.name))
    return found


def test_embedded_with_workers_flag_stops_workers_and_postgres(tracker: Tracker) -> None:
    # mkdtemp, not tmp_path: as root PostgreSQL runs as user `lunogram`, who must traverse the parents
    root = Path(tempfile.mkdtemp(prefix="lunogram-workers-")).resolve()
    root.chmod(0o755)
    data_dir = root / "data"
    pg_dir = (data_dir / "pg").resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNOGRAM_") and k != "DATABASE_URL"}
    env.update(PYTHONUNBUFFERED="1", LUNOGRAM_DATA_DIR=str(data_dir))
    server = Server(port=free_port(), env=env, log_path=root / "serve.log")
    tracker.servers.append(server)
    try:
        with server.log_path.open("ab") as handle:
            server.process = subprocess.Popen(
                [sys.executable, "-m", "lunogram_server", "serve", "--port", str(server.port), "--workers", "2"],
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        process = server.process

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"server exited with {process.returncode}:\n{server.log()}")
            return answers(f"{server.root_url}/readyz")

        wait_until(ready, timeout=120, what="embedded server readiness")
        assert "Lunogram is running" in server.log()
        pids = wait_until(lambda: len(tracker.saw(server)) == 2 and workers_of(process.pid), what="two workers")
        assert len(pids) == 2
        assert postmasters(pg_dir), "the embedded PostgreSQL should run while serve does"
        assert len(set(answering_workers(server, process.pid, connections=16))) == 2

        assert server.stop(signal.SIGTERM) == 0, server.log()
        assert not any(alive(pid) for pid in pids)
        wait_until(lambda: not postmasters(pg_dir), timeout=10, what="the embedded PostgreSQL to exit")
        assert not (pg_dir / "postmaster.pid").exists()
        assert refused(server.port)
        assert "Traceback" not in server.log()
    finally:
        tracker.cleanup(only=server)
        embedded = EmbeddedPostgres(pg_dir)
        if embedded.is_initialized():
            embedded.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_workers_that_fail_at_startup_make_serve_fail(pg: PgCluster, tmp_path: Path) -> None:
    """A worker's app fails to start (here its pool settings, which only the workers use): uvicorn's
    supervisor gives up, and `serve` must say so with a non-zero exit, not 0 as if stopped on purpose."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNOGRAM_") and k != "DATABASE_URL"}
    env.update(
        DATABASE_URL=pg.new_database(),
        PYTHONUNBUFFERED="1",
        LUNOGRAM_POOL_MIN_SIZE="50",
        LUNOGRAM_POOL_MAX_SIZE="5",
    )
    log = tmp_path / "serve.log"
    with log.open("ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "lunogram_server", "serve", "--port", str(free_port()), "--workers", "2"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    output = log.read_text(errors="replace")
    assert code == 1, output
    assert "the HTTP workers failed to start" in output
    assert workers_started_by(process.pid) == []
