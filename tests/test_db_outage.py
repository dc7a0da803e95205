"""The database goes away under load and comes back (issue 14, item 9).

Client threads post event batches and upserts (fast lane, group commit, keyed group commit, and the full
FastAPI stack through a browser's `Origin`), read profiles and poll `/readyz`, while PostgreSQL's
postmaster is SIGKILLed:

1. embedded: `lunogram serve` without DATABASE_URL must notice and start its cluster again by itself
   (crash recovery);
2. DATABASE_URL: a cluster this test runs, killed the same way and started again by the test, as an
   operator would.

Both: during the outage every answer is a 2xx or a 503 problem JSON with Retry-After (never a 500, never
slower than the client's timeout), `/readyz` says 503; within seconds of the database being back the same
server process answers again; every acknowledged event reaches history exactly once and every acknowledged
upsert is stored; workers (woken through their LISTEN connection: polling is set to 30 s here), the
scheduler and the lists loop work on afterwards. Only processes these tests start are killed.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from helpers import Server, ident, loopback_client, uid, wait_until
from lunogram_server.db.embedded import EmbeddedPostgres

CLIENT_TIMEOUT = 10.0  # the Go SDK's default
USERS = 30
RECOVERY_SECONDS = 5.0  # database back -> the server answers 2xx again, at most
# Workers look for work on their own only every 30 s: events processed sooner were announced through the
# LISTEN connection, which must therefore have come back too.
SERVER_ENV = {"LUNOGRAM_EVENT_POLL_SECONDS": "30", "LUNOGRAM_KEY_CACHE_SECONDS": "0.2"}


@pytest.fixture
def scratch() -> Iterator[Path]:
    # mkdtemp, not tmp_path: as root PostgreSQL runs as user `lunogram`, who must traverse the parents
    root = Path(tempfile.mkdtemp(prefix="lunogram-outage-")).resolve()
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def postmaster_pid(pg_dir: Path) -> int:
    return int((pg_dir / "postmaster.pid").read_text().split("\n", 1)[0])


def kill_postmaster(pg_dir: Path) -> int:
    pid = postmaster_pid(pg_dir)
    os.kill(pid, signal.SIGKILL)
    return pid


def database_answers(conninfo: str) -> bool:
    try:
        with psycopg.connect(conninfo, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


# -- load ---------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What one client thread saw. An answer breaks the rules unless it is the route's 2xx or a 503 problem
    JSON with Retry-After; a timeout or a dropped connection breaks them too (the HTTP server never stops)."""

    name: str
    ok: int
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    broken: list[str] = field(default_factory=list)
    slowest: float = 0.0
    last_ok: float = 0.0  # monotonic time of the latest 2xx
    acked: list[Any] = field(default_factory=list)
    sent: int = 0

    def send(self, request: Callable[[], httpx.Response], ok: tuple[int, ...] = ()) -> httpx.Response | None:
        self.sent += 1
        started = time.monotonic()
        try:
            response = request()
        except httpx.HTTPError as exc:
            self.broken.append(f"{type(exc).__name__}: {exc}")
            return None
        finally:
            self.slowest = max(self.slowest, time.monotonic() - started)
        self.statuses[response.status_code] += 1
        if response.status_code in (self.ok, *ok):
            self.last_ok = time.monotonic()
            return response
        if response.status_code != 503:
            self.broken.append(f"{response.status_code}: {response.text[:300]}")
            return None
        problem = response.json() if response.headers.get("content-type") == "application/json" else None
        if not (isinstance(problem, dict) and problem.get("status") == 503 and problem.get("title")):
            self.broken.append(f"503 without problem JSON: {response.headers} {response.text[:300]}")
        elif not problem.get("detail", "").startswith("database: "):
            self.broken.append(f"503 for another reason: {problem}")
        elif not response.headers.get("retry-after", "").isdigit():
            self.broken.append(f"503 without Retry-After: {response.headers}")
        return None


class Load:
    """Client threads against one server until `finish()`."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.stop = threading.Event()
        self.tallies: list[Tally] = []
        self.readyz: list[tuple[float, int]] = []
        self.failures: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self.run_tag = uid("outage")
        loops: list[tuple[Tally, Callable[[httpx.Client, Tally], None]]] = [
            (Tally("events-0", 202), self._events),
            (Tally("events-1", 202), self._events),
            (Tally("upserts", 200), self._upserts),
            (Tally("keyed upserts", 200), self._keyed_upserts),
            (Tally("browser upserts", 200), self._browser_upserts),
            (Tally("reads", 200), self._reads),
        ]
        for tally, loop in loops:
            self.tallies.append(tally)
            self.threads.append(threading.Thread(target=self._run, args=(tally, loop), daemon=True))
        self.threads.append(threading.Thread(target=self._poll_readyz, daemon=True))

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=CLIENT_TIMEOUT + 5)
        assert not any(thread.is_alive() for thread in self.threads), "a client thread did not stop"
        if self.failures:
            raise self.failures[0]

    def tally(self, name: str) -> Tally:
        return next(t for t in self.tallies if t.name == name)

    def acked_events(self) -> list[int]:
        return [seq for t in self.tallies if t.name.startswith("events") for seq in t.acked]

    def acked_upserts(self) -> list[tuple[str, int]]:
        return [item for t in self.tallies if "upserts" in t.name for item in t.acked]

    def all_writes_acked_since(self, moment: float) -> bool:
        return all(t.last_ok > moment for t in self.tallies)

    def readyz_since(self, moment: float) -> set[int]:
        return {status for at, status in list(self.readyz) if at > moment}

    def ready_now(self, since: float) -> bool:
        """The latest /readyz answer, given after `since`, was 200."""
        return bool(self.readyz) and self.readyz[-1][0] > since and self.readyz[-1][1] == 200

    def answered_503(self) -> int:
        return sum(t.statuses[503] for t in self.tallies)

    def _run(self, tally: Tally, loop: Callable[[httpx.Client, Tally], None]) -> None:
        headers = {"Authorization": f"Bearer {self.server.secret_key}"}
        try:
            with loopback_client(base_url=self.server.base_url, headers=headers, timeout=CLIENT_TIMEOUT) as client:
                while not self.stop.is_set():
                    loop(client, tally)
                    time.sleep(0.01)  # paced a little: 2 cores are shared with the server and PostgreSQL
        except BaseException as exc:  # re-raised by finish() in the test's thread
            self.failures.append(exc)

    def _events(self, client: httpx.Client, tally: Tally) -> None:
        sender = int(tally.name.rsplit("-", 1)[1])
        seqs = [sender * 10_000_000 + tally.sent * 100 + n for n in range(20)]
        batch = [
            {"name": "outage.tick", "identifier": [ident(f"{self.run_tag}_{seq % USERS}")], "data": {"seq": seq}}
            for seq in seqs
        ]
        if tally.send(lambda: client.post("/client/users/events", json=batch)) is not None:
            tally.acked += seqs

    def _upsert(self, client: httpx.Client, tally: Tally, headers: dict[str, str]) -> None:
        n = tally.sent
        external_id = f"{self.run_tag}_{tally.name.replace(' ', '_')}_{n}"
        body = {"identifier": [ident(external_id)], "data": {"n": n}}
        response = tally.send(lambda: client.post("/client/users", json=body, headers=headers))
        if response is not None:
            assert response.json()["data"]["n"] == n, response.text
            tally.acked.append((external_id, n))

    def _upserts(self, client: httpx.Client, tally: Tally) -> None:
        self._upsert(client, tally, {})

    def _keyed_upserts(self, client: httpx.Client, tally: Tally) -> None:
        self._upsert(client, tally, {"Idempotency-Key": uid("key")})

    def _browser_upserts(self, client: httpx.Client, tally: Tally) -> None:
        # an Origin sends the request through the full FastAPI stack (CORS), not the fast lane
        self._upsert(client, tally, {"Origin": "https://app.example"})

    def _reads(self, client: httpx.Client, tally: Tally) -> None:
        acked = self.acked_upserts()
        external_id = acked[-1][0] if acked else "nobody-yet"
        tally.send(lambda: client.get("/admin/users", params={"external_id": external_id}), ok=(404,))

    def _poll_readyz(self) -> None:
        # one kept client: a new one per request (its TLS context alone) took long enough on a loaded machine
        # that a short outage (serve restarts its PostgreSQL within a second or two) could fall between polls
        try:
            with loopback_client(base_url=self.server.root_url, timeout=CLIENT_TIMEOUT) as client:
                while not self.stop.is_set():
                    try:
                        status = client.get("/readyz").status_code
                    except httpx.HTTPError:
                        status = -1
                    self.readyz.append((time.monotonic(), status))
                    self.stop.wait(0.02)
        except BaseException as exc:
            self.failures.append(exc)


# -- the scenario -------------------------------------------------------------------------------------------


def ride_out_an_outage(
    server: Server, conninfo: str, kill: Callable[[], None], bring_back: Callable[[], None] | None
) -> None:
    """Load, `kill`, `bring_back` (None: the server must), recovery, then count acknowledged vs stored."""
    assert server.process is not None
    server_pid = server.process.pid
    load = Load(server).start()
    try:
        wait_until(
            lambda: len(load.acked_events()) >= 2000 and all(t.last_ok for t in load.tallies),
            timeout=60,
            what="every client's first acknowledgements",
        )
        killed_at = time.monotonic()
        kill()
        wait_until(lambda: 503 in load.readyz_since(killed_at), timeout=10, what="/readyz to say 503")
        if bring_back is not None:
            # a longer outage than the embedded restart: requests also meet an empty, unreachable pool
            wait_until(lambda: load.answered_503() >= 30, timeout=20, what="503s during the outage")
            bring_back()
        wait_until(lambda: database_answers(conninfo), timeout=60, interval=0.02, what="PostgreSQL to answer")
        back_at = time.monotonic()
        wait_until(
            lambda: load.all_writes_acked_since(back_at) and load.ready_now(back_at),
            timeout=RECOVERY_SECONDS,
            what="every client acknowledged again and /readyz 200 after the database came back",
        )
        recovered_in = time.monotonic() - back_at
        mark = len(load.acked_events())
        wait_until(lambda: len(load.acked_events()) > mark + 1000, timeout=30, what="load after the recovery")
    finally:
        load.finish()
    assert server.process.poll() is None, "the server must ride the outage out, not exit"
    assert server.process.pid == server_pid

    context = f"server log {server.log_path}; recovered in {recovered_in:.2f}s"
    for tally in load.tallies:
        assert tally.broken == [], f"{tally.name}: {tally.broken[:5]} of {len(tally.broken)}; {context}"
        assert tally.slowest < CLIENT_TIMEOUT, f"{tally.name}: an answer took {tally.slowest:.1f}s; {context}"
        assert set(tally.statuses) <= {tally.ok, 404, 503}, f"{tally.name}: {dict(tally.statuses)}"
    assert load.answered_503() > 0, "nobody noticed the outage"

    with psycopg.connect(conninfo, autocommit=True) as conn:
        wait_until(
            lambda: conn.execute("SELECT count(*) FROM event_inbox").fetchone() == (0,),
            timeout=60,
            what="the inbox to drain (no dead letters either)",
        )
        history = conn.execute("SELECT (data ->> 'seq')::bigint FROM user_events WHERE name = 'outage.tick'")
        counts = collections.Counter(seq for (seq,) in history.fetchall())
        acked_ids = [external_id for external_id, _ in load.acked_upserts()]
        rows = conn.execute(
            "SELECT y.external_id, (u.data ->> 'n')::int FROM user_identifiers AS y "
            "JOIN users AS u ON u.id = y.user_id WHERE y.external_id = ANY(%s)",
            (acked_ids,),
        ).fetchall()
    acked = load.acked_events()
    missing = sorted(set(acked) - counts.keys())
    duplicated = sorted(seq for seq, n in counts.items() if n > 1)
    assert missing == [], f"{len(missing)} of {len(acked)} acknowledged events not in history; {context}"
    assert duplicated == [], f"{len(duplicated)} events in history twice; {context}"
    stored = dict(rows)
    lost = [item for item in load.acked_upserts() if stored.get(item[0]) != item[1]]
    assert lost == [], f"{len(lost)} of {len(acked_ids)} acknowledged upserts not stored: {lost[:5]}; {context}"

    background_work_resumes(server, conninfo)
    print(  # shown with -s: what the outage looked like
        f"\n{len(acked)} events and {len(acked_ids)} upserts acknowledged, all stored; recovered in "
        f"{recovered_in:.2f}s; "
        + "; ".join(f"{t.name}: {dict(t.statuses)} slowest {t.slowest:.2f}s" for t in load.tallies)
    )


def background_work_resumes(server: Server, conninfo: str) -> None:
    """After the outage: a new event is applied (woken by LISTEN), a due schedule fires, a list fills."""
    tag = uid("after")
    with server.client() as client, psycopg.connect(conninfo, autocommit=True) as conn:
        started = time.monotonic()
        events = [{"name": "after.outage", "identifier": [ident(tag)], "data": {"tag": tag}}]
        assert client.post("/client/users/events", json=events).status_code == 202
        in_history = "SELECT count(*) FROM user_events WHERE name = %s AND data ->> 'tag' = %s"
        wait_until(lambda: conn.execute(in_history, ("after.outage", tag)).fetchone() == (1,), timeout=20)
        assert time.monotonic() - started < 10, "the event waited for a worker's poll: no wake-up"

        schedule = {
            "name": tag,
            "identifier": [ident(tag)],
            "scheduled_at": "2000-01-01T00:00:00Z",
            "data": {"tag": tag},
        }
        assert client.post("/client/users/scheduled", json=schedule).status_code == 202
        fired = f"scheduled.{tag}"
        wait_until(lambda: conn.execute(in_history, (fired, tag)).fetchone() == (1,), timeout=20)

        assert client.post("/client/users", json={"identifier": [ident(tag)], "data": {"tag": tag}}).status_code == 200
        rule = {"type": "property", "path": "data.tag", "op": "equals", "value": tag}
        made = client.post("/admin/lists", json={"name": tag, "rule": rule})
        assert made.status_code == 201, made.text

        def filled() -> bool:
            listed = client.get(f"/admin/lists/{made.json()['id']}").json()
            return bool(listed["state"] == "ready" and listed["member_count"] == 1)

        wait_until(filled, timeout=20, what="the lists loop to fill a new list")


# -- the tests ----------------------------------------------------------------------------------------------


def test_embedded_postgres_killed_under_load_is_restarted_by_serve(
    server_factory: Callable[..., Server], scratch: Path
) -> None:
    data_dir = scratch / "data"
    pg_dir = (data_dir / "pg").resolve()
    # two HTTP processes: `serve` itself watches PostgreSQL, each process has its own pool to recover
    env = {**SERVER_ENV, "DATABASE_URL": "", "LUNOGRAM_DATA_DIR": str(data_dir), "LUNOGRAM_WORKERS": "2"}
    server = server_factory(extra_env=env)
    embedded = EmbeddedPostgres(pg_dir)
    killed: list[int] = []
    try:
        ride_out_an_outage(server, embedded.conninfo(), lambda: killed.append(kill_postmaster(pg_dir)), None)
        assert postmaster_pid(pg_dir) != killed[0]
        assert embedded.postmaster_alive()
        assert "embedded PostgreSQL is running again" in server.log()
    finally:
        assert server.stop() == 0, server.log()
    assert not embedded.postmaster_alive(), "SIGTERM stops the embedded PostgreSQL as before"


def test_database_url_postgres_killed_and_restarted_under_load(
    server_factory: Callable[..., Server], scratch: Path
) -> None:
    external = EmbeddedPostgres(scratch / "pg")
    conninfo, _ = external.start()
    try:
        server = server_factory(database_url=conninfo, extra_env=SERVER_ENV)

        def bring_back() -> None:
            # the dead postmaster may not be reaped yet (PostgreSQL then refuses to start): try again
            def started() -> bool:
                try:
                    external.start()
                except Exception:
                    return False
                return True

            wait_until(started, timeout=60, interval=0.2, what="PostgreSQL to start again")

        ride_out_an_outage(server, conninfo, lambda: kill_postmaster(external.pg_dir), bring_back)
        assert server.stop() == 0, server.log()
    finally:
        external.stop()
