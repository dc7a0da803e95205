"""User profiles: upsert, delete and the admin read. Each write is one round trip (see sql/functions.sql).

Responses come back from PostgreSQL as JSON text and are passed through untouched: no Python object is
built for a profile on the hot path.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from lunogram_server.db import fetch_scalar, load_queries
from lunogram_server.identity import ExternalID, normalize
from lunogram_server.users.models import UpsertUser

Q = load_queries("lunogram_server.users")


async def upsert(conn: AsyncConnection[Any], project_id: UUID, body: UpsertUser) -> str:
    fields = body.model_dump(exclude_unset=True, exclude={"identifier"})
    params = {"project_id": project_id, "identifiers": Jsonb(normalize(body.identifier)), "fields": Jsonb(fields)}
    result: str = await fetch_scalar(conn, Q["upsert"], params)
    return result


async def delete(conn: AsyncConnection[Any], project_id: UUID, identifiers: list[ExternalID]) -> int:
    params = {"project_id": project_id, "identifiers": Jsonb(normalize(identifiers))}
    return int(await fetch_scalar(conn, Q["delete"], params))


async def detail(
    conn: AsyncConnection[Any],
    project_id: UUID,
    *,
    user_id: UUID | None = None,
    source: str | None = None,
    external_id: str | None = None,
) -> str | None:
    """The admin view of one user, by internal id or by (source, external_id); None when absent."""
    if user_id is None:
        user_id = await fetch_scalar(
            conn, Q["id_by_identifier"], {"project_id": project_id, "source": source, "external_id": external_id}
        )
        if user_id is None:
            return None
    result: str | None = await fetch_scalar(conn, Q["detail_by_id"], {"project_id": project_id, "id": user_id})
    return result
