"""The event pipeline: durable ingest into an inbox, workers that apply events to profile histories, match
broadcasts fanned out in bounded steps, and the subscriber interface later features plug into."""

from lunogram_server.events.worker import CHANNEL, run_workers
from lunogram_server.reactions import ORGANIZATION_MERGED, USER_MERGED, Reactions


def register(reactions: Reactions) -> None:
    reactions.on(USER_MERGED, "lunogram_events_on_user_merged")
    reactions.on(ORGANIZATION_MERGED, "lunogram_events_on_organization_merged")
    reactions.loop(
        "events",
        ("all", "worker"),
        run_workers,
        copies=lambda settings: min(1, settings.events.worker_tasks),
        connections=lambda settings: settings.events.worker_tasks,
        wakes_on=(CHANNEL,),
    )
