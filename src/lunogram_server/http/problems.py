"""Problem JSON (`{"title", "detail", "status"}`) for every error, with the field and the rule in `detail`.

The official SDKs read `title` and `detail`; `status` and `errors` (one entry per bad field) are ours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import psycopg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match

from lunogram_server.db.outage import RETRY_AFTER_SECONDS, Throttle, database_unavailable
from lunogram_server.db.refusals import Refused, refusal
from lunogram_server.db.retry import COLLISIONS

log = structlog.get_logger("lunogram.http")

TITLES = {
    400: "bad request",
    401: "unauthorized",
    403: "forbidden",
    404: "resource not found",
    405: "method not allowed",
    409: "conflict",
    413: "payload too large",
    415: "unsupported media type",
    422: "unprocessable entity",
    429: "too many requests",
    431: "request header fields too large",
    499: "client closed request",
    500: "internal server error",
    503: "service unavailable",
}

CLIENT_CLOSED_REQUEST = 499

# pydantic error type -> the rule, said plainly
_RULES = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "string_too_long": "is too long (at most {max_length} characters)",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be an array",
    "too_short": "must contain at least {min_length} item(s)",
    "too_long": "must contain at most {max_length} item(s)",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "bool_type": "must be a boolean",
    "bool_parsing": "must be a boolean",
    "uuid_parsing": "must be a UUID",
    "uuid_type": "must be a UUID",
    "json_invalid": "is not valid JSON ({error})",
    "datetime_type": "must be an RFC 3339 timestamp",
    "datetime_parsing": "must be an RFC 3339 timestamp ({error})",
    "datetime_from_date_parsing": "must be an RFC 3339 timestamp ({error})",
    "timezone_aware": "must include a timezone offset (e.g. Z or +02:00)",
    "union_tag_invalid": "has an unknown kind",
}


class ProblemError(StarletteHTTPException):
    """Raise anywhere to answer with a problem JSON."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)


def problem_response(
    status: int, detail: str, *, headers: Mapping[str, str] | None = None, errors: Sequence[dict[str, str]] = ()
) -> Response:
    body: dict[str, Any] = {"title": TITLES.get(status, "error"), "detail": detail, "status": status}
    if errors:
        body["errors"] = list(errors)
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def field_path(loc: Sequence[int | str]) -> str:
    """('body', 'identifier', 0, 'external_id') -> 'identifier[0].external_id'; ('body', 3) -> '[3]'."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or "body"


def _rule(error: dict[str, Any]) -> str:
    ctx = error.get("ctx") or {}
    template = _RULES.get(error["type"])
    if template is not None:
        try:
            return template.format(**ctx)
        except (KeyError, IndexError):
            pass
    message = str(ctx.get("error") or error.get("msg") or "is invalid")
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return message[:1].lower() + message[1:]


def validation_problems(errors: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for error in errors:
        loc = [p for p in error.get("loc", ()) if p != "body"]
        if error["type"] == "json_invalid":
            loc = []  # the position is a byte offset, not a field
        # drop pydantic's union-branch and function-name segments from the path
        loc = [p for p in loc if not (isinstance(p, str) and (p.startswith("function-") or "[" in p))]
        path = field_path(loc)
        rule = _rule(error)
        key = f"{path}: {rule}"
        if key not in seen:
            seen.add(key)
            out.append({"field": path, "rule": rule})
    return out


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> str:
    """Every method the request's path supports, for a 405's `Allow` (Starlette names only one route's)."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]
    return ", ".join(allowed)


_unavailable_log = Throttle()

_RETRY = (
    "retry after Retry-After seconds. A write answered 503 may or may not have been stored: send it again, "
    "with an Idempotency-Key to make the retry safe"
)


def unavailable_response(request: Request, exc: Exception) -> Response:
    """503 + Retry-After for a request the database could not serve (db/outage.py), logged a line at a time."""
    quiet = _unavailable_log("unavailable")
    if quiet is not None:
        error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        log.warning("database unavailable: answering 503", path=request.url.path, error=error, similar=quiet)
    if isinstance(exc, PoolTimeout):
        why = "no database connection became free in time: the database is busy, restarting or unreachable"
    else:
        why = "the database connection failed: the database is restarting or unreachable"
    detail = f"database: unavailable ({why}); {_RETRY}"
    return problem_response(503, detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        problems = validation_problems(exc.errors())
        detail = "; ".join(f"{p['field']}: {p['rule']}" for p in problems[:10])
        if len(problems) > 10:
            detail += f"; and {len(problems) - 10} more"
        return problem_response(400, detail or "invalid request", errors=problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such route"
        elif exc.status_code == 405:
            detail = "this method is not allowed on this route"
            return problem_response(405, detail, headers={**(exc.headers or {}), "Allow": allowed_methods(request)})
        return problem_response(exc.status_code, detail, headers=exc.headers)

    @app.exception_handler(Refused)
    @app.exception_handler(psycopg.Error)
    async def _database(request: Request, exc: Exception) -> Response:
        refused = refusal(exc)  # a write refused by a limit the database enforces (db/refusals.py)
        if refused is not None:
            return problem_response(refused.status, refused.detail)
        if database_unavailable(exc):
            return unavailable_response(request, exc)
        return await _unexpected(request, exc)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, _: ClientDisconnect) -> Response:
        # The client closed the connection before sending the whole body: nothing was done, nobody reads
        # the answer, and it is not a server error. 499 (nginx's "client closed request") is what the
        # metrics count; nothing is sent.
        log.info("client closed the request before sending its body", path=request.url.path, method=request.method)
        return problem_response(CLIENT_CLOSED_REQUEST, "the client closed the connection before sending the body")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        if isinstance(exc, COLLISIONS):  # still colliding after run_write's retries: nothing was written
            log.warning("write kept colliding", path=request.url.path, error=str(exc))
            return problem_response(
                503,
                "database: this write kept colliding with concurrent writes to the same profiles; retry it",
                headers={"Retry-After": "1"},
            )
        log.exception("unhandled error", path=request.url.path, method=request.method)
        return problem_response(500, "internal error; it has been logged")
