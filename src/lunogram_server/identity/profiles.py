"""What users and organizations share: upsert (one SQL function call, committed together with concurrent
ones: db/coalesce.py), delete and the admin read.

Each kind keeps its own `sql/queries.sql` with the queries `delete`, `id_by_identifier` and
`detail_by_id`; this class runs them the same way for both.

An upsert for a public key (`public=True`) answers only what the request sent and may merge only
anonymous-only profiles into one identified one (identity/sql/profile.sql, resolve.sql). An upsert the
database refuses (data over its cap, a merge a public key may not make) raises `Refused`; it changed
nothing, and the other upserts committed with it are not affected.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from lunogram_server.db import fetch_scalar, load_queries
from lunogram_server.db.coalesce import Coalescer
from lunogram_server.db.refusals import Refused
from lunogram_server.identity.models import ExternalID, normalize


def _answer(text: str) -> str:
    """A batch's answer for one upsert: the profile's JSON, or a refusal `[status, detail]` (batch.sql)."""
    if text.startswith("["):
        status, detail = orjson.loads(text)
        raise Refused(int(status), str(detail))
    return text


class ProfileQueries:
    def __init__(self, package: str, entity: str) -> None:
        self.queries = load_queries(package)
        self.upsert_function = f"lunogram_upsert_{entity}s"  # identity/sql/batch.sql
        self.keyed_upsert_function = f"lunogram_keyed_upsert_{entity}s"

    @staticmethod
    def upsert_arguments(body: BaseModel) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """`body` is an Upsert* model: its `identifier`, and whichever other fields the caller sent."""
        fields = body.model_dump(exclude_unset=True, exclude={"identifier"})
        return normalize(body.identifier), fields  # type: ignore[attr-defined]

    def upsert_coalescer(self, pool: AsyncConnectionPool[Any], *, slots: int, max_batch: int) -> Coalescer:
        return Coalescer(pool, self.upsert_function, slots=slots, max_batch=max_batch, order=_lock_order)

    async def upsert_together(
        self, coalescer: Coalescer, project_id: UUID, body: BaseModel, *, public: bool = False
    ) -> str:
        """One upsert in its own commit, shared with concurrent ones (db/coalesce.py); Refused if refused."""
        identifiers, fields = self.upsert_arguments(body)
        flag = (True,) if public else ()  # the SQL reads an absent flag as false: secret keys send less
        return _answer(await coalescer.call(project_id, identifiers, fields, *flag))

    def keyed_upsert_coalescer(self, pool: AsyncConnectionPool[Any], *, slots: int, max_batch: int) -> Coalescer:
        return Coalescer(
            pool,
            self.keyed_upsert_function,
            slots=slots,
            max_batch=max_batch,
            order=lambda arguments: _lock_order([arguments[0], arguments[3]]),
        )

    async def keyed_upsert_together(
        self,
        coalescer: Coalescer,
        project_id: UUID,
        key: str,
        digest: bytes,
        body: BaseModel,
        *,
        public: bool = False,
    ) -> tuple[int, str | None]:
        """An upsert under an Idempotency-Key, committed with concurrent ones: (status, body); 409 and None
        when the key was used with another request; Refused if refused (the key is then not remembered) or
        if the profile the key's first request wrote no longer exists (404)."""
        identifiers, fields = self.upsert_arguments(body)
        flag = (True,) if public else ()
        answer = orjson.loads(await coalescer.call(project_id, key, digest.hex(), identifiers, fields, *flag))
        if "problem" in answer:
            raise Refused(int(answer["status"]), str(answer["problem"]))
        return int(answer["status"]), answer["body"]

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


def _lock_order(arguments: list[Any]) -> tuple[str, list[tuple[str, str]]]:
    """Upserts of a batch in project and identifier order: resolution locks identifiers in that order."""
    project_id, identifiers = arguments[0], arguments[1]
    return str(project_id), sorted((i["source"], i["external_id"]) for i in identifiers)
