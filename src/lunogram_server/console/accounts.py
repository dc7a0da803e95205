"""Console accounts: users, their roles per project, sessions, one-time links and the login limit.

- Passwords are hashed with argon2id (argon2-cffi's defaults: 64 MiB, 3 passes), in a worker thread: a hash
  costs ~50 ms of CPU and must never run on the event loop.
- A session is a random token in an HttpOnly cookie; only its SHA-256 is stored, with the session's CSRF
  token and current project. Every request looks the session up (one indexed query), so a logout, a
  password reset or a disabled user ends it on every server at once.
- One-time links (the first owner's setup, invitations, resets) are random tokens stored hashed, with an
  expiry, used once.
- Failed sign-ins are rows per subject (`address:<ip>`, `account:<email>`); past the limit within the
  window a sign-in is refused (429) before the password is even checked, so guessing costs no hashing.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from lunogram_server.config import ConsoleSettings
from lunogram_server.db import fetch_scalar, load_queries

Q = load_queries("lunogram_server.console", "accounts.sql")

Role = Literal["owner", "admin", "editor", "viewer"]
ROLES: tuple[Role, ...] = ("viewer", "editor", "admin", "owner")
RANK: dict[str, int] = {role: n for n, role in enumerate(ROLES)}
PASSWORD_MIN = 10
PASSWORD_MAX = 1024  # argon2 takes any length; a cap keeps a 5 MB "password" from being hashed
EMAIL_MAX = 320
NAME_MAX = 200

_hasher = PasswordHasher()
# verified when the e-mail is unknown, so that a sign-in takes as long whether the account exists or not


@functools.cache
def _dummy_hash() -> str:
    # made on first use, not at import: every server process (API, workers) imports this module, and one
    # argon2 hash cost 170 ms of CPU at each start
    return _hasher.hash(secrets.token_urlsafe(16))


class AccountError(ValueError):
    """A refusal to show as is: `status` is the HTTP status, the message names the field and the rule."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def normalize_email(email: str) -> str:
    value = email.strip().lower()
    if not value or "@" not in value or len(value) > EMAIL_MAX or any(c.isspace() for c in value) or "\x00" in value:
        raise AccountError(400, f"email: must be an e-mail address (at most {EMAIL_MAX} characters)")
    return value


def check_password(password: str) -> None:
    if len(password) < PASSWORD_MIN:
        raise AccountError(400, f"password: must be at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise AccountError(400, f"password: must be at most {PASSWORD_MAX} characters")
    if "\x00" in password:
        raise AccountError(400, "password: must not contain the NUL character")


def check_name(name: str) -> str:
    value = name.strip()
    if len(value) > NAME_MAX or "\x00" in value:
        raise AccountError(400, f"name: at most {NAME_MAX} characters")
    return value


def check_role(role: str) -> Role:
    if role not in RANK:
        raise AccountError(400, f"role: must be one of {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


async def hash_password(password: str) -> str:
    check_password(password)
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """Constant work whether or not there is a stored hash (a dummy one is checked instead)."""
    if len(password) > PASSWORD_MAX:
        return False
    return await asyncio.to_thread(_verify, stored, password)


# -- users and roles ----------------------------------------------------------------------------------------


async def count_users(conn: AsyncConnection[Any]) -> int:
    return int(await fetch_scalar(conn, Q["count_users"]) or 0)


async def create_user(
    conn: AsyncConnection[Any], email: str, *, name: str = "", password_hash: str | None = None, superuser: bool = False
) -> dict[str, Any]:
    email = normalize_email(email)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            Q["insert_user"],
            {"email": email, "name": check_name(name), "password_hash": password_hash, "superuser": superuser},
        )
        row = await cur.fetchone()
    if row is None:
        raise AccountError(409, f"email: {email} already has a console account")
    return row


async def user_by_email(conn: AsyncConnection[Any], email: str) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(Q["user_by_email"], {"email": email.strip().lower()})
        return await cur.fetchone()


async def user_by_id(conn: AsyncConnection[Any], user_id: UUID) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(Q["user_by_id"], {"user_id": user_id})
        return await cur.fetchone()


async def set_password(conn: AsyncConnection[Any], user_id: UUID, password_hash: str) -> None:
    """A new password ends every session of the user and every link still open for them."""
    await conn.execute(Q["set_password"], {"user_id": user_id, "password_hash": password_hash})
    await conn.execute(Q["revoke_user_sessions"], {"user_id": user_id})
    await conn.execute(Q["retire_user_tokens"], {"user_id": user_id})


async def set_disabled(conn: AsyncConnection[Any], user_id: UUID, disabled: bool) -> bool:
    found = await fetch_scalar(conn, Q["set_disabled"], {"user_id": user_id, "disabled": disabled})
    if disabled:
        await conn.execute(Q["revoke_user_sessions"], {"user_id": user_id})
    return found is not None


async def role_of(conn: AsyncConnection[Any], user_id: UUID, project_id: UUID) -> Role | None:
    role: Role | None = await fetch_scalar(conn, Q["role_of"], {"user_id": user_id, "project_id": project_id})
    return role


async def grant(conn: AsyncConnection[Any], user_id: UUID, project_id: UUID, role: str) -> None:
    await conn.execute(Q["grant_role"], {"user_id": user_id, "project_id": project_id, "role": check_role(role)})


async def revoke(conn: AsyncConnection[Any], user_id: UUID, project_id: UUID) -> bool:
    return await fetch_scalar(conn, Q["revoke_role"], {"user_id": user_id, "project_id": project_id}) is not None


async def owners_of(conn: AsyncConnection[Any], project_id: UUID) -> set[UUID]:
    cursor = await conn.execute(Q["owners_of"], {"project_id": project_id})
    return {row[0] for row in await cursor.fetchall()}


async def members_of(conn: AsyncConnection[Any], project_id: UUID) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(Q["members_of"], {"project_id": project_id})
        return await cur.fetchall()


async def projects_of(conn: AsyncConnection[Any], user_id: UUID) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(Q["projects_of"], {"user_id": user_id})
        return await cur.fetchall()


async def list_users(conn: AsyncConnection[Any]) -> list[tuple[Any, ...]]:
    """(email, name, superuser, disabled, has a password, "project:role, ...") per user, by e-mail."""
    cursor = await conn.execute(Q["list_users"])
    return list(await cursor.fetchall())


# -- one-time links -----------------------------------------------------------------------------------------


async def create_link(
    conn: AsyncConnection[Any], purpose: Literal["setup", "invite", "reset"], hours: float, user_id: UUID | None = None
) -> str:
    token = new_token()
    await conn.execute(
        Q["insert_token"],
        {"token_hash": token_hash(token), "purpose": purpose, "user_id": user_id, "seconds": hours * 3600},
    )
    return token


async def setup_link(conn: AsyncConnection[Any], hours: float) -> str | None:
    """A fresh link that creates the first owner, while the installation has no console user; else None."""
    async with conn.transaction():
        await conn.execute(Q["lock_accounts"])
        if await count_users(conn):
            return None
        return await create_link(conn, "setup", hours)


async def link(conn: AsyncConnection[Any], token: str) -> dict[str, Any] | None:
    """What a one-time link is for (`purpose`, `user_id`, `email`), while it can be used; else None."""
    if not token or len(token) > 200:
        return None
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(Q["token"], {"token_hash": token_hash(token)})
        found = await cur.fetchone()
    if found is not None and found["purpose"] == "setup" and await count_users(conn):
        return None  # the first owner exists: setup links are spent
    return found


async def use_setup_link(
    conn: AsyncConnection[Any], token: str, email: str, name: str, password: str
) -> dict[str, Any]:
    """Create the first owner (a superuser) with the link; every setup link is spent with it."""
    password_hash = await hash_password(password)
    email = normalize_email(email)
    async with conn.transaction():
        await conn.execute(Q["lock_accounts"])
        if await count_users(conn):
            raise AccountError(410, "link: the first owner exists already; sign in instead")
        used = await fetch_scalar(conn, Q["use_token"], {"token_hash": token_hash(token)})
        if used != "setup":
            raise AccountError(410, "link: this setup link was used or has expired; restart the server for a new one")
        user = await create_user(conn, email, name=name, password_hash=password_hash, superuser=True)
        await conn.execute(Q["retire_setup_tokens"])
        return user


async def use_password_link(conn: AsyncConnection[Any], token: str, password: str) -> dict[str, Any]:
    """An invitation or reset link sets the user's password (and ends their sessions)."""
    password_hash = await hash_password(password)
    async with conn.transaction():
        cursor = await conn.execute(Q["use_token"], {"token_hash": token_hash(token)})
        row = await cursor.fetchone()
        if row is None or row[0] not in ("invite", "reset") or row[1] is None:
            raise AccountError(410, "link: this link was used or has expired; ask for a new one")
        user = await user_by_id(conn, row[1])
        if user is None or user["disabled_at"] is not None:
            raise AccountError(410, "link: this account is disabled")
        await set_password(conn, row[1], password_hash)
        return user


# -- the login limit ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limited:
    subject: str
    retry_after: int


def _subjects(address: str, email: str) -> list[str]:
    return [f"address:{address}", f"account:{email.strip().lower()[:EMAIL_MAX]}"]


async def login_limited(
    conn: AsyncConnection[Any], settings: ConsoleSettings, address: str, email: str
) -> Limited | None:
    """The subject past its limit (and when to retry), or None when this sign-in may be tried."""
    limits = {"address": settings.login_failures_per_address, "account": settings.login_failures_per_account}
    window = settings.login_window_seconds
    cursor = await conn.execute(Q["count_failures"], {"subjects": _subjects(address, email), "window": window})
    for subject, failures in await cursor.fetchall():
        limit = limits[subject.split(":", 1)[0]]
        if limit and failures >= limit:
            wait = await fetch_scalar(conn, Q["oldest_failure"], {"subject": subject, "window": window})
            return Limited(subject, max(1, int((wait or 1) + 0.999)))
    return None


async def record_failure(conn: AsyncConnection[Any], address: str, email: str) -> None:
    await conn.execute(Q["record_failure"], {"subjects": _subjects(address, email)})


async def clear_account_failures(conn: AsyncConnection[Any], email: str) -> None:
    await conn.execute(Q["clear_failures"], {"subject": _subjects("", email)[1]})


# -- sessions -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    id: UUID
    user_id: UUID
    email: str
    name: str
    superuser: bool
    csrf_token: str
    project_id: UUID | None
    project_name: str | None
    role: Role | None  # in the current project; None without one, or without a role there

    def may(self, role: str) -> bool:
        return self.role is not None and RANK[self.role] >= RANK[role]


@dataclass(frozen=True)
class NewSession:
    token: str
    csrf_token: str


async def create_session(
    conn: AsyncConnection[Any], settings: ConsoleSettings, user_id: UUID, address: str, user_agent: str
) -> NewSession:
    token, csrf = new_token(), new_token()
    project_id = await fetch_scalar(conn, Q["first_project"], {"user_id": user_id})
    await conn.execute(
        Q["insert_session"],
        {
            "token_hash": token_hash(token),
            "user_id": user_id,
            "project_id": project_id,
            "csrf_token": csrf,
            "address": address[:100],
            "user_agent": user_agent[:300],
            "max_seconds": settings.session_max_hours * 3600,
        },
    )
    return NewSession(token, csrf)


async def session(conn: AsyncConnection[Any], settings: ConsoleSettings, token: str) -> Session | None:
    """The live session of a cookie's token, or None; marks it used (at most once a minute)."""
    if not token or len(token) > 200:
        return None
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            Q["session"], {"token_hash": token_hash(token), "idle_seconds": settings.session_idle_hours * 3600}
        )
        row = await cur.fetchone()
    if row is None:
        return None
    if row["stale"]:
        await conn.execute(Q["touch_session"], {"session_id": row["id"]})
    return Session(
        id=row["id"],
        user_id=row["user_id"],
        email=row["email"],
        name=row["name"],
        superuser=row["superuser"],
        csrf_token=row["csrf_token"],
        project_id=row["project_id"],
        project_name=row["project_name"],
        role=row["role"],
    )


async def switch_project(conn: AsyncConnection[Any], current: Session, project_id: UUID) -> bool:
    """Point the session at another project the user has a role in; False when they have none there."""
    if await role_of(conn, current.user_id, project_id) is None:
        return False
    await conn.execute(Q["set_session_project"], {"session_id": current.id, "project_id": project_id})
    return True


async def end_session(conn: AsyncConnection[Any], session_id: UUID) -> None:
    await conn.execute(Q["revoke_session"], {"session_id": session_id})


async def end_sessions_of(conn: AsyncConnection[Any], user_id: UUID) -> None:
    await conn.execute(Q["revoke_user_sessions"], {"user_id": user_id})


async def purge(conn: AsyncConnection[Any]) -> None:
    await conn.execute(Q["purge"])
