"""Signing in and out, the first owner's setup link, invitation and reset links, switching project."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from lunogram_server.console import accounts
from lunogram_server.console.access import SESSION_COOKIE, csrf_matches
from lunogram_server.console.web.base import (
    Signed,
    checked_form,
    field,
    form_of,
    is_https,
    parse_uuid,
    raw_field,
    redirect,
    render,
)
from lunogram_server.http.auth import client_address

router = APIRouter(prefix="/console", include_in_schema=False)
LOGIN_CSRF_COOKIE = "lunogram_login_csrf"  # double-submit token of the forms used before there is a session


def _safe_next(value: str | None) -> str:
    """Only a console path: never another site (`//evil`, `/\\evil`), never the API."""
    if value and value.startswith("/console") and not value.startswith(("//", "/\\")) and "\\" not in value:
        return value
    return "/console"


def _with_login_token(request: Request, template: str, status: int = 200, **context: object) -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    response = render(request, template, status, login_token=token, **context)
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )
    return response


def _login_token_ok(request: Request, given: str) -> bool:
    return csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE, ""), given)


def _start_session(request: Request, new: accounts.NewSession, to: str) -> Response:
    response = RedirectResponse(to, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        new.token,
        max_age=int(request.app.state.settings.console.session_max_hours * 3600),
        path="/",
        httponly=True,
        samesite="lax",
        secure=is_https(request),
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/console")
    return response


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    return _with_login_token(request, "login.html", next=_safe_next(next), error=None, email="")


@router.post("/login")
async def login(request: Request) -> Response:
    form = await form_of(request)
    email, password = field(form, "email")[:400], raw_field(form, "password")
    login_token = raw_field(form, "login_token")
    to = _safe_next(field(form, "next"))
    if not _login_token_ok(request, login_token):
        return _with_login_token(
            request, "login.html", 403, next=to, email=email, error="The form expired: please sign in again."
        )
    settings = request.app.state.settings.console
    address = client_address(request.scope.get("client"))
    async with request.app.state.pool.connection() as conn:
        limited = await accounts.login_limited(conn, settings, address, email)
        if limited is not None:
            response = _with_login_token(
                request,
                "login.html",
                429,
                next=to,
                email=email,
                error=f"Too many failed sign-ins ({limited.subject.split(':', 1)[0]}); try again in "
                f"{limited.retry_after} s.",
            )
            response.headers["Retry-After"] = str(limited.retry_after)
            return response
        user = await accounts.user_by_email(conn, email)
        stored = user["password_hash"] if user is not None and user["disabled_at"] is None else None
        if not await accounts.verify_password(stored, password):
            await accounts.record_failure(conn, address, email)
            return _with_login_token(
                request, "login.html", 401, next=to, email=email, error="Wrong e-mail or password."
            )
        assert user is not None
        await accounts.clear_account_failures(conn, email)
        new = await accounts.create_session(conn, settings, user["id"], address, request.headers.get("user-agent", ""))
    return _start_session(request, new, to)


@router.post("/logout")
async def logout(request: Request, session: Signed) -> Response:
    await checked_form(request, session)
    async with request.app.state.pool.connection() as conn:
        await accounts.end_session(conn, session.id)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/project")
async def switch_project(request: Request, session: Signed) -> Response:
    form = await checked_form(request, session)
    project_id = parse_uuid(field(form, "project_id"), "project_id")
    async with request.app.state.pool.connection() as conn:
        switched = await accounts.switch_project(conn, session, project_id)
    if not switched:
        return redirect(request, "/console", "You have no role in that project.", error=True)
    return redirect(request, _safe_next(field(form, "next")) if field(form, "next") else "/console")


# -- one-time links --------------------------------------------------------------------------------------------


@router.get("/setup/{token}")
async def setup_page(request: Request, token: str) -> Response:
    async with request.app.state.pool.connection() as conn:
        found = await accounts.link(conn, token)
    if found is None or found["purpose"] != "setup":
        return render(request, "link_gone.html", 410)
    return _with_login_token(request, "setup.html", token=token, error=None, email="", name="")


@router.post("/setup/{token}")
async def setup(request: Request, token: str) -> Response:
    form = await form_of(request)
    email, name = field(form, "email")[:400], field(form, "name")[:400]
    password, password_again = raw_field(form, "password"), raw_field(form, "password_again")
    login_token = raw_field(form, "login_token")

    def again(status: int, error: str) -> Response:
        return _with_login_token(request, "setup.html", status, token=token, error=error, email=email, name=name)

    if not _login_token_ok(request, login_token):
        return again(403, "The form expired: please fill it in again.")
    if password != password_again:
        return again(400, "The two passwords differ.")
    settings = request.app.state.settings.console
    async with request.app.state.pool.connection() as conn:
        try:
            user = await accounts.use_setup_link(conn, token, email, name, password)
        except accounts.AccountError as exc:
            if exc.status == 410:
                return render(request, "link_gone.html", 410)
            return again(exc.status, str(exc))
        new = await accounts.create_session(
            conn,
            settings,
            user["id"],
            client_address(request.scope.get("client")),
            request.headers.get("user-agent", ""),
        )
    return _start_session(request, new, "/console")


@router.get("/link/{token}")
async def link_page(request: Request, token: str) -> Response:
    async with request.app.state.pool.connection() as conn:
        found = await accounts.link(conn, token)
    if found is None or found["purpose"] not in ("invite", "reset"):
        return render(request, "link_gone.html", 410)
    return _with_login_token(request, "password.html", token=token, link=found, error=None)


@router.post("/link/{token}")
async def use_link(request: Request, token: str) -> Response:
    form = await form_of(request)
    async with request.app.state.pool.connection() as conn:
        found = await accounts.link(conn, token)
        if found is None or found["purpose"] not in ("invite", "reset"):
            return render(request, "link_gone.html", 410)

        def again(status: int, error: str) -> Response:
            return _with_login_token(request, "password.html", status, token=token, link=found, error=error)

        if not _login_token_ok(request, raw_field(form, "login_token")):
            return again(403, "The form expired: please fill it in again.")
        password = raw_field(form, "password")
        if password != raw_field(form, "password_again"):
            return again(400, "The two passwords differ.")
        try:
            user = await accounts.use_password_link(conn, token, password)
        except accounts.AccountError as exc:
            if exc.status == 410:
                return render(request, "link_gone.html", 410)
            return again(exc.status, str(exc))
        new = await accounts.create_session(
            conn,
            request.app.state.settings.console,
            user["id"],
            client_address(request.scope.get("client")),
            request.headers.get("user-agent", ""),
        )
    return _start_session(request, new, "/console")
