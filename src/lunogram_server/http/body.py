"""Request bodies: size limit (413), strict JSON via orjson, nesting limit and NUL check (400).

FastAPI reads bodies through `Request.body()` and `Request.json()`; this route class swaps in a Request
that enforces our limits while streaming, so an oversized body is refused before it is buffered whole, and
a body PostgreSQL could not store (a `\\u0000` in a string) is refused before it reaches the database.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from lunogram_server.config import Limits
from lunogram_server.http.auth import authenticate
from lunogram_server.http.problems import ProblemError

_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_READ_AS_JSON = frozenset({"", "text/plain", "application/x-www-form-urlencoded"})


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """True when containers nest deeper than `limit` (the top-level value is depth 1)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def contains_nul(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            for k, v in item.items():
                if "\x00" in k:
                    return True
                stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_json(body: bytes, limits: Limits) -> Any:
    """orjson parse plus our limits; raises ProblemError(400) with the rule broken."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProblemError(400, f"body: is not valid JSON ({exc.msg} at position {exc.pos})") from None
    # fewer openers than the limit cannot nest deeper than it: skip the walk for small bodies
    if body.count(b"{") + body.count(b"[") > limits.max_json_depth and json_depth_exceeds(
        value, limits.max_json_depth
    ):
        raise ProblemError(400, f"body: JSON nests deeper than {limits.max_json_depth} levels")
    if b"\\u0000" in body and contains_nul(value):
        raise ProblemError(400, "body: strings must not contain the NUL character (\\u0000)")
    return value


class LimitedRequest(Request):
    limits: Limits

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            limit = self.limits.max_body_bytes
            declared = self.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise ProblemError(413, f"body: larger than the limit of {limit} bytes")
            chunks: list[bytes] = []
            size = 0
            async for chunk in self.stream():
                size += len(chunk)
                if size > limit:
                    raise ProblemError(413, f"body: larger than the limit of {limit} bytes")
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body(), self.limits)
        return self._json


class LimitedRoute(APIRoute):
    """An APIRoute for authenticated API routes: the key is checked first (401), then the body must be
    JSON (415) within the app's Limits (413, 400)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def limited_handler(request: Request) -> Response:
            # the key first: a caller without a valid key learns that, not what is wrong with its body
            await authenticate(request)
            scope = request.scope
            if request.method in _METHODS_WITH_BODY:
                content_type = request.headers.get("content-type", "")
                media = content_type.split(";", 1)[0].strip().lower()
                if media in _READ_AS_JSON:
                    # curl -d sends form-urlencoded by default; the body is still JSON, so read it as such
                    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                    scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
                elif media != "application/json" and not media.endswith("+json"):
                    raise ProblemError(415, f"Content-Type: send application/json, not {media!r}")
            limited = LimitedRequest(scope, request.receive)
            limited.limits = request.app.state.settings.limits
            return await handler(limited)

        return limited_handler
