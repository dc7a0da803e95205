"""The webhook channel: a JSON request to a URL (the message's, else the provider's `url`).

The URL is checked before each call (netcheck.py): public addresses only, unless the operator allowed the
network. Every call carries `Idempotency-Key: <message id>`; with a `signing_secret`, also
`Lunogram-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` so the receiver can tell the
call is genuine and recent. At most 64 KiB of the answer is read.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import ssl
import time
from collections.abc import Sequence

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lunogram_server.messaging.providers.base import (
    Channel,
    HttpProvider,
    HttpUrl,
    Message,
    Outcome,
    ProviderConfig,
    http_outcome,
    network_outcome,
)
from lunogram_server.netcheck import Network, Refused, resolve

MAX_RESPONSE_BYTES = 64 * 1024
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")  # an HTTP token
_RESERVED = frozenset({"host", "content-length", "transfer-encoding", "connection", "idempotency-key"})


def _check_headers(value: dict[str, str]) -> dict[str, str]:
    if len(value) > 50:
        raise ValueError("at most 50 headers")
    for name, text in value.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() in _RESERVED:
            raise ValueError(f"{name} is set by the server")
        if len(text) > 4096 or "\r" in text or "\n" in text:
            raise ValueError(f"{name}: at most 4096 characters on one line")
    return value


class WebhookConfig(ProviderConfig):
    url: HttpUrl | None = Field(default=None, description="used when a message has none")
    headers: dict[str, str] = Field(default_factory=dict, description="sent with every call")

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_headers(value)


class WebhookSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    headers: dict[str, str] = Field(default_factory=dict, description="sent with every call, kept secret")
    signing_secret: str | None = Field(default=None, min_length=16, max_length=256)

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_headers(value)


class WebhookProvider(HttpProvider):
    kind = "webhook"
    channel: Channel = "webhook"

    def __init__(
        self,
        config: WebhookConfig,
        secrets: WebhookSecrets,
        http: httpx.AsyncClient | None = None,
        ssl_context: ssl.SSLContext | None = None,
        allowed_networks: Sequence[Network] = (),
    ) -> None:
        super().__init__(config.timeout_seconds, http, ssl_context)
        self.config = config
        self.secrets = secrets
        self.allowed = list(allowed_networks)

    def signature(self, body: bytes, now: int | None = None) -> str:
        assert self.secrets.signing_secret is not None
        stamp = int(time.time()) if now is None else now
        mac = hmac.new(self.secrets.signing_secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
        return f"t={stamp},v1={mac.hexdigest()}"

    async def send(self, message: Message) -> Outcome:
        url = message.url or self.config.url
        if not url:
            return Outcome.failed("message.url: is required (the provider's config has no url either)")
        method = message.method.upper()
        if method not in METHODS:
            return Outcome.failed(f"message.method: must be one of {', '.join(sorted(METHODS))}")
        try:
            extra = _check_headers(dict(message.headers))
        except ValueError as exc:
            return Outcome.failed(f"message.headers: {exc}")
        try:
            target = await resolve(url, self.allowed, field="message.url")
        except Refused as exc:
            return Outcome.failed(str(exc))
        except OSError as exc:
            return Outcome.retry(str(exc))
        content = None if message.json_body is None else orjson.dumps(message.json_body)
        headers = {**self.config.headers, **self.secrets.headers, **extra}
        headers.update({"Host": target.host_header, "Idempotency-Key": message.id})
        if content is not None:
            headers.setdefault("Content-Type", "application/json")
        if self.secrets.signing_secret:
            headers["Lunogram-Signature"] = self.signature(content or b"")
        try:
            async with self.http.stream(
                method,
                target.url,
                content=content,
                headers=headers,
                timeout=self.timeout,
                extensions={"sni_hostname": target.server_name},
            ) as response:
                kept = b""
                async for chunk in response.aiter_bytes():
                    kept += chunk[: MAX_RESPONSE_BYTES - len(kept)]
                    if len(kept) >= MAX_RESPONSE_BYTES:
                        break
        except httpx.InvalidURL as exc:
            return Outcome.failed(f"message.url: {exc}")
        except httpx.HTTPError as exc:
            return network_outcome(exc)
        text = " ".join(kept[:500].decode("utf-8", "replace").split())
        return http_outcome(response, text)
