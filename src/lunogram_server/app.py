"""Builds the ASGI app: routers, error handlers, middleware and the lifespan that owns the pool."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from psycopg_pool import AsyncConnectionPool
from pydantic.json_schema import models_json_schema

from lunogram_server import __version__
from lunogram_server.background import background
from lunogram_server.config import Settings
from lunogram_server.console import web as console_web
from lunogram_server.db import open_pool
from lunogram_server.db.session import with_session_settings
from lunogram_server.http import (
    admin,
    client,
    inbox,
    journeys,
    keys,
    lists,
    messaging,
    ops,
    providers,
    public,
    schedules,
    templates,
)
from lunogram_server.http.auth import KeyCache
from lunogram_server.http.body import BODY_MODELS
from lunogram_server.http.cors import Cors
from lunogram_server.http.fastlane import FastLane
from lunogram_server.http.problems import install_handlers
from lunogram_server.messaging import crypto
from lunogram_server.messaging.links import Links
from lunogram_server.messaging.providers import parse_networks
from lunogram_server.messaging.providers.base import default_ssl_context
from lunogram_server.messaging.providers_service import ProviderRegistry
from lunogram_server.organizations import service as organizations
from lunogram_server.users import service as users

DESCRIPTION = """
The Lunogram Client API (what the official JS and Go SDKs speak) and the operator API.

Authenticate with `Authorization: Bearer <key>`. Errors are problem JSON: `{"title", "detail", "status"}`,
where `detail` names the field and the rule. Limits: body <= 5 MiB, JSON depth <= 32.
"""


def build_app(settings: Settings, conninfo: str) -> FastLane:
    metrics = ops.HttpMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await open_pool(
            with_session_settings(conninfo, settings.limits),
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            wait_seconds=settings.pool_timeout_seconds,
        )
        app.state.pool = pool
        app.state.key_cache = KeyCache(pool, settings.key_cache_seconds, settings.access)
        app.state.upserts = Upserts(pool, settings)
        app.state.keyring = crypto.keyring(settings)
        app.state.providers = ProviderRegistry(
            allowed_networks=parse_networks(settings.journeys.webhook_allowed_networks)
        )
        await asyncio.to_thread(default_ssl_context)  # made once, off the event loop
        async with pool.connection() as conn:
            app.state.links = await Links.load(conn, settings.public_url)
        settle_garbage_collector()
        try:
            async with background(pool, settings):
                yield
        finally:
            await app.state.providers.aclose()
            await pool.close()

    app = FastAPI(
        title="Lunogram",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        strict_content_type=False,
        docs_url="/docs",
        redoc_url=None,
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_handlers(app)
    client_routers = [client.router, schedules.router]  # the fast lane's (http/fastlane.py)
    for router in [*client_routers, inbox.router]:
        app.include_router(router, prefix="/api")
        # The same routes without /api, hidden from the schema: SDKs configured with the bare host still work.
        app.include_router(router, include_in_schema=False)
    app.include_router(admin.router)
    app.include_router(lists.router)
    app.include_router(journeys.router)
    app.include_router(templates.router)
    app.include_router(templates.snippets_router)
    app.include_router(providers.router)
    app.include_router(keys.router)
    app.include_router(messaging.router)
    app.include_router(public.router)
    app.include_router(ops.router)
    console_web.install(app)
    app.add_middleware(
        Cors,
        private_paths=["/metrics"],  # operators only: no web page may read it (http/ops.py)
        allow_origins=["*"],
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["Accept", "Authorization", "Content-Type", "Idempotency-Key"],
        allow_credentials=False,
        max_age=600,
    )
    app.add_middleware(ops.MetricsMiddleware, metrics=metrics, prefixes=["/api"])
    app.openapi = lambda: _openapi_without_422(app)  # type: ignore[method-assign]
    return FastLane(app, metrics, {"/api": client_routers, "": client_routers})


class Upserts:
    """Each kind's upsert coalescer (db/coalesce.py), one per process."""

    def __init__(self, pool: AsyncConnectionPool[Any], settings: Settings) -> None:
        options = {"slots": settings.upsert_slots, "max_batch": settings.upsert_max_batch}
        self.users = users.upsert_coalescer(pool, **options)
        self.organizations = organizations.upsert_coalescer(pool, **options)
        self.keyed_users = users.keyed_upsert_coalescer(pool, **options)
        self.keyed_organizations = organizations.keyed_upsert_coalescer(pool, **options)


def settle_garbage_collector() -> None:
    """Once started, move everything alive (modules, app, pool) out of the collector's sight and collect
    less often: full collections over those ~80k long-lived objects paused a process ~45 ms each, many
    times a second under load, and set the p99 of bench/ingest.py (54-75 ms -> ~25 ms with this)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def app_from_env() -> FastLane:
    """The app of one `serve --workers N` child process (uvicorn imports it by name in each child)."""
    from lunogram_server.config import load_settings
    from lunogram_server.server import WORKER_CONNINFO_ENV, WORKER_PARENT_ENV

    _die_with_parent(int(os.environ[WORKER_PARENT_ENV]))
    return build_app(load_settings(), os.environ[WORKER_CONNINFO_ENV])


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel send SIGTERM when the parent dies, however it dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _openapi_without_422(app: FastAPI) -> dict[str, Any]:
    """The schema FastAPI makes, less the 422 it documents for routes with inputs (ours answer 400 problem
    JSON), plus the request bodies the Client API routes parse themselves."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        # request bodies the Client API routes parse themselves (http/body.py `accept`)
        _, defs = models_json_schema(
            [(model, "validation") for model in BODY_MODELS], ref_template="#/components/schemas/{model}"
        )
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in defs.get("$defs", {}).items():
            schemas.setdefault(name, definition)
        app.openapi_schema = schema
    return app.openapi_schema
