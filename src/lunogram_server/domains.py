"""The one place where domains are wired together: each domain's `register(reactions)` adds its handlers
and background loops to the registry (reactions.py), in the order below, which is the order handlers run.

Events first (history moves before anything reads it), then organizations, schedules and lists, then the
domains that react to all of them. Operators' event plugins (LUNOGRAM_EVENT_SUBSCRIBERS) come last.
"""

from __future__ import annotations

from lunogram_server import console, events, journeys, lists, maintenance, messaging, organizations, schedules
from lunogram_server.config import Settings
from lunogram_server.events.subscribers import load_subscribers
from lunogram_server.messaging import devices, inbox
from lunogram_server.reactions import Reactions

DOMAINS = (events, organizations, schedules, lists, journeys, devices, inbox, messaging, maintenance, console)


def build_reactions(settings: Settings | None = None) -> Reactions:
    """The registry with every domain registered; with settings, the operator's event plugins too."""
    reactions = Reactions()
    for domain in DOMAINS:
        domain.register(reactions)
    if settings is not None:
        for subscriber in load_subscribers(settings.events.subscribers):
            reactions.on_events(subscriber)
    return reactions
