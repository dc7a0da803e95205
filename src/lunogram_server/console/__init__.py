"""The web console under /console: accounts and access (accounts.py, access.py), the event figures it
shows (stats.py), search (search.py) and its pages (web/), served by `lunogram serve` itself.

This package's import is light (http/auth.py imports the accounts): the pages are imported by app.py."""

from __future__ import annotations

from lunogram_server.console import accounts, stats
from lunogram_server.maintenance import periodically
from lunogram_server.reactions import LoopContext, Reactions


async def _housekeeping(conn: object) -> None:
    await accounts.purge(conn)  # type: ignore[arg-type]
    await stats.purge(conn)  # type: ignore[arg-type]


async def console_housekeeping_loop(ctx: LoopContext) -> None:
    """Drop sessions, links and login failures nobody can use, and minute figures older than two days."""
    await periodically(ctx.pool, ctx.stop, 600.0, _housekeeping, "console housekeeping")


def register(reactions: Reactions) -> None:
    reactions.on_events(stats.EventStatsSubscriber())
    reactions.loop("console housekeeping", ("all", "scheduler"), console_housekeeping_loop)
