"""One Settings object for the whole server, read from the environment and overridden by CLI flags.

Every knob an operator can turn lives here, described once in `SETTINGS_DOC`, from which
`python -m lunogram_server.config --write` generates `docs/configuration.md` and the README's table
(tests/test_docs.py fails when either has drifted from it).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

Role = Literal["all", "api", "worker", "scheduler"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Documented request limits (docs/api.md "Limits"); each is configurable."""

    max_body_bytes: int = 5 * MIB
    max_json_depth: int = 32
    max_events_per_request: int = 1000
    max_name_length: int = 255
    max_identifiers: int = 100
    # stored `data` of a user, an organization, a membership (and an identifier's `metadata`), as PostgreSQL
    # stores it (jsonb), after merging a write into what is stored; enforced in SQL (identity/sql/limits.sql)
    max_profile_data_bytes: int = 256 * 1024
    # an event's (or a schedule's) `data`, as JSON text
    max_event_data_bytes: int = 64 * 1024


@dataclass(frozen=True)
class EventSettings:
    """The event workers (events/worker.py)."""

    worker_tasks: int = 2
    batch_size: int = 500
    # 32 of 64: with 8, an event waited for its partition's turn while two workers cycled the other 56; at
    # 1,000 events/s the event -> journey entry p99 was 233 ms with 8 and 28 ms with 32, and bench/process.py
    # throughput was the same (13.8k/12.7k vs 14.3k/13.6k events/s in alternating runs).
    partitions_per_claim: int = 32
    broadcast_chunk: int = 5000
    max_attempts: int = 8
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 3600.0
    poll_seconds: float = 1.0
    subscribers: str = ""


@dataclass(frozen=True)
class ScheduleSettings:
    """The schedulers (schedules/scheduler.py)."""

    scheduler_tasks: int = 1
    batch_size: int = 1000
    poll_seconds: float = 0.2


@dataclass(frozen=True)
class ListSettings:
    """The lists loop (lists/recompute.py)."""

    poll_seconds: float = 0.2
    time_recheck_seconds: float = 60.0


@dataclass(frozen=True)
class AccessSettings:
    """What a caller without a valid key can cost us (http/auth.py, http/protocol.py), and who reads /metrics."""

    max_header_bytes: int = 32 * 1024
    unknown_key_cache_size: int = 10_000
    auth_failure_limit: int = 60
    auth_failure_window_seconds: float = 60.0
    auth_failure_addresses: int = 10_000
    metrics_token: str | None = None


@dataclass(frozen=True)
class JourneySettings:
    """The journey runners (journeys/runner.py)."""

    runner_tasks: int = 1
    batch_size: int = 1000
    poll_seconds: float = 1.0
    backfill_chunk: int = 5000
    webhook_concurrency: int = 64
    webhook_lease_seconds: float = 30.0
    webhook_retry_base_seconds: float = 1.0
    webhook_retry_max_seconds: float = 600.0
    webhook_allowed_networks: str = ""


@dataclass(frozen=True)
class MessagingSettings:
    """The senders and campaigns (messaging/sender.py, messaging/campaigns.py)."""

    sender_tasks: int = 1
    batch_size: int = 500
    poll_seconds: float = 1.0
    lease_seconds: float = 60.0
    send_concurrency: int = 64
    render_processes: int = 1
    max_attempts: int = 6
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    campaign_chunk: int = 5000
    public_url: str | None = None


@dataclass(frozen=True)
class ConsoleSettings:
    """The web console's accounts (console/accounts.py): sessions, one-time links, the login limit."""

    session_idle_hours: float = 12.0
    session_max_hours: float = 168.0
    link_hours: float = 24.0
    login_failures_per_address: int = 20
    login_failures_per_account: int = 5
    login_window_seconds: float = 900.0


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str | None = None
    data_dir: Path = Path(".lunogram")
    role: Role = "all"
    workers: int = 1
    pool_min_size: int = 2
    pool_max_size: int = 20
    pool_timeout_seconds: float = 5.0
    key_cache_seconds: float = 2.0
    upsert_slots: int = 2
    upsert_max_batch: int = 64
    bootstrap_project: str = "default"
    bootstrap_public_key: str | None = None
    bootstrap_secret_key: str | None = None
    log_level: str = "info"
    log_json: bool = False
    # secrets at rest (messaging/crypto.py); repr=False keeps them out of any printed Settings
    encryption_key: str | None = field(default=None, repr=False)
    encryption_keys_old: str = field(default="", repr=False)
    limits: Limits = field(default_factory=Limits)
    events: EventSettings = field(default_factory=EventSettings)
    schedules: ScheduleSettings = field(default_factory=ScheduleSettings)
    lists: ListSettings = field(default_factory=ListSettings)
    access: AccessSettings = field(default_factory=AccessSettings)
    journeys: JourneySettings = field(default_factory=JourneySettings)
    messaging: MessagingSettings = field(default_factory=MessagingSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)

    @property
    def embedded(self) -> bool:
        """True when the server runs its own PostgreSQL instead of DATABASE_URL's."""
        return not self.database_url

    @property
    def pg_dir(self) -> Path:
        return self.data_dir / "pg"

    @property
    def public_url(self) -> str:
        """Where recipients reach this server (links in messages): LUNOGRAM_PUBLIC_URL, else the listen address."""
        return self.messaging.public_url or self.base_url.removesuffix("/api")

    @property
    def base_url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}/api"

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the given fields replaced, ignoring None (an unset CLI flag)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]


# name, default, meaning -- rendered into docs/configuration.md and the README (render_table below).
SETTINGS_DOC: list[tuple[str, str, str]] = [
    ("DATABASE_URL", "unset", "PostgreSQL >= 15 to use; unset starts an embedded PostgreSQL in the data dir"),
    ("LUNOGRAM_DATA_DIR", ".lunogram", "where the embedded PostgreSQL keeps its files (`<dir>/pg`)"),
    ("LUNOGRAM_HOST", "127.0.0.1", "address the HTTP API listens on (`--host`)"),
    ("LUNOGRAM_PORT", "8080", "port the HTTP API listens on (`--port`)"),
    ("LUNOGRAM_ROLE", "all", "`all`, `api`, `worker` or `scheduler` (`--role`)"),
    ("LUNOGRAM_WORKERS", "1", "HTTP processes sharing the port (`--workers`); about one per core"),
    ("LUNOGRAM_POOL_MIN_SIZE", "2", "database connections kept open"),
    ("LUNOGRAM_POOL_MAX_SIZE", "20", "database connections at most"),
    (
        "LUNOGRAM_POOL_TIMEOUT_SECONDS",
        "5",
        "longest wait for a free database connection, then 503 with Retry-After (1 s while the database is down)",
    ),
    (
        "LUNOGRAM_KEY_CACHE_SECONDS",
        "2",
        "how long a verified API key is cached (a revocation takes this long), and an unknown one remembered as "
        "unknown (a new key may be refused this long by a server that saw it before it existed)",
    ),
    ("LUNOGRAM_UPSERT_SLOTS", "2", "upsert transactions in flight per process; more concurrent upserts share them"),
    ("LUNOGRAM_UPSERT_MAX_BATCH", "64", "upserts committed together at most (1: each commits alone)"),
    ("LUNOGRAM_BOOTSTRAP_PROJECT", "default", "name of the project created on first start"),
    (
        "LUNOGRAM_BOOTSTRAP_PUBLIC_KEY",
        "unset",
        "pin the first public key (`pk_...`, 16-128 characters of letters, digits and `-._~+/=`), for automation",
    ),
    ("LUNOGRAM_BOOTSTRAP_SECRET_KEY", "unset", "pin the first secret key (`sk_...`, the same rule), for automation"),
    ("LUNOGRAM_MAX_BODY_BYTES", "5242880", "largest request body; larger -> 413"),
    ("LUNOGRAM_MAX_JSON_DEPTH", "32", "deepest JSON nesting accepted; deeper -> 400"),
    ("LUNOGRAM_MAX_EVENTS_PER_REQUEST", "1000", "events in one batch; more -> 413"),
    ("LUNOGRAM_MAX_NAME_LENGTH", "255", "longest event or schedule name"),
    ("LUNOGRAM_MAX_HEADER_BYTES", "32768", "largest request line plus headers; larger -> 431, read no further"),
    ("LUNOGRAM_UNKNOWN_KEY_CACHE_SIZE", "10000", "unknown keys remembered per process (each for the key cache time)"),
    (
        "LUNOGRAM_AUTH_FAILURE_LIMIT",
        "60",
        "key lookups that found nothing allowed per client address per window; then 429 for unseen keys (0: no limit)",
    ),
    ("LUNOGRAM_AUTH_FAILURE_WINDOW_SECONDS", "60", "the window of that limit (it refills evenly over the window)"),
    ("LUNOGRAM_AUTH_FAILURE_ADDRESSES", "10000", "client addresses (IPv6: /64 networks) that limit tracks per process"),
    (
        "LUNOGRAM_METRICS_TOKEN",
        "unset",
        "/metrics needs `Authorization: Bearer <token>`; unset: /metrics answers only loopback, unproxied, non-browser "
        "requests",
    ),
    (
        "LUNOGRAM_MAX_PROFILE_DATA_BYTES",
        "262144",
        "largest stored `data` of a user, organization or membership (and identifier `metadata`), after merging; "
        "larger -> 413 (at least 1024)",
    ),
    ("LUNOGRAM_MAX_EVENT_DATA_BYTES", "65536", "largest `data` of an event or schedule (JSON text); larger -> 413"),
    ("LUNOGRAM_EVENT_WORKER_TASKS", "2", "event worker tasks per process with the worker role (0: none)"),
    ("LUNOGRAM_EVENT_BATCH_SIZE", "500", "events a worker applies per transaction"),
    ("LUNOGRAM_EVENT_PARTITIONS_PER_CLAIM", "32", "partitions (of 64) a worker takes per transaction"),
    ("LUNOGRAM_BROADCAST_CHUNK", "5000", "targets a `match` fan-out delivers per transaction"),
    ("LUNOGRAM_EVENT_MAX_ATTEMPTS", "8", "tries before a failing event is parked as a dead letter"),
    ("LUNOGRAM_EVENT_RETRY_BASE_SECONDS", "1", "first retry delay of a failing event; doubles per try (jittered)"),
    ("LUNOGRAM_EVENT_RETRY_MAX_SECONDS", "3600", "longest retry delay"),
    ("LUNOGRAM_EVENT_POLL_SECONDS", "1", "how often an idle worker looks for due retries (arrivals wake it at once)"),
    ("LUNOGRAM_EVENT_SUBSCRIBERS", "unset", "`module:name,...` plugins called with every applied event batch"),
    ("LUNOGRAM_SCHEDULER_TASKS", "1", "scheduler tasks per process with the scheduler role (0: none)"),
    ("LUNOGRAM_SCHEDULER_BATCH_SIZE", "1000", "due schedules fired per transaction"),
    ("LUNOGRAM_SCHEDULER_POLL_SECONDS", "0.2", "how often an idle scheduler looks for due schedules"),
    ("LUNOGRAM_LIST_POLL_SECONDS", "0.2", "how often the lists loop looks for stale lists and changed profiles"),
    ("LUNOGRAM_LIST_TIME_RECHECK_SECONDS", "60", "how often lists with time windows are recomputed"),
    ("LUNOGRAM_JOURNEY_RUNNER_TASKS", "1", "journey runner tasks per process with the worker role (0: none)"),
    ("LUNOGRAM_JOURNEY_BATCH_SIZE", "1000", "due journey runs a runner advances per transaction"),
    ("LUNOGRAM_JOURNEY_POLL_SECONDS", "1", "how often an idle runner looks for due runs (new runs wake it at once)"),
    (
        "LUNOGRAM_JOURNEY_BACKFILL_CHUNK",
        "5000",
        "list members entered per transaction when a journey enters a list's members",
    ),
    ("LUNOGRAM_WEBHOOK_CONCURRENCY", "64", "webhook calls in flight per runner"),
    (
        "LUNOGRAM_WEBHOOK_LEASE_SECONDS",
        "30",
        "past its timeout, how long a webhook call's outcome is awaited before it is made again",
    ),
    (
        "LUNOGRAM_WEBHOOK_RETRY_BASE_SECONDS",
        "1",
        "first retry delay of a failed webhook call; doubles per try (jittered)",
    ),
    ("LUNOGRAM_WEBHOOK_RETRY_MAX_SECONDS", "600", "longest webhook retry delay"),
    (
        "LUNOGRAM_WEBHOOK_ALLOWED_NETWORKS",
        "unset",
        "CIDRs webhooks may call although private or loopback (e.g. `10.0.0.0/8`); unset: public addresses only",
    ),
    (
        "LUNOGRAM_ENCRYPTION_KEY",
        "unset",
        "base64 of 32 random bytes (`openssl rand -base64 32`) encrypting provider secrets at rest; unset with the "
        "embedded PostgreSQL: made once in `<data dir>/encryption.key`; unset with DATABASE_URL: secrets are refused",
    ),
    (
        "LUNOGRAM_ENCRYPTION_KEYS_OLD",
        "unset",
        "comma-separated earlier keys, still used to decrypt (rotation: see docs/messaging.md)",
    ),
    (
        "LUNOGRAM_PUBLIC_URL",
        "unset",
        "the server's address as recipients reach it, for links in messages (unsubscribe, tracking); "
        "unset: the listen address",
    ),
    ("LUNOGRAM_SENDER_TASKS", "1", "message sender tasks per process with the worker role (0: none)"),
    ("LUNOGRAM_SEND_BATCH_SIZE", "500", "messages a sender claims, renders and sends per batch"),
    ("LUNOGRAM_SEND_POLL_SECONDS", "1", "how often an idle sender looks for due messages (new ones wake it)"),
    (
        "LUNOGRAM_SEND_LEASE_SECONDS",
        "60",
        "how long a message being sent is held; unrecorded past it, it is sent again",
    ),
    ("LUNOGRAM_SEND_CONCURRENCY", "64", "provider calls in flight per sender"),
    (
        "LUNOGRAM_RENDER_PROCESSES",
        "1",
        "child processes that render a sender's batches of 64 messages or more (0: render in a thread)",
    ),
    (
        "LUNOGRAM_SEND_MAX_ATTEMPTS",
        "6",
        "tries of a message a provider keeps refusing for a while (429, 5xx), then failed",
    ),
    (
        "LUNOGRAM_SEND_RETRY_BASE_SECONDS",
        "30",
        "first retry delay of such a message; doubles per try (or the provider's Retry-After)",
    ),
    ("LUNOGRAM_SEND_RETRY_MAX_SECONDS", "3600", "longest retry delay"),
    ("LUNOGRAM_CAMPAIGN_CHUNK", "5000", "campaign recipients queued per transaction"),
    (
        "LUNOGRAM_CONSOLE_SESSION_IDLE_HOURS",
        "12",
        "a console session unused this long ends (sign in again)",
    ),
    ("LUNOGRAM_CONSOLE_SESSION_MAX_HOURS", "168", "a console session ends this long after sign-in, used or not"),
    (
        "LUNOGRAM_CONSOLE_LINK_HOURS",
        "24",
        "how long a one-time console link (first owner's setup, invitation, password reset) stays valid",
    ),
    (
        "LUNOGRAM_CONSOLE_LOGIN_FAILURES_PER_ADDRESS",
        "20",
        "failed console sign-ins from one client address within the window; past it, 429 (0: no limit)",
    ),
    (
        "LUNOGRAM_CONSOLE_LOGIN_FAILURES_PER_ACCOUNT",
        "5",
        "failed console sign-ins for one account within the window; past it, 429, right password or not (0: no limit)",
    ),
    ("LUNOGRAM_CONSOLE_LOGIN_WINDOW_SECONDS", "900", "the window of those two limits"),
    ("LUNOGRAM_LOG_LEVEL", "info", "debug, info, warning, error"),
    ("LUNOGRAM_LOG_JSON", "false", "one JSON object per log line instead of console output"),
]


def _env_bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Settings from the environment; missing variables keep the defaults."""
    env = dict(os.environ if environ is None else environ)
    base = Settings()
    limits = Limits(
        max_body_bytes=int(env.get("LUNOGRAM_MAX_BODY_BYTES", base.limits.max_body_bytes)),
        max_json_depth=int(env.get("LUNOGRAM_MAX_JSON_DEPTH", base.limits.max_json_depth)),
        max_events_per_request=int(env.get("LUNOGRAM_MAX_EVENTS_PER_REQUEST", base.limits.max_events_per_request)),
        max_name_length=int(env.get("LUNOGRAM_MAX_NAME_LENGTH", base.limits.max_name_length)),
        max_profile_data_bytes=max(
            1024, int(env.get("LUNOGRAM_MAX_PROFILE_DATA_BYTES", base.limits.max_profile_data_bytes))
        ),
        max_event_data_bytes=max(2, int(env.get("LUNOGRAM_MAX_EVENT_DATA_BYTES", base.limits.max_event_data_bytes))),
    )
    ev = base.events
    events = EventSettings(
        worker_tasks=max(0, int(env.get("LUNOGRAM_EVENT_WORKER_TASKS", ev.worker_tasks))),
        batch_size=max(1, int(env.get("LUNOGRAM_EVENT_BATCH_SIZE", ev.batch_size))),
        partitions_per_claim=max(1, int(env.get("LUNOGRAM_EVENT_PARTITIONS_PER_CLAIM", ev.partitions_per_claim))),
        broadcast_chunk=max(1, int(env.get("LUNOGRAM_BROADCAST_CHUNK", ev.broadcast_chunk))),
        max_attempts=max(1, int(env.get("LUNOGRAM_EVENT_MAX_ATTEMPTS", ev.max_attempts))),
        retry_base_seconds=float(env.get("LUNOGRAM_EVENT_RETRY_BASE_SECONDS", ev.retry_base_seconds)),
        retry_max_seconds=float(env.get("LUNOGRAM_EVENT_RETRY_MAX_SECONDS", ev.retry_max_seconds)),
        poll_seconds=float(env.get("LUNOGRAM_EVENT_POLL_SECONDS", ev.poll_seconds)),
        subscribers=env.get("LUNOGRAM_EVENT_SUBSCRIBERS", ev.subscribers),
    )
    sc = base.schedules
    schedules = ScheduleSettings(
        scheduler_tasks=max(0, int(env.get("LUNOGRAM_SCHEDULER_TASKS", sc.scheduler_tasks))),
        batch_size=max(1, int(env.get("LUNOGRAM_SCHEDULER_BATCH_SIZE", sc.batch_size))),
        poll_seconds=float(env.get("LUNOGRAM_SCHEDULER_POLL_SECONDS", sc.poll_seconds)),
    )
    lists = ListSettings(
        poll_seconds=max(0.01, float(env.get("LUNOGRAM_LIST_POLL_SECONDS", base.lists.poll_seconds))),
        time_recheck_seconds=max(
            1.0, float(env.get("LUNOGRAM_LIST_TIME_RECHECK_SECONDS", base.lists.time_recheck_seconds))
        ),
    )
    ac = base.access
    access = AccessSettings(
        max_header_bytes=max(1024, int(env.get("LUNOGRAM_MAX_HEADER_BYTES", ac.max_header_bytes))),
        unknown_key_cache_size=max(1, int(env.get("LUNOGRAM_UNKNOWN_KEY_CACHE_SIZE", ac.unknown_key_cache_size))),
        auth_failure_limit=max(0, int(env.get("LUNOGRAM_AUTH_FAILURE_LIMIT", ac.auth_failure_limit))),
        auth_failure_window_seconds=max(
            0.001, float(env.get("LUNOGRAM_AUTH_FAILURE_WINDOW_SECONDS", ac.auth_failure_window_seconds))
        ),
        auth_failure_addresses=max(1, int(env.get("LUNOGRAM_AUTH_FAILURE_ADDRESSES", ac.auth_failure_addresses))),
        metrics_token=env.get("LUNOGRAM_METRICS_TOKEN") or None,
    )
    jo = base.journeys
    journeys = JourneySettings(
        runner_tasks=max(0, int(env.get("LUNOGRAM_JOURNEY_RUNNER_TASKS", jo.runner_tasks))),
        batch_size=max(1, int(env.get("LUNOGRAM_JOURNEY_BATCH_SIZE", jo.batch_size))),
        poll_seconds=max(0.01, float(env.get("LUNOGRAM_JOURNEY_POLL_SECONDS", jo.poll_seconds))),
        backfill_chunk=max(1, int(env.get("LUNOGRAM_JOURNEY_BACKFILL_CHUNK", jo.backfill_chunk))),
        webhook_concurrency=max(1, int(env.get("LUNOGRAM_WEBHOOK_CONCURRENCY", jo.webhook_concurrency))),
        webhook_lease_seconds=max(1.0, float(env.get("LUNOGRAM_WEBHOOK_LEASE_SECONDS", jo.webhook_lease_seconds))),
        webhook_retry_base_seconds=max(
            0.01, float(env.get("LUNOGRAM_WEBHOOK_RETRY_BASE_SECONDS", jo.webhook_retry_base_seconds))
        ),
        webhook_retry_max_seconds=float(env.get("LUNOGRAM_WEBHOOK_RETRY_MAX_SECONDS", jo.webhook_retry_max_seconds)),
        webhook_allowed_networks=env.get("LUNOGRAM_WEBHOOK_ALLOWED_NETWORKS", jo.webhook_allowed_networks),
    )
    me = base.messaging
    messaging = MessagingSettings(
        sender_tasks=max(0, int(env.get("LUNOGRAM_SENDER_TASKS", me.sender_tasks))),
        batch_size=max(1, int(env.get("LUNOGRAM_SEND_BATCH_SIZE", me.batch_size))),
        poll_seconds=max(0.01, float(env.get("LUNOGRAM_SEND_POLL_SECONDS", me.poll_seconds))),
        lease_seconds=max(1.0, float(env.get("LUNOGRAM_SEND_LEASE_SECONDS", me.lease_seconds))),
        send_concurrency=max(1, int(env.get("LUNOGRAM_SEND_CONCURRENCY", me.send_concurrency))),
        render_processes=max(0, int(env.get("LUNOGRAM_RENDER_PROCESSES", me.render_processes))),
        max_attempts=max(1, int(env.get("LUNOGRAM_SEND_MAX_ATTEMPTS", me.max_attempts))),
        retry_base_seconds=max(0.01, float(env.get("LUNOGRAM_SEND_RETRY_BASE_SECONDS", me.retry_base_seconds))),
        retry_max_seconds=max(0.01, float(env.get("LUNOGRAM_SEND_RETRY_MAX_SECONDS", me.retry_max_seconds))),
        campaign_chunk=max(1, int(env.get("LUNOGRAM_CAMPAIGN_CHUNK", me.campaign_chunk))),
        public_url=(env.get("LUNOGRAM_PUBLIC_URL") or None),
    )
    co = base.console
    console = ConsoleSettings(
        session_idle_hours=max(0.01, float(env.get("LUNOGRAM_CONSOLE_SESSION_IDLE_HOURS", co.session_idle_hours))),
        session_max_hours=max(0.01, float(env.get("LUNOGRAM_CONSOLE_SESSION_MAX_HOURS", co.session_max_hours))),
        link_hours=max(1 / 3600, float(env.get("LUNOGRAM_CONSOLE_LINK_HOURS", co.link_hours))),
        login_failures_per_address=max(
            0, int(env.get("LUNOGRAM_CONSOLE_LOGIN_FAILURES_PER_ADDRESS", co.login_failures_per_address))
        ),
        login_failures_per_account=max(
            0, int(env.get("LUNOGRAM_CONSOLE_LOGIN_FAILURES_PER_ACCOUNT", co.login_failures_per_account))
        ),
        login_window_seconds=max(1.0, float(env.get("LUNOGRAM_CONSOLE_LOGIN_WINDOW_SECONDS", co.login_window_seconds))),
    )
    role = env.get("LUNOGRAM_ROLE", base.role)
    if role not in ("all", "api", "worker", "scheduler"):
        raise ValueError(f"LUNOGRAM_ROLE must be all, api, worker or scheduler, not {role!r}")
    return Settings(
        host=env.get("LUNOGRAM_HOST", base.host),
        port=int(env.get("LUNOGRAM_PORT", base.port)),
        database_url=env.get("DATABASE_URL") or None,
        data_dir=Path(env.get("LUNOGRAM_DATA_DIR", str(base.data_dir))),
        role=role,  # type: ignore[arg-type]
        workers=max(1, int(env.get("LUNOGRAM_WORKERS", base.workers))),
        pool_min_size=int(env.get("LUNOGRAM_POOL_MIN_SIZE", base.pool_min_size)),
        pool_max_size=int(env.get("LUNOGRAM_POOL_MAX_SIZE", base.pool_max_size)),
        pool_timeout_seconds=max(0.1, float(env.get("LUNOGRAM_POOL_TIMEOUT_SECONDS", base.pool_timeout_seconds))),
        key_cache_seconds=float(env.get("LUNOGRAM_KEY_CACHE_SECONDS", base.key_cache_seconds)),
        upsert_slots=max(1, int(env.get("LUNOGRAM_UPSERT_SLOTS", base.upsert_slots))),
        upsert_max_batch=max(1, int(env.get("LUNOGRAM_UPSERT_MAX_BATCH", base.upsert_max_batch))),
        bootstrap_project=env.get("LUNOGRAM_BOOTSTRAP_PROJECT", base.bootstrap_project),
        bootstrap_public_key=env.get("LUNOGRAM_BOOTSTRAP_PUBLIC_KEY") or None,
        bootstrap_secret_key=env.get("LUNOGRAM_BOOTSTRAP_SECRET_KEY") or None,
        log_level=env.get("LUNOGRAM_LOG_LEVEL", base.log_level),
        log_json=_env_bool(env.get("LUNOGRAM_LOG_JSON", "false")),
        encryption_key=env.get("LUNOGRAM_ENCRYPTION_KEY") or None,
        encryption_keys_old=env.get("LUNOGRAM_ENCRYPTION_KEYS_OLD", ""),
        limits=limits,
        events=events,
        schedules=schedules,
        lists=lists,
        access=access,
        journeys=journeys,
        messaging=messaging,
        console=console,
    )


# -- docs generated from SETTINGS_DOC ------------------------------------------------------------------------

README_TABLE_START = (
    "<!-- settings table: generated from config.SETTINGS_DOC by `python -m lunogram_server.config --write` -->"
)
README_TABLE_END = "<!-- end of settings table -->"


def render_table() -> str:
    """The settings as a Markdown table, one row per SETTINGS_DOC entry, in its order."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{name}` | {default} | {meaning} |" for name, default, meaning in SETTINGS_DOC]
    return "\n".join(rows) + "\n"


def render_configuration_doc() -> str:
    """The whole of docs/configuration.md."""
    return (
        "<!-- Generated from src/lunogram_server/config.py (SETTINGS_DOC) by "
        "`python -m lunogram_server.config --write`; edit SETTINGS_DOC, not this file. -->\n"
        "# Configuration\n\n"
        "`lunogram serve` and the other `lunogram` commands read these environment variables; the flags of\n"
        "`lunogram serve` (`--host`, `--port`, `--role`, `--workers`, `--data-dir`, `--database-url`) override\n"
        "them. An unset variable keeps its default.\n\n" + render_table()
    )


def with_readme_table(readme: str) -> str:
    """`readme` with the text between the table markers replaced by the current table."""
    start, end = readme.index(README_TABLE_START), readme.index(README_TABLE_END)
    return readme[: start + len(README_TABLE_START)] + "\n" + render_table() + readme[end:]


def _write_docs(root: Path) -> None:
    (root / "docs" / "configuration.md").write_text(render_configuration_doc())
    readme = root / "README.md"
    readme.write_text(with_readme_table(readme.read_text()))


if __name__ == "__main__":
    # `python -m lunogram_server.config` prints docs/configuration.md; `--write` updates it and the README's
    # table in the checkout this module belongs to.
    if sys.argv[1:] == ["--write"]:
        checkout = Path(__file__).resolve().parents[2]
        if not (checkout / "README.md").exists() or not (checkout / "docs").is_dir():
            raise SystemExit(f"--write needs a source checkout; {checkout} is not one")
        _write_docs(checkout)
    elif sys.argv[1:]:
        raise SystemExit("usage: python -m lunogram_server.config [--write]")
    else:
        sys.stdout.write(render_configuration_doc())
