"""Schema migrations (numbered files, applied once each) and routines (SQL functions, re-installed by each
server start, and by any other caller when this code differs from the code that installed them last).

Both run under one advisory lock, so any number of processes may start at once against one database.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from lunogram_server.db.queries import read_sql

if TYPE_CHECKING:
    from lunogram_server.reactions import Reactions

_LOCK_KEY = 0x4C756E6F  # "Luno"
_MIGRATION = re.compile(r"^(\d{4})_(\w+)\.sql$")

# Identity resolution, upsert and delete are templates rendered for each kind of profile.
_IDENTITY_KINDS = [
    {
        "entity": "user",
        "entities": "users",
        "identifiers": "user_identifiers",
        "merge": "lunogram_merge_users",
        "deleted": "lunogram_on_users_deleted",
        "columns": "email, phone, timezone, locale, data, version, updated_at",
        "settable": "email, phone, timezone, locale, data",
        "on_change": "PERFORM lunogram_lists_user_changed(p_project, v_id)",
        "on_change_many": "PERFORM lunogram_lists_users_changed(v_changed_projects, v_changed)",
    },
    {
        "entity": "organization",
        "entities": "organizations",
        "identifiers": "organization_identifiers",
        "merge": "lunogram_merge_organizations",
        "deleted": "lunogram_on_organizations_deleted",
        "columns": "name, data, version, updated_at",
        "settable": "name, data",
        "on_change": "NULL",
        "on_change_many": "NULL",
    },
]
# Routines in install order; each file is CREATE OR REPLACE only.
_ROUTINES = [
    ("lunogram_server.users", "functions.sql"),
    ("lunogram_server.organizations", "functions.sql"),
    ("lunogram_server.events", "functions.sql"),
    ("lunogram_server.lists", "functions.sql"),
    ("lunogram_server.schedules", "functions.sql"),
    ("lunogram_server.journeys", "functions.sql"),
    ("lunogram_server.messaging", "functions.sql"),
]


def migration_files() -> list[tuple[int, str, str]]:
    root = resources.files("lunogram_server.db").joinpath("migrations")
    found = []
    for entry in root.iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)


def _routines() -> list[sql.Composed | sql.SQL]:
    rendered: list[sql.Composed | sql.SQL] = [sql.SQL(read_sql("lunogram_server.identity", "limits.sql"))]
    rendered += [
        sql.SQL(read_sql("lunogram_server.identity", template)).format(**{k: sql.SQL(v) for k, v in kind.items()})
        for template in ("resolve.sql", "profile.sql", "batch.sql")
        for kind in _IDENTITY_KINDS
    ]
    rendered += [sql.SQL(read_sql(package, name)) for package, name in _ROUTINES]
    return rendered


def code_fingerprint() -> str:
    """A digest of this package's Python and SQL: routines installed by the same code need no reinstall."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".sql") and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def migrate(conninfo: str, reactions: Reactions | None = None) -> list[str]:
    """Bring the database up to date; returns the names of the migrations applied now. Then install the
    routines: the reaction dispatchers (reactions.py), each domain's functions, and check the handlers.

    A server passes its `reactions` and always installs. Other callers (the CLI's commands) pass none and
    install only when a migration ran or the routines were installed by other code: building the registry
    imports every domain (two seconds of a command that otherwise takes a few hundred milliseconds), and
    reinstalling from a registry without the server's plugins would drop what they installed."""
    applied: list[str] = []
    fingerprint = code_fingerprint()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, name, text in migration_files():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(text.encode())
                    conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
                applied.append(f"{version:04d}_{name}")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_routines (fingerprint text NOT NULL,"
                " installed_at timestamptz NOT NULL DEFAULT now())"
            )
            installed = conn.execute("SELECT fingerprint FROM schema_routines").fetchone()
            if reactions is None and not applied and installed is not None and installed[0] == fingerprint:
                return applied
            with conn.transaction():
                if reactions is None:
                    from lunogram_server.domains import build_reactions  # the domains import this package

                    reactions = build_reactions()
                reactions.install_dispatchers(conn)
                for routine in _routines():
                    conn.execute(routine)
                reactions.check_handlers(conn)
                conn.execute("DELETE FROM schema_routines")
                conn.execute("INSERT INTO schema_routines (fingerprint) VALUES (%s)", (fingerprint,))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied
