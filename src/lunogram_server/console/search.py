"""Finding users and organizations by identifier, e-mail (users), name (organizations) or data.

What the query looks like decides how it is searched, each way one bounded index scan:
- empty: the newest profiles;
- a UUID: that profile;
- `{...}` (a JSON object) or `key=value` (`plan=pro`, `address.city=Paris`, `age=42`): profiles whose
  data contains it (JSONB `@>`, the GIN index the broadcasts use);
- with an `@`: users whose e-mail starts with it (case-insensitive);
- anything else: profiles with an identifier (any source) starting with it, then users whose e-mail or
  organizations whose name starts with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from lunogram_server.db import load_queries

Q = load_queries("lunogram_server.console", "search.sql")
MAX_QUERY = 512
MAX_LIMIT = 100
Mode = Literal["recent", "id", "data", "email", "identifier", "name"]


class SearchError(ValueError):
    """A query that cannot be searched; the message names the rule."""


@dataclass(frozen=True)
class Found:
    mode: Mode
    results: list[dict[str, Any]]


def prefix_range(prefix: str) -> tuple[str, str]:
    """[low, high) holding exactly the strings that start with `prefix`, in byte-wise (code point) order:
    the last character moved up by one code point (over the surrogates, which UTF-8 cannot hold)."""
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        return prefix, prefix[:-1] + "\U0010ffff" * 2
    following = last + 1 if last + 1 != 0xD800 else 0xE000
    return prefix, prefix[:-1] + chr(following)


def data_filter(query: str) -> dict[str, Any] | None:
    """The object a data search looks for, or None when the query is not one."""
    text = query.strip()
    if text.startswith("{"):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise SearchError(f"q: not a JSON object ({exc.msg})") from None
        if not isinstance(value, dict) or not value:
            raise SearchError("q: a data search is a non-empty JSON object")
        return value
    key, sep, raw = text.partition("=")
    key = key.strip().removeprefix("data.")
    if not sep or not key or " " in key:
        return None
    try:
        parsed: Any = orjson.loads(raw.strip())
    except orjson.JSONDecodeError:
        parsed = raw.strip()
    for part in reversed(key.split(".")):
        if not part:
            raise SearchError("q: a data path is keys joined by dots (`address.city=Paris`)")
        parsed = {part: parsed}
    result: dict[str, Any] = parsed
    return result


def _check(query: str) -> str:
    text = query.strip()
    if len(text) > MAX_QUERY:
        raise SearchError(f"q: at most {MAX_QUERY} characters")
    if "\x00" in text:
        raise SearchError("q: must not contain the NUL character")
    return text


async def _rows(conn: AsyncConnection[Any], name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    cursor = await conn.execute(Q[name], params)
    columns = [c.name for c in cursor.description or ()]
    return [dict(zip(columns, row, strict=True)) for row in await cursor.fetchall()]


async def users(conn: AsyncConnection[Any], project_id: UUID, query: str, limit: int = 50) -> Found:
    return await _search(conn, "users", project_id, query, limit)


async def organizations(conn: AsyncConnection[Any], project_id: UUID, query: str, limit: int = 50) -> Found:
    return await _search(conn, "organizations", project_id, query, limit)


async def _search(conn: AsyncConnection[Any], kind: str, project_id: UUID, query: str, limit: int) -> Found:
    text = _check(query)
    limit = max(1, min(limit, MAX_LIMIT))
    params: dict[str, Any] = {"project_id": project_id, "limit": limit}
    if not text:
        return Found("recent", await _rows(conn, f"{kind}_recent", params))
    try:
        wanted = UUID(text)
    except ValueError:
        pass
    else:
        return Found("id", await _rows(conn, f"{kind}_by_id", {**params, "id": wanted}))
    data = data_filter(text)
    if data is not None:
        return Found("data", await _rows(conn, f"{kind}_by_data", {**params, "data": Jsonb(data)}))
    low, high = prefix_range(text.lower())
    if kind == "users" and "@" in text:
        return Found("email", await _rows(conn, "users_by_email", {**params, "low": low, "high": high}))
    ident_low, ident_high = prefix_range(text)
    found = await _rows(conn, f"{kind}_by_identifier", {**params, "low": ident_low, "high": ident_high})
    if len(found) < limit:
        other = "users_by_email" if kind == "users" else "organizations_by_name"
        seen = {row["id"] for row in found}
        more = await _rows(conn, other, {**params, "low": low, "high": high, "limit": limit - len(found)})
        found += [row for row in more if row["id"] not in seen]
    return Found("identifier", found)
