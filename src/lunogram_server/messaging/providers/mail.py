"""What every email provider takes from a Message: sender, reply-to, headers, and the MIME form of it."""

from __future__ import annotations

import base64
import binascii
import email.policy
import email.utils
import re
import secrets
from dataclasses import dataclass
from email.message import EmailMessage

from lunogram_server.messaging.providers.base import EmailConfig, Message, Outcome

_HEADER_NAME = re.compile(r"^[!-9;-~]{1,126}$")  # printable ASCII without ':' (RFC 5322 field name)
# set by the provider from the Message's own fields; a header of the same name would contradict them
_OWN_HEADERS = frozenset({"from", "to", "subject", "reply-to", "message-id", "content-type", "mime-version"})


@dataclass(frozen=True)
class Email:
    from_address: str
    from_name: str | None
    reply_to: str | None
    to: str
    subject: str
    html: str | None
    text: str | None
    headers: dict[str, str]

    @property
    def sender(self) -> str:
        """`Name <address>` (RFC 5322, the name encoded when it needs to be) or the bare address."""
        return email.utils.formataddr((self.from_name, self.from_address)) if self.from_name else self.from_address

    def message_id(self, message_id: str) -> str:
        domain = self.from_address.rpartition("@")[2] or "lunogram.invalid"
        return f"<{message_id}@{domain}>"


def prepare(message: Message, config: EmailConfig) -> Email | Outcome:
    """The email to send, or a failed Outcome naming what is missing or malformed."""
    from_address = message.from_address or config.from_address
    if not from_address:
        return Outcome.failed("message.from_address: is required (the provider's config has no from_address either)")
    if not message.to or "@" not in message.to:
        return Outcome.failed(f"message.to: {message.to!r} is not an email address")
    if not message.html and not message.text:
        return Outcome.failed("message: an email needs html or text")
    for name, value in (("from_address", from_address), ("to", message.to), ("subject", message.subject or "")):
        if "\r" in value or "\n" in value or len(value.splitlines()) > 1:
            return Outcome.failed(f"message.{name}: must not contain line breaks")
    headers: dict[str, str] = {}
    for name, value in message.headers.items():
        if not _HEADER_NAME.match(name):
            return Outcome.failed(f"message.headers: {name!r} is not a valid header name")
        if "\r" in value or "\n" in value or len(value.splitlines()) > 1:
            return Outcome.failed(f"message.headers.{name}: must not contain line breaks")
        if name.lower() in _OWN_HEADERS:
            return Outcome.failed(f"message.headers.{name}: is set from the message's own fields")
        headers[name] = value
    return Email(
        from_address=from_address,
        from_name=message.from_name or config.from_name,
        reply_to=message.reply_to or config.reply_to,
        to=message.to,
        subject=message.subject or "",
        html=message.html,
        text=message.text,
        headers=headers,
    )


def to_mime(mail: Email, message_id: str) -> EmailMessage:
    """multipart/alternative (text, then html) when both are given, else the one part; headers as given."""
    mime = EmailMessage(policy=email.policy.SMTP)
    mime["From"] = mail.sender
    mime["To"] = mail.to
    mime["Subject"] = mail.subject
    if mail.reply_to:
        mime["Reply-To"] = mail.reply_to
    mime["Message-ID"] = mail.message_id(message_id)
    mime["Date"] = email.utils.formatdate(localtime=False)
    for name, value in mail.headers.items():
        mime[name] = value
    if mail.text is not None:
        mime.set_content(mail.text)
        if mail.html is not None:
            mime.add_alternative(mail.html, subtype="html")
    else:
        mime.set_content(mail.html or "", subtype="html")
    return mime


# -- the fast path: the same message as to_mime, as bytes, built directly ------------------------------------
#
# The email package's EmailMessage parses and re-folds every header it is given and encodes bodies through
# a content manager: about 4-10 ms a message here (bench/sends.py), where the whole budget of a 1,000
# emails/s sender is 1 ms. The SMTP provider sends this instead; tests/test_mime.py checks, for generated
# messages, that both parse back to the same headers and parts.

_ENCODED_WORD_BYTES = 45  # raw bytes per RFC 2047 encoded word: 60 base64 characters, lines under 78


def _encoded_words(value: str) -> str:
    """An RFC 2047 `=?utf-8?b?...?=` run, folded between words, for a header value that is not ASCII."""
    words, chunk = [], b""
    for char in value:
        encoded = char.encode()
        if len(chunk) + len(encoded) > _ENCODED_WORD_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += encoded
    if chunk or not words:
        words.append(chunk)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(word).decode()}?=" for word in words)


def _header_value(value: str) -> str:
    return value if value.isascii() else _encoded_words(value)


_FOLD_AT = 78  # RFC 5322 2.1.1: lines SHOULD be at most 78 characters


def _folded(name: str, value: str) -> str:
    """`Name: value`, folded at spaces to lines of at most 78 characters where the words allow. The first
    word stays on the name's line however long (a List-Unsubscribe URL): folded before it, some readers
    keep the fold's space in the value. Encoded words come folded already."""
    line = f"{name}: {value}"
    if len(line) <= _FOLD_AT or "=?utf-8?" in value:
        return line
    first, *rest = value.split(" ")
    lines, current = [], f"{name}: {first}"
    for word in rest:
        if word and len(current) + 1 + len(word) > _FOLD_AT:
            lines.append(current)
            current = ""
        current += " " + word
    lines.append(current)
    return "\r\n".join(lines)


def _address(name: str | None, address: str) -> str:
    if not name:
        return address
    if name.isascii():
        return email.utils.formataddr((name, address))
    return f"{_encoded_words(name)} <{address}>"


_7BIT = bytes(range(0x20, 0x7F)) + b"\t\n"  # printable ASCII, tab and (once line ends are \n) the line end
_MAX_7BIT_LINE = 998  # RFC 5322 2.1.1: a line MUST be at most 998 characters


def _part(subtype: str, body: str) -> bytes:
    """A text part with CRLF line ends: as it is (7bit) when it is printable ASCII in lines a message may
    carry, as most templates' HTML and text are, else quoted-printable. Encoding was the costliest part of
    building a message (binascii's C encoder: 5% of the sending process, bench/sends.py; the checks here
    take a third of its time); the email package chooses 7bit for such a part too."""
    normalised = body.replace("\r\n", "\n").replace("\r", "\n").encode()
    if (
        normalised.isascii()
        and not normalised.translate(None, _7BIT)
        and max(map(len, normalised.split(b"\n"))) <= _MAX_7BIT_LINE
    ):
        encoding, encoded = "7bit", normalised.replace(b"\n", b"\r\n")
    else:
        encoding = "quoted-printable"
        encoded = binascii.b2a_qp(normalised, istext=True).replace(b"\n", b"\r\n")
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n'
    return head.encode() + encoded


def to_bytes(mail: Email, message_id: str) -> bytes:
    """The message `to_mime` makes, as the bytes SMTP's DATA sends (CRLF line ends, no dot-stuffing)."""
    head = [
        f"From: {_address(mail.from_name, mail.from_address)}",
        f"To: {mail.to}",
        f"Subject: {_header_value(mail.subject)}",
    ]
    if mail.reply_to:
        head.append(f"Reply-To: {mail.reply_to}")
    head.append(f"Message-ID: {mail.message_id(message_id)}")
    head.append(f"Date: {email.utils.formatdate(localtime=False)}")
    head.append("MIME-Version: 1.0")
    head += [_folded(name, _header_value(value)) for name, value in mail.headers.items()]
    if mail.text is not None and mail.html is not None:
        boundary = f"=_lunogram_{secrets.token_hex(12)}"
        head.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
        start = f"\r\n--{boundary}\r\n".encode()
        body = start + _part("plain", mail.text) + start + _part("html", mail.html) + f"\r\n--{boundary}--\r\n".encode()
        return "\r\n".join(head).encode() + b"\r\n\r\n" + body
    subtype, content = ("plain", mail.text) if mail.text is not None else ("html", mail.html or "")
    part = _part(subtype, content)
    # the body ends with one line end, as the email package's: a text that ends with one gets no second
    return "\r\n".join(head).encode() + b"\r\n" + part + (b"" if part.endswith(b"\r\n") else b"\r\n")
