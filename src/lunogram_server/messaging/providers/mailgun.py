"""Mailgun's Messages API (`POST /v3/{domain}/messages`, a form), basic auth `api:<key>`.

Headers go as `h:<Name>` fields and the message id as the user variable `v:lunogram_message_id`, which
Mailgun repeats in its webhooks. EU domains use `base_url` https://api.eu.mailgun.net.
"""

from __future__ import annotations

import ssl

import httpx
from pydantic import BaseModel, ConfigDict, Field

from lunogram_server.messaging.providers.base import (
    Channel,
    EmailConfig,
    HttpProvider,
    HttpUrl,
    Message,
    Outcome,
    body_text,
    http_outcome,
    json_or_none,
)
from lunogram_server.messaging.providers.mail import prepare


class MailgunConfig(EmailConfig):
    domain: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.-]+$")
    base_url: HttpUrl = Field(default="https://api.mailgun.net")


class MailgunSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: str = Field(min_length=1, max_length=512)


class MailgunProvider(HttpProvider):
    kind = "mailgun"
    channel: Channel = "email"

    def __init__(
        self,
        config: MailgunConfig,
        secrets: MailgunSecrets,
        http: httpx.AsyncClient | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(config.timeout_seconds, http, ssl_context)
        self.config = config
        self.url = f"{config.base_url.rstrip('/')}/v3/{config.domain}/messages"
        self.auth = httpx.BasicAuth("api", secrets.api_key)

    def form(self, message: Message) -> list[tuple[str, str]] | Outcome:
        mail = prepare(message, self.config)
        if isinstance(mail, Outcome):
            return mail
        form = [("from", mail.sender), ("to", mail.to), ("subject", mail.subject)]
        if mail.text is not None:
            form.append(("text", mail.text))
        if mail.html is not None:
            form.append(("html", mail.html))
        if mail.reply_to:
            form.append(("h:Reply-To", mail.reply_to))
        form += [(f"h:{name}", value) for name, value in mail.headers.items()]
        form.append(("v:lunogram_message_id", message.id))
        return form

    async def send(self, message: Message) -> Outcome:
        form = self.form(message)
        if isinstance(form, Outcome):
            return form
        response = await self.request("POST", self.url, data=dict(form), auth=self.auth)
        if isinstance(response, Outcome):
            return response
        answer = json_or_none(response)
        if response.is_success:
            return Outcome.sent(answer.get("id") if isinstance(answer, dict) else None)
        text = str(answer.get("message")) if isinstance(answer, dict) and answer.get("message") else body_text(response)
        return http_outcome(response, text)
