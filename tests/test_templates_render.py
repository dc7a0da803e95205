"""The rendering API the senders call (messaging/templates.py): pure functions, exercised directly."""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from lunogram_server.messaging.templates import (
    EmailContent,
    PushContent,
    RenderedEmail,
    RenderedText,
    RenderError,
    TemplateDefinition,
    TextContent,
    UserContext,
    WebhookContent,
    canonical_locale,
    check_source,
    choose_locale,
    html_to_text,
    insert_preheader,
    message_context,
    render,
)

USER = UserContext(
    id=uuid.UUID("00000000-0000-4000-8000-000000000001"),
    email="ann@shop.example",
    locale="nl-NL",
    data={"first_name": "Ann", "items": ["a", "b"]},
    identifiers=[{"source": "anonymous", "external_id": "anon-1"}, {"source": "crm", "external_id": "c-9"}],
)


def sms(body: str, **definition: object) -> TemplateDefinition:
    return TemplateDefinition(channel="sms", variants={"en": TextContent(body=body)}, default_locale="en", **definition)


@pytest.mark.parametrize(
    ("wanted", "chosen"),
    [
        ("pt-BR", "pt-BR"),
        ("pt-br", "pt-BR"),
        ("pt_BR.UTF-8", "pt-BR"),
        ("pt-AO", "pt"),  # the language's own variant
        ("fr-CA", "fr-FR"),  # another variant of the language
        ("zh-Hant-TW", "en"),
        ("de", "en"),
        (None, "en"),
        ("not a locale", "en"),
    ],
)
def test_locale_fallback(wanted: str | None, chosen: str) -> None:
    variants = {"en": 1, "pt": 2, "pt-BR": 3, "fr-FR": 4}
    assert choose_locale(variants, "en", wanted) == chosen


def test_canonical_locales() -> None:
    assert canonical_locale("ZH-hant-tw") == "zh-Hant-TW"
    assert canonical_locale("en_US@euro") == "en-US"
    assert canonical_locale("x") is None
    assert canonical_locale("") is None


def test_message_context_is_the_documented_shape() -> None:
    context = message_context(
        USER,
        organization={"id": "o1", "name": "Acme"},
        event={"name": "signup", "data": {"plan": "pro"}},
        unsubscribe_url="https://u",
        preferences_url="https://p",
    )
    assert context == {
        "user": {
            "id": "00000000-0000-4000-8000-000000000001",
            "email": "ann@shop.example",
            "phone": None,
            "timezone": None,
            "locale": "nl-NL",
            "data": {"first_name": "Ann", "items": ["a", "b"]},
            "external_id": "c-9",  # not the anonymous id
            "identifiers": [
                {"source": "anonymous", "external_id": "anon-1"},
                {"source": "crm", "external_id": "c-9"},
            ],
        },
        "organization": {"id": "o1", "name": "Acme"},
        "event": {"name": "signup", "data": {"plan": "pro"}},
        "run": None,
        "unsubscribe_url": "https://u",
        "preferences_url": "https://p",
        "data": {},
    }
    profile = {"id": "u1", "identifier": [{"source": "default", "external_id": "e1", "metadata": {}}], "data": {}}
    assert message_context(UserContext.from_profile(profile))["user"]["external_id"] == "e1"


def test_email_parts() -> None:
    template = TemplateDefinition(
        channel="email",
        variants={
            "en": EmailContent(
                subject="Hi\r\nBcc: evil@example.com {{ user.data.first_name }}",
                preheader="  A  <preview> & more  ",
                html="<html><head><title>T</title><style>td{padding:4px}@media print{td{color:black}}</style></head>"
                "<body class='b'><table><tr><td>One</td><td>Two</td></tr></table><ul>{% for i in user.data.items %}"
                "<li>{{ i }}</li>{% endfor %}</ul><p>Caf&eacute; &amp; more<br>next</p>"
                "<a href='mailto:x@y.z'>x@y.z</a> <a href='#top'>top</a> <a href='https://s/x'><img src=i></a>"
                "</body></html>",
            )
        },
        default_locale="en",
    )
    rendered = render(template, None, message_context(USER), {})
    assert isinstance(rendered, RenderedEmail)
    assert rendered.subject == "Hi Bcc: evil@example.com Ann"  # one line: no header can be added
    assert rendered.preheader == "A <preview> & more"
    assert '<body class="b"><div style="display:none;' in rendered.html
    assert ">A &lt;preview&gt; &amp; more</div><table>" in rendered.html
    assert '<td style="padding: 4px;">One</td>' in rendered.html
    assert "@media print" in rendered.html
    assert rendered.text == "One Two\n\n- a\n- b\n\nCafé & more\nnext\n\nx@y.z top https://s/x"


def test_html_to_text_drops_what_is_not_read() -> None:
    html = "<!-- hidden --><script>var x = 1;</script><h1>Title</h1><div>Line &lt;1&gt;</div><div>Line 2</div>"
    assert html_to_text(html) == "Title\n\nLine <1>\nLine 2"
    assert insert_preheader("<p>no body</p>", "pre").startswith('<div style="display:none')
    assert insert_preheader("<body><p>x</p></body>", "") == "<body><p>x</p></body>"


def test_other_channels_and_their_failures() -> None:
    context = message_context(USER)
    push = TemplateDefinition(
        channel="push",
        variants={
            "en": PushContent(title="Hi\n{{ user.data.first_name }}", url="  ", data={"n": [1, "{{ user.email }}"]})
        },
        default_locale="en",
    )
    rendered = render(push, "en", context, {})
    assert (rendered.title, rendered.url, rendered.data) == ("Hi Ann", None, {"n": [1, "ann@shop.example"]})

    hook = TemplateDefinition(
        channel="webhook", variants={"en": WebhookContent(url="{{ user.data.missing }}/x")}, default_locale="en"
    )
    with pytest.raises(RenderError, match=r"variants\.en\.url: renders to '/x', not an http\(s\) URL"):
        render(hook, None, context, {})
    with pytest.raises(RenderError, match=r"variants\.en\.body: line 1, column 23: snippet 'gone' does not exist"):
        render(sms("Hello there {% render 'gone' %}"), None, context, {})
    with pytest.raises(RenderError, match=r"in snippet 'bad', line 2, column 8: divided_by: can't divide by 0"):
        render(sms("{% render 'bad' %}"), None, context, {"bad": "x\n{{ 1 | divided_by: 0 }}"})
    with pytest.raises(ValueError, match="default_locale"):
        TemplateDefinition(channel="sms", variants={"en": TextContent(body="x")}, default_locale="de")
    with pytest.raises(ValueError, match="holds TextContent"):
        TemplateDefinition(channel="sms", variants={"en": push.variants["en"]}, default_locale="en")


def test_include_shares_scope_and_render_isolates() -> None:
    context = message_context(USER)
    snippets = {"greet": "Hi {{ user.data.first_name }}{{ extra }}"}
    shared = render(sms("{% assign extra = '?' %}{% include 'greet' %}"), None, context, snippets)
    assert shared == RenderedText("sms", "en", "Hi Ann?")
    # render sees the message's variables and its arguments, not the template's own assigns
    isolated = render(sms("{% assign extra = '?' %}{% render 'greet' %}"), None, context, snippets)
    assert isolated == RenderedText("sms", "en", "Hi Ann")
    given = render(sms("{% render 'greet', extra: '!' %}"), None, context, snippets)
    assert given == RenderedText("sms", "en", "Hi Ann!")


def test_parsed_templates_are_cached_by_id_and_updated_at() -> None:
    template_id = uuid.uuid4()
    at = datetime.now(UTC)
    context = message_context(USER)
    first = sms("one {{ user.email }}", id=template_id, updated_at=at)
    assert render(first, None, context, {}).body == "one ann@shop.example"
    # the same key is trusted to mean the same source (that is what the key is for) ...
    assert render(sms("two", id=template_id, updated_at=at), None, context, {}).body == "one ann@shop.example"
    # ... and an edit, which moves updated_at, is seen at once
    edited = sms("two {{ user.email }}", id=template_id, updated_at=at + timedelta(microseconds=1))
    assert render(edited, None, context, {}).body == "two ann@shop.example"


def test_renders_in_threads_keep_their_own_snippets() -> None:
    template = sms("{% render 'who' %}", id=uuid.uuid4(), updated_at=datetime.now(UTC))
    context = message_context(USER)

    def one(n: int) -> str:
        return render(template, None, context, {"who": f"n{n}"}).body

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(200))) == [f"n{n}" for n in range(200)]


def test_check_source_reports_snippets_and_problems() -> None:
    checked = check_source("f", "{% render 'a' %}\n{% include 'b' %}{% render 'a' %}")
    assert checked.problems == []
    assert checked.snippet_names == ["a", "b"]
    assert [(r.name, r.line, r.column) for r in checked.references] == [("a", 1, 11), ("b", 2, 12), ("a", 2, 28)]
    assert [str(p) for p in check_source("f", "{% render '../etc' %}").problems] == [
        "f: line 1, column 11: '../etc' is not a snippet name"
    ]
    assert [str(p) for p in check_source("f", "x" * 262_145 + "{{ x }}").problems] == [
        "f: source longer than 262144 characters"
    ]


def test_limits_liquid_leaves_open_are_closed() -> None:
    """Liquid caps each loop and the output; loops one after another and the values filters build on the way
    are capped per render too, so a short template cannot burn seconds of CPU or gigabytes of memory."""
    context = message_context(UserContext(id="u", data={"big": "x" * 300_000}))
    sequential = "{% for i in (1..9000) %}{% endfor %}" * 6
    with pytest.raises(RenderError, match=r"at most 50,000 iterations of all loops together"):
        render(sms(sequential), None, context, {})
    render(sms("{% for i in (1..9000) %}{% endfor %}" * 5), None, context, {})  # 45,000: fine
    nested = "{% for a in (1..100) %}{% for b in (1..100) %}{% endfor %}{% endfor %}"  # 10,100 in all
    render(sms(nested), None, context, {})
    bomb = "{{ user.data.big" + " | append: user.data.big" * 4 + " | size }}"
    with pytest.raises(RenderError, match=r"line 1, column \d+: append: result longer than 1,048,576 characters"):
        render(sms(bomb), None, context, {})
    many = "{% for i in (1..60) %}{{ user.data.big | append: 'y' | size }}{% endfor %}"
    with pytest.raises(RenderError, match=r"filters made more than 16,777,216 characters in all"):
        render(sms(many), None, context, {})
    with pytest.raises(RenderError, match=r"split: result longer than 100,000 items"):
        render(sms("{{ user.data.big | split: '' | size }}"), None, context, {})
    assert render(sms("{{ user.data.big | size }} {{ 'a,b' | split: ',' | join: '-' }}"), None, context, {}) == (
        RenderedText("sms", "en", "300000 a-b")
    )


def test_block_nesting_is_capped_at_save() -> None:
    deep = "{% if true %}" * 31 + "x" + "{% endif %}" * 31
    assert [str(p) for p in check_source("f", deep).problems] == [
        "f: line 1, column 404: tags nest deeper than 30 levels"
    ]
    assert check_source("f", "{% if true %}" * 29 + "x" + "{% endif %}" * 29).problems == []


@pytest.mark.parametrize(
    "html",
    [
        '<a href="x">' * 80_000,
        '<a href="' * 100_000,
        "<p" * 500_000,
        "<" * 1_000_000,
        "<!--" * 250_000,
        "<style>" * 140_000,
        " " * 1_000_000 + "<p>x",
        "<body" * 200_000,
    ],
    ids=["unclosed-links", "open-quotes", "unclosed-tags", "angles", "comments", "styles", "spaces", "bodies"],
)
def test_text_part_and_preheader_take_linear_time_on_any_html(html: str) -> None:
    """Rendered HTML may be a megabyte of anything; a pattern that rescanned the rest of the document from
    each unclosed tag took minutes here (30 s for a tenth of this size)."""
    started = time.process_time()
    html_to_text(html)
    insert_preheader(html, "pre")
    assert time.process_time() - started < 5
