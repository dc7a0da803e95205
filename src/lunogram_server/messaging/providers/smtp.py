"""Email over SMTP (aiosmtplib): plain, STARTTLS or implicit TLS, with AUTH when a username is set.

Connections are kept and reused, up to `max_connections` at once: a new connection costs a TCP and TLS
handshake, EHLO and AUTH, several round trips that would otherwise come before every message. A kept
connection the server has since closed is noticed at MAIL FROM, before anything was accepted, and the
message goes again once on a fresh connection.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Literal

import aiosmtplib
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


class SmtpProvider:
    kind = "smtp"
    channel: Channel = "email"

    def __init__(self, config: SmtpConfig, secrets: SmtpSecrets, ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self._password = secrets.password
        self._ssl_context = ssl_context
        self._idle: list[tuple[float, aiosmtplib.SMTP]] = []
        self._slots = asyncio.Semaphore(config.max_connections)

    async def send(self, message: Message) -> Outcome:
        prepared = prepare(message, self.config)
        if isinstance(prepared, Outcome):
            return prepared
        async with self._slots:
            connection = self._reuse()
            reused = connection is not None
            try:
                if connection is None:
                    connection = await self._connect()
                outcome = await self._deliver(connection, prepared, message.id)
            except aiosmtplib.SMTPServerDisconnected as exc:
                if not reused:
                    return network_outcome(exc)
                # the kept connection was closed by the server meanwhile: once more on a fresh one
                connection = None
                try:
                    connection = await self._connect()
                    outcome = await self._deliver(connection, prepared, message.id)
                except aiosmtplib.SMTPException as again:
                    await _close(connection)
                    return _smtp_outcome(again)
                except OSError as again:
                    await _close(connection)
                    return network_outcome(again)
            except aiosmtplib.SMTPException as exc:
                await _close(connection)
                return _smtp_outcome(exc)
            except OSError as exc:
                await _close(connection)
                return network_outcome(exc)
            self._idle.append((time.monotonic(), connection))
            return outcome

    def _reuse(self) -> aiosmtplib.SMTP | None:
        while self._idle:
            since, connection = self._idle.pop()
            if connection.is_connected and time.monotonic() - since < _IDLE_SECONDS:
                return connection
            connection.close()
        return None

    async def _connect(self) -> aiosmtplib.SMTP:
        config = self.config
        connection = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.effective_port,
            use_tls=config.security == "tls",
            start_tls=config.security == "starttls",
            validate_certs=config.validate_certs,
            # without certificate checks aiosmtplib makes its own permissive context
            tls_context=(self._ssl_context or default_ssl_context()) if config.validate_certs else None,
            local_hostname=config.local_hostname,
            timeout=config.timeout_seconds,
        )
        await connection.connect()
        try:
            if config.username:
                await connection.login(config.username, self._password or "")
        except BaseException:
            connection.close()
            raise
        return connection

    @staticmethod
    async def _deliver(connection: aiosmtplib.SMTP, mail: Email, message_id: str) -> Outcome:
        raw = to_bytes(mail, message_id)  # the email package's own builder costs ms a message (mail.py)
        refused, _ = await connection.sendmail(mail.from_address, [mail.to], raw)
        if refused:  # only one recipient: a refusal raises, but a server may list it here instead
            response = refused[mail.to]
            return _reply_outcome(response.code, response.message)
        return Outcome.sent(mail.message_id(message_id))

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, connection in idle:
            try:
                await asyncio.wait_for(connection.quit(), timeout=2)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                connection.close()


async def _close(connection: aiosmtplib.SMTP | None) -> None:
    if connection is not None:
        connection.close()


def _reply_outcome(code: int, text: str, *, address: bool = True) -> Outcome:
    error = f"SMTP {code}: {' '.join(text.split())}"
    if 400 <= code < 500:
        return Outcome.retry(error)
    return Outcome.failed(error, permanent_address_problem=address and code in _BAD_MAILBOX)


def _smtp_outcome(exc: aiosmtplib.SMTPException) -> Outcome:
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return Outcome.failed(f"SMTP authentication failed: {exc.code} {' '.join(exc.message.split())}")
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        first = exc.recipients[0]
        return _reply_outcome(first.code, first.message)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return _reply_outcome(exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return _reply_outcome(exc.code, exc.message, address=False)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _reply_outcome(exc.code, exc.message, address=False)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return Outcome.failed(f"SMTP: {exc}")
    return network_outcome(exc)
