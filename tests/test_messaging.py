"""Messaging end to end, through the HTTP API: journeys and the transactional API queue messages, the
server's senders send them to real servers on loopback (aiosmtpd for SMTP, HTTP servers speaking each
provider's API), and what recipients do (opens, clicks, unsubscribes) comes back through signed links as
`message.*` events that move journeys on.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from helpers import Server, ident, uid, wait_until
from journey_helpers import entrance, make_journey, path, run_in, wait_for_run
from messaging_servers import TLS, ApnsServer, SendgridServer, SmtpServer, WebPushServer


def messaging_env(**overrides: str) -> dict[str, str]:
    """A messaging test server's settings: quick polls and retries, an encryption key for provider secrets."""
    return {
        "LUNOGRAM_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "LUNOGRAM_SEND_POLL_SECONDS": "0.2",
        "LUNOGRAM_SEND_RETRY_BASE_SECONDS": "0.05",
        "LUNOGRAM_JOURNEY_POLL_SECONDS": "0.2",
        "LUNOGRAM_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
        "SSL_CERT_FILE": str(TLS.cert_file),  # trusts the loopback push services' test certificate
        **overrides,
    }


@pytest.fixture(scope="module")
def mserver(server_factory: Callable[..., Server]) -> Server:
    return server_factory(extra_env=messaging_env())


@pytest.fixture
def mc(mserver: Server) -> Iterator[httpx.Client]:
    with mserver.client() as c:
        yield c


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mail_provider(mserver: Server, smtp: SmtpServer) -> dict[str, Any]:
    with mserver.client() as client:
        body = {
            "name": uid("smtp"),
            "kind": "smtp",
            "config": {"host": "127.0.0.1", "port": smtp.port, "security": "none", "from_address": "news@shop.example"},
            "is_default": True,
        }
        made = client.post("/admin/providers", json=body)
        assert made.status_code == 201, made.text
        return dict(made.json())


def template(client: httpx.Client, html: str = "", **extra: Any) -> dict[str, Any]:
    body = {
        "name": uid("tmpl"),
        "channel": "email",
        "variants": {
            "en": {
                "subject": "Hello {{ user.data.name | default: 'there' }}",
                "html": html
                or '<html><body><p>Hi {{ user.data.name }}</p><a href="https://shop.example/deal">Deal</a></body></html>',
            }
        },
        **extra,
    }
    made = client.post("/admin/templates", json=body)
    assert made.status_code == 201, made.text
    return dict(made.json())


def user(client: httpx.Client, **fields: Any) -> tuple[str, str]:
    external_id = uid("u")
    body = {"identifier": [ident(external_id)], "email": f"{external_id}@mail.example", **fields}
    made = client.post("/client/users", json=body)
    assert made.status_code == 200, made.text
    return external_id, str(made.json()["id"])


def mail_to(smtp: SmtpServer, address: str, count: int = 1) -> list[Any]:
    return list(
        wait_until(
            lambda: (
                (found := [m for m in smtp.messages.snapshot() if address in m.to]) and len(found) >= count and found
            ),
            what=f"mail to {address}",
        )
    )


def send(client: httpx.Client, template_id: str, external_id: str, **extra: Any) -> httpx.Response:
    body = {"template_id": template_id, "identifier": [ident(external_id)], "key": uid("key"), **extra}
    return client.post("/admin/messages", json=body)


def message_when(client: httpx.Client, message_id: str, status: str | tuple[str, ...]) -> dict[str, Any]:
    wanted = (status,) if isinstance(status, str) else status
    return dict(
        wait_until(
            lambda: (m := client.get(f"/admin/messages/{message_id}").json())["status"] in wanted and m,
            what=f"message {message_id} {wanted}",
        )
    )


def test_a_journey_email_is_sent_opened_and_clicked_and_the_journey_moves_on(
    mserver: Server, mc: httpx.Client, smtp: SmtpServer, mail_provider: dict[str, Any]
) -> None:
    tmpl = template(mc)
    steps = {
        "start": entrance({"kind": "api"}, "mail"),
        "mail": {"type": "send", "channel": "email", "template_id": tmpl["id"], "next": "opened"},
        "opened": {
            "type": "wait_for_event",
            "event": "message.opened",
            "rule": {"type": "context", "path": "event.data.template_id", "op": "equals", "value": tmpl["id"]},
            "timeout": {"value": 1, "unit": "days"},
            "next": "clicked",
            "timeout_next": None,
        },
        "clicked": {
            "type": "wait_for_event",
            "event": "message.clicked",
            "timeout": {"value": 1, "unit": "days"},
            "next": "done",
        },
        "done": {"type": "exit"},
    }
    journey = make_journey(mc, steps)
    external_id, user_id = user(mc, data={"name": "Ada"})
    mc.post(
        f"/admin/journeys/{journey['id']}/entrances", json={"identifier": [ident(external_id)], "key": "k"}
    ).raise_for_status()
    [mail] = mail_to(smtp, f"{external_id}@mail.example")
    assert mail.subject == "Hello Ada"
    assert mail.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail.headers["List-Unsubscribe"].startswith(f"<{mserver.root_url}/unsubscribe/")
    wait_for_run(mc, journey["id"], user_id, "waiting")
    pixel = re.search(r'<img src="([^"]+/t/o/[^"]+)"', mail.html or "")
    assert pixel is not None, mail.html
    opened = httpx.get(pixel.group(1))
    assert opened.status_code == 200
    assert opened.headers["content-type"] == "image/gif"
    link = re.search(r'href="([^"]+/t/c/[^"]+)"', mail.html or "")
    assert link is not None
    wait_until(lambda: path(run_in(mc, journey["id"], user_id)[0])[-1][0] == "opened", what="the open moved the run")
    clicked = httpx.get(link.group(1), follow_redirects=False)
    assert clicked.status_code == 302
    assert clicked.headers["location"] == "https://shop.example/deal"
    run = wait_for_run(mc, journey["id"], user_id, "exited")
    assert [step for step, _ in path(run)] == ["start", "mail", "opened", "clicked", "done"]
    messages = mc.get(f"/admin/users/{user_id}/messages").json()
    [sent] = [m for m in messages if m["template_id"] == tmpl["id"]]
    detail = mc.get(f"/admin/messages/{sent['id']}").json()
    assert detail["status"] == "sent"
    assert detail["opened_at"] is not None
    assert detail["clicked_at"] is not None
    assert [e["kind"] for e in detail["events"]] == ["sent", "opened", "clicked"]
    assert mail.message_id is not None
    assert sent["id"] in mail.message_id
    history = mc.get(f"/admin/users/{user_id}/events").json()["events"]
    assert {"message.sent", "message.opened", "message.clicked"} <= {e["name"] for e in history}
    stats = mc.get(f"/admin/journeys/{journey['id']}/messages").json()["mail"]
    assert (stats["sent"], stats["opened"], stats["clicked"]) == (1, 1, 1)


def test_one_click_unsubscribe_stops_the_next_marketing_send(
    mc: httpx.Client, smtp: SmtpServer, mail_provider: dict[str, Any]
) -> None:
    group = mc.post("/admin/subscription-groups", json={"name": uid("news"), "channel": "email"}).json()
    tmpl = template(mc, subscription_group_id=group["id"])
    external_id, user_id = user(mc)
    first = send(mc, tmpl["id"], external_id)
    assert first.status_code == 202, first.text
    [mail] = mail_to(smtp, f"{external_id}@mail.example")
    unsubscribe = mail.headers["List-Unsubscribe"].strip("<>")
    one_click = httpx.post(
        unsubscribe,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200
    states = mc.get(f"/admin/users/{user_id}/subscriptions").json()
    assert [s["subscribed"] for s in states if s["group_id"] == group["id"]] == [False]
    second = send(mc, tmpl["id"], external_id).json()
    skipped = message_when(mc, second["id"], "skipped")
    assert skipped["reason"] == "unsubscribed"
    assert len([m for m in smtp.messages.snapshot() if f"{external_id}@mail.example" in m.to]) == 1
    events = mc.get(f"/admin/users/{user_id}/events").json()["events"]
    assert "message.unsubscribed" in {e["name"] for e in events}
    # a transactional group cannot be left: its mail goes regardless
    receipts = mc.post(
        "/admin/subscription-groups", json={"name": uid("receipts"), "channel": "email", "kind": "transactional"}
    ).json()
    receipt = template(mc, subscription_group_id=receipts["id"])
    assert (
        mc.put(
            f"/admin/users/{user_id}/subscriptions", json={"group_id": receipts["id"], "subscribed": False}
        ).status_code
        == 404
    )
    sent = send(mc, receipt["id"], external_id).json()
    assert message_when(mc, sent["id"], "sent")["status"] == "sent"


def test_a_frequency_cap_holds_when_senders_decide_at_the_same_moment(
    server_factory: Callable[..., Server], smtp: SmtpServer
) -> None:
    """Four senders taking one message each: eight sends to one user, decided concurrently, with a cap of two
    a day. Counting only what was sent let a send decided while another was in flight through too."""
    racing = server_factory(
        extra_env=messaging_env(
            LUNOGRAM_SENDER_TASKS="4",
            LUNOGRAM_SEND_BATCH_SIZE="1",
            LUNOGRAM_SEND_POLL_SECONDS="0.05",
            LUNOGRAM_JOURNEY_POLL_SECONDS="0.1",
        )
    )
    with racing.client() as client:
        provider = {
            "name": uid("smtp"),
            "kind": "smtp",
            "config": {"host": "127.0.0.1", "port": smtp.port, "security": "none", "from_address": "news@shop.example"},
        }
        assert client.post("/admin/providers", json=provider).status_code == 201
        caps = {"frequency_caps": {"email": {"count": 2, "period_seconds": 86400}}}
        assert client.put("/admin/messaging/settings", json=caps).status_code == 200
        steps = {
            "start": entrance({"kind": "api"}, "mail"),
            "mail": {"type": "send", "channel": "email", "template_id": template(client)["id"]},
        }
        journey = make_journey(client, steps, reentry="always")
        external_id, user_id = user(client)
        for n in range(8):
            entered = client.post(
                f"/admin/journeys/{journey['id']}/entrances", json={"identifier": [ident(external_id)], "key": f"k{n}"}
            )
            assert entered.status_code in (200, 201, 202), entered.text
        settled = wait_until(
            lambda: (
                (found := [m["status"] for m in client.get(f"/admin/users/{user_id}/messages").json()])
                and len(found) == 8
                and all(status in ("sent", "skipped") for status in found)
                and found
            ),
            what="eight messages settled",
        )
    assert sorted(settled) == ["sent"] * 2 + ["skipped"] * 6
    assert len(mail_to(smtp, f"{external_id}@mail.example", 2)) == 2


def test_quiet_hours_defer_and_frequency_caps_hold_across_journeys(
    mc: httpx.Client, smtp: SmtpServer, mail_provider: dict[str, Any], mserver: Server
) -> None:
    # a second project's rules would interfere with the shared one's: these tests own the project's rules
    now = datetime.now(UTC)
    start = (now - timedelta(hours=1)).time().replace(second=0, microsecond=0)
    end = (now + timedelta(hours=1)).time().replace(second=0, microsecond=0)
    rules = {"quiet_start": start.strftime("%H:%M"), "quiet_end": end.strftime("%H:%M"), "timezone": "UTC"}
    assert mc.put("/admin/messaging/settings", json=rules).status_code == 200
    tmpl = template(mc)
    journey = make_journey(
        mc,
        {
            "start": entrance({"kind": "api"}, "mail"),
            "mail": {"type": "send", "channel": "email", "template_id": tmpl["id"]},
        },
    )
    external_id, user_id = user(mc, timezone="UTC")
    mc.post(
        f"/admin/journeys/{journey['id']}/entrances", json={"identifier": [ident(external_id)], "key": "q"}
    ).raise_for_status()
    deferred = wait_until(
        lambda: [
            m
            for m in mc.get(f"/admin/users/{user_id}/messages").json()
            if mc.get(f"/admin/messages/{m['id']}").json()["reason"] == "quiet hours"
        ]
    )
    detail = mc.get(f"/admin/messages/{deferred[0]['id']}").json()
    assert detail["status"] == "queued"
    assert datetime.fromisoformat(detail["next_attempt_at"]).time().replace(second=0) == end
    # caps: one marketing email a day, across two journeys
    caps = {"frequency_caps": {"email": {"count": 1, "period_seconds": 86400}}}
    assert mc.put("/admin/messaging/settings", json=caps).status_code == 200
    other = make_journey(
        mc,
        {
            "start": entrance({"kind": "api"}, "mail"),
            "mail": {"type": "send", "channel": "email", "template_id": tmpl["id"]},
        },
    )
    capped, capped_id = user(mc)
    for j in (journey, other):
        mc.post(
            f"/admin/journeys/{j['id']}/entrances", json={"identifier": [ident(capped)], "key": capped}
        ).raise_for_status()
    mail_to(smtp, f"{capped}@mail.example")
    statuses = wait_until(
        lambda: (
            (s := sorted((m["status"], m["reason"]) for m in mc.get(f"/admin/users/{capped_id}/messages").json()))
            and all(st in ("sent", "skipped") for st, _ in s)
            and len(s) == 2
            and s
        )
    )
    assert statuses == [("sent", None), ("skipped", "frequency cap: 1 per 86400 s")]
    assert mc.put("/admin/messaging/settings", json={}).status_code == 200
    # quiet hours are wall-clock times: an offset is refused, naming the field (one past +-15:59 was a 500)
    before = mc.get("/admin/messaging/settings").json()
    for bad in ("00:25:39+16:45", "22:00Z", "22:00+02:00"):
        refused = mc.put("/admin/messaging/settings", json={"quiet_start": bad, "quiet_end": "07:00"})
        assert refused.status_code == 400, refused.text
        assert "quiet_start" in refused.json()["detail"]
        assert "without an offset" in refused.json()["detail"]
    assert mc.get("/admin/messaging/settings").json() == before


def test_temporary_failures_are_retried_and_permanent_ones_recorded(
    mc: httpx.Client, smtp: SmtpServer, mail_provider: dict[str, Any]
) -> None:
    tmpl = template(mc)
    external_id, _ = user(mc)
    smtp.fail_next(451, times=2, text="try later")
    first = send(mc, tmpl["id"], external_id).json()
    sent = message_when(mc, first["id"], ("sent", "failed"))
    assert sent["status"] == "sent"
    assert sent["attempts"] == 3
    assert [e["kind"] for e in sent["events"]] == ["retry", "retry", "sent"]
    smtp.fail_next(554, text="rejected for policy")
    second = send(mc, tmpl["id"], external_id).json()
    failed = message_when(mc, second["id"], ("sent", "failed"))
    assert failed["status"] == "failed"
    assert failed["attempts"] == 1
    assert "554" in failed["reason"]


def test_an_http_provider_429_is_retried_then_sent(mc: httpx.Client) -> None:
    with SendgridServer() as sendgrid:
        body = {
            "name": uid("sg"),
            "kind": "sendgrid",
            "config": {"base_url": sendgrid.base_url, "from_address": "news@shop.example"},
            "secrets": {"api_key": "SG.test-key"},
        }
        provider = mc.post("/admin/providers", json=body)
        assert provider.status_code == 201, provider.text
        tmpl = template(mc)
        external_id, _ = user(mc)
        sendgrid.fail_next(429, times=1, headers={"Retry-After": "0"})
        queued = send(mc, tmpl["id"], external_id, provider_id=provider.json()["id"]).json()
        done = message_when(mc, queued["id"], ("sent", "failed"))
        assert done["status"] == "sent"
        assert [e["kind"] for e in done["events"]] == ["retry", "sent"]
        sendgrid.fail_next(400, times=1)
        refused = send(mc, tmpl["id"], external_id, provider_id=provider.json()["id"]).json()
        assert message_when(mc, refused["id"], ("sent", "failed"))["status"] == "failed"
        assert len(sendgrid.wait_for(1)) == 1


def test_the_transactional_api_is_idempotent_by_key(
    mc: httpx.Client, smtp: SmtpServer, mail_provider: dict[str, Any]
) -> None:
    tmpl = template(mc, html="<p>Order {{ data.order }}</p>")
    external_id, _ = user(mc)
    body = {"template_id": tmpl["id"], "identifier": [ident(external_id)], "key": uid("k"), "data": {"order": "A-7"}}
    first = mc.post("/admin/messages", json=body)
    again = mc.post("/admin/messages", json=body)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]
    [mail] = mail_to(smtp, f"{external_id}@mail.example")
    assert "Order A-7" in (mail.html or "")
    missing = mc.post(
        "/admin/messages", json={**body, "key": uid("k"), "template_id": "00000000-0000-0000-0000-000000000000"}
    )
    assert missing.status_code == 404
    assert "template_id" in missing.json()["detail"]


def test_a_campaign_goes_to_a_list_with_progress_pause_and_statistics(
    mc: httpx.Client, smtp: SmtpServer, mail_provider: dict[str, Any]
) -> None:
    static = mc.post("/admin/lists", json={"name": uid("audience")}).json()
    people = [user(mc) for _ in range(12)]
    members = {"users": [[ident(external_id)] for external_id, _ in people]}
    assert mc.post(f"/admin/lists/{static['id']}/members", json=members).status_code == 200
    tmpl = template(mc)
    body = {"name": uid("spring"), "list_id": static["id"], "template_id": tmpl["id"]}
    campaign = mc.post("/admin/campaigns", json=body)
    assert campaign.status_code == 201, campaign.text
    cid = campaign.json()["id"]
    assert campaign.json()["status"] == "draft"
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert mc.post(f"/admin/campaigns/{cid}/schedule", json={"send_at": later}).json()["status"] == "scheduled"
    assert mc.post(f"/admin/campaigns/{cid}/resume").status_code == 409
    paused = mc.post(f"/admin/campaigns/{cid}/pause")
    assert paused.json()["status"] == "paused"
    assert mc.post(f"/admin/campaigns/{cid}/resume").json()["status"] == "scheduled"
    # now, then: every member gets one email, and the statistics say so
    mc.post(f"/admin/campaigns/{cid}/cancel").raise_for_status()
    again = mc.post("/admin/campaigns", json=body).json()
    assert mc.post(f"/admin/campaigns/{again['id']}/schedule").json()["status"] == "scheduled"
    for external_id, _ in people:
        mail_to(smtp, f"{external_id}@mail.example")
    done = wait_until(lambda: (d := mc.get(f"/admin/campaigns/{again['id']}").json())["status"] == "done" and d)
    assert done["progress"] == {"recipients": 12, "queued": 12}
    assert done["stats"]["sent"] == 12
    assert done["stats"]["pending"] == 0
    timeline = mc.get(f"/admin/campaigns/{again['id']}/timeline", params={"bucket_seconds": 60}).json()
    assert sum(point["sent"] for point in timeline) == 12
    cancelled = mc.get(f"/admin/campaigns/{cid}").json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["stats"]["sent"] == 0
    assert all(len([m for m in smtp.messages.snapshot() if f"{e}@mail.example" in m.to]) == 1 for e, _ in people)


def test_a_local_time_campaign_is_due_at_each_recipients_wall_clock(
    mserver: Server, mc: httpx.Client, mail_provider: dict[str, Any]
) -> None:
    import asyncio

    from lunogram_server.db import open_pool
    from lunogram_server.messaging.campaigns import queue_chunk

    static = mc.post("/admin/lists", json={"name": uid("tz")}).json()
    (tokyo, tokyo_id), (lima, lima_id) = user(mc, timezone="Asia/Tokyo"), user(mc, timezone="America/Lima")
    members = {"users": [[ident(tokyo)], [ident(lima)]]}
    mc.post(f"/admin/lists/{static['id']}/members", json=members).raise_for_status()
    tmpl = template(mc)
    body = {"name": uid("c"), "list_id": static["id"], "template_id": tmpl["id"]}
    campaign = mc.post("/admin/campaigns", json=body).json()
    nine = (datetime.now(UTC) + timedelta(days=3)).replace(hour=9, minute=0, second=0, microsecond=0)
    schedule = {"send_at": nine.isoformat(), "local_time": True}
    mc.post(f"/admin/campaigns/{campaign['id']}/schedule", json=schedule).raise_for_status()
    # three days out, nothing is queued yet (queuing starts 14 hours before send_at: the furthest timezone)
    assert mc.get(f"/admin/campaigns/{campaign['id']}").json()["progress"]["queued"] == 0

    async def queue_then() -> None:  # a queuer whose clock reads 14 hours before send_at
        pool = await open_pool(mserver.database_url, min_size=1, max_size=1)
        try:
            async with pool.connection() as conn:
                while await queue_chunk(conn, 1000, now=nine - timedelta(hours=14)):
                    pass
        finally:
            await pool.close()

    asyncio.run(queue_then())
    due = {}
    for who in (tokyo_id, lima_id):
        [message] = mc.get(f"/admin/users/{who}/messages").json()
        due[who] = datetime.fromisoformat(mc.get(f"/admin/messages/{message['id']}").json()["next_attempt_at"])
    assert due[tokyo_id] == nine.replace(tzinfo=None).replace(tzinfo=ZoneInfo("Asia/Tokyo"))
    assert due[lima_id] == nine.replace(tzinfo=None).replace(tzinfo=ZoneInfo("America/Lima"))
    assert mc.post(f"/admin/campaigns/{campaign['id']}/cancel").json()["stats"]["cancelled"] == 2


def test_provider_reports_of_bounces_and_complaints_suppress_and_unsubscribe(mc: httpx.Client) -> None:
    from messaging_servers import PostmarkServer

    with PostmarkServer() as postmark:
        body = {
            "name": uid("pm"),
            "kind": "postmark",
            "secrets": {"server_token": "pm-test-token"},
            "config": {"base_url": postmark.base_url, "from_address": "news@shop.example"},
        }
        provider = mc.post("/admin/providers", json=body).json()
        hook = mc.get(f"/admin/providers/{provider['id']}/feedback-url").json()["url"]
        group = mc.post("/admin/subscription-groups", json={"name": uid("g"), "channel": "email"}).json()
        tmpl = template(mc, subscription_group_id=group["id"])
        bouncer, bouncer_id = user(mc)
        complainer, complainer_id = user(mc)
        sent = {}
        for who in (bouncer, complainer):
            queued = send(mc, tmpl["id"], who, provider_id=provider["id"]).json()
            sent[who] = message_when(mc, queued["id"], "sent")
        reports = [
            (bouncer, {"RecordType": "Bounce", "Type": "HardBounce", "Description": "no such mailbox"}),
            (complainer, {"RecordType": "SpamComplaint"}),
            (bouncer, {"RecordType": "Delivery"}),
        ]
        for who, report in reports:
            payload = {**report, "Metadata": {"lunogram_message_id": sent[who]["id"]}}
            assert httpx.post(hook, json=payload).status_code == 200
        assert httpx.post(hook[:-4] + "AAAA", json={"RecordType": "Delivery"}).status_code == 404
        bounced = mc.get(f"/admin/messages/{sent[bouncer]['id']}").json()
        assert bounced["bounced_at"] is not None
        assert bounced["delivered_at"] is not None
        suppressed = {(s["address"], s["reason"]) for s in mc.get("/admin/suppressions").json()}
        assert (f"{bouncer}@mail.example", "hard_bounce") in suppressed
        assert (f"{complainer}@mail.example", "complaint") in suppressed
        states = mc.get(f"/admin/users/{complainer_id}/subscriptions").json()
        assert [s["subscribed"] for s in states if s["group_id"] == group["id"]] == [False]
        again = send(mc, tmpl["id"], bouncer, provider_id=provider["id"]).json()
        assert message_when(mc, again["id"], "skipped")["reason"] == "suppressed"
        names = {e["name"] for e in mc.get(f"/admin/users/{bouncer_id}/events").json()["events"]}
        assert {"message.bounced", "message.delivered"} <= names


def push_template(client: httpx.Client) -> dict[str, Any]:
    body = {
        "name": uid("push"),
        "channel": "push",
        "variants": {
            "en": {
                "title": "Hi {{ user.data.name }}",
                "body": "Your order {{ data.order }} shipped",
                "url": "https://shop.example/orders/{{ data.order }}",
            }
        },
    }
    made = client.post("/admin/templates", json=body)
    assert made.status_code == 201, made.text
    return dict(made.json())


def test_a_web_push_decrypts_to_the_rendered_payload_and_apns_takes_a_token_authenticated_push(
    mserver: Server, mc: httpx.Client
) -> None:
    from lunogram_server.messaging.providers import generate_vapid_keys

    public, private = generate_vapid_keys()
    with WebPushServer(vapid_public_key=public, tls=True) as webpush, ApnsServer() as apns:
        for provider in (
            {
                "kind": "webpush",
                "config": {"subject": "mailto:ops@shop.example", "public_key": public},
                "secrets": {"private_key": private},
            },
            {
                "kind": "apns",
                "config": {
                    "team_id": apns.team_id,
                    "key_id": apns.key_id,
                    "topic": apns.topic,
                    "base_url": apns.base_url,
                },
                "secrets": {"private_key": apns.private_key_pem},
            },
        ):
            made = mc.post("/admin/providers", json={"name": uid("p"), "is_default": True, **provider})
            assert made.status_code == 201, made.text
        assert mc.get("/client/push/vapid").json() == {"public_key": public}
        external_id, _ = user(mc, data={"name": "Grace"})
        subscription = webpush.subscribe()
        devices = [
            {"device_id": "browser", "os": "web", "config": subscription},
            {"device_id": "phone", "os": "ios", "config": {"token": "a" * 64}},
        ]
        for device in devices:
            registered = mc.post("/client/users/devices", json={"identifier": [ident(external_id)], **device})
            assert registered.status_code == 201, registered.text
        tmpl = push_template(mc)
        queued = send(mc, tmpl["id"], external_id, data={"order": "A-1"}).json()
        sent = message_when(mc, queued["id"], ("sent", "failed"))
        assert sent["status"] == "sent", sent
        [received] = webpush.wait_for(1)
        assert received.payload["title"] == "Hi Grace"
        assert received.payload["body"] == "Your order A-1 shipped"
        assert received.payload["url"] == "https://shop.example/orders/A-1"
        assert received.payload["id"] == queued["id"]
        [pushed] = apns.wait_for(1)
        assert pushed.payload["aps"]["alert"]["title"] == "Hi Grace"
        assert pushed.headers["apns-id"].lower() == queued["id"].lower()
        # a dead browser subscription is dropped; the phone still gets the next one
        webpush.gone.add(subscription["endpoint"])
        again = send(mc, tmpl["id"], external_id, data={"order": "A-2"}).json()
        assert message_when(mc, again["id"], ("sent", "failed"))["status"] == "sent"
        apns.wait_for(2)
        third = send(mc, tmpl["id"], external_id, data={"order": "A-3"}).json()
        assert message_when(mc, third["id"], ("sent", "failed"))["status"] == "sent"
        assert len(webpush.requests.snapshot()) == 2  # the gone subscription was not tried a third time
        assert mc.get("/admin/users", params={"external_id": external_id}).json()["has_push_device"] is True


def test_an_inbox_template_lands_in_the_users_inbox(mc: httpx.Client) -> None:
    body = {
        "name": uid("inbox"),
        "channel": "inbox",
        "variants": {"en": {"title": "Welcome {{ user.data.name }}", "body": "Glad you are here"}},
    }
    tmpl = mc.post("/admin/templates", json=body)
    assert tmpl.status_code == 201, tmpl.text
    external_id, _ = user(mc, data={"name": "Linus"})
    queued = send(mc, tmpl.json()["id"], external_id).json()
    assert message_when(mc, queued["id"], "sent")["status"] == "sent"
    feed = mc.get("/client/users/inbox", params={"external_id": external_id, "channel": "inbox"}).json()
    [item] = feed["results"]
    assert item["content"]["title"] == "Welcome Linus"
    assert (
        mc.get("/client/users/inbox/count", params={"external_id": external_id, "channel": "inbox"}).json()["unread"]
        == 1
    )
