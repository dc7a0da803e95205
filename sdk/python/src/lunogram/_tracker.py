"""Background event batching: `Tracker` (a thread) and `AsyncTracker` (an asyncio task).

`track()` only appends to a bounded in-memory queue and returns; background senders (`max_concurrency`
threads or tasks, 2 by default) take batches of up to 1,000 events and post each with the client's `events.post`
(one call per batch, so one Idempotency-Key per batch and its retries are stored once). The queue and the
batching decisions (`_Batcher`) are shared by both trackers, which only differ in how they wait and send.

Policies:

- **Overflow**: when `max_queue_size` events are waiting, the newest event (the one being tracked) is dropped,
  counted in `dropped`, and `track()` returns False. It never blocks and never raises for this.
- **Sending**: a batch is sent as soon as `flush_at` events are waiting, or when the oldest waiting event has
  waited `flush_interval` seconds, or on `flush()` / `shutdown()`.
- **Failures**: a batch that still fails after the client's retries is counted in `failed` and handed to
  `on_error(error, events)`; nothing is raised into the caller. A batch the server refuses as invalid (400) is
  split in halves and resent, so one bad event costs only itself.
- **Fork**: in a child process the tracker starts over with an empty queue (the parent's events stay the
  parent's) and starts its sender again on the next `track()`.
- **Exit**: live `Tracker`s are flushed at interpreter exit (`atexit`). An `AsyncTracker` cannot be flushed
  once its event loop is gone: `await tracker.shutdown()` (or `async with`) before the loop ends.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal

from ._client import AsyncClient, Client
from ._errors import ValidationError
from ._models import IdentifierInput
from ._operations import encode_identifier

Kind = Literal["user", "organization"]
ErrorCallback = Callable[[Exception, list[dict[str, Any]]], None]

MAX_BATCH = 1000
"""Events per request at most (the server's batch limit)."""
DEFAULT_FLUSH_AT = 100
DEFAULT_FLUSH_INTERVAL = 1.0
DEFAULT_MAX_QUEUE_SIZE = 10_000


class _Batcher:
    """The queue, counters and batching decisions; no I/O and no locking (its owner serialises access)."""

    def __init__(self, flush_at: int, flush_interval: float, max_queue_size: int, max_batch: int) -> None:
        if flush_at < 1:
            raise ValueError("flush_at must be >= 1")
        if flush_interval <= 0:
            raise ValueError("flush_interval must be > 0")
        if max_queue_size < 1:
            raise ValueError("max_queue_size must be >= 1")
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be between 1 and {MAX_BATCH}")
        self.flush_at = min(flush_at, max_batch)
        self.flush_interval = flush_interval
        self.max_queue_size = max_queue_size
        self.max_batch = max_batch
        self.reset()

    def reset(self) -> None:
        self.queue: collections.deque[tuple[Kind, dict[str, Any]]] = collections.deque()
        self.enqueued = 0  # events accepted into the queue, ever
        self.taken = 0  # events taken out for sending
        self.in_flight: dict[int, int] = {}  # batches being sent: position of the first event -> events
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.flush_target = 0  # flush() asked that every event up to this count be taken
        self.oldest_at = 0.0  # when the oldest waiting event was queued (monotonic)
        self.stopping = False

    def add(self, kind: Kind, event: dict[str, Any]) -> int:
        """Queue an event: the new queue length (wake the sender at 1 and at flush_at), or 0 if it was dropped."""
        queue = self.queue
        size = len(queue)
        if size >= self.max_queue_size:
            self.dropped += 1
            return 0
        if size == 0:
            self.oldest_at = time.monotonic()
        queue.append((kind, event))
        self.enqueued += 1
        return size + 1

    def wants_wake(self, size: int) -> bool:
        return size == 1 or size == self.flush_at

    def ready(self, now: float) -> bool:
        """Whether a batch should be sent now."""
        size = len(self.queue)
        return size > 0 and (
            size >= self.flush_at
            or self.taken < self.flush_target
            or self.stopping
            or now - self.oldest_at >= self.flush_interval
        )

    def wait_time(self, now: float) -> float | None:
        """Seconds until the oldest waiting event is due (None: nothing waits)."""
        if not self.queue:
            return None
        return max(0.0, self.oldest_at + self.flush_interval - now)

    def take(self) -> tuple[int, Kind, list[dict[str, Any]]]:
        """The next batch (its position, kind and events): up to max_batch consecutive events of one kind."""
        queue = self.queue
        kind = queue[0][0]
        batch: list[dict[str, Any]] = []
        append, popleft, limit = batch.append, queue.popleft, self.max_batch
        while queue and len(batch) < limit and queue[0][0] == kind:
            append(popleft()[1])
        position = self.taken
        self.taken += len(batch)
        self.in_flight[position] = len(batch)
        if queue:
            self.oldest_at = time.monotonic()  # the rest waited at most this long; good enough for the timer
        return position, kind, batch

    def complete(self, position: int, sent: int, failed: int) -> None:
        del self.in_flight[position]
        self.sent += sent
        self.failed += failed

    @property
    def settled(self) -> int:
        """Every event before this position is sent or failed (batches may finish out of order)."""
        return min(self.in_flight) if self.in_flight else self.taken

    def request_flush(self) -> int:
        """Ask for everything queued so far to be sent; returns the `settled` position that means done."""
        self.flush_target = max(self.flush_target, self.enqueued)
        return self.enqueued


def _event(name: str, identifier: IdentifierInput, data: Mapping[str, Any] | None) -> dict[str, Any]:
    if not isinstance(name, str) or not name:
        raise ValueError("name: must be a non-empty string")
    return {"name": name, "identifier": encode_identifier(identifier), "data": dict(data) if data else {}}


def _halves(batch: list[dict[str, Any]], error: Exception) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """A refused batch worth splitting (only invalid content is, and only if there is more than one event)."""
    if len(batch) > 1 and isinstance(error, ValidationError | TypeError | ValueError):
        middle = len(batch) // 2
        return batch[:middle], batch[middle:]
    return None


class _TrackerBase:
    """What both trackers share: construction, counters and the public `track` calls."""

    _batcher: _Batcher
    _on_error: ErrorCallback | None

    def __init__(
        self,
        on_error: ErrorCallback | None,
        flush_at: int,
        flush_interval: float,
        max_queue_size: int,
        max_batch: int,
    ) -> None:
        self._batcher = _Batcher(flush_at, flush_interval, max_queue_size, max_batch)
        self._on_error = on_error

    @property
    def dropped(self) -> int:
        """Events refused because the queue was full."""
        return self._batcher.dropped

    @property
    def failed(self) -> int:
        """Events whose batch failed after the retries (reported to `on_error`)."""
        return self._batcher.failed

    @property
    def sent(self) -> int:
        """Events the server accepted."""
        return self._batcher.sent

    @property
    def queued(self) -> int:
        """Events waiting in the queue."""
        return len(self._batcher.queue)

    def _report(self, error: Exception, batch: list[dict[str, Any]]) -> None:
        if self._on_error is not None:
            with contextlib.suppress(Exception):  # a failing callback must not stop the sender
                self._on_error(error, batch)

    def _enqueue(self, kind: Kind, event: dict[str, Any]) -> bool:
        raise NotImplementedError

    def track(self, identifier: IdentifierInput, name: str, data: Mapping[str, Any] | None = None) -> bool:
        """Queue a user event; True if queued, False if dropped because the queue is full. Never blocks.

        Malformed arguments (an empty name, a bad identifier) raise `ValueError`/`TypeError` right away;
        delivery problems never raise here (see `failed` and `on_error`).
        """
        return self._enqueue("user", _event(name, identifier, data))

    def track_organization(self, identifier: IdentifierInput, name: str, data: Mapping[str, Any] | None = None) -> bool:
        """Queue an organization event; as `track`."""
        return self._enqueue("organization", _event(name, identifier, data))


# --- threads ----------------------------------------------------------------------------------------------

_live_trackers: weakref.WeakSet[Tracker] = weakref.WeakSet()
_live_async_trackers: weakref.WeakSet[AsyncTracker] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for tracker in list(_live_trackers):
        tracker._after_fork()
    for async_tracker in list(_live_async_trackers):
        async_tracker._after_fork()


def _at_exit() -> None:
    for tracker in list(_live_trackers):
        tracker.shutdown()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)


class Tracker(_TrackerBase):
    """Queue events from any thread and send them in batches from a background thread.

    Give it an API key (and `base_url`, ...) like `Client`, or an existing `client=`. Call `flush()` to wait
    until everything tracked so far is sent, `shutdown()` (or leave the `with` block) when done; at interpreter
    exit live trackers are flushed automatically.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        client: Client | None = None,
        max_retries: int = 3,
        timeout: float = 30.0,
        flush_at: int = DEFAULT_FLUSH_AT,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_batch: int = MAX_BATCH,
        max_concurrency: int = 2,
        on_error: ErrorCallback | None = None,
    ) -> None:
        super().__init__(on_error, flush_at, flush_interval, max_queue_size, max_batch)
        self._client_args = (api_key, base_url, max_retries, timeout)
        self._owns_client = client is None
        self._client = (
            client
            if client is not None
            else Client(api_key, base_url=base_url, max_retries=max_retries, timeout=timeout)
        )
        self._cond = threading.Condition(threading.Lock())
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self._concurrency = max_concurrency
        self._threads: list[threading.Thread] = []
        self._closed = False
        _live_trackers.add(self)

    @property
    def client(self) -> Client:
        return self._client

    def _enqueue(self, kind: Kind, event: dict[str, Any]) -> bool:
        batcher = self._batcher
        with self._cond:
            if self._closed:
                batcher.dropped += 1
                return False
            size = batcher.add(kind, event)
            if size and batcher.wants_wake(size):
                if not self._threads:
                    self._start()
                self._cond.notify()
        return size > 0

    def _start(self) -> None:
        # (with the lock held) started lazily: on the first event, and again in a forked child
        for i in range(self._concurrency):
            thread = threading.Thread(target=self._run, name=f"lunogram-tracker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self) -> None:
        batcher, cond = self._batcher, self._cond
        while True:
            with cond:
                while not batcher.ready(time.monotonic()):
                    if batcher.stopping and not batcher.queue:
                        return
                    cond.wait(batcher.wait_time(time.monotonic()))
                position, kind, batch = batcher.take()
            sent, failed = self._send(kind, batch)
            with cond:
                batcher.complete(position, sent, failed)
                cond.notify_all()

    def _send(self, kind: Kind, batch: list[dict[str, Any]]) -> tuple[int, int]:
        """(sent, failed) for one batch, splitting a refused one to isolate its bad events."""
        namespace = self._client.users if kind == "user" else self._client.organizations
        try:
            namespace.events.post(batch)
        except Exception as exc:
            halves = _halves(batch, exc)
            if halves is None:
                self._report(exc, batch)
                return 0, len(batch)
            first, second = self._send(kind, halves[0]), self._send(kind, halves[1])
            return first[0] + second[0], first[1] + second[1]
        return len(batch), 0

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every event tracked before this call is sent (or failed); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._batcher.request_flush()
            if self._batcher.settled >= target:
                return True
            if not self._threads:
                self._start()
            self._cond.notify_all()
            while self._batcher.settled < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        """Send what is queued, stop the thread and close the client (if the tracker made it). Later `track`s
        are dropped. False if `timeout` passed first."""
        with self._cond:
            if self._closed and not self._threads:
                return True
            self._closed = True
            self._batcher.stopping = True
            threads = list(self._threads)
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return False
        with self._cond:
            self._threads = []
        if self._owns_client:
            self._client.close()
        _live_trackers.discard(self)
        return True

    def _after_fork(self) -> None:
        # in the child: the parent's thread does not exist here and its queue is the parent's to send
        self._cond = threading.Condition(threading.Lock())
        self._threads = []
        self._batcher.reset()
        if self._owns_client and not self._closed:
            api_key, base_url, max_retries, timeout = self._client_args
            # the parent's connections are not ours to use (or close); start a fresh pool
            self._client = Client(api_key, base_url=base_url, max_retries=max_retries, timeout=timeout)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()


# --- asyncio ----------------------------------------------------------------------------------------------


class AsyncTracker(_TrackerBase):
    """The asyncio tracker: `track()` is a plain (non-blocking) call from the event loop's thread; a task on
    the running loop sends the batches. `await flush()`, and `await shutdown()` (or `async with`) before the
    loop ends: at interpreter exit there is no loop left to send with."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        client: AsyncClient | None = None,
        max_retries: int = 3,
        timeout: float = 30.0,
        flush_at: int = DEFAULT_FLUSH_AT,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_batch: int = MAX_BATCH,
        max_concurrency: int = 2,
        on_error: ErrorCallback | None = None,
    ) -> None:
        super().__init__(on_error, flush_at, flush_interval, max_queue_size, max_batch)
        self._client_args = (api_key, base_url, max_retries, timeout)
        self._owns_client = client is None
        self._client = (
            client
            if client is not None
            else AsyncClient(api_key, base_url=base_url, max_retries=max_retries, timeout=timeout)
        )
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self._concurrency = max_concurrency
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._closed = False
        _live_async_trackers.add(self)

    @property
    def client(self) -> AsyncClient:
        return self._client

    def _enqueue(self, kind: Kind, event: dict[str, Any]) -> bool:
        batcher = self._batcher
        if self._closed:
            batcher.dropped += 1
            return False
        size = batcher.add(kind, event)
        if size and batcher.wants_wake(size):
            self._ensure_task()
            self._wake.set()
        return size > 0

    def _ensure_task(self) -> None:
        if not self._tasks or all(task.done() for task in self._tasks):
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._run(), name=f"lunogram-tracker-{i}") for i in range(self._concurrency)
            ]

    async def _run(self) -> None:
        batcher = self._batcher
        while True:
            while not batcher.ready(time.monotonic()):
                if batcher.stopping and not batcher.queue:
                    return
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):  # (not TimeoutError on Python 3.10)
                    await asyncio.wait_for(self._wake.wait(), batcher.wait_time(time.monotonic()))
            position, kind, batch = batcher.take()
            sent, failed = await self._send(kind, batch)
            batcher.complete(position, sent, failed)
            self._progress.set()
            self._wake.set()  # another task may be waiting for the next batch

    async def _send(self, kind: Kind, batch: list[dict[str, Any]]) -> tuple[int, int]:
        namespace = self._client.users if kind == "user" else self._client.organizations
        try:
            await namespace.events.post(batch)
        except Exception as exc:
            halves = _halves(batch, exc)
            if halves is None:
                self._report(exc, batch)
                return 0, len(batch)
            first, second = await self._send(kind, halves[0]), await self._send(kind, halves[1])
            return first[0] + second[0], first[1] + second[1]
        return len(batch), 0

    async def flush(self) -> None:
        """Wait until every event tracked before this call is sent (or failed)."""
        batcher = self._batcher
        target = batcher.request_flush()
        while batcher.settled < target:
            self._ensure_task()
            self._wake.set()
            self._progress.clear()
            await self._progress.wait()

    async def shutdown(self) -> None:
        """Send what is queued, stop the task and close the client (if the tracker made it)."""
        self._closed = True
        self._batcher.stopping = True
        if self._batcher.queue:
            self._ensure_task()
        self._wake.set()
        if self._tasks:
            await asyncio.gather(*self._tasks)
            self._tasks = []
        if self._owns_client:
            await self._client.close()
        _live_async_trackers.discard(self)

    def _after_fork(self) -> None:
        self._tasks = []
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._batcher.reset()
        if self._owns_client and not self._closed:
            api_key, base_url, max_retries, timeout = self._client_args
            self._client = AsyncClient(api_key, base_url=base_url, max_retries=max_retries, timeout=timeout)

    async def __aenter__(self) -> AsyncTracker:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()
