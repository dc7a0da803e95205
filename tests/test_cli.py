"""The `lunogram` CLI (projects, keys, migrate) against the shared server's database, as real subprocesses.

Keys made by the CLI must work on the running server at once, and a revoked one must stop working within
LUNOGRAM_KEY_CACHE_SECONDS (0.2 s in tests).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import psycopg
import pytest

from helpers import PgCluster, Server, ident, uid, wait_until
from lunogram_server.db.migrate import code_fingerprint, migration_files

KEY = re.compile(r"\b((?:pk|sk)_[A-Za-z0-9_-]+)")


@dataclass
class Result:
    code: int
    out: str

    @property
    def flat(self) -> str:
        """The output with rich's line wrapping undone."""
        return " ".join(self.out.split())

    def keys(self) -> list[str]:
        return KEY.findall(self.out)


Cli = Callable[..., Result]


def lunogram(*args: str, database_url: str) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNOGRAM_") and k != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "lunogram_server", *args, "--database-url", database_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    return Result(done.returncode, done.stdout + done.stderr)


def table_rows(output: str) -> list[list[str]]:
    """Body rows of a rich table (the header row is drawn with heavier `┃` borders)."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in output.splitlines() if line.startswith("│")]


@dataclass
class Project:
    name: str
    public: str
    secret: str


@pytest.fixture
def cli(server: Server) -> Cli:
    def run(*args: str) -> Result:
        return lunogram(*args, database_url=server.database_url)

    return run


@pytest.fixture
def project(cli: Cli) -> Project:
    name = uid("proj")
    made = cli("projects", "create", name)
    assert made.code == 0, made.out
    keys = made.keys()
    public = [k for k in keys if k.startswith("pk_")]
    secret = [k for k in keys if k.startswith("sk_")]
    assert len(public) == 1, made.out
    assert len(secret) == 1, made.out
    return Project(name, public[0], secret[0])


def upsert(server: Server, key: str) -> httpx.Response:
    with server.client(key) as c:
        return c.post("/client/users", json={"identifier": [ident(uid())]})


def read_user(server: Server, key: str, external_id: str) -> httpx.Response:
    with server.client(key) as c:
        return c.get("/admin/users", params={"external_id": external_id})


# -- projects -----------------------------------------------------------------------------------------------


def test_projects_create_prints_keys_that_work_at_once(server: Server, project: Project) -> None:
    ext = uid()
    with server.client(project.secret) as admin:
        made = admin.post("/client/users", json={"identifier": [ident(ext)]})
        assert made.status_code == 200, made.text
        assert admin.get("/admin/users", params={"external_id": ext}).status_code == 200
    # the new project is its own: the shared server's default key does not see its users
    assert made.json()["project_id"] != upsert(server, server.secret_key).json()["project_id"]
    assert read_user(server, server.secret_key, ext).status_code == 404
    with server.client(project.public) as browser:
        assert browser.post("/client/users", json={"identifier": [ident(uid())]}).status_code == 200
        assert browser.get("/admin/users", params={"external_id": ext}).status_code == 403


def test_projects_create_refuses_an_existing_name(cli: Cli, project: Project) -> None:
    again = cli("projects", "create", project.name)
    assert again.code == 1, again.out
    assert f"project '{project.name}' exists already" in again.flat
    assert again.keys() == []
    assert "Traceback" not in again.out
    listed = [row for row in table_rows(cli("projects", "list").out) if row[1] == project.name]
    assert len(listed) == 1


def test_projects_list_shows_the_project_and_its_key_count(cli: Cli, project: Project) -> None:
    listed = cli("projects", "list")
    assert listed.code == 0, listed.out
    rows = [row for row in table_rows(listed.out) if row[1] == project.name]
    assert len(rows) == 1, listed.out
    project_id, _, active_keys, _ = rows[0]
    assert re.fullmatch(r"[0-9a-f-]{36}", project_id)
    assert active_keys == "2"


# -- keys ---------------------------------------------------------------------------------------------------


def test_keys_create_makes_a_secret_key_by_default(server: Server, cli: Cli, project: Project) -> None:
    made = cli("keys", "create", "--project", project.name)
    assert made.code == 0, made.out
    assert len(made.keys()) == 1
    key = made.keys()[0]
    assert key.startswith("sk_")
    assert made.out.strip() == key, "only the key, so scripts can capture it"
    ext = uid()
    with server.client(key) as admin:
        assert admin.post("/client/users", json={"identifier": [ident(ext)]}).status_code == 200
        assert admin.get("/admin/users", params={"external_id": ext}).status_code == 200
    # the same project as the keys `projects create` printed
    assert read_user(server, project.secret, ext).status_code == 200


def test_keys_create_public_with_allow(server: Server, cli: Cli, project: Project) -> None:
    made = cli("keys", "create", "--project", project.name, "--public", "--allow", "broadcast")
    assert made.code == 0, made.out
    key = made.out.strip()
    assert key.startswith("pk_")
    ext = uid()
    with server.client(key) as browser:
        assert browser.post("/client/users", json={"identifier": [ident(ext)]}).status_code == 200
        # broadcast does not imply read
        assert browser.get("/admin/users", params={"external_id": ext}).status_code == 403
    rows = [row for row in table_rows(cli("keys", "list", "--project", project.name).out) if row[3] == key[:10]]
    assert len(rows) == 1
    assert rows[0][2] == "public"
    assert rows[0][4] == "broadcast"

    reader = cli("keys", "create", "--project", project.name, "--public", "--allow", "read").out.strip()
    assert reader.startswith("pk_")
    assert read_user(server, reader, ext).status_code == 200


def test_keys_create_rejects_an_unknown_permission(cli: Cli, project: Project) -> None:
    before = table_rows(cli("keys", "list", "--project", project.name).out)
    bogus = cli("keys", "create", "--project", project.name, "--public", "--allow", "bogus")
    assert bogus.code == 1, bogus.out
    assert "unknown permission 'bogus'" in bogus.flat
    assert "broadcast, delete, read" in bogus.flat
    assert bogus.keys() == []
    assert "Traceback" not in bogus.out
    assert table_rows(cli("keys", "list", "--project", project.name).out) == before


def test_keys_create_rejects_allow_on_a_secret_key(cli: Cli, project: Project) -> None:
    refused = cli("keys", "create", "--project", project.name, "--allow", "read")
    assert refused.code == 1, refused.out
    assert "--allow is for public keys" in refused.flat
    assert refused.keys() == []


def test_keys_create_for_an_unknown_project_fails(cli: Cli) -> None:
    missing = uid("nope")
    refused = cli("keys", "create", "--project", missing)
    assert refused.code == 1, refused.out
    assert f"no project named '{missing}'" in refused.flat
    assert refused.keys() == []


def test_keys_list_shows_prefixes_never_full_keys(cli: Cli, project: Project) -> None:
    extra = cli("keys", "create", "--project", project.name, "--public").out.strip()
    listed = cli("keys", "list", "--project", project.name)
    assert listed.code == 0, listed.out
    rows = table_rows(listed.out)
    assert sorted(row[3] for row in rows) == sorted(k[:10] for k in (project.public, project.secret, extra))
    assert {row[1] for row in rows} == {project.name}
    for key in (project.public, project.secret, extra):
        assert key not in listed.out
        assert key[:11] not in listed.out
    # and the full listing does not leak them either
    everything = cli("keys", "list")
    assert everything.code == 0
    assert project.secret[:10] in everything.out
    assert project.secret not in everything.out


def test_keys_revoke_turns_the_key_away(server: Server, cli: Cli, project: Project) -> None:
    assert upsert(server, project.secret).status_code == 200
    revoked = cli("keys", "revoke", project.secret)
    assert revoked.code == 0, revoked.out
    assert f"{project.secret[:10]}..." in revoked.flat
    wait_until(lambda: upsert(server, project.secret).status_code == 401, timeout=10, what="revoked key -> 401")
    # only that key: the project's public key still writes
    assert upsert(server, project.public).status_code == 200
    rows = table_rows(cli("keys", "list", "--project", project.name).out)
    revoked_at = {row[3]: row[7] for row in rows}
    assert revoked_at[project.secret[:10]] != ""
    assert revoked_at[project.public[:10]] == ""
    # a revoked key cannot be revoked again
    again = cli("keys", "revoke", project.secret)
    assert again.code == 1
    assert "no active key matches" in again.flat


def test_keys_revoke_by_the_listed_id(server: Server, cli: Cli, project: Project) -> None:
    rows = table_rows(cli("keys", "list", "--project", project.name).out)
    public_id = next(row[0] for row in rows if row[3] == project.public[:10])
    revoked = cli("keys", "revoke", public_id)
    assert revoked.code == 0, revoked.out
    assert public_id in revoked.flat
    wait_until(lambda: upsert(server, project.public).status_code == 401, timeout=10, what="revoked key -> 401")
    assert upsert(server, project.secret).status_code == 200


def test_keys_revoke_of_an_unknown_key_fails(cli: Cli) -> None:
    unknown = f"sk_{uid('never')}_issued"
    refused = cli("keys", "revoke", unknown)
    assert refused.code == 1, refused.out
    assert f"no active key matches '{unknown}'" in refused.flat
    assert "Traceback" not in refused.out


# -- migrate ------------------------------------------------------------------------------------------------


def test_migrate_is_idempotent(pg: PgCluster) -> None:
    database_url = pg.new_database()
    expected = [(version, name) for version, name, _ in migration_files()]
    assert expected
    for _ in range(2):
        done = lunogram("migrate", database_url=database_url)
        assert done.code == 0, done.out
        assert "up to date" in done.out
        with psycopg.connect(database_url) as conn:
            applied = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
            assert applied == expected
            assert conn.execute("SELECT to_regclass('api_keys')").fetchone() == ("api_keys",)


def test_commands_reinstall_routines_only_when_other_code_installed_them(pg: PgCluster) -> None:
    database_url = pg.new_database()
    assert lunogram("migrate", database_url=database_url).code == 0

    def installed() -> tuple[str, object, int]:
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT fingerprint, installed_at FROM schema_routines").fetchone()
            assert row is not None
            functions = conn.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE 'lunogram_%'").fetchone()
            assert functions is not None
            return row[0], row[1], functions[0]

    fingerprint, at, functions = installed()
    assert fingerprint == code_fingerprint()
    assert functions > 50
    assert lunogram("projects", "list", database_url=database_url).code == 0
    assert installed() == (fingerprint, at, functions)  # the same code installed them: left alone
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE schema_routines SET fingerprint = 'an older release'")
        conn.execute("DROP FUNCTION lunogram_merge_users")
    assert lunogram("projects", "list", database_url=database_url).code == 0
    again, later, restored = installed()
    assert again == fingerprint
    assert later != at  # installed again, the dropped function with them
    assert restored == functions
