"""API keys (create, list prefixes, revoke), the project and its sending rules, new projects, and the
console's members and their roles (invitations and reset links)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from lunogram_server.console import accounts
from lunogram_server.console.accounts import RANK
from lunogram_server.console.web.base import (
    Forbidden,
    Signed,
    editor_form,
    field,
    page,
    parse_uuid,
    project_of,
    raw_field,
    redirect,
)
from lunogram_server.messaging import service as messaging
from lunogram_server.projects import service as projects

router = APIRouter(prefix="/console", include_in_schema=False)


# -- API keys -------------------------------------------------------------------------------------------------


async def _keys_page(request: Request, session: Signed, new_key: projects.NewKey | None = None) -> Response:
    async with request.app.state.pool.connection() as conn:
        keys = await projects.list_keys(conn, project_of(session))
    return await page(request, "keys.html", keys=keys, new_key=new_key)


@router.get("/keys")
async def keys_page(request: Request, session: Signed) -> Response:
    return await _keys_page(request, session)


@router.post("/keys")
async def create_key(request: Request, session: Signed) -> Response:
    form = await editor_form(request, session, "admin", "creating an API key")
    kind: projects.KeyKind = "public" if field(form, "kind") == "public" else "secret"
    allow = [a for a in form.getlist("allow") if isinstance(a, str)] if kind == "public" else []
    async with request.app.state.pool.connection() as conn:
        try:
            made = await projects.create_key(
                conn, project_of(session), kind, name=field(form, "name")[:255], allow=allow
            )
        except projects.InvalidKeyError as exc:
            return redirect(request, "/console/keys", str(exc), error=True)
    # shown in this answer only (never stored, never redirected through a cookie)
    return await _keys_page(request, session, made)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, session: Signed, key_id: UUID) -> Response:
    await editor_form(request, session, "admin", "revoking an API key")
    async with request.app.state.pool.connection() as conn:
        done = await projects.revoke_project_key(conn, project_of(session), key_id)
    if not done:
        return redirect(request, "/console/keys", "no active key with that id in this project", error=True)
    return redirect(request, "/console/keys", "key revoked: servers stop accepting it within seconds")


# -- the project ----------------------------------------------------------------------------------------------


@router.get("/project")
async def project_page(request: Request, session: Signed) -> Response:
    project_id = project_of(session)
    async with request.app.state.pool.connection() as conn:
        project = await projects.project_by_id(conn, project_id)
        rules = await messaging.rules(conn, project_id)
    caps = orjson.dumps(rules.get("frequency_caps") or {}, option=orjson.OPT_INDENT_2).decode()
    return await page(request, "project.html", project=project, rules=rules, caps=caps, new_keys=None)


@router.post("/project/rules")
async def save_rules(request: Request, session: Signed) -> Response:
    form = await editor_form(request, session, "admin", "changing the sending rules")
    values: dict[str, Any] = {
        "quiet_start": field(form, "quiet_start") or None,
        "quiet_end": field(form, "quiet_end") or None,
        "timezone": field(form, "timezone") or "UTC",
    }
    try:
        values["frequency_caps"] = orjson.loads(raw_field(form, "frequency_caps") or "{}")
        body = messaging.Rules.model_validate(values)
    except (ValueError, orjson.JSONDecodeError) as exc:
        return redirect(request, "/console/project", f"rules: {exc}", error=True)
    async with request.app.state.pool.connection() as conn:
        try:
            await messaging.set_rules(conn, project_of(session), body)
        except messaging.MessagingError as exc:
            return redirect(request, "/console/project", str(exc), error=True)
    return redirect(request, "/console/project", "sending rules saved")


@router.post("/projects")
async def create_project(request: Request, session: Signed) -> Response:
    """Superusers only: a new project with a public and a secret key (shown once), and the session moves to it."""
    form = await editor_form(request, session, "viewer", "creating a project")
    if not session.superuser:
        raise Forbidden(
            "creating a project needs a superuser (the first owner, or `lunogram users create --superuser`)"
        )
    name = field(form, "name")[:255]
    if not name:
        return redirect(request, "/console/project", "name: must not be blank", error=True)
    async with request.app.state.pool.connection() as conn:
        if await projects.get_project(conn, name) is not None:
            return redirect(request, "/console/project", f"a project named {name!r} exists already", error=True)
        async with conn.transaction():
            project = await projects.create_project(conn, name)
            made = [await projects.create_key(conn, project["id"], kind) for kind in ("public", "secret")]
        await accounts.switch_project(conn, session, project["id"])
        moved = await accounts.session(conn, request.app.state.settings.console, request.cookies["lunogram_session"])
        request.scope["lunogram.console"] = moved or session
        rules = await messaging.rules(conn, project["id"])
    return await page(request, "project.html", project=project, rules=rules, caps="{}", new_keys=[k for k in made if k])


# -- members and roles ----------------------------------------------------------------------------------------


async def _members_page(request: Request, session: Signed, link: dict[str, str] | None = None) -> Response:
    async with request.app.state.pool.connection() as conn:
        members = await accounts.members_of(conn, project_of(session))
    return await page(request, "members.html", members=members, link=link, roles=list(reversed(accounts.ROLES)))


@router.get("/members")
async def members_page(request: Request, session: Signed) -> Response:
    return await _members_page(request, session)


def _link_url(request: Request, token: str) -> str:
    return f"{str(request.base_url).rstrip('/')}/console/link/{token}"


def _may_grant(session: Signed, role: str, current: str | None) -> None:
    """Admins manage viewers, editors and admins; owner is given or taken by owners only."""
    if "owner" in (role, current) and not session.may("owner"):
        raise Forbidden("only an owner gives or takes the owner role")


@router.post("/members")
async def invite(request: Request, session: Signed) -> Response:
    form = await editor_form(request, session, "admin", "adding a member")
    project_id = project_of(session)
    role = field(form, "role")
    try:
        accounts.check_role(role)
        email = accounts.normalize_email(field(form, "email"))
    except accounts.AccountError as exc:
        return redirect(request, "/console/members", str(exc), error=True)
    _may_grant(session, role, None)
    hours = request.app.state.settings.console.link_hours
    async with request.app.state.pool.connection() as conn, conn.transaction():
        user = await accounts.user_by_email(conn, email)
        token = None
        if user is None:
            user = await accounts.create_user(conn, email, name=field(form, "name"))
            token = await accounts.create_link(conn, "invite", hours, user["id"])
        else:
            _may_grant(session, role, await accounts.role_of(conn, user["id"], project_id))
        await accounts.grant(conn, user["id"], project_id, role)
    if token is None:
        return redirect(request, "/console/members", f"{email} is now {role} here")
    link = {"email": email, "url": _link_url(request, token), "what": "invitation", "hours": f"{hours:g}"}
    return await _members_page(request, session, link)


async def _member(request: Request, session: Signed, user_id: str) -> tuple[UUID, dict[str, Any]]:
    target = parse_uuid(user_id, "user")
    async with request.app.state.pool.connection() as conn:
        user = await accounts.user_by_id(conn, target)
    if user is None:
        raise Forbidden("no such console user")
    return target, user


@router.post("/members/{user_id}/role")
async def change_role(request: Request, session: Signed, user_id: str) -> Response:
    form = await editor_form(request, session, "admin", "changing a role")
    target, user = await _member(request, session, user_id)
    project_id = project_of(session)
    role = field(form, "role")
    async with request.app.state.pool.connection() as conn, conn.transaction():
        current = await accounts.role_of(conn, target, project_id)
        if role == "none":
            _may_grant(session, "viewer", current)
            if user["superuser"]:
                return redirect(request, "/console/members", "a superuser is an owner of every project", error=True)
            if current == "owner" and (await accounts.owners_of(conn, project_id)) == {target}:
                return redirect(request, "/console/members", "the project's last owner stays", error=True)
            await accounts.revoke(conn, target, project_id)
            return redirect(request, "/console/members", f"{user['email']} removed from the project")
        try:
            accounts.check_role(role)
        except accounts.AccountError as exc:
            return redirect(request, "/console/members", str(exc), error=True)
        _may_grant(session, role, current)
        if user["superuser"] and RANK[role] < RANK["owner"]:
            return redirect(request, "/console/members", "a superuser is an owner of every project", error=True)
        if current == "owner" and role != "owner" and (await accounts.owners_of(conn, project_id)) == {target}:
            return redirect(request, "/console/members", "the project's last owner stays", error=True)
        await accounts.grant(conn, target, project_id, role)
    return redirect(request, "/console/members", f"{user['email']} is now {role}")


@router.post("/members/{user_id}/reset")
async def reset_link(request: Request, session: Signed, user_id: str) -> Response:
    """A one-time link that sets a new password (their sessions end when it is used)."""
    await editor_form(request, session, "admin", "resetting a password")
    target, user = await _member(request, session, user_id)
    async with request.app.state.pool.connection() as conn:
        current = await accounts.role_of(conn, target, project_of(session))
        if current is None:
            raise Forbidden("that user has no role in this project")
        _may_grant(session, "viewer", current)
        hours = request.app.state.settings.console.link_hours
        token = await accounts.create_link(conn, "reset", hours, target)
    link = {"email": user["email"], "url": _link_url(request, token), "what": "password reset", "hours": f"{hours:g}"}
    return await _members_page(request, session, link)
