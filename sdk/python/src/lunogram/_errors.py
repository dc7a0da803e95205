"""The exceptions the SDK raises: every failure is a `LunogramError`.

`APIError` and its subclasses mean the server answered with an error status (its problem JSON's `title` and
`detail` are kept); `NetworkError` means no answer arrived (connection refused, timeout, reset ...).
Arguments the SDK can reject without asking the server (a naive `datetime`, an empty identifier list, a wrong
type) raise `ValueError` / `TypeError` before anything is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "APIError",
    "ForbiddenError",
    "LunogramError",
    "NetworkError",
    "NotFoundError",
    "RateLimitError",
    "RequestError",
    "UnauthorizedError",
    "ValidationError",
]


class LunogramError(Exception):
    """Base class of every error raised by the SDK (also for a missing API key)."""


class NetworkError(LunogramError):
    """The request did not get an answer (after the retries): the transport error is in `__cause__`."""


class APIError(LunogramError):
    """The server answered with a 4xx/5xx status.

    `title` and `detail` come from the problem JSON body (`{"title", "detail", "status"}`); `detail` names the
    field and the rule for a 400, e.g. ``[0].identifier[0].external_id: must not be empty``.
    """

    def __init__(
        self,
        status_code: int,
        title: str,
        detail: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status_code = status_code
        self.title = title
        self.detail = detail
        self.body = body
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(f"{status_code} {title}: {detail}" if detail else f"{status_code} {title}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code!r}, title={self.title!r}, detail={self.detail!r})"


class ValidationError(APIError):
    """400: the request was malformed or a field broke a rule (`detail` says which)."""


class UnauthorizedError(APIError):
    """401: the API key is missing, unknown or revoked."""


class ForbiddenError(APIError):
    """403: the key lacks the permission (e.g. a public key deleting or sending `match` events)."""


class NotFoundError(APIError):
    """404: the user, organization, membership or schedule to delete does not exist."""


class RateLimitError(APIError):
    """429: too many requests; `retry_after` holds the server's `Retry-After` in seconds when it sent one."""

    def __init__(
        self,
        status_code: int,
        title: str,
        detail: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status_code, title, detail, body=body, headers=headers)
        self.retry_after = retry_after


class RequestError(APIError):
    """Any other error status (409, 413, 5xx ...)."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: ValidationError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    429: RateLimitError,
}


def error_class(status_code: int) -> type[APIError]:
    """The exception class for an error status."""
    return _BY_STATUS.get(status_code, RequestError)
