"""`lunogram`: serve, migrate, and manage projects and API keys."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import click
import psycopg
import typer
from rich.console import Console
from rich.table import Table

from lunogram_server.config import Settings, load_settings
from lunogram_server.console import accounts
from lunogram_server.db.database import database
from lunogram_server.logs import configure_logging
from lunogram_server.projects import service as projects

app = typer.Typer(help="Lunogram: a self-hostable customer-engagement platform.", no_args_is_help=True)
projects_app = typer.Typer(help="Manage projects.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys (stored hashed; a key is shown once).", no_args_is_help=True)
secrets_app = typer.Typer(help="Secrets stored encrypted (provider credentials).", no_args_is_help=True)
users_app = typer.Typer(help="Console users (who signs in to /console) and their roles.", no_args_is_help=True)
app.add_typer(projects_app, name="projects")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(secrets_app, name="secrets")
console = Console()
T = TypeVar("T")

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Embedded PostgreSQL's directory.")]
DatabaseUrl = Annotated[str | None, typer.Option("--database-url", help="Use this PostgreSQL instead.")]


def _settings(data_dir: Path | None = None, database_url: str | None = None, **more: Any) -> Settings:
    settings = load_settings().with_overrides(data_dir=data_dir, database_url=database_url, **more)
    configure_logging(settings.log_level, settings.log_json)
    return settings


@contextmanager
def _one_line_failures(settings: Settings) -> Iterator[None]:
    """A failure becomes one line on stderr and exit status 1; LUNOGRAM_LOG_LEVEL=debug adds the traceback."""
    try:
        yield
    except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
        raise
    except Exception as exc:
        from lunogram_server.server import describe_failure  # imports the whole app: only when it is needed

        typer.echo(f"error: {describe_failure(exc, settings)}", err=True)
        if settings.log_level.lower() == "debug":
            raise
        raise typer.Exit(code=1) from None


def _with_db(settings: Settings, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
    async def run(conninfo: str) -> T:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            return await work(conn)

    with _one_line_failures(settings), database(settings) as conninfo:
        return asyncio.run(run(conninfo))


def _table(*headers: str) -> Table:
    # ids, prefixes and names are what `keys revoke` and `--project` take: wrap them, never cut them short
    table = Table()
    for header in headers:
        table.add_column(header, overflow="fold" if header in ("id", "project", "name", "prefix") else "ellipsis")
    return table


def _print_table(table: Table) -> None:
    # piped or redirected, rich would squeeze tables into 80 columns; print them at their natural width
    (console if console.is_terminal else Console(width=10_000)).print(table)


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=1)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port.")] = None,
    role: Annotated[str | None, typer.Option(help="all, api, worker or scheduler.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="HTTP processes sharing the port.")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Start the server: HTTP API and event workers (by --role) on the embedded or given PostgreSQL.

    A start that fails prints one line on stderr saying why, and exits 1.
    """
    from lunogram_server.server import serve as run_server

    if role is not None and role not in ("all", "api", "worker", "scheduler"):
        raise _fail(f"--role must be all, api, worker or scheduler, not {role!r}")
    settings = _settings(data_dir, database_url, host=host, port=port, role=role, workers=workers)
    with _one_line_failures(settings):
        run_server(settings)


@app.command()
def migrate(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Apply database migrations (serve does this at start too)."""
    settings = _settings(data_dir, database_url)
    with _one_line_failures(settings), database(settings):
        pass
    console.print("database is up to date")


@app.command()
def status(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object instead of a table.")] = False,
) -> None:
    """Event queue and schedule figures: depth, lag, retries, dead letters, totals (the same as /metrics)."""
    from lunogram_server.events import service as events
    from lunogram_server.schedules import service as schedules

    async def read(conn: psycopg.AsyncConnection[Any]) -> tuple[events.QueueStats, schedules.ScheduleStats]:
        return await events.queue_stats(conn), await schedules.stats(conn)

    stats, due = _with_db(_settings(data_dir, database_url), read)
    if json_output:
        typer.echo(json.dumps({**dataclasses.asdict(stats), "schedules": dataclasses.asdict(due)}))
        return
    table = _table("figure", "value")
    rows = [
        ("queue depth", f"{stats.depth:,}"),
        ("oldest event lag", f"{stats.lag_seconds:.2f} s"),
        ("retrying", f"{stats.retrying:,}"),
        ("dead letters", f"{stats.dead:,}"),
        ("accepted (total)", f"{stats.accepted:,}"),
        ("processed (total)", f"{stats.processed:,}"),
        ("delivered to profiles (total)", f"{stats.delivered:,}"),
        ("failed attempts (total)", f"{stats.failed:,}"),
        ("schedules active", f"{due.active:,}"),
        ("schedules due now", f"{due.due:,}"),
        ("schedule lag", f"{due.lag_seconds:.2f} s"),
    ]
    for figure, value in rows:
        table.add_row(figure, value)
    _print_table(table)


@projects_app.command("create")
def projects_create(name: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Create a project with one public and one secret key."""

    async def work(conn: psycopg.AsyncConnection[Any]) -> list[projects.NewKey]:
        if await projects.get_project(conn, name) is not None:
            raise _fail(f"project {name!r} exists already")
        async with conn.transaction():
            project = await projects.create_project(conn, name)
            made = [await projects.create_key(conn, project["id"], kind) for kind in ("public", "secret")]
        return [k for k in made if k is not None]

    for key in _with_db(_settings(data_dir, database_url), work):
        console.print(f"{key.kind} key: {key.key}")
    console.print(f"project {name!r} created; the keys are shown only now")


@projects_app.command("list")
def projects_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    rows = _with_db(_settings(data_dir, database_url), projects.list_projects)
    table = _table("id", "name", "active keys", "created")
    for row in rows:
        table.add_row(str(row["id"]), row["name"], str(row["active_keys"]), row["created_at"].isoformat())
    _print_table(table)


@keys_app.command("create")
def keys_create(
    project: Annotated[str, typer.Option(help="Project name.")] = "default",
    public: Annotated[bool, typer.Option("--public/--secret", help="Public (browser) or secret key.")] = False,
    allow: Annotated[
        list[str] | None, typer.Option(help="Widen a public key: broadcast, delete or read. Repeatable.")
    ] = None,
    name: Annotated[str, typer.Option(help="A label for listings.")] = "",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key; it is printed once and stored hashed."""
    kind: projects.KeyKind = "public" if public else "secret"

    async def work(conn: psycopg.AsyncConnection[Any]) -> projects.NewKey | None:
        found = await projects.get_project(conn, project)
        if found is None:
            raise _fail(f"no project named {project!r}; see `lunogram projects list`")
        try:
            return await projects.create_key(conn, found["id"], kind, name=name, allow=allow or [])
        except projects.InvalidKeyError as exc:
            raise _fail(str(exc)) from None

    new = _with_db(_settings(data_dir, database_url), work)
    assert new is not None
    console.print(new.key, soft_wrap=True, highlight=False)


@keys_app.command("list")
def keys_list(
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    async def work(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
        project_id = None
        if project is not None:
            found = await projects.get_project(conn, project)
            if found is None:
                raise _fail(f"no project named {project!r}")
            project_id = found["id"]
        return await projects.list_keys(conn, project_id)

    table = _table("id", "project", "kind", "prefix", "allow", "name", "created", "revoked")
    for row in _with_db(_settings(data_dir, database_url), work):
        revoked = row["revoked_at"].isoformat() if row["revoked_at"] else ""
        table.add_row(
            str(row["id"]),
            row["project"],
            row["kind"],
            row["key_prefix"],
            ",".join(row["allow"]),
            row["name"],
            row["created_at"].isoformat(),
            revoked,
        )
    _print_table(table)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's id, its listed prefix, or the key itself.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key; servers stop accepting it within LUNOGRAM_KEY_CACHE_SECONDS."""

    async def work(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
        return await projects.revoke_key(conn, key)

    revoked = _with_db(_settings(data_dir, database_url), work)
    if not revoked:
        raise _fail(f"no active key matches {key!r}")
    if len(revoked) > 1:
        console.print(f"[yellow]note:[/yellow] {len(revoked)} keys matched and were revoked")
    for row in revoked:
        console.print(f"revoked {row['id']} ({row['key_prefix']}...)")


@secrets_app.command("reseal")
def secrets_reseal(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Re-encrypt every stored secret with LUNOGRAM_ENCRYPTION_KEY (the last step of a key rotation: run it
    once every server has the new key, then drop the old one from LUNOGRAM_ENCRYPTION_KEYS_OLD)."""
    from lunogram_server.messaging import crypto
    from lunogram_server.messaging.providers_service import reseal_all

    settings = _settings(data_dir, database_url)
    try:
        keyring = crypto.keyring(settings)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if keyring is None:
        raise _fail(f"no encryption key: set {crypto.KEY_ENV}")

    async def work(conn: psycopg.AsyncConnection[Any]) -> int:
        try:
            return await reseal_all(conn, keyring)
        except crypto.Undecryptable as exc:
            raise _fail(f"a stored secret cannot be decrypted: {exc}") from None

    count = _with_db(settings, work)
    console.print(f"re-encrypted {count} provider secret(s) with key {keyring.current_id}")


PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from standard input instead of printing a one-time link."),
]


def _read_password(from_stdin: bool) -> str | None:
    if not from_stdin:
        return None
    import sys

    password = sys.stdin.readline().rstrip("\r\n")
    try:
        accounts.check_password(password)
    except accounts.AccountError as exc:
        raise _fail(str(exc)) from None
    return password


def _link(settings: Settings, token: str) -> str:
    return f"{settings.public_url.rstrip('/')}/console/link/{token}"


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Argument(help="What the user signs in with.")],
    name: Annotated[str, typer.Option(help="Their name, for listings.")] = "",
    project: Annotated[str | None, typer.Option(help="Give a role in this project (by name).")] = None,
    role: Annotated[str, typer.Option(help="owner, admin, editor or viewer (with --project).")] = "viewer",
    superuser: Annotated[bool, typer.Option(help="Owner of every project; may create projects.")] = False,
    password_stdin: PasswordStdin = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a console user. Without --password-stdin, prints a one-time link that sets the password."""
    settings = _settings(data_dir, database_url)
    password = _read_password(password_stdin)

    async def work(conn: psycopg.AsyncConnection[Any]) -> str | None:
        project_id = None
        if project is not None:
            found = await projects.get_project(conn, project)
            if found is None:
                raise _fail(f"no project named {project!r}; see `lunogram projects list`")
            project_id = found["id"]
        try:
            accounts.check_role(role)
            password_hash = await accounts.hash_password(password) if password is not None else None
            async with conn.transaction():
                user = await accounts.create_user(
                    conn, email, name=name, password_hash=password_hash, superuser=superuser
                )
                if project_id is not None:
                    await accounts.grant(conn, user["id"], project_id, role)
                if password is None:
                    return await accounts.create_link(conn, "invite", settings.console.link_hours, user["id"])
        except accounts.AccountError as exc:
            raise _fail(str(exc)) from None
        return None

    token = _with_db(settings, work)
    console.print(f"console user {email.strip().lower()} created", highlight=False)
    if token is not None:
        hours = f"{settings.console.link_hours:g}"
        console.print(f"set the password (opens once, within {hours} h): {_link(settings, token)}", soft_wrap=True)


@users_app.command("reset")
def users_reset(
    email: Annotated[str, typer.Argument(help="The user's e-mail.")],
    password_stdin: PasswordStdin = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Reset a console user's password (ends their sessions). Without --password-stdin, prints a one-time link."""
    settings = _settings(data_dir, database_url)
    password = _read_password(password_stdin)

    async def work(conn: psycopg.AsyncConnection[Any]) -> str | None:
        user = await accounts.user_by_email(conn, email)
        if user is None:
            raise _fail(f"no console user {email!r}; see `lunogram users list`")
        async with conn.transaction():
            await accounts.end_sessions_of(conn, user["id"])
            if password is not None:
                await accounts.set_password(conn, user["id"], await accounts.hash_password(password))
                return None
            return await accounts.create_link(conn, "reset", settings.console.link_hours, user["id"])

    token = _with_db(settings, work)
    if token is None:
        console.print("password changed; the user's sessions are ended")
    else:
        hours = f"{settings.console.link_hours:g}"
        console.print(
            f"sessions ended; new password (opens once, within {hours} h): {_link(settings, token)}", soft_wrap=True
        )


@users_app.command("grant")
def users_grant(
    email: Annotated[str, typer.Argument(help="The user's e-mail.")],
    project: Annotated[str, typer.Option(help="Project name.")],
    role: Annotated[str, typer.Option(help="owner, admin, editor, viewer; `none` removes the role.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Give a console user a role in a project (or remove it with --role none)."""

    async def work(conn: psycopg.AsyncConnection[Any]) -> None:
        user = await accounts.user_by_email(conn, email)
        if user is None:
            raise _fail(f"no console user {email!r}; see `lunogram users list`")
        found = await projects.get_project(conn, project)
        if found is None:
            raise _fail(f"no project named {project!r}; see `lunogram projects list`")
        if role == "none":
            await accounts.revoke(conn, user["id"], found["id"])
            return
        try:
            await accounts.grant(conn, user["id"], found["id"], role)
        except accounts.AccountError as exc:
            raise _fail(str(exc)) from None

    _with_db(_settings(data_dir, database_url), work)
    console.print(f"{email.strip().lower()}: {role} in {project}", highlight=False)


@users_app.command("list")
def users_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Console users with their roles."""

    table = _table("email", "name", "superuser", "disabled", "password set", "roles")
    for email, name, superuser, disabled, has_password, roles in _with_db(
        _settings(data_dir, database_url), accounts.list_users
    ):
        table.add_row(
            email, name, "yes" if superuser else "", "yes" if disabled else "", "yes" if has_password else "no", roles
        )
    _print_table(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
