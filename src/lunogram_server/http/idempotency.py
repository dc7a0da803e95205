"""Idempotency-Key: a repeated POST with the same key gets the first answer and stores nothing twice.

The key's record is inserted first in the write's own transaction: a concurrent request with the same key
waits on that insert until the first commits (then it reads the stored answer) or rolls back (then it does
the work itself). Records last 24 hours. Refusals (4xx) are not recorded: they stored nothing, so a repeat
may simply be answered again.

A key belongs to the API key that sent it: the record is stored under `<api key id>:<key>`, so a public
key's holder cannot occupy (409) or read (replay) a key its project's secret key uses, nor the other way
round. A repeat of an upsert whose profile has since been deleted (or merged into another) answers 404,
not what was stored about the profile (identity/sql/profile.sql).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from lunogram_server.db.retry import run_write
from lunogram_server.http.problems import ProblemError
from lunogram_server.projects.service import ApiKeyAuth

HEADER = "idempotency-key"
MAX_KEY_LENGTH = 255
TTL = "24 hours"
_DIGEST = "lunogram.body_digest"

Work = Callable[[AsyncConnection[Any]], Awaitable[Response]]
Unkeyed = Callable[[], Awaitable[Response]]
Keyed = Callable[[str, bytes], Awaitable[tuple[int, str | None]]]  # (key, request digest) -> (status, body)

# Two statements: an INSERT in the same statement as the DELETE of an expired record still conflicts with it
# (a statement does not see its own CTE's changes), and the expired key would answer as a stored one.
_FORGET_EXPIRED = """
DELETE FROM idempotency_keys
WHERE project_id = %(project_id)s AND key = %(key)s AND created_at < now() - %(ttl)s::interval
"""
_CLAIM = """
INSERT INTO idempotency_keys (project_id, key, request_hash, status, body)
VALUES (%(project_id)s, %(key)s, %(hash)s, 0, '')
ON CONFLICT (project_id, key) DO NOTHING
"""
_STORED = "SELECT request_hash, status, body, content_type FROM idempotency_keys WHERE project_id = %s AND key = %s"
_RECORD = "UPDATE idempotency_keys SET status = %s, body = %s, content_type = %s WHERE project_id = %s AND key = %s"
PURGE = "DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'"


def remember_body(request: Request, raw: bytes) -> None:
    """Called with every Client API body (body.py): keyed requests need its digest."""
    if HEADER in request.headers:
        request.scope[_DIGEST] = hashlib.sha256(f"{request.method} {request.url.path}\n".encode() + raw).digest()


def scoped_key(auth: ApiKeyAuth, key: str) -> str:
    """The record's key: the client's key within the API key that sent it."""
    return f"{auth.key_id}:{key}"


async def respond(
    request: Request,
    auth: ApiKeyAuth,
    work: Work | None = None,
    *,
    unkeyed: Unkeyed | None = None,
    keyed: Keyed | None = None,
) -> Response:
    """Run a write (retried on collisions, db/retry.py) and answer it; honour an Idempotency-Key.

    Either `work`, run in a transaction of its own (with the key's record when there is a key), or
    `unkeyed` and `keyed`, which answer in transactions they share with concurrent requests (upserts,
    db/coalesce.py; `keyed` keeps the rules above in SQL: identity/sql/profile.sql).
    """
    pool = request.app.state.pool
    project_id: UUID = auth.project_id
    key = request.headers.get(HEADER)
    if key is None:
        if unkeyed is not None:
            return await unkeyed()
        assert work is not None
        return await run_write(pool, work)
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise ProblemError(400, f"Idempotency-Key: must be 1 to {MAX_KEY_LENGTH} printable characters")
    digest: bytes = request.scope[_DIGEST]
    stored_key = scoped_key(auth, key)
    if keyed is not None:
        status, body = await keyed(stored_key, digest)
        if body is None:
            raise ProblemError(409, f"Idempotency-Key: {key!r} was used with a different request")
        return Response(body.encode(), status_code=status, media_type="application/json")
    assert work is not None

    async def once(conn: AsyncConnection[Any]) -> Response:
        async with conn.transaction():
            params = {"project_id": project_id, "key": stored_key, "hash": digest, "ttl": TTL}
            await conn.execute(_FORGET_EXPIRED, params)
            claimed = (await conn.execute(_CLAIM, params)).rowcount == 1
            if not claimed:
                row = await (await conn.execute(_STORED, (project_id, stored_key))).fetchone()
                assert row is not None  # the conflicting record committed before ON CONFLICT returned
                stored_hash, status, body, content_type = row
                if bytes(stored_hash) != digest:
                    raise ProblemError(409, f"Idempotency-Key: {key!r} was used with a different request")
                return Response(bytes(body), status_code=status, media_type=content_type)
            response = await work(conn)
            await conn.execute(
                _RECORD, (response.status_code, response.body, response.media_type, project_id, stored_key)
            )
            return response

    return await run_write(pool, once)
