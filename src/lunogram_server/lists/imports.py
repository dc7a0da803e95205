"""CSV imports into static lists.

The file is parsed and checked row by row when it is uploaded (a bad row is reported with its line number
and the rule it broke; the good ones are kept), stored, and applied by the lists loop in chunks: each chunk
upserts its users (created when new, `data` merged) and adds them to the list in one transaction, then
advances the import's progress, so a `kill -9` loses at most the chunk in hand, which is redone.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from lunogram_server.db import fetch_scalar, load_queries
from lunogram_server.identity import DEFAULT_SOURCE

Q = load_queries("lunogram_server.lists", "imports.sql")
CHUNK = 1000
MAX_ERRORS = 1000
MAX_ID_LENGTH = 512
MAX_SOURCE_LENGTH = 255
RESERVED = ("external_id", "source")


class BadFile(ValueError):
    """The file as a whole cannot be imported (no header, no external_id column, not UTF-8)."""


@dataclass
class ParsedFile:
    rows: list[list[Any]] = field(default_factory=list)  # [line, identifiers, fields]
    errors: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0


def parse(raw: bytes) -> ParsedFile:
    """Rows `external_id[,source][,data columns...]` under a header naming them; data values are strings."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadFile(f"body: is not UTF-8 (byte {exc.start})") from None
    if "\x00" in text:
        raise BadFile("body: must not contain NUL characters")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise BadFile("body: is empty; send a header row (external_id[,source][,data columns])") from None
    except csv.Error as exc:
        raise BadFile(f"header: is not valid CSV ({exc})") from None
    if "external_id" not in header:
        raise BadFile("header: needs an external_id column")
    for name in header:
        if not name:
            raise BadFile("header: a column has no name")
        if header.count(name) > 1:
            raise BadFile(f"header: column {name!r} appears twice")
    parsed = ParsedFile()
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue  # blank line
            parsed.total += 1
            line = reader.line_num
            problem = _check(header, cells)
            if problem:
                if len(parsed.errors) < MAX_ERRORS:
                    parsed.errors.append({"line": line, "error": problem})
                continue
            values = dict(zip(header, cells, strict=True))
            source = values.get("source", "").strip() or DEFAULT_SOURCE
            identifier = {"source": source, "external_id": values["external_id"]}
            data = {k: v for k, v in values.items() if k not in RESERVED and v != ""}
            parsed.rows.append([line, [identifier], {"data": data} if data else {}])
    except csv.Error as exc:
        raise BadFile(f"line {reader.line_num}: is not valid CSV ({exc})") from None
    if parsed.total == 0:
        raise BadFile("body: has a header but no rows")
    return parsed


def _check(header: list[str], cells: list[str]) -> str | None:
    if len(cells) != len(header):
        return f"has {len(cells)} cells; the header names {len(header)} columns"
    values = dict(zip(header, cells, strict=True))
    external_id = values["external_id"]
    if not external_id.strip():
        return "external_id: is required"
    if len(external_id) > MAX_ID_LENGTH:
        return f"external_id: longer than {MAX_ID_LENGTH} characters"
    if len(values.get("source", "")) > MAX_SOURCE_LENGTH:
        return f"source: longer than {MAX_SOURCE_LENGTH} characters"
    return None


async def create(conn: AsyncConnection[Any], project_id: UUID, list_id: UUID, parsed: ParsedFile) -> str:
    params = {
        "project_id": project_id,
        "list_id": list_id,
        "rows": Jsonb(parsed.rows),
        "total_rows": parsed.total,
        "errors": Jsonb(parsed.errors),
        "error_count": parsed.total - len(parsed.rows),
    }
    import_id = await fetch_scalar(conn, Q["create"], params)
    return str(await detail(conn, project_id, list_id, import_id))


async def detail(conn: AsyncConnection[Any], project_id: UUID, list_id: UUID, import_id: UUID) -> str | None:
    params = {"project_id": project_id, "list_id": list_id, "import_id": import_id}
    result: str | None = await fetch_scalar(conn, Q["detail"], params)
    return result


async def apply_one_chunk(conn: AsyncConnection[Any]) -> bool:
    """Apply the next chunk of the oldest unfinished import; False when there is none."""
    async with conn.transaction():
        claimed = await (await conn.execute(Q["claim"])).fetchone()
        if claimed is None:
            return False
        import_id, project_id, list_id, offset = claimed
        chunk_params = {"import_id": import_id, "offset": offset, "limit": CHUNK}
        rows = await (await conn.execute(Q["chunk"], chunk_params)).fetchall()
        base = {"project_id": project_id, "list_id": list_id}
        errors: list[dict[str, Any]] = []
        try:
            async with conn.transaction():
                await _apply(conn, base, rows)
        except psycopg.DataError:  # a row the database refuses: apply one by one, report the bad ones
            for row in rows:
                try:
                    async with conn.transaction():
                        await _apply(conn, base, [row])
                except psycopg.DataError as exc:
                    errors.append({"line": int(row[0]), "error": str(exc).strip()[:300]})
        progress = {
            "import_id": import_id,
            "done": len(rows),
            "imported": len(rows) - len(errors),
            "errors": Jsonb(errors),
        }
        await conn.execute(Q["progress"], progress)
    return True


async def _apply(conn: AsyncConnection[Any], base: dict[str, Any], rows: list[tuple[Any, ...]]) -> None:
    payload = [{"identifiers": identifiers, "fields": fields} for _, identifiers, fields in rows]
    await conn.execute(Q["apply"], {**base, "rows": Jsonb(payload)})
