"""Journeys: versioned graphs of steps that events, list changes, schedules and the API enter users into,
moved along by the runners (runner.py, engine.py)."""

from lunogram_server.journeys.runner import CHANNEL, journeys_loop
from lunogram_server.journeys.subscriber import JourneysSubscriber
from lunogram_server.reactions import (
    LIST_CHANGES,
    SCHEDULES_CANCELLED,
    SCHEDULES_FIRED,
    SCHEDULES_WRITTEN,
    USER_MERGED,
    USERS_DELETED,
    Reactions,
)


def register(reactions: Reactions) -> None:
    reactions.on_events(JourneysSubscriber())
    reactions.on(LIST_CHANGES, "lunogram_journeys_on_list_changes")
    reactions.on(SCHEDULES_WRITTEN, "lunogram_journeys_on_schedules_written")
    reactions.on(SCHEDULES_FIRED, "lunogram_journeys_on_schedules_fired")
    reactions.on(SCHEDULES_CANCELLED, "lunogram_journeys_on_schedules_cancelled")
    reactions.on(USER_MERGED, "lunogram_journeys_on_user_merged")
    reactions.on(USERS_DELETED, "lunogram_journeys_on_users_deleted")
    reactions.loop(
        "journeys",
        ("all", "worker"),
        journeys_loop,
        copies=lambda settings: min(1, settings.journeys.runner_tasks),
        connections=lambda settings: settings.journeys.runner_tasks * 2,  # a batch, and a webhook's outcome
        wakes_on=(CHANNEL,),
    )
