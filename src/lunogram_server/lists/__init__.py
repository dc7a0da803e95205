"""Lists: static lists (added by hand or CSV import) and rule lists kept current as events and profile
changes are applied."""

from lunogram_server.lists.membership import ListsSubscriber
from lunogram_server.lists.recompute import lists_loop
from lunogram_server.reactions import USER_MERGED, USERS_DELETED, Reactions


def register(reactions: Reactions) -> None:
    reactions.on_events(ListsSubscriber())
    reactions.on(USER_MERGED, "lunogram_lists_on_user_merged")
    reactions.on(USERS_DELETED, "lunogram_lists_on_users_deleted")
    # its own connection, and a second one for progress reports while a recompute's transaction runs
    reactions.loop("lists", ("all", "scheduler"), lists_loop, connections=lambda _: 2)
