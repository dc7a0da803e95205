"""Scheduled resources: one-time and recurring schedules per user or organization, fired into the event
pipeline as `scheduled.<name>` events."""

from lunogram_server.reactions import (
    ORGANIZATION_MERGED,
    ORGANIZATIONS_DELETED,
    USER_MERGED,
    USERS_DELETED,
    Reactions,
)
from lunogram_server.schedules.scheduler import schedulers


def register(reactions: Reactions) -> None:
    reactions.on(USER_MERGED, "lunogram_schedules_on_user_merged")
    reactions.on(ORGANIZATION_MERGED, "lunogram_schedules_on_organization_merged")
    reactions.on(USERS_DELETED, "lunogram_schedules_on_users_deleted")
    reactions.on(ORGANIZATIONS_DELETED, "lunogram_schedules_on_organizations_deleted")
    reactions.loop(
        "scheduler", ("all", "scheduler"), schedulers, copies=lambda settings: settings.schedules.scheduler_tasks
    )
