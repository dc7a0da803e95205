"""Named SQL kept beside its domain, in `sql/*.sql` files with `-- name: <query>` headers.

Loading them once at import keeps SQL out of Python strings and makes every statement greppable by name.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from psycopg import AsyncConnection

_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def read_sql(package: str, filename: str) -> str:
    return resources.files(package).joinpath("sql", filename).read_text(encoding="utf-8")


def load_queries(package: str, filename: str = "queries.sql") -> dict[str, str]:
    """Parse a file of `-- name: x` blocks into {name: sql}."""
    text = read_sql(package, filename)
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{package}/sql/{filename}: query {name!r} is defined twice")
        queries[name] = body.strip().rstrip(";")
    return queries


async def fetch_scalar(conn: AsyncConnection[Any], query: str, params: dict[str, Any] | None = None) -> Any:
    """The first column of the first row, or None."""
    row = await (await conn.execute(query, params)).fetchone()
    return row[0] if row else None
