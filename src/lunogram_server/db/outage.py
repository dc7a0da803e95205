"""The database going away (restarted, crashed, unreachable) and what the rest of the server does about it.

Requests answer 503 with `Retry-After` (http/problems.py); background loops log one line and try again;
the pool reconnects on its own (db/pool.py); the embedded PostgreSQL is restarted by `serve`
(db/embedded.py `Watchdog`). Nothing here retries a write: when a connection is lost during a commit, the
outcome is unknown, so the caller is told 503 (never 2xx) and retries, safely with an Idempotency-Key.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

RETRY_AFTER_SECONDS = 1

# SQLSTATE classes that say "the database cannot serve you right now", not "this request is wrong":
# 08 connection exception, 53 insufficient resources (too many connections, disk full), 57 operator
# intervention (shutdown, crash shutdown, starting up, statement canceled), 58 system error (I/O).
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57", "58"})
# admin shutdown (also pg_terminate_backend), crash shutdown (another backend crashed), cannot connect now
# (starting up, in recovery, shutting down)
_CONNECTION_GONE = frozenset({"57P01", "57P02", "57P03"})


def connection_failed(exc: BaseException) -> bool:
    """True when no connection could be had, or it was lost: says nothing about the work itself.

    psycopg raises OperationalError without a SQLSTATE for a connection that failed or broke on the client
    side (refused, closed by the server, "the connection is closed"); PoolTimeout is one too.
    """
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state[:2] == "08" or state in _CONNECTION_GONE


def database_unavailable(exc: BaseException) -> bool:
    """True when `exc` means the database cannot serve this now, whatever the request (try again later):
    a failed connection, or the database short of resources, shutting down, or canceling the statement.

    Other OperationalErrors (e.g. class 54, a program limit) are answers about the request: not retried.
    """
    if connection_failed(exc):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is not None and state[:2] in _UNAVAILABLE_CLASSES


class Throttle:
    """Whether to log this occurrence of a recurring failure: the first, then one per `seconds` per topic.

    During an outage every request and every loop fails the same way several times a second; one line
    per topic now and then says as much, with how many were not logged.
    """

    def __init__(self, seconds: float = 10.0) -> None:
        self.seconds = seconds
        self._last: dict[str, tuple[float, int]] = {}

    def __call__(self, topic: str) -> int | None:
        """None: stay quiet; otherwise how many occurrences were left unlogged since the last line."""
        now = time.monotonic()
        last, quiet = self._last.get(topic, (-self.seconds, 0))
        if now - last < self.seconds:
            self._last[topic] = (last, quiet + 1)
            return None
        self._last[topic] = (now, 0)
        return quiet


_throttle = Throttle()


def log_failure(log: Any, event: str, exc: BaseException, **fields: Any) -> None:
    """Log a background loop's failure: a database outage as one throttled line, anything else with its
    traceback (it is a bug or a bad row, and worth reading whole)."""
    if not database_unavailable(exc):
        log.error(event, exc_info=exc, **fields)
        return
    quiet = _throttle(event)
    if quiet is not None:
        log.warning(f"{event}: database unavailable", error=_one_line(exc), similar_since_last=quiet, **fields)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
