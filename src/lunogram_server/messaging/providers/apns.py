"""Apple Push Notification service over HTTP/2 (httpx with h2), token-based authentication.

The provider token is an ES256 JWT (`iss` team id, `kid` key id) signed with the .p8 key; Apple refuses
tokens older than an hour and new ones more often than every 20 minutes, so one is reused for 50. The
apns-id is the message id (as a UUID), so Apple and the app see the same id. APNs closes connections it
considers idle: a request that finds its connection closed by the server goes once more on a new one.
"""

from __future__ import annotations

import re
import ssl
import time
import uuid
from typing import Any, Literal

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field

from lunogram_server.messaging.providers import jwt
from lunogram_server.messaging.providers.base import (
    Channel,
    HttpProvider,
    HttpUrl,
    Message,
    Outcome,
    ProviderConfig,
    ProviderConfigError,
    http_outcome,
    json_or_none,
    network_outcome,
)

HOSTS = {"production": "https://api.push.apple.com", "sandbox": "https://api.sandbox.push.apple.com"}
MAX_PAYLOAD_BYTES = 4096
TOKEN_SECONDS = 50 * 60
_TOKEN = re.compile(r"^[0-9A-Fa-f]{16,400}$")
_BAD_TOKEN = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered", "ExpiredToken"})
_CLOSED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class ApnsConfig(ProviderConfig):
    team_id: str = Field(pattern=r"^[A-Z0-9]{10}$")
    key_id: str = Field(pattern=r"^[A-Z0-9]{10}$")
    topic: str = Field(min_length=1, max_length=255, description="the app's bundle id")
    environment: Literal["production", "sandbox"] = "production"
    base_url: HttpUrl | None = Field(default=None, description="default by environment")
    push_type: Literal["alert", "background"] = "alert"
    expiration_seconds: int | None = Field(default=None, ge=0, le=2_419_200, description="unset: APNs tries once")
    sound: str | None = Field(default="default", max_length=255)


class ApnsSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    private_key: str = Field(min_length=100, max_length=4096, description="the .p8 key file's text")


def apns_id(message_id: str) -> str:
    """The message id when it is a UUID, else a UUID derived from it (APNs wants the canonical form)."""
    try:
        return str(uuid.UUID(message_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"lunogram:{message_id}"))


class ApnsProvider(HttpProvider):
    kind = "apns"
    channel: Channel = "push"
    http2 = True

    def __init__(
        self,
        config: ApnsConfig,
        secrets: ApnsSecrets,
        http: httpx.AsyncClient | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        try:
            key = jwt.load_private_key(secrets.private_key, "secrets.private_key")
        except ValueError as exc:
            field, _, rule = str(exc).partition(": ")
            raise ProviderConfigError(field, rule) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ProviderConfigError("secrets.private_key", "must be the P-256 (.p8) key Apple gave")
        super().__init__(config.timeout_seconds, http, ssl_context)
        self.config = config
        self.key = key
        self.base = (config.base_url or HOSTS[config.environment]).rstrip("/")
        self._token: tuple[float, str] | None = None

    def provider_token(self) -> str:
        now = time.monotonic()
        if self._token is None or now - self._token[0] > TOKEN_SECONDS:
            token = jwt.sign(
                {"kid": self.config.key_id}, {"iss": self.config.team_id, "iat": int(time.time())}, self.key
            )
            self._token = (now, token)
        return self._token[1]

    def payload(self, message: Message) -> dict[str, Any]:
        custom = {k: v for k, v in message.data.items() if k != "aps"}
        if message.url:
            custom["url"] = message.url
        custom["lunogram_message_id"] = message.id
        if self.config.push_type == "background":
            return {"aps": {"content-available": 1}, **custom}
        alert = {k: v for k, v in (("title", message.title), ("body", message.body)) if v}
        aps: dict[str, Any] = {"alert": alert}
        if self.config.sound:
            aps["sound"] = self.config.sound
        return {"aps": aps, **custom}

    async def send(self, message: Message) -> Outcome:
        token = (message.device.token if message.device else None) or message.to
        if not token or not _TOKEN.match(token):
            return Outcome.failed("message.to: not an APNs device token (hex)", permanent_address_problem=True)
        body = orjson.dumps(self.payload(message))
        if len(body) > MAX_PAYLOAD_BYTES:
            return Outcome.failed(f"message: the APNs payload is {len(body)} bytes, more than {MAX_PAYLOAD_BYTES}")
        the_id = apns_id(message.id)
        headers = {
            "authorization": f"bearer {self.provider_token()}",
            "apns-topic": self.config.topic,
            "apns-push-type": self.config.push_type,
            "apns-id": the_id,
            "apns-priority": "10" if self.config.push_type == "alert" else "5",
            "content-type": "application/json",
        }
        if self.config.expiration_seconds is not None:
            headers["apns-expiration"] = str(int(time.time()) + self.config.expiration_seconds)
        url = f"{self.base}/3/device/{token}"
        response: httpx.Response | None = None
        for attempt in (1, 2):
            try:
                response = await self.http.post(url, content=body, headers=headers, timeout=self.timeout)
                break
            except _CLOSED as exc:
                if attempt == 2:
                    return network_outcome(exc)
            except httpx.HTTPError as exc:
                return network_outcome(exc)
        assert response is not None
        if response.is_success:
            return Outcome.sent(response.headers.get("apns-id") or the_id)
        answer = json_or_none(response)
        reason = str(answer.get("reason")) if isinstance(answer, dict) and answer.get("reason") else ""
        if reason == "ExpiredProviderToken":
            self._token = None
            return Outcome.retry(f"HTTP {response.status_code}: {reason}")
        gone = response.status_code == 410 or reason in _BAD_TOKEN
        return http_outcome(response, reason or response.reason_phrase, permanent_address_problem=gone)
