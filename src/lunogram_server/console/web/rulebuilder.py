"""The list rule builder: a rule as nested form fields, edited on the server.

The form names every field by its path in the rule (`r.type`, `r.rules.0.path`, `r.rules.1.where.0.op`);
`tree_from_form` rebuilds the tree, `apply` performs the button pressed (add a condition or group, remove
one), `to_rule` turns the tree into the rule JSON the lists API takes (values typed: `42` is a number,
`true` a boolean, `"42"` a string, anything else a string; `in` takes comma-separated values or a JSON
array), and `from_rule` shows a saved rule. Every operator of the rule language has its fields.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import FormData

from lunogram_server.lists.rules import Node, check_tree

TEXT_OPS = ["equals", "not_equals", "contains", "starts_with", "in", "exists", "not_exists"]
NUMBER_OPS = ["gt", "gte", "lt", "lte"]
DATE_OPS = ["before", "after", "within_last", "within_next"]
OPS = TEXT_OPS + NUMBER_OPS + DATE_OPS
EVENT_WHERE_OPS = [op for op in OPS if op not in ("within_last", "within_next")]
UNITS = ["minutes", "hours", "days", "weeks", "months"]
KINDS = ["property", "event", "organization", "list", "group"]
MAX_FIELDS_DEPTH = 40
_NODE: TypeAdapter[Node] = TypeAdapter(Node)
_KEY = re.compile(r"^r(\.[A-Za-z_]+|\.\d{1,3})*$")


def blank(kind: str) -> dict[str, Any]:
    if kind == "group":
        return {"type": "all", "rules": [blank("property")]}
    if kind == "event":
        return {
            "type": "event",
            "name": "",
            "did": "true",
            "where": [],
            "count_op": "",
            "count_value": "",
            "within_value": "",
            "within_unit": "days",
        }
    if kind == "organization":
        return {"type": "organization", "where": [blank("property")]}
    if kind == "list":
        return {"type": "list", "list_id": "", "member": "true"}
    return {"type": "property", "path": "", "op": "equals", "value": "", "window_value": "", "window_unit": "days"}


def default_tree() -> dict[str, Any]:
    return {"type": "all", "rules": [blank("property")]}


def tree_from_form(form: FormData) -> dict[str, Any]:
    """The tree the form's `r.*` fields describe (lists from numeric path parts, in index order)."""
    root: dict[str, Any] = {}
    for key, value in form.multi_items():
        if not isinstance(value, str) or not _KEY.match(key) or key.count(".") > MAX_FIELDS_DEPTH:
            continue
        parts = key.split(".")[1:]  # `r` is the root
        if not parts:
            continue
        node: dict[str, Any] = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = value
    tree = normalize(_lists(root))
    return tree if tree.get("type") in ("all", "any") else {"type": "all", "rules": [tree]}


def _lists(value: Any) -> Any:
    """Dicts keyed by digits become lists, in numeric order."""
    if isinstance(value, dict):
        converted = {k: _lists(v) for k, v in value.items()}
        if converted and all(k.isdigit() for k in converted):
            return [converted[k] for k in sorted(converted, key=int)]
        if "rules" in converted and not isinstance(converted["rules"], list):
            converted["rules"] = []
        if "where" in converted and not isinstance(converted["where"], list):
            converted["where"] = []
        return converted
    return value


def _at(tree: dict[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split(".")[1:]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def apply(tree: dict[str, Any], action: str) -> dict[str, Any]:
    """`add:<path>:<kind>` appends to the group (or the `where` list) at path; `remove:<path>` drops the node
    at path; anything else changes nothing (the form's own fields already did)."""
    verb, _, rest = action.partition(":")
    try:
        if verb == "add":
            path, _, kind = rest.rpartition(":")
            target = _at(tree, path)
            if kind == "where":
                target.setdefault("where", []).append(blank("property"))
            elif kind in KINDS:
                target.setdefault("rules", []).append(blank(kind))
        elif verb == "remove":
            parent_path, _, index = rest.rpartition(".")
            parent = _at(tree, parent_path)
            if isinstance(parent, list) and index.isdigit() and int(index) < len(parent):
                parent.pop(int(index))
        elif verb == "retype":
            path, _, kind = rest.rpartition(":")
            parent_path, _, index = path.rpartition(".")
            parent = _at(tree, parent_path)
            if isinstance(parent, list) and index.isdigit() and kind in KINDS:
                parent[int(index)] = blank(kind)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError):
        pass  # a stale button: the tree stays as the form described it
    return tree


def _typed(text: str) -> Any:
    raw = text.strip()
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    return value if not isinstance(value, dict) else raw


def _property(node: dict[str, Any], ops: list[str]) -> dict[str, Any]:
    op = node.get("op", "equals")
    rule: dict[str, Any] = {"type": "property", "path": str(node.get("path", "")).strip(), "op": op}
    value = str(node.get("value", ""))
    if op in ("exists", "not_exists") or op not in ops:
        pass
    elif op in ("within_last", "within_next"):
        rule["window"] = {"value": _typed(str(node.get("window_value", ""))), "unit": node.get("window_unit", "days")}
    elif op == "in":
        parsed = _typed(value)
        rule["value"] = parsed if isinstance(parsed, list) else [_typed(v) for v in value.split(",") if v.strip()]
    elif op in ("before", "after", "contains", "starts_with"):
        rule["value"] = value.strip()
    else:
        rule["value"] = _typed(value)
    return rule


def _node(node: dict[str, Any]) -> dict[str, Any]:
    kind = node.get("type", "property")
    if kind in ("all", "any"):
        return {"type": kind, "rules": [_node(child) for child in node.get("rules", [])]}
    if kind == "event":
        rule: dict[str, Any] = {
            "type": "event",
            "name": str(node.get("name", "")).strip(),
            "did": node.get("did", "true") != "false",
            "where": [_property(w, EVENT_WHERE_OPS) for w in node.get("where", [])],
        }
        if node.get("count_op") in ("at_least", "at_most"):
            rule["count"] = {"op": node["count_op"], "value": _typed(str(node.get("count_value", "")))}
        if str(node.get("within_value", "")).strip():
            rule["within"] = {"value": _typed(str(node["within_value"])), "unit": node.get("within_unit", "days")}
        return rule
    if kind == "organization":
        return {"type": "organization", "where": [_property(w, OPS) for w in node.get("where", [])]}
    if kind == "list":
        return {
            "type": "list",
            "list_id": str(node.get("list_id", "")),
            "member": node.get("member", "true") != "false",
        }
    return _property(node, OPS)


def to_rule(tree: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """(the rule JSON, None) when valid, else (None, what is wrong, naming the node like the API does)."""
    rule = _node(tree)
    try:
        parsed = _NODE.validate_python(rule)
        check_tree(parsed, "rule")
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return None, f"rule.{where}: {first['msg']}" if where else f"rule: {first['msg']}"
    except ValueError as exc:
        return None, str(exc)
    return parsed.model_dump(mode="json", exclude_none=True), None


def _shown(value: Any) -> str:
    """A value as typed in the builder: strings as they are unless they would read as something else."""
    if isinstance(value, str) and isinstance(_typed(value), str) and "," not in value:
        return value
    return orjson.dumps(value).decode()


def normalize(node: Any) -> dict[str, Any]:
    """Every field the node's type shows, defaults filled in (a changed type keeps what still applies)."""
    if not isinstance(node, dict):
        return blank("property")
    kind = node.get("type", "property")
    if kind in ("all", "any"):
        return {"type": kind, "rules": [normalize(child) for child in node.get("rules", [])]}
    base = blank(kind if kind in KINDS else "property")
    merged = {**base, **{k: v for k, v in node.items() if k in base}}
    if "where" in base:
        merged["where"] = [normalize({**w, "type": "property"}) for w in node.get("where", []) if isinstance(w, dict)]
    return merged


def from_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """The builder's tree for a saved rule (always a group at the top)."""
    tree = _from_rule(rule)
    return tree if tree.get("type") in ("all", "any") else {"type": "all", "rules": [tree]}


def _from_rule(rule: dict[str, Any]) -> dict[str, Any]:
    kind = rule.get("type")
    if kind in ("all", "any"):
        return {"type": kind, "rules": [_from_rule(child) for child in rule.get("rules", [])]}
    if kind == "event":
        node = blank("event")
        node.update(name=rule.get("name", ""), did="true" if rule.get("did", True) else "false")
        node["where"] = [_from_rule(w) for w in rule.get("where", [])]
        if rule.get("count"):
            node.update(count_op=rule["count"]["op"], count_value=str(rule["count"]["value"]))
        if rule.get("within"):
            node.update(within_value=str(rule["within"]["value"]), within_unit=rule["within"]["unit"])
        return node
    if kind == "organization":
        return {"type": "organization", "where": [_from_rule(w) for w in rule.get("where", [])]}
    if kind == "list":
        return {
            "type": "list",
            "list_id": rule.get("list_id", ""),
            "member": "true" if rule.get("member", True) else "false",
        }
    node = blank("property")
    node.update(path=rule.get("path", ""), op=rule.get("op", "equals"))
    if "window" in rule:
        node.update(window_value=str(rule["window"]["value"]), window_unit=rule["window"]["unit"])
    value = rule.get("value")
    if isinstance(value, list):
        node["value"] = ", ".join(_shown(v) for v in value)
    elif value is not None:
        node["value"] = _shown(value)
    return node
