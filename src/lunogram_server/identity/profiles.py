"""What users and organizations share: upsert, delete and the admin read, each one named query.

Each kind keeps its own `sql/queries.sql` with the queries `upsert`, `delete`, `id_by_identifier` and
`detail_by_id`; this class runs them the same way for both.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from lunogram_server.db import fetch_scalar, load_queries
from lunogram_server.identity.models import ExternalID, normalize


class ProfileQueries:
    def __init__(self, package: str) -> None:
        self.queries = load_queries(package)

    async def upsert(self, conn: AsyncConnection[Any], project_id: UUID, body: BaseModel) -> str:
        """`body` is an Upsert* model: its `identifier`, and whichever other fields the caller sent."""
        fields = body.model_dump(exclude_unset=True, exclude={"identifier"})
        params = {
            "project_id": project_id,
            "identifiers": Jsonb(normalize(body.identifier)),  # type: ignore[attr-defined]
            "fields": Jsonb(fields),
        }
        result: str = await fetch_scalar(conn, self.queries["upsert"], params)
        return result

    async def delete(self, conn: AsyncConnection[Any], project_id: UUID, identifiers: list[ExternalID]) -> int:
        params = {"project_id": project_id, "identifiers": Jsonb(normalize(identifiers))}
        return int(await fetch_scalar(conn, self.queries["delete"], params))

    async def detail(
        self,
        conn: AsyncConnection[Any],
        project_id: UUID,
        *,
        profile_id: UUID | None = None,
        source: str | None = None,
        external_id: str | None = None,
        **extra: Any,
    ) -> str | None:
        """The admin view of one profile, by internal id or by (source, external_id); None when absent."""
        if profile_id is None:
            params = {"project_id": project_id, "source": source, "external_id": external_id}
            profile_id = await fetch_scalar(conn, self.queries["id_by_identifier"], params)
            if profile_id is None:
                return None
        result: str | None = await fetch_scalar(
            conn, self.queries["detail_by_id"], {"project_id": project_id, "id": profile_id, **extra}
        )
        return result
