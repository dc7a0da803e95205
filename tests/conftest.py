"""Test fixtures: one real embedded PostgreSQL per session and real `lunogram serve` processes on loopback.

Nothing here mocks our storage. Each server gets a database of its own; tests that share the session
server isolate themselves with unique identifiers (`helpers.uid()`).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, settings

from helpers import PUBLIC_KEY, SECRET_KEY, PgCluster, Server, free_port, uid
from lunogram_server.db.embedded import EmbeddedPostgres

# The property tests assert results, never speed: on two cores shared with the servers of other test workers a
# draw can take seconds, which Hypothesis would report as a failure of its own (too_slow, deadline).
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    # mkdtemp makes a 0700 directory: as root, the server grants PostgreSQL's user passage (test_startup.py)
    root = Path(tempfile.mkdtemp(prefix="lunogram-test-pg-"))
    # fsync off: these tests kill our processes, never the machine, so durability to disk is not under test
    embedded = EmbeddedPostgres(root / "pg", settings={"fsync": "off", "max_connections": "600"})
    embedded.start()
    try:
        yield PgCluster(embedded)
    finally:
        embedded.stop()


# Every server this test process started, and the session-wide ones among them (`server`, `other`,
# `console_server`). The others are stopped when the module that started them ends: an idle test server
# still polls (tests set fast polls), and the thirty or so a run had kept alive until its end took most of
# the two cores, slowing every later test.
STARTED: list[Server] = []
SESSION_WIDE: set[int] = set()


def session_wide(server: Server) -> Server:
    SESSION_WIDE.add(id(server))
    return server


@pytest.fixture(autouse=True, scope="module")
def _stop_the_modules_servers() -> Iterator[None]:
    first = len(STARTED)
    yield
    for server in STARTED[first:]:
        if id(server) not in SESSION_WIDE and server.process is not None and server.process.poll() is None:
            server.stop()


@pytest.fixture(scope="session")
def server_factory(pg: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """Start servers on fresh databases (or on a given DATABASE_URL / data dir); each stopped at the end of
    the module that started it (the session-wide ones at session end)."""
    started = STARTED

    def make(database_url: str | None = None, extra_env: dict[str, str] | None = None, start: bool = True) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUNOGRAM_") and k != "DATABASE_URL"}
        env.update(
            DATABASE_URL=database_url or pg.new_database(),
            LUNOGRAM_BOOTSTRAP_PUBLIC_KEY=PUBLIC_KEY,
            LUNOGRAM_BOOTSTRAP_SECRET_KEY=SECRET_KEY,
            LUNOGRAM_KEY_CACHE_SECONDS="0.2",
            # every test calls from 127.0.0.1, many of them with unknown keys on purpose: no per-address limit
            # on failed key lookups here (tests/test_hardening_http.py tests it on servers of its own)
            LUNOGRAM_AUTH_FAILURE_LIMIT="0",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra_env or {})
        if env.get("DATABASE_URL") == "":
            del env["DATABASE_URL"]
        log = tmp_path_factory.mktemp("server") / "serve.log"
        server = Server(port=free_port(), env=env, log_path=log)
        started.append(server)
        return server.start() if start else server

    yield make
    for server in started:
        if server.process is not None and server.process.poll() is None:
            server.stop()


@pytest.fixture(scope="session")
def server(server_factory: Callable[..., Server]) -> Server:
    """The shared server most tests talk to."""
    return session_wide(server_factory())


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture
def public_client(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.public_key) as c:
        yield c


@pytest.fixture
def db(server: Server) -> Iterator[psycopg.Connection[Any]]:
    """A direct connection to the shared server's database, for assertions the API cannot make."""
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def other(server: Server, server_factory: Callable[..., Server]) -> Server:
    """A second server on the shared database whose pinned keys belong to a second project."""
    public, secret = f"pk_{secrets.token_hex(12)}", f"sk_{secrets.token_hex(12)}"
    started = server_factory(
        database_url=server.database_url,
        extra_env={
            "LUNOGRAM_BOOTSTRAP_PROJECT": uid("project"),
            "LUNOGRAM_BOOTSTRAP_PUBLIC_KEY": public,
            "LUNOGRAM_BOOTSTRAP_SECRET_KEY": secret,
        },
    )
    started.public_key, started.secret_key = public, secret
    return session_wide(started)


@pytest.fixture
def b(other: Server) -> Iterator[httpx.Client]:
    """Project B's secret key on its own server."""
    with other.client() as c:
        yield c


@pytest.fixture(scope="session")
def console_server(server_factory: Callable[..., Server]) -> Server:
    """One server for the console's tests (browser and HTTP): its own database, so its banner carries the
    first-owner link; `console_owner` uses that link once."""
    return session_wide(
        server_factory(extra_env={"LUNOGRAM_JOURNEY_POLL_SECONDS": "0.2", "LUNOGRAM_SEND_POLL_SECONDS": "0.2"})
    )


@pytest.fixture(scope="session")
def console_owner(console_server: Server) -> Iterator[Any]:
    """The first owner of `console_server`, signed in (console_helpers.Console)."""
    from console_helpers import create_owner

    owner = create_owner(console_server)
    yield owner
    owner.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium for a module's browser tests (browser_helpers.py: the system's Chromium through
    Playwright); each test opens its own context (playwright.sync_api.Browser). Per module, not per session:
    Playwright's sync API keeps its asyncio loop marked as running in this thread until it stops, and the
    tests run after it (asyncio.run, pytest-asyncio) would fail with "cannot be called from a running event
    loop"."""
    from browser_helpers import launch_chromium

    with launch_chromium() as launched:
        yield launched


# The files that take longest go to the test processes first (they keep a file whole, taking files in this
# order): left for the end, one of them ran alone on one core while the others had nothing left to do.
# Ordered by the seconds each took in a three-process run of the whole suite (pytest --durations, summed per
# file); a new file that takes more than half a minute belongs here.
SLOWEST_FILES = (
    "test_fuzz.py",  # 300 s before its examples were cut to 100 per route
    "test_workers.py",  # 200
    "test_startup.py",  # 123
    "test_events.py",  # 120
    "test_providers.py",  # 104
    "test_validation.py",  # 81
    "test_schedules.py",  # 67
    "test_console_browser.py",  # 67
    "test_crash.py",  # 65
    "test_db_outage.py",  # 63
    "test_messaging_crash.py",  # 62
    "test_cli.py",  # 60 (205 when each command imported the whole server)
    "test_lifecycle.py",  # 54
    "test_console_auth.py",  # 50
    "test_hardening_http.py",  # 50
    "test_packaging.py",  # 42
    "test_devices_inbox.py",  # 42
    "test_permissions.py",  # 40
    "test_journeys_crash.py",  # 38
    "test_mime.py",  # 34
    "test_lists.py",  # 34
    "test_events_admin.py",  # 32
    "test_journeys.py",  # 31
    "test_editor_browser.py",  # 30
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: n for n, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOWEST_FILES)))
