"""Lists: create/read/update/delete and static membership (rule lists' members: membership.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, errors, sql
from psycopg.types.json import Jsonb

from lunogram_server.db import fetch_scalar, load_queries
from lunogram_server.identity import normalize
from lunogram_server.lists.models import CreateList, MemberChange, UpdateList
from lunogram_server.lists.rules import Node, check_tree, compile_rule, event_names, uses_profile, uses_time

Q = load_queries("lunogram_server.lists")


class RuleError(ValueError):
    """A rule that parses but cannot be saved (unknown list, a list referring to itself)."""


_NO_RULE: dict[str, Any] = {
    "rule": None,
    "event_names": [],
    "uses_time": False,
    "uses_profile": False,
    "referenced_lists": [],
}


async def _rule_params(conn: AsyncConnection[Any], project_id: UUID, rule: Node, own_id: UUID | None) -> dict[str, Any]:
    """The columns a rule sets, once it is known to be savable (RuleError otherwise)."""
    try:
        referenced = check_tree(rule, "rule")
    except ValueError as exc:
        raise RuleError(str(exc)) from None
    if own_id is not None and own_id in referenced:
        raise RuleError(f"rule: list {own_id} cannot refer to itself")
    if referenced:
        cursor = await conn.execute(Q["projects_lists"], {"project_id": project_id, "ids": referenced})
        known = {row[0] for row in await cursor.fetchall()}
        for missing in (r for r in referenced if r not in known):
            raise RuleError(f"rule: list {missing} does not exist in this project")
        if own_id is not None:
            await _refuse_cycle(conn, project_id, own_id, referenced)
    return {
        "rule": Jsonb(rule.model_dump(mode="json", exclude_none=True)),
        "event_names": sorted(event_names(rule)),
        "uses_time": uses_time(rule),
        "uses_profile": uses_profile(rule),
        "referenced_lists": referenced,
    }


async def _refuse_cycle(conn: AsyncConnection[Any], project_id: UUID, own_id: UUID, referenced: list[UUID]) -> None:
    """RuleError naming the cycle when a list `own_id` refers to would, through the lists they refer to,
    refer back to it (A = member of B, B = not member of A: no membership satisfies both). A new list
    cannot close a cycle (no rule refers to it yet), so only a changed rule is checked. Breadth first, one
    query per level of references, each list visited once."""
    via: dict[UUID, UUID] = dict.fromkeys(referenced, own_id)  # list -> the list that refers to it
    frontier = list(via)
    while frontier:
        cursor = await conn.execute(Q["references_of"], {"project_id": project_id, "ids": frontier})
        frontier = []
        for list_id, refers_to in await cursor.fetchall():
            for target in refers_to or ():
                if target == own_id:
                    chain = [list_id]
                    while via[chain[-1]] != own_id:
                        chain.append(via[chain[-1]])
                    path = " -> ".join(str(x) for x in [own_id, *reversed(chain), own_id])
                    raise RuleError(
                        f"rule: lists would refer to each other in a cycle ({path}); a list cannot "
                        "depend on itself, directly or through other lists"
                    )
                if target not in via:
                    via[target] = list_id
                    frontier.append(target)


async def create(conn: AsyncConnection[Any], project_id: UUID, body: CreateList) -> str:
    """The new list's JSON; a rule list starts `recomputing` (the recomputer fills it)."""
    rule = _NO_RULE if body.rule is None else await _rule_params(conn, project_id, body.rule, None)
    params = {
        "project_id": project_id,
        "name": body.name,
        "kind": "static" if body.rule is None else "rule",
        **rule,
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
        rule = _NO_RULE
        if body.rule is not None:
            if kind == "static":
                raise RuleError("rule: a static list has no rule (create a rule list instead)")
            # one rule change at a time per project: two concurrent changes could each close half a cycle
            await conn.execute(Q["lock_rules"], {"project_id": project_id})
            rule = await _rule_params(conn, project_id, body.rule, list_id)
        params = {
            "project_id": project_id,
            "list_id": list_id,
            "name": body.name,
            "rule_given": body.rule is not None,
            **rule,
        }
        await conn.execute(Q["update"], params)
        return await detail(conn, project_id, list_id)


PREVIEW_CAP = 1_000_000  # users counted at most by a preview; more answers `capped`
PREVIEW_TIMEOUT_MS = 10_000


async def preview(
    conn: AsyncConnection[Any], project_id: UUID, rule: Node, own_id: UUID | None = None
) -> dict[str, Any]:
    """How many of the project's users `rule` matches now, without saving anything: `{count, capped}`,
    counting at most PREVIEW_CAP users, within PREVIEW_TIMEOUT_MS (else RuleError). The same predicate the
    list's members are computed with (rules.compile_rule); a rule that cannot be saved is a RuleError."""
    await _rule_params(conn, project_id, rule, own_id)
    statement = sql.SQL(Q["preview_count"]).format(predicate=compile_rule(rule, "u"))
    params = {"project_id": project_id, "cap": PREVIEW_CAP, "now": datetime.now(UTC)}
    try:
        async with conn.transaction():
            await conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(PREVIEW_TIMEOUT_MS)))
            row = await (await conn.execute(statement, params)).fetchone()
            count = int(row[0]) if row else 0
    except errors.QueryCanceled:
        raise RuleError(f"rule: counting its users took longer than {PREVIEW_TIMEOUT_MS // 1000} s") from None
    return {"count": count, "capped": count >= PREVIEW_CAP}


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


async def of_user(
    conn: AsyncConnection[Any], project_id: UUID, user_id: UUID, limit: int = 200
) -> list[dict[str, Any]]:
    """The lists the user is in (id, name, kind, joined_at), newest membership first."""
    cursor = await conn.execute(Q["lists_of_user"], {"project_id": project_id, "user_id": user_id, "limit": limit})
    return [{"id": i, "name": n, "kind": k, "joined_at": at} for i, n, k, at in await cursor.fetchall()]


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
