"""`lunogram serve` exactly as a new user runs it: no DATABASE_URL, an embedded PostgreSQL in a data dir.

The embedded steps share one data directory and run in file order (initdb takes seconds): first start and
its banner, SIGTERM, restart, a refused second server, `kill -9` and adoption, pinned keys. A step whose
predecessor failed is skipped rather than failing for the same reason again. Every process started here is
stopped at the end of the module, failures included.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import PgCluster, Server, answers, free_port, ident, loopback_client, uid, wait_until
from lunogram_server.db.embedded import EmbeddedPostgres
from messaging_servers import SmtpServer

ROOT = Path(__file__).resolve().parent.parent
KEY = re.compile(r"\b((?:pk|sk)_[A-Za-z0-9_-]{16,})")


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus every Lunogram knob (no DATABASE_URL, no pinned keys), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNOGRAM_") and k != "DATABASE_URL"}
    env.update(PYTHONUNBUFFERED="1", LUNOGRAM_KEY_CACHE_SECONDS="0.2", **extra)
    return env


def postmasters(pg_dir: Path) -> list[int]:
    """Pids of live `postgres` processes whose command line names `pg_dir` (zombies have an empty one)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if Path(argv[0].decode(errors="replace")).name == "postgres" and str(pg_dir).encode() in argv:
            found.append(int(entry.name))
    return found


def printed_keys(log: str) -> list[str]:
    return KEY.findall(log)


@dataclass
class Life:
    data_dir: Path
    servers: list[Server] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def pg_dir(self) -> Path:
        return (self.data_dir / "pg").resolve()

    def server(self, **env: str) -> Server:
        log = self.data_dir.parent / f"{self.data_dir.name}-serve-{len(self.servers)}.log"
        made = Server(port=free_port(), env=clean_env(LUNOGRAM_DATA_DIR=str(self.data_dir), **env), log_path=log)
        self.servers.append(made)
        return made

    def need(self, *names: str) -> None:
        missing = [n for n in names if n not in self.state]
        if missing:
            pytest.skip(f"an earlier lifecycle step failed (no {', '.join(missing)})")


def _kill_all(servers: list[Server]) -> None:
    for server in servers:
        if server.process is not None and server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=30)


@pytest.fixture(scope="module")
def life() -> Iterator[Life]:
    data_dir = Path(tempfile.mkdtemp(prefix="lunogram-life-")).resolve()
    result = Life(data_dir=data_dir / "data")
    try:
        yield result
    finally:
        _kill_all(result.servers)
        embedded = EmbeddedPostgres(result.pg_dir)
        if embedded.is_initialized():
            embedded.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


# -- the embedded lifecycle, in order ------------------------------------------------------------------------


def test_first_start_prints_url_and_one_pair_of_keys_that_work(life: Life) -> None:
    first = life.server().start(timeout=120)
    log = first.log()
    assert f"http://127.0.0.1:{first.port}/api" in log
    keys = printed_keys(log)
    public = [k for k in keys if k.startswith("pk_")]
    secret = [k for k in keys if k.startswith("sk_")]
    assert len(public) == 1, log
    assert len(secret) == 1, log
    assert (life.pg_dir / "PG_VERSION").exists(), "the embedded PostgreSQL lives in <data dir>/pg"

    ext = uid()
    response = httpx.post(
        f"{first.base_url}/client/users",
        headers={"Authorization": f"Bearer {secret[0]}"},
        json={"identifier": [ident(ext)], "data": {"plan": "pro"}},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    user = response.json()
    assert user["data"] == {"plan": "pro"}
    assert any(i["external_id"] == ext for i in user["identifier"])
    with first.client(public[0]) as browser:
        assert browser.post("/client/users", json={"identifier": [ident(uid())]}).status_code == 200
    life.state.update(first=first, public=public[0], secret=secret[0], ext=ext, user_id=user["id"])


def test_first_start_makes_the_secrets_key_once(life: Life) -> None:
    """No LUNOGRAM_ENCRYPTION_KEY on the embedded PostgreSQL: one is made in the data dir (0600), and said where."""
    life.need("first")
    first: Server = life.state["first"]
    key_file = life.data_dir / "encryption.key"
    assert key_file.exists()
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert str(key_file.resolve()) in " ".join(first.log().split())
    with first.client(life.state["secret"]) as admin:
        made = admin.post(
            "/admin/providers",
            json={
                "name": "mail",
                "kind": "smtp",
                "config": {"host": "smtp.example.com", "username": "mailer"},
                "secrets": {"password": "embedded-secret"},
            },
        )
    assert made.status_code == 201, made.text
    life.state.update(key=key_file.read_text(), provider=made.json()["id"])


def test_sigterm_exits_zero_and_stops_postgres(life: Life) -> None:
    life.need("first")
    first: Server = life.state["first"]
    assert postmasters(life.pg_dir), "the embedded PostgreSQL should run while serve does"
    assert first.stop(signal.SIGTERM) == 0, first.log()
    wait_until(lambda: not postmasters(life.pg_dir), timeout=10, what="the embedded PostgreSQL to exit")
    assert not (life.pg_dir / "postmaster.pid").exists()
    assert not EmbeddedPostgres(life.pg_dir).is_running()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{first.root_url}/healthz", timeout=2)
    life.state["stopped_cleanly"] = True


def test_restart_keeps_data_and_prints_no_new_keys(life: Life) -> None:
    life.need("stopped_cleanly")
    again = life.server().start(timeout=120)
    log = again.log()
    assert printed_keys(log) == [], log
    assert "Lunogram is running" in log
    with again.client(life.state["secret"]) as admin:
        found = admin.get("/admin/users", params={"external_id": life.state["ext"]})
    assert found.status_code == 200, found.text
    assert found.json()["id"] == life.state["user_id"]
    assert found.json()["data"] == {"plan": "pro"}
    life.state["running"] = again


def test_restart_keeps_the_secrets_key_and_opens_what_it_sealed(life: Life) -> None:
    life.need("running", "key")
    running: Server = life.state["running"]
    assert (life.data_dir / "encryption.key").read_text() == life.state["key"]
    assert "encryption.key" not in running.log(), "the key is announced only when it is made"
    with SmtpServer(users={"mailer": "embedded-secret"}) as smtp, running.client(life.state["secret"]) as admin:
        provider = f"/admin/providers/{life.state['provider']}"
        config = {
            "host": "127.0.0.1",
            "port": smtp.port,
            "security": "none",
            "username": "mailer",
            "from_address": "ops@example.com",
        }
        assert admin.patch(provider, json={"config": config}).status_code == 200
        sent = admin.post(f"{provider}/test", json={"to": "ada@example.com"})
        assert sent.json()["status"] == "sent", sent.text
        [received] = smtp.wait_for(1)
    assert received.extra["authenticated"] is True, "the password sealed before the restart was used"


def test_second_serve_on_the_same_data_dir_is_refused(life: Life) -> None:
    life.need("running")
    running: Server = life.state["running"]
    assert running.process is not None
    result = subprocess.run(
        [sys.executable, "-m", "lunogram_server", "serve", "--port", str(free_port())],
        env=running.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 1, output
    assert "another `lunogram serve`" in output
    assert f"pid {running.process.pid}" in output
    assert str(life.data_dir) in output
    assert "Traceback" not in output
    # and the first server is unharmed
    assert httpx.get(f"{running.root_url}/readyz", timeout=5).status_code == 200
    assert running.process.poll() is None


def test_after_kill_9_the_next_start_adopts_postgres_and_keeps_data(life: Life) -> None:
    life.need("running")
    running: Server = life.state.pop("running")
    orphans = postmasters(life.pg_dir)
    assert len(orphans) == 1
    running.kill()
    assert running.process is not None
    assert running.process.returncode == -signal.SIGKILL
    # PostgreSQL runs in its own session: it outlives a kill -9 of serve ...
    assert postmasters(life.pg_dir) == orphans

    revived = life.server().start(timeout=120)
    # ... and the next start adopts it rather than starting a second one
    assert postmasters(life.pg_dir) == orphans
    assert printed_keys(revived.log()) == []
    with revived.client(life.state["secret"]) as admin:
        found = admin.get("/admin/users", params={"external_id": life.state["ext"]})
        assert found.status_code == 200, found.text
        assert found.json()["id"] == life.state["user_id"]
        # and it still writes
        assert admin.post("/client/users", json={"identifier": [ident(uid())]}).status_code == 200

    assert revived.stop() == 0, revived.log()
    wait_until(lambda: not postmasters(life.pg_dir), timeout=10, what="the adopted PostgreSQL to stop")
    life.state["stopped_cleanly_again"] = True


def test_pinned_bootstrap_keys_are_stored_and_work(life: Life) -> None:
    life.need("stopped_cleanly_again")
    public, secret = f"pk_pinned_{uid('k')}", f"sk_pinned_{uid('k')}"
    pinned = life.server(LUNOGRAM_BOOTSTRAP_PUBLIC_KEY=public, LUNOGRAM_BOOTSTRAP_SECRET_KEY=secret).start(timeout=120)
    try:
        assert sorted(printed_keys(pinned.log())) == [public, secret]
        ext = uid()
        with pinned.client(public) as browser:
            assert browser.post("/client/users", json={"identifier": [ident(ext)]}).status_code == 200
            # a public key writes but does not read
            assert browser.get("/admin/users", params={"external_id": ext}).status_code == 403
        with pinned.client(secret) as admin:
            assert admin.get("/admin/users", params={"external_id": ext}).status_code == 200
            assert admin.get("/admin/users", params={"external_id": life.state["ext"]}).status_code == 200
        with pinned.client(life.state["secret"]) as old:
            assert old.get("/admin/users", params={"external_id": ext}).status_code == 200
        with pinned.client("sk_pinned_but_never_stored_x") as stranger:
            assert stranger.get("/admin/users", params={"external_id": ext}).status_code == 401
    finally:
        assert pinned.stop() == 0, pinned.log()


# -- ports --------------------------------------------------------------------------------------------------


def test_port_flag_wins_over_lunogram_port(server_factory: Callable[..., Server]) -> None:
    other = free_port()
    flagged = server_factory(extra_env={"LUNOGRAM_PORT": str(other)})
    try:
        assert httpx.get(f"{flagged.root_url}/healthz", timeout=5).status_code == 200
        assert f"http://127.0.0.1:{flagged.port}/api" in flagged.log()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{other}/healthz", timeout=2)
    finally:
        assert flagged.stop() == 0


def test_lunogram_port_is_honoured_without_the_flag(pg: PgCluster, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = clean_env(DATABASE_URL=pg.new_database(), LUNOGRAM_PORT=str(port))
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "lunogram_server", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"serve exited with {process.returncode}:\n{log_path.read_text()}")
            return answers(f"http://127.0.0.1:{port}/readyz")

        wait_until(up, timeout=60, what="serve on LUNOGRAM_PORT")
        wait_until(lambda: "Lunogram is running" in log_path.read_text(), timeout=10, what="banner")
        assert f"http://127.0.0.1:{port}/api" in log_path.read_text()
    finally:
        if process.poll() is None:
            process.terminate()
        assert process.wait(timeout=30) == 0, log_path.read_text()


# -- operations endpoints -----------------------------------------------------------------------------------


def _healthz_count(metrics: str) -> float:
    pattern = re.compile(r"^lunogram_http_requests_total\{([^}]*)\} (\S+)$", re.MULTILINE)
    total = 0.0
    for labels, value in pattern.findall(metrics):
        if 'route="/healthz"' in labels and 'method="GET"' in labels and 'status="200"' in labels:
            total += float(value)
    return total


def test_operations_endpoints_answer(server: Server) -> None:
    with loopback_client(base_url=server.root_url, timeout=30) as web:
        health = web.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        ready = web.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready"}

        before = web.get("/metrics")
        assert before.status_code == 200
        assert before.headers["content-type"].startswith("text/plain")
        assert "# TYPE lunogram_http_requests_total counter" in before.text
        web.get("/healthz")
        web.get("/healthz")
        after = web.get("/metrics").text
        assert _healthz_count(after) >= _healthz_count(before.text) + 2

        spec = web.get("/openapi.json")
        assert spec.status_code == 200
        paths = spec.json()["paths"]
        assert "/api/client/users" in paths
        assert {"post", "delete"} <= set(paths["/api/client/users"])
        assert "/api/client/organizations" in paths

        docs = web.get("/docs")
        assert docs.status_code == 200
        assert docs.headers["content-type"].startswith("text/html")
        assert "swagger" in docs.text.lower()
        assert "/openapi.json" in docs.text


# -- the two commands the README promises -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["serve", "test"])
def test_script_exists_and_is_executable(name: str) -> None:
    script = ROOT / "scripts" / name
    assert script.is_file()
    assert os.access(script, os.X_OK), f"{script} is not executable"
    assert script.read_text().startswith("#!"), f"{script} has no shebang"


def test_readme_names_both_scripts() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "scripts/serve" in readme
    assert "scripts/test" in readme
