"""WhatsApp Cloud API (`POST /{version}/{phone_number_id}/messages`), bearer access token.

A message's `body` goes as a text message; a message object in `json_body` (e.g. `{"type": "template",
"template": {...}}`, needed outside the 24-hour customer service window) goes instead. Graph API error
codes for rate limits are retried; 131026 (the number cannot receive WhatsApp messages) is a permanent
address problem.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from lunogram_server.messaging.providers.base import (
    Channel,
    HttpProvider,
    HttpUrl,
    Message,
    Outcome,
    ProviderConfig,
    as_dict,
    body_text,
    http_outcome,
    json_or_none,
)

_RATE_LIMITED = frozenset({4, 80007, 130429, 131048, 131056})
_UNDELIVERABLE = 131026


class WhatsappConfig(ProviderConfig):
    phone_number_id: str = Field(pattern=r"^\d{1,32}$")
    api_version: str = Field(default="v21.0", pattern=r"^v\d+\.\d+$")
    base_url: HttpUrl = Field(default="https://graph.facebook.com")


class WhatsappSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    access_token: str = Field(min_length=1, max_length=1024)


class WhatsappProvider(HttpProvider):
    kind = "whatsapp"
    channel: Channel = "whatsapp"

    def __init__(
        self,
        config: WhatsappConfig,
        secrets: WhatsappSecrets,
        http: httpx.AsyncClient | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(config.timeout_seconds, http, ssl_context)
        self.url = f"{config.base_url.rstrip('/')}/{config.api_version}/{config.phone_number_id}/messages"
        self.auth = {"Authorization": f"Bearer {secrets.access_token}"}

    @staticmethod
    def body(message: Message) -> dict[str, Any] | Outcome:
        if not message.to:
            return Outcome.failed("message.to: is required for whatsapp")
        head = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": message.to.removeprefix("+")}
        if isinstance(message.json_body, dict):
            return {**message.json_body, **head}
        if not message.body:
            return Outcome.failed("message.body: is required for whatsapp (or a message object in json_body)")
        return {**head, "type": "text", "text": {"body": message.body, "preview_url": False}}

    async def send(self, message: Message) -> Outcome:
        body = self.body(message)
        if isinstance(body, Outcome):
            return body
        response = await self.request("POST", self.url, json=body, headers=self.auth)
        if isinstance(response, Outcome):
            return response
        answer = json_or_none(response)
        answer = answer if isinstance(answer, dict) else {}
        if response.is_success:
            messages = answer.get("messages")
            first = messages[0] if isinstance(messages, list) and messages else {}
            return Outcome.sent(first.get("id") if isinstance(first, dict) else None)
        error = as_dict(answer.get("error"))
        code = error.get("code")
        text = f"{code}: {error.get('message')}" if code is not None else body_text(response)
        if code in _RATE_LIMITED and not response.status_code >= 500:
            return Outcome.retry(f"HTTP {response.status_code}: {text}")
        return http_outcome(response, text, permanent_address_problem=code == _UNDELIVERABLE)
