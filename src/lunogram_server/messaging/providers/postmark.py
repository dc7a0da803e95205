"""Postmark's Email API (`POST /email`), server token in `X-Postmark-Server-Token`.

The message id goes along as metadata `lunogram_message_id` (repeated in Postmark's webhooks). Postmark
refuses a recipient it has marked inactive (hard bounce, spam complaint) with ErrorCode 406: that is a
permanent address problem.
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

_INACTIVE_RECIPIENT = 406


class PostmarkConfig(EmailConfig):
    base_url: HttpUrl = Field(default="https://api.postmarkapp.com")
    message_stream: str = Field(default="outbound", min_length=1, max_length=100)


class PostmarkSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    server_token: str = Field(min_length=1, max_length=512)


class PostmarkProvider(HttpProvider):
    kind = "postmark"
    channel: Channel = "email"

    def __init__(
        self,
        config: PostmarkConfig,
        secrets: PostmarkSecrets,
        http: httpx.AsyncClient | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(config.timeout_seconds, http, ssl_context)
        self.config = config
        self.url = config.base_url.rstrip("/") + "/email"
        self.auth = {"X-Postmark-Server-Token": secrets.server_token, "Accept": "application/json"}

    def body(self, message: Message) -> dict[str, Any] | Outcome:
        mail = prepare(message, self.config)
        if isinstance(mail, Outcome):
            return mail
        body: dict[str, Any] = {
            "From": mail.sender,
            "To": mail.to,
            "Subject": mail.subject,
            "MessageStream": self.config.message_stream,
            "Metadata": {"lunogram_message_id": message.id},
        }
        if mail.html is not None:
            body["HtmlBody"] = mail.html
        if mail.text is not None:
            body["TextBody"] = mail.text
        if mail.reply_to:
            body["ReplyTo"] = mail.reply_to
        if mail.headers:
            body["Headers"] = [{"Name": name, "Value": value} for name, value in mail.headers.items()]
        return body

    async def send(self, message: Message) -> Outcome:
        body = self.body(message)
        if isinstance(body, Outcome):
            return body
        response = await self.request("POST", self.url, json=body, headers=self.auth)
        if isinstance(response, Outcome):
            return response
        answer = json_or_none(response)
        answer = answer if isinstance(answer, dict) else {}
        code = answer.get("ErrorCode")
        if response.is_success and not code:
            return Outcome.sent(answer.get("MessageID"))
        text = f"ErrorCode {code}: {answer.get('Message')}" if code is not None else response.reason_phrase
        if response.is_success:  # a 200 carrying an error code: Postmark did not take the message
            return Outcome.failed(text, permanent_address_problem=code == _INACTIVE_RECIPIENT)
        return http_outcome(response, text, permanent_address_problem=code == _INACTIVE_RECIPIENT)
