"""The in-app inbox: messages stored for a user (or an organization) that the product's front end reads.

Messages come from the Client API (`POST /client/{users,organizations}/inbox`, idempotent by the message's
own `identifier` per target and channel) and from the senders (`deliver`, on the inbox channel, idempotent
by the outbox message id). A feed shows, newest first, what is due (`scheduled_at` passed) and not expired;
read and archived are marks on a message. Each target keeps at most `MAX_INBOX_MESSAGES` per channel, the
newest; expired messages are dropped when the target next gets one.

Messages hang on their profile: deleted with it (foreign keys), moved to the survivor of a merge
(`lunogram_inbox_on_user_merged`, `lunogram_inbox_on_organization_merged`: sql/functions.sql).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from pydantic import AfterValidator, BaseModel, Field, StringConstraints, TypeAdapter

from lunogram_server.db import fetch_scalar, load_queries
from lunogram_server.events.models import Kind
from lunogram_server.identity import ExternalID, Identifiers, StrictModel, normalize
from lunogram_server.identity.models import not_blank
from lunogram_server.reactions import ORGANIZATION_MERGED, USER_MERGED, Reactions
from lunogram_server.schedules.models import Timestamp

Q = load_queries("lunogram_server.messaging", "inbox.sql")

InboxChannel = Literal["email", "sms", "push", "inbox"]
InboxStatus = Literal["unread", "read", "archived"]
Mark = Literal["read", "archived"]

MAX_BATCH = 100  # messages (or marks) per request
MAX_INBOX_MESSAGES = 1000  # per target and channel: lunogram_max_inbox_messages() in sql/functions.sql
MAX_TAGS = 20
MAX_PAGE = 100
DEFAULT_PAGE = 20
DEFAULT_PRIORITY = 3
DELIVERED_SOURCE = "outbox"  # the identifier source of what `deliver` stores; its external_id is the message id

Tag = Annotated[str, StringConstraints(min_length=1, max_length=255), AfterValidator(not_blank)]
Label = Annotated[str, StringConstraints(max_length=255)]


def register(reactions: Reactions) -> None:
    reactions.on(USER_MERGED, "lunogram_inbox_on_user_merged")
    reactions.on(ORGANIZATION_MERGED, "lunogram_inbox_on_organization_merged")


# -- requests -----------------------------------------------------------------------------------------------


class InboxMessageCreate(StrictModel):
    """One message for the profile `target` names (created, or merged, as any write does). `identifier` is the
    message's own: posting it again for the same target and channel stores nothing new. `content` is the
    channel's payload (e.g. `{title, body}`), `data` anything else; both objects. `priority` 1 (highest) to 5.
    Not shown before `scheduled_at` (default: now), nor from `expires_at`. `sender_identity_id`,
    `campaign_id` and `broadcast_id` are accepted, as upstream's SDKs may send them, and not used."""

    target: Identifiers
    identifier: ExternalID
    channel: InboxChannel
    content: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    tags: list[Tag] | None = Field(default=None, max_length=MAX_TAGS)
    priority: int | None = Field(default=None, ge=1, le=5)
    source: Label | None = None
    scheduled_at: Timestamp | None = None  # RFC 3339 with an offset, years 1-9998 in UTC
    expires_at: Timestamp | None = None
    sender_identity_id: UUID | None = None
    campaign_id: UUID | None = None
    broadcast_id: UUID | None = None


class InboxMessageRef(StrictModel):
    """A message of the profile `target` names, to mark read or archived."""

    target: Identifiers
    message_id: UUID


MESSAGES = TypeAdapter(list[InboxMessageCreate])
REFS = TypeAdapter(list[InboxMessageRef])


class InboxError(ValueError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def check_batch(value: Any) -> None:
    """The body must be an array of 1 to MAX_BATCH items (upstream's words for too many)."""
    if isinstance(value, list) and len(value) > MAX_BATCH:
        raise InboxError(400, f"body: batch size exceeds maximum of {MAX_BATCH}")
    if isinstance(value, list) and not value:
        raise InboxError(400, "body: must contain at least 1 item(s)")


def _size(value: dict[str, Any] | None, cap: int, where: str) -> None:
    if value:
        size = len(orjson.dumps(value))
        if size > cap:
            raise InboxError(
                413, f"{where}: {size} bytes as JSON; at most {cap} are accepted (LUNOGRAM_MAX_EVENT_DATA_BYTES)"
            )


def message_items(messages: Sequence[InboxMessageCreate], max_bytes: int) -> list[dict[str, Any]]:
    """The batch as lunogram_inbox_post takes it; InboxError for what the shape alone does not refuse."""
    items = []
    for n, message in enumerate(messages):
        _size(message.content, max_bytes, f"[{n}].content")
        _size(message.data, max_bytes, f"[{n}].data")
        if message.expires_at and message.scheduled_at and message.expires_at <= message.scheduled_at:
            raise InboxError(400, f"[{n}].expires_at: must be after scheduled_at")
        items.append(
            {
                "target": normalize(message.target),
                "identifier": {"source": message.identifier.source, "external_id": message.identifier.external_id},
                "channel": message.channel,
                "content": message.content or {},
                "data": message.data or {},
                "tags": list(dict.fromkeys(message.tags or ())),
                "priority": message.priority or DEFAULT_PRIORITY,
                "source": message.source,
                "scheduled_at": _iso(message.scheduled_at),
                "expires_at": _iso(message.expires_at),
            }
        )
    return items


def _iso(value: datetime | None) -> str | None:
    # in UTC: PostgreSQL refuses offsets beyond 15:59, which Python accepts
    return value.astimezone(UTC).isoformat() if value is not None else None


# -- responses (for the schema: the answers are built as JSON by PostgreSQL) -------------------------------


class InboxMessageIdentifier(BaseModel):
    source: str
    external_id: str


class InboxMessage(BaseModel):
    """A message as the feeds show it. `user_id` for a user's, `organization_id` for an organization's.
    `status`: `archived` once archived, else `read` once read, else `unread`."""

    id: UUID
    project_id: UUID
    user_id: UUID | None = None
    organization_id: UUID | None = None
    identifier: InboxMessageIdentifier
    external_id: str = Field(description="the identifier's external_id (upstream's name for it)")
    channel: InboxChannel
    content: dict[str, Any]
    data: dict[str, Any]
    tags: list[str]
    priority: int
    source: str | None
    status: InboxStatus
    scheduled_at: datetime
    expires_at: datetime | None
    read_at: datetime | None
    archived_at: datetime | None
    created_at: datetime
    updated_at: datetime


class InboxMessageList(BaseModel):
    results: list[InboxMessage]
    total: int
    limit: int
    offset: int


class InboxCount(BaseModel):
    """What shows now and is not archived: `unread` of it, and `total`."""

    unread: int
    total: int


# -- operations ---------------------------------------------------------------------------------------------


async def post(conn: AsyncConnection[Any], project_id: UUID, kind: Kind, items: list[dict[str, Any]]) -> int:
    """Store a checked batch (`message_items`) in one statement; how many were new."""
    params = {"project_id": project_id, "kind": kind, "items": Jsonb(items)}
    return int(await fetch_scalar(conn, Q["inbox_post"], params) or 0)


async def mark(
    conn: AsyncConnection[Any], project_id: UUID, kind: Kind, what: Mark, refs: Sequence[InboxMessageRef]
) -> int:
    """Mark messages read or archived in one statement; how many changed (a message the target does not
    have, or that has the mark already, is skipped)."""
    items = [{"target": normalize(ref.target), "message_id": str(ref.message_id)} for ref in refs]
    params = {"project_id": project_id, "kind": kind, "what": what, "items": Jsonb(items)}
    return int(await fetch_scalar(conn, Q["inbox_mark"], params) or 0)


@dataclass(frozen=True)
class FeedQuery:
    """Whose feed (the profile with the identifier `source`:`external_id`), on which channel, filtered."""

    source: str
    external_id: str
    channel: InboxChannel
    status: InboxStatus | None = None
    tags: Sequence[str] = ()
    message_source: str | None = None
    priority: int | None = None
    limit: int = DEFAULT_PAGE
    offset: int = 0


def _feed_params(project_id: UUID, kind: Kind, query: FeedQuery) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "kind": kind,
        "source": query.source,
        "external_id": query.external_id,
        "channel": query.channel,
        "status": query.status,
        "tags": list(query.tags) or None,
        "message_source": query.message_source,
        "priority": query.priority,
        "limit": query.limit,
        "offset": query.offset,
    }


async def page(conn: AsyncConnection[Any], project_id: UUID, kind: Kind, query: FeedQuery) -> str | None:
    """The feed as InboxMessageList JSON text; None when no profile of the kind has the identifier."""
    value = await fetch_scalar(conn, Q["inbox_page"], _feed_params(project_id, kind, query))
    return str(value) if value is not None else None


async def count(conn: AsyncConnection[Any], project_id: UUID, kind: Kind, query: FeedQuery) -> InboxCount | None:
    """Unread and total of the feed (status and other filters aside); None when there is no such profile."""
    cursor = await conn.execute(Q["inbox_count"], _feed_params(project_id, kind, query))
    row = await cursor.fetchone()
    return None if row is None else InboxCount(unread=row[0], total=row[1])


async def deliver(
    conn: AsyncConnection[Any],
    project_id: UUID,
    user_id: UUID,
    message_id: UUID,
    title: str,
    body: str = "",
    data: Mapping[str, Any] | None = None,
    *,
    url: str | None = None,
    tags: Sequence[str] = (),
    priority: int = DEFAULT_PRIORITY,
    source: str | None = None,
    expires_at: datetime | None = None,
) -> UUID | None:
    """Put the outbox message `message_id` (rendered: `title`, `body`, `data`, optionally `url`) in the
    user's inbox, on the inbox channel, shown from now. Runs in the caller's transaction (one statement), so
    it commits with the outbox row's status. Idempotent by `message_id`: a repeat stores nothing and returns
    the id stored first. Returns the inbox message's id, or None when the user is not (or no longer) in the
    project: a permanent outcome for this message."""
    if not 1 <= priority <= 5:
        raise ValueError(f"priority: must be 1 to 5, not {priority}")
    content: dict[str, Any] = {"title": title, "body": body}
    if url is not None:
        content["url"] = url
    params = {
        "project_id": project_id,
        "user_id": user_id,
        "message_id": message_id,
        "content": Jsonb(content),
        "data": Jsonb(dict(data or {})),
        "tags": list(dict.fromkeys(tags)),
        "priority": priority,
        "source": source,
        "expires_at": expires_at,
    }
    value = await fetch_scalar(conn, Q["inbox_deliver"], params)
    return value if isinstance(value, UUID) else None
