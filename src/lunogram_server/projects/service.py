"""Projects and their API keys.

A key is shown once, when it is made; only its SHA-256 is stored. Public keys (`pk_`) are browser-safe:
they may write profiles, memberships, identifier events and schedules, and nothing else unless an operator
widens them with extra permissions. Secret keys (`sk_`) may do everything in their project.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from lunogram_server.db import load_queries

Q = load_queries("lunogram_server.projects")

KeyKind = Literal["public", "secret"]
PREFIX: dict[KeyKind, str] = {"public": "pk_", "secret": "sk_"}


class Permission(StrEnum):
    WRITE = "write"  # upserts, memberships, identifier events and schedules
    BROADCAST = "broadcast"  # `match` events
    DELETE = "delete"  # every DELETE route
    READ = "read"  # the admin read API


PUBLIC_DEFAULT = frozenset({Permission.WRITE})
WIDENABLE = frozenset({Permission.BROADCAST, Permission.DELETE, Permission.READ})


@dataclass(frozen=True)
class ApiKeyAuth:
    """What a verified key may do, and in which project. A console session (kind "session") is the
    session's id, its current project and its user's role there (http/auth.py checks the role)."""

    key_id: UUID
    project_id: UUID
    kind: KeyKind | Literal["session"]
    permissions: frozenset[Permission] = field(default_factory=frozenset)
    role: str | None = None  # sessions: owner, admin, editor or viewer
    console_user_id: UUID | None = None  # sessions: who


@dataclass(frozen=True)
class NewKey:
    id: UUID
    project_id: UUID
    kind: KeyKind
    key: str  # the only time the full key exists outside the caller's hands
    allow: list[str]


KEY_MIN_LENGTH = 16
KEY_MAX_LENGTH = 128
# RFC 6750's token characters: what a Bearer token may be made of (generated keys use the URL-safe base64 ones)
_KEY_CHARACTERS = re.compile(r"[A-Za-z0-9._~+/=-]+")


def key_format_error(key: str) -> str | None:
    """Why `key` cannot be an API key, or None if it can. Checked before any lookup, so a caller cannot make
    the server hash, look up or remember arbitrary text; pinned keys are held to the same rule."""
    if not KEY_MIN_LENGTH <= len(key) <= KEY_MAX_LENGTH:
        return f"a key is {KEY_MIN_LENGTH} to {KEY_MAX_LENGTH} characters long"
    if not key.startswith(("pk_", "sk_")):
        return "a key starts with `pk_` or `sk_`"
    if _KEY_CHARACTERS.fullmatch(key, 3) is None:
        return "a key is made of letters, digits and `-._~+/=`"
    return None


class InvalidKeyError(ValueError):
    """A key given to us (pinned or named) that is malformed or unknown."""


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def generate_key(kind: KeyKind) -> str:
    return PREFIX[kind] + secrets.token_urlsafe(24)


def permissions_for(kind: KeyKind, allow: list[str]) -> frozenset[Permission]:
    if kind == "secret":
        return frozenset(Permission)
    return PUBLIC_DEFAULT | {Permission(a) for a in allow if a in Permission._value2member_map_}


def _check_allow(kind: KeyKind, allow: list[str]) -> None:
    for name in allow:
        if name not in {p.value for p in WIDENABLE}:
            raise InvalidKeyError(f"unknown permission {name!r}: choose from {', '.join(sorted(WIDENABLE))}")
    if allow and kind == "secret":
        raise InvalidKeyError("a secret key already has every permission; --allow is for public keys")


async def create_project(conn: AsyncConnection[Any], name: str) -> dict[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(Q["create_project"], {"name": name})
        row = await cur.fetchone()
        assert row is not None
        return row


async def get_project(conn: AsyncConnection[Any], name: str) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(Q["get_project_by_name"], {"name": name})
        return await cur.fetchone()


async def list_projects(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(Q["list_projects"])
        return await cur.fetchall()


async def count_projects(conn: AsyncConnection[Any]) -> int:
    row = await (await conn.execute(Q["count_projects"])).fetchone()
    return int(row[0]) if row else 0


async def create_key(
    conn: AsyncConnection[Any],
    project_id: UUID,
    kind: KeyKind,
    *,
    name: str = "",
    allow: list[str] | None = None,
    key: str | None = None,
) -> NewKey | None:
    """Make a key (or store a pinned one). None when a pinned key is already stored."""
    allow = sorted(set(allow or []))
    _check_allow(kind, allow)
    if key is None:
        key = generate_key(kind)
    elif not key.startswith(PREFIX[kind]) or key_format_error(key) is not None:
        raise InvalidKeyError(
            f"a {kind} key must start with {PREFIX[kind]!r} and be {KEY_MIN_LENGTH} to {KEY_MAX_LENGTH} characters "
            "of letters, digits and -._~+/="
        )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            Q["insert_key"],
            {
                "project_id": project_id,
                "kind": kind,
                "key_hash": hash_key(key),
                "key_prefix": key[:10],
                "name": name,
                "allow": allow,
            },
        )
        row = await cur.fetchone()
    if row is None:
        return None
    return NewKey(id=row["id"], project_id=project_id, kind=kind, key=key, allow=allow)


async def list_keys(conn: AsyncConnection[Any], project_id: UUID | None = None) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(Q["list_keys"], {"project_id": project_id})
        return await cur.fetchall()


async def revoke_key(conn: AsyncConnection[Any], key: str) -> list[dict[str, Any]]:
    """Revoke by id, by the prefix `keys list` shows, or by the full key."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(Q["revoke_key"], {"key": key, "key_hash": hash_key(key)})
        return await cur.fetchall()


async def revoke_project_key(conn: AsyncConnection[Any], project_id: UUID, key_id: UUID) -> bool:
    """Revoke one active key of the project; False when it has no such active key."""
    cursor = await conn.execute(Q["revoke_project_key"], {"project_id": project_id, "key_id": key_id})
    return cursor.rowcount == 1


async def project_by_id(conn: AsyncConnection[Any], project_id: UUID) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(Q["project_by_id"], {"project_id": project_id})
        return await cur.fetchone()


async def verify_key(conn: AsyncConnection[Any], key: str) -> ApiKeyAuth | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(Q["find_active_key"], {"key_hash": hash_key(key)})
        row = await cur.fetchone()
    if row is None:
        return None
    return ApiKeyAuth(
        key_id=row["id"],
        project_id=row["project_id"],
        kind=row["kind"],
        permissions=permissions_for(row["kind"], row["allow"]),
    )


@dataclass
class Bootstrap:
    project: dict[str, Any]
    created_project: bool
    new_keys: list[NewKey]


async def bootstrap(
    conn: AsyncConnection[Any],
    project_name: str,
    *,
    public_key: str | None = None,
    secret_key: str | None = None,
) -> Bootstrap | None:
    """On the first start, make the default project with one public and one secret key.

    Pinned keys (LUNOGRAM_BOOTSTRAP_*) are stored on every start if missing, so automation can rely on them.
    Returns None when there was nothing to do.
    """
    pinned = {"public": public_key, "secret": secret_key}
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (0x4B657973,))
        first_start = await count_projects(conn) == 0
        if not first_start and not any(pinned.values()):
            return None
        project = await get_project(conn, project_name)
        created = project is None
        if project is None:
            project = await create_project(conn, project_name)
        made: list[NewKey] = []
        kinds: tuple[KeyKind, ...] = ("public", "secret")
        for kind in kinds:
            if pinned[kind] or first_start:
                new = await create_key(conn, project["id"], kind, name="bootstrap", key=pinned[kind])
                if new is not None:
                    made.append(new)
        return Bootstrap(project=project, created_project=created, new_keys=made)


def describe(auth: ApiKeyAuth) -> str:
    if auth.kind == "session":
        return f"console session {auth.key_id} ({auth.role}) of project {auth.project_id}"
    return f"{auth.kind} key {auth.key_id} of project {auth.project_id}"
