"""What recipients do with a message, through its signed links: opens (a pixel), clicks (a redirect),
unsubscribes (a link, and RFC 8058's one-click POST) and the preference page. Each is recorded on the
message, logged in its events, and sent into the event pipeline as `message.opened`, `message.clicked`,
`message.unsubscribed`, so journeys and lists react. No key is needed: the link's signature is the proof.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from lunogram_server.db import load_queries
from lunogram_server.messaging.links import BadLink, Links
from lunogram_server.messaging.sender import emit, log_events

Q = load_queries("lunogram_server.messaging", "tracking.sql")
ADMIN = load_queries("lunogram_server.messaging", "admin.sql")


def _uuid(value: Any) -> UUID:
    try:
        return UUID(str(value))
    except ValueError:
        raise BadLink("link: malformed") from None


async def opened(conn: AsyncConnection[Any], links: Links, token: str) -> None:
    message_id = _uuid(links.read("open", token).get("m"))
    now = datetime.now(UTC)
    async with conn.transaction():
        row = await (await conn.execute(Q["opened"], {"id": message_id, "at": now})).fetchone()
        if row is not None:  # the first open; later ones are not news
            await log_events(conn, [(message_id, row[0], "opened", None)], now)
            await emit(conn, [(message_id, "opened", {})])


async def clicked(conn: AsyncConnection[Any], links: Links, token: str) -> str:
    """Records the click; the URL to send the reader on to."""
    payload = links.read("click", token)
    message_id, url = _uuid(payload.get("m")), payload.get("l")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise BadLink("link: malformed")
    now = datetime.now(UTC)
    async with conn.transaction():
        row = await (await conn.execute(Q["clicked"], {"id": message_id, "at": now})).fetchone()
        if row is not None:
            await log_events(conn, [(message_id, row[0], "clicked", {"url": url})], now)
            await emit(conn, [(message_id, "clicked", {"url": url})])
    return url


async def unsubscribe(conn: AsyncConnection[Any], links: Links, token: str, source: str) -> dict[str, Any]:
    """The user leaves the message's group; {project_id, user_id, group_id, changed}."""
    payload = links.read("unsubscribe", token)
    project_id, user_id, message_id = _uuid(payload.get("p")), _uuid(payload.get("u")), _uuid(payload.get("m"))
    group_id = None if payload.get("g") is None else _uuid(payload.get("g"))
    now = datetime.now(UTC)
    changed = False
    async with conn.transaction():
        if group_id is not None:
            params = {
                "project_id": project_id,
                "user_id": user_id,
                "group_id": group_id,
                "subscribed": False,
                "source": source,
            }
            changed = await (await conn.execute(ADMIN["set_subscription"], params)).fetchone() is not None
        row = await (
            await conn.execute(Q["unsubscribed"], {"id": message_id, "project_id": project_id, "at": now})
        ).fetchone()
        if row is not None and changed:
            await log_events(conn, [(message_id, project_id, "unsubscribed", {"source": source})], now)
            await emit(conn, [(message_id, "unsubscribed", {"group_id": None if group_id is None else str(group_id)})])
    return {"project_id": project_id, "user_id": user_id, "group_id": group_id, "changed": changed}


async def preferences(conn: AsyncConnection[Any], links: Links, token: str) -> tuple[UUID, UUID, list[dict[str, Any]]]:
    """(project, user, the user's groups with their state) for the preference page."""
    payload = links.read("preferences", token)
    project_id, user_id = _uuid(payload.get("p")), _uuid(payload.get("u"))
    cursor = await conn.execute(ADMIN["user_subscriptions"], {"project_id": project_id, "user_id": user_id})
    groups = [
        {"id": gid, "name": name, "channel": channel, "kind": kind, "subscribed": subscribed}
        for gid, name, channel, kind, subscribed, _, _ in await cursor.fetchall()
    ]
    return project_id, user_id, groups


async def set_preferences(
    conn: AsyncConnection[Any], links: Links, token: str, subscribed: set[UUID]
) -> list[dict[str, Any]]:
    """The preference page's form: every marketing group the user is in `subscribed` or leaves."""
    project_id, user_id, groups = await preferences(conn, links, token)
    async with conn.transaction():
        for group in groups:
            if group["kind"] != "marketing":
                continue
            wanted = group["id"] in subscribed
            if wanted != group["subscribed"]:
                params = {
                    "project_id": project_id,
                    "user_id": user_id,
                    "group_id": group["id"],
                    "subscribed": wanted,
                    "source": "preferences",
                }
                await conn.execute(ADMIN["set_subscription"], params)
    return (await preferences(conn, links, token))[2]
