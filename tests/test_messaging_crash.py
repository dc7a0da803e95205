"""A large send survives `kill -9`: a campaign to 1,500 users goes out through a real `lunogram serve`
(API, campaign queuer, senders in one process) to an SMTP server on loopback, and the process is SIGKILLed
three times while it sends, restarting on the same database each time.

Afterwards every recipient got their message, and no recipient got two different messages: each message
carries its outbox id in its Message-ID, so a message whose send was cut off between the SMTP server's
"250 OK" and our record of it, and that went again after its lease, arrives with the same Message-ID (a
receiver that keeps one message per Message-ID shows it once). Such repeats are counted: at most the
messages in flight at each kill. The campaign's statistics match what the SMTP server received.
"""

from __future__ import annotations

import base64
import collections
import os
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg

from helpers import Server, ident, uid, wait_until
from messaging_servers import SmtpServer

RECIPIENTS = 1500
KILLS = 3
BATCH = 100


def test_kill_minus_9_during_a_large_send_loses_no_recipient(server_factory: Callable[..., Server]) -> None:
    seed = int(os.environ.get("LUNOGRAM_CRASH_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    env = {
        "LUNOGRAM_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
        "LUNOGRAM_SEND_LEASE_SECONDS": "2",
        "LUNOGRAM_SEND_BATCH_SIZE": str(BATCH),
        "LUNOGRAM_SEND_POLL_SECONDS": "0.2",
        "LUNOGRAM_CAMPAIGN_CHUNK": "500",
    }
    server = server_factory(extra_env=env)
    smtp = SmtpServer().start()
    try:
        with server.client() as client:
            provider = {
                "name": "mail",
                "kind": "smtp",
                "config": {
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "security": "none",
                    "from_address": "news@shop.example",
                },
            }
            assert client.post("/admin/providers", json=provider).status_code == 201
            template = {
                "name": "spring",
                "channel": "email",
                "variants": {"en": {"subject": "Hi {{ user.external_id }}", "html": "<p>Spring sale</p>"}},
            }
            tmpl = client.post("/admin/templates", json=template).json()
            audience = client.post("/admin/lists", json={"name": uid("all")}).json()
            users = [f"crash_{n}" for n in range(RECIPIENTS)]

            def upsert(external_id: str) -> int:
                body = {"identifier": [ident(external_id)], "email": f"{external_id}@mail.example"}
                return client.post("/client/users", json=body).status_code

            with ThreadPoolExecutor(8) as pool:  # concurrent upserts: committed together by the server
                assert set(pool.map(upsert, users)) == {200}
            for start in range(0, RECIPIENTS, 500):
                chunk = users[start : start + 500]
                members = {"users": [[ident(e)] for e in chunk]}
                assert client.post(f"/admin/lists/{audience['id']}/members", json=members).status_code == 200
            campaign = client.post(
                "/admin/campaigns", json={"name": "spring", "list_id": audience["id"], "template_id": tmpl["id"]}
            ).json()
            assert client.post(f"/admin/campaigns/{campaign['id']}/schedule").status_code == 200

        for kill in range(KILLS):
            goal = min(RECIPIENTS - 1, len(smtp.messages) + rng.randint(50, 300))
            wait_until(lambda goal=goal: len(smtp.messages) >= goal, timeout=120, what=f"sends before kill {kill}")
            server.kill()
            server.start()

        with server.client() as client:
            done = wait_until(
                lambda: (c := client.get(f"/admin/campaigns/{campaign['id']}").json())["status"] == "done" and c,
                timeout=180,
                what=f"the campaign done (seed {seed})",
            )
    finally:
        smtp.stop()

    received = smtp.messages.snapshot()
    by_recipient: dict[str, set[str]] = collections.defaultdict(set)
    for mail in received:
        assert mail.message_id is not None
        for to in mail.to:
            by_recipient[to].add(mail.message_id)
    expected = {f"crash_{n}@mail.example" for n in range(RECIPIENTS)}
    assert set(by_recipient) == expected, f"recipients missed (seed {seed})"
    twice = {to: ids for to, ids in by_recipient.items() if len(ids) != 1}
    assert twice == {}, f"recipients got two different messages (seed {seed})"
    repeats = len(received) - RECIPIENTS
    assert repeats <= KILLS * BATCH, f"{repeats} repeated deliveries (seed {seed})"
    assert done["stats"]["sent"] == RECIPIENTS
    assert done["progress"] == {"recipients": RECIPIENTS, "queued": RECIPIENTS}
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT user_id) FROM message_outbox WHERE campaign_id = %s", (campaign["id"],)
        ).fetchone()
    assert row == (RECIPIENTS, RECIPIENTS), "each recipient queued once"
