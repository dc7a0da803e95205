"""Settings the SQL functions read, handed to every connection of the server as session parameters.

A limit enforced where the data is merged (identity/sql/limits.sql: a profile's stored `data`) must reach
PostgreSQL. Passing it in the connection string (`options=-c lunogram.max_profile_data_bytes=...`) gives
each server process its own value on every pooled connection without an extra statement, and without
threading it through every function that can merge data (upserts, merges, memberships, the event workers'
resolutions). A connection without it (psql, or a pooler that drops startup options) gets the default
that limits.sql states.
"""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from lunogram_server.config import Limits

# session parameter -> the Limits field it carries
PARAMETERS = {"lunogram.max_profile_data_bytes": "max_profile_data_bytes"}


def with_session_settings(conninfo: str, limits: Limits) -> str:
    """`conninfo` with our session parameters added to its `options` (kept: any the operator set)."""
    given = conninfo_to_dict(conninfo).get("options")
    ours = " ".join(f"-c {name}={int(getattr(limits, field))}" for name, field in PARAMETERS.items())
    return make_conninfo(conninfo, options=f"{given} {ours}" if given else ours)
