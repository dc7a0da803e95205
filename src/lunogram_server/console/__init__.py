"""The web console under /console: accounts and access (accounts.py, access.py), the event figures it
shows (stats.py), search (search.py) and its pages (web/), served by `lunogram serve` itself.

This package's import is light: the CLI and http/auth.py import the accounts (a CLI command starts in a few
hundred milliseconds), app.py the pages, and the server the event figures when it registers them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lunogram_server.console import accounts

if TYPE_CHECKING:
    from lunogram_server.reactions import LoopContext, Reactions


async def _housekeeping(conn: object) -> None:
    from lunogram_server.console import stats

    await accounts.purge(conn)  # type: ignore[arg-type]
    await stats.purge(conn)  # type: ignore[arg-type]


async def console_housekeeping_loop(ctx: LoopContext) -> None:
    """Drop sessions, links and login failures nobody can use, and minute figures older than two days."""
    from lunogram_server.maintenance import periodically

    await periodically(ctx.pool, ctx.stop, 600.0, _housekeeping, "console housekeeping")


def register(reactions: Reactions) -> None:
    from lunogram_server.console import stats

    reactions.on_events(stats.EventStatsSubscriber())
    reactions.loop("console housekeeping", ("all", "scheduler"), console_housekeeping_loop)
