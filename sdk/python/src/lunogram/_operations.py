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
    DeviceOS,
    Event,
    ExternalID,
    IdentifierInput,
    IdentifierLike,
    InboxChannel,
    InboxCount,
    InboxMessageCreate,
    InboxMessageList,
    InboxStatus,
    NotGiven,
    Organization,
    ScheduledAccepted,
    SentMessage,
    User,
    VapidPublicKey,
    WebPushSubscription,
)

T = TypeVar("T")

Method = Literal["GET", "POST", "DELETE"]


def _ignore(_: Any) -> None:
    return None


@dataclass(frozen=True)
class Operation(Generic[T]):
    """One request to `<base_url>/<area>/<path>` and the parser of its successful answer. A GET has no body
    and sends `params` as its query string. `area` is `client` (the Client API) or `admin` (operator routes,
    secret keys only: the transactional send)."""

    method: Method
    path: str
    body: Any
    parse: Callable[[Any], T]
    params: Mapping[str, str] | None = None
    area: Literal["client", "admin"] = "client"


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


# --- devices and push -------------------------------------------------------------------------------------

MAX_INBOX_BATCH = 100
"""Messages per `inbox.post`, and message ids per `inbox.read` / `inbox.archive` (the server's cap)."""

_DEVICE_OS = ("web", "ios", "android")


def _expiration(subscription: Mapping[str, Any]) -> Any:
    for key in ("expiration_time", "expirationTime"):
        value = subscription.get(key)
        if isinstance(value, datetime):
            return encode_datetime(value, f"subscription.{key}")
        if value is not None:
            return value
    return None


def register_device(
    identifier: IdentifierInput,
    *,
    device_id: str,
    os: DeviceOS,
    token: str | NotGiven = NOT_GIVEN,
    subscription: WebPushSubscription | Mapping[str, Any] | NotGiven = NOT_GIVEN,
    os_version: str | NotGiven = NOT_GIVEN,
    model: str | NotGiven = NOT_GIVEN,
    app_version: str | NotGiven = NOT_GIVEN,
    data: Mapping[str, Any] | NotGiven | None = NOT_GIVEN,
) -> Operation[None]:
    """Register (or update) a push device of the user `identifier` names (`NotFoundError` if there is none).

    `os="android"` takes an FCM `token`, `os="ios"` an APNs `token`, `os="web"` a Web Push `subscription`
    (a browser's `PushSubscription.toJSON()`: `endpoint`, `keys` {`p256dh`, `auth`}, `expirationTime`).
    Registering a `device_id` again replaces it; the user's `has_push_device` becomes true.
    """
    if os not in _DEVICE_OS:
        raise ValueError(f"os: must be one of {', '.join(_DEVICE_OS)}, got {os!r}")
    if not isinstance(device_id, str) or not device_id.strip():
        raise ValueError("device_id: must be a non-blank string")
    config: dict[str, Any]
    if os == "web":
        if not isinstance(subscription, Mapping):
            raise ValueError("subscription: a web device needs its Web Push subscription (endpoint and keys)")
        keys = subscription.get("keys")
        if not subscription.get("endpoint") or not isinstance(keys, Mapping):
            raise ValueError("subscription: needs 'endpoint' and 'keys' ({'p256dh', 'auth'})")
        config = {
            "endpoint": subscription["endpoint"],
            "expiration_time": _expiration(subscription),
            "keys": {"p256dh": keys.get("p256dh"), "auth": keys.get("auth")},
        }
    else:
        if not isinstance(token, str) or not token:
            raise ValueError(f"token: an {os} device needs its {'APNs' if os == 'ios' else 'FCM'} token")
        config = {"token": token}
    body: dict[str, Any] = {
        "identifier": encode_identifier(identifier),
        "device_id": device_id,
        "os": os,
        "config": config,
    }
    for key, value in (("os_version", os_version), ("model", model), ("app_version", app_version), ("data", data)):
        _put(body, key, value)
    return Operation("POST", "users/devices", body, _ignore)


def get_vapid_public_key() -> Operation[VapidPublicKey]:
    """The project's VAPID public key, which browsers subscribe to Web Push with (`NotFoundError` when the
    project has no webpush provider). A public key may read it."""
    return Operation("GET", "push/vapid", None, VapidPublicKey.from_json)


# --- the in-app inbox -------------------------------------------------------------------------------------


def _one_identifier(value: IdentifierLike, field: str) -> dict[str, Any]:
    if not isinstance(value, str | ExternalID | Mapping):
        raise TypeError(f"{field}: expected one identifier (a string, ExternalID or dict), got {type(value).__name__}")
    return encode_identifier(value, field)[0]


def _batch(items: Any, field: str) -> Sequence[Any]:
    if isinstance(items, Mapping | str) or not isinstance(items, Sequence):
        raise TypeError(f"{field}: expected a list")
    if not items:
        raise ValueError(f"{field}: must contain at least one item")
    if len(items) > MAX_INBOX_BATCH:
        raise ValueError(f"{field}: at most {MAX_INBOX_BATCH} per call, got {len(items)}")
    return items


def encode_inbox_messages(messages: Sequence[InboxMessageCreate] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, message in enumerate(_batch(messages, "messages")):
        if not isinstance(message, Mapping):
            raise TypeError(f"messages[{i}]: expected a dict, got {type(message).__name__}")
        for required in ("target", "identifier", "channel"):
            if required not in message:
                raise ValueError(f"messages[{i}]: needs {required!r}")
        encoded = dict(message)
        encoded["target"] = encode_identifier(message["target"], f"messages[{i}].target")
        encoded["identifier"] = _one_identifier(message["identifier"], f"messages[{i}].identifier")
        for key in ("scheduled_at", "expires_at"):
            if isinstance(encoded.get(key), datetime):
                encoded[key] = encode_datetime(encoded[key], f"messages[{i}].{key}")
        if "tags" in encoded and encoded["tags"] is not None:
            encoded["tags"] = list(encoded["tags"])
        out.append(encoded)
    return out


def _feed_target(identifier: IdentifierLike) -> dict[str, str]:
    target = _one_identifier(identifier, "identifier")
    return {"source": str(target.get("source", "default")), "external_id": str(target["external_id"])}


def _post_inbox(plural: str, messages: Sequence[InboxMessageCreate] | Sequence[Mapping[str, Any]]) -> Operation[None]:
    return Operation("POST", f"{plural}/inbox", encode_inbox_messages(messages), _ignore)


def _list_inbox(
    plural: str,
    identifier: IdentifierLike,
    channel: InboxChannel,
    status: InboxStatus | NotGiven,
    tags: str | Sequence[str] | NotGiven,
    message_source: str | NotGiven,
    priority: int | NotGiven,
    limit: int | NotGiven,
    offset: int | NotGiven,
) -> Operation[InboxMessageList]:
    params = {**_feed_target(identifier), "channel": channel}
    if isinstance(status, str):
        params["status"] = status
    if isinstance(tags, str):
        params["tags"] = tags
    elif not isinstance(tags, NotGiven):
        params["tags"] = ",".join(tags)
    if isinstance(message_source, str):
        params["message_source"] = message_source
    for key, value in (("priority", priority), ("limit", limit), ("offset", offset)):
        if not isinstance(value, NotGiven):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{key}: expected an integer, got {type(value).__name__}")
            params[key] = str(value)
    return Operation("GET", f"{plural}/inbox", None, InboxMessageList.from_json, params)


def _count_inbox(plural: str, identifier: IdentifierLike, channel: InboxChannel) -> Operation[InboxCount]:
    params = {**_feed_target(identifier), "channel": channel}
    return Operation("GET", f"{plural}/inbox/count", None, InboxCount.from_json, params)


def _mark_inbox(
    plural: str, what: str, identifier: IdentifierInput, message_ids: str | Sequence[str]
) -> Operation[None]:
    ids = [message_ids] if isinstance(message_ids, str) else list(_batch(message_ids, "message_ids"))
    target = encode_identifier(identifier)
    body = [{"target": target, "message_id": str(message_id)} for message_id in ids]
    return Operation("POST", f"{plural}/inbox/{what}", body, _ignore)


def post_user_inbox(messages: Sequence[InboxMessageCreate] | Sequence[Mapping[str, Any]]) -> Operation[None]:
    """Store up to 100 messages in users' inboxes (secret key). Each is `{"target", "identifier", "channel",
    "content"?, "data"?, "tags"?, "priority"?, "source"?, "scheduled_at"?, "expires_at"?}`; a message whose
    `identifier` its target already has on that channel is not stored twice."""
    return _post_inbox("users", messages)


def list_user_inbox(
    identifier: IdentifierLike,
    *,
    channel: InboxChannel,
    status: InboxStatus | NotGiven = NOT_GIVEN,
    tags: str | Sequence[str] | NotGiven = NOT_GIVEN,
    message_source: str | NotGiven = NOT_GIVEN,
    priority: int | NotGiven = NOT_GIVEN,
    limit: int | NotGiven = NOT_GIVEN,
    offset: int | NotGiven = NOT_GIVEN,
) -> Operation[InboxMessageList]:
    """A page of the user's feed on `channel`, newest first (`NotFoundError` for an unknown user). Without
    `status`, everything not archived; `tags` must all be on a message; `limit` 1-100 (default 20). Needs a
    key that may read."""
    return _list_inbox("users", identifier, channel, status, tags, message_source, priority, limit, offset)


def count_user_inbox(identifier: IdentifierLike, *, channel: InboxChannel) -> Operation[InboxCount]:
    """Unread and total messages of the user's feed on `channel` (not archived). Needs a key that may read."""
    return _count_inbox("users", identifier, channel)


def read_user_inbox(identifier: IdentifierInput, message_ids: str | Sequence[str]) -> Operation[None]:
    """Mark up to 100 of the user's messages read (ids of another profile's messages are skipped)."""
    return _mark_inbox("users", "read", identifier, message_ids)


def archive_user_inbox(identifier: IdentifierInput, message_ids: str | Sequence[str]) -> Operation[None]:
    """Archive up to 100 of the user's messages: they leave the feed unless `status="archived"` is asked."""
    return _mark_inbox("users", "archived", identifier, message_ids)


def post_organization_inbox(
    messages: Sequence[InboxMessageCreate] | Sequence[Mapping[str, Any]],
) -> Operation[None]:
    """Store up to 100 messages in organizations' inboxes (secret key); see `users.inbox.post`."""
    return _post_inbox("organizations", messages)


def list_organization_inbox(
    identifier: IdentifierLike,
    *,
    channel: InboxChannel,
    status: InboxStatus | NotGiven = NOT_GIVEN,
    tags: str | Sequence[str] | NotGiven = NOT_GIVEN,
    message_source: str | NotGiven = NOT_GIVEN,
    priority: int | NotGiven = NOT_GIVEN,
    limit: int | NotGiven = NOT_GIVEN,
    offset: int | NotGiven = NOT_GIVEN,
) -> Operation[InboxMessageList]:
    """A page of the organization's feed on `channel`; see `users.inbox.list`."""
    return _list_inbox("organizations", identifier, channel, status, tags, message_source, priority, limit, offset)


def count_organization_inbox(identifier: IdentifierLike, *, channel: InboxChannel) -> Operation[InboxCount]:
    """Unread and total messages of the organization's feed on `channel`."""
    return _count_inbox("organizations", identifier, channel)


def read_organization_inbox(identifier: IdentifierInput, message_ids: str | Sequence[str]) -> Operation[None]:
    """Mark up to 100 of the organization's messages read."""
    return _mark_inbox("organizations", "read", identifier, message_ids)


def archive_organization_inbox(identifier: IdentifierInput, message_ids: str | Sequence[str]) -> Operation[None]:
    """Archive up to 100 of the organization's messages."""
    return _mark_inbox("organizations", "archived", identifier, message_ids)


# --- the transactional send (admin API: a secret key) -----------------------------------------------------


def send_message(
    template_id: str,
    identifier: IdentifierInput,
    *,
    key: str,
    data: Mapping[str, Any] | None = None,
    provider_id: str | None = None,
) -> Operation[SentMessage]:
    """Send template `template_id` to the user `identifier` names, now, once per `key` (a repeat returns the
    message the first call queued). Needs a secret key."""
    if not isinstance(key, str) or not key:
        raise ValueError("key: must be a non-empty string (it makes the send happen once)")
    body: dict[str, Any] = {"template_id": template_id, "identifier": encode_identifier(identifier), "key": key}
    if data is not None:
        body["data"] = dict(data)
    if provider_id is not None:
        body["provider_id"] = provider_id
    return Operation("POST", "messages", body, SentMessage.from_json, area="admin")


def get_message(message_id: str) -> Operation[SentMessage]:
    """A message's state and every event of it (sent, opened, clicked, ...)."""
    return Operation("GET", f"messages/{message_id}", None, SentMessage.from_json, area="admin")
