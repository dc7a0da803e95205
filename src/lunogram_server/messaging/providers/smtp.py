"""Email over SMTP: plain, STARTTLS or implicit TLS, with AUTH when a username is set.

A small client of our own (RFC 5321) rather than a general library, for two reasons measured in
bench/sends.py (docs/performance.md, "Messaging"):

- PIPELINING (RFC 2920): when the server offers it, MAIL, RCPT and DATA go in one write and their three
  replies come back together, then the body: two round trips a message instead of four. A server that does
  not offer it gets one command at a time, as RFC 5321 asks.
- CHUNKING (RFC 3030) with PIPELINING: MAIL, RCPT and `BDAT <size> LAST` with the message itself go in one
  write, and the three replies come back together: one round trip a message, and the body is sent as it
  is, without the dot-stuffing DATA needs. The server reads exactly <size> bytes whatever it answers, so a
  refused recipient costs the transaction, not the connection. Postfix, Exchange and Gmail offer it.
- CPU: the general client cost about a fifth of the sender's process (a coroutine, a lock and a timer per
  command, line endings rewritten with a regular expression); here a message is two writes and two waits
  (one of each with CHUNKING).

Connections are kept and reused, up to `max_connections` at once: a new connection costs a TCP and TLS
handshake, EHLO and AUTH, several round trips that would otherwise come before every message. A kept
connection the server has since closed is noticed before the body is sent (nothing was accepted), and the
message goes again once on a fresh connection.

Every wait for the server is bounded by the provider's `timeout_seconds`. Replies map to outcomes as for
every provider: 4xx `retry`, 5xx `failed` (550, 551 or 553 at RCPT: the mailbox will never take mail, a
`permanent_address_problem`), no answer or a dropped connection `retry`.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import functools
import hashlib
import hmac
import re
import socket
import ssl
import time
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from lunogram_server.messaging.providers.base import (
    Channel,
    EmailConfig,
    Message,
    Outcome,
    default_ssl_context,
    network_outcome,
)
from lunogram_server.messaging.providers.mail import Email, prepare, to_bytes

_DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
_IDLE_SECONDS = 60.0  # a kept connection idle longer is closed rather than reused (servers drop idle ones)
# SMTP reply codes that say the mailbox itself will never take mail (RFC 5321 4.2.2, 4.2.3)
_BAD_MAILBOX = frozenset({550, 551, 553})
_MAX_REPLY_BYTES = 64 * 1024  # a reply longer than this is not an SMTP server talking
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LONE_LINE_END = re.compile(rb"\r\n|\r|\n")


class SmtpConfig(EmailConfig):
    host: str = Field(min_length=1, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535, description="default: 587, 465 with tls, 25 with none")
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = Field(default=None, min_length=1, max_length=255)
    validate_certs: bool = True
    local_hostname: str | None = Field(default=None, max_length=255, description="the name sent with EHLO")
    max_connections: int = Field(default=4, ge=1, le=50)

    @property
    def effective_port(self) -> int:
        return self.port or _DEFAULT_PORTS[self.security]


class SmtpSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    password: str | None = Field(default=None, max_length=1024)


class Reply(NamedTuple):
    code: int
    text: str


class SmtpDisconnected(ConnectionError):
    """The connection closed, or the server stopped answering (then it is closed by us)."""


class SmtpRefused(Exception):
    """A reply the session cannot go on after (greeting, EHLO, STARTTLS, AUTH)."""

    def __init__(self, reply: Reply, what: str) -> None:
        super().__init__(f"{what}: {reply.code} {' '.join(reply.text.split())}")
        self.reply = reply
        self.what = what


class SmtpUnsupported(Exception):
    """The server lacks what the configuration needs (STARTTLS, an AUTH mechanism)."""


class _Protocol(asyncio.Protocol):
    """Reads replies (multi-line ones joined) into a queue; `replies(n)` waits for the next n."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.error: Exception | None = None
        self._buffer = bytearray()
        self._lines: list[bytes] = []
        self._replies: collections.deque[Reply] = collections.deque()
        self.received = 0  # replies read so far
        self._waiter: asyncio.Future[None] | None = None
        self._wanted = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transport is no asyncio.Transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None:
            self.error = SmtpDisconnected(f"the server closed the connection{f': {exc}' if exc else ''}")
        self.transport = None
        self._wake()

    def eof_received(self) -> bool:
        return False  # close our side too

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end < 0:
                break
            line = bytes(self._buffer[start:end]).rstrip(b"\r")
            start = end + 1
            self._lines.append(line)
            if line[3:4] != b"-":  # the last line of a reply
                lines, self._lines = self._lines, []
                try:
                    code = int(line[:3])
                except ValueError:
                    self._fail(SmtpDisconnected(f"not an SMTP reply: {line[:100]!r}"))
                    return
                text = "\n".join(part[4:].decode("utf-8", "replace").strip() for part in lines)
                self._replies.append(Reply(code, text))
                self.received += 1
        del self._buffer[:start]
        if len(self._buffer) + sum(len(line) for line in self._lines) > _MAX_REPLY_BYTES:
            self._fail(SmtpDisconnected("the server's reply is too long"))
            return
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done() and (len(self._replies) >= self._wanted or self.error):
            waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def write(self, data: bytes) -> None:
        if self.transport is None or self.error is not None:
            raise self.error or SmtpDisconnected("not connected")
        self.transport.write(data)

    async def replies(self, count: int, within: float) -> list[Reply]:
        if len(self._replies) < count:
            if self.error is not None:
                raise self.error
            self._waiter = self.loop.create_future()
            self._wanted = count
            timer = self.loop.call_later(
                within, self._fail, SmtpDisconnected(f"no answer from the server within {within:g} s")
            )
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
            if len(self._replies) < count:
                assert self.error is not None
                raise self.error
        return [self._replies.popleft() for _ in range(count)]

    async def command(self, line: str, within: float) -> Reply:
        self.write(line.encode() + b"\r\n")
        return (await self.replies(1, within))[0]


@functools.cache
def _fqdn() -> str:
    return socket.getfqdn()


class _Connection:
    """One SMTP session, greeted, secured and authenticated, ready for transactions."""

    def __init__(self, protocol: _Protocol, extensions: dict[str, str], timeout: float) -> None:
        self.protocol = protocol
        self.extensions = extensions
        self.timeout = timeout
        self.pipelining = "pipelining" in extensions
        self.chunking = self.pipelining and "chunking" in extensions

    @property
    def is_connected(self) -> bool:
        return self.protocol.transport is not None and self.protocol.error is None

    def close(self) -> None:
        if self.protocol.transport is not None:
            self.protocol.transport.abort()

    async def quit(self) -> None:
        try:
            await self.protocol.command("QUIT", min(self.timeout, 2.0))
        finally:
            self.close()

    @classmethod
    async def open(cls, config: SmtpConfig, password: str | None, context: ssl.SSLContext) -> _Connection:
        loop = asyncio.get_running_loop()
        timeout = config.timeout_seconds
        tls = config.security == "tls"
        _, protocol = await asyncio.wait_for(
            loop.create_connection(
                lambda: _Protocol(loop),
                config.host,
                config.effective_port,
                ssl=context if tls else None,
                server_hostname=config.host if tls else None,
            ),
            timeout,
        )
        try:
            [greeting] = await protocol.replies(1, timeout)
            if greeting.code != 220:
                raise SmtpRefused(greeting, "greeting")
            name = config.local_hostname or str(await asyncio.to_thread(_fqdn))
            extensions = await _hello(protocol, name, timeout)
            if config.security == "starttls":
                if "starttls" not in extensions:
                    raise SmtpUnsupported("the server does not offer STARTTLS")
                reply = await protocol.command("STARTTLS", timeout)
                if reply.code != 220:
                    raise SmtpRefused(reply, "STARTTLS")
                assert protocol.transport is not None
                secured = await asyncio.wait_for(
                    loop.start_tls(protocol.transport, protocol, context, server_hostname=config.host), timeout
                )
                protocol.transport = secured
                extensions = await _hello(protocol, name, timeout)
            if config.username:
                await _authenticate(protocol, extensions, config.username, password or "", timeout)
        except BaseException:
            if protocol.transport is not None:
                protocol.transport.abort()
            raise
        return cls(protocol, extensions, timeout)

    async def deliver(self, mail: Email, raw: bytes, message_id: str) -> Outcome:
        """One transaction. Raises SmtpDisconnected(before_body=...) when the connection went away."""
        utf8 = not (mail.from_address.isascii() and mail.to.isascii())
        if utf8 and "smtputf8" not in self.extensions:
            return Outcome.failed("SMTP: the server does not take non-ASCII addresses (no SMTPUTF8)")
        for name, value in (("from_address", mail.from_address), ("to", mail.to)):
            if _CONTROL.search(value) or "<" in value or ">" in value:
                return Outcome.failed(f"message.{name}: {value!r} is not an address SMTP can carry")
        protocol, timeout = self.protocol, self.timeout
        mail_from = f"MAIL FROM:<{mail.from_address}>{' SMTPUTF8' if utf8 else ''}\r\n".encode()
        rcpt_to = f"RCPT TO:<{mail.to}>\r\n".encode()
        if self.chunking:
            return await self._deliver_chunked(mail_from + rcpt_to, raw, mail.message_id(message_id))
        commands = [mail_from, rcpt_to, b"DATA\r\n"]
        try:
            if self.pipelining:
                protocol.write(b"".join(commands))
                sender, recipient, data = await protocol.replies(3, timeout)
            else:  # one command at a time (RFC 5321), stopping at the first refusal
                protocol.write(commands[0])
                [sender] = await protocol.replies(1, timeout)
                recipient = data = Reply(0, "")
                if sender.code == 250:
                    protocol.write(commands[1])
                    [recipient] = await protocol.replies(1, timeout)
                    if recipient.code in (250, 251):
                        protocol.write(commands[2])
                        [data] = await protocol.replies(1, timeout)
        except SmtpDisconnected as exc:
            raise _Gone(exc, before_body=True) from exc
        if sender.code != 250 or recipient.code not in (250, 251) or data.code != 354:
            await self._abort(data.code == 354)
            return _refusal(sender, recipient, data)
        try:
            protocol.write(_data_payload(raw))
            [done] = await protocol.replies(1, timeout)
        except SmtpDisconnected as exc:
            raise _Gone(exc, before_body=False) from exc
        if done.code != 250:
            return _reply_outcome(done, address=False)
        return Outcome.sent(mail.message_id(message_id))

    async def _deliver_chunked(self, envelope: bytes, raw: bytes, sent_id: str) -> Outcome:
        """`envelope` (MAIL and RCPT), then BDAT LAST with the message, in one write (RFC 3030 with RFC 2920).
        A server whose RCPT refused the recipient answers the BDAT with an error and drops its bytes."""
        protocol = self.protocol
        body = _crlf(raw)  # nothing else changes: no dot-stuffing, no final dot
        received = protocol.received
        try:
            protocol.write(b"".join((envelope, f"BDAT {len(body)} LAST\r\n".encode(), body)))
            sender, recipient, done = await protocol.replies(3, self.timeout)
        except SmtpDisconnected as exc:
            # no reply at all for this transaction: the server took nothing (a kept connection it had closed)
            raise _Gone(exc, before_body=protocol.received == received) from exc
        if sender.code != 250 or recipient.code not in (250, 251) or done.code != 250:
            await self._abort(False)
            return _refusal(sender, recipient, done)
        return Outcome.sent(sent_id)

    async def _abort(self, in_data: bool) -> None:
        """After a refusal: end the transaction so the connection can be used again (RFC 2920: a DATA the
        server accepted although no recipient was gets just the terminating dot, which it then refuses)."""
        try:
            if in_data:
                self.protocol.write(b".\r\n")
                await self.protocol.replies(1, self.timeout)
            reply = await self.protocol.command("RSET", self.timeout)
            if reply.code != 250:
                self.close()
        except SmtpDisconnected:
            self.close()


class _Gone(Exception):
    def __init__(self, cause: SmtpDisconnected, *, before_body: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.before_body = before_body


async def _hello(protocol: _Protocol, name: str, within: float) -> dict[str, str]:
    """EHLO (HELO when the server does not know it): the extensions offered, keyword -> parameters."""
    reply = await protocol.command(f"EHLO {name}", within)
    if reply.code == 250:
        extensions = {}
        for line in reply.text.split("\n")[1:]:
            keyword, _, params = line.strip().partition(" ")
            if keyword:
                extensions[keyword.lower()] = params.strip()
        return extensions
    reply = await protocol.command(f"HELO {name}", within)
    if reply.code != 250:
        raise SmtpRefused(reply, "HELO")
    return {}


async def _authenticate(
    protocol: _Protocol, extensions: dict[str, str], username: str, password: str, within: float
) -> None:
    offered = {m.upper() for m in extensions.get("auth", "").split()}
    if "PLAIN" in offered:
        token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        reply = await protocol.command(f"AUTH PLAIN {token}", within)
    elif "LOGIN" in offered:
        reply = await protocol.command("AUTH LOGIN", within)
        for value in (username, password):
            if reply.code != 334:
                break
            reply = await protocol.command(base64.b64encode(value.encode()).decode(), within)
    elif "CRAM-MD5" in offered:
        reply = await protocol.command("AUTH CRAM-MD5", within)
        if reply.code == 334:
            challenge = base64.b64decode(reply.text.encode())
            digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
            reply = await protocol.command(base64.b64encode(f"{username} {digest}".encode()).decode(), within)
    else:
        raise SmtpUnsupported("the server offers no AUTH mechanism this client speaks (PLAIN, LOGIN, CRAM-MD5)")
    if reply.code != 235:
        raise SmtpRefused(reply, "authentication failed")


def _crlf(raw: bytes) -> bytes:
    """CRLF line ends only, ending with one. to_bytes already writes CRLF only: counting is the cheap check,
    the rewrite is for anything else."""
    crlf = raw.count(b"\r\n")
    if raw.count(b"\n") != crlf or raw.count(b"\r") != crlf:
        raw = _LONE_LINE_END.sub(b"\r\n", raw)
    return raw if raw.endswith(b"\r\n") else raw + b"\r\n"


def _data_payload(raw: bytes) -> bytes:
    """The message as DATA sends it: CRLF line ends, lines starting with a dot doubled, the final dot."""
    raw = _crlf(raw)
    if b"\n." in raw:
        raw = raw.replace(b"\n.", b"\n..")
    if raw.startswith(b"."):
        raw = b"." + raw
    return raw + b".\r\n"


class SmtpProvider:
    kind = "smtp"
    channel: Channel = "email"

    def __init__(self, config: SmtpConfig, secrets: SmtpSecrets, ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self._password = secrets.password
        self._ssl_context = ssl_context
        self._idle: list[tuple[float, _Connection]] = []
        self._slots = asyncio.Semaphore(config.max_connections)

    async def send(self, message: Message) -> Outcome:
        prepared = prepare(message, self.config)
        if isinstance(prepared, Outcome):
            return prepared
        raw = to_bytes(prepared, message.id)  # the email package's own builder costs ms a message (mail.py)
        async with self._slots:
            connection = self._reuse()
            reused = connection is not None
            try:
                if connection is None:
                    connection = await self._connect()
                outcome = await connection.deliver(prepared, raw, message.id)
            except _Gone as gone:
                if connection is not None:
                    connection.close()
                if not (reused and gone.before_body):
                    return network_outcome(gone.cause)
                # the kept connection was closed by the server meanwhile, before it took anything: once
                # more on a fresh one
                connection = None
                try:
                    connection = await self._connect()
                    outcome = await connection.deliver(prepared, raw, message.id)
                except _Gone as again:
                    if connection is not None:
                        connection.close()
                    return network_outcome(again.cause)
                except (SmtpRefused, SmtpUnsupported) as again:
                    return _session_outcome(again)
                except (OSError, TimeoutError) as again:
                    return network_outcome(again)
            except (SmtpRefused, SmtpUnsupported) as exc:
                return _session_outcome(exc)
            except (OSError, TimeoutError) as exc:  # refused, reset, TLS (ssl.SSLError is an OSError), no answer
                if connection is not None:
                    connection.close()
                return network_outcome(exc)
            if connection.is_connected:
                self._idle.append((time.monotonic(), connection))
            return outcome

    def _reuse(self) -> _Connection | None:
        while self._idle:
            since, connection = self._idle.pop()
            if connection.is_connected and time.monotonic() - since < _IDLE_SECONDS:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        config = self.config
        context = (self._ssl_context or default_ssl_context()) if config.validate_certs else _unverified_context()
        return await _Connection.open(config, self._password, context)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, connection in idle:
            try:
                await connection.quit()
            except (SmtpDisconnected, OSError):
                connection.close()


@functools.cache
def _unverified_context() -> ssl.SSLContext:
    """`validate_certs: false`: encrypted, but any certificate (a self-signed relay on a private network)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _reply_outcome(reply: Reply, *, address: bool = True) -> Outcome:
    error = f"SMTP {reply.code}: {' '.join(reply.text.split())}"
    if 400 <= reply.code < 500:
        return Outcome.retry(error)
    return Outcome.failed(error, permanent_address_problem=address and reply.code in _BAD_MAILBOX)


def _refusal(sender: Reply, recipient: Reply, last: Reply) -> Outcome:
    """A transaction refused at MAIL, RCPT or its last command (DATA or BDAT): the first refusal counts."""
    if sender.code != 250:
        return _reply_outcome(sender, address=False)
    if recipient.code not in (250, 251):
        return _reply_outcome(recipient)
    return _reply_outcome(last, address=False)


def _session_outcome(exc: SmtpRefused | SmtpUnsupported) -> Outcome:
    if isinstance(exc, SmtpUnsupported):
        return Outcome.failed(f"SMTP: {exc}")
    reply = exc.reply
    if exc.what == "authentication failed":
        return Outcome.failed(f"SMTP authentication failed: {reply.code} {' '.join(reply.text.split())}")
    return _reply_outcome(reply, address=False)
