"""Keeping rule lists' members equal to what their rules match.

Three ways in: a full recompute (a new or changed rule; lists with time windows, periodically), a
re-evaluation of the users an event batch touched (inside the event worker's transaction: the entry
commits with the event, exactly once), and of users whose profile changed (queued by the upsert in its
transaction, `list_pending_users`, and taken by the lists loop). Each entry and exit is recorded in
`list_changes` and announced to `lunogram_on_list_changes` by the statement that makes it (reactions.py:
journeys subscribe there).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
import structlog
from psycopg import AsyncConnection, sql
from pydantic import TypeAdapter

from lunogram_server.db import load_queries
from lunogram_server.events.models import ProcessedEvent
from lunogram_server.lists.rules import Node, compile_rule

Q = load_queries("lunogram_server.lists", "membership.sql")
log = structlog.get_logger("lunogram.lists")
_NODE: TypeAdapter[Node] = TypeAdapter(Node)
_SCOPES = {  # (users, members) of a full recompute's chunk and of a re-evaluation
    "recompute": (
        sql.SQL("u.id >= %(low)s AND u.id < %(high)s"),
        sql.SQL("m.user_id >= %(low)s AND m.user_id < %(high)s"),
    ),
    "reevaluate": (sql.SQL("u.id = ANY (%(user_ids)s::uuid[])"), sql.SQL("m.user_id = ANY (%(user_ids)s::uuid[])")),
}
MAX_DEPTH = 8  # lists referring to lists referring to lists…: re-evaluated up to this many rounds
# a stored rule that no longer validates, values out of range: the rule's fault, not the caller's
_RULE_FAILURES = (ValueError, psycopg.DataError, psycopg.errors.ProgramLimitExceeded)


_compiled: dict[tuple[UUID, int, str], sql.Composed] = {}


def _statement(name: str, list_id: UUID, version: int, rule: Any) -> sql.Composed:
    key = (list_id, version, name)
    statement = _compiled.get(key)
    if statement is None:
        if len(_compiled) > 10_000:
            _compiled.clear()
        predicate = compile_rule(_NODE.validate_python(rule))
        users, members = _SCOPES[name]
        statement = sql.SQL(Q["evaluate"]).format(predicate=predicate, users=users, members=members)
        _compiled[key] = statement
    return statement


async def _apply(
    conn: AsyncConnection[Any], statement: sql.Composed, project_id: UUID, list_id: UUID, params: dict[str, Any]
) -> tuple[int, int]:
    """Entries and exits made (recorded and announced by the statement itself)."""
    cursor = await conn.execute(statement, {"project_id": project_id, "list_id": list_id, **params})
    row = await cursor.fetchone()
    assert row is not None  # an aggregate returns one row
    return int(row[0]), int(row[1])


Progress = Callable[[UUID, int, int, datetime], Awaitable[None]]  # list, users done, users in all, started
CHUNK = 50_000  # users per recompute statement: progress is reported between them
_LOWEST = UUID(int=0)
_PAST_HIGHEST = UUID("ffffffff-ffff-ffff-ffff-ffffffffffff")  # no v4 UUID is this one (version nibble)


async def recompute_one(
    conn: AsyncConnection[Any],
    now: datetime | None = None,
    *,
    time_every: float = 60.0,
    progress: Progress | None = None,
) -> bool:
    """Recompute one list whose members lag its rule or whose time windows are due, in one transaction, a
    chunk of users per statement (`progress` hears after each, from its own connection); False when there is
    none. A rule that cannot be evaluated marks the list failed instead of blocking the queue."""
    at = now or datetime.now(UTC)
    async with conn.transaction():
        row = await (await conn.execute(Q["claim_stale"])).fetchone()
        if row is None:
            row = await (await conn.execute(Q["claim_time_due"], {"now": at, "every": time_every})).fetchone()
        if row is None:
            return False
        list_id, project_id, rule, rule_version = row
        await conn.execute(Q["lock_exclusive"], {"list_id": list_id})
        error = None
        try:
            async with conn.transaction():  # a savepoint: a rule that fails in SQL fails alone
                statement = _statement("recompute", list_id, rule_version, rule)
                await _recompute_chunks(conn, statement, project_id, list_id, at, progress)
        except _RULE_FAILURES as exc:
            error = f"{type(exc).__name__}: {exc}".strip()[:500]
            log.warning("list rule failed", list_id=str(list_id), project_id=str(project_id), error=error)
        params = {"list_id": list_id, "rule_version": rule_version, "error": error, "now": at}
        await conn.execute(Q["mark_computed"], params)
        await conn.execute(Q["forget_progress"], {"list_id": list_id})
    return True


async def _recompute_chunks(
    conn: AsyncConnection[Any],
    statement: sql.Composed,
    project_id: UUID,
    list_id: UUID,
    at: datetime,
    progress: Progress | None,
) -> None:
    started = datetime.now(UTC)
    total = 0
    if progress is not None:
        total = int((await (await conn.execute(Q["count_users"], {"project_id": project_id})).fetchone() or (0,))[0])
    low, done = _LOWEST, 0
    while True:
        bound = {"project_id": project_id, "low": low, "size": CHUNK}
        end = await (await conn.execute(Q["chunk_end"], bound)).fetchone()
        high = end[0] if end else _PAST_HIGHEST
        await _apply(conn, statement, project_id, list_id, {"now": at, "low": low, "high": high})
        if end is None:
            return
        low, done = high, done + CHUNK
        if progress is not None:
            await progress(list_id, min(done, total), total, started)


async def reevaluate(
    conn: AsyncConnection[Any],
    project_id: UUID,
    user_ids: Iterable[UUID],
    *,
    names: Iterable[str] = (),
    profile: bool = False,
    everything: bool = False,
    now: datetime | None = None,
) -> None:
    """Re-evaluate, for these users, the project's rule lists that events `names` or (with `profile`) a
    profile change can affect, then the lists that refer to lists whose members changed. In the caller's
    transaction. A list being recomputed right now is left to that recompute, and the users queued again."""
    users = sorted(set(user_ids))
    params: dict[str, Any] = {"user_ids": users, "now": now or datetime.now(UTC)}
    names = sorted(set(names))
    changed: list[UUID] = []
    queue_again = False
    for _ in range(MAX_DEPTH):
        selector = {
            "project_id": project_id,
            "names": names,
            "profile": profile,
            "everything": everything,
            "lists": changed,
        }
        # after the first round: the lists referring to lists that changed (evaluated already or not)
        affected = await (await conn.execute(Q["affected"], selector)).fetchall()
        if not affected:
            break
        changed = []
        for list_id, rule, version in affected:
            locked = await (await conn.execute(Q["try_lock_shared"], {"list_id": list_id})).fetchone()
            if not (locked and locked[0]):
                queue_again = True
                continue
            try:
                statement = _statement("reevaluate", list_id, version, rule)
                async with conn.transaction():  # a savepoint: one list's failure must not undo the caller's work
                    entered, exited = await _apply(conn, statement, project_id, list_id, params)
            except _RULE_FAILURES as exc:  # left to the next full recompute, which marks the list failed
                log.warning("list re-evaluation failed", list_id=str(list_id), error=str(exc)[:300])
                continue
            if entered or exited:
                changed.append(list_id)
        names, profile, everything = [], False, False
        if not changed:
            break
    if queue_again:
        await conn.execute(Q["queue_users"], {"project_id": project_id, "user_ids": users})


async def reevaluate_pending(conn: AsyncConnection[Any], limit: int = 1000) -> int:
    """Users queued by profile changes (the profile-dependent lists) and merges (every rule list: a merge
    moves event history and memberships too, which event and list conditions look at)."""
    async with conn.transaction():
        rows = await (await conn.execute(Q["claim_pending"], {"limit": limit})).fetchall()
        groups: dict[tuple[UUID, bool], list[UUID]] = {}
        for project_id, user_id, everything in rows:
            groups.setdefault((project_id, everything), []).append(user_id)
        for (project_id, everything), users in groups.items():
            await reevaluate(conn, project_id, users, profile=True, everything=everything)
    return len(rows)


class ListsSubscriber:
    """An "events applied" subscriber (reactions.py): events can move users in or out
    of lists with event conditions; re-evaluated in the worker's transaction."""

    async def on_events(self, conn: AsyncConnection[Any], events: Sequence[ProcessedEvent]) -> None:
        touched: dict[UUID, tuple[set[UUID], set[str]]] = {}
        for event in events:
            if event.kind == "user":
                users, names = touched.setdefault(event.project_id, (set(), set()))
                users.add(event.target_id)
                names.add(event.name)
        for project_id, (users, names) in touched.items():
            await reevaluate(conn, project_id, users, names=names)
