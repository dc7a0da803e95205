"""Message templates through the admin API: save-time validation (line and column), snippets, locale
fallback, email rendering (CSS inlined with @media kept, preheader, text part), the preview for a real
user, resource limits and project isolation."""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

import httpx
import psycopg
import pytest

from helpers import ident, uid

EMAIL_HTML = """<html>
<head><style>
  p { color: #333333; }
  .cta { background: #0055ff; }
  @media (max-width: 600px) { p { font-size: 18px; } }
</style></head>
<body><p>Hello {{ user.data.first_name | default: "there" }}</p>
<p class="cta"><a href="https://shop.example/cart?u={{ user.external_id }}&amp;src=mail">Your cart</a></p>
{% render 'footer' %}
</body></html>"""


def email_variant(**fields: Any) -> dict[str, Any]:
    return {"subject": "Hi {{ user.data.first_name }}", "html": "<p>Hello {{ user.email }}</p>", **fields}


def create(client: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("name", uid("tmpl"))
    body.setdefault("channel", "email")
    body.setdefault("variants", {"en": email_variant()})
    response = client.post("/admin/templates", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def snippet(client: httpx.Client, source: str, name: str | None = None) -> str:
    name = name or uid("snip")
    response = client.post("/admin/snippets", json={"name": name, "source": source})
    assert response.status_code == 201, response.text
    return name


def user(client: httpx.Client, **fields: Any) -> tuple[str, dict[str, Any]]:
    external_id = uid("user")
    response = client.post("/client/users", json={"identifier": [ident(external_id)], **fields})
    assert response.status_code == 200, response.text
    return external_id, dict(response.json())


def preview(client: httpx.Client, template_id: str, **body: Any) -> httpx.Response:
    return client.post(f"/admin/templates/{template_id}/preview", json=body)


def refused(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    problem = dict(response.json())
    assert set(problem) >= {"title", "detail", "status"}
    return problem


# --- save and validate --------------------------------------------------------------------------------------------


def test_create_read_list_update_delete(client: httpx.Client) -> None:
    created = create(
        client,
        default_locale="en",
        variants={"en": email_variant(preheader="Read me"), "pt_br": email_variant(subject="Olá")},
    )
    assert created["channel"] == "email"
    assert created["default_locale"] == "en"
    assert set(created["variants"]) == {"en", "pt-BR"}  # locales saved in canonical case
    assert created["variants"]["en"]["preheader"] == "Read me"
    assert created["variants"]["en"]["text"] is None
    assert created["subscription_group_id"] is None
    assert client.get(f"/admin/templates/{created['id']}").json() == created

    listed = client.get("/admin/templates", params={"channel": "email", "limit": 1000}).json()
    mine = next(t for t in listed if t["id"] == created["id"])
    assert mine["locales"] == ["en", "pt-BR"]
    assert all(t["id"] != created["id"] for t in client.get("/admin/templates", params={"channel": "sms"}).json())

    group = "0b7f3c2e-7d1f-4a53-9c1e-2f4d5b6a7c8d"
    patched = client.patch(
        f"/admin/templates/{created['id']}", json={"name": created["name"] + "-2", "subscription_group_id": group}
    )
    assert patched.status_code == 200, patched.text
    after = patched.json()
    assert after["name"] == created["name"] + "-2"
    assert after["subscription_group_id"] == group
    assert after["variants"] == created["variants"]  # left out: kept
    assert after["updated_at"] > created["updated_at"]

    replaced = client.patch(f"/admin/templates/{created['id']}", json={"variants": {"de": email_variant()}}).json()
    assert set(replaced["variants"]) == {"de"}
    assert replaced["default_locale"] == "de"  # the old default is gone and one variant remains
    cleared = client.patch(f"/admin/templates/{created['id']}", json={"subscription_group_id": None}).json()
    assert cleared["subscription_group_id"] is None
    assert cleared["name"] == after["name"]

    assert client.delete(f"/admin/templates/{created['id']}").status_code == 204
    assert refused(client.get(f"/admin/templates/{created['id']}"), 404)["detail"].endswith("not found in this project")
    assert client.delete(f"/admin/templates/{created['id']}").status_code == 404


def test_names_are_unique_per_project(client: httpx.Client) -> None:
    first = create(client)
    body = {"name": first["name"], "channel": "sms", "variants": {"en": {"body": "hi"}}}
    assert refused(client.post("/admin/templates", json=body), 409)["detail"] == (
        f"name: a template named {first['name']!r} already exists in this project"
    )
    other = create(client)
    assert refused(client.patch(f"/admin/templates/{other['id']}", json={"name": first["name"]}), 409)


@pytest.mark.parametrize(
    ("html", "detail", "line", "column"),
    [
        ("<p>\n<b>\n  Hi {{ user.email </b>", "expected '}}', found end of file", 3, 6),
        ("line one\n{% if user.email %}yes", "expected tag endif, found end of expression", 2, 23),
        ("<p>{{ user.email | shout }}</p>", "unknown filter 'shout'", 1, 20),
        ("a\n\n{% frobnicate %}", "unexpected tag 'frobnicate'", 3, 4),
        ("{% render footer_name %}", "a snippet is named by a quoted string ({% render 'footer' %})", 1, 4),
    ],
)
def test_liquid_errors_name_the_field_line_and_column(
    client: httpx.Client, html: str, detail: str, line: int, column: int
) -> None:
    name = uid("bad")
    body = {"name": name, "channel": "email", "variants": {"en": email_variant(html=html)}}
    problem = refused(client.post("/admin/templates", json=body))
    assert problem["detail"] == f"variants.en.html: line {line}, column {column}: {detail}"
    assert problem["errors"] == [
        {"field": "variants.en.html", "rule": f"line {line}, column {column}: {detail}", "line": line, "column": column}
    ]
    # the same answer for unsaved source, and nothing was saved
    unsaved = {k: body[k] for k in ("channel", "variants")}
    assert refused(client.post("/admin/templates/validate", json=unsaved)) == problem
    assert all(t["name"] != name for t in client.get("/admin/templates", params={"limit": 1000}).json())


def test_every_field_is_checked_and_all_problems_reported(client: httpx.Client) -> None:
    body = {
        "channel": "email",
        "default_locale": "en",
        "variants": {
            "en": email_variant(subject="Hi {{ user.email", text="ok {{ 1 | plus: 1 }}"),
            "fr": email_variant(preheader="{% endif %}"),
        },
    }
    problem = refused(client.post("/admin/templates/validate", json=body))
    assert [(e["field"], e["line"], e["column"]) for e in problem["errors"]] == [
        ("variants.en.subject", 1, 4),
        ("variants.fr.preheader", 1, 4),
    ]
    assert "variants.fr.preheader: line 1, column 4: unexpected tag 'endif'" in problem["detail"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"channel": "email", "variants": {"en": {"html": "<p>x</p>"}}}, "variants.en.subject: is required"),
        (
            {"channel": "sms", "variants": {"en": {"body": "x", "subject": "y"}}},
            "variants.en.subject: is not a known field",
        ),
        ({"channel": "fax", "variants": {"en": {"body": "x"}}}, "channel: "),
        ({"channel": "sms", "variants": {}}, "variants: must contain at least 1 item(s)"),
        ({"channel": "sms", "variants": {"english!": {"body": "x"}}}, "variants.english!: is not a BCP 47 locale"),
        (
            {"channel": "sms", "variants": {"en-us": {"body": "x"}, "en-US": {"body": "y"}}},
            "names the same locale as another variant (en-US)",
        ),
        (
            {"channel": "sms", "variants": {"en": {"body": "x"}, "de": {"body": "y"}}},
            "default_locale: is required when there are several variants",
        ),
        (
            {"channel": "sms", "default_locale": "fr", "variants": {"en": {"body": "x"}}},
            "default_locale: 'fr' is not one of the variants (en)",
        ),
        (
            {"channel": "email", "variants": {"en": email_variant(html="x" * 262_145)}},
            "variants.en.html: is too long (at most 262144 characters)",
        ),
        (
            {"channel": "email", "variants": {"en": email_variant(subject="x" * 2_001)}},
            "variants.en.subject: is too long (at most 2000 characters)",
        ),
        (
            {"channel": "push", "variants": {"en": {"title": "t", "data": {"k": "x" * 70_000}}}},
            "variants.en.data: is too large (at most 65536 bytes as JSON)",
        ),
        (
            {"channel": "webhook", "variants": {"en": {"url": "https://x", "headers": {"Bad Header": "v"}}}},
            "variants.en.headers.Bad Header",
        ),
        (
            {"channel": "webhook", "variants": {"en": {"url": "https://x", "method": "BREW"}}},
            "variants.en.method",
        ),
    ],
)
def test_shapes_and_caps_are_refused_by_field(client: httpx.Client, body: dict[str, Any], detail: str) -> None:
    name = uid("shape")
    problem = refused(client.post("/admin/templates", json={"name": name, **body}))
    assert detail in problem["detail"]
    assert all(t["name"] != name for t in client.get("/admin/templates", params={"limit": 1000}).json())


def test_public_keys_cannot_touch_templates(public_client: httpx.Client) -> None:
    assert refused(public_client.get("/admin/templates"), 403)
    assert refused(public_client.post("/admin/templates", json={"name": "x"}), 403)
    assert refused(public_client.get("/admin/snippets"), 403)


# --- snippets -----------------------------------------------------------------------------------------------------


def test_snippets_must_exist_are_held_while_used_and_cannot_loop(client: httpx.Client) -> None:
    footer = uid("footer")
    body = {
        "name": uid("t"),
        "channel": "email",
        "variants": {"en": email_variant(html=f"<p>x</p>\n  {{% render '{footer}' %}}")},
    }
    problem = refused(client.post("/admin/templates", json=body))
    assert problem["detail"] == f"variants.en.html: line 2, column 13: snippet '{footer}' does not exist"

    inner = snippet(client, "<small>{{ unsubscribe_url }}</small>")
    snippet(client, f"<footer>{{% render '{inner}', unsubscribe_url: unsubscribe_url %}}</footer>", name=footer)
    created = create(client, **body)
    assert created["snippets"] == [footer]
    assert client.get(f"/admin/snippets/{footer}").json()["snippets"] == [inner]

    # in use: neither can be deleted; the 409 says by whom
    detail = refused(client.delete(f"/admin/snippets/{footer}"), 409)["detail"]
    assert f"template '{created['name']}'" in detail
    assert f"snippet '{footer}'" in refused(client.delete(f"/admin/snippets/{inner}"), 409)["detail"]

    # a snippet may not render itself, directly or through others
    assert (
        "would render itself"
        in refused(client.patch(f"/admin/snippets/{inner}", json={"source": f"{{% include '{footer}' %}}"}))["detail"]
    )
    assert (
        "would render itself"
        in refused(client.patch(f"/admin/snippets/{footer}", json={"source": f"{{% render '{footer}' %}}"}))["detail"]
    )
    bad = refused(client.patch(f"/admin/snippets/{inner}", json={"source": "ok\n{{ x | nope }}"}))
    assert bad["detail"] == "source: line 2, column 8: unknown filter 'nope'"

    # once unused they go
    assert (
        client.patch(f"/admin/templates/{created['id']}", json={"variants": {"en": email_variant()}}).status_code == 200
    )
    assert client.delete(f"/admin/snippets/{footer}").status_code == 204
    assert client.delete(f"/admin/snippets/{inner}").status_code == 204
    assert refused(client.get(f"/admin/snippets/{inner}"), 404)


def test_snippet_crud_and_names(client: httpx.Client) -> None:
    name = snippet(client, "Hello")
    assert refused(client.post("/admin/snippets", json={"name": name, "source": "again"}), 409)
    assert refused(client.post("/admin/snippets", json={"name": "no spaces", "source": "x"}))
    assert refused(client.post("/admin/snippets", json={"name": "x", "source": "{{ oops"}))["errors"][0] == {
        "field": "source",
        "rule": "line 1, column 1: expected '}}', found end of file",
        "line": 1,
        "column": 1,
    }
    updated = client.patch(f"/admin/snippets/{name}", json={"source": "Hi {{ user.email }}"}).json()
    assert updated["source"] == "Hi {{ user.email }}"
    listed = client.get("/admin/snippets", params={"limit": 1000}).json()
    assert next(s for s in listed if s["name"] == name)["size"] == len("Hi {{ user.email }}")
    assert refused(client.patch(f"/admin/snippets/{uid()}", json={"source": "x"}), 404)


# --- rendering and the preview ------------------------------------------------------------------------------------


def test_preview_renders_for_a_real_user_in_their_locale(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    footer = snippet(client, '<footer><a href="{{ unsubscribe_url }}">Unsubscribe</a> {{ user.email }}</footer>')
    html = EMAIL_HTML.replace("'footer'", f"'{footer}'")
    template = create(
        client,
        default_locale="en",
        variants={
            "en": email_variant(subject="Hi {{ user.data.first_name }}", preheader="Your cart misses you", html=html),
            "pt": email_variant(subject="Olá {{ user.data.first_name }}", html="<p>Olá</p>"),
            "pt-PT": email_variant(subject="Viva {{ user.data.first_name }}", html="<p>Viva</p>"),
        },
    )
    external_id, profile = user(client, email="ana@shop.example", locale="pt-BR", data={"first_name": "Ana"})

    # pt-BR: no exact variant, the language's is used
    response = preview(client, template["id"], user=[ident(external_id)])
    assert response.status_code == 200, response.text
    assert response.json()["locale"] == "pt"
    assert response.json()["subject"] == "Olá Ana"
    assert response.json()["user_id"] == profile["id"]

    # an explicit locale wins; unknown ones fall back to the default
    assert preview(client, template["id"], user_id=profile["id"], locale="pt-PT").json()["subject"] == "Viva Ana"
    english = preview(client, template["id"], user_id=profile["id"], locale="ja-JP").json()
    assert english["locale"] == "en"
    assert english["subject"] == "Hi Ana"
    assert english["preheader"] == "Your cart misses you"

    body = english["html"]
    # CSS inlined; the @media rule kept in a <style> block
    assert re.search(r'<p style="color: #333333;">Hello Ana</p>', body), body
    assert 'class="cta" style="' in body
    assert "background: #0055ff" in body
    assert "@media (max-width: 600px)" in body
    assert "p { color: #333333; }" not in body
    # the preheader is the hidden first element of <body>
    first = re.search(r"<body[^>]*>\s*(<[^>]+>)([^<]*)", body)
    assert first is not None
    assert "display:none" in first.group(1)
    assert first.group(2) == "Your cart misses you"
    # the snippet rendered with the caller's URLs and the user's data
    assert '<a href="https://preview.invalid/unsubscribe">Unsubscribe</a> ana@shop.example' in body
    assert f"https://shop.example/cart?u={external_id}&amp;src=mail" in body
    # the text part is derived from the HTML: no tags, no CSS, links spelled out
    text = english["text"]
    assert text.startswith("Hello Ana\n")
    assert f"Your cart (https://shop.example/cart?u={external_id}&src=mail)" in text
    assert "Unsubscribe (https://preview.invalid/unsubscribe) ana@shop.example" in text
    assert "<" not in text
    assert "color" not in text
    assert "Your cart misses you" not in text

    # nothing changed: the user is as it was
    assert client.get(f"/admin/users/{profile['id']}").json()["version"] == profile["version"]


def test_preview_context_data_event_organization_and_escaping(client: httpx.Client) -> None:
    org_external_id = uid("org")
    external_id, _ = user(client, data={"first_name": "<b>Bo</b>"}, locale="en")
    response = client.post(
        "/client/organizations",
        json={"identifier": [ident(org_external_id)], "name": "Acme", "data": {"plan": "pro"}},
    )
    assert response.status_code == 200, response.text
    joined = client.post(
        "/client/organizations/users",
        json={"organization": {"identifier": [ident(org_external_id)]}, "user": {"identifier": [ident(external_id)]}},
    )
    assert joined.status_code == 200, joined.text
    template = create(
        client,
        variants={
            "en": email_variant(
                subject="{{ event.name }} for {{ user.data.first_name }}",
                html="<p>{{ user.data.first_name }} {{ user.data.first_name | safe }} {{ data.code }} "
                "{{ organization.name }}/{{ organization.data.plan }}/{{ organization.external_id }} "
                "{{ run.step }}</p>",
                text="Code {{ data.code }} for {{ user.data.first_name }} ({{ user.external_id }})",
            )
        },
    )
    rendered = preview(
        client,
        template["id"],
        user=[ident(uid("unknown")), ident(external_id)],  # the first identifier that exists names the user
        data={"code": "X1"},
        event={"name": "cart_abandoned", "data": {}},
        run={"step": "s1"},
    ).json()
    assert rendered["subject"] == "cart_abandoned for <b>Bo</b>"  # subjects are text: not escaped
    assert rendered["html"] == f"<p>&lt;b&gt;Bo&lt;/b&gt; <b>Bo</b> X1 Acme/pro/{org_external_id} s1</p>"
    assert rendered["text"] == f"Code X1 for <b>Bo</b> ({external_id})"  # given text part used as is


def test_preview_of_an_unknown_user_or_template_is_404_and_creates_nothing(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    template = create(client)
    ghost = uid("ghost")
    assert refused(preview(client, template["id"], user=[ident(ghost)]), 404)["detail"] == (
        "user: no user named by these identifiers in this project"
    )
    assert db.execute("SELECT count(*) FROM user_identifiers WHERE external_id = %s", (ghost,)).fetchone() == (0,)
    missing_id = "6f1c0f7e-0000-4000-8000-000000000000"
    assert refused(preview(client, template["id"], user_id=missing_id), 404)
    _, profile = user(client)
    assert refused(preview(client, missing_id, user_id=profile["id"]), 404)["detail"].startswith("template ")
    assert refused(preview(client, template["id"]))["detail"] == (
        "body: name the user by `user` (identifiers) or by `user_id`, one of the two"
    )
    assert refused(preview(client, template["id"], user_id=profile["id"], user=[ident(ghost)]))


def test_channels_render_their_fields(client: httpx.Client) -> None:
    external_id, profile = user(client, email="c@shop.example", phone="+15550100", data={"n": 3})
    cases: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("sms", {"body": "Code {{ user.data.n | plus: 1 }}"}, {"body": "Code 4"}),
        ("whatsapp", {"body": "Hi {{ user.phone }}"}, {"body": "Hi +15550100"}),
        (
            "push",
            {
                "title": "T {{ user.data.n }}",
                "body": "B",
                "url": "https://app/{{ user.external_id }}",
                "data": {"deep": ["{{ user.email }}", 7, {"k": "{{ user.data.n }}"}]},
            },
            {
                "title": "T 3",
                "body": "B",
                "url": f"https://app/{external_id}",
                "data": {"deep": ["c@shop.example", 7, {"k": "3"}]},
            },
        ),
        (
            "inbox",
            {"title": "Inbox {{ user.email }}", "body": "<b>{{ user.data.n }}</b>", "data": {"a": "{{ user.id }}"}},
            {"title": "Inbox c@shop.example", "body": "<b>3</b>", "data": {"a": profile["id"]}},
        ),
        (
            "webhook",
            {
                "url": "https://hooks.example/{{ user.external_id }}",
                "method": "PUT",
                "headers": {"X-User": "{{ user.email }}\r\nInjected: yes"},
                "body": '{"user": {{ user.data | json }}}',
            },
            {
                "url": f"https://hooks.example/{external_id}",
                "method": "PUT",
                "headers": {"X-User": "c@shop.example Injected: yes"},
                "body": '{"user": {"n":3}}',
            },
        ),
    ]
    for channel, fields, expected in cases:
        template = create(client, channel=channel, variants={"en": fields})
        rendered = preview(client, template["id"], user_id=profile["id"]).json()
        assert rendered == {"channel": channel, "locale": "en", "user_id": profile["id"], **expected}, channel


def test_a_runaway_template_fails_with_a_clear_error_not_a_hang(client: httpx.Client) -> None:
    _, profile = user(client)
    nested = "{% for a in (1..100000) %}{% for b in (1..100000) %}x{% endfor %}{% endfor %}"
    huge = "{% for a in (1..9000) %}" + "y" * 200 + "{% endfor %}"
    growing = "{% assign s = 'abcdefgh' %}{% for i in (1..40) %}{% assign s = s | append: s %}{% endfor %}{{ s }}"
    expected = {
        nested: "variants.en.body: line 1, column 4: loop iteration limit reached (at most 10,000 iterations;",
        huge: "variants.en.body: line 1, column 4: output longer than 1,048,576 characters",
        growing: "variants.en.body: line 1, column 31: assigned and captured variables larger than 262,144 bytes",
    }
    for source, detail in expected.items():
        template = create(client, channel="sms", variants={"en": {"body": source}})
        started = time.monotonic()
        problem = refused(preview(client, template["id"], user_id=profile["id"]), 422)
        assert problem["detail"].startswith(detail), problem
        assert time.monotonic() - started < 10
    # snippets that render each other too deeply stop at the depth limit
    names = [uid("deep") for _ in range(7)]
    snippet(client, "end", name=names[-1])
    for here, there in reversed(list(itertools.pairwise(names))):
        snippet(client, f"{{% render '{there}' %}}", name=here)
    template = create(client, channel="sms", variants={"en": {"body": f"{{% render '{names[0]}' %}}"}})
    assert (
        "snippets nest deeper than 5 levels"
        in refused(preview(client, template["id"], user_id=profile["id"]), 422)["detail"]
    )


def test_an_edit_is_rendered_at_once(client: httpx.Client) -> None:
    """Parsed templates are cached by (id, updated_at): an update is never served stale."""
    _, profile = user(client)
    footer = snippet(client, "v1")
    template = create(client, channel="sms", variants={"en": {"body": f"one {{% render '{footer}' %}}"}})
    assert preview(client, template["id"], user_id=profile["id"]).json()["body"] == "one v1"
    for n in range(3):
        client.patch(
            f"/admin/templates/{template['id']}", json={"variants": {"en": {"body": f"{n} {{% render '{footer}' %}}"}}}
        )
        client.patch(f"/admin/snippets/{footer}", json={"source": f"v{n}"})
        assert preview(client, template["id"], user_id=profile["id"]).json()["body"] == f"{n} v{n}"


# --- isolation ----------------------------------------------------------------------------------------------------


def test_templates_and_snippets_are_project_scoped(client: httpx.Client, b: httpx.Client) -> None:
    shared_name = uid("shared")
    a_snippet = snippet(client, "A's footer", name=shared_name)
    a_template = create(client, name=shared_name, variants={"en": email_variant(html=f"{{% render '{a_snippet}' %}}")})
    _, b_profile = user(b)

    # B sees none of A's
    assert refused(b.get(f"/admin/templates/{a_template['id']}"), 404)
    assert refused(b.patch(f"/admin/templates/{a_template['id']}", json={"name": "stolen"}), 404)
    assert refused(b.delete(f"/admin/templates/{a_template['id']}"), 404)
    assert refused(preview(b, a_template["id"], user_id=b_profile["id"]), 404)
    assert all(t["id"] != a_template["id"] for t in b.get("/admin/templates", params={"limit": 1000}).json())
    assert refused(b.get(f"/admin/snippets/{a_snippet}"), 404)
    assert refused(b.delete(f"/admin/snippets/{a_snippet}"), 404)
    # ... cannot render A's snippet ...
    problem = refused(
        b.post(
            "/admin/templates/validate",
            json={"channel": "sms", "variants": {"en": {"body": f"{{% render '{a_snippet}' %}}"}}},
        )
    )
    assert problem["detail"] == f"variants.en.body: line 1, column 11: snippet '{a_snippet}' does not exist"
    # ... and has names of its own
    b_snippet = snippet(b, "B's footer", name=shared_name)
    b_template = create(b, name=shared_name, variants={"en": email_variant(html=f"{{% render '{b_snippet}' %}}")})
    assert preview(b, b_template["id"], user_id=b_profile["id"]).json()["html"] == "B's footer"
    # A's user cannot be previewed with B's key, nor B's with A's
    _, a_profile = user(client)
    assert refused(preview(b, b_template["id"], user_id=a_profile["id"]), 404)
    assert refused(preview(client, a_template["id"], user_id=b_profile["id"]), 404)
    assert client.get(f"/admin/snippets/{shared_name}").json()["source"] == "A's footer"
