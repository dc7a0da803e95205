"""What `Client` and `AsyncClient` share: configuration, building the HTTP request, the retry policy and
turning an answer into a result or an exception. The two clients only differ in how they send and sleep."""

from __future__ import annotations

import email.utils
import json
import os
import platform
import random
import uuid
from collections.abc import Generator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, TypeVar

import httpx

from ._errors import APIError, LunogramError, NetworkError, RateLimitError, error_class
from ._operations import Operation
from ._version import __version__

T = TypeVar("T")

DEFAULT_BASE_URL = "https://console.lunogram.com/api"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 2
API_KEY_ENV = "LUNOGRAM_API_KEY"
BASE_URL_ENV = "LUNOGRAM_BASE_URL"

INITIAL_BACKOFF = 0.5
"""Seconds before the first retry (then doubled per attempt, with jitter)."""
MAX_BACKOFF = 8.0
MAX_RETRY_AFTER = 60.0
"""A `Retry-After` longer than this is not waited for: the error is raised for the caller to schedule."""

_UTC = timezone.utc  # noqa: UP017 - datetime.UTC is Python 3.11+, the SDK supports 3.10

RETRY_STATUSES = frozenset({408, 429})

USER_AGENT = f"lunogram-python/{__version__} httpx/{httpx.__version__} python/{platform.python_version()}"


def _json_default(value: object) -> Any:
    # values inside `data` the json module does not know; keys are never touched
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()!r} in the request: give it a timezone")
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value) if value % 1 else int(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} values cannot be sent as JSON")


def encode_json(body: Any) -> bytes:
    return json.dumps(body, default=_json_default, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds (a number of seconds or an HTTP date); None when absent or unreadable."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))  # (NaN -> 0.0, inf -> not waited for)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_UTC)
    return max(0.0, (when - datetime.now(_UTC)).total_seconds())


def backoff(retry: int) -> float:
    """Seconds to wait before retry number `retry` (0-based): exponential, capped, with jitter."""
    return min(MAX_BACKOFF, INITIAL_BACKOFF * 2.0**retry) * random.uniform(0.5, 1.0)


def error_from_response(response: httpx.Response) -> APIError:
    """The `APIError` subclass for an error answer, with the problem JSON's `title` and `detail`."""
    status = response.status_code
    title, detail, body = response.reason_phrase or "error", "", None
    try:
        body = response.json()
    except ValueError:
        detail = response.text[:500]
    if isinstance(body, dict):
        title = str(body.get("title") or title)
        detail = str(body.get("detail") or "")
    cls = error_class(status)
    if cls is RateLimitError:
        return RateLimitError(
            status,
            title,
            detail,
            body=body,
            headers=response.headers,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    return cls(status, title, detail, body=body, headers=response.headers)


@dataclass(frozen=True)
class Attempt:
    """A failed try: its error, and the delay before the next try (None: give up and raise the error)."""

    error: LunogramError
    delay: float | None


Step = httpx.Request | float
"""What a call asks its driver for: send this request, or sleep this many seconds."""
Reply = httpx.Response | httpx.TransportError | None
"""What the driver hands back: the answer or the transport failure of a request; None after a sleep."""


class BaseClient:
    """Configuration and the send-independent steps of a call."""

    def __init__(
        self,
        api_key: str | None,
        base_url: str | None,
        timeout: float | httpx.Timeout | None,
        max_retries: int,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if not key:
            raise LunogramError(f"no API key: pass api_key=... or set {API_KEY_ENV}")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.api_key = key
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, api_key={self.api_key[:3]!r}...)"

    def _headers(self, op: Operation[Any], idempotency_key: str | None) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.api_key}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        if op.method != "GET":
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    def _build_request(
        self, http: httpx.Client | httpx.AsyncClient, op: Operation[Any], idempotency_key: str | None
    ) -> httpx.Request:
        url = f"{self.base_url}/{op.area}/{op.path}"
        headers = self._headers(op, idempotency_key)
        if op.method == "GET":
            return http.build_request("GET", url, params=op.params, headers=headers, timeout=self.timeout)
        return http.build_request(op.method, url, content=encode_json(op.body), headers=headers, timeout=self.timeout)

    @staticmethod
    def _idempotency_key(op: Operation[Any]) -> str | None:
        # one per logical call, the same on every retry, so the server can answer a repeat from its record
        return str(uuid.uuid4()) if op.method == "POST" else None

    def _on_response(self, op: Operation[T], response: httpx.Response, retry: int) -> T | Attempt:
        """The parsed result of a success, else the error and whether (and when) to try again."""
        if response.is_success:
            try:
                has_json = bool(response.content) and "json" in response.headers.get("content-type", "")
                return op.parse(response.json() if has_json else None)
            except (KeyError, TypeError, ValueError) as exc:
                error = LunogramError(f"unexpected {response.status_code} answer to {op.method} {op.path}: {exc!r}")
                raise error from exc
        error = error_from_response(response)
        status = response.status_code
        if retry >= self.max_retries or not (status in RETRY_STATUSES or status >= 500):
            return Attempt(error, None)
        after = parse_retry_after(response.headers.get("retry-after"))
        if after is None:
            return Attempt(error, backoff(retry))
        return Attempt(error, after if after <= MAX_RETRY_AFTER else None)

    def _steps(self, http: httpx.Client | httpx.AsyncClient, op: Operation[T]) -> Generator[Step, Reply, T]:
        """One logical call as a sans-I/O generator: yields requests to send and delays to sleep, receives the
        answers, returns the parsed result or raises the final error. Clients drive it with their own I/O."""
        idempotency_key = self._idempotency_key(op)
        retry = 0
        while True:
            reply = yield self._build_request(http, op, idempotency_key)
            if isinstance(reply, httpx.Response):
                outcome = self._on_response(op, reply, retry)
            elif isinstance(reply, httpx.TransportError):
                outcome = self._on_transport_error(reply, retry)
            else:  # pragma: no cover - a driver bug
                raise TypeError(f"expected a response or a transport error, got {reply!r}")
            if not isinstance(outcome, Attempt):
                return outcome
            if outcome.delay is None:
                raise outcome.error
            yield outcome.delay
            retry += 1

    def _on_transport_error(self, exc: httpx.TransportError, retry: int) -> Attempt:
        error = NetworkError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        error.__cause__ = exc
        return Attempt(error, backoff(retry) if retry < self.max_retries else None)
