"""Email sends: how fast one server process renders and sends through the outbox to an SMTP server.

    .venv/bin/python bench/sends.py [--emails 20000] [--campaign 100000] [--sender-tasks 2] [--render-processes 1]
                                    [--batch-size 500] [--connections 16] [--skip-emails] [--skip-campaign]
                                    [--sink lean|aiosmtpd] [--no-chunking]

Starts its own server on a fresh embedded PostgreSQL (one process: API, senders, campaign queuer) and an
SMTP server on loopback: bench/smtp_sink.py in its own process (`--sink aiosmtpd`: aiosmtpd in this
process, as the tests use); users are written with SQL beforehand, each with an email address and a name
the template uses. The CPU line names the server, PostgreSQL, the SMTP sink and this script ("bench")
apart from the rest of the machine.

1. Emails: `--emails` messages written straight into the outbox (as a journey's send step writes them),
   each rendered per user from a realistic template (Liquid, CSS inlined, a text part, tracked links).
   Figure: emails/s from the first send to the last, as the outbox records them.
2. Campaign: a `--campaign`-recipient static list, a campaign created and scheduled through the API.
   Figure: from scheduling to `done`; checked: the campaign's `sent` equals what the SMTP server received
   (distinct Message-IDs), and every recipient got one.

Targets (2 cores): >= 1,000 emails/s; a 100,000-recipient campaign in < 120 s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from aiosmtpd.controller import Controller

from _harness import (
    BenchServer,
    CpuMeter,
    bench_server,
    free_port,
    load_average,
    machine_speed,
    project_id,
    seed_users,
)
from smtp_sink import stats as sink_stats

TEMPLATE = """<html><head><style>
body { font-family: Helvetica, Arial, sans-serif; color: #222; }
.cta { background: #0055ff; color: #fff; padding: 12px 20px; border-radius: 4px; }
p { line-height: 1.5; }
@media (max-width: 600px) { p { font-size: 18px; } }
</style></head><body>
<h1>Hi {{ user.data.name | default: "there" }},</h1>
<p>Your {{ user.data.plan }} plan renews soon. {% if user.data.points > 100 %}You have {{ user.data.points }} points
to spend.{% else %}Earn points with every order.{% endif %}</p>
<p><a class="cta" href="https://shop.example/renew?u={{ user.external_id }}">Renew now</a></p>
<p><a href="https://shop.example/deals">This week's deals</a> &middot;
<a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
</body></html>"""


class Counter:
    """What the SMTP server received: messages, and distinct Message-IDs."""

    def received(self) -> tuple[int, int]:
        raise NotImplementedError


class InProcessCounter(Counter):
    """aiosmtpd in this process (a handler)."""

    def __init__(self) -> None:
        self.count = 0
        self.message_ids: set[str] = set()
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        head = content.split(b"\r\n\r\n", 1)[0]
        message_id = ""
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                message_id = line.split(b":", 1)[1].strip().decode()
        with self.lock:
            self.count += 1
            self.message_ids.add(message_id)
        return "250 OK"

    def received(self) -> tuple[int, int]:
        with self.lock:
            return self.count, len(self.message_ids)


class SinkCounter(Counter):
    """bench/smtp_sink.py in its own process: asked over SMTP (XSTATS)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def received(self) -> tuple[int, int]:
        return asyncio.run(sink_stats(self.port))


def _api(server: BenchServer) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.secret_key}"}, timeout=60)


def setup(server: BenchServer, port: int, connections: int) -> str:
    with _api(server) as api:
        provider = {
            "name": "bench smtp",
            "kind": "smtp",
            "config": {
                "host": "127.0.0.1",
                "port": port,
                "security": "none",
                "from_address": "news@shop.example",
                "max_connections": connections,
            },
        }
        api.post("/admin/providers", json=provider).raise_for_status()
        template = {
            "name": "renewal",
            "channel": "email",
            "variants": {"en": {"subject": "{{ user.data.name }}, your plan renews", "html": TEMPLATE}},
        }
        made = api.post("/admin/templates", json=template)
        made.raise_for_status()
        return str(made.json()["id"])


def wait_sent(
    conn: psycopg.Connection[Any], where: str, params: dict[str, Any], count: int, timeout: float = 900
) -> tuple[datetime, datetime]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            f"SELECT count(*) FILTER (WHERE status NOT IN ('queued', 'sending')), min(sent_at), max(sent_at)"
            f" FROM message_outbox WHERE {where}",
            params,
        ).fetchone()
        assert row is not None
        if row[0] >= count:
            return row[1], row[2]
        time.sleep(0.2)
    raise RuntimeError("the sends did not finish in time")


def emails(
    server: BenchServer,
    conn: psycopg.Connection[Any],
    args: argparse.Namespace,
    template_id: str,
    counter: Counter,
    offset: int,
) -> None:
    project = project_id(server.database_url or "")
    seed_users(
        conn,
        project,
        args.emails,
        start=offset,
        data_sql="jsonb_build_object('name', 'User ' || g, 'plan', 'pro', 'points', g %% 300)",
    )
    conn.execute(
        "UPDATE users SET email = 'u' || i.external_id || '@mail.example' FROM user_identifiers AS i"
        " WHERE i.user_id = users.id AND users.email IS NULL AND users.project_id = %s",
        (project,),
    )
    meter = CpuMeter(server.pids)
    before, _ = counter.received()
    started = time.monotonic()
    conn.execute(
        "INSERT INTO message_outbox (project_id, user_id, channel, template_id, data)"
        " SELECT %s, u.id, 'email', %s, '{}' FROM users AS u WHERE u.project_id = %s AND u.email IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM message_outbox AS m WHERE m.user_id = u.id)",
        (project, template_id, project),
    )
    first, last = wait_sent(conn, "template_id = %(t)s AND campaign_id IS NULL", {"t": template_id}, args.emails)
    wall = time.monotonic() - started
    print(meter.report())
    sent = counter.received()[0] - before
    span = (last - first).total_seconds()
    print(
        f"1. {sent:,} emails rendered and sent in {span:.2f} s (first to last send): {sent / span:,.0f} emails/s; "
        f"{wall:.2f} s from queuing to the last answer recorded  (target >= 1,000 emails/s)"
    )


def campaign(
    server: BenchServer,
    conn: psycopg.Connection[Any],
    args: argparse.Namespace,
    template_id: str,
    counter: Counter,
    offset: int,
) -> None:
    project = project_id(server.database_url or "")
    seed_users(
        conn,
        project,
        args.campaign,
        start=offset,
        data_sql="jsonb_build_object('name', 'User ' || g, 'plan', 'basic', 'points', g %% 300)",
    )
    conn.execute(
        "UPDATE users SET email = 'u' || i.external_id || '@mail.example' FROM user_identifiers AS i"
        " WHERE i.user_id = users.id AND users.email IS NULL AND users.project_id = %s",
        (project,),
    )
    with _api(server) as api:
        audience = api.post("/admin/lists", json={"name": "everyone"}).json()
        conn.execute(
            "INSERT INTO list_members (list_id, user_id, project_id) SELECT %s, u.id, %s FROM users AS u"
            " WHERE u.project_id = %s AND NOT EXISTS (SELECT 1 FROM message_outbox AS m WHERE m.user_id = u.id)",
            (audience["id"], project, project),
        )
        made = api.post(
            "/admin/campaigns", json={"name": "spring", "list_id": audience["id"], "template_id": template_id}
        )
        made.raise_for_status()
        cid = made.json()["id"]
        before, before_ids = counter.received()
        meter = CpuMeter(server.pids)
        started = time.monotonic()
        api.post(f"/admin/campaigns/{cid}/schedule").raise_for_status()
        while True:
            detail = api.get(f"/admin/campaigns/{cid}").json()
            if detail["status"] == "done":
                break
            time.sleep(0.5)
        seconds = time.monotonic() - started
    print(meter.report())
    received, distinct = counter.received()
    received -= before
    distinct -= before_ids
    print(
        f"2. campaign to {detail['progress']['recipients']:,} recipients: done in {seconds:.1f} s "
        f"({detail['stats']['sent'] / seconds:,.0f} emails/s); statistics sent {detail['stats']['sent']:,}, "
        f"SMTP server received {received:,} ({distinct:,} distinct Message-IDs)  (target < 120 s)"
    )
    if detail["stats"]["sent"] != distinct:
        raise SystemExit("the campaign's statistics do not match what the SMTP server received")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emails", type=int, default=20_000)
    parser.add_argument("--campaign", type=int, default=100_000)
    parser.add_argument("--sender-tasks", type=int, default=2, help="LUNOGRAM_SENDER_TASKS")
    parser.add_argument("--render-processes", type=int, default=1, help="LUNOGRAM_RENDER_PROCESSES (0: a thread)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--skip-emails", action="store_true")
    parser.add_argument("--skip-campaign", action="store_true")
    parser.add_argument("--sink", choices=["lean", "aiosmtpd"], default="lean")
    parser.add_argument("--no-chunking", action="store_true", help="the lean sink offers no CHUNKING: DATA only")
    args = parser.parse_args()
    print(machine_speed(), "|", load_average())
    counter: Counter
    roots = {"bench": os.getpid()}
    if args.sink == "aiosmtpd":
        counter = InProcessCounter()
        port = free_port()
        controller: Controller | None = Controller(counter, hostname="127.0.0.1", port=port)
        assert controller is not None
        controller.start()
        sink = None
    else:
        controller = None
        here = os.path.dirname(os.path.abspath(__file__))
        command = [sys.executable, os.path.join(here, "smtp_sink.py"), *(["--no-chunking"] if args.no_chunking else [])]
        sink = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert sink.stdout is not None
        port = int(sink.stdout.readline().split()[1])
        counter = SinkCounter(port)
        roots["smtp sink"] = sink.pid
    env = {
        "LUNOGRAM_SENDER_TASKS": str(args.sender_tasks),
        "LUNOGRAM_RENDER_PROCESSES": str(args.render_processes),
        "LUNOGRAM_SEND_BATCH_SIZE": str(args.batch_size),
        "LUNOGRAM_SEND_POLL_SECONDS": "0.2",
        "LUNOGRAM_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    try:
        with bench_server(env) as server, psycopg.connect(server.database_url or "", autocommit=True) as conn:
            server.pids.update(roots)
            template_id = setup(server, port, args.connections)
            if not args.skip_emails:
                emails(server, conn, args, template_id, counter, 0)
            if not args.skip_campaign:
                campaign(server, conn, args, template_id, counter, args.emails)
    finally:
        if controller is not None:
            controller.stop()
        if sink is not None:
            sink.terminate()
            sink.wait(10)
    print(machine_speed(), "|", datetime.now(UTC).isoformat(timespec="seconds"))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
