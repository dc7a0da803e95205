"""Organizations and their member users."""

from lunogram_server.reactions import USER_MERGED, Reactions


def register(reactions: Reactions) -> None:
    reactions.on(USER_MERGED, "lunogram_organizations_on_user_merged")
