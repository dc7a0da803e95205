"""Typed values: what identifiers and events look like going in, and what the server answers.

Responses are frozen dataclasses parsed from the JSON; unknown fields are ignored (so a newer server does not
break an older SDK), timestamps become aware `datetime`s, ids stay strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, TypedDict

__all__ = [
    "NOT_GIVEN",
    "DeviceOS",
    "Event",
    "ExternalID",
    "IdentifierInput",
    "IdentifierLike",
    "InboxChannel",
    "InboxCount",
    "InboxMessage",
    "InboxMessageCreate",
    "InboxMessageList",
    "InboxStatus",
    "NotGiven",
    "Organization",
    "OrganizationEvent",
    "ScheduledAccepted",
    "User",
    "VapidPublicKey",
    "WebPushSubscription",
]


class NotGiven:
    """The default of optional fields: an omitted field is not sent (the server keeps the stored value),
    while `None` is sent as `null` (which clears it, where the server allows that)."""

    _instance: NotGiven | None = None

    def __new__(cls) -> NotGiven:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven()


def parse_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError(f"expected an RFC 3339 timestamp string, got {type(value).__name__}")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    return datetime.fromisoformat(text)


def _optional_datetime(value: Any) -> datetime | None:
    return None if value is None else parse_datetime(value)


@dataclass(frozen=True)
class ExternalID:
    """An identifier of a user or organization: `external_id` within a `source` namespace.

    Used both ways: pass it to any `identifier` argument, and find it in `User.identifier` (where the server
    also fills `id`, `created_at` and `updated_at`). Only `source`, `external_id` and `metadata` are sent.
    """

    external_id: str
    source: str = "default"
    metadata: Mapping[str, Any] | None = None
    id: str | None = field(default=None, kw_only=True)
    created_at: datetime | None = field(default=None, kw_only=True)
    updated_at: datetime | None = field(default=None, kw_only=True)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "external_id": self.external_id}
        if self.metadata is not None:
            out["metadata"] = dict(self.metadata)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExternalID:
        return cls(
            external_id=data["external_id"],
            source=data.get("source", "default"),
            metadata=data.get("metadata"),
            id=data.get("id"),
            created_at=_optional_datetime(data.get("created_at")),
            updated_at=_optional_datetime(data.get("updated_at")),
        )


IdentifierLike = str | ExternalID | Mapping[str, Any]
"""One identifier: `"user_123"` (source `default`), an `ExternalID`, or a dict `{"external_id", "source"?,
"metadata"?}`."""

IdentifierInput = IdentifierLike | Sequence[IdentifierLike]
"""What every `identifier` argument takes: one identifier or a non-empty list of them."""


class _EventName(TypedDict):
    name: str


class Event(_EventName, total=False):
    """An event for `users.events.post` / `organizations.events.post`: a `name`, its `data`, and exactly one of
    `identifier` (one target) or `match` (every target whose data contains these key/value pairs)."""

    data: Mapping[str, Any]
    identifier: IdentifierInput
    match: Mapping[str, Any]


OrganizationEvent = Event
"""An organization event: the same shape as `Event`."""


@dataclass(frozen=True)
class User:
    """A user profile as the server stores it (answer of `users.upsert`)."""

    id: str
    project_id: str
    identifier: list[ExternalID]
    email: str | None
    phone: str | None
    data: dict[str, Any]
    timezone: str | None
    locale: str | None
    has_push_device: bool
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> User:
        return cls(
            id=data["id"],
            project_id=data["project_id"],
            identifier=[ExternalID.from_json(i) for i in data.get("identifier", [])],
            email=data.get("email"),
            phone=data.get("phone"),
            data=data.get("data") or {},
            timezone=data.get("timezone"),
            locale=data.get("locale"),
            has_push_device=bool(data.get("has_push_device", False)),
            version=int(data["version"]),
            created_at=parse_datetime(data["created_at"]),
            updated_at=parse_datetime(data["updated_at"]),
        )


@dataclass(frozen=True)
class Organization:
    """An organization as the server stores it (answer of `organizations.upsert`)."""

    id: str
    project_id: str
    identifier: list[ExternalID]
    name: str | None
    data: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Organization:
        return cls(
            id=data["id"],
            project_id=data["project_id"],
            identifier=[ExternalID.from_json(i) for i in data.get("identifier", [])],
            name=data.get("name"),
            data=data.get("data") or {},
            version=int(data["version"]),
            created_at=parse_datetime(data["created_at"]),
            updated_at=parse_datetime(data["updated_at"]),
        )


@dataclass(frozen=True)
class ScheduledAccepted:
    """The answer of `schedules.upsert`: the schedule's id and its next firing (`None` if there is none)."""

    id: str
    name: str
    scheduled_at: datetime | None
    data: dict[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScheduledAccepted:
        return cls(
            id=data["id"],
            name=data["name"],
            scheduled_at=_optional_datetime(data.get("scheduled_at")),
            data=data.get("data") or {},
        )


# --- devices and push -------------------------------------------------------------------------------------

DeviceOS = Literal["web", "ios", "android"]
"""What a device runs: `android` (an FCM token), `ios` (an APNs token) or `web` (a Web Push subscription)."""


class _WebPushKeys(TypedDict):
    p256dh: str
    auth: str


class _WebPushEndpoint(TypedDict):
    endpoint: str
    keys: _WebPushKeys


class WebPushSubscription(_WebPushEndpoint, total=False):
    """A browser's `PushSubscription.toJSON()`: `endpoint`, `keys` and, optionally, its expiration (epoch
    milliseconds, an RFC 3339 string, or an aware `datetime`) as `expirationTime` or `expiration_time`."""

    expirationTime: int | str | datetime | None
    expiration_time: int | str | datetime | None


@dataclass(frozen=True)
class VapidPublicKey:
    """The project's VAPID public key (base64url), for `pushManager.subscribe({applicationServerKey})`."""

    public_key: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VapidPublicKey:
        return cls(public_key=data["public_key"])


# --- the in-app inbox -------------------------------------------------------------------------------------

InboxChannel = Literal["email", "sms", "push", "inbox"]
"""The feed a message is shown in."""

InboxStatus = Literal["unread", "read", "archived"]
"""`archived` once archived, else `read` once read, else `unread`."""


class _InboxMessageRequired(TypedDict):
    target: IdentifierInput
    identifier: IdentifierLike
    channel: InboxChannel


class InboxMessageCreate(_InboxMessageRequired, total=False):
    """A message for `inbox.post`: for the profile `target` names; `identifier` is the message's own (posting
    it again for the same target and channel stores nothing new). `priority` 1 (highest) to 5 (default 3);
    not shown before `scheduled_at` nor from `expires_at` (aware datetimes or RFC 3339 text)."""

    content: Mapping[str, Any]
    data: Mapping[str, Any]
    tags: Sequence[str]
    priority: int
    source: str
    scheduled_at: datetime | str
    expires_at: datetime | str


@dataclass(frozen=True)
class InboxMessage:
    """A message of an inbox feed. `user_id` is set in a user's feed, `organization_id` in an organization's."""

    id: str
    project_id: str
    user_id: str | None
    organization_id: str | None
    identifier: ExternalID
    channel: str
    content: dict[str, Any]
    data: dict[str, Any]
    tags: list[str]
    priority: int
    source: str | None
    status: str
    scheduled_at: datetime
    expires_at: datetime | None
    read_at: datetime | None
    archived_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InboxMessage:
        identifier = data.get("identifier") or {"external_id": data.get("external_id") or ""}
        read_at, archived_at = _optional_datetime(data.get("read_at")), _optional_datetime(data.get("archived_at"))
        status = data.get("status") or ("archived" if archived_at else "read" if read_at else "unread")
        return cls(
            id=data["id"],
            project_id=data["project_id"],
            user_id=data.get("user_id"),
            organization_id=data.get("organization_id"),
            identifier=ExternalID.from_json(identifier),
            channel=data["channel"],
            content=data.get("content") or {},
            data=data.get("data") or {},
            tags=list(data.get("tags") or []),
            priority=int(data.get("priority", 3)),
            source=data.get("source"),
            status=status,
            scheduled_at=parse_datetime(data["scheduled_at"]),
            expires_at=_optional_datetime(data.get("expires_at")),
            read_at=read_at,
            archived_at=archived_at,
            created_at=parse_datetime(data["created_at"]),
            updated_at=parse_datetime(data["updated_at"]),
        )


@dataclass(frozen=True)
class InboxMessageList:
    """A page of a feed: `results` newest first, `total` of the whole filtered feed."""

    results: list[InboxMessage]
    total: int
    limit: int
    offset: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InboxMessageList:
        return cls(
            results=[InboxMessage.from_json(item) for item in data.get("results") or []],
            total=int(data["total"]),
            limit=int(data["limit"]),
            offset=int(data["offset"]),
        )


@dataclass(frozen=True)
class InboxCount:
    """Of what a feed shows now and is not archived: how many are `unread`, and the `total`."""

    unread: int
    total: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InboxCount:
        return cls(unread=int(data["unread"]), total=int(data["total"]))


@dataclass(frozen=True)
class SentMessage:
    """A message of the outbox: `status` is queued, sending, sent, failed, skipped or cancelled (`reason`
    says why); `events` are what happened to it, in order."""

    id: str
    status: str
    channel: str
    template_id: str | None
    user_id: str | None
    reason: str | None
    events: list[dict[str, Any]]
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SentMessage:
        return cls(
            id=data["id"],
            status=data["status"],
            channel=data["channel"],
            template_id=data.get("template_id"),
            user_id=data.get("user_id"),
            reason=data.get("reason"),
            events=list(data.get("events") or []),
            raw=dict(data),
        )
