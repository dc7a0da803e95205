"""Operators' event plugins: LUNOGRAM_EVENT_SUBSCRIBERS=`module:name,...` (a class or factory called
without arguments, or an object with `async on_events(conn, events)`), added to the registry's "events
applied" subscribers (reactions.py) after the built-in ones."""

from __future__ import annotations

import importlib

from lunogram_server.reactions import EventSubscriber


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
