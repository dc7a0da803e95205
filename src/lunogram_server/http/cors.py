"""CORS for browsers: Starlette's middleware, with its refusals in problem JSON, and operator routes left out.

Starlette answers a refused preflight with `text/plain` "Disallowed CORS method"; ours names what was
refused and what is allowed, like every other 4xx. Routes meant for operators only (/metrics) get no CORS
headers at all, so a web page on another site cannot read them.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from lunogram_server.http.problems import problem_response


class Cors(CORSMiddleware):
    def __init__(self, app: ASGIApp, /, *, private_paths: Collection[str] = (), **options: Any) -> None:
        super().__init__(app, **options)
        self.private_paths = frozenset(private_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.private_paths:
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code < 400:
            return answer
        refused: list[str] = []
        origin = request_headers["origin"]
        if not self.is_allowed_origin(origin):
            refused.append(f"Origin: {origin!r} is not allowed")
        method = request_headers["access-control-request-method"]
        if method not in self.allow_methods:
            refused.append(
                f"Access-Control-Request-Method: {method!r} is not allowed (allowed: {', '.join(self.allow_methods)})"
            )
        requested = request_headers.get("access-control-request-headers")
        if requested is not None and not self.allow_all_headers:
            names = [name.strip() for name in requested.split(",") if name.strip()]
            unknown = [name for name in names if name.lower() not in self.allow_headers]
            if unknown:
                refused.append(
                    f"Access-Control-Request-Headers: {', '.join(unknown)} not allowed "
                    f"(allowed: {', '.join(self.allow_headers)})"
                )
        if "access-control-request-private-network" in request_headers and not self.allow_private_network:
            refused.append("Access-Control-Request-Private-Network: private network access is not allowed")
        headers = {k: v for k, v in answer.headers.items() if k not in ("content-length", "content-type")}
        return problem_response(400, "CORS preflight: " + "; ".join(refused or ["refused"]), headers=headers)
