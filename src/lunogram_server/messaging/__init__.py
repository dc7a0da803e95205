"""Messaging: channels and their providers, templates, the outbox and its senders, subscriptions and tracking.

This package's import is light: a render process (render_pool.py) imports the templates and nothing of the
senders, campaigns or journeys; the server imports those when it registers them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lunogram_server.reactions import Reactions


def register(reactions: Reactions) -> None:
    from lunogram_server.messaging.campaigns import campaign_loop
    from lunogram_server.messaging.loops import CHANNEL, sender_loop
    from lunogram_server.reactions import USER_MERGED, USERS_DELETED

    reactions.on(USER_MERGED, "lunogram_messaging_on_user_merged")
    reactions.on(USERS_DELETED, "lunogram_messaging_on_users_deleted")
    reactions.loop(
        "senders",
        ("all", "worker"),
        sender_loop,
        copies=lambda settings: min(1, settings.messaging.sender_tasks),
        connections=lambda settings: settings.messaging.sender_tasks * 2,  # a batch, and its answers
        wakes_on=(CHANNEL,),
    )
    reactions.loop("campaigns", ("all", "worker"), campaign_loop)
