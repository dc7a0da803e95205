"""User profiles: upsert, delete and the admin read. Each write is one round trip (identity/sql/profile.sql).

Responses come back from PostgreSQL as JSON text and are passed through untouched: no Python object is
built for a profile on the hot path.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from lunogram_server.db.coalesce import Coalescer
from lunogram_server.identity import ExternalID
from lunogram_server.identity.profiles import ProfileQueries
from lunogram_server.users.models import UpsertUser

_profiles = ProfileQueries("lunogram_server.users", "user")


def upsert_coalescer(pool: AsyncConnectionPool[Any], *, slots: int, max_batch: int) -> Coalescer:
    return _profiles.upsert_coalescer(pool, slots=slots, max_batch=max_batch)


async def upsert_together(coalescer: Coalescer, project_id: UUID, body: UpsertUser, *, public: bool = False) -> str:
    """An upsert without an Idempotency-Key: committed together with concurrent ones (db/coalesce.py).
    `public`: a public key's (identity/profiles.py); raises Refused when refused."""
    return await _profiles.upsert_together(coalescer, project_id, body, public=public)


def keyed_upsert_coalescer(pool: AsyncConnectionPool[Any], *, slots: int, max_batch: int) -> Coalescer:
    return _profiles.keyed_upsert_coalescer(pool, slots=slots, max_batch=max_batch)


async def keyed_upsert_together(
    coalescer: Coalescer, project_id: UUID, key: str, digest: bytes, body: UpsertUser, *, public: bool = False
) -> tuple[int, str | None]:
    """An upsert under an Idempotency-Key, committed together with concurrent ones."""
    return await _profiles.keyed_upsert_together(coalescer, project_id, key, digest, body, public=public)


async def delete(conn: AsyncConnection[Any], project_id: UUID, identifiers: list[ExternalID]) -> int:
    return await _profiles.delete(conn, project_id, identifiers)


async def detail(
    conn: AsyncConnection[Any],
    project_id: UUID,
    *,
    user_id: UUID | None = None,
    source: str | None = None,
    external_id: str | None = None,
) -> str | None:
    """The admin view of one user with its memberships; None when absent."""
    return await _profiles.detail(conn, project_id, profile_id=user_id, source=source, external_id=external_id)
