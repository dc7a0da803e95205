"""Signed links in messages: unsubscribe (one click, RFC 8058), the preference page, open and click tracking.

A link carries what it is about (project, user, group, message, a clicked URL) in the clear and an HMAC of
it, so the server needs no lookup table to trust it and a changed link is refused. The key is one per
installation (table link_signing_key, made at migrate). Links do not expire: an unsubscribe link in a
years-old email must still work.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
from psycopg import AsyncConnection

MAC_BYTES = 16  # 128 bits of HMAC-SHA256: forging a link takes 2^128 tries


class BadLink(ValueError):
    """A link whose signature does not match, or that does not parse: refused (404)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Links:
    key: bytes
    base_url: str  # the public root, e.g. https://lunogram.example.com (no trailing slash)

    @classmethod
    async def load(cls, conn: AsyncConnection[Any], base_url: str) -> Links:
        row = await (await conn.execute("SELECT key FROM link_signing_key")).fetchone()
        assert row is not None  # made by migration 0032
        return cls(bytes(row[0]), base_url.rstrip("/"))

    def token(self, purpose: str, payload: dict[str, Any]) -> str:
        body = orjson.dumps(payload)
        mac = hmac.digest(self.key, purpose.encode() + b"\x00" + body, "sha256")[:MAC_BYTES]  # one call into C
        return f"{_b64(body)}.{_b64(mac)}"

    def read(self, purpose: str, token: str) -> dict[str, Any]:
        try:
            body_text, mac_text = token.split(".", 1)
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (ValueError, TypeError):
            raise BadLink("link: malformed") from None
        expected = hmac.new(self.key, purpose.encode() + b"\x00" + body, hashlib.sha256).digest()[:MAC_BYTES]
        if not hmac.compare_digest(mac, expected):
            raise BadLink("link: signature does not match")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BadLink("link: malformed") from None
        if not isinstance(payload, dict):
            raise BadLink("link: malformed")
        return payload

    # -- the links a message carries ------------------------------------------------------------------------

    def unsubscribe_url(self, project_id: UUID, user_id: UUID, group_id: UUID | None, message_id: UUID) -> str:
        payload = {
            "p": str(project_id),
            "u": str(user_id),
            "g": None if group_id is None else str(group_id),
            "m": str(message_id),
        }
        return f"{self.base_url}/unsubscribe/{self.token('unsubscribe', payload)}"

    def preferences_url(self, project_id: UUID, user_id: UUID) -> str:
        return f"{self.base_url}/preferences/{self.token('preferences', {'p': str(project_id), 'u': str(user_id)})}"

    def open_url(self, message_id: UUID) -> str:
        return f"{self.base_url}/t/o/{self.token('open', {'m': str(message_id)})}"

    def click_url(self, message_id: UUID, url: str) -> str:
        return f"{self.base_url}/t/c/{self.token('click', {'m': str(message_id), 'l': url})}"
