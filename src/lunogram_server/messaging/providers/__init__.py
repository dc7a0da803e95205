"""Channels and their providers behind one small interface.

A sender builds a provider once from its settings (`build_provider`) and calls `await provider.send(message)`
for each rendered `Message`; the `Outcome` says sent, retry (with `retry_after`) or failed (with
`permanent_address_problem` for hard bounces and dead device tokens). `send` does not raise for anything
the network or the provider does. See base.py for the mapping of answers onto outcomes and
docs/messaging.md ("Providers") for each kind's settings.

Kinds (`KINDS`): email `smtp`, `ses`, `sendgrid`, `mailgun`, `postmark`; sms `twilio`, `vonage`; whatsapp
`whatsapp`; push `webpush`, `fcm`, `apns`; webhook `webhook`.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from lunogram_server.messaging.providers import (
    apns,
    fcm,
    mailgun,
    postmark,
    sendgrid,
    ses,
    smtp,
    twilio,
    vonage,
    webhook,
    webpush,
    whatsapp,
)
from lunogram_server.messaging.providers.base import (
    CHANNELS,
    Channel,
    Device,
    DeviceOs,
    Message,
    Outcome,
    Provider,
    ProviderConfig,
    ProviderConfigError,
    Status,
    WebPushKeys,
    first_error,
)
from lunogram_server.messaging.providers.webpush import generate_vapid_keys
from lunogram_server.netcheck import Network, parse_networks

__all__ = [
    "CHANNELS",
    "KINDS",
    "Channel",
    "Device",
    "DeviceOs",
    "Message",
    "Network",
    "Outcome",
    "Provider",
    "ProviderConfigError",
    "ProviderKind",
    "Status",
    "WebPushKeys",
    "build_provider",
    "generate_vapid_keys",
    "parse_networks",
    "validate",
]


@dataclass(frozen=True)
class _Context:
    http: httpx.AsyncClient | None
    ssl_context: ssl.SSLContext | None
    allowed_networks: Sequence[Network]


Factory = Callable[[Any, Any, _Context], Provider]


@dataclass(frozen=True)
class ProviderKind:
    """One kind of provider: its channel, its settings (non-secret `config`, `secrets`) and its maker."""

    kind: str
    channel: Channel
    config: type[ProviderConfig]
    secrets: type[BaseModel]
    summary: str
    make: Factory

    @property
    def secret_fields(self) -> tuple[str, ...]:
        return tuple(self.secrets.model_fields)


def _http(cls: Callable[..., Provider]) -> Factory:
    return lambda config, secrets, ctx: cls(config, secrets, ctx.http, ctx.ssl_context)


def _checked(cls: Callable[..., Provider]) -> Factory:
    """For kinds whose URLs come from messages: they also get the networks the operator allowed."""
    return lambda config, secrets, ctx: cls(config, secrets, ctx.http, ctx.ssl_context, ctx.allowed_networks)


_KINDS = [
    ProviderKind(
        "smtp",
        "email",
        smtp.SmtpConfig,
        smtp.SmtpSecrets,
        "any SMTP server (plain, STARTTLS or TLS; AUTH)",
        lambda config, secrets, ctx: smtp.SmtpProvider(config, secrets, ctx.ssl_context),
    ),
    ProviderKind("ses", "email", ses.SesConfig, ses.SesSecrets, "Amazon SES v2 HTTP API", _http(ses.SesProvider)),
    ProviderKind(
        "sendgrid",
        "email",
        sendgrid.SendgridConfig,
        sendgrid.SendgridSecrets,
        "SendGrid v3 Mail Send",
        _http(sendgrid.SendgridProvider),
    ),
    ProviderKind(
        "mailgun", "email", mailgun.MailgunConfig, mailgun.MailgunSecrets, "Mailgun", _http(mailgun.MailgunProvider)
    ),
    ProviderKind(
        "postmark",
        "email",
        postmark.PostmarkConfig,
        postmark.PostmarkSecrets,
        "Postmark",
        _http(postmark.PostmarkProvider),
    ),
    ProviderKind(
        "twilio",
        "sms",
        twilio.TwilioConfig,
        twilio.TwilioSecrets,
        "Twilio Programmable SMS",
        _http(twilio.TwilioProvider),
    ),
    ProviderKind(
        "vonage", "sms", vonage.VonageConfig, vonage.VonageSecrets, "Vonage SMS", _http(vonage.VonageProvider)
    ),
    ProviderKind(
        "whatsapp",
        "whatsapp",
        whatsapp.WhatsappConfig,
        whatsapp.WhatsappSecrets,
        "WhatsApp Cloud API",
        _http(whatsapp.WhatsappProvider),
    ),
    ProviderKind(
        "webpush",
        "push",
        webpush.WebpushConfig,
        webpush.WebpushSecrets,
        "Web Push with VAPID (browsers)",
        _checked(webpush.WebpushProvider),
    ),
    ProviderKind(
        "fcm", "push", fcm.FcmConfig, fcm.FcmSecrets, "Firebase Cloud Messaging HTTP v1", _http(fcm.FcmProvider)
    ),
    ProviderKind(
        "apns", "push", apns.ApnsConfig, apns.ApnsSecrets, "Apple Push Notification service", _http(apns.ApnsProvider)
    ),
    ProviderKind(
        "webhook",
        "webhook",
        webhook.WebhookConfig,
        webhook.WebhookSecrets,
        "a JSON request to a URL",
        _checked(webhook.WebhookProvider),
    ),
]
KINDS: dict[str, ProviderKind] = {spec.kind: spec for spec in _KINDS}


def validate(kind: str, config: Any, secrets: Any) -> tuple[ProviderConfig, BaseModel]:
    """The kind's settings, parsed; ProviderConfigError(`field: rule`) otherwise."""
    spec = KINDS.get(kind)
    if spec is None:
        raise ProviderConfigError("kind", f"must be one of {', '.join(KINDS)}")
    for name, value in (("config", config), ("secrets", secrets)):
        if not isinstance(value, dict):
            raise ProviderConfigError(name, "must be an object")
    try:
        parsed_config = spec.config.model_validate(config)
    except ValidationError as exc:
        raise first_error(exc, "config") from None
    try:
        parsed_secrets = spec.secrets.model_validate(secrets)
    except ValidationError as exc:
        raise first_error(exc, "secrets") from None
    return parsed_config, parsed_secrets


def build_provider(
    kind: str,
    config: dict[str, Any],
    secrets: dict[str, Any],
    *,
    http: httpx.AsyncClient | None = None,
    ssl_context: ssl.SSLContext | None = None,
    allowed_networks: Sequence[Network] = (),
) -> Provider:
    """A ready provider of `kind`; ProviderConfigError (`field: rule`) when the settings are not usable.

    `http`: a client to share (APNs needs one with `http2=True`); by default each provider has its own and
    closes it in `aclose`. `ssl_context`: the TLS trust to use instead of the system's (tests); httpx and
    OpenSSL also honour SSL_CERT_FILE. `allowed_networks`: private networks the webhook and Web Push kinds
    may call (their URLs come from messages and browsers, so private addresses are refused by default).
    """
    parsed_config, parsed_secrets = validate(kind, config, secrets)
    context = _Context(http, ssl_context, allowed_networks)
    return KINDS[kind].make(parsed_config, parsed_secrets, context)
