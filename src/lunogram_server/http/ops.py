"""Operations: liveness, readiness, Prometheus metrics, and the middleware that measures every request.

/metrics tells whoever reads it how busy the server is, which routes fail, and the event pipeline's
backlog: it is for the operator. With `LUNOGRAM_METRICS_TOKEN` set it needs that token as a Bearer token;
without, it answers only local scrapers (loopback, not through a reverse proxy, not a browser). It never
carries CORS headers (app.py), so no web page can read it.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import re
import time
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lunogram_server.events import service as events
from lunogram_server.http.auth import client_address
from lunogram_server.http.problems import ProblemError
from lunogram_server.schedules import service as schedules

router = APIRouter(tags=["operations"])


class HttpMetrics:
    """The server's own registry, so two apps in one process (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lunogram_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "lunogram_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        # labelled children by label values: `labels()` validates and looks them up anew on every call,
        # a few microseconds that every request paid twice
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        children = self._children.get((method, route, status))
        if children is None:
            children = (self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
            self._children[(method, route, status)] = children
        children[0].inc()
        children[1].observe(seconds)


def route_label(scope: Scope, prefixes: Sequence[str]) -> str:
    """The matched route's template with the prefix its router was included under, e.g.
    `/api/client/users` (FastAPI's `scope["route"]` is the router's own route: `/client/users` for both
    the `/api` and the bare alias). The fast lane labels with the same templates."""
    route = scope.get("route")
    template: str | None = getattr(route, "path", None)
    if template is None:
        return "unmatched"
    path: str = scope.get("path", "")
    regex: re.Pattern[str] | None = getattr(route, "path_regex", None)
    for prefix in prefixes:
        if regex is not None and path.startswith(prefix) and regex.match(path[len(prefix) :]):
            return prefix + template
    return template


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): counts and times requests by route template, not raw path."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics, prefixes: Sequence[str] = ()) -> None:
        """`prefixes`: those routers are included under besides their own paths (app.py)."""
        self.app = app
        self.metrics = metrics
        self.prefixes = tuple(prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            label = route_label(scope, self.prefixes)
            self.metrics.record(scope.get("method", ""), label, status, time.perf_counter() - start)


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the database answers", responses={503: {"description": "not ready"}})
async def readyz(request: Request) -> Response:
    try:
        async with request.app.state.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:  # any failure to reach the database means not ready
        return Response(
            f'{{"status":"unavailable","detail":"database: {type(exc).__name__}"}}',
            status_code=503,
            media_type="application/json",
        )
    return Response(b'{"status":"ready"}', media_type="application/json")


_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def check_metrics_access(request: Request) -> None:
    """401/429 without the operator token when one is set; 403 for anything but a local scraper otherwise."""
    token: str | None = request.app.state.settings.access.metrics_token
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return
        # wrong tokens count against the caller's address like unknown API keys do (http/auth.py)
        cache = request.app.state.key_cache
        wait = cache.failures.take(client_address(request.scope.get("client")), time.monotonic())
        if wait:
            seconds = max(1, math.ceil(wait))
            raise ProblemError(
                429,
                f"Authorization: too many failed authentications from this address; retry in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )
        raise ProblemError(
            401,
            "Authorization: /metrics needs `Authorization: Bearer <token>` with the server's LUNOGRAM_METRICS_TOKEN",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    client = request.scope.get("client")
    headers = request.headers
    local = client is not None and _is_loopback(client[0])
    proxied = any(name in headers for name in _PROXY_HEADERS)
    # a web page (cross-site, or same-origin through DNS rebinding) sends Origin or Sec-Fetch-Site
    browser = "origin" in headers or headers.get("sec-fetch-site", "none") != "none"
    if not local or proxied or browser:
        raise ProblemError(
            403,
            "/metrics: without LUNOGRAM_METRICS_TOKEN only local scrapers may read it (loopback, not through a "
            "proxy, not from a web page); set LUNOGRAM_METRICS_TOKEN and send it as `Authorization: Bearer <token>`",
        )


@router.get(
    "/metrics",
    summary="Prometheus metrics (operator only: see LUNOGRAM_METRICS_TOKEN)",
    response_class=Response,
    responses={401: {"description": "token missing or wrong"}, 403: {"description": "not a local scraper"}},
)
async def metrics(request: Request) -> Response:
    check_metrics_access(request)
    registry: CollectorRegistry = request.app.state.metrics.registry
    pool: Any = request.app.state.pool
    stats = pool.get_stats()
    lines = [
        "# HELP lunogram_db_pool_connections Database connections by state",
        "# TYPE lunogram_db_pool_connections gauge",
        f'lunogram_db_pool_connections{{state="open"}} {stats.get("pool_size", 0)}',
        f'lunogram_db_pool_connections{{state="available"}} {stats.get("pool_available", 0)}',
        f'lunogram_db_pool_connections{{state="waiting_requests"}} {stats.get("requests_waiting", 0)}',
    ]
    upserts = getattr(request.app.state, "upserts", None)
    if upserts is not None:  # this process's group commit (db/coalesce.py): calls per commit under load
        lines += [
            "# HELP lunogram_upsert_calls_total Upserts without Idempotency-Key (this process)",
            "# TYPE lunogram_upsert_calls_total counter",
            "# HELP lunogram_upsert_commits_total Commits those upserts took (this process)",
            "# TYPE lunogram_upsert_commits_total counter",
        ]
        for kind in ("users", "organizations"):
            coalescer = getattr(upserts, kind)
            lines += [
                f'lunogram_upsert_calls_total{{kind="{kind}"}} {coalescer.calls}',
                f'lunogram_upsert_commits_total{{kind="{kind}"}} {coalescer.batches}',
            ]
    key_cache = getattr(request.app.state, "key_cache", None)
    if key_cache is not None:
        lines += key_metric_lines(key_cache)
    try:
        async with request.app.state.pool.connection(timeout=2) as conn:
            lines += event_metric_lines(await events.queue_stats(conn))
            lines += schedule_metric_lines(await schedules.stats(conn))
    except Exception as exc:  # the HTTP figures are still worth serving without the database's
        lines.append(f"# event figures unavailable: {type(exc).__name__}")
    body = generate_latest(registry) + ("\n".join(lines) + "\n").encode()
    return Response(body, media_type=CONTENT_TYPE_LATEST)


_EVENT_METRICS = [
    ("lunogram_events_accepted_total", "counter", "Events accepted into the inbox", "accepted"),
    ("lunogram_events_processed_total", "counter", "Accepted events applied (a broadcast counts once)", "processed"),
    ("lunogram_events_delivered_total", "counter", "History entries written (one per target)", "delivered"),
    ("lunogram_events_failed_total", "counter", "Failed attempts to apply an event", "failed"),
    ("lunogram_event_queue_depth", "gauge", "Events accepted and not yet applied", "depth"),
    ("lunogram_event_queue_retrying", "gauge", "Queued events waiting to be retried", "retrying"),
    ("lunogram_events_dead", "gauge", "Dead letters: events parked after repeated failures", "dead"),
    ("lunogram_event_queue_lag_seconds", "gauge", "Age of the oldest event not yet applied", "lag_seconds"),
]


_SCHEDULE_METRICS = [
    ("lunogram_schedules_active", "gauge", "Schedules with a next firing", "active"),
    ("lunogram_schedules_due", "gauge", "Schedules due and not fired yet", "due"),
    ("lunogram_schedule_lag_seconds", "gauge", "How late the most overdue firing is", "lag_seconds"),
]


def _metric_lines(metrics: list[tuple[str, str, str, str]], stats: object) -> list[str]:
    """Database-wide figures: the same whichever process is scraped, and they survive restarts."""
    lines: list[str] = []
    for name, kind, meaning, attribute in metrics:
        lines += [f"# HELP {name} {meaning}", f"# TYPE {name} {kind}", f"{name} {getattr(stats, attribute)}"]
    return lines


def event_metric_lines(stats: events.QueueStats) -> list[str]:
    return _metric_lines(_EVENT_METRICS, stats)


def schedule_metric_lines(stats: schedules.ScheduleStats) -> list[str]:
    return _metric_lines(_SCHEDULE_METRICS, stats)


def key_metric_lines(cache: Any) -> list[str]:
    """This process's API-key checks (http/auth.py KeyCache): what a caller without a valid key cost."""
    lines = [
        "# HELP lunogram_key_lookups_total API-key lookups in the database, by what they found (this process)",
        "# TYPE lunogram_key_lookups_total counter",
    ]
    lines += [f'lunogram_key_lookups_total{{result="{name}"}} {value}' for name, value in cache.lookups.items()]
    lines += [
        "# HELP lunogram_auth_refused_total Requests refused for their key: 401 malformed or unknown, 429 limited",
        "# TYPE lunogram_auth_refused_total counter",
    ]
    lines += [f'lunogram_auth_refused_total{{reason="{name}"}} {value}' for name, value in cache.refused.items()]
    lines += [
        "# HELP lunogram_key_cache_entries Keys remembered, verified (known) or unknown (this process)",
        "# TYPE lunogram_key_cache_entries gauge",
    ]
    lines += [f'lunogram_key_cache_entries{{cache="{name}"}} {value}' for name, value in cache.sizes.items()]
    lines += [
        "# HELP lunogram_auth_failure_addresses Client addresses with recent failed authentications (this process)",
        "# TYPE lunogram_auth_failure_addresses gauge",
        f"lunogram_auth_failure_addresses {len(cache.failures)}",
    ]
    return lines
