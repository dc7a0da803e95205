"""Lists: create/read/update/delete, static membership, and recomputing a rule list's members in SQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
import structlog
from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb
from pydantic import TypeAdapter

from lunogram_server.db import fetch_scalar, load_queries
from lunogram_server.identity import normalize
from lunogram_server.lists.models import CreateList, MemberChange, UpdateList
from lunogram_server.lists.rules import Node, check_tree, compile_rule, event_names, uses_time

Q = load_queries("lunogram_server.lists")
log = structlog.get_logger("lunogram.lists")
_NODE: TypeAdapter[Node] = TypeAdapter(Node)


class RuleError(ValueError):
    """A rule that parses but cannot be saved (unknown list, a list referring to itself)."""


async def _check_rule(conn: AsyncConnection[Any], project_id: UUID, rule: Node, own_id: UUID | None) -> None:
    try:
        referenced = check_tree(rule)
    except ValueError as exc:
        raise RuleError(f"rule.{exc}") from None
    if own_id is not None and own_id in referenced:
        raise RuleError(f"rule: list {own_id} cannot refer to itself")
    if referenced:
        cursor = await conn.execute(Q["projects_lists"], {"project_id": project_id, "ids": referenced})
        known = {row[0] for row in await cursor.fetchall()}
        for missing in (r for r in referenced if r not in known):
            raise RuleError(f"rule: list {missing} does not exist in this project")


def _rule_params(rule: Node | None) -> dict[str, Any]:
    if rule is None:
        return {"rule": None, "event_names": [], "uses_time": False}
    return {
        "rule": Jsonb(rule.model_dump(mode="json", exclude_none=True)),
        "event_names": sorted(event_names(rule)),
        "uses_time": uses_time(rule),
    }


async def create(conn: AsyncConnection[Any], project_id: UUID, body: CreateList) -> str:
    """The new list's JSON; a rule list starts `recomputing` (the recomputer fills it)."""
    if body.rule is not None:
        await _check_rule(conn, project_id, body.rule, None)
    params = {
        "project_id": project_id,
        "name": body.name,
        "kind": "static" if body.rule is None else "rule",
        **_rule_params(body.rule),
    }
    list_id = await fetch_scalar(conn, Q["create"], params)
    return str(await detail(conn, project_id, list_id))


async def detail(conn: AsyncConnection[Any], project_id: UUID, list_id: UUID) -> str | None:
    result: str | None = await fetch_scalar(conn, Q["list_json"], {"project_id": project_id, "list_id": list_id})
    return result


async def update(conn: AsyncConnection[Any], project_id: UUID, list_id: UUID, body: UpdateList) -> str | None:
    """None when the list does not exist; RuleError for a rule on a static list or a bad rule."""
    async with conn.transaction():
        kind = await kind_of(conn, project_id, list_id)
        if kind is None:
            return None
        if body.rule is not None:
            if kind == "static":
                raise RuleError("rule: a static list has no rule (create a rule list instead)")
            await _check_rule(conn, project_id, body.rule, list_id)
        params = {
            "project_id": project_id,
            "list_id": list_id,
            "name": body.name,
            "rule_given": body.rule is not None,
            **_rule_params(body.rule),
        }
        await conn.execute(Q["update"], params)
        return await detail(conn, project_id, list_id)


async def kind_of(conn: AsyncConnection[Any], project_id: UUID, list_id: UUID) -> str | None:
    """'static', 'rule', or None when the list does not exist; locks the list (FOR SHARE) till commit."""
    result: str | None = await fetch_scalar(conn, Q["kind_of"], {"project_id": project_id, "list_id": list_id})
    return result


async def delete(conn: AsyncConnection[Any], project_id: UUID, list_id: UUID) -> bool:
    cursor = await conn.execute(Q["delete"], {"project_id": project_id, "list_id": list_id})
    return cursor.rowcount == 1


async def page(conn: AsyncConnection[Any], project_id: UUID, limit: int, offset: int) -> str:
    params = {"project_id": project_id, "limit": limit, "offset": offset}
    return str(await fetch_scalar(conn, Q["page"], params))


async def members(conn: AsyncConnection[Any], list_id: UUID, limit: int, before: tuple[datetime, UUID] | None) -> str:
    params = {
        "list_id": list_id,
        "limit": limit,
        "before_at": before[0] if before else None,
        "before_id": before[1] if before else None,
    }
    return str(await fetch_scalar(conn, Q["members_page"], params))


async def change_members(
    conn: AsyncConnection[Any], project_id: UUID, list_id: UUID, body: MemberChange, *, add: bool
) -> int:
    """How many users entered (or left) the static list."""
    params = {
        "project_id": project_id,
        "list_id": list_id,
        "identifiers": Jsonb([normalize(identifiers) for identifiers in body.users]),
    }
    return int(await fetch_scalar(conn, Q["add_members" if add else "remove_members"], params))


async def recompute_one(conn: AsyncConnection[Any], now: datetime | None = None) -> bool:
    """Recompute one list whose members lag its rule, in one transaction; False when none does."""
    async with conn.transaction():
        cursor = await conn.execute(Q["claim_stale"])
        row = await cursor.fetchone()
        if row is None:
            return False
        list_id, project_id, rule, rule_version = row
        error = None
        try:
            async with conn.transaction():  # a savepoint: a rule that fails in SQL fails alone
                await evaluate(conn, project_id, list_id, _NODE.validate_python(rule), now)
        except (ValueError, psycopg.DataError, psycopg.errors.ProgramLimitExceeded) as exc:
            # a stored rule that no longer validates, values out of range: the rule's fault, not the queue's
            error = f"{type(exc).__name__}: {exc}".strip()[:500]
            log.warning("list rule failed", list_id=str(list_id), project_id=str(project_id), error=error)
        params = {"list_id": list_id, "rule_version": rule_version, "error": error}
        await conn.execute(Q["mark_computed"], params)
    return True


async def evaluate(
    conn: AsyncConnection[Any], project_id: UUID, list_id: UUID, rule: Node, now: datetime | None = None
) -> tuple[int, int]:
    """Make the members exactly the users `rule` matches at `now`; (entered, exited)."""
    statement = sql.SQL(Q["recompute"]).format(predicate=compile_rule(rule))
    params = {"project_id": project_id, "list_id": list_id, "now": now or datetime.now(UTC)}
    cursor = await conn.execute(statement, params)
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])
