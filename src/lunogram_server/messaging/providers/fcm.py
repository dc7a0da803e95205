"""Firebase Cloud Messaging HTTP v1 (`POST /v1/projects/{id}/messages:send`).

Authorized with an OAuth2 access token got from the service account: a JWT signed with its private key
(RS256) exchanged at its `token_uri`, kept until a minute before it expires (an hour) and shared by every
send. UNREGISTERED (the app was uninstalled or the token expired) and a token FCM says is not a
registration token are permanent address problems: the device should be dropped.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any, Literal

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lunogram_server.messaging.providers import jwt
from lunogram_server.messaging.providers.base import (
    Channel,
    HttpProvider,
    HttpUrl,
    Message,
    Outcome,
    ProviderConfig,
    ProviderConfigError,
    as_dict,
    body_text,
    http_outcome,
    json_or_none,
)

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"
_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_TOKEN_MARGIN = 60.0  # seconds before its expiry an access token is replaced
_GONE = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})


class ServiceAccount(BaseModel):
    """The fields of a Google service account key file (JSON) that are used; the others are dropped."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    client_email: str = Field(min_length=3, max_length=320)
    private_key: str = Field(min_length=100, max_length=8192)
    private_key_id: str | None = Field(default=None, max_length=200)
    token_uri: HttpUrl | None = Field(default=None)
    project_id: str | None = Field(default=None, max_length=100)


class FcmConfig(ProviderConfig):
    project_id: str | None = Field(
        default=None, pattern=r"^[a-z0-9-]{1,100}$", description="default: the service account's project_id"
    )
    base_url: HttpUrl = Field(default="https://fcm.googleapis.com")
    token_url: HttpUrl | None = Field(default=None, description="default: the service account's token_uri")
    android_priority: Literal["high", "normal"] = "high"
    ttl_seconds: int | None = Field(default=None, ge=0, le=2_419_200)


class FcmSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    service_account: ServiceAccount = Field(description="the service account key file: a JSON object or its text")

    @field_validator("service_account", mode="before")
    @classmethod
    def _parse_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                raise ValueError("must be the service account's JSON key file") from None
        return value


class FcmProvider(HttpProvider):
    kind = "fcm"
    channel: Channel = "push"
    http2 = True

    def __init__(
        self,
        config: FcmConfig,
        secrets: FcmSecrets,
        http: httpx.AsyncClient | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        account = secrets.service_account
        project = config.project_id or account.project_id
        if not project:
            raise ProviderConfigError("config.project_id", "is required (the service account names no project_id)")
        try:
            self.key = jwt.load_private_key(account.private_key, "secrets.service_account.private_key")
        except ValueError as exc:
            field, _, rule = str(exc).partition(": ")
            raise ProviderConfigError(field, rule) from None
        super().__init__(config.timeout_seconds, http, ssl_context)
        self.config = config
        self.account = account
        self.url = f"{config.base_url.rstrip('/')}/v1/projects/{project}/messages:send"
        self.token_url = config.token_url or account.token_uri or DEFAULT_TOKEN_URL
        self._token: tuple[float, str] | None = None
        self._token_lock = asyncio.Lock()

    async def access_token(self) -> str | Outcome:
        async with self._token_lock:
            now = time.monotonic()
            if self._token is not None and self._token[0] > now:
                return self._token[1]
            issued = int(time.time())
            header = {"typ": "JWT", **({"kid": self.account.private_key_id} if self.account.private_key_id else {})}
            claims = {
                "iss": self.account.client_email,
                "scope": SCOPE,
                "aud": self.token_url,
                "iat": issued,
                "exp": issued + 3600,
            }
            assertion = jwt.sign(header, claims, self.key)
            response = await self.request("POST", self.token_url, data={"grant_type": _GRANT, "assertion": assertion})
            if isinstance(response, Outcome):
                return response
            answer = json_or_none(response)
            answer = answer if isinstance(answer, dict) else {}
            token = answer.get("access_token")
            if not response.is_success or not isinstance(token, str):
                text = str(answer.get("error_description") or answer.get("error") or body_text(response))
                if not response.is_success:
                    return http_outcome(response, f"access token: {text}")
                return Outcome.failed(f"access token: {text}")
            lifetime = float(answer.get("expires_in") or 3600)
            self._token = (now + max(lifetime - _TOKEN_MARGIN, 1.0), token)
            return token

    def body(self, message: Message, token: str) -> dict[str, Any]:
        data = {str(k): v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in message.data.items()}
        data["lunogram_message_id"] = message.id
        if message.url:
            data["url"] = message.url
        fcm: dict[str, Any] = {"token": token, "data": data}
        notification = {k: v for k, v in (("title", message.title), ("body", message.body)) if v}
        if notification:
            fcm["notification"] = notification
        android: dict[str, Any] = {"priority": self.config.android_priority.upper()}
        if self.config.ttl_seconds is not None:
            android["ttl"] = f"{self.config.ttl_seconds}s"
        fcm["android"] = android
        if message.url and message.url.startswith("https://"):
            fcm["webpush"] = {"fcm_options": {"link": message.url}}
        return {"message": fcm}

    async def send(self, message: Message) -> Outcome:
        token = (message.device.token if message.device else None) or message.to
        if not token:
            return Outcome.failed("message.to: the device's FCM registration token is required")
        access = await self.access_token()
        if isinstance(access, Outcome):
            return access
        response = await self.request(
            "POST", self.url, json=self.body(message, token), headers={"Authorization": f"Bearer {access}"}
        )
        if isinstance(response, Outcome):
            return response
        answer = json_or_none(response)
        answer = answer if isinstance(answer, dict) else {}
        if response.is_success:
            return Outcome.sent(answer.get("name"))
        error = as_dict(answer.get("error"))
        status = str(error.get("status") or "")
        details = error.get("details")
        details = details if isinstance(details, list) else []
        codes = [str(d["errorCode"]) for d in details if isinstance(d, dict) and d.get("errorCode")]
        text = f"{'/'.join([status, *codes]) if status or codes else ''} {error.get('message') or ''}".strip()
        if response.status_code == 401:  # the access token is no longer taken: a new one next time
            self._token = None
            return Outcome.retry(f"HTTP 401: {text or 'access token refused'}")
        gone = any(code in _GONE for code in codes) or (
            status == "INVALID_ARGUMENT" and "registration token" in str(error.get("message", "")).lower()
        )
        return http_outcome(response, text or body_text(response), permanent_address_problem=gone)
