"""`lunogram.Tracker` / `AsyncTracker` against a real `lunogram serve`: delivery, the flush triggers, overflow,
shutdown and exit, failures, fork safety and the asyncio variant."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from typing import Any

import lunogram
import psycopg

from helpers import Server, uid, wait_until


def accepted(server: Server, name: str) -> int:
    """Events named `name` the server accepted: waiting in the inbox or already applied (one snapshot)."""
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM event_inbox WHERE name = %s) + (SELECT count(*) FROM user_events WHERE "
            "name = %s)",
            (name, name),
        ).fetchone()
    assert row is not None
    return int(row[0])


def tracker(server: Server, **kwargs: Any) -> lunogram.Tracker:
    kwargs.setdefault("flush_interval", 60.0)
    kwargs.setdefault("flush_at", 1000)
    return lunogram.Tracker(server.secret_key, base_url=server.base_url, **kwargs)


def test_events_arrive_and_flush_waits_for_them(server: Server) -> None:
    name, users = uid("tracked"), [uid("user") for _ in range(5)]
    with tracker(server, max_batch=100) as t:
        for i in range(250):
            assert t.track(users[i % 5], name, {"i": i}) is True
        assert t.flush(timeout=30) is True
        assert (t.sent, t.failed, t.dropped, t.queued) == (250, 0, 0, 0)
        assert accepted(server, name) == 250
        assert t.flush() is True  # nothing new: returns at once


def test_flush_at_triggers_a_batch(server: Server) -> None:
    name, user = uid("flush_at"), uid("user")
    with tracker(server, flush_at=10) as t:
        for i in range(10):
            t.track(user, name, {"i": i})
        wait_until(lambda: t.sent == 10, timeout=10, what="the first 10 sent")  # no flush(): flush_at did it
        assert accepted(server, name) == 10
        for i in range(10, 15):
            t.track(user, name, {"i": i})
        assert t.queued == 5  # below flush_at, and the interval (60 s) is far away


def test_interval_triggers_a_batch(server: Server) -> None:
    name, user = uid("interval"), uid("user")
    with tracker(server, flush_interval=0.3) as t:
        started = time.monotonic()
        for _ in range(3):
            t.track(user, name)
        wait_until(lambda: t.sent == 3, timeout=10, what="the interval flush")
        assert time.monotonic() - started >= 0.25
        assert accepted(server, name) == 3


def test_overflow_drops_the_newest_and_counts_it(server: Server) -> None:
    name, user = uid("overflow"), uid("user")
    with tracker(server, max_queue_size=5) as t:
        results = [t.track(user, name, {"i": i}) for i in range(8)]
        assert results == [True] * 5 + [False] * 3
        assert t.dropped == 3
        t.flush()
        assert t.sent == 5
    assert accepted(server, name) == 5


def test_shutdown_sends_what_is_queued(server: Server) -> None:
    name, user = uid("shutdown"), uid("user")
    with tracker(server) as t:
        for _ in range(7):
            t.track(user, name)
        assert t.sent == 0
    assert t.sent == 7
    assert accepted(server, name) == 7
    assert t.track(user, name) is False  # after shutdown: dropped, not raised
    assert t.dropped == 1


def test_flush_at_interpreter_exit(server: Server) -> None:
    name = uid("atexit")
    script = textwrap.dedent(
        f"""
        import lunogram
        t = lunogram.Tracker({server.secret_key!r}, base_url={server.base_url!r}, flush_at=1000, flush_interval=60)
        for i in range(42):
            t.track("exit_user", {name!r}, {{"i": i}})
        # no flush, no shutdown: the atexit hook sends them
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert accepted(server, name) == 42


def test_failures_are_counted_and_reported_not_raised(server: Server) -> None:
    errors: list[tuple[Exception, list[dict[str, Any]]]] = []
    name = uid("unauthorized")
    with lunogram.Tracker(
        "sk_wrong_key_0123456789",
        base_url=server.base_url,
        max_retries=0,
        flush_at=1000,
        flush_interval=60,
        on_error=lambda exc, events: errors.append((exc, events)),
    ) as t:
        for _ in range(3):
            t.track(uid("user"), name)
        assert t.flush(timeout=30) is True
        assert (t.sent, t.failed) == (0, 3)
    assert len(errors) == 1
    assert isinstance(errors[0][0], lunogram.UnauthorizedError)
    assert len(errors[0][1]) == 3
    assert accepted(server, name) == 0


def test_an_invalid_event_fails_alone(server: Server) -> None:
    errors: list[tuple[Exception, list[dict[str, Any]]]] = []
    name, user = uid("split"), uid("user")

    def boom(exc: Exception, events: list[dict[str, Any]]) -> None:
        errors.append((exc, events))
        raise RuntimeError("a broken callback does not stop the tracker")

    with tracker(server, max_retries=0, on_error=boom) as t:
        for i in range(4):
            t.track(user, name, {"i": i})
        t.track({"external_id": ""}, name)  # the server refuses an empty external id (400)
        for i in range(4, 8):
            t.track(user, name, {"i": i})
        t.flush(timeout=30)
        assert (t.sent, t.failed) == (8, 1)
    assert len(errors) == 1
    assert isinstance(errors[0][0], lunogram.ValidationError)
    assert errors[0][1][0]["identifier"] == [{"external_id": ""}]
    assert accepted(server, name) == 8


def test_fork_child_starts_empty_and_sends_its_own(server: Server) -> None:
    parent_name, child_name, user = uid("parent"), uid("child"), uid("user")
    with tracker(server) as t:
        for _ in range(4):
            t.track(user, parent_name)
        t.track(user, parent_name)  # the sender thread is running and 5 events wait
        pid = os.fork()
        if pid == 0:  # the child: the parent's queue is not ours; a fresh thread and connection pool
            ok = t.queued == 0
            t.track(user, child_name)
            ok = ok and t.flush(timeout=30) and t.sent == 1
            t.shutdown()
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert t.queued == 5
        t.flush(timeout=30)
        assert t.sent == 5
    assert accepted(server, parent_name) == 5  # sent once, by the parent
    assert accepted(server, child_name) == 1


async def test_async_tracker(server: Server) -> None:
    name, user = uid("async"), uid("user")
    errors: list[Exception] = []
    async with lunogram.AsyncTracker(
        server.secret_key,
        base_url=server.base_url,
        flush_at=100,
        flush_interval=60,
        on_error=lambda exc, events: errors.append(exc),
    ) as t:
        for i in range(100):
            assert t.track(user, name, {"i": i}) is True
        deadline = time.monotonic() + 10
        while t.sent < 100:  # flush_at sends the first 100 by itself
            assert time.monotonic() < deadline, "flush_at did not trigger"
            await asyncio.sleep(0.01)
        for i in range(100, 150):
            t.track(user, name, {"i": i})
        await asyncio.sleep(0.05)
        assert t.queued == 50  # below flush_at, the interval far away
        await t.flush()
        assert t.sent == 150
        t.track_organization(uid("org"), uid("org_event"))
    assert t.sent == 151  # the organization event went at shutdown
    assert errors == []
    assert accepted(server, name) == 150


async def test_async_tracker_interval_and_failure(server: Server) -> None:
    failures: list[int] = []
    async with lunogram.AsyncTracker(
        "sk_wrong_key_0123456789",
        base_url=server.base_url,
        max_retries=0,
        flush_interval=0.2,
        on_error=lambda exc, events: failures.append(len(events)),
    ) as t:
        t.track(uid("user"), uid("async_fail"))
        t.track(uid("user"), uid("async_fail"))
        deadline = time.monotonic() + 10
        while t.failed < 2:  # the interval sends them; the bad key fails them
            assert time.monotonic() < deadline, "interval did not trigger"
            await asyncio.sleep(0.01)
    assert failures == [2]
