"""Amazon SES v2 over its HTTP API: `POST /v2/email/outbound-emails`, signed with SigV4 (no AWS SDK).

The message id goes along as the email tag `lunogram_message_id`, which SES repeats in its delivery,
bounce and complaint notifications. SES replaces any Message-ID header with its own.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field

from lunogram_server.messaging.providers import sigv4
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

SEND_PATH = "/v2/email/outbound-emails"
# error types SES answers with a 400 that are about sending too fast, not about the message
_THROTTLED = ("TooManyRequestsException", "LimitExceededException", "ThrottlingException", "Throttling")


class SesConfig(EmailConfig):
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$", max_length=40, description="e.g. eu-west-1")
    access_key_id: str = Field(min_length=16, max_length=128)
    base_url: HttpUrl | None = Field(default=None, description="default https://email.<region>.amazonaws.com")
    configuration_set: str | None = Field(default=None, max_length=64)


class SesSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    secret_access_key: str = Field(min_length=1, max_length=256)
    session_token: str | None = Field(default=None, max_length=4096)


class SesProvider(HttpProvider):
    kind = "ses"
    channel: Channel = "email"

    def __init__(
        self,
        config: SesConfig,
        secrets: SesSecrets,
        http: httpx.AsyncClient | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(config.timeout_seconds, http, ssl_context)
        self.config = config
        self.secrets = secrets
        base = config.base_url or f"https://email.{config.region}.amazonaws.com"
        self.url = base.rstrip("/") + SEND_PATH

    def body(self, message: Message) -> dict[str, Any] | Outcome:
        mail = prepare(message, self.config)
        if isinstance(mail, Outcome):
            return mail
        content: dict[str, Any] = {}
        if mail.text is not None:
            content["Text"] = {"Data": mail.text, "Charset": "UTF-8"}
        if mail.html is not None:
            content["Html"] = {"Data": mail.html, "Charset": "UTF-8"}
        simple: dict[str, Any] = {"Subject": {"Data": mail.subject, "Charset": "UTF-8"}, "Body": content}
        if mail.headers:
            simple["Headers"] = [{"Name": name, "Value": value} for name, value in mail.headers.items()]
        body: dict[str, Any] = {
            "FromEmailAddress": mail.sender,
            "Destination": {"ToAddresses": [mail.to]},
            "Content": {"Simple": simple},
            "EmailTags": [{"Name": "lunogram_message_id", "Value": _tag_value(message.id)}],
        }
        if mail.reply_to:
            body["ReplyToAddresses"] = [mail.reply_to]
        if self.config.configuration_set:
            body["ConfigurationSetName"] = self.config.configuration_set
        return body

    async def send(self, message: Message) -> Outcome:
        body = self.body(message)
        if isinstance(body, Outcome):
            return body
        content = orjson.dumps(body)
        headers = sigv4.sign(
            method="POST",
            url=self.url,
            headers={"Content-Type": "application/json"},
            body=content,
            access_key=self.config.access_key_id,
            secret_key=self.secrets.secret_access_key,
            region=self.config.region,
            service="ses",
            session_token=self.secrets.session_token,
        )
        response = await self.request("POST", self.url, content=content, headers=headers)
        if isinstance(response, Outcome):
            return response
        answer = json_or_none(response)
        answer = answer if isinstance(answer, dict) else {}
        if response.is_success:
            return Outcome.sent(answer.get("MessageId"))
        kind = response.headers.get("x-amzn-errortype", "").split(":", 1)[0]
        text = str(answer.get("message") or answer.get("Message") or response.reason_phrase)
        error = f"{kind}: {text}" if kind else text
        if kind.startswith(_THROTTLED) and not 500 <= response.status_code < 600:
            return Outcome.retry(f"HTTP {response.status_code}: {error}")
        return http_outcome(response, error)


def _tag_value(value: str) -> str:
    """SES tag values allow only ASCII letters, digits, '_', '-', '.' and '@', at most 256 characters."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_-.@") else "_" for c in value)[:256]
