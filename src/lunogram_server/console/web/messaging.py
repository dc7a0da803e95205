"""Templates (editor with a live preview for a chosen user and locale, test send), campaigns (pick list,
channel and template, schedule, progress, pause and cancel, statistics with a chart), channels and their
providers, subscription groups."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Request
from psycopg import errors
from starlette.responses import Response

from lunogram_server.console.web.base import (
    CSP,
    Signed,
    checked_form,
    editor_form,
    field,
    page,
    parse_uuid,
    partial,
    project_of,
    raw_field,
    redirect,
    render,
)
from lunogram_server.console.web.charts import Series, line_chart
from lunogram_server.identity import ExternalID
from lunogram_server.lists import service as lists
from lunogram_server.messaging import campaigns
from lunogram_server.messaging import providers_service as providers
from lunogram_server.messaging import service as messaging
from lunogram_server.messaging import templates_service as templates
from lunogram_server.messaging.crypto import NoEncryptionKey, Undecryptable
from lunogram_server.messaging.providers import KINDS, ProviderConfigError
from lunogram_server.messaging.template_models import CreateTemplate, UpdateTemplate
from lunogram_server.messaging.templates import CONTENT, RenderError

router = APIRouter(prefix="/console", include_in_schema=False)
CHANNELS = list(CONTENT)
# what each channel's variant form shows: (field, label, kind); kind "json" fields hold an object
FIELDS: dict[str, list[tuple[str, str, str]]] = {
    "email": [
        ("subject", "Subject", "short"),
        ("preheader", "Preheader", "short"),
        ("html", "HTML", "long"),
        ("text", "Plain text (empty: made from the HTML)", "long"),
    ],
    "sms": [("body", "Text", "long")],
    "whatsapp": [("body", "Text", "long")],
    "push": [
        ("title", "Title", "short"),
        ("body", "Body", "long"),
        ("url", "URL", "short"),
        ("data", "Data (JSON)", "json"),
    ],
    "inbox": [("title", "Title", "short"), ("body", "Body", "long"), ("data", "Data (JSON)", "json")],
    "webhook": [
        ("url", "URL", "short"),
        ("method", "Method", "short"),
        ("headers", "Headers (JSON)", "json"),
        ("body", "Body", "long"),
    ],
}
STARTERS: dict[str, dict[str, Any]] = {
    "email": {"subject": "Hello {{ user.data.name | default: 'there' }}", "html": "<p>Hi {{ user.email }}!</p>"},
    "sms": {"body": "Hi {{ user.data.name | default: 'there' }}!"},
    "whatsapp": {"body": "Hi {{ user.data.name | default: 'there' }}!"},
    "push": {"title": "Hello", "body": "Hi {{ user.data.name | default: 'there' }}!"},
    "inbox": {"title": "Hello", "body": "Hi {{ user.data.name | default: 'there' }}!"},
    "webhook": {"url": "https://example.com/hook", "body": '{"user": "{{ user.id }}"}'},
}
REQUIRED = {
    "email": ("subject", "html"),
    "sms": ("body",),
    "whatsapp": ("body",),
    "push": ("title",),
    "inbox": ("title",),
    "webhook": ("url",),
}
PREVIEW_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


def _fail(request: Request, to: str, exc: Exception) -> Response:
    return redirect(request, to, str(exc), error=True)


# -- templates ------------------------------------------------------------------------------------------------


@router.get("/templates")
async def templates_page(request: Request, session: Signed) -> Response:
    async with request.app.state.pool.connection() as conn:
        found = orjson.loads(await templates.template_page(conn, project_of(session), 500, 0, None))
    return await page(request, "templates.html", templates=found, channels=CHANNELS)


@router.post("/templates")
async def create_template(request: Request, session: Signed) -> Response:
    form = await editor_form(request, session, "editor", "creating a template")
    channel = field(form, "channel")
    locale = field(form, "locale") or "en"
    try:
        body = CreateTemplate.model_validate(
            {"name": field(form, "name"), "channel": channel, "variants": {locale: STARTERS.get(channel, {})}}
        )
    except ValueError as exc:
        return _fail(request, "/console/templates", exc)
    async with request.app.state.pool.connection() as conn:
        try:
            made = orjson.loads(await templates.create_template(conn, project_of(session), body))
        except (templates.TemplateInvalid, templates.ShapeError, templates.Conflict) as exc:
            return _fail(request, "/console/templates", exc)
    return redirect(request, f"/console/templates/{made['id']}", "template created")


def _variant_from_form(channel: str, form: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, _, kind in FIELDS[channel]:
        raw = raw_field(form, f"f_{name}")
        if kind == "json":
            if raw.strip():
                try:
                    fields[name] = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    raise ValueError(f"{name}: not valid JSON ({exc.msg})") from None
        elif raw.strip() or name in REQUIRED[channel]:
            fields[name] = raw  # a required field left empty is refused by the channel's model, naming it
    return fields


def _shown(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


async def _template(request: Request, project_id: UUID, template_id: UUID) -> dict[str, Any] | None:
    async with request.app.state.pool.connection() as conn:
        text = await templates.template_detail(conn, project_id, template_id)
    return None if text is None else dict(orjson.loads(text))


@router.get("/templates/{template_id}")
async def template_page(request: Request, session: Signed, template_id: UUID, locale: str | None = None) -> Response:
    project_id = project_of(session)
    found = await _template(request, project_id, template_id)
    if found is None:
        return render(request, "error.html", 404, title="Not found", message=f"template {template_id}: not found")
    chosen = locale if locale in found["variants"] else found["default_locale"]
    async with request.app.state.pool.connection() as conn:
        groups = await messaging.groups(conn, project_id)
    variant = found["variants"][chosen]
    values = {name: _shown(variant.get(name)) for name, _, _ in FIELDS[found["channel"]]}
    response = await page(
        request,
        "template.html",
        template=found,
        locale=chosen,
        fields=FIELDS[found["channel"]],
        values=values,
        groups=groups,
    )
    response.headers["Content-Security-Policy"] = PREVIEW_CSP  # the preview frame shows the e-mail's own styles
    return response


@router.post("/templates/{template_id}")
async def save_template(request: Request, session: Signed, template_id: UUID) -> Response:
    form = await editor_form(request, session, "editor", "changing a template")
    project_id = project_of(session)
    found = await _template(request, project_id, template_id)
    to = f"/console/templates/{template_id}"
    if found is None:
        return redirect(request, "/console/templates", f"template {template_id}: not found", error=True)
    locale = field(form, "locale") or found["default_locale"]
    to += f"?locale={locale}"
    try:
        variant = _variant_from_form(found["channel"], form)
    except ValueError as exc:
        return _fail(request, to, exc)
    variants = {**found["variants"], locale: variant}
    group = field(form, "subscription_group_id")
    values: dict[str, Any] = {
        "name": field(form, "name") or found["name"],
        "default_locale": field(form, "default_locale") or found["default_locale"],
        "subscription_group_id": group or None,
        "variants": variants,
    }
    try:
        body = UpdateTemplate.model_validate(values)
    except ValueError as exc:
        return _fail(request, to, exc)
    async with request.app.state.pool.connection() as conn:
        try:
            await templates.update_template(conn, project_id, template_id, body)
        except templates.TemplateInvalid as exc:
            return redirect(request, to, "; ".join(str(p) for p in exc.problems[:5]), error=True)
        except (templates.ShapeError, templates.Conflict) as exc:
            return _fail(request, to, exc)
    return redirect(request, to, "template saved")


@router.post("/templates/{template_id}/preview")
async def preview(request: Request, session: Signed, template_id: UUID) -> Response:
    """The live preview: the variant as it stands in the form (saved or not), rendered for the user chosen,
    in the locale chosen, by the same code as POST /api/admin/templates/{id}/preview."""
    form = await checked_form(request, session)
    project_id = project_of(session)
    found = await _template(request, project_id, template_id)
    if found is None:
        return partial("template_preview.html", error=f"template {template_id}: not found", rendered=None)
    who = field(form, "preview_user")
    if not who:
        return partial("template_preview.html", error="Choose a user (external id) to preview for.", rendered=None)
    locale = field(form, "locale") or found["default_locale"]
    try:
        variants = {**found["variants"], locale: _variant_from_form(found["channel"], form)}
        user = ExternalID(source=field(form, "preview_source") or "default", external_id=who)
    except ValueError as exc:
        return partial("template_preview.html", error=str(exc), rendered=None)
    async with request.app.state.pool.connection() as conn:
        try:
            definition = await templates.unsaved_definition(
                conn, project_id, found["channel"], variants, found["default_locale"]
            )
            user_id, rendered = await templates.preview(
                conn,
                project_id,
                definition,
                identifiers=[user],
                locale=field(form, "preview_locale") or None,
            )
        except templates.TemplateInvalid as exc:
            return partial("template_preview.html", error="; ".join(str(p) for p in exc.problems[:5]), rendered=None)
        except templates.ShapeError as exc:
            return partial("template_preview.html", error=str(exc), rendered=None)
        except templates.PreviewUserMissing:
            return partial("template_preview.html", error=f"No user {who!r} in this project.", rendered=None)
        except RenderError as exc:
            return partial("template_preview.html", error=str(exc), rendered=None)
    return partial("template_preview.html", error=None, rendered=rendered.as_dict(), user_id=user_id)


@router.post("/templates/{template_id}/test")
async def test_send(request: Request, session: Signed, template_id: UUID) -> Response:
    """Send the saved template to a user now (the transactional send, with a fresh key)."""
    form = await editor_form(request, session, "editor", "sending a test message")
    to = f"/console/templates/{template_id}"
    who = field(form, "test_user")
    if not who:
        return redirect(request, to, "test send: choose a user (external id)", error=True)
    try:
        body = messaging.Send.model_validate(
            {"template_id": template_id, "identifier": [{"external_id": who}], "key": f"console-test-{uuid.uuid4()}"}
        )
    except ValueError as exc:
        return _fail(request, to, exc)
    async with request.app.state.pool.connection() as conn:
        try:
            sent, _ = await messaging.send(conn, project_of(session), body)
        except messaging.MessagingError as exc:
            return _fail(request, to, exc)
    return redirect(request, to, f"test message queued for {who} ({sent.get('status', 'queued')})")


@router.post("/templates/{template_id}/delete")
async def delete_template(request: Request, session: Signed, template_id: UUID) -> Response:
    await editor_form(request, session, "editor", "deleting a template")
    async with request.app.state.pool.connection() as conn:
        try:
            await templates.delete_template(conn, project_of(session), template_id)
        except (errors.ForeignKeyViolation, templates.Conflict):  # a campaign still uses it
            return redirect(request, f"/console/templates/{template_id}", "the template is in use", error=True)
    return redirect(request, "/console/templates", "template deleted")


# -- campaigns ------------------------------------------------------------------------------------------------


@router.get("/campaigns")
async def campaigns_page(request: Request, session: Signed) -> Response:
    project_id = project_of(session)
    async with request.app.state.pool.connection() as conn:
        found = await campaigns.page(conn, project_id, 200, 0)
        all_lists = orjson.loads(await lists.page(conn, project_id, 1000, 0))
        all_templates = orjson.loads(await templates.template_page(conn, project_id, 1000, 0, None))
        all_providers = await providers.page(conn, project_id, None, 100, 0)
    return await page(
        request, "campaigns.html", campaigns=found, lists=all_lists, templates=all_templates, providers=all_providers
    )


@router.post("/campaigns")
async def create_campaign(request: Request, session: Signed) -> Response:
    form = await editor_form(request, session, "editor", "creating a campaign")
    values: dict[str, Any] = {
        "name": field(form, "name"),
        "list_id": field(form, "list_id"),
        "template_id": field(form, "template_id"),
        "provider_id": field(form, "provider_id") or None,
    }
    try:
        body = campaigns.CreateCampaign.model_validate(values)
    except ValueError as exc:
        return _fail(request, "/console/campaigns", exc)
    async with request.app.state.pool.connection() as conn:
        try:
            made = await campaigns.create(conn, project_of(session), body)
        except campaigns.CampaignError as exc:
            return _fail(request, "/console/campaigns", exc)
    return redirect(request, f"/console/campaigns/{made['id']}", "campaign created: schedule it to send")


def _bucket(campaign: dict[str, Any]) -> int:
    started = campaign.get("started_at") or campaign.get("send_at")
    if not started:
        return 60
    began = datetime.fromisoformat(str(started))
    span = datetime.now(UTC) - began
    for seconds in (60, 300, 900, 3600, 6 * 3600, 86400):
        if span / timedelta(seconds=seconds) <= 120:
            return seconds
    return 86400


def _chart(points: list[dict[str, Any]], bucket: int) -> Any:
    if not points:
        return None
    step = timedelta(seconds=bucket)
    first = datetime.fromisoformat(points[0]["at"]) - step  # a bucket of nothing on each side
    last = datetime.fromisoformat(points[-1]["at"]) + step
    xs = [first + step * n for n in range(min(500, int((last - first) / step) + 1))]
    kinds = [("sent", "s1"), ("delivered", "s2"), ("opened", "s3"), ("clicked", "s4"), ("bounced", "s5")]
    series = [
        Series(kind, css, [(datetime.fromisoformat(p["at"]), p.get(kind, 0)) for p in points]) for kind, css in kinds
    ]
    return line_chart(series, xs, title=f"Campaign messages per {bucket // 60} minute(s)")


@router.get("/campaigns/{campaign_id}")
async def campaign_page(request: Request, session: Signed, campaign_id: UUID) -> Response:
    project_id = project_of(session)
    async with request.app.state.pool.connection() as conn:
        found = await campaigns.detail(conn, project_id, campaign_id)
        if found is None:
            return render(request, "error.html", 404, title="Not found", message=f"campaign {campaign_id}: not found")
        bucket = _bucket(found)
        points = await campaigns.timeline(conn, project_id, campaign_id, bucket)
    return await page(request, "campaign.html", campaign=found, chart=_chart(points, bucket), points=points)


@router.get("/campaigns/{campaign_id}/progress")
async def campaign_progress(request: Request, session: Signed, campaign_id: UUID) -> Response:
    async with request.app.state.pool.connection() as conn:
        found = await campaigns.detail(conn, project_of(session), campaign_id)
    if found is None:
        return partial("campaign_progress.html", campaign=None)
    return partial("campaign_progress.html", campaign=found)


@router.post("/campaigns/{campaign_id}/schedule")
async def schedule_campaign(request: Request, session: Signed, campaign_id: UUID) -> Response:
    form = await editor_form(request, session, "editor", "scheduling a campaign")
    to = f"/console/campaigns/{campaign_id}"
    when = field(form, "send_at")
    offset = field(form, "tz_offset") or "+00:00"
    values: dict[str, Any] = {"local_time": field(form, "local_time") == "1"}
    if when:
        try:
            values["send_at"] = datetime.fromisoformat(f"{when}{offset}" if "+" not in when[10:] else when)
        except ValueError:
            return redirect(request, to, "send_at: a date and time (YYYY-MM-DDTHH:MM)", error=True)
    try:
        body = campaigns.ScheduleCampaign.model_validate(values)
    except ValueError as exc:
        return _fail(request, to, exc)
    async with request.app.state.pool.connection() as conn:
        try:
            await campaigns.act(conn, project_of(session), campaign_id, "schedule", body)
        except campaigns.CampaignError as exc:
            return _fail(request, to, exc)
    return redirect(request, to, "scheduled" if when else "sending now")


@router.post("/campaigns/{campaign_id}/action")
async def campaign_action(request: Request, session: Signed, campaign_id: UUID) -> Response:
    form = await editor_form(request, session, "editor", "changing a campaign")
    action = field(form, "action")
    to = f"/console/campaigns/{campaign_id}"
    if action not in ("pause", "resume", "cancel"):
        return redirect(request, to, "action: pause, resume or cancel", error=True)
    async with request.app.state.pool.connection() as conn:
        try:
            done = await campaigns.act(conn, project_of(session), campaign_id, action)
        except campaigns.CampaignError as exc:
            return _fail(request, to, exc)
    return redirect(request, to, f"campaign {done['status']}")


# -- providers ------------------------------------------------------------------------------------------------

_PROVIDER_REFUSALS = (ProviderConfigError, NoEncryptionKey, Undecryptable, providers.Conflict)


@router.get("/providers")
async def providers_page(request: Request, session: Signed) -> Response:
    async with request.app.state.pool.connection() as conn:
        found = await providers.page(conn, project_of(session), None, 100, 0)
    kinds = [{"kind": k.kind, "channel": k.channel, "summary": k.summary} for k in KINDS.values()]
    return await page(request, "providers.html", providers=found, kinds=kinds)


def _json_field(form: Any, name: str) -> dict[str, Any]:
    raw = raw_field(form, name).strip()
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{name}: not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{name}: must be a JSON object")
    return value


@router.post("/providers")
async def create_provider(request: Request, session: Signed) -> Response:
    form = await editor_form(request, session, "admin", "adding a provider")
    try:
        values: dict[str, Any] = {
            "name": field(form, "name"),
            "kind": field(form, "kind"),
            "config": _json_field(form, "config"),
            "secrets": _json_field(form, "secrets"),
        }
        if field(form, "rate_per_second"):
            values["rate_per_second"] = float(field(form, "rate_per_second"))
        body = providers.CreateProvider.model_validate(values)
    except ValueError as exc:
        return _fail(request, "/console/providers", exc)
    async with request.app.state.pool.connection() as conn:
        try:
            made = await providers.create(conn, request.app.state.keyring, project_of(session), body)
        except _PROVIDER_REFUSALS as exc:
            return _fail(request, "/console/providers", exc)
    return redirect(request, f"/console/providers/{made.id}", "provider added")


@router.get("/providers/{provider_id}")
async def provider_page(request: Request, session: Signed, provider_id: UUID) -> Response:
    async with request.app.state.pool.connection() as conn:
        found = await providers.get(conn, project_of(session), provider_id)
    if found is None:
        return render(request, "error.html", 404, title="Not found", message=f"provider {provider_id}: not found")
    config = orjson.dumps(found.config, option=orjson.OPT_INDENT_2).decode()
    return await page(request, "provider.html", provider=found, config=config, outcome=None)


@router.post("/providers/{provider_id}")
async def update_provider(request: Request, session: Signed, provider_id: UUID) -> Response:
    form = await editor_form(request, session, "admin", "changing a provider")
    to = f"/console/providers/{provider_id}"
    try:
        values: dict[str, Any] = {"config": _json_field(form, "config"), "is_default": field(form, "is_default") == "1"}
        secrets = _json_field(form, "secrets")
        if secrets:
            values["secrets"] = secrets
        if field(form, "name"):
            values["name"] = field(form, "name")
        body = providers.UpdateProvider.model_validate(values)
    except ValueError as exc:
        return _fail(request, to, exc)
    async with request.app.state.pool.connection() as conn:
        try:
            await providers.update(conn, request.app.state.keyring, project_of(session), provider_id, body)
        except _PROVIDER_REFUSALS as exc:
            return _fail(request, to, exc)
    return redirect(request, to, "provider saved")


@router.post("/providers/{provider_id}/test")
async def test_provider(request: Request, session: Signed, provider_id: UUID) -> Response:
    form = await editor_form(request, session, "admin", "testing a provider")
    to = f"/console/providers/{provider_id}"
    try:
        body = providers.ProviderTest.model_validate({"to": field(form, "to")})
    except ValueError as exc:
        return _fail(request, to, exc)
    async with request.app.state.pool.connection() as conn:
        try:
            settings = await providers.load(conn, request.app.state.keyring, project_of(session), provider_id)
        except _PROVIDER_REFUSALS as exc:
            return _fail(request, to, exc)
    if settings is None:
        return redirect(request, "/console/providers", "provider not found", error=True)
    try:
        outcome = await providers.send_test_message(request.app.state.providers, settings, body)
    except ProviderConfigError as exc:
        return _fail(request, to, exc)
    text = f"test {outcome.status}" + (f": {outcome.error}" if outcome.error else "")
    return redirect(request, to, text, error=outcome.status != "sent")


@router.post("/providers/{provider_id}/delete")
async def delete_provider(request: Request, session: Signed, provider_id: UUID) -> Response:
    await editor_form(request, session, "admin", "deleting a provider")
    async with request.app.state.pool.connection() as conn:
        await providers.delete(conn, project_of(session), provider_id)
    return redirect(request, "/console/providers", "provider deleted")


# -- subscription groups --------------------------------------------------------------------------------------


@router.get("/groups")
async def groups_page(request: Request, session: Signed) -> Response:
    async with request.app.state.pool.connection() as conn:
        found = await messaging.groups(conn, project_of(session))
    return await page(request, "groups.html", groups=found)


@router.post("/groups")
async def create_group(request: Request, session: Signed) -> Response:
    form = await editor_form(request, session, "admin", "adding a subscription group")
    try:
        body = messaging.CreateGroup.model_validate(
            {
                "name": field(form, "name"),
                "channel": field(form, "channel"),
                "kind": field(form, "kind") or "marketing",
                "default_subscribed": field(form, "default_subscribed") != "0",
            }
        )
    except ValueError as exc:
        return _fail(request, "/console/groups", exc)
    async with request.app.state.pool.connection() as conn:
        try:
            await messaging.create_group(conn, project_of(session), body)
        except messaging.MessagingError as exc:
            return _fail(request, "/console/groups", exc)
    return redirect(request, "/console/groups", "group added")


@router.post("/groups/{group_id}/delete")
async def delete_group(request: Request, session: Signed, group_id: str) -> Response:
    await editor_form(request, session, "admin", "deleting a subscription group")
    async with request.app.state.pool.connection() as conn:
        try:
            await messaging.delete_group(conn, project_of(session), parse_uuid(group_id, "group"))
        except messaging.MessagingError as exc:
            return _fail(request, "/console/groups", exc)
    return redirect(request, "/console/groups", "group deleted")
