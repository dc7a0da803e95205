"""Real servers on loopback speaking each messaging provider's wire format, for tests and benchmarks.

Each runs in a thread of its own (so sync tests, async tests and `lunogram serve` subprocesses can all
talk to it), checks what the real service checks (credentials, signatures, tokens), decodes what it
receives, and can be told how to answer next:

    with SmtpServer(users={"u": "p"}) as smtp:          # or .start() / .stop()
        ... send ...
        [email] = smtp.wait_for(1)                     # ReceivedEmail: to, subject, text, html, headers ...
    server.fail_next(429, times=2, headers={"Retry-After": "7"})   # the next two requests get a 429

Servers: SmtpServer (aiosmtpd: plain, STARTTLS or implicit TLS, AUTH), SesServer (verifies SigV4),
SendgridServer, MailgunServer, PostmarkServer, TwilioServer, VonageServer, WhatsappServer, FcmServer (with
its OAuth2 token endpoint verifying the service account's JWT), WebPushServer (decrypts each push with the
subscription's private key and checks the VAPID JWT), ApnsServer (HTTP/2 over TLS, checks the provider
token) and WebhookServer. `messages` holds what was accepted, decoded; `requests` every HTTP request.
TLS servers use `TLS.cert_file` (self-signed for 127.0.0.1 and localhost): trust it with
`TLS.client_context()` or `SSL_CERT_FILE=TLS.cert_file` in a server's environment.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, quote, urlsplit

import h2.config
import h2.connection
import h2.events
import http_ece
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServerProtocol
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from helpers import free_port

T = TypeVar("T")


# -- TLS ----------------------------------------------------------------------------------------------------


class _Tls:
    """One self-signed certificate for 127.0.0.1 and localhost, made on first use, in a temp dir."""

    _made: tuple[Path, Path] | None = None
    _lock = threading.Lock()

    def _files(self) -> tuple[Path, Path]:
        with self._lock:
            if self._made is None:
                key = ec.generate_private_key(ec.SECP256R1())
                name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lunogram test server")])
                now = datetime.now(UTC)
                cert = (
                    x509.CertificateBuilder()
                    .subject_name(name)
                    .issuer_name(name)
                    .public_key(key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now - timedelta(days=1))
                    .not_valid_after(now + timedelta(days=30))
                    .add_extension(
                        x509.SubjectAlternativeName(
                            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                        ),
                        critical=False,
                    )
                    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                    .sign(key, hashes.SHA256())
                )
                folder = Path(tempfile.mkdtemp(prefix="lunogram-test-tls-"))
                cert_file, key_file = folder / "cert.pem", folder / "key.pem"
                cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
                key_file.write_bytes(
                    key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                )
                self._made = (cert_file, key_file)
            return self._made

    @property
    def cert_file(self) -> Path:
        return self._files()[0]

    def server_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        cert_file, key_file = self._files()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        if alpn:
            context.set_alpn_protocols(alpn)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert_file))


TLS = _Tls()


# -- what the servers record --------------------------------------------------------------------------------


@dataclass
class ReceivedEmail:
    mail_from: str  # the envelope sender (SMTP) or the From address
    to: list[str]
    subject: str
    text: str | None
    html: str | None
    headers: dict[str, str]  # as received; lookups by exact name (e.g. "List-Unsubscribe")
    from_header: str = ""
    reply_to: str | None = None
    message_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # provider-specific fields (tags, metadata ...)


@dataclass
class ReceivedSms:
    to: str
    sender: str
    body: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReceivedPush:
    token: str  # the device token, or the Web Push endpoint
    title: str | None
    body: str | None
    data: dict[str, Any]
    url: str | None
    headers: dict[str, str]
    payload: Any  # the whole decoded payload


@dataclass
class ReceivedRequest:
    method: str
    path: str  # without the query
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))


@dataclass
class Reply:
    status: int
    body: Any = None  # bytes, or something JSON
    headers: dict[str, str] = field(default_factory=dict)


class Recorder(Generic[T]):
    """A thread-safe list that tests can wait on."""

    def __init__(self) -> None:
        self._items: list[T] = []
        self._changed = threading.Condition()

    def add(self, item: T) -> None:
        with self._changed:
            self._items.append(item)
            self._changed.notify_all()

    def __len__(self) -> int:
        with self._changed:
            return len(self._items)

    def __getitem__(self, index: int) -> T:
        with self._changed:
            return self._items[index]

    def __iter__(self) -> Any:
        with self._changed:
            return iter(list(self._items))

    def snapshot(self) -> list[T]:
        with self._changed:
            return list(self._items)

    def clear(self) -> None:
        with self._changed:
            self._items.clear()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[T]:
        """At least `count` items (all of them); AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._items) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} item(s), got {len(self._items)}: {self._items!r}")
                self._changed.wait(left)
            return list(self._items)


class _Script:
    """Answers queued by `fail_next`, taken one per request."""

    def __init__(self) -> None:
        self._queue: list[Reply] = []
        self._lock = threading.Lock()

    def push(self, reply: Reply, times: int) -> None:
        with self._lock:
            self._queue.extend([reply] * times)

    def take(self) -> Reply | None:
        with self._lock:
            return self._queue.pop(0) if self._queue else None


# -- HTTP/1.1 servers ---------------------------------------------------------------------------------------


class FakeHttpServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 (https with `tls`: the test certificate, `TLS`); subclasses
    answer in `handle`."""

    tls = False

    def __init__(self) -> None:
        self.requests: Recorder[ReceivedRequest] = Recorder()
        self._script = _Script()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # what tests use
    @property
    def port(self) -> int:
        assert self._server is not None, "start() the server first"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def fail_next(
        self, status: int, times: int = 1, *, headers: dict[str, str] | None = None, body: Any = None
    ) -> None:
        """The next `times` requests get `status` (with the provider's own error body unless `body`)."""
        self._script.push(Reply(status, body if body is not None else self.error_body(status), headers or {}), times)

    def start(self) -> FakeHttpServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = ReceivedRequest(
                    method=self.command,
                    path=parts.path,
                    query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                outer.requests.add(request)
                reply = outer._script.take()
                if reply is None:
                    try:
                        reply = outer.handle(request, self.path)
                    except Exception as exc:  # a bug in a fake server should show, not hang the client
                        reply = Reply(599, {"fake_server_error": repr(exc)})
                raw = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                if reply.body is None:
                    raw = b""
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.body is not None and not isinstance(reply.body, bytes):
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        if self.tls:
            self._server.socket = TLS.server_context().wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self: T) -> T:
        self.start()  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # what subclasses define
    def handle(self, request: ReceivedRequest, raw_path: str) -> Reply:
        raise NotImplementedError

    def error_body(self, status: int) -> Any:
        return {"error": f"scripted {status}"}


class _MessageServer(FakeHttpServer, Generic[T]):
    def __init__(self) -> None:
        super().__init__()
        self.messages: Recorder[T] = Recorder()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[T]:
        return self.messages.wait_for(count, timeout)


def _basic(request: ReceivedRequest) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    return user, password


def _split_address(value: str) -> str:
    return email.utils.parseaddr(value)[1]


# SES v2 --------------------------------------------------------------------------------------------------


def sigv4_expected(
    method: str, raw_path: str, headers: dict[str, str], body: bytes, secret_key: str, authorization: str
) -> tuple[bool, str]:
    """Recompute a SigV4 Authorization from the request as received; (matches, why not)."""
    try:
        algorithm, _, rest = authorization.partition(" ")
        fields = dict(part.strip().split("=", 1) for part in rest.split(","))
        credential, signed, signature = fields["Credential"], fields["SignedHeaders"], fields["Signature"]
        _access, datestamp, region, service, terminator = credential.split("/")
    except (ValueError, KeyError):
        return False, "malformed Authorization"
    if algorithm != "AWS4-HMAC-SHA256" or terminator != "aws4_request":
        return False, "unknown algorithm or scope"
    lower = {k.lower(): v for k, v in headers.items()}
    names = signed.split(";")
    if "host" not in names or "x-amz-date" not in names:
        return False, "host and x-amz-date must be signed"
    if not lower.get("x-amz-date", "").startswith(datestamp):
        return False, "x-amz-date is not the credential's date"
    path, _, query = raw_path.partition("?")
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(parse_qsl(query, keep_blank_values=True))
    )
    canonical_headers = "".join(f"{n}:{' '.join(lower.get(n, '').strip().split())}\n" for n in names)
    canonical = "\n".join(
        [method, quote(path, safe="/~"), canonical_query, canonical_headers, signed, hashlib.sha256(body).hexdigest()]
    )
    scope = f"{datestamp}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", lower["x-amz-date"], scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{secret_key}".encode()
    for part in (datestamp, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature), "signature does not match"


class SesServer(_MessageServer[ReceivedEmail]):
    """`POST /v2/email/outbound-emails`, SigV4 checked with the known key pair."""

    def __init__(
        self,
        access_key_id: str = "AKIDLUNOGRAMTEST0001",
        secret_access_key: str = "test/secret+key",
        region: str = "eu-west-1",
    ) -> None:
        super().__init__()
        self.access_key_id, self.secret_access_key, self.region = access_key_id, secret_access_key, region

    def error_body(self, status: int) -> Any:
        return {"message": f"scripted {status}"}

    def handle(self, request: ReceivedRequest, raw_path: str) -> Reply:
        if request.method != "POST" or request.path != "/v2/email/outbound-emails":
            return Reply(404, {"message": "unknown operation"})
        authorization = request.headers.get("authorization", "")
        if f"Credential={self.access_key_id}/" not in authorization or f"/{self.region}/ses/" not in authorization:
            return Reply(
                403,
                {"message": "The security token included in the request is invalid."},
                {"x-amzn-ErrorType": "UnrecognizedClientException"},
            )
        valid, why = sigv4_expected(
            "POST", raw_path, request.headers, request.body, self.secret_access_key, authorization
        )
        if not valid:
            return Reply(
                403,
                {"message": f"SignatureDoesNotMatch: {why}"},
                {"x-amzn-ErrorType": "SignatureDoesNotMatchException"},
            )
        body = request.json()
        simple = body["Content"]["Simple"]
        message_id = f"ses-{uuid.uuid4()}"
        self.messages.add(
            ReceivedEmail(
                mail_from=_split_address(body["FromEmailAddress"]),
                from_header=body["FromEmailAddress"],
                to=list(body["Destination"]["ToAddresses"]),
                subject=simple["Subject"]["Data"],
                text=(simple["Body"].get("Text") or {}).get("Data"),
                html=(simple["Body"].get("Html") or {}).get("Data"),
                headers={h["Name"]: h["Value"] for h in simple.get("Headers", [])},
                reply_to=(body.get("ReplyToAddresses") or [None])[0],
                message_id=message_id,
                extra={
                    "tags": {t["Name"]: t["Value"] for t in body.get("EmailTags", [])},
                    "configuration_set": body.get("ConfigurationSetName"),
                },
            )
        )
        return Reply(200, {"MessageId": message_id})


class SendgridServer(_MessageServer[ReceivedEmail]):
    def __init__(self, api_key: str = "SG.test-key") -> None:
        super().__init__()
        self.api_key = api_key

    def error_body(self, status: int) -> Any:
        return {"errors": [{"message": f"scripted {status}", "field": None}]}

    def handle(self, request: ReceivedRequest, raw_path: str) -> Reply:
        if request.path != "/v3/mail/send":
            return Reply(404, {"errors": [{"message": "not found"}]})
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return Reply(401, {"errors": [{"message": "The provided authorization grant is invalid", "field": None}]})
        body = request.json()
        personalization = body["personalizations"][0]
        content = {part["type"]: part["value"] for part in body["content"]}
        if [part["type"] for part in body["content"]][:1] == ["text/html"] and "text/plain" in content:
            return Reply(400, {"errors": [{"message": "text/plain must come first", "field": "content"}]})
        sender = body["from"]
        message_id = f"sg-{uuid.uuid4().hex[:16]}"
        self.messages.add(
            ReceivedEmail(
                mail_from=sender["email"],
                from_header=f"{sender.get('name', '')} <{sender['email']}>",
                to=[t["email"] for t in personalization["to"]],
                subject=body["subject"],
                text=content.get("text/plain"),
                html=content.get("text/html"),
                headers=dict(body.get("headers", {})),
                reply_to=(body.get("reply_to") or {}).get("email"),
                message_id=message_id,
                extra={"custom_args": personalization.get("custom_args", {}), "from_name": sender.get("name")},
            )
        )
        return Reply(202, None, {"X-Message-Id": message_id})


class MailgunServer(_MessageServer[ReceivedEmail]):
    def __init__(self, api_key: str = "key-test", domain: str = "mg.example.com") -> None:
        super().__init__()
        self.api_key, self.domain = api_key, domain

    def error_body(self, status: int) -> Any:
        return {"message": f"scripted {status}"}

    def handle(self, request: ReceivedRequest, raw_path: str) -> Reply:
        if request.path != f"/v3/{self.domain}/messages":
            return Reply(404, {"message": "Domain not found"})
        if _basic(request) != ("api", self.api_key):
            return Reply(401, b"Forbidden")
        form = request.form()
        message_id = f"<{uuid.uuid4().hex}@{self.domain}>"
        self.messages.add(
            ReceivedEmail(
                mail_from=_split_address(form["from"]),
                from_header=form["from"],
                to=[form["to"]],
                subject=form.get("subject", ""),
                text=form.get("text"),
                html=form.get("html"),
                headers={k[2:]: v for k, v in form.items() if k.startswith("h:") and k != "h:Reply-To"},
                reply_to=form.get("h:Reply-To"),
                message_id=message_id,
                extra={"variables": {k[2:]: v for k, v in form.items() if k.startswith("v:")}},
            )
        )
        return Reply(200, {"id": message_id, "message": "Queued. Thank you."})


class PostmarkServer(_MessageServer[ReceivedEmail]):
    def __init__(self, server_token: str = "pm-test-token") -> None:
        super().__init__()
        self.server_token = server_token
        self.inactive: set[str] = set()  # recipients answered with ErrorCode 406

    def error_body(self, status: int) -> Any:
        return {"ErrorCode": 300 if status == 422 else 100, "Message": f"scripted {status}"}

    def handle(self, request: ReceivedRequest, raw_path: str) -> Reply:
        if request.path != "/email":
            return Reply(404, {"ErrorCode": 404, "Message": "not found"})
        if request.headers.get("x-postmark-server-token") != self.server_token:
            return Reply(
                401,
                {
                    "ErrorCode": 10,
                    "Message": "The Server Token you provided in the request header was invalid.",
                },
            )
        body = request.json()
        if body["To"] in self.inactive:
            return Reply(
                422,
                {"ErrorCode": 406, "Message": "You tried to send to recipient(s) that have been marked as inactive."},
            )
        message_id = str(uuid.uuid4())
        self.messages.add(
            ReceivedEmail(
                mail_from=_split_address(body["From"]),
                from_header=body["From"],
                to=[body["To"]],
                subject=body.get("Subject", ""),
                text=body.get("TextBody"),
                html=body.get("HtmlBody"),
                headers={h["Name"]: h["Value"] for h in body.get("Headers", [])},
                reply_to=body.get("ReplyTo"),
                message_id=message_id,
                extra={"metadata": body.get("Metadata", {}), "message_stream": body.get("MessageStream")},
            )
        )
        return Reply(
            200,
            {
                "To": body["To"],
                "SubmittedAt": datetime.now(UTC).isoformat(),
                "MessageID": message_id,
                "ErrorCode": 0,
                "Message": "OK",
            },
        )


class TwilioServer(_MessageServer[ReceivedSms]):
    def __init__(self, account_sid: str = "AC" + "0123456789abcdef" * 2, auth_token: str = "twilio-token") -> None:
        super().__init__()
        self.account_sid, self.auth_token = account_sid, auth_token
        self.invalid_numbers: set[str] = set()  # answered with error 21211

    def error_body(self, status: int) -> Any:
        return {"code": 20429 if status == 429 else 20500, "message": f"scripted {status}", "status": status}

    def handle(self, request: ReceivedRequest, raw_path: str) -> Reply:
        if request.path != f"/2010-04-01/Accounts/{self.account_sid}/Messages.json":
            return Reply(404, {"code": 20404, "message": "not found", "status": 404})
        if _basic(request) != (self.account_sid, self.auth_token):
            return Reply(401, {"code": 20003, "message": "Authenticate", "status": 401})
        form = request.form()
        if form["To"] in self.invalid_numbers:
            return Reply(
                400,
                {"code": 21211, "message": f"The 'To' number {form['To']} is not a valid phone number.", "status": 400},
            )
        sid = "SM" + uuid.uuid4().hex
        self.messages.add(
            ReceivedSms(
                to=form["To"],
                sender=form.get("From") or form.get("MessagingServiceSid", ""),
                body=form["Body"],
                extra=form,
            )
        )
        return Reply(201, {"sid": sid, "status": "queued", "to": form["To"], "body": form["Body"]})


class VonageServer(_MessageServer[ReceivedSms]):
    def __init__(self, api_key: str = "vonage-key", api_secret: str = "vonage-secret") -> None:
        super().__init__()
        self.api_key, self.api_secret = api_key, api_secret
        self.barred: set[str] = set()  # numbers answered with status 7
        self._statuses = _Script()

    def status_next(self, status: str, error_text: str, times: int = 1) -> None:
        """Vonage answers 200 with a per-message status: the next `times` get this one."""
        self._statuses.push(Reply(200, {"status": status, "error-text": error_text}), times)

    def handle(self, request: ReceivedRequest, raw_path: str) -> Reply:
        if request.path != "/sms/json":
            return Reply(404, {"error-text": "not found"})
        form = request.form()
        if (form.get("api_key"), form.get("api_secret")) != (self.api_key, self.api_secret):
            return Reply(200, {"message-count": "1", "messages": [{"status": "4", "error-text": "Bad Credentials"}]})
        scripted = self._statuses.take()
        if scripted is not None:
            return Reply(200, {"message-count": "1", "messages": [{**scripted.body, "to": form["to"]}]})
        if form["to"] in self.barred:
            return Reply(
                200,
                {"message-count": "1", "messages": [{"status": "7", "error-text": "Number barred.", "to": form["to"]}]},
            )
        message_id = uuid.uuid4().hex[:16]
        self.messages.add(ReceivedSms(to=form["to"], sender=form["from"], body=form["text"], extra=form))
        return Reply(
            200, {"message-count": "1", "messages": [{"to": form["to"], "message-id": message_id, "status": "0"}]}
        )


class WhatsappServer(_MessageServer[ReceivedSms]):
    def __init__(
        self, phone_number_id: str = "1234567890", access_token: str = "wa-token", version: str = "v21.0"
    ) -> None:
        super().__init__()
        self.phone_number_id, self.access_token, self.version = phone_number_id, access_token, version

    def error_body(self, status: int) -> Any:
        code = 130429 if status == 429 else 131000
        return {"error": {"message": f"scripted {status}", "type": "OAuthException", "code": code}}

    def handle(self, request: ReceivedRequest, raw_path: str) -> Reply:
        if request.path != f"/{self.version}/{self.phone_number_id}/messages":
            return Reply(404, {"error": {"message": "Unknown path", "code": 803}})
        if request.headers.get("authorization") != f"Bearer {self.access_token}":
            return Reply(
                401, {"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}}
            )
        body = request.json()
        if body.get("messaging_product") != "whatsapp":
            return Reply(400, {"error": {"message": "messaging_product is required", "code": 100}})
        text = (body.get("text") or {}).get("body", "")
        message_id = "wamid." + uuid.uuid4().hex
        self.messages.add(ReceivedSms(to=body["to"], sender=self.phone_number_id, body=text, extra=body))
        return Reply(
            200,
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                "messages": [{"id": message_id}],
            },
        )


class WebhookServer(_MessageServer[ReceivedRequest]):
    """Answers 200 `{"ok": true}` to anything; `messages` are the requests it answered so."""

    def handle(self, request: ReceivedRequest, raw_path: str) -> Reply:
        self.messages.add(request)
        return Reply(200, {"ok": True})


# -- JWT checks ---------------------------------------------------------------------------------------------


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_jwt(
    token: str, public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a JWT signed by `public_key` (ES256 or RS256); ValueError otherwise."""
    try:
        head, claims, signature = token.split(".")
    except ValueError:
        raise ValueError("not a JWT") from None
    header = json.loads(_b64d(head))
    signed = f"{head}.{claims}".encode()
    raw = _b64d(signature)
    try:
        if header.get("alg") == "ES256" and isinstance(public_key, ec.EllipticCurvePublicKey):
            if len(raw) != 64:
                raise ValueError("ES256 signatures are 64 bytes")
            der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
            public_key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
        elif header.get("alg") == "RS256" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(raw, signed, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise ValueError(f"unexpected alg {header.get('alg')}")
    except InvalidSignature:
        raise ValueError("bad signature") from None
    return header, json.loads(_b64d(claims))


def _push_from(
    token: str,
    payload: Any,
    headers: dict[str, str],
    *,
    title: str | None,
    body: str | None,
    data: dict[str, Any],
    url: str | None,
) -> ReceivedPush:
    return ReceivedPush(token=token, title=title, body=body, data=data, url=url, headers=headers, payload=payload)


# -- FCM ----------------------------------------------------------------------------------------------------


class FcmServer(_MessageServer[ReceivedPush]):
    """FCM HTTP v1 and the OAuth2 token endpoint of its service account (`/token`), both checked."""

    def __init__(self, project_id: str = "lunogram-test") -> None:
        super().__init__()
        self.project_id = project_id
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.client_email = f"sender@{project_id}.iam.gserviceaccount.com"
        self.private_key_id = secrets.token_hex(8)
        self.unregistered: set[str] = set()  # tokens answered with UNREGISTERED
        self.tokens_issued: Recorder[str] = Recorder()
        self._valid_tokens: set[str] = set()

    def service_account(self) -> dict[str, Any]:
        """A service account key file whose token_uri is this server."""
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": self._key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
            "client_email": self.client_email,
            "client_id": "1234567890",
            "token_uri": f"{self.base_url}/token",
        }

    def revoke_tokens(self) -> None:
        """Every access token issued so far stops working (the next send gets a 401)."""
        self._valid_tokens.clear()

    def error_body(self, status: int) -> Any:
        names = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 400: "INVALID_ARGUMENT"}
        codes = {429: "QUOTA_EXCEEDED", 500: "INTERNAL", 503: "UNAVAILABLE", 400: "INVALID_ARGUMENT"}
        return {
            "error": {
                "code": status,
                "message": f"scripted {status}",
                "status": names.get(status, "UNKNOWN"),
                "details": [
                    {
                        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                        "errorCode": codes.get(status, "UNSPECIFIED_ERROR"),
                    }
                ],
            }
        }

    def handle(self, request: ReceivedRequest, raw_path: str) -> Reply:
        if request.path == "/token":
            return self._token(request)
        if request.path != f"/v1/projects/{self.project_id}/messages:send":
            return Reply(404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}})
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if bearer not in self._valid_tokens:
            return Reply(
                401,
                {
                    "error": {
                        "code": 401,
                        "message": "Request had invalid authentication credentials.",
                        "status": "UNAUTHENTICATED",
                    }
                },
            )
        message = request.json()["message"]
        token = message["token"]
        if token in self.unregistered:
            return Reply(
                404,
                {
                    "error": {
                        "code": 404,
                        "message": "Requested entity was not found.",
                        "status": "NOT_FOUND",
                        "details": [
                            {
                                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                "errorCode": "UNREGISTERED",
                            }
                        ],
                    }
                },
            )
        data = dict(message.get("data", {}))
        if any(not isinstance(v, str) for v in data.values()):
            return Reply(
                400, {"error": {"code": 400, "message": "data values must be strings", "status": "INVALID_ARGUMENT"}}
            )
        notification = message.get("notification", {})
        self.messages.add(
            _push_from(
                token,
                message,
                request.headers,
                title=notification.get("title"),
                body=notification.get("body"),
                data=data,
                url=data.get("url"),
            )
        )
        return Reply(200, {"name": f"projects/{self.project_id}/messages/{uuid.uuid4().int % 10**16}"})

    def _token(self, request: ReceivedRequest) -> Reply:
        form = request.form()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return Reply(400, {"error": "unsupported_grant_type"})
        try:
            header, claims = verify_jwt(form.get("assertion", ""), self._key.public_key())
        except ValueError as exc:
            return Reply(400, {"error": "invalid_grant", "error_description": f"Invalid JWT Signature: {exc}"})
        now = time.time()
        problems = [
            claims.get("iss") != self.client_email and "iss",
            claims.get("aud") != f"{self.base_url}/token" and "aud",
            claims.get("scope") != "https://www.googleapis.com/auth/firebase.messaging" and "scope",
            not (claims.get("iat", 0) <= now + 60 and claims.get("exp", 0) > now) and "iat/exp",
            header.get("kid") not in (None, self.private_key_id) and "kid",
        ]
        if any(problems):
            return Reply(
                400, {"error": "invalid_grant", "error_description": f"bad claims: {[p for p in problems if p]}"}
            )
        token = "ya29." + secrets.token_urlsafe(24)
        self._valid_tokens.add(token)
        self.tokens_issued.add(token)
        return Reply(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})


# -- Web Push -----------------------------------------------------------------------------------------------


@dataclass
class _Subscription:
    key: ec.EllipticCurvePrivateKey
    auth: bytes


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class WebPushServer(_MessageServer[ReceivedPush]):
    """A push service: `subscribe()` makes a browser-like subscription whose pushes it decrypts (RFC 8291)
    after checking the VAPID JWT (RFC 8292) against `vapid_public_key` when set."""

    def __init__(self, vapid_public_key: str | None = None, *, tls: bool = False) -> None:
        super().__init__()
        self.tls = tls  # browsers' push services are https: device registration requires it
        self.vapid_public_key = vapid_public_key
        self._subscriptions: dict[str, _Subscription] = {}
        self.gone: set[str] = set()  # endpoints answered with 410

    def subscribe(self) -> dict[str, Any]:
        """A subscription as `PushSubscription.toJSON()` gives it: {endpoint, keys: {p256dh, auth}}."""
        key = ec.generate_private_key(ec.SECP256R1())
        auth = os.urandom(16)
        name = uuid.uuid4().hex
        self._subscriptions[name] = _Subscription(key, auth)
        public = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {"endpoint": f"{self.base_url}/push/{name}", "keys": {"p256dh": _b64e(public), "auth": _b64e(auth)}}

    def handle(self, request: ReceivedRequest, raw_path: str) -> Reply:
        name = request.path.removeprefix("/push/")
        endpoint = f"{self.base_url}/push/{name}"
        subscription = self._subscriptions.get(name)
        if subscription is None or endpoint in self.gone:
            return Reply(410, {"reason": "push subscription has unsubscribed or expired"})
        problem = self._check_vapid(request.headers.get("authorization", ""))
        if problem:
            return Reply(403, {"reason": problem})
        if request.headers.get("content-encoding") != "aes128gcm" or "ttl" not in request.headers:
            return Reply(400, {"reason": "Content-Encoding aes128gcm and TTL are required"})
        try:
            plaintext = http_ece.decrypt(
                request.body, private_key=subscription.key, auth_secret=subscription.auth, version="aes128gcm"
            )
        except Exception as exc:
            return Reply(400, {"reason": f"cannot decrypt: {exc}"})
        payload = json.loads(plaintext)
        self.messages.add(
            _push_from(
                endpoint,
                payload,
                request.headers,
                title=payload.get("title"),
                body=payload.get("body"),
                data=payload.get("data", {}),
                url=payload.get("url"),
            )
        )
        return Reply(201, None, {"Location": f"{self.base_url}/message/{uuid.uuid4().hex}"})

    def _check_vapid(self, authorization: str) -> str | None:
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() != "vapid":
            return "Authorization must be vapid t=...,k=..."
        parts = dict(part.strip().split("=", 1) for part in rest.split(",") if "=" in part)
        if "t" not in parts or "k" not in parts:
            return "vapid needs t and k"
        if self.vapid_public_key is not None and parts["k"].rstrip("=") != self.vapid_public_key.rstrip("="):
            return "k is not the application server key the subscription was made with"
        try:
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _b64d(parts["k"]))
            _, claims = verify_jwt(parts["t"], public)
        except ValueError as exc:
            return f"vapid: {exc}"
        if claims.get("aud") != self.base_url:
            return f"vapid: aud {claims.get('aud')!r} is not {self.base_url!r}"
        if not time.time() < claims.get("exp", 0) <= time.time() + 86_400:
            return "vapid: exp must be within 24 hours"
        if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
            return "vapid: sub must be mailto: or https:"
        return None


# -- APNs (HTTP/2 over TLS) ---------------------------------------------------------------------------------


class ApnsServer:
    """APNs over HTTP/2 with TLS: checks the provider token (ES256, kid, iss), apns-topic and apns-id;
    `unregistered` tokens get 410 Unregistered. `drop_next(n)` closes the connection on the next n
    requests without answering (what APNs does to connections it considers idle)."""

    def __init__(self, topic: str = "com.example.app", team_id: str = "TEAM123456", key_id: str = "KEY1234567") -> None:
        self.topic, self.team_id, self.key_id = topic, team_id, key_id
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.messages: Recorder[ReceivedPush] = Recorder()
        self.requests: Recorder[ReceivedRequest] = Recorder()
        self.unregistered: set[str] = set()
        self.connections = 0
        self.tokens_seen: set[str] = set()
        self._script = _Script()
        self._drops = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def private_key_pem(self) -> str:
        """The .p8 key file's text."""
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def wait_for(self, count: int, timeout: float = 15.0) -> list[ReceivedPush]:
        return self.messages.wait_for(count, timeout)

    def fail_next(
        self, status: int, times: int = 1, *, reason: str = "ServiceUnavailable", headers: dict[str, str] | None = None
    ) -> None:
        self._script.push(Reply(status, {"reason": reason}, headers or {}), times)

    def drop_next(self, times: int = 1) -> None:
        with self._lock:
            self._drops += times

    def start(self) -> ApnsServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            context = TLS.server_context(alpn=["h2"])
            self._server = loop.run_until_complete(
                loop.create_server(lambda: _H2Protocol(self), "127.0.0.1", free_port(), ssl=context)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the APNs test server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._thread is not None
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> ApnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _take_drop(self) -> bool:
        with self._lock:
            if self._drops:
                self._drops -= 1
                return True
            return False

    def answer(self, headers: dict[str, str], body: bytes) -> Reply:
        path = headers.get(":path", "")
        request = ReceivedRequest(headers.get(":method", ""), path, {}, headers, body)
        self.requests.add(request)
        scripted = self._script.take()
        if scripted is not None:
            return scripted
        auth = headers.get("authorization", "")
        if not auth.startswith("bearer "):
            return Reply(403, {"reason": "MissingProviderToken"})
        try:
            header, claims = verify_jwt(auth[7:], self._key.public_key())
        except ValueError:
            return Reply(403, {"reason": "InvalidProviderToken"})
        if header.get("kid") != self.key_id or claims.get("iss") != self.team_id:
            return Reply(403, {"reason": "InvalidProviderToken"})
        if not time.time() - 3600 < claims.get("iat", 0) <= time.time() + 60:
            return Reply(403, {"reason": "ExpiredProviderToken"})
        self.tokens_seen.add(auth[7:])
        if headers.get(":method") != "POST" or not path.startswith("/3/device/"):
            return Reply(404, {"reason": "BadPath"})
        if headers.get("apns-topic") != self.topic:
            return Reply(400, {"reason": "DeviceTokenNotForTopic" if headers.get("apns-topic") else "MissingTopic"})
        apns_id = headers.get("apns-id") or str(uuid.uuid4())
        try:
            uuid.UUID(apns_id)
        except ValueError:
            return Reply(400, {"reason": "BadMessageId"})
        token = path.removeprefix("/3/device/")
        if token in self.unregistered:
            return Reply(410, {"reason": "Unregistered", "timestamp": int(time.time() * 1000)})
        payload = json.loads(body)
        alert = payload.get("aps", {}).get("alert", {})
        data = {k: v for k, v in payload.items() if k != "aps"}
        self.messages.add(
            _push_from(
                token,
                payload,
                headers,
                title=alert.get("title"),
                body=alert.get("body"),
                data=data,
                url=payload.get("url"),
            )
        )
        return Reply(200, None, {"apns-id": apns_id})


class _H2Protocol(asyncio.Protocol):
    def __init__(self, server: ApnsServer) -> None:
        self.server = server
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        with self.server._lock:
            self.server.connections += 1
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            events = self.conn.receive_data(data)
        except Exception:
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                if self.server._take_drop():
                    self.transport.abort()
                    return
                self.streams[event.stream_id] = ({k: v for k, v in event.headers}, bytearray())  # type: ignore[misc]
            elif isinstance(event, h2.events.DataReceived):
                self.streams[event.stream_id][1].extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                headers, body = self.streams.pop(event.stream_id)
                reply = self.server.answer(headers, bytes(body))
                raw = b"" if reply.body is None else json.dumps(reply.body).encode()
                response_headers = [(":status", str(reply.status)), *reply.headers.items()]
                if raw:
                    response_headers.append(("content-type", "application/json"))
                self.conn.send_headers(event.stream_id, response_headers, end_stream=not raw)
                if raw:
                    self.conn.send_data(event.stream_id, raw, end_stream=True)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.transport.close()
        self.transport.write(self.conn.data_to_send())


# -- SMTP ---------------------------------------------------------------------------------------------------


class _ChunkingSmtp(SMTPServerProtocol):
    """aiosmtpd with BDAT (RFC 3030 CHUNKING), which it lacks: a chunk is read whole, whatever the answer
    (the size says where the next command starts); the last one hands the message to the handler's
    handle_DATA as DATA would, so one handler serves both."""

    async def smtp_BDAT(self, arg: str) -> None:
        size, _, last = arg.strip().partition(" ")
        if not size.isdigit() or last.strip().upper() not in ("", "LAST"):
            await self.push("501 5.5.4 Syntax: BDAT <size> [LAST]")
            return
        chunk = await self._reader.readexactly(int(size))
        if await self.check_helo_needed() or await self.check_auth_needed("BDAT"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            self.envelope = self._create_envelope()  # the transaction is over; its bytes are dropped
            await self.push("554 5.5.1 no valid recipients")
            return
        content = bytes(self.envelope.original_content or b"") + chunk
        self.envelope.original_content = content
        if not last.strip():
            await self.push(f"250 2.0.0 {len(chunk)} octets received")
            return
        self.envelope.content = content
        setattr(self.envelope, "chunked", True)  # noqa: B010 - an attribute aiosmtpd's Envelope does not declare
        status = await self._call_handler_hook("DATA")
        self.envelope = self._create_envelope()
        await self.push(status)


class _ChunkingController(Controller):
    def factory(self) -> SMTPServerProtocol:
        return _ChunkingSmtp(self.handler, **self.SMTP_kwargs)


class SmtpServer:
    """aiosmtpd on 127.0.0.1: `security` "none" (plain), "starttls" or "tls" (implicit); with `users`, AUTH
    PLAIN/LOGIN is required and checked (a bad login gets 535, not a hang). With `pipelining` it offers
    PIPELINING (RFC 2920; aiosmtpd reads commands one line at a time, so it takes them pipelined as well);
    with `chunking` also CHUNKING (RFC 3030: BDAT)."""

    def __init__(
        self,
        *,
        security: str = "none",
        users: dict[str, str] | None = None,
        pipelining: bool = True,
        chunking: bool = False,
    ) -> None:
        self.security = security
        self.users = users
        self.pipelining = pipelining
        self.chunking = chunking
        self.messages: Recorder[ReceivedEmail] = Recorder()
        self.rejected: set[str] = set()  # recipients refused with 550 at RCPT
        self.sessions = 0  # connections that said EHLO
        self.auth_failures = 0
        self._script = _Script()
        self._lock = threading.Lock()
        self.port = free_port()
        self._controller: Controller | None = None

    def fail_next(self, code: int, times: int = 1, text: str = "scripted failure") -> None:
        """The next `times` messages are refused at DATA with `code text` (e.g. 451 or 554)."""
        self._script.push(Reply(code, text), times)

    def wait_for(self, count: int, timeout: float = 15.0) -> list[ReceivedEmail]:
        return self.messages.wait_for(count, timeout)

    def start(self) -> SmtpServer:
        outer = self

        class Handler:
            async def handle_EHLO(
                self,
                server: SMTPServerProtocol,
                session: Session,
                envelope: Envelope,
                hostname: str,
                responses: list[str],
            ) -> list[str]:
                with outer._lock:
                    outer.sessions += 1
                session.host_name = hostname  # type: ignore[attr-defined]
                if outer.pipelining and len(responses) > 1:
                    responses.insert(1, "250-PIPELINING")
                if outer.chunking and len(responses) > 1:
                    responses.insert(1, "250-CHUNKING")
                return responses

            async def handle_RCPT(
                self,
                server: SMTPServerProtocol,
                session: Session,
                envelope: Envelope,
                address: str,
                rcpt_options: list[str],
            ) -> str:
                if address in outer.rejected:
                    return "550 5.1.1 <" + address + ">: mailbox unavailable"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: SMTPServerProtocol, session: Session, envelope: Envelope) -> str:
                scripted = outer._script.take()
                if scripted is not None:
                    return f"{scripted.status} {scripted.body}"
                content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
                parsed = email.message_from_bytes(content, policy=email.policy.default)
                assert isinstance(parsed, EmailMessage)
                text = parsed.get_body(preferencelist=("plain",))
                html = parsed.get_body(preferencelist=("html",))
                outer.messages.add(
                    ReceivedEmail(
                        mail_from=str(envelope.mail_from),
                        to=list(envelope.rcpt_tos),
                        subject=str(parsed.get("Subject", "")),
                        text=text.get_content() if text is not None else None,
                        html=html.get_content() if html is not None else None,
                        headers={name: str(value) for name, value in parsed.items()},
                        from_header=str(parsed.get("From", "")),
                        reply_to=parsed.get("Reply-To"),
                        message_id=parsed.get("Message-ID"),
                        extra={
                            "raw": content,
                            "content_type": parsed.get_content_type(),
                            "authenticated": bool(getattr(session, "authenticated", False)),
                            "chunked": bool(getattr(envelope, "chunked", False)),  # came by BDAT
                        },
                    )
                )
                return "250 Message accepted for delivery"

        def authenticator(
            server: SMTPServerProtocol, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
        ) -> AuthResult:
            if isinstance(auth_data, LoginPassword) and outer.users is not None:
                user, password = auth_data.login.decode(), auth_data.password.decode()
                if outer.users.get(user) == password:
                    return AuthResult(success=True)
            with outer._lock:
                outer.auth_failures += 1
            # handled=False: aiosmtpd answers 535 itself (handled=True would leave the client waiting)
            return AuthResult(success=False, handled=False)

        options: dict[str, Any] = {"hostname": "127.0.0.1", "port": self.port, "ready_timeout": 10}
        if self.users is not None:
            # implicit TLS is TLS from the first byte, but aiosmtpd only counts STARTTLS as TLS for AUTH (and
            # warns "Requiring AUTH while not requiring TLS" at each connection: harmless here)
            options.update(
                authenticator=authenticator, auth_required=True, auth_require_tls=self.security == "starttls"
            )
        if self.security == "starttls":
            options.update(tls_context=TLS.server_context(), require_starttls=True)
        elif self.security == "tls":
            options.update(ssl_context=TLS.server_context(), server_hostname="127.0.0.1")
        self._controller = (_ChunkingController if self.chunking else Controller)(Handler(), **options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "TLS",
    "ApnsServer",
    "FakeHttpServer",
    "FcmServer",
    "MailgunServer",
    "PostmarkServer",
    "ReceivedEmail",
    "ReceivedPush",
    "ReceivedRequest",
    "ReceivedSms",
    "Recorder",
    "Reply",
    "SendgridServer",
    "SesServer",
    "SmtpServer",
    "TwilioServer",
    "VonageServer",
    "WebPushServer",
    "WebhookServer",
    "WhatsappServer",
    "sigv4_expected",
    "verify_jwt",
]
