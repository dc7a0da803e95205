"""CSV imports into static lists.

The file is parsed and checked row by row when it is uploaded (a bad row is reported with its line number
and the rule it broke; the good ones are kept), stored, and applied by the lists loop in chunks: each chunk
upserts its users (created when new, `data` merged) and adds them to the list in one transaction, then
advances the import's progress, so a `kill -9` loses at most the chunk in hand, which is redone.

Parsing is linear in the file and runs in a thread (`parse` is called through `asyncio.to_thread`): a
40,000-column header took 16 s on the event loop when duplicate names were found by counting each name
in the whole header, and every project's requests waited. The data column names are stored once with the
import and each row as its cells (a file of 10,000 columns of 250-character names, one data object per
row, made a jsonb too large to store). Caps: the body (LUNOGRAM_MAX_BODY_BYTES), MAX_COLUMNS columns of
at most MAX_COLUMN_NAME characters, and a row's data, which must fit a profile's data
(LUNOGRAM_MAX_PROFILE_DATA_BYTES; also checked exactly when the row is applied).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import orjson
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
MAX_COLUMNS = 1000
MAX_COLUMN_NAME = 255
RESERVED = ("external_id", "source")


class BadFile(ValueError):
    """The file as a whole cannot be imported (no header, no external_id column, not UTF-8, too many or
    too long column names)."""


@dataclass
class ParsedFile:
    columns: list[str] = field(default_factory=list)  # the data columns, in file order
    rows: list[list[Any]] = field(default_factory=list)  # [line, identifiers, cells (None: empty)]
    errors: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    rows_json: bytes = b"[]"  # `rows` as JSON, made in the parsing thread

    @property
    def good(self) -> int:
        return len(self.rows)


def parse(raw: bytes, max_data_bytes: int) -> ParsedFile:
    """Rows `external_id[,source][,data columns...]` under a header naming them; data values are strings.
    CPU-bound: call it in a thread."""
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
    if len(header) > MAX_COLUMNS:
        raise BadFile(f"header: {len(header)} columns; at most {MAX_COLUMNS} are accepted")
    seen: set[str] = set()
    for name in header:
        if not name:
            raise BadFile("header: a column has no name")
        if len(name) > MAX_COLUMN_NAME:
            raise BadFile(f"header: column name {name[:40]!r}... is longer than {MAX_COLUMN_NAME} characters")
        if name in seen:
            raise BadFile(f"header: column {name!r} appears twice")
        seen.add(name)
    if "external_id" not in seen:
        raise BadFile("header: needs an external_id column")
    width = len(header)
    id_at = header.index("external_id")
    source_at = header.index("source") if "source" in seen else None
    data_at = [n for n, name in enumerate(header) if name not in RESERVED]
    # a row's data as stored is at least its names and values; each pair also costs a few bytes of framing
    name_bytes = [len(header[n].encode()) + 8 for n in data_at]
    parsed = ParsedFile(columns=[header[n] for n in data_at])
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue  # blank line
            parsed.total += 1
            line = reader.line_num
            problem = _check(cells, width, id_at, source_at)
            values: list[str | None] = []
            if problem is None:
                values = [cells[n] or None for n in data_at]
                size = sum(size + len(v.encode()) for size, v in zip(name_bytes, values, strict=True) if v)
                if size > max_data_bytes:
                    problem = (
                        f"data: at least {size} bytes; a user's data holds at most {max_data_bytes} "
                        "(LUNOGRAM_MAX_PROFILE_DATA_BYTES)"
                    )
            if problem is not None:
                if len(parsed.errors) < MAX_ERRORS:
                    parsed.errors.append({"line": line, "error": problem})
                continue
            source = (cells[source_at].strip() if source_at is not None else "") or DEFAULT_SOURCE
            identifier = {"source": source, "external_id": cells[id_at]}
            parsed.rows.append([line, [identifier], values])
    except csv.Error as exc:
        raise BadFile(f"line {reader.line_num}: is not valid CSV ({exc})") from None
    if parsed.total == 0:
        raise BadFile("body: has a header but no rows")
    parsed.rows_json = orjson.dumps(parsed.rows)
    return parsed


def _check(cells: list[str], width: int, id_at: int, source_at: int | None) -> str | None:
    if len(cells) != width:
        return f"has {len(cells)} cells; the header names {width} columns"
    external_id = cells[id_at]
    if not external_id.strip():
        return "external_id: is required"
    if len(external_id) > MAX_ID_LENGTH:
        return f"external_id: longer than {MAX_ID_LENGTH} characters"
    if source_at is not None and len(cells[source_at]) > MAX_SOURCE_LENGTH:
        return f"source: longer than {MAX_SOURCE_LENGTH} characters"
    return None


async def create(conn: AsyncConnection[Any], project_id: UUID, list_id: UUID, parsed: ParsedFile) -> str:
    params = {
        "project_id": project_id,
        "list_id": list_id,
        "columns": parsed.columns,
        "rows": Jsonb(parsed.rows_json, dumps=_already_json),
        "total_rows": parsed.total,
        "errors": Jsonb(parsed.errors),
        "error_count": parsed.total - parsed.good,
    }
    import_id = await fetch_scalar(conn, Q["create"], params)
    return str(await detail(conn, project_id, list_id, import_id))


async def detail(conn: AsyncConnection[Any], project_id: UUID, list_id: UUID, import_id: UUID) -> str | None:
    params = {"project_id": project_id, "list_id": list_id, "import_id": import_id}
    result: str | None = await fetch_scalar(conn, Q["detail"], params)
    return result


async def recent(conn: AsyncConnection[Any], project_id: UUID, list_id: UUID, limit: int = 10) -> str:
    """The list's latest imports (newest first) as a JSON array, without their errors."""
    params = {"project_id": project_id, "list_id": list_id, "limit": limit}
    return str(await fetch_scalar(conn, Q["recent"], params))


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


def _already_json(value: Any) -> bytes:
    assert isinstance(value, bytes)
    return value


async def _apply(conn: AsyncConnection[Any], base: dict[str, Any], rows: list[tuple[Any, ...]]) -> None:
    payload = [{"identifiers": identifiers, "fields": fields} for _, identifiers, fields in rows]
    await conn.execute(Q["apply"], {**base, "rows": Jsonb(payload)})
