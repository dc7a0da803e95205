"""Twilio's Messages API (`POST /2010-04-01/Accounts/{sid}/Messages.json`, a form), basic auth sid:token.

Twilio error codes that say the number itself cannot take messages (21211 invalid number, 21610 the
recipient replied STOP, 21614 not a mobile number) are permanent address problems.
"""

from __future__ import annotations

import ssl

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

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

E164 = r"^\+[1-9]\d{1,14}$"
_BAD_NUMBER = frozenset({21211, 21610, 21614})


class TwilioConfig(ProviderConfig):
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    from_number: str | None = Field(default=None, pattern=E164, description="E.164 sender number")
    messaging_service_sid: str | None = Field(default=None, pattern=r"^MG[0-9a-fA-F]{32}$")
    status_callback: HttpUrl | None = Field(default=None)
    base_url: HttpUrl = Field(default="https://api.twilio.com")

    @model_validator(mode="after")
    def _one_sender(self) -> TwilioConfig:
        if not self.from_number and not self.messaging_service_sid:
            raise ValueError("from_number or messaging_service_sid is required")
        return self


class TwilioSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    auth_token: str = Field(min_length=1, max_length=256)


class TwilioProvider(HttpProvider):
    kind = "twilio"
    channel: Channel = "sms"

    def __init__(
        self,
        config: TwilioConfig,
        secrets: TwilioSecrets,
        http: httpx.AsyncClient | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(config.timeout_seconds, http, ssl_context)
        self.config = config
        self.url = f"{config.base_url.rstrip('/')}/2010-04-01/Accounts/{config.account_sid}/Messages.json"
        self.auth = httpx.BasicAuth(config.account_sid, secrets.auth_token)

    async def send(self, message: Message) -> Outcome:
        problem = missing(message, "to", "body")
        if problem is not None:
            return problem
        assert message.body is not None
        form = {"To": message.to, "Body": message.body}
        if self.config.messaging_service_sid:
            form["MessagingServiceSid"] = self.config.messaging_service_sid
        else:
            assert self.config.from_number is not None
            form["From"] = self.config.from_number
        if self.config.status_callback:
            form["StatusCallback"] = self.config.status_callback
        response = await self.request("POST", self.url, data=form, auth=self.auth)
        if isinstance(response, Outcome):
            return response
        answer = json_or_none(response)
        answer = answer if isinstance(answer, dict) else {}
        if response.is_success:
            return Outcome.sent(answer.get("sid"))
        code = answer.get("code")
        text = f"{code}: {answer.get('message')}" if code is not None else body_text(response)
        return http_outcome(response, text, permanent_address_problem=code in _BAD_NUMBER)
