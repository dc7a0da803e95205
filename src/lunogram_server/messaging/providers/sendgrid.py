"""SendGrid's v3 Mail Send API (`POST /v3/mail/send`), bearer API key.

The message id goes along as the custom argument `lunogram_message_id`, which SendGrid repeats in its
event webhook; SendGrid answers 202 with the X-Message-Id of the message it queued.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from lunogram_server.messaging.providers.base import (
    Channel,
    EmailConfig,
    HttpProvider,
    HttpUrl,
    Message,
    Outcome,
    http_outcome,
    json_or_none,
)
from lunogram_server.messaging.providers.mail import prepare


class SendgridConfig(EmailConfig):
    base_url: HttpUrl = Field(default="https://api.sendgrid.com")


class SendgridSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: str = Field(min_length=1, max_length=512)


class SendgridProvider(HttpProvider):
    kind = "sendgrid"
    channel: Channel = "email"

    def __init__(
        self,
        config: SendgridConfig,
        secrets: SendgridSecrets,
        http: httpx.AsyncClient | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(config.timeout_seconds, http, ssl_context)
        self.config = config
        self.url = config.base_url.rstrip("/") + "/v3/mail/send"
        self.auth = {"Authorization": f"Bearer {secrets.api_key}"}

    def body(self, message: Message) -> dict[str, Any] | Outcome:
        mail = prepare(message, self.config)
        if isinstance(mail, Outcome):
            return mail
        sender: dict[str, str] = {"email": mail.from_address}
        if mail.from_name:
            sender["name"] = mail.from_name
        content = []  # SendGrid wants text/plain before text/html
        if mail.text is not None:
            content.append({"type": "text/plain", "value": mail.text})
        if mail.html is not None:
            content.append({"type": "text/html", "value": mail.html})
        body: dict[str, Any] = {
            "personalizations": [{"to": [{"email": mail.to}], "custom_args": {"lunogram_message_id": message.id}}],
            "from": sender,
            "subject": mail.subject,
            "content": content,
        }
        if mail.reply_to:
            body["reply_to"] = {"email": mail.reply_to}
        if mail.headers:
            body["headers"] = mail.headers
        return body

    async def send(self, message: Message) -> Outcome:
        body = self.body(message)
        if isinstance(body, Outcome):
            return body
        response = await self.request("POST", self.url, json=body, headers=self.auth)
        if isinstance(response, Outcome):
            return response
        if response.is_success:
            return Outcome.sent(response.headers.get("x-message-id"))
        answer = json_or_none(response)
        errors = answer.get("errors") if isinstance(answer, dict) else None
        if isinstance(errors, list) and errors:
            text = "; ".join(
                f"{e.get('field')}: {e.get('message')}" if e.get("field") else str(e.get("message"))
                for e in errors
                if isinstance(e, dict)
            )
        else:
            text = response.reason_phrase
        return http_outcome(response, text)
