"""API-key authentication and permission checks for every /api route.

Verified keys are cached for `key_cache_seconds` (default 2 s) so a request costs no extra round trip;
a revocation therefore takes effect within that time on every server.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool

from lunogram_server.http.problems import ProblemError
from lunogram_server.projects.service import ApiKeyAuth, Permission, verify_key

_CACHE_MAX = 10_000

_FORBIDDEN_HINT = {
    Permission.BROADCAST: "a public key may not send `match` events",
    Permission.DELETE: "a public key may not delete",
    Permission.READ: "a public key may not read",
    Permission.WRITE: "this key may not write",
}


class KeyCache:
    def __init__(self, pool: AsyncConnectionPool[Any], ttl: float) -> None:
        self._pool = pool
        self._ttl = ttl
        self._entries: dict[str, tuple[float, ApiKeyAuth | None]] = {}

    async def verify(self, key: str) -> ApiKeyAuth | None:
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self._pool.connection() as conn:
            auth = await verify_key(conn, key)
        if len(self._entries) >= _CACHE_MAX:
            self._entries.clear()
        self._entries[key] = (now + self._ttl, auth)
        return auth


def bearer_key(request: Request) -> str:
    header = request.headers.get("authorization", "").strip()
    if not header:
        raise ProblemError(401, "Authorization: missing API key; send `Authorization: Bearer <key>`")
    scheme, _, rest = header.partition(" ")
    key = rest.strip() if scheme.lower() == "bearer" else header
    if not key:
        raise ProblemError(401, "Authorization: the Bearer token is empty")
    return key


_SCOPE_KEY = "lunogram.auth"


async def authenticate(request: Request) -> ApiKeyAuth:
    """The request's verified key (401 otherwise); verified once per request, kept in the ASGI scope."""
    known: ApiKeyAuth | None = request.scope.get(_SCOPE_KEY)
    if known is not None:
        return known
    key = bearer_key(request)
    cache: KeyCache = request.app.state.key_cache
    auth = await cache.verify(key)
    if auth is None:
        raise ProblemError(401, "Authorization: unknown or revoked API key")
    request.scope[_SCOPE_KEY] = auth
    return auth


def check_permission(auth: ApiKeyAuth, permission: Permission) -> None:
    if permission not in auth.permissions:
        raise ProblemError(
            403,
            f"{_FORBIDDEN_HINT[permission]}: use a secret key, or widen this public key with "
            f"`lunogram keys create --public --allow {permission.value}`",
        )


async def authorize(request: Request, permission: Permission) -> ApiKeyAuth:
    """The caller's key, which must hold `permission` (401, 403 otherwise)."""
    auth = await authenticate(request)
    check_permission(auth, permission)
    return auth


def require(permission: Permission) -> Callable[..., Awaitable[ApiKeyAuth]]:
    """The same as a FastAPI dependency, for routes that declare their inputs (the admin reads)."""

    async def dependency(auth: Annotated[ApiKeyAuth, Depends(authenticate)]) -> ApiKeyAuth:
        check_permission(auth, permission)
        return auth

    return dependency


def forbid_unless(auth: ApiKeyAuth, permission: Permission, what: str) -> None:
    """For checks that depend on the body (e.g. `match` events)."""
    if permission not in auth.permissions:
        raise ProblemError(
            403,
            f"{what}: a public key may not do this; use a secret key or "
            f"`lunogram keys create --public --allow {permission.value}`",
        )


Reader = Annotated[ApiKeyAuth, Depends(require(Permission.READ))]


async def _secret_only(auth: Annotated[ApiKeyAuth, Depends(authenticate)]) -> ApiKeyAuth:
    if auth.kind != "secret":
        raise ProblemError(403, "this operator action needs a secret key")
    return auth


Operator = Annotated[ApiKeyAuth, Depends(_secret_only)]
