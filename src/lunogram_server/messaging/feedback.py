"""What providers report after a send: deliveries, bounces and complaints, posted to
`/webhooks/messages/<provider id>/<token>` (the URL the providers API shows for each provider; the token is
signed, so the URL itself is the shared secret). Twilio's requests are also checked against its
`X-Twilio-Signature`, made with the provider's auth token.

Each report is matched to its message by our message id where the provider repeats it (SendGrid custom
argument, Mailgun user variable, Postmark metadata, SES tag, Vonage client-ref) or by the provider's own
message id (Twilio), recorded once, logged, and sent into the event pipeline (`message.delivered`,
`message.bounced`, `message.complained`). A hard bounce or a complaint suppresses the address; a
complaint also leaves the message's subscription group.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

import orjson
from psycopg import AsyncConnection

from lunogram_server.db import load_queries
from lunogram_server.messaging.crypto import Keyring
from lunogram_server.messaging.links import BadLink, Links
from lunogram_server.messaging.providers_service import load
from lunogram_server.messaging.sender import Q as OUTBOX
from lunogram_server.messaging.sender import emit, log_events

Q = load_queries("lunogram_server.messaging", "tracking.sql")
ADMIN = load_queries("lunogram_server.messaging", "admin.sql")
MAX_REPORTS = 1000  # reports in one request; more is a 413


class Refused(ValueError):
    """A report that is not for us (bad token or signature: 404/403) or does not parse (400)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


@dataclass(frozen=True)
class Report:
    kind: str  # delivered, bounced, complained
    message_id: str | None = None  # ours
    provider_message_id: str | None = None
    permanent: bool = True  # a bounce that will not heal (a soft bounce is only logged)
    detail: str | None = None


def feedback_url(links: Links, provider_id: UUID) -> str:
    return f"{links.base_url}/webhooks/messages/{provider_id}/{links.token('feedback', {'p': str(provider_id)})}"


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Refused(400, "body: not JSON") from None


def _sendgrid(body: bytes) -> list[Report]:
    events = _json(body)
    if not isinstance(events, list):
        raise Refused(400, "body: SendGrid posts an array of events")
    kinds = {"delivered": "delivered", "bounce": "bounced", "dropped": "bounced", "spamreport": "complained"}
    out = []
    for event in events:
        if isinstance(event, dict) and event.get("event") in kinds:
            permanent = event.get("event") != "bounce" or event.get("type") != "blocked"
            out.append(
                Report(
                    kinds[event["event"]],
                    _str(event.get("lunogram_message_id")),
                    _str(event.get("sg_message_id")),
                    permanent,
                    _str(event.get("reason")),
                )
            )
    return out


def _mailgun(body: bytes) -> list[Report]:
    payload = _json(body)
    data = payload.get("event-data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        raise Refused(400, "body: Mailgun posts {signature, event-data}")
    event, severity = data.get("event"), data.get("severity")
    variables = _dict(data.get("user-variables"))
    ours = _str(variables.get("lunogram_message_id"))
    if event == "delivered":
        return [Report("delivered", ours)]
    if event == "failed":
        return [Report("bounced", ours, permanent=severity == "permanent", detail=_str(data.get("reason")))]
    if event == "complained":
        return [Report("complained", ours)]
    return []


def _postmark(body: bytes) -> list[Report]:
    payload = _json(body)
    if not isinstance(payload, dict):
        raise Refused(400, "body: Postmark posts one JSON object")
    metadata = _dict(payload.get("Metadata"))
    ours = _str(metadata.get("lunogram_message_id"))
    record = payload.get("RecordType")
    if record == "Delivery":
        return [Report("delivered", ours)]
    if record == "Bounce":
        return [
            Report(
                "bounced", ours, permanent=payload.get("Type") == "HardBounce", detail=_str(payload.get("Description"))
            )
        ]
    if record == "SpamComplaint":
        return [Report("complained", ours)]
    return []


def _ses(body: bytes) -> list[Report]:
    payload = _json(body)
    message = payload.get("Message") if isinstance(payload, dict) else None
    event = _json(message.encode()) if isinstance(message, str) else payload
    if not isinstance(event, dict):
        raise Refused(400, "body: not an SES event")
    kind = event.get("eventType") or event.get("notificationType")
    tags = _dict(_dict(event.get("mail")).get("tags"))
    ours = _str((tags.get("lunogram_message_id") or [None])[0])
    if kind == "Delivery":
        return [Report("delivered", ours)]
    if kind == "Bounce":
        bounce = _dict(event.get("bounce"))
        return [Report("bounced", ours, permanent=bounce.get("bounceType") == "Permanent")]
    if kind == "Complaint":
        return [Report("complained", ours)]
    return []


def _vonage(body: bytes) -> list[Report]:
    payload = _json(body)
    if not isinstance(payload, dict):
        raise Refused(400, "body: Vonage posts one JSON object")
    status = payload.get("status")
    ours = _str(payload.get("client-ref"))
    if status == "delivered":
        return [Report("delivered", ours)]
    if status in ("failed", "rejected"):
        return [Report("bounced", ours, detail=_str(payload.get("err-code")))]
    return []


def _twilio(form: dict[str, str]) -> list[Report]:
    status, sid = form.get("MessageStatus"), form.get("MessageSid")
    if status == "delivered":
        return [Report("delivered", provider_message_id=sid)]
    if status == "undelivered" or status == "failed":
        return [Report("bounced", provider_message_id=sid, detail=form.get("ErrorCode"))]
    return []


def _generic(body: bytes) -> list[Report]:
    """`{"events": [{"message_id", "type": delivered|bounced|complained, "permanent"?, "reason"?}]}`: for
    providers without a parser here (a relay may translate to it)."""
    payload = _json(body)
    events = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(events, list):
        raise Refused(400, 'body: {"events": [...]} expected')
    out = []
    for event in events:
        if isinstance(event, dict) and event.get("type") in ("delivered", "bounced", "complained"):
            out.append(
                Report(
                    event["type"],
                    _str(event.get("message_id")),
                    permanent=event.get("permanent", True) is not False,
                    detail=_str(event.get("reason")),
                )
            )
    return out


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return str(value)[:500] if value is not None else None


def _twilio_signature(url: str, form: dict[str, str], auth_token: str) -> str:
    text = url + "".join(f"{key}{form[key]}" for key in sorted(form))
    return base64.b64encode(hmac.new(auth_token.encode(), text.encode(), hashlib.sha1).digest()).decode()


async def receive(
    conn: AsyncConnection[Any],
    links: Links,
    keyring: Keyring | None,
    provider_id: UUID,
    token: str,
    body: bytes,
    *,
    url: str,
    signature: str | None,
) -> int:
    """Apply a provider's report; how many reports changed something."""
    try:
        if links.read("feedback", token).get("p") != str(provider_id):
            raise Refused(404, "no such webhook")
    except BadLink:
        raise Refused(404, "no such webhook") from None
    row = await (await conn.execute(Q["provider_of"], {"id": provider_id})).fetchone()
    if row is None:
        raise Refused(404, "no such webhook")
    _, project_id, kind, _ = row
    if kind == "twilio":
        form = dict(parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
        settings = await load(conn, keyring, project_id, provider_id)
        token_secret = (settings.secrets if settings else {}).get("auth_token")
        if (
            not token_secret
            or not signature
            or not hmac.compare_digest(signature, _twilio_signature(url, form, str(token_secret)))
        ):
            raise Refused(403, "X-Twilio-Signature: does not match")
        reports = _twilio(form)
    else:
        parser = {"sendgrid": _sendgrid, "mailgun": _mailgun, "postmark": _postmark, "ses": _ses, "vonage": _vonage}
        reports = parser.get(kind, _generic)(body)
    if len(reports) > MAX_REPORTS:
        raise Refused(413, f"body: more than {MAX_REPORTS} reports")
    return await _apply(conn, project_id, provider_id, reports)


async def _apply(conn: AsyncConnection[Any], project_id: UUID, provider_id: UUID, reports: list[Report]) -> int:
    now = datetime.now(UTC)
    changed = 0
    async with conn.transaction():
        for report in reports:
            found = None
            if report.message_id is not None:
                try:
                    ours = UUID(report.message_id)
                except ValueError:
                    ours = None
                if ours is not None:
                    found = await (
                        await conn.execute(Q["by_id_of_provider"], {"provider_id": provider_id, "id": ours})
                    ).fetchone()
            if found is None and report.provider_message_id is not None:
                params = {"provider_id": provider_id, "provider_message_id": report.provider_message_id}
                found = await (await conn.execute(Q["by_provider_message"], params)).fetchone()
            if found is None:
                continue
            message_id, _, channel, address = found
            if report.kind == "bounced" and not report.permanent:
                await log_events(conn, [(message_id, project_id, "soft_bounce", {"reason": report.detail})], now)
                continue
            query = {"delivered": "delivered", "bounced": "bounced", "complained": "complained"}[report.kind]
            if await (await conn.execute(Q[query], {"id": message_id, "at": now})).fetchone() is None:
                continue  # told before
            changed += 1
            await log_events(conn, [(message_id, project_id, report.kind, {"reason": report.detail})], now)
            await emit(conn, [(message_id, report.kind, {"reason": report.detail} if report.detail else {})])
            if report.kind == "complained":
                await conn.execute(Q["complaint_leaves_group"], {"id": message_id})
            if report.kind in ("bounced", "complained") and address:
                reason = "hard_bounce" if report.kind == "bounced" else "complaint"
                await conn.execute(
                    OUTBOX["suppress"],
                    {
                        "projects": [project_id],
                        "channels": [channel],
                        "addresses": [address.lower()],
                        "reasons": [reason],
                        "ids": [message_id],
                    },
                )
    return changed
