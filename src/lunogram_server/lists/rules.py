"""List rules: a tree of AND/OR groups over user properties, events, organization membership and other
lists, validated on save and compiled to one SQL predicate over `u` (a row of `users`).

Why SQL: a rule is evaluated for a million users at once on recompute and for a handful on each change;
PostgreSQL does both with the same predicate, Python never looks at a row. Values reach SQL as literals
composed by psycopg (never spliced text), and every cast is guarded (`pg_input_is_valid`, `jsonb_typeof`),
so stored data of any shape compares as false instead of failing the query.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, model_validator

Unit = Literal["minutes", "hours", "days", "weeks", "months"]
TextOp = Literal["equals", "not_equals", "contains", "starts_with", "in", "exists", "not_exists"]
NumberOp = Literal["gt", "gte", "lt", "lte"]
DateOp = Literal["before", "after", "within_last", "within_next"]
Operator = TextOp | NumberOp | DateOp

USER_COLUMNS = ("email", "phone", "timezone", "locale")
ORGANIZATION_COLUMNS = ("name",)
_PATH = re.compile(r"^data(\.[^.\x00]{1,128}){1,8}$")
MAX_DEPTH = 8
MAX_NODES = 200  # conditions, groups and each `where` condition of event and organization conditions
MAX_VALUES = 1000  # values of all `in` lists of a rule together


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_MAX_WINDOW = {"minutes": 52_560_000, "hours": 876_000, "days": 36_500, "weeks": 5_200, "months": 1_200}


class Window(_Rule):
    """A span of time, at most 100 years (so that now minus it stays a valid timestamp)."""

    value: int = Field(ge=1)
    unit: Unit

    @model_validator(mode="after")
    def _bounded(self) -> Window:
        if self.value > _MAX_WINDOW[self.unit]:
            raise ValueError(f"value: at most {_MAX_WINDOW[self.unit]} {self.unit} (100 years)")
        return self


class Property(_Rule):
    """A field (`email`, `data.plan`, `data.address.city`) compared by `op` with `value`."""

    type: Literal["property"]
    path: str = Field(min_length=1, max_length=1100)
    op: Operator
    value: Any = None
    window: Window | None = None

    @model_validator(mode="after")
    def _check(self) -> Property:
        if self.op in ("exists", "not_exists"):
            if self.value is not None:
                raise ValueError(f"value: must be absent for op {self.op!r}")
        elif self.op in ("within_last", "within_next"):
            if self.window is None:
                raise ValueError(f"window: op {self.op!r} needs a window ({{value, unit}})")
        elif self.op == "in":
            if not isinstance(self.value, list) or not self.value or len(self.value) > MAX_VALUES:
                raise ValueError(f"value: op 'in' needs a list of 1 to {MAX_VALUES} values")
            if any(v is None for v in self.value):
                raise ValueError("value: op 'in' compares values, not null (use not_exists for absence)")
        elif self.op in ("gt", "gte", "lt", "lte"):
            if isinstance(self.value, bool) or not isinstance(self.value, int | float):
                raise ValueError(f"value: op {self.op!r} needs a number")
        elif self.op in ("before", "after"):
            if not isinstance(self.value, str) or _timestamp(self.value) is None:
                raise ValueError(f"value: op {self.op!r} needs an RFC 3339 timestamp with an offset")
        elif self.op in ("contains", "starts_with"):
            if not isinstance(self.value, str) or not self.value:
                raise ValueError(f"value: op {self.op!r} needs a non-empty string")
        elif self.value is None:
            raise ValueError(f"value: op {self.op!r} needs a value (use not_exists for absence)")
        return self


class Count(_Rule):
    op: Literal["at_least", "at_most"]
    value: int = Field(ge=0, le=1_000_000)


class Event(_Rule):
    """The user did (or did not) do event `name`, optionally matching `where` on the event's data."""

    type: Literal["event"]
    name: str = Field(min_length=1, max_length=255)
    did: bool = True
    where: list[Property] = Field(default_factory=list, max_length=20)
    count: Count | None = None
    within: Window | None = None

    @model_validator(mode="after")
    def _check(self) -> Event:
        for n, condition in enumerate(self.where):
            if not condition.path.startswith("data.") or condition.op in ("within_last", "within_next"):
                raise ValueError(f"where[{n}].path: event conditions compare the event's data.* fields")
        if not self.did and self.count is not None:
            raise ValueError("count: not with did=false (use count at_most instead)")
        return self


class Organization(_Rule):
    """Member of at least one organization whose properties match all of `where`."""

    type: Literal["organization"]
    where: list[Property] = Field(default_factory=list, max_length=20)


class ListMembership(_Rule):
    type: Literal["list"]
    list_id: UUID
    member: bool = True


class Group(_Rule):
    type: Literal["all", "any"]
    rules: list[Node] = Field(min_length=1, max_length=50)


Node = Annotated[Group | Property | Event | Organization | ListMembership, Field(discriminator="type")]
Group.model_rebuild()


def _timestamp(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def check_tree(root: Node, path: str = "rule") -> list[UUID]:
    """Limits pydantic cannot state (depth, size, field names); returns the lists the rule refers to.
    Raises ValueError naming the node by its path from `path` (`rule.rules[1].rules[0].path`).

    Every condition counts toward MAX_NODES, those in an event's or organization's `where` too: each is
    evaluated for every user the rule is evaluated for (a rule of 200 event conditions with 20 `where`
    conditions each, 5 MB, cost 3.2 s per matching event before they counted)."""
    referenced: list[UUID] = []
    count = values = 0

    def counted(condition: Node, where: str) -> None:
        nonlocal count, values
        count += 1
        if count > MAX_NODES:
            raise ValueError(f"{path}: more than {MAX_NODES} conditions (`where` conditions count too), at {where}")
        if isinstance(condition, Property) and condition.op == "in":
            values += len(condition.value)
            if values > MAX_VALUES:
                raise ValueError(f"{path}: more than {MAX_VALUES} values in `in` lists in all, at {where}")

    def walk(node: Node, where: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ValueError(f"{where}: groups nest deeper than {MAX_DEPTH} levels")
        counted(node, where)
        if isinstance(node, Group):
            for n, child in enumerate(node.rules):
                walk(child, f"{where}.rules[{n}]", depth + 1)
        elif isinstance(node, Property):
            _check_path(node.path, USER_COLUMNS, f"{where}.path")
        elif isinstance(node, Organization | Event):
            columns = ORGANIZATION_COLUMNS if isinstance(node, Organization) else ()
            for n, condition in enumerate(node.where):
                counted(condition, f"{where}.where[{n}]")
                _check_path(condition.path, columns, f"{where}.where[{n}].path")
        elif isinstance(node, ListMembership):
            referenced.append(node.list_id)

    walk(root, path, 1)
    return referenced


def _check_path(path: str, columns: tuple[str, ...], where: str) -> None:
    if path not in columns and not _PATH.match(path):
        named = ", ".join(columns) + ", or " if columns else ""
        raise ValueError(f"{where}: must be {named}data.<key>[.<key>...] (up to 8 keys)")


_INTERVAL_ARG = {"minutes": "mins", "hours": "hours", "days": "days", "weeks": "weeks", "months": "months"}
NOW = sql.Placeholder("now")  # the evaluation time: now(), or the injectable clock in tests and the scheduler


def _interval(window: Window) -> sql.Composable:
    return sql.SQL("make_interval({} => {})").format(
        sql.SQL(_INTERVAL_ARG[window.unit]),
        sql.Literal(window.value),
    )


def _field(alias: str, path: str) -> tuple[sql.Composable, bool]:
    """(SQL of the field, is_jsonb): a column as text, or the jsonb at a data path."""
    if not path.startswith("data."):
        return sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(path)), False
    keys = path.split(".")[1:]
    return sql.SQL("{}.data #> {}").format(sql.Identifier(alias), sql.Literal(keys)), True


def compile_property(alias: str, rule: Property) -> sql.Composable:
    field, is_json = _field(alias, rule.path)
    # the value as text: jsonb strings unquoted (#>> with an empty path), numbers and booleans as written
    text = sql.SQL("({} #>> '{{}}')").format(field) if is_json else field
    present = (
        sql.SQL("({} IS NOT NULL AND jsonb_typeof({}) <> 'null')").format(field, field)
        if is_json
        else sql.SQL("({} IS NOT NULL)").format(field)
    )
    op, value = rule.op, rule.value
    if op == "exists":
        return present
    if op == "not_exists":
        return sql.SQL("NOT {}").format(present)
    if op in ("equals", "not_equals", "in"):
        values = value if op == "in" else [value]
        if is_json:
            test = sql.SQL("{} = ANY ({}::jsonb[])").format(field, sql.Literal([Jsonb(v) for v in values]))
        else:
            test = sql.SQL("{} = ANY ({}::text[])").format(field, sql.Literal([_as_text(v) for v in values]))
        return (
            sql.SQL("coalesce({}, false)").format(test)
            if op != "not_equals"
            else sql.SQL("NOT coalesce({}, false)").format(test)
        )
    if op == "contains":
        return sql.SQL("coalesce(strpos({}, {}) > 0, false)").format(text, sql.Literal(value))
    if op == "starts_with":
        return sql.SQL("coalesce(starts_with({}, {}), false)").format(text, sql.Literal(value))
    if op in ("gt", "gte", "lt", "lte"):
        symbol = sql.SQL({"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op])
        number = (
            sql.SQL("(CASE WHEN jsonb_typeof({}) = 'number' THEN ({})::numeric END)").format(field, text)
            if is_json
            else sql.SQL("(CASE WHEN pg_input_is_valid({}, 'numeric') THEN ({})::numeric END)").format(text, text)
        )
        return sql.SQL("coalesce({} {} {}, false)").format(number, symbol, sql.Literal(value))
    moment = sql.SQL("(CASE WHEN pg_input_is_valid({}, 'timestamptz') THEN ({})::timestamptz END)").format(text, text)
    if op in ("before", "after"):  # the moment parsed by us (validated): PostgreSQL never parses user text
        symbol = sql.SQL("<" if op == "before" else ">")
        return sql.SQL("coalesce({} {} {}, false)").format(moment, symbol, sql.Literal(_timestamp(value)))
    assert rule.window is not None
    if op == "within_last":
        return sql.SQL("coalesce({} BETWEEN {} - {} AND {}, false)").format(moment, NOW, _interval(rule.window), NOW)
    return sql.SQL("coalesce({} BETWEEN {} AND {} + {}, false)").format(moment, NOW, NOW, _interval(rule.window))


def _as_text(value: Any) -> str | None:
    """A value as a text column would hold it; None (SQL NULL, equal to nothing) for null, objects and
    arrays, which no column holds: never Python's `None` or `{'a': 1}` spelled out."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


def compile_rule(node: Node, alias: str = "u") -> sql.Composable:
    """The predicate for one user row `alias`; uses the `%(now)s` parameter for time windows."""
    if isinstance(node, Group):
        joiner = sql.SQL(" AND " if node.type == "all" else " OR ")
        return sql.SQL("({})").format(joiner.join(compile_rule(child, alias) for child in node.rules))
    if isinstance(node, Property):
        return compile_property(alias, node)
    if isinstance(node, Event):
        return _compile_event(node, alias)
    if isinstance(node, Organization):
        conditions: list[sql.Composable] = [sql.SQL("m.user_id = {}.id").format(sql.Identifier(alias))]
        conditions += [compile_property("o", condition) for condition in node.where]
        return sql.SQL(
            "EXISTS (SELECT 1 FROM organization_members AS m JOIN organizations AS o ON o.id = m.organization_id "
            "WHERE {})"
        ).format(sql.SQL(" AND ").join(conditions))
    assert isinstance(node, ListMembership)
    exists = sql.SQL("EXISTS (SELECT 1 FROM list_members AS lm WHERE lm.list_id = {} AND lm.user_id = {}.id)").format(
        sql.Literal(node.list_id), sql.Identifier(alias)
    )
    return exists if node.member else sql.SQL("NOT {}").format(exists)


def _compile_event(node: Event, alias: str) -> sql.Composable:
    conditions: list[sql.Composable] = [
        sql.SQL("e.user_id = {}.id").format(sql.Identifier(alias)),
        sql.SQL("e.name = {}").format(sql.Literal(node.name)),
    ]
    conditions += [compile_property("e", condition) for condition in node.where]
    if node.within is not None:
        conditions.append(sql.SQL("e.created_at >= {} - {}").format(NOW, _interval(node.within)))
    where = sql.SQL(" AND ").join(conditions)
    if node.count is None:
        test = sql.SQL("EXISTS (SELECT 1 FROM user_events AS e WHERE {})").format(where)
        return test if node.did else sql.SQL("NOT {}").format(test)
    if node.count.op == "at_least":
        # stop counting at the threshold: LIMIT inside, so a heavy user costs N rows, not all their events
        return sql.SQL("(SELECT count(*) FROM (SELECT 1 FROM user_events AS e WHERE {} LIMIT {}) AS c) >= {}").format(
            where, sql.Literal(node.count.value), sql.Literal(node.count.value)
        )
    return sql.SQL("(SELECT count(*) FROM (SELECT 1 FROM user_events AS e WHERE {} LIMIT {}) AS c) <= {}").format(
        where, sql.Literal(node.count.value + 1), sql.Literal(node.count.value)
    )


def uses_time(node: Node) -> bool:
    """True when membership can change with time alone (windows): the scheduler re-evaluates such lists."""
    if isinstance(node, Group):
        return any(uses_time(child) for child in node.rules)
    if isinstance(node, Property):
        return node.window is not None
    if isinstance(node, Event):
        return node.within is not None
    return False


def uses_profile(node: Node) -> bool:
    """True when a profile change (properties, organizations) can change membership."""
    if isinstance(node, Group):
        return any(uses_profile(child) for child in node.rules)
    return isinstance(node, Property | Organization)


def event_names(node: Node) -> set[str]:
    """Event names a rule depends on: an event of another name cannot change membership."""
    if isinstance(node, Group):
        return set().union(*(event_names(child) for child in node.rules))
    return {node.name} if isinstance(node, Event) else set()
