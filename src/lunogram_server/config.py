"""One Settings object for the whole server, read from the environment and overridden by CLI flags.

Every knob an operator can turn lives here so that the README's configuration table and the code cannot
drift apart: `docs/configuration.md` is generated from `SETTINGS_DOC`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

Role = Literal["all", "api", "worker", "scheduler"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Documented request limits (CONTRACT.md "Limits"); each is configurable."""

    max_body_bytes: int = 5 * MIB
    max_json_depth: int = 32
    max_events_per_request: int = 1000
    max_name_length: int = 255
    max_identifiers: int = 100


@dataclass(frozen=True)
class EventSettings:
    """The event workers (events/worker.py)."""

    worker_tasks: int = 2
    batch_size: int = 500
    partitions_per_claim: int = 8
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
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str | None = None
    data_dir: Path = Path(".lunogram")
    role: Role = "all"
    workers: int = 1
    pool_min_size: int = 2
    pool_max_size: int = 20
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

    @property
    def embedded(self) -> bool:
        """True when the server runs its own PostgreSQL instead of DATABASE_URL's."""
        return not self.database_url

    @property
    def pg_dir(self) -> Path:
        return self.data_dir / "pg"

    @property
    def base_url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}/api"

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the given fields replaced, ignoring None (an unset CLI flag)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]


# name, type, default, meaning -- rendered into docs/configuration.md and the README.
SETTINGS_DOC: list[tuple[str, str, str]] = [
    ("DATABASE_URL", "unset", "PostgreSQL >= 15 to use; unset starts an embedded PostgreSQL in the data dir"),
    ("LUNOGRAM_DATA_DIR", ".lunogram", "where the embedded PostgreSQL keeps its files (`<dir>/pg`)"),
    ("LUNOGRAM_HOST", "127.0.0.1", "address the HTTP API listens on (`--host`)"),
    ("LUNOGRAM_PORT", "8080", "port the HTTP API listens on (`--port`)"),
    ("LUNOGRAM_ROLE", "all", "`all`, `api`, `worker` or `scheduler` (`--role`)"),
    ("LUNOGRAM_WORKERS", "1", "HTTP processes sharing the port (`--workers`); about one per core"),
    ("LUNOGRAM_POOL_MIN_SIZE", "2", "database connections kept open"),
    ("LUNOGRAM_POOL_MAX_SIZE", "20", "database connections at most"),
    ("LUNOGRAM_KEY_CACHE_SECONDS", "2", "how long a verified API key is cached; a revocation takes this long"),
    ("LUNOGRAM_UPSERT_SLOTS", "2", "upsert transactions in flight per process; more concurrent upserts share them"),
    ("LUNOGRAM_UPSERT_MAX_BATCH", "64", "upserts committed together at most (1: each commits alone)"),
    ("LUNOGRAM_BOOTSTRAP_PROJECT", "default", "name of the project created on first start"),
    ("LUNOGRAM_BOOTSTRAP_PUBLIC_KEY", "unset", "pin the first public key (`pk_...`), for automation"),
    ("LUNOGRAM_BOOTSTRAP_SECRET_KEY", "unset", "pin the first secret key (`sk_...`), for automation"),
    ("LUNOGRAM_MAX_BODY_BYTES", "5242880", "largest request body; larger -> 413"),
    ("LUNOGRAM_MAX_JSON_DEPTH", "32", "deepest JSON nesting accepted; deeper -> 400"),
    ("LUNOGRAM_MAX_EVENTS_PER_REQUEST", "1000", "events in one batch; more -> 413"),
    ("LUNOGRAM_MAX_NAME_LENGTH", "255", "longest event or schedule name"),
    ("LUNOGRAM_EVENT_WORKER_TASKS", "2", "event worker tasks per process with the worker role (0: none)"),
    ("LUNOGRAM_EVENT_BATCH_SIZE", "500", "events a worker applies per transaction"),
    ("LUNOGRAM_EVENT_PARTITIONS_PER_CLAIM", "8", "partitions (of 64) a worker takes per transaction"),
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
    )
