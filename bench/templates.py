"""Rendering cost of a realistic email template: renders per second from one thread, and where the time goes.

    .venv/bin/python bench/templates.py [--renders 3000] [--users 1000]

No server or database: `messaging.templates.render` is pure CPU, exactly what a sender runs per message.
The template is a marketing email (3.8 KB of source, 6.6 KB rendered): a <style> block (type, layout,
buttons, @media for mobile and dark mode), a header, a loop over 4 cart items, a conditional coupon, a footer
snippet with the unsubscribe and preference links; subject and preheader with user data; the text part
derived from the HTML. Each render gets a different user (name, cart, locale), as a campaign does.

Prints renders/s for the whole `render()` (Liquid + CSS inlining + preheader + text part), then the cost
of each step alone, so a change can be judged against the messaging target (>= 1,000 emails/s from one
process, rendering included: rendering must stay well under 1 ms an email).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from _harness import load_average, machine_speed
from lunogram_server.messaging import templates as t

STYLE = """
  body { margin: 0; padding: 0; background: #f4f4f7; font-family: -apple-system, Segoe UI, Helvetica, Arial; }
  table { border-collapse: collapse; }
  .wrapper { width: 100%; background: #f4f4f7; }
  .container { width: 600px; margin: 0 auto; background: #ffffff; border-radius: 8px; }
  .header { padding: 24px; text-align: center; border-bottom: 1px solid #eaeaec; }
  .header img { width: 120px; height: auto; }
  h1 { font-size: 24px; line-height: 32px; color: #1a1a2e; margin: 0 0 12px; }
  p { font-size: 16px; line-height: 24px; color: #51545e; margin: 0 0 16px; }
  .item td { padding: 12px 24px; border-bottom: 1px solid #f0f0f2; }
  .item .name { font-weight: 600; color: #1a1a2e; }
  .item .price { text-align: right; white-space: nowrap; }
  .button { display: inline-block; padding: 12px 28px; background: #3869d4; color: #ffffff !important;
            border-radius: 6px; text-decoration: none; font-weight: 600; }
  .coupon { background: #fff8e1; border: 1px dashed #f5b400; padding: 12px; text-align: center; }
  .footer p { font-size: 12px; line-height: 18px; color: #a8aaaf; text-align: center; }
  .footer a { color: #a8aaaf; }
  @media only screen and (max-width: 600px) {
    .container { width: 100% !important; border-radius: 0 !important; }
    .button { width: 100% !important; text-align: center !important; }
  }
  @media (prefers-color-scheme: dark) {
    body, .wrapper { background: #1a1a2e !important; }
    .container { background: #24243a !important; }
    h1, p, .item .name { color: #e8e8f0 !important; }
  }
"""

HTML = (
    """<!DOCTYPE html>
<html lang="{{ user.locale | default: 'en' }}">
<head>
<meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ user.data.first_name }}, your cart is waiting</title>
<style>"""
    + STYLE
    + """</style>
</head>
<body>
<table class="wrapper" role="presentation"><tr><td>
<table class="container" role="presentation">
  <tr><td class="header"><img src="https://cdn.shop.example/logo.png" alt="Shop"></td></tr>
  <tr><td style="padding: 32px 24px 8px;">
    <h1>Hi {{ user.data.first_name | default: "there" }}, you left something behind</h1>
    <p>We saved the {{ user.data.cart | size }} item{% if user.data.cart.size != 1 %}s{% endif %} in your cart.
       They are selling fast, so complete your order before they are gone.</p>
  </td></tr>
  {% for item in user.data.cart %}
  <tr class="item"><td>
    <table role="presentation" width="100%"><tr>
      <td width="64"><img src="{{ item.image }}" width="64" height="64" alt="{{ item.name }}"></td>
      <td class="name">
        <a href="https://shop.example/p/{{ item.sku }}?utm_source=email&utm_campaign=cart">{{ item.name }}</a><br>
        <span style="font-size: 13px;">Qty {{ item.qty }}</span></td>
      <td class="price">{{ item.price | times: item.qty | round: 2 }} {{ user.data.currency }}</td>
    </tr></table>
  </td></tr>
  {% endfor %}
  <tr><td style="padding: 24px; text-align: center;">
    <a class="button" href="https://shop.example/cart?u={{ user.external_id | url_encode }}">Return to your cart</a>
  </td></tr>
  {% if user.data.vip %}
  <tr><td style="padding: 0 24px 24px;"><div class="coupon">As a VIP, take <strong>15% off</strong> with
    code <strong>{{ data.coupon | upcase }}</strong> until {{ data.expires | date: "%B %d" }}.</div></td></tr>
  {% endif %}
  <tr><td style="padding: 0 24px 24px;">
    <p>Questions? Reply to this email or visit our <a href="https://shop.example/help">help centre</a>.
       Free returns within 30 days, free shipping over 50 {{ user.data.currency }}.</p>
    <p>Thanks for shopping with us,<br>The Shop team</p>
  </td></tr>
  <tr><td class="footer" style="padding: 24px;">{% render 'footer', user: user, unsubscribe_url: unsubscribe_url,
    preferences_url: preferences_url %}</td></tr>
</table>
</td></tr></table>
</body>
</html>"""
)

FOOTER = """<p>You receive this email because {{ user.email }} has an account at Shop.<br>
<a href="{{ preferences_url }}">Email preferences</a> &middot; <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
<p>Shop B.V., Keizersgracht 1, 1015 CJ Amsterdam, The Netherlands</p>"""

NAMES = ["Ann", "Bob", "Chioma", "Dmitri", "Eva", "Farid", "Grace", "Hiro", "Ines", "Jonas"]
PRODUCTS = ["Linen shirt", "Wool socks", "Canvas tote", "Leather belt", "Rain jacket", "Desk lamp"]


def template() -> t.TemplateDefinition:
    content = t.EmailContent(
        subject="{{ user.data.first_name }}, your {{ user.data.cart | size }} items are waiting",
        preheader="Complete your order before they sell out{% if user.data.vip %}, VIP code inside{% endif %}",
        html=HTML,
    )
    return t.TemplateDefinition(
        channel="email",
        variants={"en": content, "nl": content},
        default_locale="en",
        id=uuid.uuid4(),
        updated_at=datetime.now(UTC),
        snippets=frozenset({"footer"}),
    )


def contexts(count: int) -> list[dict[str, Any]]:
    out = []
    for n in range(count):
        cart = [
            {
                "sku": f"SKU-{n}-{k}",
                "name": PRODUCTS[(n + k) % len(PRODUCTS)],
                "qty": 1 + (n + k) % 3,
                "price": 19.95 + k * 10,
                "image": f"https://cdn.shop.example/p/{(n + k) % 97}.jpg",
            }
            for k in range(4)
        ]
        user = t.UserContext(
            id=uuid.uuid4(),
            email=f"user{n}@mail.example",
            locale="nl-NL" if n % 3 == 0 else "en-GB",
            data={"first_name": NAMES[n % len(NAMES)], "cart": cart, "currency": "EUR", "vip": n % 4 == 0},
            identifiers=[{"source": "default", "external_id": f"customer-{n}"}],
        )
        out.append(
            t.message_context(
                user,
                unsubscribe_url=f"https://shop.example/u/{n}/signed-token-abcdef0123456789",
                preferences_url=f"https://shop.example/p/{n}/signed-token-abcdef0123456789",
                data={"coupon": "vip15", "expires": "2030-01-31"},
            )
        )
    return out


def per_second(work: Callable[[int], object], count: int) -> tuple[float, float]:
    """(operations per CPU second of this process, median CPU microseconds per operation) over `count` calls
    in 5 rounds. CPU time, not wall time: on a shared machine the wall clock also counts other work."""
    rounds = []
    per_round = max(1, count // 5)
    for r in range(5):
        started = time.process_time()
        for n in range(per_round):
            work(r * per_round + n)
        rounds.append((time.process_time() - started) / per_round)
    median = statistics.median(rounds)
    return 1 / median, median * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--renders", type=int, default=3000)
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args()

    definition = template()
    users = contexts(args.users)
    snippets = {"footer": FOOTER}
    sample = t.render(definition, "en", users[0], snippets)
    assert isinstance(sample, t.RenderedEmail)
    assert "@media only screen" in sample.html
    assert '<a class="button" href=' in sample.html

    def ctx(n: int) -> dict[str, Any]:
        return users[n % len(users)]

    def full(n: int) -> object:
        context = ctx(n)
        return t.render(definition, context["user"]["locale"], context, snippets)

    parsed = t.TEXT_ENV.from_string(definition.variants["en"].subject)
    html_template = t.HTML_ENV.from_string(HTML)

    def liquid_html(n: int) -> str:
        token = t._SNIPPETS.set(snippets)
        try:
            return str(html_template.render(ctx(n)))
        finally:
            t._SNIPPETS.reset(token)

    rendered_html = [liquid_html(n) for n in range(50)]

    steps: list[tuple[str, Callable[[int], object]]] = [
        ("render() in full", full),
        ("  Liquid: html", liquid_html),
        ("  Liquid: subject", lambda n: parsed.render(ctx(n))),
        ("  css-inline", lambda n: t.inline_css(rendered_html[n % 50])),
        ("  text part (html_to_text)", lambda n: t.html_to_text(rendered_html[n % 50])),
        ("  preheader", lambda n: t.insert_preheader(rendered_html[n % 50], "Complete your order")),
    ]
    print(f"{machine_speed()} (1.9-2.0 s on a quiet machine); {load_average()}")
    print(
        f"python {platform.python_version()} on {platform.machine()}; HTML source {len(HTML):,} chars, "
        f"rendered {len(sample.html):,} chars, text part {len(sample.text):,} chars"
    )
    print(f"{'step':32} {'per CPU s':>12} {'CPU µs each':>12}")
    for name, work in steps:
        rate, micros = per_second(work, args.renders)
        print(f"{name:32} {rate:12,.0f} {micros:12,.0f}")


if __name__ == "__main__":
    main()
