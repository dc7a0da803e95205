"""The SMTP provider's fast MIME builder (mail.to_bytes) against the email package's (mail.to_mime): for
generated messages, both parse back to the same headers and the same text and HTML parts."""

from __future__ import annotations

import email
from email import policy

from hypothesis import given, settings
from hypothesis import strategies as st

from lunogram_server.messaging.providers.mail import Email, to_bytes, to_mime

# what templates and profiles can put in a message: any text without line breaks in headers, and without
# NUL (refused on the way in); bodies with line breaks of any kind
# (header values never hold a line break of any kind: templates flatten subjects, `prepare` refuses them)
BREAKS = "\x00\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
line = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=BREAKS), max_size=200)
# any text, and printable ASCII in lines of any length (sent as it is, 7bit, when its lines are short enough)
ascii_piece = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40) | st.sampled_from(
    ["\t", "\r", "\n", "\r\n", "x" * 500]
)
body = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=2000) | st.lists(
    ascii_piece, max_size=40
).map("".join)
url = st.from_regex(r"\Ahttps://[a-z]{1,20}\.example/[a-zA-Z0-9._~-]{0,80}\Z")


def parsed(raw: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def content(message: email.message.EmailMessage, kind: str) -> str | None:
    part = message.get_body(preferencelist=(kind,))
    if part is None:
        return None
    text = part.get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n").removesuffix("\n")


@settings(max_examples=300, deadline=None)
@given(
    name=st.none() | line,
    subject=line,
    text=st.none() | body,
    html=st.none() | body,
    unsubscribe=url,
)
def test_the_fast_builder_makes_the_message_the_email_package_makes(
    name: str | None, subject: str, text: str | None, html: str | None, unsubscribe: str
) -> None:
    if text is None and html is None:
        html = ""
    mail = Email(
        from_address="news@shop.example",
        from_name=name,
        reply_to="help@shop.example",
        to="someone@mail.example",
        subject=subject,
        html=html,
        text=text,
        headers={"List-Unsubscribe": f"<{unsubscribe}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    )
    fast = parsed(to_bytes(mail, "m1"))
    slow = parsed(bytes(to_mime(mail, "m1")))
    # headers: what was given, as a reader sees it (runs of white space are one space in a header)
    assert _words(str(fast["Subject"])) == _words(subject)
    sender = fast["From"].addresses[0]
    assert sender.addr_spec == "news@shop.example"
    # the email package's parser may put a space where one encoded word of a display name ends and the next
    # begins (its own builder's messages read back the same way): the characters must be the name's
    assert "".join(sender.display_name.split()) == "".join((name or "").split())
    for header in ("To", "Reply-To", "Message-ID", "List-Unsubscribe-Post"):
        assert str(fast[header]) == str(slow[header]), header
    # the email package folds before a first word too long for the header's line, and its parser then
    # keeps the fold's space in the value (' <https://...>'); the fast builder keeps the word on the line
    assert str(fast["List-Unsubscribe"]) == f"<{unsubscribe}>"
    assert str(slow["List-Unsubscribe"]).lstrip() == f"<{unsubscribe}>"
    # parts: the text given (line ends as the reader's), as the email package's message has them
    for kind, sent in (("plain", text), ("html", html)):
        got = content(fast, kind)
        if sent is None:
            assert got is None
            continue
        assert got == sent.replace("\r\n", "\n").replace("\r", "\n").removesuffix("\n"), kind
        assert got == content(slow, kind), kind
    assert all(len(line) <= 998 for line in to_bytes(mail, "m1").split(b"\r\n"))


def _words(value: str) -> str:
    return " ".join(value.split())


def test_a_part_goes_as_it_is_when_it_can_and_quoted_printable_when_not() -> None:
    def encoding(html: str) -> str:
        mail = Email("news@shop.example", None, None, "someone@mail.example", "s", html, None, {})
        [part] = parsed(to_bytes(mail, "m1")).walk()
        return str(part["Content-Transfer-Encoding"])

    assert encoding("<p>Hello\n<a href='https://shop.example/?a=1&b=2'>shop</a></p>\n") == "7bit"
    assert encoding("<p>Grüße</p>") == "quoted-printable"  # not ASCII
    assert encoding("<p>" + "x" * 1000 + "</p>") == "quoted-printable"  # a line too long to carry
    assert encoding("<p>\x0bvertical tab</p>") == "quoted-printable"  # a control character
