"""Web Push (RFC 8030) with VAPID (RFC 8292): the payload encrypted for the subscription (RFC 8291,
aes128gcm, http-ece) and POSTed to its endpoint with TTL and Urgency headers.

The endpoint comes from a browser, so it is checked like a webhook URL (netcheck.py): https to a public
address, or any URL in a network the operator allowed. The VAPID token is signed once per push service
(its origin) and reused for 12 hours (tokens are valid for 24).
"""

from __future__ import annotations

import binascii
import os
import ssl
import time
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import http_ece
import httpx
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02, VapidException
from pydantic import BaseModel, ConfigDict, Field

from lunogram_server.messaging.providers.base import (
    Channel,
    HttpProvider,
    Message,
    Outcome,
    ProviderConfig,
    ProviderConfigError,
    body_text,
    http_outcome,
)
from lunogram_server.messaging.providers.jwt import b64url, b64url_decode
from lunogram_server.netcheck import Network, Refused, resolve

# push services take bodies of at most 4096 bytes: the aes128gcm header (16 salt, 4 record size, 1 + 65 key
# id) and one record holding the payload, its padding delimiter (1) and GCM tag (16)
MAX_PAYLOAD_BYTES = 4096 - 86 - 17
_TOKEN_SECONDS = 12 * 3600
_GONE = frozenset({404, 410})


class WebpushConfig(ProviderConfig):
    subject: str = Field(
        pattern=r"^(mailto:|https://)\S+$", max_length=500, description="contact for push services: mailto: or https:"
    )
    public_key: str = Field(pattern=r"^[A-Za-z0-9_-]{86,88}={0,2}$", description="VAPID public key, base64url")
    ttl_seconds: int = Field(default=86_400, ge=0, le=2_419_200, description="how long a push service keeps it")
    urgency: Literal["very-low", "low", "normal", "high"] = "normal"


class WebpushSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    private_key: str = Field(min_length=40, max_length=4096, description="VAPID private key: base64url or PEM")


def generate_vapid_keys() -> tuple[str, str]:
    """A new VAPID key pair: (public key base64url, private key base64url of the raw 32 bytes)."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return b64url(public), b64url(key.private_numbers().private_value.to_bytes(32, "big"))


def load_vapid(config: WebpushConfig, secrets: WebpushSecrets) -> Vapid02:
    """The signer; ProviderConfigError when the private key is unreadable or not the public key's pair."""
    text = secrets.private_key.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError("not an EC key")
            vapid = Vapid02(key)
        else:
            vapid = Vapid02.from_string(text)
    except (ValueError, TypeError, binascii.Error):
        raise ProviderConfigError("secrets.private_key", "is not a VAPID (P-256) private key") from None
    public = vapid.public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    if b64url(public) != config.public_key.rstrip("="):
        raise ProviderConfigError("config.public_key", "is not the public key of secrets.private_key")
    try:
        vapid.sign({"aud": "https://push.example", "sub": config.subject})
    except VapidException:
        raise ProviderConfigError("config.subject", "must be a mailto: address or an https: URL") from None
    return vapid


class WebpushProvider(HttpProvider):
    kind = "webpush"
    channel: Channel = "push"

    def __init__(
        self,
        config: WebpushConfig,
        secrets: WebpushSecrets,
        http: httpx.AsyncClient | None = None,
        ssl_context: ssl.SSLContext | None = None,
        allowed_networks: Sequence[Network] = (),
    ) -> None:
        super().__init__(config.timeout_seconds, http, ssl_context)
        self.config = config
        self.vapid = load_vapid(config, secrets)
        self.allowed = list(allowed_networks)
        self._tokens: dict[str, tuple[float, str]] = {}

    def payload(self, message: Message) -> bytes:
        """What the service worker's `push` event gets as `event.data.json()`."""
        body: dict[str, Any] = {"id": message.id, "title": message.title, "body": message.body}
        if message.url:
            body["url"] = message.url
        if message.data:
            body["data"] = dict(message.data)
        return orjson.dumps(body)

    def authorization(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        cached = self._tokens.get(audience)
        if cached is not None and cached[0] > now:
            return cached[1]
        claims = {"aud": audience, "exp": int(now) + 2 * _TOKEN_SECONDS, "sub": self.config.subject}
        header = str(self.vapid.sign(claims)["Authorization"])
        if len(self._tokens) > 1000:
            self._tokens.clear()
        self._tokens[audience] = (now + _TOKEN_SECONDS, header)
        return header

    async def send(self, message: Message) -> Outcome:
        device = message.device
        if device is None or not device.endpoint or device.keys is None:
            return Outcome.failed("message.device: web push needs the subscription's endpoint and keys")
        payload = self.payload(message)
        if len(payload) > MAX_PAYLOAD_BYTES:
            return Outcome.failed(f"message: the push payload is {len(payload)} bytes, more than {MAX_PAYLOAD_BYTES}")
        try:
            receiver = b64url_decode(device.keys.p256dh)
            auth_secret = b64url_decode(device.keys.auth)
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), receiver)
        except (ValueError, binascii.Error):
            return Outcome.failed(
                "message.device.keys: not a valid Web Push subscription", permanent_address_problem=True
            )
        try:
            target = await resolve(device.endpoint, self.allowed, field="message.device.endpoint", https_only=True)
        except Refused as exc:
            return Outcome.failed(str(exc), permanent_address_problem=True)
        except OSError as exc:
            return Outcome.retry(str(exc))
        body = http_ece.encrypt(
            payload,
            salt=os.urandom(16),
            private_key=ec.generate_private_key(ec.SECP256R1()),
            dh=receiver,
            auth_secret=auth_secret,
            version="aes128gcm",
        )
        headers = {
            "Host": target.host_header,
            "Authorization": self.authorization(device.endpoint),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self.config.ttl_seconds),
            "Urgency": self.config.urgency,
        }
        response = await self.request(
            "POST", target.url, content=body, headers=headers, extensions={"sni_hostname": target.server_name}
        )
        if isinstance(response, Outcome):
            return response
        if response.is_success:
            return Outcome.sent(response.headers.get("location"))
        return http_outcome(response, body_text(response), permanent_address_problem=response.status_code in _GONE)
