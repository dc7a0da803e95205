"""Lists: the index, a list's page (count, state, members), the rule builder with a live count, static
lists' members by hand and CSV imports with their progress and errors."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Query, Request
from psycopg import errors
from pydantic import TypeAdapter
from starlette.datastructures import UploadFile
from starlette.responses import Response

from lunogram_server.console.web import rulebuilder
from lunogram_server.console.web.base import (
    Signed,
    checked_form,
    editor_form,
    field,
    page,
    partial,
    project_of,
    raw_field,
    redirect,
    render,
)
from lunogram_server.http.problems import ProblemError
from lunogram_server.lists import imports
from lunogram_server.lists import service as lists
from lunogram_server.lists.models import CreateList, MemberChange, UpdateList
from lunogram_server.lists.rules import Node

router = APIRouter(prefix="/console", include_in_schema=False)
MEMBERS_PAGE = 50
_NODE: TypeAdapter[Node] = TypeAdapter(Node)


async def _project_lists(request: Request, project_id: UUID) -> list[dict[str, Any]]:
    async with request.app.state.pool.connection() as conn:
        return list(orjson.loads(await lists.page(conn, project_id, 1000, 0)))


def _builder_context(tree: dict[str, Any], all_lists: list[dict[str, Any]], own: UUID | None = None) -> dict[str, Any]:
    return {
        "tree": tree,
        "all_lists": [item for item in all_lists if own is None or item["id"] != str(own)],
        "ops": rulebuilder.OPS,
        "where_ops": rulebuilder.EVENT_WHERE_OPS,
        "units": rulebuilder.UNITS,
    }


@router.get("/lists")
async def lists_page(request: Request, session: Signed) -> Response:
    return await page(request, "lists.html", lists=await _project_lists(request, project_of(session)))


@router.post("/lists/static")
async def create_static(request: Request, session: Signed) -> Response:
    form = await editor_form(request, session, "editor", "creating a list")
    name = field(form, "name")
    if not name:
        return redirect(request, "/console/lists", "name: must not be blank", error=True)
    async with request.app.state.pool.connection() as conn:
        made = orjson.loads(await lists.create(conn, project_of(session), CreateList(name=name[:255])))
    return redirect(request, f"/console/lists/{made['id']}", f"static list {name!r} created")


@router.get("/lists/new")
async def new_rule_list(request: Request, session: Signed) -> Response:
    all_lists = await _project_lists(request, project_of(session))
    return await page(
        request, "list_new.html", name="", error=None, **_builder_context(rulebuilder.default_tree(), all_lists)
    )


@router.post("/lists/builder")
async def builder(request: Request, session: Signed) -> Response:
    """The builder after a button: a condition or group added or removed, a type or operator changed."""
    form = await checked_form(request, session)
    tree = rulebuilder.apply(rulebuilder.tree_from_form(form), field(form, "action"))
    own = field(form, "list_id") or None
    all_lists = await _project_lists(request, project_of(session))
    response = partial("list_builder.html", **_builder_context(tree, all_lists, UUID(own) if own else None))
    response.headers["HX-Trigger"] = "builder-changed"
    return response


@router.post("/lists/count")
async def count(request: Request, session: Signed) -> Response:
    """The live count: how many users the rule in the form matches now (lists.preview, as the API's)."""
    form = await checked_form(request, session)
    rule, error = rulebuilder.to_rule(rulebuilder.tree_from_form(form))
    if rule is None:
        return partial("list_count.html", count=None, capped=False, error=error)
    own = field(form, "list_id") or None
    async with request.app.state.pool.connection() as conn:
        try:
            counted = await lists.preview(
                conn, project_of(session), _NODE.validate_python(rule), UUID(own) if own else None
            )
        except lists.RuleError as exc:
            return partial("list_count.html", count=None, capped=False, error=str(exc))
    return partial("list_count.html", count=counted["count"], capped=counted["capped"], error=None)


def _rule_from_form(form: Any) -> tuple[dict[str, Any] | None, str | None]:
    raw = raw_field(form, "rule_json").strip()
    if raw:  # the JSON text area wins when filled in
        try:
            return dict(orjson.loads(raw)), None
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return None, "rule: the JSON is not an object"
    return rulebuilder.to_rule(rulebuilder.tree_from_form(form))


@router.post("/lists/rule")
async def create_rule_list(request: Request, session: Signed) -> Response:
    form = await editor_form(request, session, "editor", "creating a list")
    name = field(form, "name")
    rule, error = _rule_from_form(form)
    if not name:
        error = "name: must not be blank"
    body = None
    if error is None:
        try:
            body = CreateList.model_validate({"name": name, "rule": rule})
        except ValueError as exc:
            error = f"rule: {exc}"
    if body is not None:
        async with request.app.state.pool.connection() as conn:
            try:
                made = orjson.loads(await lists.create(conn, project_of(session), body))
            except lists.RuleError as exc:
                error = str(exc)
            else:
                return redirect(request, f"/console/lists/{made['id']}", f"rule list {name!r} created")
    all_lists = await _project_lists(request, project_of(session))
    tree = rulebuilder.tree_from_form(form)
    return await page(request, "list_new.html", 400, name=name, error=error, **_builder_context(tree, all_lists))


@router.get("/lists/{list_id}")
async def list_page(
    request: Request, session: Signed, list_id: UUID, cursor: str | None = Query(None, max_length=100)
) -> Response:
    project_id = project_of(session)
    async with request.app.state.pool.connection() as conn:
        text = await lists.detail(conn, project_id, list_id)
        if text is None:
            return render(request, "error.html", 404, title="Not found", message=f"list {list_id}: not found")
        found = orjson.loads(text)
        before = _cursor(cursor)
        members = orjson.loads(await lists.members(conn, list_id, MEMBERS_PAGE, before))
        recent_imports = (
            orjson.loads(await imports.recent(conn, project_id, list_id)) if found["kind"] == "static" else []
        )
    context: dict[str, Any] = {"list": found, "members": members, "imports": recent_imports, "error": None}
    if found["kind"] == "rule":
        all_lists = await _project_lists(request, project_id)
        context.update(_builder_context(rulebuilder.from_rule(found["rule"]), all_lists, list_id))
        context["rule_json"] = orjson.dumps(found["rule"], option=orjson.OPT_INDENT_2).decode()
    return await page(request, "list.html", **context)


def _cursor(cursor: str | None) -> tuple[datetime, UUID] | None:
    if not cursor:
        return None
    try:
        at, _, user_id = cursor.partition("|")
        return datetime.fromisoformat(at.replace(" ", "T")), UUID(user_id)
    except ValueError:
        return None


@router.post("/lists/{list_id}/rule")
async def save_rule(request: Request, session: Signed, list_id: UUID) -> Response:
    form = await editor_form(request, session, "editor", "changing a list")
    rule, error = _rule_from_form(form)
    if error is None:
        async with request.app.state.pool.connection() as conn:
            try:
                body = UpdateList.model_validate({"rule": rule})
                if await lists.update(conn, project_of(session), list_id, body) is None:
                    error = f"list {list_id}: not found"
            except lists.RuleError as exc:
                error = str(exc)
            except ValueError as exc:
                error = f"rule: {exc}"
    if error is not None:
        return redirect(request, f"/console/lists/{list_id}", error, error=True)
    return redirect(request, f"/console/lists/{list_id}", "rule saved; members are being recomputed")


@router.post("/lists/{list_id}/rename")
async def rename(request: Request, session: Signed, list_id: UUID) -> Response:
    form = await editor_form(request, session, "editor", "renaming a list")
    try:
        body = UpdateList(name=field(form, "name")[:255])
    except ValueError:
        return redirect(request, f"/console/lists/{list_id}", "name: must not be blank", error=True)
    async with request.app.state.pool.connection() as conn:
        await lists.update(conn, project_of(session), list_id, body)
    return redirect(request, f"/console/lists/{list_id}", "renamed")


@router.post("/lists/{list_id}/delete")
async def delete(request: Request, session: Signed, list_id: UUID) -> Response:
    await editor_form(request, session, "editor", "deleting a list")
    async with request.app.state.pool.connection() as conn:
        try:
            await lists.delete(conn, project_of(session), list_id)
        except errors.ForeignKeyViolation:  # a campaign still uses it
            return redirect(
                request, f"/console/lists/{list_id}", "a campaign uses this list; it cannot be deleted", error=True
            )
    return redirect(request, "/console/lists", "list deleted")


@router.post("/lists/{list_id}/members")
async def add_members(request: Request, session: Signed, list_id: UUID) -> Response:
    """Static lists: one external id per line (or `source:external_id`)."""
    form = await editor_form(request, session, "editor", "changing a list")
    users = []
    for line in raw_field(form, "identifiers").splitlines()[:10_000]:
        text = line.strip()
        if not text:
            continue
        source, sep, external_id = text.partition(":")
        users.append([{"source": source, "external_id": external_id} if sep and external_id else {"external_id": text}])
    if not users:
        return redirect(request, f"/console/lists/{list_id}", "identifiers: one per line, at least one", error=True)
    remove = field(form, "remove") == "1"
    try:
        body = MemberChange.model_validate({"users": users})
    except ValueError as exc:
        return redirect(request, f"/console/lists/{list_id}", f"identifiers: {exc}", error=True)
    async with request.app.state.pool.connection() as conn, conn.transaction():
        kind = await lists.kind_of(conn, project_of(session), list_id)
        if kind != "static":
            return redirect(request, f"/console/lists/{list_id}", "only a static list's members are edited", error=True)
        changed = await lists.change_members(conn, project_of(session), list_id, body, add=not remove)
    return redirect(request, f"/console/lists/{list_id}", f"{changed} user(s) {'removed' if remove else 'added'}")


@router.post("/lists/{list_id}/imports")
async def import_csv(request: Request, session: Signed, list_id: UUID) -> Response:
    form = await editor_form(request, session, "editor", "importing into a list")
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        return redirect(request, f"/console/lists/{list_id}", "file: choose a CSV file", error=True)
    limits = request.app.state.settings.limits
    raw = await upload.read()
    try:  # CPU-bound: in a thread, as the API does
        parsed = await asyncio.to_thread(imports.parse, raw, limits.max_profile_data_bytes)
    except imports.BadFile as exc:
        return redirect(request, f"/console/lists/{list_id}", str(exc), error=True)
    async with request.app.state.pool.connection() as conn, conn.transaction():
        if await lists.kind_of(conn, project_of(session), list_id) != "static":
            return redirect(request, f"/console/lists/{list_id}", "import into a static list", error=True)
        made = orjson.loads(await imports.create(conn, project_of(session), list_id, parsed))
    return redirect(
        request, f"/console/lists/{list_id}#import-{made['id']}", f"import of {made['total_rows']} row(s) queued"
    )


@router.get("/lists/{list_id}/imports/{import_id}")
async def import_status(request: Request, session: Signed, list_id: UUID, import_id: UUID) -> Response:
    async with request.app.state.pool.connection() as conn:
        text = await imports.detail(conn, project_of(session), list_id, import_id)
    if text is None:
        raise ProblemError(404, f"import {import_id}: not found")
    return partial("list_import.html", item=orjson.loads(text), list_id=list_id, detail=True)
