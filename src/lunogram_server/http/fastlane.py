"""The fast lane: Client API writes skip FastAPI's routing and middleware stack.

Why: on 2 cores the stack around an endpoint (a dozen ASGI layers, route matching, dependency solving)
cost ~250 µs per request, as much as the upsert's own work. The Client API endpoints take only the
`Request` and return a `Response` (body parsing and validation are ours, http/body.py), so they can be
called directly: same endpoint functions, same exception handlers, same metrics. Everything else (reads,
admin, docs, CORS requests from browsers, anything unexpected) goes through the full app unchanged.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from lunogram_server.http.ops import HttpMetrics

Endpoint = Callable[[Request], Awaitable[Response]]
ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


def _takes_only_request(endpoint: Callable[..., Any]) -> bool:
    parameters = list(inspect.signature(endpoint).parameters.values())
    return len(parameters) == 1 and parameters[0].annotation in (Request, "Request")


class FastLane:
    """Outermost ASGI app: serves (method, exact path) of the eligible routes itself, delegates the rest."""

    def __init__(self, app: FastAPI, metrics: HttpMetrics, routers: dict[str, list[APIRouter]]) -> None:
        """`routers`: prefix -> the routers `app` includes under it, whose request-only routes take the lane."""
        self.app = app
        self.metrics = metrics
        self.lanes: dict[tuple[str, str], tuple[str, Endpoint]] = {}
        for prefix, included in routers.items():
            for router in included:
                for route in router.routes:
                    if not isinstance(route, APIRoute) or route.param_convertors:
                        continue
                    if _takes_only_request(route.endpoint):
                        for method in route.methods or ():
                            self.lanes[(method, prefix + route.path)] = (prefix + route.path, route.endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = None
        if scope["type"] == "http":
            lane = self.lanes.get((scope["method"], scope["path"]))
        # a browser's request (Origin) needs the CORS middleware's headers: full stack
        if lane is None or any(name == b"origin" for name, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return
        template, endpoint = lane
        start = time.perf_counter()
        scope["app"] = self.app
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Exception as exc:
            response = await self._handle(request, exc)
        await response(scope, receive, send)
        self.metrics.record(scope["method"], template, response.status_code, time.perf_counter() - start)

    async def _handle(self, request: Request, exc: Exception) -> Response:
        """The app's own handler for the exception's nearest class (problems.install_handlers)."""
        handlers: dict[Any, ExceptionHandler] = self.app.exception_handlers  # type: ignore[assignment]
        for cls in type(exc).__mro__:
            if cls in handlers:
                return await handlers[cls](request, exc)
        raise exc
