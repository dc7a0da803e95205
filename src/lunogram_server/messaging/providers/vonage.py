"""Vonage (Nexmo) SMS API (`POST /sms/json`, a form with api_key and api_secret).

Vonage answers 200 for most failures, with a per-message `status`: 0 sent, 1 throttled and 5 internal
error are worth a retry, 7 (number barred) is a permanent address problem, the rest are failures.
"""

from __future__ import annotations

import ssl

import httpx
from pydantic import BaseModel, ConfigDict, Field

from lunogram_server.messaging.providers.base import (
    Channel,
    HttpProvider,
    HttpUrl,
    Message,
    Outcome,
    ProviderConfig,
    body_text,
    http_outcome,
    json_or_none,
    missing,
)

# the GSM 03.38 basic character set and its extension table: anything else needs type=unicode
_GSM = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€"
)
_RETRY = frozenset({"1", "5"})
_BARRED = "7"


class VonageConfig(ProviderConfig):
    api_key: str = Field(min_length=1, max_length=64)
    sender: str = Field(min_length=1, max_length=15, description="the number or alphanumeric id sent from")
    callback: HttpUrl | None = Field(default=None)
    base_url: HttpUrl = Field(default="https://rest.nexmo.com")


class VonageSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    api_secret: str = Field(min_length=1, max_length=256)


class VonageProvider(HttpProvider):
    kind = "vonage"
    channel: Channel = "sms"

    def __init__(
        self,
        config: VonageConfig,
        secrets: VonageSecrets,
        http: httpx.AsyncClient | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(config.timeout_seconds, http, ssl_context)
        self.config = config
        self.secret = secrets.api_secret
        self.url = config.base_url.rstrip("/") + "/sms/json"

    async def send(self, message: Message) -> Outcome:
        problem = missing(message, "to", "body")
        if problem is not None:
            return problem
        assert message.body is not None
        form = {
            "api_key": self.config.api_key,
            "api_secret": self.secret,
            "from": self.config.sender.removeprefix("+"),
            "to": message.to.removeprefix("+"),
            "text": message.body,
            "client-ref": message.id[:100],
        }
        if not set(message.body) <= _GSM:
            form["type"] = "unicode"
        if self.config.callback:
            form["callback"] = self.config.callback
        response = await self.request("POST", self.url, data=form)
        if isinstance(response, Outcome):
            return response
        answer = json_or_none(response)
        if not response.is_success:
            text = str(answer.get("error-text") or answer.get("title")) if isinstance(answer, dict) else ""
            return http_outcome(response, text or body_text(response))
        messages = answer.get("messages") if isinstance(answer, dict) else None
        if not isinstance(messages, list) or not messages or not isinstance(messages[0], dict):
            return Outcome.failed(f"unexpected answer: {body_text(response)}")
        first = messages[0]
        status = str(first.get("status"))
        if status == "0":
            return Outcome.sent(first.get("message-id"))
        error = f"status {status}: {first.get('error-text')}"
        if status in _RETRY:
            return Outcome.retry(error)
        return Outcome.failed(error, permanent_address_problem=status == _BARRED)
