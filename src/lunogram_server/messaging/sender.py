"""The senders: take due messages from the outbox and send them, each once.

A batch goes in two transactions around the network:

1. Claim due messages (FOR UPDATE SKIP LOCKED: any number of senders in any processes share the outbox)
   and decide each one: its user, address, subscription (marketing groups can be left; transactional ones
   cannot), suppressed addresses, the project's frequency caps and quiet hours (marketing only, in the
   user's timezone), the provider. Messages that will not go are settled here (skipped, deferred, failed);
   the others are rendered (CPU: in child processes for a large batch, else a thread; render_pool.py) and
   marked `sending` under a lease. Commit.
2. Send them, concurrently, at each provider's rate; then record each answer for the attempt it answers
   (sent, retried later with backoff, failed), with its `message.*` event into the event pipeline, in one
   transaction per chunk.

If a process dies between the two, its messages' leases run out and another sender sends them again
under the same message id (the provider's idempotency key, Message-ID, apns-id): delivery is at least
once, never lost, and a duplicate carries the id that tells it apart. See docs/messaging.md.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from typing import Any
from uuid import UUID

import structlog
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from lunogram_server.config import MessagingSettings
from lunogram_server.db import load_queries
from lunogram_server.journeys.timing import zone
from lunogram_server.messaging import devices, inbox, providers_service, templates_service
from lunogram_server.messaging.crypto import Keyring
from lunogram_server.messaging.links import Links
from lunogram_server.messaging.providers import Device, Message, Outcome, Provider
from lunogram_server.messaging.providers_service import ProviderRegistry, ProviderSettings
from lunogram_server.messaging.render_pool import RenderPool
from lunogram_server.messaging.templates import (
    Rendered,
    RenderedEmail,
    RenderedInbox,
    RenderedPush,
    RenderedText,
    RenderedWebhook,
    RenderError,
    TemplateDefinition,
    UserContext,
    message_context,
)

Q = load_queries("lunogram_server.messaging", "outbox.sql")
log = structlog.get_logger("lunogram.messaging")
Clock = Callable[[], datetime]
_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"']+)\2""", re.IGNORECASE)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Claimed:
    id: UUID
    project_id: UUID
    user_id: UUID
    channel: str
    template_id: UUID | None
    provider_id: UUID | None
    group_id: UUID | None
    marketing: bool
    data: dict[str, Any]
    run_id: UUID | None
    journey_id: UUID | None
    step: str | None
    campaign_id: UUID | None
    attempts: int
    status: str


@dataclass
class Ready:
    """A message decided and rendered, marked `sending`: what the provider calls need. Push goes to each of
    the user's devices (`sends`), through the provider that reaches its kind of device; the rest go once."""

    claimed: Claimed
    attempt: int
    sends: list[tuple[ProviderSettings, Message]]

    @property
    def to(self) -> str:
        return self.sends[0][1].to


@dataclass
class Decisions:
    ready: list[Ready] = field(default_factory=list)
    settled: list[tuple[UUID, str, str, datetime | None]] = field(default_factory=list)  # id, status, reason, next
    delivered: list[Claimed] = field(default_factory=list)  # inbox messages, stored in place
    events: list[tuple[UUID, UUID, str, dict[str, Any] | None]] = field(default_factory=list)  # id, project, kind

    def settle(self, message: Claimed, status: str, reason: str, next_at: datetime | None = None) -> None:
        self.settled.append((message.id, status, reason, next_at))
        kind = "deferred" if next_at is not None else status
        self.events.append((message.id, message.project_id, kind, {"reason": reason}))


class RateLimiter:
    """Per provider, at most `rate_per_second` sends a second from this process (a token bucket)."""

    def __init__(self) -> None:
        self._buckets: dict[UUID, tuple[float, float]] = {}  # provider -> (tokens, last refill)
        self._lock = asyncio.Lock()

    async def take(self, provider: ProviderSettings) -> None:
        rate = provider.rate_per_second
        if not rate:
            return
        while True:
            async with self._lock:
                now = time.monotonic()
                tokens, last = self._buckets.get(provider.id, (rate, now))
                tokens = min(rate, tokens + (now - last) * rate)
                if tokens >= 1:
                    self._buckets[provider.id] = (tokens - 1, now)
                    return
                self._buckets[provider.id] = (tokens, now)
                wait = (1 - tokens) / rate
            await asyncio.sleep(wait)


class Sender:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        config: MessagingSettings,
        registry: ProviderRegistry,
        keyring: Keyring | None,
        base_url: str,
        *,
        clock: Clock = utc_now,
        wakeup: asyncio.Event | None = None,
        renderer: RenderPool | None = None,
    ) -> None:
        self.pool = pool
        self.config = config
        self.registry = registry
        self.keyring = keyring
        self.base_url = base_url
        self.clock = clock
        self.wakeup = wakeup
        self.renderer = renderer or RenderPool(0)
        self.limiter = RateLimiter()
        self._links: Links | None = None
        self._calls = asyncio.Semaphore(config.send_concurrency)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self.wakeup is not None:
                self.wakeup.clear()
            try:
                done = await self.run_once()
            except Exception:  # the database went away, say: log, wait, try again
                log.exception("send batch failed")
                done = 0
            if done == 0:
                waits = [asyncio.ensure_future(stop.wait())]
                if self.wakeup is not None:
                    waits.append(asyncio.ensure_future(self.wakeup.wait()))
                try:
                    await asyncio.wait(waits, timeout=self.config.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiting in waits:
                        waiting.cancel()

    async def links(self, conn: AsyncConnection[Any]) -> Links:
        if self._links is None:
            self._links = await Links.load(conn, self.base_url)
        return self._links

    async def run_once(self) -> int:
        """One batch: claim, decide, send, record; how many messages it took (0: none was due)."""
        now = self.clock()
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(Q["claim"], {"now": now, "limit": self.config.batch_size})
            claimed = [Claimed(*row) for row in await cursor.fetchall()]
            if not claimed:
                return 0
            decisions = await self._decide(conn, claimed, now)
            await self._write_decisions(conn, decisions, now)
        if decisions.ready:
            await self._send_all(decisions.ready)
        return len(claimed)

    async def _send_all(self, ready: list[Ready]) -> None:
        """Send concurrently and record answers as they come, a few at a time: a message's lease then only
        has to cover its own send, not the slowest of its batch."""
        answered: list[tuple[Ready, Outcome]] = []
        last = time.monotonic()

        async def one(item: Ready) -> tuple[Ready, Outcome]:
            return item, await self._send(item)

        for finished in asyncio.as_completed([one(item) for item in ready]):
            answered.append(await finished)
            if len(answered) >= _RECORD_EVERY or time.monotonic() - last > _RECORD_SECONDS:
                await self._record(answered)
                answered, last = [], time.monotonic()
        if answered:
            await self._record(answered)

    # -- deciding ----------------------------------------------------------------------------------------------

    async def _decide(self, conn: AsyncConnection[Any], claimed: list[Claimed], now: datetime) -> Decisions:
        decisions = Decisions()
        links = await self.links(conn)
        people = await _people(conn, [m.user_id for m in claimed])
        by_project: dict[UUID, list[Claimed]] = defaultdict(list)
        for message in claimed:
            by_project[message.project_id].append(message)
        templates: dict[UUID, TemplateDefinition] = {}
        snippets: dict[UUID, dict[str, str]] = {}
        for project_id, messages in by_project.items():
            ids = {m.template_id for m in messages if m.template_id is not None}
            found = await templates_service.definitions(conn, project_id, list(ids))
            templates.update(found)
            names = sorted({name for t in found.values() for name in t.snippets})
            snippets[project_id] = await templates_service.snippets_for(conn, project_id, names)
        defaults: dict[tuple[UUID, str], UUID] = {}
        for message in claimed:  # a message's group is its template's unless given; else the channel's default
            template = templates.get(message.template_id) if message.template_id else None
            if message.group_id is None and template is not None:
                message.group_id = template.subscription_group_id
            if message.group_id is None and message.marketing:
                key = (message.project_id, message.channel)
                if key not in defaults:
                    defaults[key] = await _default_group(conn, *key)
                message.group_id = defaults[key]
        groups, choices = await _groups(conn, claimed)
        settings = await _settings(conn, list(by_project))
        counts = await _recent_counts(conn, claimed, settings, now)
        suppressed = await _suppressed(conn, claimed, people)
        push_users = [m.user_id for m in claimed if m.channel == "push"]
        devices_of = await _devices(conn, claimed, push_users)
        providers: dict[tuple[UUID, str, UUID | None, str | None], ProviderSettings | None] = {}
        to_render: list[
            tuple[Claimed, TemplateDefinition, UserContext, list[tuple[ProviderSettings | None, Device | None]], str]
        ] = []
        for message in claimed:
            person = people.get(message.user_id)
            template = templates.get(message.template_id) if message.template_id else None
            if person is None:
                decisions.settle(message, "skipped", "the user no longer exists")
                continue
            if template is None:
                decisions.settle(message, "failed", "the template no longer exists")
                continue
            if template.channel != message.channel:
                decisions.settle(message, "failed", f"the template is for {template.channel}, not {message.channel}")
                continue
            group = groups.get(message.group_id) if message.group_id else None
            if group is not None:
                kind, default_subscribed = group
                choice = choices.get((message.user_id, message.group_id)) if message.group_id else None
                message.marketing = kind == "marketing"
                if message.marketing and not (default_subscribed if choice is None else choice):
                    decisions.settle(message, "skipped", "unsubscribed")
                    continue
            address = _address(message.channel, person)
            if message.channel == "push" and devices_of.get(message.user_id):
                address = "push"
            if address is None:
                decisions.settle(message, "skipped", f"no {_ADDRESS_NAME.get(message.channel, 'address')}")
                continue
            if (message.project_id, message.channel, address.lower()) in suppressed:
                decisions.settle(message, "skipped", "suppressed")
                continue
            rules = settings.get(message.project_id)
            if message.marketing and rules is not None:
                cap = rules.caps.get(message.channel)
                if cap is not None:
                    sent = counts.get((message.user_id, message.channel), 0)
                    if sent >= cap[0]:
                        decisions.settle(message, "skipped", f"frequency cap: {cap[0]} per {cap[1]} s")
                        continue
                    counts[(message.user_id, message.channel)] = sent + 1
                wait_until = rules.quiet_until(now, person.timezone)
                if wait_until is not None:
                    decisions.settle(message, "queued", "quiet hours", wait_until)
                    continue
            targets: list[tuple[ProviderSettings | None, Device | None]] = []
            wanted: list[Device | None] = [None]
            if message.channel == "push":
                wanted = list(devices_of.get(message.user_id, [])[:MAX_PUSH_DEVICES])
            for device in wanted:
                os = device.os if device is not None else None
                which = (message.project_id, message.channel, message.provider_id, os)
                if which not in providers:
                    inboxed = message.channel == "inbox"
                    providers[which] = None if inboxed else await _provider(conn, self.keyring, message, os)
                if providers[which] is not None or message.channel == "inbox":
                    targets.append((providers[which], device))
            if not targets:
                decisions.settle(message, "failed", f"no {message.channel} provider in this project")
                continue
            to_render.append((message, template, person.context_user(), targets, address))
        jobs = [(t, u.locale, self._context(links, m, u), snippets[m.project_id]) for m, t, u, _, _ in to_render]
        rendered = await self.renderer.render(jobs)
        for (message, _, _, targets, address), job, result in zip(to_render, jobs, rendered, strict=True):
            if isinstance(result, RenderError):
                decisions.settle(message, "failed", f"template: {result}")
                continue
            if isinstance(result, RenderedInbox):  # the inbox is ours: delivered here, in this transaction
                stored = await inbox.deliver(
                    conn, message.project_id, message.user_id, message.id, result.title, result.body, result.data
                )
                if stored is None:
                    decisions.settle(message, "skipped", "the user no longer exists")
                else:
                    decisions.delivered.append(message)
                continue
            sends = []
            for provider, device in targets:
                assert provider is not None  # only the inbox goes without one
                sends.append((provider, _message(message, result, address, links, device, job[2]["unsubscribe_url"])))
            decisions.ready.append(Ready(message, message.attempts + 1, sends))
        return decisions

    def _context(self, links: Links, message: Claimed, user: UserContext) -> dict[str, Any]:
        run = message.data.get("run") if isinstance(message.data.get("run"), dict) else None
        data = {k: v for k, v in message.data.items() if k != "run"}
        return message_context(
            user,
            run=run,
            data=data,
            unsubscribe_url=links.unsubscribe_url(message.project_id, message.user_id, message.group_id, message.id),
            preferences_url=links.preferences_url(message.project_id, message.user_id),
        )

    async def _write_decisions(self, conn: AsyncConnection[Any], decisions: Decisions, now: datetime) -> None:
        if decisions.ready:
            lease = now + timedelta(seconds=self.config.lease_seconds)
            messages = [
                {
                    "id": r.claimed.id,
                    "to_address": r.to,
                    "locale": None,
                    "group_id": r.claimed.group_id,
                    "marketing": r.claimed.marketing,
                    "provider_id": r.sends[0][0].id,
                }
                for r in decisions.ready
            ]
            await conn.execute(Q["mark_sending"], {"messages": Jsonb(messages), "lease": lease, "now": now})
        if decisions.settled:
            settled = [
                {"id": mid, "status": status, "reason": reason, "next_at": next_at}
                for mid, status, reason, next_at in decisions.settled
            ]
            await conn.execute(Q["settle"], {"messages": Jsonb(settled), "now": now})
        if decisions.delivered:  # inbox: sent at once (it is our own store), as a provider's `sent` is
            await conn.execute(Q["delivered_in_place"], {"ids": [m.id for m in decisions.delivered], "now": now})
            decisions.events += [(m.id, m.project_id, "sent", {"inbox": True}) for m in decisions.delivered]
            await emit(conn, [(m.id, "sent", {}) for m in decisions.delivered])
        if decisions.events:
            await log_events(conn, decisions.events, now)

    # -- sending and recording -----------------------------------------------------------------------------

    async def _send(self, ready: Ready) -> Outcome:
        """The message's outcome: sent if any of its sends went (push: one per device), else retry if any
        may go later, else failed. Dead device tokens are dropped as they are found."""
        outcomes = [await self._send_one(provider, message) for provider, message in ready.sends]
        if ready.claimed.channel == "push":
            dead = [m.to for (_, m), o in zip(ready.sends, outcomes, strict=True) if o.permanent_address_problem]
            if dead:
                async with self.pool.connection() as conn:
                    for address in dead:
                        await devices.forget_device(conn, ready.claimed.project_id, address)
        for status in ("sent", "retry"):
            for outcome in outcomes:
                if outcome.status == status:
                    return outcome
        if ready.claimed.channel == "push":  # every device is gone: not a bounce of an address of ours
            return Outcome.failed(outcomes[0].error or "failed")
        return outcomes[0]

    async def _send_one(self, settings: ProviderSettings, message: Message) -> Outcome:
        await self.limiter.take(settings)
        async with self._calls:
            try:
                provider: Provider = self.registry.provider(settings)
            except ValueError as exc:  # settings that no longer build: a permanent failure
                return Outcome.failed(f"provider: {exc}")
            return await provider.send(message)

    async def _record(self, answered: list[tuple[Ready, Outcome]]) -> None:
        now = self.clock()
        rows: list[tuple[UUID, int, str, datetime | None, str | None, str | None, bool]] = []
        events: list[tuple[UUID, UUID, str, dict[str, Any] | None]] = []
        emitted: list[tuple[UUID, str, dict[str, Any]]] = []
        suppress: list[tuple[UUID, str, str, str, UUID]] = []
        for ready, outcome in answered:
            message = ready.claimed
            if outcome.status == "sent":
                rows.append((message.id, ready.attempt, "sent", None, outcome.provider_message_id, None, False))
                events.append(
                    (message.id, message.project_id, "sent", {"provider_message_id": outcome.provider_message_id})
                )
                emitted.append((message.id, "sent", {}))
            elif outcome.status == "retry" and ready.attempt < self.config.max_attempts:
                backoff = self.config.retry_base_seconds * 2 ** (ready.attempt - 1)
                delay = min(
                    self.config.retry_max_seconds, max(backoff * (0.5 + random.random() / 2), outcome.retry_after or 0)
                )
                rows.append(
                    (message.id, ready.attempt, "queued", now + timedelta(seconds=delay), None, outcome.error, False)
                )
                events.append(
                    (message.id, message.project_id, "retry", {"error": outcome.error, "in_seconds": round(delay, 3)})
                )
            else:
                bounced = outcome.permanent_address_problem
                reason = outcome.error or "failed"
                if outcome.status == "retry":
                    reason = f"gave up after {ready.attempt} attempts: {reason}"
                rows.append((message.id, ready.attempt, "failed", None, None, reason, bounced))
                events.append((message.id, message.project_id, "bounced" if bounced else "failed", {"error": reason}))
                if bounced:
                    emitted.append((message.id, "bounced", {"reason": reason}))
                    if message.channel in ("email", "sms", "whatsapp"):
                        suppress.append((message.project_id, message.channel, ready.to, "hard_bounce", message.id))
        async with self.pool.connection() as conn, conn.transaction():
            answers = [
                {
                    "id": r[0],
                    "attempts": r[1],
                    "status": r[2],
                    "next_at": r[3],
                    "provider_message_id": r[4],
                    "reason": r[5],
                    "bounced": r[6],
                }
                for r in rows
            ]
            cursor = await conn.execute(Q["record"], {"answers": Jsonb(answers), "now": now})
            recorded = {message_id for (message_id,) in await cursor.fetchall()}
            await log_events(conn, [e for e in events if e[0] in recorded], now)
            await emit(conn, [e for e in emitted if e[0] in recorded])
            if suppress:
                await conn.execute(
                    Q["suppress"],
                    {
                        "projects": [s[0] for s in suppress],
                        "channels": [s[1] for s in suppress],
                        "addresses": [s[2].lower() for s in suppress],
                        "reasons": [s[3] for s in suppress],
                        "ids": [s[4] for s in suppress],
                    },
                )


# -- helpers ------------------------------------------------------------------------------------------------

MAX_PUSH_DEVICES = 10  # a push goes to at most this many of a user's devices, newest first
_RECORD_EVERY = 100  # answers recorded per transaction, or what came within
_RECORD_SECONDS = 0.25
_ADDRESS_NAME = {"email": "email address", "sms": "phone number", "whatsapp": "phone number"}


@dataclass(frozen=True)
class Person:
    id: UUID
    project_id: UUID
    email: str | None
    phone: str | None
    timezone: str | None
    locale: str | None
    data: dict[str, Any]
    identifiers: list[dict[str, Any]]

    def context_user(self) -> UserContext:
        return UserContext(self.id, self.email, self.phone, self.timezone, self.locale, self.data, self.identifiers)


async def _people(conn: AsyncConnection[Any], ids: list[UUID]) -> dict[UUID, Person]:
    cursor = await conn.execute(Q["people"], {"ids": list(set(ids))})
    return {row[0]: Person(*row) for row in await cursor.fetchall()}


def _address(channel: str, person: Person) -> str | None:
    if channel == "inbox":
        return "inbox"
    if channel == "email":
        return person.email
    if channel in ("sms", "whatsapp"):
        return person.phone
    if channel == "webhook":
        return "webhook"
    return None


async def _default_group(conn: AsyncConnection[Any], project_id: UUID, channel: str) -> UUID:
    params = {"project_id": project_id, "channel": channel}
    for query in ("default_group", "make_default_group", "default_group"):  # read; make; made meanwhile: read
        row = await (await conn.execute(Q[query], params)).fetchone()
        if row is not None:
            found: UUID = row[0]
            return found
    raise RuntimeError(f"the default {channel} subscription group of project {project_id} was deleted as it was made")


async def _groups(
    conn: AsyncConnection[Any], messages: list[Claimed]
) -> tuple[dict[UUID, tuple[str, bool]], dict[tuple[UUID, UUID], bool]]:
    """(group -> (kind, default_subscribed), (user, group) -> the user's choice where they made one)."""
    ids = list({m.group_id for m in messages if m.group_id is not None})
    if not ids:
        return {}, {}
    cursor = await conn.execute(Q["groups"], {"ids": ids})
    groups = {gid: (kind, default) for gid, kind, default in await cursor.fetchall()}
    pairs = [(m.user_id, m.group_id) for m in messages if m.group_id is not None]
    cursor = await conn.execute(Q["choices"], {"users": [p[0] for p in pairs], "groups": [p[1] for p in pairs]})
    choices = {(user, group): subscribed for user, group, subscribed in await cursor.fetchall()}
    return groups, choices


@dataclass(frozen=True)
class Rules:
    quiet_start: clock_time | None
    quiet_end: clock_time | None
    timezone: str
    caps: dict[str, tuple[int, int]]  # channel -> (count, period seconds)

    def quiet_until(self, now: datetime, user_timezone: str | None) -> datetime | None:
        """When the quiet hours the user is in now end (their local time); None when not in them."""
        if self.quiet_start is None or self.quiet_end is None or self.quiet_start == self.quiet_end:
            return None
        tz = zone(user_timezone, self.timezone)
        local = now.astimezone(tz)
        start, end, current = self.quiet_start, self.quiet_end, local.timetz().replace(tzinfo=None)
        inside = start <= current < end if start < end else (current >= start or current < end)
        if not inside:
            return None
        day = local.date() if current < end else local.date() + timedelta(days=1)
        return datetime.combine(day, end, tzinfo=tz).astimezone(UTC)


async def _settings(conn: AsyncConnection[Any], projects: list[UUID]) -> dict[UUID, Rules]:
    cursor = await conn.execute(Q["settings"], {"ids": projects})
    found = {}
    for project_id, start, end, timezone, caps in await cursor.fetchall():
        found[project_id] = Rules(
            start, end, timezone, {ch: (int(c["count"]), int(c["period_seconds"])) for ch, c in (caps or {}).items()}
        )
    return found


async def _recent_counts(
    conn: AsyncConnection[Any], messages: list[Claimed], settings: dict[UUID, Rules], now: datetime
) -> dict[tuple[UUID, str], int]:
    """(user, channel) -> marketing messages sent within the cap's period or on their way, for the
    batch's capped messages. Takes the capped channels' locks first (outbox.sql lock_capped)."""
    wanted: dict[tuple[str, int], set[UUID]] = defaultdict(set)
    locks: set[str] = set()
    for message in messages:
        rules = settings.get(message.project_id)
        cap = rules.caps.get(message.channel) if rules is not None else None
        if cap is not None and message.marketing:
            wanted[(message.channel, cap[1])].add(message.user_id)
            locks.add(f"{message.project_id}:{message.channel}")
    counts: dict[tuple[UUID, str], int] = {}
    if not wanted:
        return counts
    await conn.execute(Q["lock_capped"], {"keys": sorted(locks)})
    ids = [m.id for m in messages]
    for (channel, period), users in wanted.items():
        since = now - timedelta(seconds=period)
        cursor = await conn.execute(
            Q["sent_recently"], {"users": list(users), "channel": channel, "since": since, "ids": ids}
        )
        for user_id, count in await cursor.fetchall():
            counts[(user_id, channel)] = counts.get((user_id, channel), 0) + int(count)
    return counts


async def _suppressed(
    conn: AsyncConnection[Any], messages: list[Claimed], people: dict[UUID, Person]
) -> set[tuple[UUID, str, str]]:
    """(project, channel, lower-cased address) of the batch's addresses that are suppressed."""
    keys = set()
    for message in messages:
        person = people.get(message.user_id)
        address = _address(message.channel, person) if person is not None else None
        if address is not None and message.channel in ("email", "sms", "whatsapp"):
            keys.add((message.project_id, message.channel, address.lower()))
    if not keys:
        return set()
    ordered = sorted(keys)
    cursor = await conn.execute(
        Q["suppressed"],
        {
            "projects": [k[0] for k in ordered],
            "channels": [k[1] for k in ordered],
            "addresses": [k[2] for k in ordered],
        },
    )
    return {(p, c, a) for p, c, a in await cursor.fetchall()}


async def _provider(
    conn: AsyncConnection[Any], keyring: Keyring | None, message: Claimed, os: str | None
) -> ProviderSettings | None:
    if message.provider_id is not None:
        return await providers_service.load(conn, keyring, message.project_id, message.provider_id)
    channel: Any = message.channel
    device_os: Any = os
    return await providers_service.choose(conn, keyring, message.project_id, channel, os=device_os)


async def _devices(conn: AsyncConnection[Any], claimed: list[Claimed], users: list[UUID]) -> dict[UUID, list[Device]]:
    """The push devices of these users (newest first), per project."""
    found: dict[UUID, list[Device]] = {}
    projects = {m.project_id for m in claimed if m.channel == "push"}
    for project_id in projects:
        found.update(await devices.devices_of(conn, project_id, users))
    return found


def _tracked(html: str, message_id: UUID, links: Links) -> str:
    """Links through the click redirect (our own links, unsubscribe and preferences, as they are), and the
    open pixel at the end of the body."""
    own = links.base_url + "/"

    def swap(match: re.Match[str]) -> str:
        url = match.group(3)
        if url.startswith(own):
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}{links.click_url(message_id, url)}{match.group(2)}"

    tracked = _HREF.sub(swap, html)
    pixel = f'<img src="{links.open_url(message_id)}" width="1" height="1" alt="" style="display:none">'
    at = tracked.lower().rfind("</body>")
    return tracked[:at] + pixel + tracked[at:] if at >= 0 else tracked + pixel


def _message(
    claimed: Claimed, rendered: Rendered, address: str, links: Links, device: Device | None, unsubscribe: str
) -> Message:
    """`unsubscribe`: the message's unsubscribe URL, as its template saw it (signed once: an HMAC each)."""
    mid = str(claimed.id)
    if isinstance(rendered, RenderedEmail):
        headers = {}
        if claimed.marketing:  # RFC 8058 one-click unsubscribe; transactional mail cannot be left
            headers = {"List-Unsubscribe": f"<{unsubscribe}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
        return Message(
            id=mid,
            channel="email",
            to=address,
            subject=rendered.subject,
            html=_tracked(rendered.html, claimed.id, links),
            text=rendered.text,
            headers=headers,
        )
    if isinstance(rendered, RenderedText):
        return Message(id=mid, channel=rendered.channel, to=address, body=rendered.body)
    if isinstance(rendered, RenderedWebhook):
        return Message(
            id=mid,
            channel="webhook",
            to=rendered.url,
            url=rendered.url,
            method=rendered.method,
            headers=rendered.headers,
            json_body=rendered.body,
        )
    if isinstance(rendered, RenderedPush):
        assert device is not None
        to = device.endpoint if device.os == "web" and device.endpoint else device.token or ""
        return Message(
            id=mid,
            channel="push",
            to=to,
            title=rendered.title,
            body=rendered.body,
            data=rendered.data,
            url=rendered.url,
            device=device,
        )
    raise AssertionError(f"no message for {rendered.channel}")  # pragma: no cover - inbox is delivered in place


async def log_events(
    conn: AsyncConnection[Any], events: Sequence[tuple[UUID, UUID, str, dict[str, Any] | None]], at: datetime
) -> None:
    if not events:
        return
    rows = [{"message_id": e[0], "project_id": e[1], "kind": e[2], "detail": e[3]} for e in events]
    await conn.execute(Q["log_events"], {"events": Jsonb(rows), "at": at})


async def emit(conn: AsyncConnection[Any], emitted: Sequence[tuple[UUID, str, dict[str, Any]]]) -> None:
    """`message.<kind>` events into the pipeline for these messages, with what they were about."""
    if not emitted:
        return
    rows = [{"id": mid, "kind": kind, "data": extra} for mid, kind, extra in emitted]
    await conn.execute(Q["emit"], {"events": Jsonb(rows)})
