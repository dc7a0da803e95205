"""What every email provider takes from a Message: sender, reply-to, headers, and the MIME form of it."""

from __future__ import annotations

import email.policy
import email.utils
import re
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
        if "\r" in value or "\n" in value:
            return Outcome.failed(f"message.{name}: must not contain line breaks")
    headers: dict[str, str] = {}
    for name, value in message.headers.items():
        if not _HEADER_NAME.match(name):
            return Outcome.failed(f"message.headers: {name!r} is not a valid header name")
        if "\r" in value or "\n" in value:
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
