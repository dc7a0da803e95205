"""Operations: liveness, readiness, Prometheus metrics, and the middleware that measures every request."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lunogram_server.events import service as events
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


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): counts and times requests by route template, not raw path."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

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
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.record(scope.get("method", ""), template, status, time.perf_counter() - start)


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


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
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
