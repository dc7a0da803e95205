"""API-key authentication and permission checks for every /api route.

Verified keys are cached for `key_cache_seconds` (default 2 s) so a request costs no extra round trip;
a revocation therefore takes effect within that time on every server.

A caller without a valid key must cost next to nothing, however many keys it tries: a malformed key is
refused before any lookup (projects.service.key_format_error), an unknown one is remembered as unknown for
the same time (bounded, apart from the verified keys so a flood cannot evict them), and each client
address may make only so many lookups that find nothing (a token bucket per address, bounded too); past
that, keys it has not shown to be valid get 429 without a lookup. Before these, 100 requests with 8 MB
keys took a server from 249 MB to 1,046 MB, and 3,000 random keys at ~150/s (one pool connection and
query each) pushed a legitimate upsert from 40 ms to 1.45 s.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool

from lunogram_server.config import AccessSettings
from lunogram_server.console import accounts
from lunogram_server.console.access import (
    CSRF_HEADER,
    SAFE_METHODS,
    SESSION_COOKIE,
    allowed,
    csrf_matches,
    required_role,
)
from lunogram_server.http.problems import ProblemError
from lunogram_server.projects.service import ApiKeyAuth, Permission, key_format_error, verify_key

KNOWN_KEYS_MAX = 10_000  # verified keys kept per process; only real keys get here, so this is rarely reached

_FORBIDDEN_HINT = {
    Permission.BROADCAST: "a public key may not send `match` events",
    Permission.DELETE: "a public key may not delete",
    Permission.READ: "a public key may not read",
    Permission.WRITE: "this key may not write",
}

UNKNOWN_KEY = "Authorization: unknown or revoked API key"


class FailureLimiter:
    """A token bucket per client address: `limit` failures at once, refilled evenly over `window` seconds.

    At most `max_addresses` buckets are kept: when full, the buckets that have refilled (the same as never
    seen) go first, then the least recently used, down to three quarters, so the sweep is paid once per
    quarter of the table's inserts."""

    def __init__(self, limit: int, window: float, max_addresses: int) -> None:
        self.limit = limit
        self.rate = limit / window
        self.max_addresses = max_addresses
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, when)

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, address: str, now: float) -> float:
        bucket = self._buckets.get(address)
        if bucket is None:
            return float(self.limit)
        return min(float(self.limit), bucket[0] + (now - bucket[1]) * self.rate)

    def take(self, address: str, now: float) -> float:
        """Take one token: 0.0 if there was one, else the seconds until there is."""
        if self.limit == 0:
            return 0.0
        tokens = self._tokens(address, now)
        if tokens < 1:
            return (1 - tokens) / self.rate
        self._set(address, tokens - 1, now)
        return 0.0

    def give_back(self, address: str, now: float) -> None:
        """The lookup found a key after all: it was not a failure."""
        if self.limit and address in self._buckets:
            tokens = self._tokens(address, now) + 1
            if tokens >= self.limit:
                del self._buckets[address]  # a full bucket is the same as none
            else:
                self._set(address, tokens, now)

    def _set(self, address: str, tokens: float, now: float) -> None:
        self._buckets.pop(address, None)
        if len(self._buckets) >= self.max_addresses:
            self._shrink(now)
        self._buckets[address] = (tokens, now)

    def _shrink(self, now: float) -> None:
        refilled = [a for a, (tokens, at) in self._buckets.items() if tokens + (now - at) * self.rate >= self.limit]
        for address in refilled:
            del self._buckets[address]
        target = self.max_addresses * 3 // 4
        while len(self._buckets) > target:
            del self._buckets[next(iter(self._buckets))]


def client_address(client: tuple[str, int] | None) -> str:
    """The caller's address (the ASGI scope's `client`), IPv6 ones by /64 network (one host usually holds a
    whole /64)."""
    host: str = client[0] if client else ""
    if ":" in host:
        try:
            address = ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return host
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return host


class KeyCache:
    """Verified keys and unknown keys (each for `ttl` seconds), and the per-address limit on lookups that
    found nothing. Both tables are bounded in entries, and their keys are at most
    `KEY_MAX_LENGTH` characters (longer ones are malformed): a few MB at most."""

    def __init__(self, pool: AsyncConnectionPool[Any], ttl: float, access: AccessSettings | None = None) -> None:
        access = access or AccessSettings()
        self._pool = pool
        self._ttl = ttl
        # key -> (fresh until, what it may do); an expired entry is still a key that was valid: it is looked
        # up again, and the failure limit does not apply to it
        self._known: dict[str, tuple[float, ApiKeyAuth]] = {}
        self._unknown: dict[str, float] = {}  # key -> remembered until; insertion order is expiry order
        self._unknown_max = access.unknown_key_cache_size
        self.failures = FailureLimiter(
            access.auth_failure_limit, access.auth_failure_window_seconds, access.auth_failure_addresses
        )
        self.lookups = {"known": 0, "unknown": 0}  # database lookups, by what they found (/metrics)
        self.refused = {"malformed": 0, "unknown": 0, "limited": 0}  # 401s and 429s, by reason (/metrics)

    @property
    def sizes(self) -> dict[str, int]:
        return {"known": len(self._known), "unknown": len(self._unknown)}

    async def verify(self, key: str, client: tuple[str, int] | None = None) -> ApiKeyAuth:
        """The key's permissions; ProblemError 401 (malformed, unknown, revoked) or 429 (too many failures)."""
        now = time.monotonic()
        known = self._known.get(key)
        if known is not None and known[0] > now:
            return known[1]
        limited = known is None  # a key that was valid is checked again whatever its caller did
        address = ""
        if limited:
            problem = key_format_error(key)
            if problem is not None:
                self.refused["malformed"] += 1
                raise ProblemError(401, f"Authorization: malformed API key: {problem}")
            remembered = self._unknown.get(key)
            if remembered is not None and remembered > now:
                self.refused["unknown"] += 1
                raise ProblemError(401, UNKNOWN_KEY)
            address = client_address(client)
            wait = self.failures.take(address, now)
            if wait:
                self.refused["limited"] += 1
                seconds = max(1, math.ceil(wait))
                raise ProblemError(
                    429,
                    f"Authorization: too many unknown API keys from this address; retry in {seconds} s",
                    headers={"Retry-After": str(seconds)},
                )
        async with self._pool.connection() as conn:
            auth = await verify_key(conn, key)
        now = time.monotonic()
        if auth is not None:
            self.lookups["known"] += 1
            if limited:
                self.failures.give_back(address, now)
            if key not in self._known and len(self._known) >= KNOWN_KEYS_MAX:
                del self._known[next(iter(self._known))]
            self._known[key] = (now + self._ttl, auth)
            return auth
        self.lookups["unknown"] += 1
        self.refused["unknown"] += 1
        self._known.pop(key, None)
        self._remember_unknown(key, now)
        raise ProblemError(401, UNKNOWN_KEY)

    def _remember_unknown(self, key: str, now: float) -> None:
        unknown = self._unknown
        unknown.pop(key, None)
        while unknown:  # expired ones first: they are at the front
            first = next(iter(unknown))
            if unknown[first] > now and len(unknown) < self._unknown_max:
                break
            del unknown[first]
        unknown[key] = now + self._ttl


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
    """The request's verified key (401, 429 otherwise), or for /api/admin without a key, its console
    session (401, 403); verified once per request, kept in the ASGI scope."""
    known: ApiKeyAuth | None = request.scope.get(_SCOPE_KEY)
    if known is not None:
        return known
    if (
        SESSION_COOKIE in request.cookies
        and not request.headers.get("authorization")
        and request.url.path.startswith("/api/admin/")
    ):
        auth = await session_auth(request)
    else:
        key = bearer_key(request)
        cache: KeyCache = request.app.state.key_cache
        auth = await cache.verify(key, request.scope.get("client"))
    request.scope[_SCOPE_KEY] = auth
    return auth


async def session_auth(request: Request) -> ApiKeyAuth:
    """A console session calling the admin API: alive (401), with a project and a role there that allows
    the request (403, console/access.py), and for a change, the session's CSRF token in `X-CSRF-Token`
    (403). The session acts with every permission its role allows in its current project."""
    settings = request.app.state.settings.console
    async with request.app.state.pool.connection() as conn:
        found = await accounts.session(conn, settings, request.cookies[SESSION_COOKIE])
    if found is None:
        raise ProblemError(401, "console session: signed out or expired; sign in again at /console/login")
    if found.project_id is None or found.role is None:
        raise ProblemError(403, "console session: no project chosen that this account has a role in")
    method = request.method.upper()
    if method not in SAFE_METHODS and not csrf_matches(found.csrf_token, request.headers.get(CSRF_HEADER)):
        raise ProblemError(403, "X-CSRF-Token: missing or not this console session's token")
    needed = required_role(method, request.url.path)
    if not allowed(found.role, needed):
        raise ProblemError(
            403, f"console role: a {found.role} of this project may not do this ({method}); it needs {needed} or above"
        )
    return ApiKeyAuth(
        key_id=found.id,
        project_id=found.project_id,
        kind="session",
        permissions=frozenset(Permission),
        role=found.role,
        console_user_id=found.user_id,
    )


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
    """A secret key, or a console session (whose role authenticate() has checked for this request)."""
    if auth.kind not in ("secret", "session"):
        raise ProblemError(403, "this operator action needs a secret key")
    return auth


Operator = Annotated[ApiKeyAuth, Depends(_secret_only)]
