"""Journey rules: the lists rule language (lists/rules.py) plus what only a run has.

* `context`: a field of the run's context compared like a property: `event.name`, `event.data.<key>...`
  (the event that entered the run, or the one a wait step received), `organization.name`,
  `organization.data.<key>...` (an organization event's organization), `run.data.<key>...` (data the run
  gathered: an API entrance's data, a webhook's stored response);
* `visited`: the run has (or has not) been through a step;
* `event` conditions count only the current run's events (since it entered) unless `scope` is `all`.

Compiled to one SQL predicate over `u` (the user) and `r` (a row of the batch: `r.ctx`, the run's context as
jsonb) so that a condition is evaluated for a whole batch of runs in one statement, as lists are.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from psycopg import sql
from pydantic import Field, TypeAdapter, model_validator

from lunogram_server.lists.rules import (
    MAX_DEPTH,
    MAX_NODES,
    NOW,
    ORGANIZATION_COLUMNS,
    USER_COLUMNS,
    Count,
    ListMembership,
    Organization,
    Property,
    Window,
    _interval,
    _Rule,
    compile_property,
    compile_rule,
)

_CONTEXT_PATH = re.compile(
    r"^(event\.(name|data(\.[^.\x00]{1,128}){1,8})|organization\.(name|data(\.[^.\x00]{1,128}){1,8})|run\.data(\.[^.\x00]{1,128}){1,8})$"
)
_CONTEXT_ROOTS = {"event": "ev", "organization": "og", "run": "rn"}  # the batch's row aliases (see evaluate)


class Context(_Rule):
    """A field of the run's context (see the module's docstring) compared by `op` with `value`."""

    type: Literal["context"]
    path: str = Field(min_length=1, max_length=1100)
    op: Any
    value: Any = None
    window: Window | None = None

    @model_validator(mode="after")
    def _check(self) -> Context:
        if not _CONTEXT_PATH.match(self.path):
            raise ValueError(
                "path: must be event.name, event.data.<key>..., organization.name, organization.data.<key>... "
                "or run.data.<key>... (up to 8 keys)"
            )
        # the same operators and values as a property
        Property(type="property", path="data.x", op=self.op, value=self.value, window=self.window)
        return self

    def as_property(self) -> tuple[str, Property]:
        """(row alias, the property over that row's `name` / `data` columns)."""
        root, _, rest = self.path.partition(".")
        return _CONTEXT_ROOTS[root], Property(
            type="property", path=rest, op=self.op, value=self.value, window=self.window
        )


class Visited(_Rule):
    type: Literal["visited"]
    step: str = Field(min_length=1, max_length=64)
    visited: bool = True


class JourneyEvent(_Rule):
    """The user did (or did not) do event `name`: by default counting only events since the run entered."""

    type: Literal["event"]
    name: str = Field(min_length=1, max_length=255)
    did: bool = True
    where: list[Property] = Field(default_factory=list, max_length=20)
    count: Count | None = None
    within: Window | None = None
    scope: Literal["run", "all"] = "run"

    @model_validator(mode="after")
    def _check(self) -> JourneyEvent:
        for n, condition in enumerate(self.where):
            if not condition.path.startswith("data.") or condition.op in ("within_last", "within_next"):
                raise ValueError(f"where[{n}].path: event conditions compare the event's data.* fields")
        if not self.did and self.count is not None:
            raise ValueError("count: not with did=false (use count at_most instead)")
        return self


class JourneyGroup(_Rule):
    type: Literal["all", "any"]
    rules: list[JourneyNode] = Field(min_length=1, max_length=50)


JourneyNode = Annotated[
    JourneyGroup | Property | JourneyEvent | Organization | ListMembership | Context | Visited,
    Field(discriminator="type"),
]
JourneyGroup.model_rebuild()
JOURNEY_NODE: TypeAdapter[JourneyNode] = TypeAdapter(JourneyNode)


def check_rule(root: JourneyNode, where: str) -> list[Any]:
    """Limits pydantic cannot state (depth, size, field names); returns the lists the rule refers to. Raises
    ValueError naming the node (`<where>.rules[1].path`)."""
    referenced: list[Any] = []
    count = 0

    def walk(node: JourneyNode, at: str, depth: int) -> None:
        nonlocal count
        count += 1 + len(getattr(node, "where", ()))
        if depth > MAX_DEPTH:
            raise ValueError(f"{at}: groups nest deeper than {MAX_DEPTH} levels")
        if count > MAX_NODES:
            raise ValueError(f"{where}: more than {MAX_NODES} conditions")
        if isinstance(node, JourneyGroup):
            for n, child in enumerate(node.rules):
                walk(child, f"{at}.rules[{n}]", depth + 1)
        elif isinstance(node, Property):
            _check_path(node.path, USER_COLUMNS, f"{at}.path")
        elif isinstance(node, Organization):
            for n, condition in enumerate(node.where):
                _check_path(condition.path, ORGANIZATION_COLUMNS, f"{at}.where[{n}].path")
        elif isinstance(node, JourneyEvent):
            for n, condition in enumerate(node.where):
                _check_path(condition.path, (), f"{at}.where[{n}].path")
        elif isinstance(node, ListMembership):
            referenced.append(node.list_id)

    walk(root, where, 1)
    return referenced


def _check_path(path: str, columns: tuple[str, ...], where: str) -> None:
    if path not in columns and not re.match(r"^data(\.[^.\x00]{1,128}){1,8}$", path):
        named = ", ".join(columns) + (", " if columns else "")
        raise ValueError(f"{where}: must be {named}or data.<key>[.<key>...] (up to 8 keys)")


def compile_journey_rule(node: JourneyNode) -> sql.Composable:
    """The predicate over `u` (users row, may be all NULL when the user is gone), `r` (r.ctx: the run's
    context) and the context rows `ev`, `og`, `rn` (see evaluate in journeys/sql/queries.sql)."""
    if isinstance(node, JourneyGroup):
        joiner = sql.SQL(" AND " if node.type == "all" else " OR ")
        return sql.SQL("({})").format(joiner.join(compile_journey_rule(child) for child in node.rules))
    if isinstance(node, Context):
        alias, prop = node.as_property()
        return compile_property(alias, prop)
    if isinstance(node, Visited):
        test = sql.SQL("coalesce((r.ctx -> 'visited') ? {}, false)").format(sql.Literal(node.step))
        return test if node.visited else sql.SQL("NOT {}").format(test)
    if isinstance(node, JourneyEvent):
        return _compile_event(node)
    if isinstance(node, Property | Organization | ListMembership):
        return compile_rule(node)
    raise AssertionError(node)  # pragma: no cover - the union is exhausted above


def _compile_event(node: JourneyEvent) -> sql.Composable:
    conditions: list[sql.Composable] = [
        sql.SQL("e.user_id = u.id"),
        sql.SQL("e.name = {}").format(sql.Literal(node.name)),
    ]
    conditions += [compile_property("e", condition) for condition in node.where]
    if node.within is not None:
        conditions.append(sql.SQL("e.created_at >= {} - {}").format(NOW, _interval(node.within)))
    if node.scope == "run":
        conditions.append(sql.SQL("e.created_at >= (r.ctx ->> 'entered_at')::timestamptz"))
    where = sql.SQL(" AND ").join(conditions)
    if node.count is None:
        test = sql.SQL("EXISTS (SELECT 1 FROM user_events AS e WHERE {})").format(where)
        return test if node.did else sql.SQL("NOT {}").format(test)
    limit = node.count.value if node.count.op == "at_least" else node.count.value + 1
    symbol = sql.SQL(">=" if node.count.op == "at_least" else "<=")
    return sql.SQL("(SELECT count(*) FROM (SELECT 1 FROM user_events AS e WHERE {} LIMIT {}) AS c) {} {}").format(
        where, sql.Literal(limit), symbol, sql.Literal(node.count.value)
    )


def event_names_of(node: JourneyNode) -> set[str]:
    if isinstance(node, JourneyGroup):
        return set().union(*(event_names_of(child) for child in node.rules))
    return {node.name} if isinstance(node, JourneyEvent) else set()


__all__ = ["JOURNEY_NODE", "Context", "JourneyGroup", "JourneyNode", "Visited", "check_rule"]
