"""How one domain reacts to another's change: one typed registry, filled in one place (domains.py).

A domain subscribes to a *topic*; its handler is called inside the transaction that made the change, so
whatever it writes commits (or rolls back) with that change, exactly once. Changes happen in two places,
and a topic's handlers live where its changes happen:

* **Python topics.** Events applied by the event workers (events/worker.py): a handler is an object with
  `async on_events(conn, events)`, called with the batch just written to history. If it raises, the batch
  is undone and its events are applied again one at a time, each in a savepoint, so only the event that
  fails is held back (and retried, then parked as a dead letter).
* **SQL topics.** Merges, deletes, list entries and exits, and schedules written, fired or cancelled happen
  inside SQL statements: a merge in the middle of an upsert's identity resolution (one statement, one round
  trip: db/coalesce.py), a list's members computed by one INSERT ... SELECT. A handler is a SQL function
  with the topic's parameters; the topic's *dispatcher*, a SQL function installed at every migrate from
  this registry (`install`), calls each handler in registration order. Whatever makes such a change calls
  the dispatcher in the same statement or transaction: a reaction costs no extra round trip, and no domain
  edits another domain's tables.

Background loops register here too, each with the roles (`lunogram serve --role`) that run it.

Every name is written out in full (topics below, handlers in each domain's `register`), so a grep for a
dispatcher or a handler finds both its definition and where it is wired.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from psycopg import AsyncConnection, Connection, sql

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from lunogram_server.config import Role, Settings
    from lunogram_server.events.models import ProcessedEvent
    from lunogram_server.wakeups import Wakeups


@runtime_checkable
class EventSubscriber(Protocol):
    """The Python topic "events applied": called in the event worker's transaction with the events just
    written to history (one per target: a broadcast reaches each matching profile once)."""

    async def on_events(self, conn: AsyncConnection[Any], events: Sequence[ProcessedEvent]) -> None: ...


@dataclass(frozen=True)
class SqlTopic:
    """A change made inside SQL. `dispatcher` is the function that makes the change calls; each handler is
    a function of the same name-less signature `parameters`, returning anything (the result is ignored)."""

    dispatcher: str
    parameters: tuple[tuple[str, str], ...]  # (name, SQL type), in call order
    about: str

    @property
    def signature(self) -> str:
        return ",".join(kind for _, kind in self.parameters)


USER_MERGED = SqlTopic(
    "lunogram_on_user_merged",
    (("p_project", "uuid"), ("p_survivor", "uuid"), ("p_merged", "uuid")),
    "a user was merged into another: called once per merged user, after its identifiers moved to the "
    "survivor and before its row is deleted (move what hangs on it now, or it goes with the row)",
)
ORGANIZATION_MERGED = SqlTopic(
    "lunogram_on_organization_merged",
    (("p_project", "uuid"), ("p_survivor", "uuid"), ("p_merged", "uuid")),
    "an organization was merged into another (as USER_MERGED)",
)
USERS_DELETED = SqlTopic(
    "lunogram_on_users_deleted",
    (("p_project", "uuid"), ("p_users", "uuid[]")),
    "users are about to be deleted (the rows still exist; what references them is deleted with them)",
)
ORGANIZATIONS_DELETED = SqlTopic(
    "lunogram_on_organizations_deleted",
    (("p_project", "uuid"), ("p_organizations", "uuid[]")),
    "organizations are about to be deleted (as USERS_DELETED)",
)
LIST_CHANGES = SqlTopic(
    "lunogram_on_list_changes",
    (
        ("p_project", "uuid"),
        ("p_list", "uuid"),
        ("p_users", "uuid[]"),
        ("p_changes", "text[]"),
        ("p_at", "timestamptz"),
    ),
    "users entered or exited a list (p_changes[i] is 'entered' or 'exited' for p_users[i]): rule "
    "evaluation, static adds and removals, CSV imports, memberships moved by a merge, removed by a delete",
)
SCHEDULES_WRITTEN = SqlTopic(
    "lunogram_on_schedules_written",
    (("p_project", "uuid"), ("p_schedules", "uuid[]")),
    "schedules were created or replaced by an upsert (the rows hold the new values)",
)
SCHEDULES_FIRED = SqlTopic(
    "lunogram_on_schedules_fired",
    (("p_schedules", "uuid[]"), ("p_at", "timestamptz")),
    "schedules fired one occurrence each into the event pipeline and moved on to their next one",
)
SCHEDULES_CANCELLED = SqlTopic(
    "lunogram_on_schedules_cancelled",
    (("p_project", "uuid"), ("p_schedules", "uuid[]")),
    "schedules are about to be deleted: by the Client API's delete, a merge's name clash (the merged "
    "profile's schedule loses), or their profile's delete (the rows still exist)",
)
SQL_TOPICS = (
    USER_MERGED,
    ORGANIZATION_MERGED,
    USERS_DELETED,
    ORGANIZATIONS_DELETED,
    LIST_CHANGES,
    SCHEDULES_WRITTEN,
    SCHEDULES_FIRED,
    SCHEDULES_CANCELLED,
)


@dataclass(frozen=True)
class LoopContext:
    """What a background loop gets: the process's pool and settings, and `stop`, set at shutdown (finish
    the batch in hand and return)."""

    pool: AsyncConnectionPool[Any]
    settings: Settings
    reactions: Reactions
    stop: asyncio.Event
    name: str  # host:pid:<loop name>:<copy>, for logs and leases
    wakeups: Wakeups  # the process's one LISTEN connection: `wakeups.waiter(channel)` for a declared channel


LoopFactory = Callable[[LoopContext], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Loop:
    name: str
    roles: frozenset[Role]
    start: LoopFactory
    copies: Callable[[Settings], int]  # how many of it a process runs (0: none)
    connections: Callable[[Settings], int]  # pool connections one copy holds at most at once
    wakes_on: tuple[str, ...]  # NOTIFY channels that wake it (the process's listener LISTENs on them)


@dataclass
class Reactions:
    """The registry. Domains add to it in `register(reactions)`; domains.py calls those in one order."""

    event_subscribers: list[EventSubscriber] = field(default_factory=list)
    sql_handlers: dict[SqlTopic, list[str]] = field(default_factory=lambda: {topic: [] for topic in SQL_TOPICS})
    loops: list[Loop] = field(default_factory=list)

    def on_events(self, subscriber: EventSubscriber) -> None:
        self.event_subscribers.append(subscriber)

    def on(self, topic: SqlTopic, handler: str) -> None:
        """`handler`: the SQL function (in the subscribing domain's sql/functions.sql) called for `topic`."""
        if handler in self.sql_handlers[topic]:
            raise ValueError(f"{handler} is registered for {topic.dispatcher} twice")
        self.sql_handlers[topic].append(handler)

    def loop(
        self,
        name: str,
        roles: Sequence[Role],
        start: LoopFactory,
        *,
        copies: Callable[[Settings], int] = lambda _: 1,
        connections: Callable[[Settings], int] = lambda _: 1,
        wakes_on: Sequence[str] = (),
    ) -> None:
        self.loops.append(Loop(name, frozenset(roles), start, copies, connections, tuple(wakes_on)))

    def loops_for(self, settings: Settings) -> list[tuple[Loop, int]]:
        """The loops a process with these settings runs, with their number of copies."""
        chosen = []
        for loop in self.loops:
            if settings.role in loop.roles:
                count = loop.copies(settings)
                if count > 0:
                    chosen.append((loop, count))
        return chosen

    def connections_for(self, settings: Settings) -> int:
        """Pool connections the process's loops hold at most at once."""
        return sum(loop.connections(settings) * count for loop, count in self.loops_for(settings))

    # -- SQL dispatchers -------------------------------------------------------------------------------

    def dispatchers(self) -> list[sql.Composed]:
        """CREATE OR REPLACE of each topic's dispatcher: one PERFORM per handler, in registration order."""
        statements = []
        for topic, handlers in self.sql_handlers.items():
            arguments = sql.SQL(", ").join(sql.Identifier(name) for name, _ in topic.parameters)
            calls = sql.SQL("").join(
                sql.SQL("    PERFORM {}({});\n").format(sql.Identifier(handler), arguments) for handler in handlers
            )
            parameters = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in topic.parameters
            )
            statements.append(
                sql.SQL(
                    "CREATE OR REPLACE FUNCTION {}({}) RETURNS void LANGUAGE plpgsql AS $fn$\n"
                    "-- {}\n-- Generated at migrate from the registry (reactions.py); handlers in order.\n"
                    "BEGIN\n{}    RETURN;\nEND\n$fn$"
                ).format(
                    sql.Identifier(topic.dispatcher),
                    parameters,
                    sql.SQL(topic.about.replace("\n", " ")),
                    calls,
                )
            )
        return statements

    def install_dispatchers(self, conn: Connection[Any]) -> None:
        """(Re)install the dispatchers. Runs in migrate's transaction before the domains' functions: those
        written in LANGUAGE sql are checked at creation and may call a dispatcher; a dispatcher's own calls
        (plpgsql) are bound when it first runs."""
        for statement in self.dispatchers():
            conn.execute(statement)

    def check_handlers(self, conn: Connection[Any]) -> None:
        """Every handler exists with its topic's signature: a missing or mistyped one fails migrate."""
        for topic, handlers in self.sql_handlers.items():
            for handler in handlers:
                found = conn.execute("SELECT to_regprocedure(%s)", (f"{handler}({topic.signature})",)).fetchone()
                if found is None or found[0] is None:
                    raise RuntimeError(
                        f"{handler}({topic.signature}), registered for {topic.dispatcher}, does not exist"
                    )
