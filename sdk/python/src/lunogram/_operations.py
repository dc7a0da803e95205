"""Every Client API call as a pure description: method, path, JSON body and how to parse the answer.

Shared by `Client` and `AsyncClient`, which only differ in how they send an `Operation`. Each builder
validates and encodes its arguments (identifiers, timestamps, intervals) and raises `ValueError` /
`TypeError` before anything is sent. Keys inside `data`, `match` and `metadata` are sent exactly as given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, TypeVar

from ._models import (
    NOT_GIVEN,
    Event,
    ExternalID,
    IdentifierInput,
    NotGiven,
    Organization,
    ScheduledAccepted,
    User,
)

T = TypeVar("T")

Method = Literal["POST", "DELETE"]


def _ignore(_: Any) -> None:
    return None


@dataclass(frozen=True)
class Operation(Generic[T]):
    """One request to `<base_url>/client/<path>` and the parser of its successful answer."""

    method: Method
    path: str
    body: Any
    parse: Callable[[Any], T]


# --- encoding ---------------------------------------------------------------------------------------------


def encode_identifier(value: IdentifierInput, field: str = "identifier") -> list[dict[str, Any]]:
    """`"u1"`, an `ExternalID`, a dict, or a non-empty list of these -> the wire's identifier array."""
    items: Sequence[Any]
    if isinstance(value, str | ExternalID | Mapping):
        items = [value]
    elif isinstance(value, Sequence):
        items = value
    else:
        raise TypeError(f"{field}: expected a string, ExternalID, dict or a list of them, got {type(value).__name__}")
    if not items:
        raise ValueError(f"{field}: must contain at least one identifier")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append({"source": "default", "external_id": item})
        elif isinstance(item, ExternalID):
            out.append(item.to_json())
        elif isinstance(item, Mapping):
            if "external_id" not in item:
                raise ValueError(f"{field}[{i}]: an identifier dict needs an 'external_id'")
            out.append(dict(item))
        else:
            raise TypeError(f"{field}[{i}]: expected a string, ExternalID or dict, got {type(item).__name__}")
    return out


def encode_datetime(value: datetime | str, field: str) -> str:
    """An aware `datetime` -> RFC 3339 text; a naive one is refused (its instant would be a guess)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, datetime):
        raise TypeError(f"{field}: expected a datetime or an RFC 3339 string, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{field}: naive datetime {value.isoformat()!r}: give it a timezone, e.g. datetime.now(timezone.utc)"
        )
    return value.isoformat()


def encode_interval(value: timedelta | str, field: str = "interval") -> str:
    """A positive `timedelta` of whole seconds -> Go-style text ("168h", "1h30m", "90s"); text passes through
    (e.g. "7 days", "1 month": calendar intervals a `timedelta` cannot express)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, timedelta):
        raise TypeError(f"{field}: expected a timedelta or a string such as '24h' or '1 month'")
    if value <= timedelta(0):
        raise ValueError(f"{field}: must be positive, got {value!r}")
    if value.microseconds:
        raise ValueError(f"{field}: must be a whole number of seconds, got {value!r}")
    seconds = value.days * 86400 + value.seconds
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts)


def _put(body: dict[str, Any], key: str, value: object) -> None:
    # NOT_GIVEN: leave the field out; None: send null
    if not isinstance(value, NotGiven):
        body[key] = dict(value) if isinstance(value, Mapping) else value


def encode_events(events: Sequence[Event] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(events, Mapping | str) or not isinstance(events, Sequence):
        raise TypeError("events: expected a list of event dicts")
    if not events:
        raise ValueError("events: must contain at least one event")
    out: list[dict[str, Any]] = []
    for i, event in enumerate(events):
        if not isinstance(event, Mapping):
            raise TypeError(f"events[{i}]: expected a dict, got {type(event).__name__}")
        encoded = dict(event)
        if "identifier" in encoded:
            encoded["identifier"] = encode_identifier(encoded["identifier"], f"events[{i}].identifier")
        out.append(encoded)
    return out


def _target(identifier: IdentifierInput, field: str) -> dict[str, Any]:
    return {"identifier": encode_identifier(identifier, f"{field}.identifier")}


# --- users ------------------------------------------------------------------------------------------------


def upsert_user(
    identifier: IdentifierInput,
    *,
    email: str | NotGiven | None = NOT_GIVEN,
    phone: str | NotGiven | None = NOT_GIVEN,
    timezone: str | NotGiven | None = NOT_GIVEN,
    locale: str | NotGiven | None = NOT_GIVEN,
    data: Mapping[str, Any] | NotGiven | None = NOT_GIVEN,
) -> Operation[User]:
    """Create or update the user that any of `identifier` names, and return it.

    Omitted fields keep their stored value, `None` clears one; `data` merges into the stored data (top level).
    `phone` is E.164 (`+31612345678`), `timezone` IANA (`America/Chicago`), `locale` BCP 47 (`en`, `es-MX`).
    """
    body: dict[str, Any] = {"identifier": encode_identifier(identifier)}
    for key, value in (("email", email), ("phone", phone), ("timezone", timezone), ("locale", locale)):
        _put(body, key, value)
    _put(body, "data", data)
    return Operation("POST", "users", body, User.from_json)


def delete_user(identifier: IdentifierInput) -> Operation[None]:
    """Delete the user with its identifiers, memberships and schedules (`NotFoundError` if there is none)."""
    return Operation("DELETE", "users", {"identifier": encode_identifier(identifier)}, _ignore)


def post_user_events(events: Sequence[Event] | Sequence[Mapping[str, Any]]) -> Operation[None]:
    """Send a batch of user events (accepted durably, processed asynchronously).

    Each event is `{"name", "data", "identifier"}` or, to reach every user whose data contains some key/value
    pairs, `{"name", "data", "match"}` (secret key only). The batch is validated as a whole: one bad event
    answers `ValidationError` naming its index and nothing is stored.
    """
    return Operation("POST", "users/events", encode_events(events), _ignore)


def _upsert_schedule(
    path: str,
    identifier: IdentifierInput,
    name: str,
    scheduled_at: datetime | str | NotGiven | None,
    start_at: datetime | str | NotGiven | None,
    interval: timedelta | str | NotGiven | None,
    data: Mapping[str, Any] | NotGiven | None,
) -> Operation[ScheduledAccepted]:
    body: dict[str, Any] = {"name": name, "identifier": encode_identifier(identifier)}
    if isinstance(scheduled_at, datetime | str):
        body["scheduled_at"] = encode_datetime(scheduled_at, "scheduled_at")
    if isinstance(start_at, datetime | str):
        body["start_at"] = encode_datetime(start_at, "start_at")
    if isinstance(interval, timedelta | str):
        body["interval"] = encode_interval(interval)
    _put(body, "data", data)
    return Operation("POST", path, body, ScheduledAccepted.from_json)


def upsert_user_schedule(
    identifier: IdentifierInput,
    *,
    name: str,
    scheduled_at: datetime | str | NotGiven | None = NOT_GIVEN,
    start_at: datetime | str | NotGiven | None = NOT_GIVEN,
    interval: timedelta | str | NotGiven | None = NOT_GIVEN,
    data: Mapping[str, Any] | NotGiven | None = NOT_GIVEN,
) -> Operation[ScheduledAccepted]:
    """Create or replace the user's schedule `name`; each firing emits the event `scheduled.<name>`.

    One-time: `scheduled_at`. Recurring: `interval` (a `timedelta`, or text such as "24h", "7 days",
    "1 month"), anchored at `scheduled_at`, else `start_at`, else now. Datetimes must be timezone-aware.
    """
    return _upsert_schedule("users/scheduled", identifier, name, scheduled_at, start_at, interval, data)


def delete_user_schedule(identifier: IdentifierInput, *, name: str) -> Operation[None]:
    """Delete the user's schedule `name` and cancel what it started (`NotFoundError` if there is none)."""
    return Operation("DELETE", "users/scheduled", {"name": name, "identifier": encode_identifier(identifier)}, _ignore)


# --- organizations ----------------------------------------------------------------------------------------


def upsert_organization(
    identifier: IdentifierInput,
    *,
    name: str | NotGiven | None = NOT_GIVEN,
    data: Mapping[str, Any] | NotGiven | None = NOT_GIVEN,
) -> Operation[Organization]:
    """Create or update the organization that any of `identifier` names, and return it."""
    body: dict[str, Any] = {"identifier": encode_identifier(identifier)}
    _put(body, "name", name)
    _put(body, "data", data)
    return Operation("POST", "organizations", body, Organization.from_json)


def delete_organization(identifier: IdentifierInput) -> Operation[None]:
    """Delete the organization and its memberships (`NotFoundError` if there is none)."""
    return Operation("DELETE", "organizations", {"identifier": encode_identifier(identifier)}, _ignore)


def add_organization_user(
    organization: IdentifierInput,
    user: IdentifierInput,
    *,
    data: Mapping[str, Any] | NotGiven | None = NOT_GIVEN,
) -> Operation[None]:
    """Make the user a member of the organization (both are created if they do not exist yet)."""
    body: dict[str, Any] = {"organization": _target(organization, "organization"), "user": _target(user, "user")}
    _put(body, "data", data)
    return Operation("POST", "organizations/users", body, _ignore)


def remove_organization_user(organization: IdentifierInput, user: IdentifierInput) -> Operation[None]:
    """End the user's membership of the organization (`NotFoundError` if there is none)."""
    body = {"organization": _target(organization, "organization"), "user": _target(user, "user")}
    return Operation("DELETE", "organizations/users", body, _ignore)


def post_organization_events(events: Sequence[Event] | Sequence[Mapping[str, Any]]) -> Operation[None]:
    """Send a batch of organization events: like `users.events.post`, also reaching the members' journeys."""
    return Operation("POST", "organizations/events", encode_events(events), _ignore)


def upsert_organization_schedule(
    identifier: IdentifierInput,
    *,
    name: str,
    scheduled_at: datetime | str | NotGiven | None = NOT_GIVEN,
    start_at: datetime | str | NotGiven | None = NOT_GIVEN,
    interval: timedelta | str | NotGiven | None = NOT_GIVEN,
    data: Mapping[str, Any] | NotGiven | None = NOT_GIVEN,
) -> Operation[ScheduledAccepted]:
    """Create or replace the organization's schedule `name` (see `users.schedules.upsert`)."""
    return _upsert_schedule("organizations/scheduled", identifier, name, scheduled_at, start_at, interval, data)


def delete_organization_schedule(identifier: IdentifierInput, *, name: str) -> Operation[None]:
    """Delete the organization's schedule `name` (`NotFoundError` if there is none)."""
    body = {"name": name, "identifier": encode_identifier(identifier)}
    return Operation("DELETE", "organizations/scheduled", body, _ignore)
