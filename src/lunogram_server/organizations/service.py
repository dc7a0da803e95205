"""Organizations and memberships. Each write is one round trip (see sql/functions.sql)."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from lunogram_server.db import fetch_scalar, load_queries
from lunogram_server.identity import ExternalID, normalize
from lunogram_server.organizations.models import AddMember, RemoveMember, UpsertOrganization

Q = load_queries("lunogram_server.organizations")
MEMBER_LIMIT = 1000

RemoveOutcome = Literal["removed", "organization", "user", "membership"]


async def upsert(conn: AsyncConnection[Any], project_id: UUID, body: UpsertOrganization) -> str:
    fields = body.model_dump(exclude_unset=True, exclude={"identifier"})
    params = {"project_id": project_id, "identifiers": Jsonb(normalize(body.identifier)), "fields": Jsonb(fields)}
    result: str = await fetch_scalar(conn, Q["upsert"], params)
    return result


async def delete(conn: AsyncConnection[Any], project_id: UUID, identifiers: list[ExternalID]) -> int:
    params = {"project_id": project_id, "identifiers": Jsonb(normalize(identifiers))}
    return int(await fetch_scalar(conn, Q["delete"], params))


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
    if organization_id is None:
        organization_id = await fetch_scalar(
            conn, Q["id_by_identifier"], {"project_id": project_id, "source": source, "external_id": external_id}
        )
        if organization_id is None:
            return None
    params = {"project_id": project_id, "id": organization_id, "member_limit": MEMBER_LIMIT}
    result: str | None = await fetch_scalar(conn, Q["detail_by_id"], params)
    return result
