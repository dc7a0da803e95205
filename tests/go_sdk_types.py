"""The Go SDK's wire types, transcribed from its published documentation (github.com/lunogram/go-sdk v0.1.0,
package `lunogram`, as pkg.go.dev shows it), and Go's encoding/json rules for them, in Python.

Each type is its fields in declaration order: (Go field name, JSON name, Go type, omitempty). Only what the
json tags and Go types say is here; the SDK's HTTP code (paths, headers, how it reads a body-less answer) is
not published and not transcribed. tests/test_go_sdk_wire.py uses this to send what the Go SDK's types
marshal to and to decode our answers as its types would.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, NamedTuple


class Field(NamedTuple):
    go: str
    json: str
    type: str
    omitempty: bool


def _f(go: str, json: str, type_: str, omitempty: bool = False) -> Field:
    return Field(go, json, type_, omitempty)


TYPES: dict[str, list[Field]] = {
    # requests
    "ExternalID": [
        _f("Source", "source", "string", True),
        _f("ExternalID", "external_id", "string"),
        _f("Metadata", "metadata", "map[string]any", True),
    ],
    "UpsertUserRequest": [
        _f("Identifier", "identifier", "[]ExternalID"),
        _f("Email", "email", "*string", True),
        _f("Phone", "phone", "*string", True),
        _f("Timezone", "timezone", "*string", True),
        _f("Locale", "locale", "*string", True),
        _f("Data", "data", "map[string]any", True),
    ],
    "DeleteUserRequest": [_f("Identifier", "identifier", "[]ExternalID")],
    "Event": [
        _f("Name", "name", "string"),
        _f("Identifier", "identifier", "[]ExternalID", True),
        _f("Match", "match", "map[string]any", True),
        _f("Data", "data", "map[string]any"),  # no omitempty: a nil map is sent as "data": null
    ],
    "OrganizationEvent": [
        _f("Name", "name", "string"),
        _f("Identifier", "identifier", "[]ExternalID", True),
        _f("Match", "match", "map[string]any", True),
        _f("Data", "data", "map[string]any", True),
    ],
    "UpsertOrganizationRequest": [
        _f("Identifier", "identifier", "[]ExternalID"),
        _f("Name", "name", "*string", True),
        _f("Data", "data", "map[string]any", True),
    ],
    "DeleteOrganizationRequest": [_f("Identifier", "identifier", "[]ExternalID")],
    "OrganizationRef": [_f("Identifier", "identifier", "[]ExternalID")],
    "UserRef": [_f("Identifier", "identifier", "[]ExternalID")],
    "OrganizationUserRequest": [
        _f("Organization", "organization", "OrganizationRef"),
        _f("User", "user", "UserRef"),
        _f("Data", "data", "map[string]any", True),
    ],
    "RemoveOrganizationUserRequest": [
        _f("Organization", "organization", "OrganizationRef"),
        _f("User", "user", "UserRef"),
    ],
    "UpsertUserScheduledRequest": [
        _f("Name", "name", "string"),
        _f("Identifier", "identifier", "[]ExternalID", True),
        _f("ScheduledAt", "scheduled_at", "*time.Time", True),
        _f("StartAt", "start_at", "*time.Time", True),
        _f("Interval", "interval", "*string", True),
        _f("Data", "data", "map[string]any", True),
    ],
    "UpsertOrganizationScheduledRequest": [
        _f("Name", "name", "string"),
        _f("Identifier", "identifier", "[]ExternalID"),
        _f("ScheduledAt", "scheduled_at", "*time.Time", True),
        _f("StartAt", "start_at", "*time.Time", True),
        _f("Interval", "interval", "*string", True),
        _f("Data", "data", "map[string]any", True),
    ],
    "DeleteUserScheduledRequest": [
        _f("Name", "name", "string"),
        _f("Identifier", "identifier", "[]ExternalID", True),
    ],
    "DeleteOrganizationScheduledRequest": [
        _f("Name", "name", "string"),
        _f("Identifier", "identifier", "[]ExternalID"),
    ],
    # responses
    "ExternalIDResponse": [
        _f("ID", "id", "string"),
        _f("Source", "source", "string"),
        _f("ExternalID", "external_id", "string"),
        _f("Metadata", "metadata", "map[string]any", True),
        _f("CreatedAt", "created_at", "time.Time"),
        _f("UpdatedAt", "updated_at", "time.Time"),
    ],
    "User": [
        _f("ID", "id", "string"),
        _f("ProjectID", "project_id", "string"),
        _f("Identifier", "identifier", "[]ExternalIDResponse"),
        _f("Email", "email", "string", True),
        _f("Phone", "phone", "string", True),
        _f("Data", "data", "map[string]any"),
        _f("Timezone", "timezone", "string", True),
        _f("Locale", "locale", "string", True),
        _f("HasPushDevice", "has_push_device", "bool"),
        _f("Version", "version", "int32"),
        _f("CreatedAt", "created_at", "time.Time"),
        _f("UpdatedAt", "updated_at", "time.Time"),
    ],
    "Organization": [
        _f("ID", "id", "string"),
        _f("ProjectID", "project_id", "string"),
        _f("Identifier", "identifier", "[]ExternalIDResponse"),
        _f("Name", "name", "string", True),
        _f("Data", "data", "map[string]any"),
        _f("Version", "version", "int32"),
        _f("CreatedAt", "created_at", "time.Time"),
        _f("UpdatedAt", "updated_at", "time.Time"),
    ],
    "ScheduledAccepted": [
        _f("ID", "id", "string"),
        _f("Name", "name", "string"),
        _f("ScheduledAt", "scheduled_at", "time.Time"),
        _f("Data", "data", "map[string]any", True),
    ],
    # StatusCode has no json tag in the SDK, but it is filled from the HTTP status, not the body
    "APIError": [_f("Title", "title", "string"), _f("Detail", "detail", "string")],
}


# -- marshal: what encoding/json.Marshal makes of a value of these types ----------------------------------


class GoTime(NamedTuple):
    """A Go time.Time: a datetime plus the nanoseconds Python's datetime cannot hold."""

    moment: datetime
    nanosecond: int = 0

    def marshal(self) -> str:
        base = self.moment.replace(microsecond=0)
        offset = base.utcoffset()
        assert offset is not None
        text = base.strftime("%Y-%m-%dT%H:%M:%S")
        nanos = self.nanosecond or self.moment.microsecond * 1000
        if nanos:
            text += "." + f"{nanos:09d}".rstrip("0")
        if offset == timedelta(0):
            return text + "Z"
        sign = "-" if offset < timedelta(0) else "+"
        minutes = abs(int(offset.total_seconds())) // 60
        return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _is_empty(type_: str, value: Any) -> bool:
    # encoding/json omitempty: false, 0, a nil pointer or interface, an empty array, slice, map or string.
    # A struct (time.Time included) is never empty.
    if value is None:
        return True
    if type_ in ("string", "bool", "int32") or type_.startswith(("[]", "map[")):
        return not value
    return False


def marshal(type_name: str, value: dict[str, Any]) -> dict[str, Any]:
    """The JSON object encoding/json.Marshal produces for a `type_name` value; `value` maps Go field names
    to field values, and a field left out has its zero value (nil for pointers, slices and maps)."""
    unknown = set(value) - {field.go for field in TYPES[type_name]}
    assert not unknown, f"{type_name} has no field {unknown}"
    out: dict[str, Any] = {}
    for field in TYPES[type_name]:
        item = value.get(field.go, _zero(field.type))
        if field.omitempty and _is_empty(field.type, item):
            continue
        out[field.json] = _marshal_value(field.type, item)
    return out


def _zero(type_: str) -> Any:
    return {"string": "", "bool": False, "int32": 0}.get(type_)


def _marshal_value(type_: str, item: Any) -> Any:
    if item is None:  # a nil pointer, slice or map without omitempty
        return None
    if type_.startswith("*"):
        return _marshal_value(type_[1:], item)
    if type_ == "time.Time":
        assert isinstance(item, GoTime)
        return item.marshal()
    if type_.startswith("[]"):
        return [_marshal_value(type_[2:], element) for element in item]
    if type_ in TYPES:
        return marshal(type_, item)
    return item  # string, bool, int32, map[string]any: JSON as is


# -- unmarshal: whether encoding/json.Unmarshal fills a value of these types from our JSON ------------------

# time.Time.UnmarshalJSON parses RFC 3339 (fractional seconds allowed when parsing); since Go 1.20 strictly
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def unmarshal_problems(type_name: str, data: Any, path: str = "", ours: frozenset[str] = frozenset()) -> list[str]:
    """Where decoding `data` into `type_name` would fail or silently lose something, one entry each;
    `ours` are top-level keys we add on purpose, documented as ours (Go ignores them).

    Errors encoding/json would return: a JSON type the Go type cannot hold, an int32 out of range or not an
    integer, a time that is not RFC 3339. Silent losses we treat as failures too: a field the Go type has
    without omitempty missing from our answer (Go would leave its zero value, e.g. version 0), a null where
    the Go type is a string, bool, number or time (Go keeps the zero value), and a key the Go type does not
    have (Go drops it).
    """
    where = path or type_name
    if not isinstance(data, dict):
        return [f"{where}: expected a JSON object for {type_name}, got {type(data).__name__}"]
    problems = []
    fields = {field.json: field for field in TYPES[type_name]}
    for key in data:
        if key not in fields and key not in ours:
            problems.append(f"{where}.{key}: not a field of {type_name} (Go would drop it)")
    for name, field in fields.items():
        if name not in data:
            if not field.omitempty:
                problems.append(f"{where}.{name}: missing; {type_name}.{field.go} would be its zero value")
            continue
        problems += _value_problems(field.type, data[name], f"{where}.{name}")
    return problems


def _value_problems(type_: str, item: Any, where: str) -> list[str]:
    if item is None:
        if type_.startswith(("[]", "map[", "*")):
            return []
        return [f"{where}: null for a Go {type_} (Go would keep the zero value)"]
    if type_ == "string":
        return [] if isinstance(item, str) else [f"{where}: {item!r} cannot be decoded into a Go string"]
    if type_ == "bool":
        return [] if isinstance(item, bool) else [f"{where}: {item!r} cannot be decoded into a Go bool"]
    if type_ == "int32":
        if isinstance(item, bool) or not isinstance(item, int) or not -(2**31) <= item < 2**31:
            return [f"{where}: {item!r} cannot be decoded into a Go int32"]
        return []
    if type_ == "time.Time":
        if isinstance(item, str) and _RFC3339.fullmatch(item):
            return []
        return [f"{where}: {item!r} is not an RFC 3339 time for a Go time.Time"]
    if type_ == "map[string]any":
        return [] if isinstance(item, dict) else [f"{where}: {item!r} cannot be decoded into a Go map"]
    if type_.startswith("[]"):
        if not isinstance(item, list):
            return [f"{where}: {item!r} cannot be decoded into a Go slice"]
        problems = []
        for index, element in enumerate(item):
            problems += _value_problems(type_[2:], element, f"{where}[{index}]")
        return problems
    if type_ in TYPES:
        return unmarshal_problems(type_, item, where)
    raise AssertionError(f"no rule for Go type {type_}")
