"""The in-process interface later features (lists, journeys) plug into.

A subscriber is called inside the worker's transaction with the events just applied, so whatever it
writes commits together with the history, exactly once; if it raises, the transaction is undone and the
events are retried one by one, so only the event that fails is held back (see worker.py).
Operators add subscribers with LUNOGRAM_EVENT_SUBSCRIBERS=`module:name,...` (a class or factory called
without arguments, or an object with `on_events`).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from psycopg import AsyncConnection

from lunogram_server.events.models import ProcessedEvent


@runtime_checkable
class EventSubscriber(Protocol):
    async def on_events(self, conn: AsyncConnection[Any], events: Sequence[ProcessedEvent]) -> None: ...


def load_subscribers(spec: str) -> list[EventSubscriber]:
    """`module:name` entries, comma separated; a bad entry fails startup with the entry named."""
    found: list[EventSubscriber] = []
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        module_name, _, attribute = entry.partition(":")
        if not attribute:
            raise ValueError(f"LUNOGRAM_EVENT_SUBSCRIBERS: {entry!r} is not `module:name`")
        try:
            target = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"LUNOGRAM_EVENT_SUBSCRIBERS: cannot load {entry!r}: {exc}") from exc
        is_instance = isinstance(target, EventSubscriber) and not isinstance(target, type)
        subscriber = target if is_instance or not callable(target) else target()
        if not isinstance(subscriber, EventSubscriber):
            raise ValueError(f"LUNOGRAM_EVENT_SUBSCRIBERS: {entry!r} has no `async on_events(conn, events)`")
        found.append(subscriber)
    return found
