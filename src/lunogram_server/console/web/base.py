"""What every console page shares: the templates, the session and role checks, CSRF on every form, flash
notices, the security headers (a Content-Security-Policy of `default-src 'self'`: the console loads nothing
from elsewhere and runs no inline script)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import Depends, Request
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from psycopg import AsyncConnection
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lunogram_server.console import accounts
from lunogram_server.console.access import CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, csrf_matches
from lunogram_server.console.accounts import RANK, Session
from lunogram_server.http.body import read_body

FLASH_COOKIE = "lunogram_flash"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
MAX_FORM_FIELDS = 2000


class ConsoleHeaders:
    """ASGI middleware: the security headers on every /console response (a response that sets its own
    Content-Security-Policy, the template preview frame, keeps it), and no caching of pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/console"):
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/console/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in _HEADERS if name not in present]
                if not static and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


# -- templates ------------------------------------------------------------------------------------------------


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str).decode()


def _when(value: datetime | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
    else:
        moment = value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _number(value: int | float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def _environment() -> Environment:
    folder = resources.files("lunogram_server.console").joinpath("templates")
    env = Environment(
        loader=FileSystemLoader(str(folder)),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = _json
    env.filters["when"] = _when
    env.filters["number"] = _number
    env.filters["urlquote"] = lambda v: urllib.parse.quote(str(v), safe="")
    env.globals["may"] = lambda session, role: session is not None and session.may(role)
    env.globals["json_attr"] = lambda value: Markup.escape(json.dumps(value))
    return env


TEMPLATES = _environment()


def render(request: Request, name: str, status: int = 200, /, **context: Any) -> HTMLResponse:
    session: Session | None = request.scope.get("lunogram.console")
    flash = _read_flash(request)
    context.setdefault("projects", [])
    html = TEMPLATES.get_template(name).render(
        request=request, session=session, flash=flash, path=request.url.path, **context
    )
    response = HTMLResponse(html, status_code=status)
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/console")
    return response


async def page(request: Request, name: str, status: int = 200, /, **context: Any) -> HTMLResponse:
    """A full page: `render` plus the projects the signed-in user may switch to (the header's menu)."""
    session: Session | None = request.scope.get("lunogram.console")
    projects: list[dict[str, Any]] = []
    if session is not None:
        async with request.app.state.pool.connection() as conn:
            projects = await accounts.projects_of(conn, session.user_id)
    context["projects"] = projects
    return render(request, name, status, **context)


def partial(name: str, /, **context: Any) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(name).render(**context))


# -- flash notices ----------------------------------------------------------------------------------------------


def _read_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        value = json.loads(urllib.parse.unquote(raw))
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return None
    return {"kind": "error" if value.get("kind") == "error" else "ok", "text": value["text"][:1000]}


def redirect(request: Request, to: str, notice: str | None = None, *, error: bool = False) -> Response:
    """303 to `to` (a console path), with a notice shown once on the page it lands on."""
    if not to.startswith("/console"):
        to = "/console"
    response: Response
    if request.headers.get("hx-request"):
        response = Response(status_code=204, headers={"HX-Redirect": to})
    else:
        response = RedirectResponse(to, status_code=303)
    if notice:
        value = urllib.parse.quote(json.dumps({"kind": "error" if error else "ok", "text": notice[:1000]}))
        response.set_cookie(
            FLASH_COOKIE, value, max_age=60, path="/console", httponly=True, samesite="lax", secure=is_https(request)
        )
    return response


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


# -- sessions, roles, CSRF ----------------------------------------------------------------------------------------


class LoginRequired(Exception):
    """No live session: to the login page (an htmx request is told to go there)."""


class Forbidden(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)


async def current_session(request: Request) -> Session:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise LoginRequired()
    async with request.app.state.pool.connection() as conn:
        found = await accounts.session(conn, request.app.state.settings.console, token)
    if found is None:
        raise LoginRequired()
    request.scope["lunogram.console"] = found
    return found


Signed = Annotated[Session, Depends(current_session)]


def needs(session: Session, role: str, what: str = "this") -> None:
    if not session.may(role):
        raise Forbidden(f"{what} needs the {role} role or above in {session.project_name or 'a project'}")


def project_of(session: Session) -> UUID:
    if session.project_id is None or session.role is None:
        raise Forbidden("choose a project you have a role in (the menu at the top)")
    return session.project_id


async def form_of(request: Request) -> FormData:
    """The request's form (urlencoded or multipart), its size capped at LUNOGRAM_MAX_BODY_BYTES."""
    cached: FormData | None = request.scope.get("lunogram.form")
    if cached is not None:
        return cached
    limit = request.app.state.settings.limits.max_body_bytes
    request._body = await read_body(request, limit)
    form = await request.form(max_files=2, max_fields=MAX_FORM_FIELDS, max_part_size=limit)
    request.scope["lunogram.form"] = form
    return form


async def checked_form(request: Request, session: Session) -> FormData:
    """The form of a state-changing request, after its CSRF token (field or header) is checked."""
    form = await form_of(request)
    given = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
    if not isinstance(given, str) or not csrf_matches(session.csrf_token, given):
        raise Forbidden("the form's CSRF token is missing or not this session's: reload the page and try again")
    return form


async def editor_form(request: Request, session: Session, role: str = "editor", what: str = "this") -> FormData:
    form = await checked_form(request, session)
    needs(session, role, what)
    return form


def field(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else default


def raw_field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def parse_uuid(value: str, what: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise Forbidden(f"{what}: not a valid id") from None


async def with_conn(request: Request, work: Callable[[AsyncConnection[Any]], Awaitable[Any]]) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await work(conn)


def role_rank(role: str | None) -> int:
    return RANK.get(role or "", -1)
