"""Messaging providers against real servers on loopback that speak each wire format (messaging_servers.py):
what each provider sends is received and decoded; answers map onto outcomes the same way everywhere
(2xx sent, 429/5xx/network retry with Retry-After, other 4xx failed, dead addresses flagged). Then the
provider settings API: secrets encrypted at rest and never returned, project isolation, the test send,
a server without a key refusing secrets, and a key rotation."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import psycopg
import pytest

from helpers import Server, free_port, uid
from lunogram_server.messaging.crypto import Keyring, Undecryptable, parse_key
from lunogram_server.messaging.providers import (
    Device,
    Message,
    Outcome,
    Provider,
    ProviderConfigError,
    WebPushKeys,
    build_provider,
    generate_vapid_keys,
    parse_networks,
    sigv4,
)
from lunogram_server.messaging.providers.base import parse_retry_after
from messaging_servers import (
    TLS,
    ApnsServer,
    FakeHttpServer,
    FcmServer,
    MailgunServer,
    PostmarkServer,
    ReceivedEmail,
    SendgridServer,
    SesServer,
    SmtpServer,
    TwilioServer,
    VonageServer,
    WebhookServer,
    WebPushServer,
    WhatsappServer,
)

LOOPBACK = parse_networks("127.0.0.0/8")
UNSUBSCRIBE = {
    "List-Unsubscribe": "<https://example.com/unsubscribe/abc>, <mailto:unsubscribe@example.com?subject=abc>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}


def email(**changes: Any) -> Message:
    fields: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "channel": "email",
        "to": "ada@example.com",
        "from_address": "news@example.com",
        "from_name": "Example News",
        "reply_to": "help@example.com",
        "subject": "Hello Ada",
        "text": "Hi Ada, plain.",
        "html": "<p>Hi <b>Ada</b></p>",
        "headers": UNSUBSCRIBE,
    }
    return Message(**{**fields, **changes})


async def send_and_close(provider: Provider, message: Message) -> Outcome:
    try:
        return await asyncio.wait_for(provider.send(message), timeout=30)
    finally:
        await provider.aclose()


# -- the shared mapping -------------------------------------------------------------------------------------


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 2.5 ") == 2.5
    later = datetime.now(UTC) + timedelta(seconds=120)
    assert 100 < (parse_retry_after(format_datetime(later, usegmt=True)) or 0) <= 120
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("99999999") == 86_400.0


def test_sigv4_reproduces_the_signature_aws_documents() -> None:
    """AWS's worked example (S3 GetObject, Signature Version 4 docs): same key, date and headers."""
    headers = sigv4.sign(
        method="GET",
        url="https://examplebucket.s3.amazonaws.com/test.txt",
        headers={
            "Range": "bytes=0-9",
            "x-amz-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        },
        body=b"",
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region="us-east-1",
        service="s3",
        now=datetime(2013, 5, 24, tzinfo=UTC),
    )
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


@pytest.mark.parametrize(
    ("kind", "config", "secrets", "error"),
    [
        ("smtp", {}, {}, "config.host: is required"),
        ("smtp", {"host": "mail", "security": "ssl"}, {}, "config.security: input should be"),
        ("smtp", {"host": "mail", "colour": "red"}, {}, "config.colour: is not a known field"),
        ("sendgrid", {}, {}, "secrets.api_key: is required"),
        ("twilio", {"account_sid": "AC" + "0" * 32}, {"auth_token": "t"}, "from_number or messaging_service_sid"),
        ("carrier-pigeon", {}, {}, "kind: must be one of smtp, ses"),
        (
            "apns",
            {"team_id": "A" * 10, "key_id": "B" * 10, "topic": "t"},
            {"private_key": "x" * 120},
            "secrets.private_key: is not a PEM",
        ),
        ("fcm", {}, {"service_account": "{not json"}, "secrets.service_account: must be the service account"),
        ("webhook", {"headers": {"Host": "x"}}, {}, "config.headers: host is set by the server"),
    ],
)
def test_settings_are_refused_naming_the_field(kind: str, config: Any, secrets: Any, error: str) -> None:
    with pytest.raises(ProviderConfigError) as caught:
        build_provider(kind, config, secrets)
    assert error.lower() in str(caught.value).lower()


def test_webpush_keys_must_be_a_pair() -> None:
    public, _ = generate_vapid_keys()
    _, other_private = generate_vapid_keys()
    with pytest.raises(ProviderConfigError, match=r"config.public_key: is not the public key of secrets.private_key"):
        build_provider(
            "webpush", {"subject": "mailto:ops@example.com", "public_key": public}, {"private_key": other_private}
        )


# -- SMTP ---------------------------------------------------------------------------------------------------


def smtp_provider(server: SmtpServer, **config: Any) -> Provider:
    settings = {"host": "127.0.0.1", "port": server.port, "security": server.security, **config}
    password = settings.pop("password", None)
    return build_provider(
        "smtp", settings, {"password": password} if password else {}, ssl_context=TLS.client_context()
    )


def check_email(received: ReceivedEmail, message: Message, *, raw_mime: bool) -> None:
    assert received.to == [message.to]
    assert received.mail_from == message.from_address
    assert received.subject == message.subject
    assert (received.text or "").strip() == message.text
    assert (received.html or "").strip() == message.html
    assert received.reply_to == message.reply_to
    assert "Example News" in received.from_header
    for name, value in UNSUBSCRIBE.items():
        assert received.headers[name] == value, name
    if raw_mime:
        assert received.message_id == f"<{message.id}@example.com>"
        assert received.extra["content_type"] == "multipart/alternative"


@pytest.mark.parametrize("security", ["none", "starttls", "tls"])
async def test_smtp_delivers_multipart_mail_with_headers_as_given(security: str) -> None:
    users = None if security == "none" else {"mailer": "s3cret"}
    with SmtpServer(security=security, users=users) as server:
        config = {"username": "mailer", "password": "s3cret"} if users else {}
        message = email()
        outcome = await send_and_close(smtp_provider(server, **config), message)
        assert outcome == Outcome.sent(f"<{message.id}@example.com>")
        [received] = server.wait_for(1)
        check_email(received, message, raw_mime=True)
        assert received.extra["authenticated"] is bool(users)


async def test_smtp_bad_password_is_a_failed_outcome_not_a_hang() -> None:
    with SmtpServer(security="starttls", users={"mailer": "s3cret"}) as server:
        started = asyncio.get_running_loop().time()
        outcome = await send_and_close(smtp_provider(server, username="mailer", password="wrong"), email())
        assert outcome.status == "failed"
        assert outcome.error is not None
        assert "authentication failed: 535" in outcome.error
        assert not outcome.permanent_address_problem
        assert asyncio.get_running_loop().time() - started < 10
        assert server.auth_failures >= 1  # the client may try each mechanism the server offers
        assert len(server.messages) == 0


SMTP_MODES = {
    "one command at a time": {"pipelining": False},
    "pipelining": {"pipelining": True},
    "pipelining and chunking": {"pipelining": True, "chunking": True},
}


@pytest.mark.parametrize("mode", SMTP_MODES)
async def test_smtp_answers_map_to_outcomes(mode: str) -> None:
    with SmtpServer(**SMTP_MODES[mode]) as server:
        provider = smtp_provider(server)
        try:
            server.rejected.add("gone@example.com")
            bounced = await provider.send(email(to="gone@example.com"))
            assert bounced.status == "failed", bounced
            assert bounced.permanent_address_problem, bounced
            assert "550" in (bounced.error or "")
            server.fail_next(451, text="4.3.0 try again later")
            later = await provider.send(email())
            assert later.status == "retry", later
            assert "451" in (later.error or ""), later
            server.fail_next(554, text="5.7.1 message refused")
            refused = await provider.send(email())
            assert refused.status == "failed", refused
            assert not refused.permanent_address_problem, refused
            fine = await provider.send(email())
            assert fine.status == "sent"
            [received] = server.wait_for(1)
            assert received.extra["chunked"] == ("chunking" in mode)
            assert server.sessions == 1, "every refusal left the connection usable"
        finally:
            await provider.aclose()


@pytest.mark.parametrize("mode", SMTP_MODES)
async def test_smtp_body_arrives_as_written(mode: str) -> None:
    """Lines that start with a dot (DATA doubles them, BDAT sends them as they are), bare line ends, a body
    without a final line end, and a long run of messages on one connection: each arrives as written."""
    text = ".leading dot\n..two dots\n.\nlone dot above\r\nlast line without its end"
    with SmtpServer(**SMTP_MODES[mode]) as server:
        provider = smtp_provider(server)
        try:
            sent = [await provider.send(email(text=text, html=None, subject=f"n{i}")) for i in range(20)]
            assert all(outcome.status == "sent" for outcome in sent), sent
            received = server.wait_for(20)
            assert [r.subject for r in received] == [f"n{i}" for i in range(20)]
            for r in received:
                assert r.text is not None
                assert r.text.replace("\r\n", "\n").rstrip("\n") == text.replace("\r\n", "\n")
                assert r.extra["chunked"] == ("chunking" in mode)
            assert server.sessions == 1
        finally:
            await provider.aclose()


@pytest.mark.parametrize("chunking", [False, True])
async def test_smtp_reuses_its_connection_and_survives_the_server_closing_it(chunking: bool) -> None:
    server = SmtpServer(chunking=chunking).start()
    provider = smtp_provider(server)
    try:
        for _ in range(5):
            assert (await provider.send(email())).status == "sent"
        assert server.sessions == 1, "five messages, one connection"
        server.stop()  # closes the kept connection
        server.start()  # same port
        assert (await provider.send(email())).status == "sent"
        assert len(server.wait_for(6)) == 6
    finally:
        await provider.aclose()
        server.stop()


async def test_smtp_unreachable_server_is_a_retry() -> None:
    provider = build_provider("smtp", {"host": "127.0.0.1", "port": free_port(), "security": "none"}, {})
    outcome = await send_and_close(provider, email())
    assert outcome.status == "retry"
    assert outcome.error


# -- email over HTTP APIs -----------------------------------------------------------------------------------


def _email_api(kind: str) -> tuple[FakeHttpServer, Callable[[FakeHttpServer], Provider]]:
    if kind == "ses":
        return SesServer(), lambda s: build_provider(
            "ses",
            {"region": s.region, "access_key_id": s.access_key_id, "base_url": s.base_url, "configuration_set": "cs"},  # type: ignore[attr-defined]
            {"secret_access_key": s.secret_access_key},  # type: ignore[attr-defined]
        )
    if kind == "sendgrid":
        return SendgridServer(), lambda s: build_provider(
            "sendgrid", {"base_url": s.base_url}, {"api_key": "SG.test-key"}
        )
    if kind == "mailgun":
        return MailgunServer(), lambda s: build_provider(
            "mailgun", {"base_url": s.base_url, "domain": "mg.example.com"}, {"api_key": "key-test"}
        )
    return PostmarkServer(), lambda s: build_provider(
        "postmark", {"base_url": s.base_url}, {"server_token": "pm-test-token"}
    )


EMAIL_APIS = ["ses", "sendgrid", "mailgun", "postmark"]


@pytest.fixture(params=EMAIL_APIS)
def email_api(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any, Callable[[Any], Provider]]]:
    server, make = _email_api(request.param)
    with server:
        yield request.param, server, make


async def test_email_apis_deliver_every_field(email_api: tuple[str, Any, Callable[[Any], Provider]]) -> None:
    kind, server, make = email_api
    message = email()
    outcome = await send_and_close(make(server), message)
    assert outcome.status == "sent", outcome
    [received] = server.wait_for(1)
    assert outcome.provider_message_id == received.message_id
    check_email(received, message, raw_mime=False)
    # the message id travels where the provider repeats it in its events
    carried = {
        "ses": lambda r: r.extra["tags"]["lunogram_message_id"],
        "sendgrid": lambda r: r.extra["custom_args"]["lunogram_message_id"],
        "mailgun": lambda r: r.extra["variables"]["lunogram_message_id"],
        "postmark": lambda r: r.extra["metadata"]["lunogram_message_id"],
    }[kind](received)
    assert carried == message.id


async def test_email_apis_map_429_5xx_and_4xx(email_api: tuple[str, Any, Callable[[Any], Provider]]) -> None:
    _, server, make = email_api
    provider = make(server)
    try:
        server.fail_next(429, headers={"Retry-After": "7"})
        limited = await provider.send(email())
        assert (limited.status, limited.retry_after) == ("retry", 7.0), limited
        server.fail_next(503)
        assert (await provider.send(email())).status == "retry"
        server.fail_next(400)
        refused = await provider.send(email())
        assert refused.status == "failed", refused
        assert "scripted 400" in (refused.error or ""), refused
        assert not refused.permanent_address_problem
        assert (await provider.send(email())).status == "sent"
    finally:
        await provider.aclose()


async def test_ses_signature_is_checked_by_the_server() -> None:
    with SesServer() as server:
        provider = build_provider(
            "ses",
            {"region": server.region, "access_key_id": server.access_key_id, "base_url": server.base_url},
            {"secret_access_key": "not-the-secret"},
        )
        outcome = await send_and_close(provider, email())
        assert outcome.status == "failed", outcome
        assert "SignatureDoesNotMatch" in (outcome.error or ""), outcome
        assert len(server.messages) == 0


async def test_email_from_the_provider_defaults_and_missing_fields() -> None:
    with SendgridServer() as server:
        provider = build_provider(
            "sendgrid",
            {"base_url": server.base_url, "from_address": "default@example.com", "from_name": "Default"},
            {"api_key": "SG.test-key"},
        )
        try:
            assert (await provider.send(email(from_address=None, from_name=None, html=None))).status == "sent"
            [received] = server.wait_for(1)
            assert received.mail_from == "default@example.com"
            assert received.html is None
            empty = await provider.send(email(text=None, html=None))
            assert empty.status == "failed"
            assert "html or text" in (empty.error or "")
            injected = await provider.send(email(headers={"X-Tag": "a\r\nBcc: victim@example.com"}))
            assert injected.status == "failed"
            assert "line breaks" in (injected.error or "")
        finally:
            await provider.aclose()


async def test_postmark_inactive_recipient_is_a_permanent_address_problem() -> None:
    with PostmarkServer() as server:
        server.inactive.add("bounced@example.com")
        outcome = await send_and_close(
            build_provider("postmark", {"base_url": server.base_url}, {"server_token": "pm-test-token"}),
            email(to="bounced@example.com"),
        )
        assert outcome.status == "failed", outcome
        assert outcome.permanent_address_problem, outcome
        assert "406" in (outcome.error or "")


async def test_an_unreachable_api_is_a_retry() -> None:
    provider = build_provider("sendgrid", {"base_url": f"http://127.0.0.1:{free_port()}"}, {"api_key": "k"})
    outcome = await send_and_close(provider, email())
    assert outcome.status == "retry"
    assert "ConnectError" in (outcome.error or "")


# -- SMS and WhatsApp ---------------------------------------------------------------------------------------


def sms(**changes: Any) -> Message:
    return Message(
        **{"id": str(uuid.uuid4()), "channel": "sms", "to": "+15005550006", "body": "Your code is 1234", **changes}
    )


async def test_twilio_sends_and_maps_its_errors() -> None:
    with TwilioServer() as server:
        provider = build_provider(
            "twilio",
            {"account_sid": server.account_sid, "from_number": "+15005550001", "base_url": server.base_url},
            {"auth_token": server.auth_token},
        )
        try:
            outcome = await provider.send(sms())
            assert outcome.status == "sent"
            assert (outcome.provider_message_id or "").startswith("SM")
            [received] = server.wait_for(1)
            assert (received.to, received.sender, received.body) == (
                "+15005550006",
                "+15005550001",
                "Your code is 1234",
            )
            server.invalid_numbers.add("+15005550009")
            invalid = await provider.send(sms(to="+15005550009"))
            assert invalid.status == "failed"
            assert invalid.permanent_address_problem
            assert "21211" in (invalid.error or "")
            server.fail_next(429, headers={"Retry-After": "3"})
            limited = await provider.send(sms())
            assert (limited.status, limited.retry_after) == ("retry", 3.0)
            server.fail_next(500)
            assert (await provider.send(sms())).status == "retry"
        finally:
            await provider.aclose()
        wrong = build_provider(
            "twilio",
            {"account_sid": server.account_sid, "from_number": "+15005550001", "base_url": server.base_url},
            {"auth_token": "wrong"},
        )
        denied = await send_and_close(wrong, sms())
        assert denied.status == "failed"
        assert "20003" in (denied.error or "")


async def test_vonage_reads_the_status_inside_a_200() -> None:
    with VonageServer() as server:
        provider = build_provider(
            "vonage",
            {"api_key": server.api_key, "sender": "Lunogram", "base_url": server.base_url},
            {"api_secret": server.api_secret},
        )
        try:
            assert (await provider.send(sms(body="Grüße 🎉"))).status == "sent"
            [received] = server.wait_for(1)
            assert received.to == "15005550006"
            assert received.body == "Grüße 🎉"
            assert received.extra["type"] == "unicode"
            assert received.extra["client-ref"]
            server.barred.add("15005550007")
            barred = await provider.send(sms(to="+15005550007"))
            assert barred.status == "failed"
            assert barred.permanent_address_problem
            server.status_next("1", "Throughput Rate Exceeded")
            assert (await provider.send(sms())).status == "retry"
            server.status_next("6", "Invalid Message")
            invalid = await provider.send(sms())
            assert invalid.status == "failed"
            assert not invalid.permanent_address_problem
        finally:
            await provider.aclose()


async def test_whatsapp_sends_text_and_templates() -> None:
    with WhatsappServer() as server:
        provider = build_provider(
            "whatsapp",
            {"phone_number_id": server.phone_number_id, "base_url": server.base_url},
            {"access_token": server.access_token},
        )
        try:
            text = await provider.send(sms(channel="whatsapp", body="Hello on WhatsApp"))
            assert text.status == "sent"
            assert (text.provider_message_id or "").startswith("wamid.")
            template = {"type": "template", "template": {"name": "welcome", "language": {"code": "en"}}}
            assert (await provider.send(sms(channel="whatsapp", body=None, json_body=template))).status == "sent"
            first, second = server.wait_for(2)
            assert first.body == "Hello on WhatsApp"
            assert first.to == "15005550006"
            assert second.extra["template"]["name"] == "welcome"
            assert second.extra["messaging_product"] == "whatsapp"
            server.fail_next(400, body={"error": {"message": "Message undeliverable", "code": 131026}})
            dead = await provider.send(sms(channel="whatsapp"))
            assert dead.status == "failed"
            assert dead.permanent_address_problem
            server.fail_next(400, body={"error": {"message": "Rate limit hit", "code": 130429}})
            assert (await provider.send(sms(channel="whatsapp"))).status == "retry"
        finally:
            await provider.aclose()


# -- push ---------------------------------------------------------------------------------------------------


def push(**changes: Any) -> Message:
    fields: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "channel": "push",
        "to": "",
        "title": "Your order shipped",
        "body": "It arrives Tuesday",
        "data": {"order": 42, "kind": "shipping"},
        "url": "https://example.com/orders/42",
    }
    return Message(**{**fields, **changes})


async def test_webpush_payload_is_decrypted_by_the_subscription() -> None:
    public, private = generate_vapid_keys()
    with WebPushServer(vapid_public_key=public) as server:
        subscription = server.subscribe()
        device = Device(os="web", endpoint=subscription["endpoint"], keys=WebPushKeys(**subscription["keys"]))
        provider = build_provider(
            "webpush",
            {"subject": "mailto:ops@example.com", "public_key": public, "ttl_seconds": 3600, "urgency": "high"},
            {"private_key": private},
            allowed_networks=LOOPBACK,
        )
        try:
            message = push(to=subscription["endpoint"], device=device)
            outcome = await provider.send(message)
            assert outcome.status == "sent"
            assert (outcome.provider_message_id or "").startswith(server.base_url)
            [received] = server.wait_for(1)
            assert received.payload == {
                "id": message.id,
                "title": "Your order shipped",
                "body": "It arrives Tuesday",
                "url": "https://example.com/orders/42",
                "data": {"order": 42, "kind": "shipping"},
            }
            assert received.headers["ttl"] == "3600"
            assert received.headers["urgency"] == "high"
            assert (await provider.send(message)).status == "sent"  # the VAPID token is reused
            first, second = server.wait_for(2)
            assert first.headers["authorization"] == second.headers["authorization"]
            server.gone.add(subscription["endpoint"])
            gone = await provider.send(message)
            assert gone.status == "failed"
            assert gone.permanent_address_problem
            assert "410" in (gone.error or "")
            other = server.subscribe()
            server.fail_next(429, headers={"Retry-After": "30"})
            other_device = Device(os="web", endpoint=other["endpoint"], keys=WebPushKeys(**other["keys"]))
            limited = await provider.send(push(to=other["endpoint"], device=other_device))
            assert (limited.status, limited.retry_after) == ("retry", 30.0)
        finally:
            await provider.aclose()


async def test_webpush_refuses_private_endpoints_unless_allowed() -> None:
    public, private = generate_vapid_keys()
    with WebPushServer() as server:
        subscription = server.subscribe()
        device = Device(os="web", endpoint=subscription["endpoint"], keys=WebPushKeys(**subscription["keys"]))
        provider = build_provider(
            "webpush", {"subject": "mailto:ops@example.com", "public_key": public}, {"private_key": private}
        )
        outcome = await send_and_close(provider, push(to=subscription["endpoint"], device=device))
        assert outcome.status == "failed", outcome
        assert "may not call" in (outcome.error or ""), outcome
        assert len(server.requests) == 0


async def test_fcm_gets_a_token_from_the_service_account_and_reuses_it() -> None:
    with FcmServer() as server:
        provider = build_provider("fcm", {"base_url": server.base_url}, {"service_account": server.service_account()})
        try:
            message = push(to="device-token-1")
            outcome = await provider.send(message)
            assert outcome.status == "sent"
            assert (outcome.provider_message_id or "").startswith("projects/lunogram-test/")
            assert (await provider.send(push(to="device-token-2"))).status == "sent"
            first, _second = server.wait_for(2)
            assert len(server.tokens_issued) == 1, "one access token for both sends"
            assert (first.token, first.title, first.body) == (
                "device-token-1",
                "Your order shipped",
                "It arrives Tuesday",
            )
            assert first.data == {
                "order": "42",
                "kind": "shipping",
                "url": "https://example.com/orders/42",
                "lunogram_message_id": message.id,
            }
            server.unregistered.add("uninstalled")
            gone = await provider.send(push(to="uninstalled"))
            assert gone.status == "failed"
            assert gone.permanent_address_problem
            assert "UNREGISTERED" in (gone.error or "")
            server.revoke_tokens()
            expired = await provider.send(push(to="device-token-1"))
            assert expired.status == "retry"
            assert "401" in (expired.error or "")
            assert (await provider.send(push(to="device-token-1"))).status == "sent"
            assert len(server.tokens_issued) == 2, "a refused token is replaced"
            server.fail_next(429, headers={"Retry-After": "11"})
            limited = await provider.send(push(to="device-token-1"))
            assert (limited.status, limited.retry_after) == ("retry", 11.0)
        finally:
            await provider.aclose()


async def test_fcm_refused_service_account_is_a_failure() -> None:
    with FcmServer() as server, FcmServer() as stranger:
        account = {
            **stranger.service_account(),
            "token_uri": f"{server.base_url}/token",
        }  # a key the server never issued
        provider = build_provider(
            "fcm", {"base_url": server.base_url, "project_id": server.project_id}, {"service_account": account}
        )
        outcome = await send_and_close(provider, push(to="t"))
        assert (outcome.status == "failed" and "invalid_grant" in (outcome.error or "").lower()) or "Invalid JWT" in (
            outcome.error or ""
        )


def apns_provider(server: ApnsServer, **config: Any) -> Provider:
    settings = {"team_id": server.team_id, "key_id": server.key_id, "topic": server.topic, "base_url": server.base_url}
    return build_provider(
        "apns", {**settings, **config}, {"private_key": server.private_key_pem}, ssl_context=TLS.client_context()
    )


TOKEN = "a1" * 32


async def test_apns_over_http2_with_a_provider_token() -> None:
    with ApnsServer() as server:
        provider = apns_provider(server)
        try:
            message = push(to=TOKEN)
            outcome = await provider.send(message)
            assert outcome == Outcome.sent(message.id)
            assert (await provider.send(push(to=TOKEN))).status == "sent"
            first, _ = server.wait_for(2)
            assert first.headers[":scheme"] == "https", "HTTP/2 pseudo-headers"
            assert first.headers["apns-topic"] == server.topic
            assert first.headers["apns-push-type"] == "alert"
            assert first.headers["apns-id"] == message.id
            assert first.payload["aps"]["alert"] == {"title": "Your order shipped", "body": "It arrives Tuesday"}
            assert first.payload["url"] == "https://example.com/orders/42"
            assert first.payload["order"] == 42
            assert len(server.tokens_seen) == 1, "the provider token is reused"
            assert server.connections == 1, "both pushes on one HTTP/2 connection"
            server.unregistered.add("b2" * 32)
            gone = await provider.send(push(to="b2" * 32))
            assert gone.status == "failed"
            assert gone.permanent_address_problem
            assert "Unregistered" in (gone.error or "")
            bad = await provider.send(push(to="not-a-token"))
            assert bad.status == "failed"
            assert bad.permanent_address_problem
            server.fail_next(429, reason="TooManyRequests")
            assert (await provider.send(push(to=TOKEN))).status == "retry"
            server.fail_next(400, reason="PayloadEmpty")
            refused = await provider.send(push(to=TOKEN))
            assert refused.status == "failed"
            assert not refused.permanent_address_problem
        finally:
            await provider.aclose()


async def test_apns_retries_once_on_a_connection_the_server_closed() -> None:
    with ApnsServer() as server:
        provider = apns_provider(server)
        try:
            assert (await provider.send(push(to=TOKEN))).status == "sent"
            server.drop_next(1)
            assert (await provider.send(push(to=TOKEN))).status == "sent"
            assert server.connections == 2
            assert len(server.wait_for(2)) == 2
            server.drop_next(2)
            twice = await provider.send(push(to=TOKEN))
            assert twice.status == "retry", twice
        finally:
            await provider.aclose()


async def test_apns_with_another_key_is_refused() -> None:
    with ApnsServer() as server, ApnsServer() as other:
        provider = build_provider(
            "apns",
            {"team_id": server.team_id, "key_id": server.key_id, "topic": server.topic, "base_url": server.base_url},
            {"private_key": other.private_key_pem},
            ssl_context=TLS.client_context(),
        )
        outcome = await send_and_close(provider, push(to=TOKEN))
        assert outcome.status == "failed"
        assert "InvalidProviderToken" in (outcome.error or "")


# -- webhook ------------------------------------------------------------------------------------------------


async def test_webhook_posts_signed_json_with_an_idempotency_key() -> None:
    import hashlib
    import hmac

    with WebhookServer() as server:
        provider = build_provider(
            "webhook",
            {"url": f"{server.base_url}/hook", "headers": {"X-Team": "growth"}},
            {"headers": {"Authorization": "Bearer hook-secret"}, "signing_secret": "0123456789abcdef"},
            allowed_networks=LOOPBACK,
        )
        try:
            message = Message(id="msg-1", channel="webhook", to="", json_body={"user": "ada", "event": "signup"})
            assert (await provider.send(message)).status == "sent"
            [received] = server.wait_for(1)
            assert received.path == "/hook"
            assert received.json() == {"user": "ada", "event": "signup"}
            assert received.headers["idempotency-key"] == "msg-1"
            assert received.headers["x-team"] == "growth"
            assert received.headers["authorization"] == "Bearer hook-secret"
            stamp, mac = (part.split("=", 1)[1] for part in received.headers["lunogram-signature"].split(","))
            expected = hmac.new(b"0123456789abcdef", f"{stamp}.".encode() + received.body, hashlib.sha256).hexdigest()
            assert mac == expected
            other = Message(id="m2", channel="webhook", to="", url=f"{server.base_url}/other", method="PUT")
            assert (await provider.send(other)).status == "sent"
            assert server.wait_for(2)[1].method == "PUT"
            server.fail_next(502)
            assert (await provider.send(message)).status == "retry"
            server.fail_next(404)
            assert (await provider.send(message)).status == "failed"
        finally:
            await provider.aclose()


async def test_webhook_refuses_private_addresses_by_default() -> None:
    with WebhookServer() as server:
        provider = build_provider("webhook", {"url": f"{server.base_url}/hook"}, {})
        outcome = await send_and_close(provider, Message(id="m", channel="webhook", to="", json_body={}))
        assert outcome.status == "failed"
        assert "may not call" in (outcome.error or "")
        metadata = build_provider("webhook", {"url": "http://169.254.169.254/latest/meta-data"}, {})
        outcome = await send_and_close(metadata, Message(id="m", channel="webhook", to=""))
        assert outcome.status == "failed"
        assert len(server.requests) == 0


# -- crypto -------------------------------------------------------------------------------------------------


def test_sealed_values_are_bound_to_their_key_and_context() -> None:
    old, new = os.urandom(32), os.urandom(32)
    sealed = Keyring(old).seal(b'{"password":"pw"}', b"row-1")
    assert b"pw" not in sealed
    rotated = Keyring(new, [old])
    assert rotated.open(sealed, b"row-1") == b'{"password":"pw"}'
    assert not rotated.sealed_with_current(sealed)
    with pytest.raises(Undecryptable, match="LUNOGRAM_ENCRYPTION_KEY"):
        Keyring(new).open(sealed, b"row-1")
    with pytest.raises(Undecryptable, match="altered or belongs elsewhere"):
        rotated.open(sealed, b"row-2")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(Undecryptable):
        rotated.open(tampered, b"row-1")
    assert parse_key(base64.urlsafe_b64encode(old).decode().rstrip("=")) == old
    with pytest.raises(ValueError, match="32 bytes, not 16"):
        parse_key(base64.b64encode(os.urandom(16)).decode())


# -- the provider settings API ------------------------------------------------------------------------------


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture(scope="module")
def keyed(server_factory: Callable[..., Server]) -> Server:
    """A server with an encryption key, trusting the test TLS certificate (SSL_CERT_FILE)."""
    return server_factory(extra_env={"LUNOGRAM_ENCRYPTION_KEY": new_key(), "SSL_CERT_FILE": str(TLS.cert_file)})


@pytest.fixture
def admin(keyed: Server) -> Iterator[httpx.Client]:
    with keyed.client() as client:
        yield client


def create(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/admin/providers", json={"name": uid("provider"), **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_secrets_are_encrypted_at_rest_and_never_returned(keyed: Server, admin: httpx.Client) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    made = create(
        admin,
        kind="smtp",
        config={"host": "smtp.example.com", "username": "mailer", "from_address": "news@example.com"},
        secrets={"password": password},
        rate_per_second=50,
    )
    assert made["channel"] == "email"
    assert made["secrets_set"] == ["password"]
    assert made["rate_per_second"] == 50
    assert made["config"]["security"] == "starttls", "defaults are shown"
    assert made["config"]["port"] is None
    answers = [
        admin.get(f"/admin/providers/{made['id']}"),
        admin.get("/admin/providers"),
        admin.patch(f"/admin/providers/{made['id']}", json={"name": uid("renamed")}),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert password not in answer.text
    with psycopg.connect(keyed.database_url) as conn:
        row = conn.execute(
            "SELECT secrets, config::text, secret_fields FROM providers WHERE id = %s", (made["id"],)
        ).fetchone()
    assert row is not None
    sealed, config_text, fields = row
    assert password.encode() not in bytes(sealed)
    assert password not in config_text
    assert base64.b64encode(password.encode()) not in bytes(sealed)
    assert fields == ["password"]


def test_updates_merge_secrets_replace_config_and_move_the_default(admin: httpx.Client) -> None:
    first = create(admin, kind="webhook", config={"url": "https://hooks.example.com/a"})
    assert first["is_default"] or admin.get("/admin/providers", params={"channel": "webhook"}).json()[0]["is_default"]
    second = create(
        admin,
        kind="webhook",
        config={"url": "https://hooks.example.com/b"},
        secrets={"signing_secret": "0123456789abcdef"},
    )
    changed = admin.patch(
        f"/admin/providers/{second['id']}",
        json={"secrets": {"headers": {"Authorization": "Bearer x"}}, "is_default": True, "rate_per_second": 5},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["secrets_set"] == ["headers", "signing_secret"]
    assert changed.json()["is_default"] is True
    defaults = [p for p in admin.get("/admin/providers", params={"channel": "webhook"}).json() if p["is_default"]]
    assert [p["id"] for p in defaults] == [second["id"]], "one default per channel"
    removed = admin.patch(
        f"/admin/providers/{second['id']}",
        json={
            "secrets": {"signing_secret": None},
            "config": {"url": "https://hooks.example.com/c"},
            "rate_per_second": None,
        },
    )
    assert removed.status_code == 200, removed.text
    body = removed.json()
    assert body["secrets_set"] == ["headers"]
    assert body["config"]["url"] == "https://hooks.example.com/c"
    assert body["rate_per_second"] is None
    assert admin.delete(f"/admin/providers/{first['id']}").status_code == 204
    assert admin.get(f"/admin/providers/{first['id']}").status_code == 404
    assert admin.delete(f"/admin/providers/{first['id']}").status_code == 404


def test_webpush_providers_get_a_vapid_key_pair(admin: httpx.Client) -> None:
    made = create(admin, kind="webpush", config={"subject": "mailto:ops@example.com"})
    assert len(made["config"]["public_key"]) >= 86
    assert made["secrets_set"] == ["private_key"]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"kind": "smtp", "config": {}}, 400, "config.host: is required"),
        ({"kind": "smtp", "config": {"host": "h", "port": 70000}}, 400, "config.port: input should be less than"),
        ({"kind": "sendgrid"}, 400, "secrets.api_key: is required"),
        ({"kind": "pigeon"}, 400, "kind: input should be"),
        (
            {"kind": "smtp", "config": {"host": "h"}, "rate_per_second": 0},
            400,
            "rate_per_second: input should be greater",
        ),
        ({"kind": "smtp", "config": {"host": "h"}, "name": " "}, 400, "name: must not be blank"),
        ({"kind": "smtp", "config": {"host": "h" * 40_000}}, 400, "config: is larger than"),
    ],
)
def test_bad_settings_are_400_naming_the_field(
    admin: httpx.Client, body: dict[str, Any], status: int, detail: str
) -> None:
    name = uid("bad")
    response = admin.post("/admin/providers", json={"name": name, **body})
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]
    assert all(p["name"] != name for p in admin.get("/admin/providers").json())


def test_names_are_unique_per_project(admin: httpx.Client) -> None:
    made = create(admin, kind="smtp", config={"host": "h"})
    again = admin.post("/admin/providers", json={"name": made["name"], "kind": "smtp", "config": {"host": "h"}})
    assert again.status_code == 409
    assert "exists already" in again.json()["detail"]


def test_providers_are_scoped_by_project(
    keyed: Server, admin: httpx.Client, server_factory: Callable[..., Server]
) -> None:
    public, secret = f"pk_{uuid.uuid4().hex}", f"sk_{uuid.uuid4().hex}"
    other = server_factory(
        database_url=keyed.database_url,
        extra_env={
            "LUNOGRAM_ENCRYPTION_KEY": keyed.env["LUNOGRAM_ENCRYPTION_KEY"],
            "LUNOGRAM_BOOTSTRAP_PROJECT": uid("project"),
            "LUNOGRAM_BOOTSTRAP_PUBLIC_KEY": public,
            "LUNOGRAM_BOOTSTRAP_SECRET_KEY": secret,
        },
    )
    made = create(admin, kind="smtp", config={"host": "h"}, secrets={"password": "p"})
    with other.client(secret) as stranger:
        assert stranger.get(f"/admin/providers/{made['id']}").status_code == 404
        assert stranger.patch(f"/admin/providers/{made['id']}", json={"name": "mine"}).status_code == 404
        assert stranger.post(f"/admin/providers/{made['id']}/test", json={"to": "a@example.com"}).status_code == 404
        assert stranger.delete(f"/admin/providers/{made['id']}").status_code == 404
        assert made["id"] not in {p["id"] for p in stranger.get("/admin/providers").json()}
    with other.client(public) as browser:
        assert browser.get("/admin/providers").status_code == 403
    assert admin.get(f"/admin/providers/{made['id']}").json()["name"] == made["name"]
    other.stop()


def test_a_test_send_goes_through_the_provider(admin: httpx.Client) -> None:
    with SmtpServer(security="starttls", users={"mailer": "s3cret"}) as smtp:
        made = create(
            admin,
            kind="smtp",
            config={"host": "127.0.0.1", "port": smtp.port, "username": "mailer", "from_address": "ops@example.com"},
            secrets={"password": "s3cret"},
        )
        answer = admin.post(f"/admin/providers/{made['id']}/test", json={"to": "ada@example.com"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "sent", answer.json()
        [received] = smtp.wait_for(1)
        assert received.to == ["ada@example.com"]
        assert received.subject == "Lunogram test message"
        assert received.extra["authenticated"] is True
        # a wrong password: the outcome says so, the request itself succeeds
        admin.patch(f"/admin/providers/{made['id']}", json={"secrets": {"password": "wrong"}})
        failed = admin.post(f"/admin/providers/{made['id']}/test", json={"to": "ada@example.com"}).json()
        assert failed["status"] == "failed"
        assert "authentication failed" in failed["error"]
    with TwilioServer() as twilio:
        made = create(
            admin,
            kind="twilio",
            config={"account_sid": twilio.account_sid, "from_number": "+15005550001", "base_url": twilio.base_url},
            secrets={"auth_token": twilio.auth_token},
        )
        answer = admin.post(f"/admin/providers/{made['id']}/test", json={"to": "+15005550006", "text": "ping"})
        assert answer.json()["status"] == "sent", answer.text
        assert twilio.wait_for(1)[0].body == "ping"


def test_without_a_key_a_database_url_server_refuses_secrets(client: httpx.Client) -> None:
    name = uid("nokey")
    refused = client.post(
        "/admin/providers",
        json={"name": name, "kind": "smtp", "config": {"host": "h", "username": "u"}, "secrets": {"password": "p"}},
    )
    assert refused.status_code == 409, refused.text
    assert "LUNOGRAM_ENCRYPTION_KEY" in refused.json()["detail"]
    assert all(p["name"] != name for p in client.get("/admin/providers").json())
    # settings without secrets need no key
    plain = client.post("/admin/providers", json={"name": uid("plain"), "kind": "smtp", "config": {"host": "h"}})
    assert plain.status_code == 201, plain.text


def test_a_malformed_key_stops_the_start(keyed: Server) -> None:
    env = {**keyed.env, "LUNOGRAM_ENCRYPTION_KEY": "too-short"}
    result = subprocess.run(
        [sys.executable, "-m", "lunogram_server", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "LUNOGRAM_ENCRYPTION_KEY: must be base64 of 32" in output
    assert "Traceback" not in output


def test_key_rotation_old_keys_decrypt_until_resealed(server_factory: Callable[..., Server]) -> None:
    first_key, second_key = new_key(), new_key()
    with SmtpServer(users={"mailer": "rotate-me"}) as smtp:
        one = server_factory(extra_env={"LUNOGRAM_ENCRYPTION_KEY": first_key})
        database_url = one.database_url
        with one.client() as admin:
            made = create(
                admin,
                kind="smtp",
                config={
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "security": "none",
                    "username": "mailer",
                    "from_address": "ops@example.com",
                },
                secrets={"password": "rotate-me"},
            )
        one.stop()

        def test_send(env: dict[str, str], rename: str | None = None) -> httpx.Response:
            started = server_factory(database_url=database_url, extra_env=env)
            try:
                with started.client() as admin:
                    if rename is not None:  # a change that leaves the secrets alone needs no key to open them
                        renamed = admin.patch(f"/admin/providers/{made['id']}", json={"name": rename})
                        assert renamed.status_code == 200, renamed.text
                        changed = admin.patch(f"/admin/providers/{made['id']}", json={"config": {"host": "h"}})
                        assert changed.status_code == 409, changed.text
                    return admin.post(f"/admin/providers/{made['id']}/test", json={"to": "ada@example.com"})
            finally:
                started.stop()

        lost = test_send({"LUNOGRAM_ENCRYPTION_KEY": second_key}, rename=uid("renamed"))
        assert lost.status_code == 409, lost.text
        assert "LUNOGRAM_ENCRYPTION_KEYS_OLD" in lost.json()["detail"], lost.text
        rotated = test_send({"LUNOGRAM_ENCRYPTION_KEY": second_key, "LUNOGRAM_ENCRYPTION_KEYS_OLD": first_key})
        assert rotated.json()["status"] == "sent", rotated.text

        env = {k: v for k, v in os.environ.items() if not k.startswith("LUNOGRAM_") and k != "DATABASE_URL"}
        env.update(LUNOGRAM_ENCRYPTION_KEY=second_key, LUNOGRAM_ENCRYPTION_KEYS_OLD=first_key)
        resealed = subprocess.run(
            [sys.executable, "-m", "lunogram_server", "secrets", "reseal", "--database-url", database_url],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert resealed.returncode == 0, resealed.stdout + resealed.stderr
        assert "re-encrypted 1 provider secret(s)" in resealed.stdout

        after = test_send({"LUNOGRAM_ENCRYPTION_KEY": second_key})
        assert after.json()["status"] == "sent", after.text
        assert len(smtp.wait_for(2)) == 2


async def test_senders_choose_by_channel_and_device_and_reuse_built_providers(
    keyed: Server, server_factory: Callable[..., Server]
) -> None:
    """What the senders call: `choose` (the default, else the oldest; for push, by the device's os), `load`
    with secrets opened, and a registry that rebuilds a provider only when its settings change."""
    from lunogram_server.messaging import providers_service as service

    public, secret = f"pk_{uuid.uuid4().hex}", f"sk_{uuid.uuid4().hex}"
    fresh = server_factory(
        database_url=keyed.database_url,
        extra_env={
            "LUNOGRAM_ENCRYPTION_KEY": keyed.env["LUNOGRAM_ENCRYPTION_KEY"],
            "LUNOGRAM_BOOTSTRAP_PROJECT": uid("project"),
            "LUNOGRAM_BOOTSTRAP_PUBLIC_KEY": public,
            "LUNOGRAM_BOOTSTRAP_SECRET_KEY": secret,
        },
    )
    keyring = Keyring(parse_key(keyed.env["LUNOGRAM_ENCRYPTION_KEY"]))
    with ApnsServer() as apns, fresh.client(secret) as admin:
        web = create(admin, kind="webpush", config={"subject": "mailto:ops@example.com"})
        ios = create(
            admin,
            kind="apns",
            config={"team_id": apns.team_id, "key_id": apns.key_id, "topic": apns.topic, "base_url": apns.base_url},
            secrets={"private_key": apns.private_key_pem},
        )
        mail = create(admin, kind="smtp", config={"host": "127.0.0.1"}, is_default=False)
        project_id = uuid.UUID(web["project_id"])
        async with await psycopg.AsyncConnection.connect(keyed.database_url, autocommit=True) as conn:
            assert web["is_default"]
            assert not ios["is_default"]
            chosen = await service.choose(conn, keyring, project_id, "push")
            assert chosen is not None
            assert chosen.id == uuid.UUID(web["id"]), "the channel's default"
            for_ios = await service.choose(conn, keyring, project_id, "push", os="ios")
            assert for_ios is not None
            assert for_ios.kind == "apns"
            assert for_ios.secrets == {"private_key": apns.private_key_pem}
            assert await service.choose(conn, keyring, project_id, "push", os="android") is None
            only = await service.choose(conn, keyring, project_id, "email")
            assert only is not None
            assert only.id == uuid.UUID(mail["id"]), "no default: the oldest"
            assert await service.choose(conn, keyring, project_id, "sms") is None
            assert await service.choose(conn, keyring, uuid.uuid4(), "push") is None, "scoped by project"

            registry = service.ProviderRegistry(ssl_context=TLS.client_context())
            try:
                built = registry.provider(for_ios)
                assert registry.provider(for_ios) is built
                assert (await built.send(push(to=TOKEN))).status == "sent"
                admin.patch(f"/admin/providers/{ios['id']}", json={"config": {**ios["config"], "sound": "chime"}})
                changed = await service.load(conn, keyring, project_id, uuid.UUID(ios["id"]))
                assert changed is not None
                rebuilt = registry.provider(changed)
                assert rebuilt is not built
                assert (await rebuilt.send(push(to=TOKEN))).status == "sent"
                assert apns.wait_for(2)[1].payload["aps"]["sound"] == "chime"
            finally:
                await registry.aclose()
    fresh.stop()
