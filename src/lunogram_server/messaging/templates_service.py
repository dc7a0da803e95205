"""Templates and snippets: save (validated), read, delete; and what the sender and the preview load.

A save is refused as a whole (TemplateInvalid, every problem located) unless every field parses as Liquid,
names only known filters and existing snippets, and fits its cap. Snippets a template names are held
(FOR SHARE) until the save commits, and a snippet is deleted only under FOR UPDATE after checking that no
template or snippet names it: the two cannot cross, so a saved template never names a missing snippet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
from psycopg import AsyncConnection, errors
from psycopg.types.json import Jsonb
from pydantic import TypeAdapter, ValidationError

from lunogram_server.db import fetch_scalar, load_queries
from lunogram_server.identity import ExternalID, normalize
from lunogram_server.messaging.template_models import (
    CreateSnippet,
    CreateTemplate,
    TemplateSource,
    UpdateSnippet,
    UpdateTemplate,
)
from lunogram_server.messaging.templates import (
    CONTENT,
    Channel,
    Checked,
    Content,
    Rendered,
    SourceProblem,
    TemplateDefinition,
    UserContext,
    canonical_locale,
    check_source,
    check_variants,
    external_id_of,
    message_context,
    render,
)

Q = load_queries("lunogram_server.messaging", "templates.sql")

MAX_TEMPLATES = 10_000  # per project
MAX_SNIPPETS = 1_000  # per project


class TemplateInvalid(ValueError):
    """Source that cannot be saved; each problem names its field (and line and column for Liquid)."""

    def __init__(self, problems: Sequence[SourceProblem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = list(problems)


class ShapeError(ValueError):
    """A variant's fields do not fit the channel: pydantic errors, located from the body's root."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(str(errors))
        self.errors = errors


class Conflict(ValueError):
    """409: a name taken, a snippet still in use, a per-project cap reached."""


# --- checks ---------------------------------------------------------------------------------------------------

_ADAPTERS: dict[str, TypeAdapter[Any]] = {channel: TypeAdapter(model) for channel, model in CONTENT.items()}


def parse_variants(channel: Channel, raw: Mapping[str, Mapping[str, Any]]) -> dict[str, Content]:
    """Each variant as the channel's content, keyed by canonical locale. ShapeError for a field that does
    not fit (`variants.en.subject: is required`), TemplateInvalid for a bad locale."""
    variants: dict[str, Content] = {}
    shape: list[dict[str, Any]] = []
    problems: list[SourceProblem] = []
    for key, fields in raw.items():
        locale = canonical_locale(key)
        if locale is None:
            problems.append(SourceProblem(f"variants.{key}", "is not a BCP 47 locale (such as en, pt-BR)"))
            continue
        if locale in variants:
            problems.append(SourceProblem(f"variants.{key}", f"names the same locale as another variant ({locale})"))
            continue
        try:
            variants[locale] = _ADAPTERS[channel].validate_python(fields)
        except ValidationError as exc:
            shape += [{**e, "loc": ("variants", key, *e["loc"])} for e in exc.errors(include_url=False)]
    if shape:
        raise ShapeError(shape)
    if problems:
        raise TemplateInvalid(problems)
    return variants


def _default_locale(given: str | None, variants: Mapping[str, Content]) -> str:
    if given is None:
        if len(variants) == 1:
            return next(iter(variants))
        raise TemplateInvalid([SourceProblem("default_locale", "is required when there are several variants")])
    locale = canonical_locale(given)
    if locale is None or locale not in variants:
        known = ", ".join(sorted(variants))
        raise TemplateInvalid([SourceProblem("default_locale", f"'{given}' is not one of the variants ({known})")])
    return locale


async def _check_snippets_exist(conn: AsyncConnection[Any], project_id: UUID, checked: Checked) -> None:
    """Problems for named snippets that do not exist; the ones that do are held until commit."""
    names = checked.snippet_names
    if not names:
        return
    cursor = await conn.execute(Q["snippets_lock"], {"project_id": project_id, "names": names})
    found = {row[0] for row in await cursor.fetchall()}
    for ref in checked.references:
        if ref.name not in found:
            problem = SourceProblem(ref.field, f"snippet '{ref.name}' does not exist", ref.line, ref.column)
            checked.problems.append(problem)


async def _checked_variants(
    conn: AsyncConnection[Any], project_id: UUID, channel: Channel, variants: Mapping[str, Content]
) -> Checked:
    checked = check_variants(channel, variants)
    await _check_snippets_exist(conn, project_id, checked)
    if checked.problems:
        raise TemplateInvalid(checked.problems)
    return checked


async def validate(conn: AsyncConnection[Any], project_id: UUID, body: TemplateSource) -> dict[str, Any]:
    """What saving this source would say, without saving it."""
    variants = parse_variants(body.channel, body.variants)
    default = _default_locale(body.default_locale, variants)
    async with conn.transaction():
        checked = await _checked_variants(conn, project_id, body.channel, variants)
    return {"valid": True, "default_locale": default, "snippets": checked.snippet_names}


def _variants_json(variants: Mapping[str, Content]) -> Jsonb:
    return Jsonb({locale: content.model_dump(mode="json") for locale, content in variants.items()})


# --- templates ------------------------------------------------------------------------------------------------


async def create_template(conn: AsyncConnection[Any], project_id: UUID, body: CreateTemplate) -> str:
    variants = parse_variants(body.channel, body.variants)
    default = _default_locale(body.default_locale, variants)
    async with conn.transaction():
        checked = await _checked_variants(conn, project_id, body.channel, variants)
        if await fetch_scalar(conn, Q["template_count"], {"project_id": project_id}) >= MAX_TEMPLATES:
            raise Conflict(f"templates: this project has {MAX_TEMPLATES} templates, the most it may have")
        params = {
            "project_id": project_id,
            "name": body.name,
            "channel": body.channel,
            "default_locale": default,
            "subscription_group_id": body.subscription_group_id,
            "snippets": checked.snippet_names,
        }
        try:
            async with conn.transaction():
                template_id = await fetch_scalar(conn, Q["template_insert"], params)
        except errors.UniqueViolation:
            raise Conflict(f"name: a template named {body.name!r} already exists in this project") from None
        await conn.execute(
            Q["template_variants_insert"], {"template_id": template_id, "variants": _variants_json(variants)}
        )
    return str(await template_detail(conn, project_id, template_id))


async def update_template(
    conn: AsyncConnection[Any], project_id: UUID, template_id: UUID, body: UpdateTemplate
) -> str | None:
    """None when the template does not exist."""
    async with conn.transaction():
        key = {"project_id": project_id, "template_id": template_id}
        row = await (await conn.execute(Q["template_for_update"], key)).fetchone()
        if row is None:
            return None
        name, channel, default_locale, group_id, stored = row
        if body.variants is not None:
            variants = parse_variants(channel, body.variants)
        else:
            variants = {locale: _ADAPTERS[channel].validate_python(c) for locale, c in (stored or {}).items()}
        if body.default_locale is not None:
            default = _default_locale(body.default_locale, variants)
        elif default_locale in variants:
            default = default_locale
        else:  # new variants without the stored default: their only locale, or name one
            default = _default_locale(None, variants)
        checked = await _checked_variants(conn, project_id, channel, variants)
        params = {
            "project_id": project_id,
            "template_id": template_id,
            "name": body.name if body.name is not None else name,
            "default_locale": default,
            "subscription_group_id": (
                body.subscription_group_id if "subscription_group_id" in body.model_fields_set else group_id
            ),
            "snippets": checked.snippet_names,
        }
        try:
            async with conn.transaction():
                await conn.execute(Q["template_update"], params)
        except errors.UniqueViolation:
            raise Conflict(f"name: a template named {body.name!r} already exists in this project") from None
        if body.variants is not None:
            await conn.execute(Q["template_variants_delete"], {"template_id": template_id})
            await conn.execute(
                Q["template_variants_insert"], {"template_id": template_id, "variants": _variants_json(variants)}
            )
    return await template_detail(conn, project_id, template_id)


async def template_detail(conn: AsyncConnection[Any], project_id: UUID, template_id: UUID) -> str | None:
    params = {"project_id": project_id, "template_id": template_id}
    result: str | None = await fetch_scalar(conn, Q["template_json"], params)
    return result


async def template_page(
    conn: AsyncConnection[Any], project_id: UUID, limit: int, offset: int, channel: Channel | None = None
) -> str:
    params = {"project_id": project_id, "limit": limit, "offset": offset, "channel": channel}
    return str(await fetch_scalar(conn, Q["template_page"], params))


async def delete_template(conn: AsyncConnection[Any], project_id: UUID, template_id: UUID) -> bool:
    cursor = await conn.execute(Q["template_delete"], {"project_id": project_id, "template_id": template_id})
    return cursor.rowcount == 1


# --- for the sender and the preview ---------------------------------------------------------------------------


async def definitions(
    conn: AsyncConnection[Any], project_id: UUID, template_ids: Sequence[UUID]
) -> dict[UUID, TemplateDefinition]:
    """The project's templates among `template_ids`, ready for `templates.render` (one round trip)."""
    cursor = await conn.execute(Q["template_definitions"], {"project_id": project_id, "ids": list(template_ids)})
    found: dict[UUID, TemplateDefinition] = {}
    for template_id, name, channel, default_locale, group_id, snippets, updated_at, variants in await cursor.fetchall():
        adapter = _ADAPTERS[channel]
        found[template_id] = TemplateDefinition(
            channel=channel,
            variants={locale: adapter.validate_python(content) for locale, content in (variants or {}).items()},
            default_locale=default_locale,
            id=template_id,
            updated_at=updated_at,
            name=name,
            subscription_group_id=group_id,
            snippets=frozenset(snippets),
        )
    return found


async def definition(conn: AsyncConnection[Any], project_id: UUID, template_id: UUID) -> TemplateDefinition | None:
    return (await definitions(conn, project_id, [template_id])).get(template_id)


async def snippets_for(conn: AsyncConnection[Any], project_id: UUID, names: Sequence[str]) -> dict[str, str]:
    """name -> source of the named snippets and of every snippet they render, transitively (one round trip):
    the `snippets` argument of `templates.render` for templates naming `names`."""
    if not names:
        return {}
    cursor = await conn.execute(Q["snippet_closure"], {"project_id": project_id, "names": sorted(set(names))})
    return {name: source for name, source in await cursor.fetchall()}


@dataclass(frozen=True, slots=True)
class PreviewSubject:
    """The user (admin JSON of `lunogram_user_json`) and the organization a preview renders for."""

    user: dict[str, Any]
    organization: dict[str, Any] | None


async def preview_subject(
    conn: AsyncConnection[Any],
    project_id: UUID,
    *,
    user_id: UUID | None = None,
    identifiers: list[ExternalID] | None = None,
) -> PreviewSubject | None:
    """The user named by id or by any of its identifiers, and the organization of its oldest membership;
    None when no such user exists (nothing is created)."""
    if user_id is not None:
        text = await fetch_scalar(conn, Q["preview_user_by_id"], {"project_id": project_id, "user_id": user_id})
    else:
        params = {"project_id": project_id, "identifiers": Jsonb(normalize(identifiers or []))}
        text = await fetch_scalar(conn, Q["preview_user_by_identifiers"], params)
    if text is None:
        return None
    user = orjson.loads(text)
    org_text = await fetch_scalar(conn, Q["preview_organization"], {"project_id": project_id, "user_id": user["id"]})
    organization = orjson.loads(org_text) if org_text is not None else None
    if organization is not None:
        organization["external_id"] = external_id_of(organization["identifiers"])
    return PreviewSubject(user, organization)


class PreviewUserMissing(LookupError):
    """The user a preview names is not in the project (nothing is created)."""


# What `unsubscribe_url` and `preferences_url` are in a preview: the real ones are signed per send.
PREVIEW_UNSUBSCRIBE_URL = "https://preview.invalid/unsubscribe"
PREVIEW_PREFERENCES_URL = "https://preview.invalid/preferences"


async def preview(
    conn: AsyncConnection[Any],
    project_id: UUID,
    template: TemplateDefinition,
    *,
    user_id: UUID | None = None,
    identifiers: list[ExternalID] | None = None,
    locale: str | None = None,
    data: dict[str, Any] | None = None,
    event: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
) -> tuple[UUID, Rendered]:
    """`template` (saved, or not yet: the console's live preview) rendered for a user as a send would,
    in a worker thread; the locale defaults to the user's. PreviewUserMissing, or RenderError."""
    subject = await preview_subject(conn, project_id, user_id=user_id, identifiers=identifiers)
    if subject is None:
        raise PreviewUserMissing(str(user_id) if user_id is not None else "named by these identifiers")
    snippets = await snippets_for(conn, project_id, sorted(template.snippets))
    context = message_context(
        UserContext.from_profile(subject.user),
        organization=subject.organization,
        event=event,
        run=run,
        unsubscribe_url=PREVIEW_UNSUBSCRIBE_URL,
        preferences_url=PREVIEW_PREFERENCES_URL,
        data=data,
    )
    chosen = locale if locale is not None else subject.user.get("locale")
    rendered = await asyncio.to_thread(render, template, chosen, context, snippets)
    return UUID(str(subject.user["id"])), rendered


async def unsaved_definition(
    conn: AsyncConnection[Any],
    project_id: UUID,
    channel: Channel,
    variants: Mapping[str, Mapping[str, Any]],
    default_locale: str | None,
) -> TemplateDefinition:
    """A template from source not saved yet, checked as a save would check it (ShapeError, TemplateInvalid)."""
    parsed = parse_variants(channel, variants)
    checked = await _checked_variants(conn, project_id, channel, parsed)
    return TemplateDefinition(
        channel=channel,
        variants=parsed,
        default_locale=_default_locale(default_locale, parsed),
        snippets=frozenset(checked.snippet_names),
    )


# --- snippets -------------------------------------------------------------------------------------------------


async def _checked_snippet(conn: AsyncConnection[Any], project_id: UUID, name: str, source: str) -> Checked:
    """Parses, names existing snippets, and does not render itself through any chain of snippets."""
    checked = check_source("source", source)
    await _check_snippets_exist(conn, project_id, checked)
    if not checked.problems and checked.references:
        reachable = await snippets_for(conn, project_id, checked.snippet_names)
        if name in reachable or name in checked.snippet_names:
            first = checked.references[0]
            problem = SourceProblem("source", f"snippet '{name}' would render itself (through '{first.name}')")
            checked.problems.append(problem)
    if checked.problems:
        raise TemplateInvalid(checked.problems)
    return checked


async def create_snippet(conn: AsyncConnection[Any], project_id: UUID, body: CreateSnippet) -> str:
    async with conn.transaction():
        checked = await _checked_snippet(conn, project_id, body.name, body.source)
        if await fetch_scalar(conn, Q["snippet_count"], {"project_id": project_id}) >= MAX_SNIPPETS:
            raise Conflict(f"snippets: this project has {MAX_SNIPPETS} snippets, the most it may have")
        params = {"project_id": project_id, "name": body.name, "source": body.source, "snippets": checked.snippet_names}
        if await fetch_scalar(conn, Q["snippet_insert"], params) is None:
            raise Conflict(f"name: a snippet named {body.name!r} already exists in this project")
    return str(await snippet_detail(conn, project_id, body.name))


async def update_snippet(conn: AsyncConnection[Any], project_id: UUID, name: str, body: UpdateSnippet) -> str | None:
    """None when the snippet does not exist. Templates rendering it render the new source from now on."""
    async with conn.transaction():
        if await fetch_scalar(conn, Q["snippet_for_update"], {"project_id": project_id, "name": name}) is None:
            return None
        checked = await _checked_snippet(conn, project_id, name, body.source)
        params = {"project_id": project_id, "name": name, "source": body.source, "snippets": checked.snippet_names}
        await conn.execute(Q["snippet_update"], params)
    return await snippet_detail(conn, project_id, name)


async def snippet_detail(conn: AsyncConnection[Any], project_id: UUID, name: str) -> str | None:
    result: str | None = await fetch_scalar(conn, Q["snippet_json"], {"project_id": project_id, "name": name})
    return result


async def snippet_page(conn: AsyncConnection[Any], project_id: UUID, limit: int, offset: int) -> str:
    params = {"project_id": project_id, "limit": limit, "offset": offset}
    return str(await fetch_scalar(conn, Q["snippet_page"], params))


async def delete_snippet(conn: AsyncConnection[Any], project_id: UUID, name: str) -> bool:
    """False when it does not exist; Conflict while a template or snippet renders it."""
    async with conn.transaction():
        if await fetch_scalar(conn, Q["snippet_for_update"], {"project_id": project_id, "name": name}) is None:
            return False
        cursor = await conn.execute(Q["snippet_users"], {"project_id": project_id, "name": name})
        users = [row[0] for row in await cursor.fetchall()]
        if users:
            raise Conflict(f"snippet {name!r} is rendered by {', '.join(users)}; change those first")
        await conn.execute(Q["snippet_delete"], {"project_id": project_id, "name": name})
    return True
