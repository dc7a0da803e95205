"""Request bodies: size limit (413), strict JSON via orjson, nesting limit and NUL check (400).

An oversized body is refused while it streams, before it is buffered whole; a body PostgreSQL could not
store (a `\\u0000` in a string) is refused before it reaches the database.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import orjson
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from lunogram_server.config import Limits
from lunogram_server.http.auth import authenticate, authorize
from lunogram_server.http.idempotency import remember_body
from lunogram_server.http.problems import ProblemError
from lunogram_server.projects.service import ApiKeyAuth, Permission

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
    if body.count(b"{") + body.count(b"[") > limits.max_json_depth and json_depth_exceeds(value, limits.max_json_depth):
        raise ProblemError(400, f"body: JSON nests deeper than {limits.max_json_depth} levels")
    if b"\\u0000" in body and contains_nul(value):
        raise ProblemError(400, "body: strings must not contain the NUL character (\\u0000)")
    return value


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed `limit` (before buffering it)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProblemError(413, f"body: larger than the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProblemError(413, f"body: larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def check_content_type(request: Request) -> None:
    """JSON bodies only (415); a missing type, text/plain and curl's default form type are read as JSON."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in _READ_AS_JSON and media != "application/json" and not media.endswith("+json"):
        raise ProblemError(415, f"Content-Type: send application/json, not {media!r}")


M = TypeVar("M", bound=BaseModel)


async def accept_json(request: Request, permission: Permission) -> tuple[ApiKeyAuth, Any]:
    """Everything a Client API write checks before it touches data, in the order a caller should learn it:
    the key (401, 403), the content type (415), the body's size and syntax (413, 400).

    Routes call this instead of declaring FastAPI body parameters and dependencies: on the hot path that
    machinery cost more than everything else the server does per request (measured with bench/upsert.py).
    """
    auth = await authorize(request, permission)
    check_content_type(request)
    limits: Limits = request.app.state.settings.limits
    raw = await read_body(request, limits.max_body_bytes)
    if not raw.strip():
        raise ProblemError(400, "body: is required")
    remember_body(request, raw)
    return auth, parse_json(raw, limits)


def validation_error(exc: ValidationError) -> RequestValidationError:
    """pydantic's errors, located in the body, for the problem JSON handler (problems.py)."""
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)])


async def accept(request: Request, permission: Permission, model: type[M]) -> tuple[ApiKeyAuth, M]:
    """`accept_json`, then the body's shape (400)."""
    auth, value = await accept_json(request, permission)
    try:
        return auth, model.model_validate(value)
    except ValidationError as exc:
        raise validation_error(exc) from None


def body_schema(model: type[BaseModel], *, array: bool = False) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON request body of `model`, or a non-empty array of them
    (see app.py for the components)."""
    BODY_MODELS.append(model)
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": ref} if array else ref
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


BODY_MODELS: list[type[BaseModel]] = []


class LimitedRoute(APIRoute):
    """For routes that declare their inputs FastAPI's way (the admin reads): the key is checked before
    anything else, so a caller without a valid key gets 401 whatever else is wrong."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def authenticated_handler(request: Request) -> Response:
            await authenticate(request)
            return await handler(request)

        return authenticated_handler
