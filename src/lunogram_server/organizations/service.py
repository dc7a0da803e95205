"""Organizations and memberships. Each write is one round trip (identity/sql/profile.sql, sql/functions.sql)."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from lunogram_server.db import fetch_scalar, load_queries
from lunogram_server.db.coalesce import Coalescer
from lunogram_server.identity import ExternalID, normalize
from lunogram_server.identity.profiles import ProfileQueries
from lunogram_server.organizations.models import AddMember, RemoveMember, UpsertOrganization

Q = load_queries("lunogram_server.organizations")
_profiles = ProfileQueries("lunogram_server.organizations", "organization")
MEMBER_LIMIT = 1000

RemoveOutcome = Literal["removed", "organization", "user", "membership"]


def upsert_coalescer(pool: AsyncConnectionPool[Any], *, slots: int, max_batch: int) -> Coalescer:
    return _profiles.upsert_coalescer(pool, slots=slots, max_batch=max_batch)


async def upsert_together(
    coalescer: Coalescer, project_id: UUID, body: UpsertOrganization, *, public: bool = False
) -> str:
    """An upsert without an Idempotency-Key: committed together with concurrent ones (db/coalesce.py).
    `public`: a public key's (identity/profiles.py); raises Refused when refused."""
    return await _profiles.upsert_together(coalescer, project_id, body, public=public)


def keyed_upsert_coalescer(pool: AsyncConnectionPool[Any], *, slots: int, max_batch: int) -> Coalescer:
    return _profiles.keyed_upsert_coalescer(pool, slots=slots, max_batch=max_batch)


async def keyed_upsert_together(
    coalescer: Coalescer, project_id: UUID, key: str, digest: bytes, body: UpsertOrganization, *, public: bool = False
) -> tuple[int, str | None]:
    """An upsert under an Idempotency-Key, committed together with concurrent ones."""
    return await _profiles.keyed_upsert_together(coalescer, project_id, key, digest, body, public=public)


async def delete(conn: AsyncConnection[Any], project_id: UUID, identifiers: list[ExternalID]) -> int:
    return await _profiles.delete(conn, project_id, identifiers)


async def add_member(conn: AsyncConnection[Any], project_id: UUID, body: AddMember) -> None:
    await conn.execute(
        Q["add_member"],
        {
            "project_id": project_id,
            "organization": Jsonb(normalize(body.organization.identifier)),
            "user": Jsonb(normalize(body.user.identifier)),
            "data": Jsonb(body.data or {}),
        },
    )


async def remove_member(conn: AsyncConnection[Any], project_id: UUID, body: RemoveMember) -> RemoveOutcome:
    outcome: RemoveOutcome = await fetch_scalar(
        conn,
        Q["remove_member"],
        {
            "project_id": project_id,
            "organization": Jsonb(normalize(body.organization.identifier)),
            "user": Jsonb(normalize(body.user.identifier)),
        },
    )
    return outcome


async def detail(
    conn: AsyncConnection[Any],
    project_id: UUID,
    *,
    organization_id: UUID | None = None,
    source: str | None = None,
    external_id: str | None = None,
) -> str | None:
    """The admin view of one organization with its member count and first members; None when absent."""
    return await _profiles.detail(
        conn,
        project_id,
        profile_id=organization_id,
        source=source,
        external_id=external_id,
        member_limit=MEMBER_LIMIT,
    )
