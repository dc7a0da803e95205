"""Routes recipients and providers reach without a key (the signature in the link is the proof): the open
pixel, click redirects, unsubscribe (a page, and RFC 8058 one-click POST), the preference page, and
providers' delivery/bounce/complaint webhooks. Hidden from the OpenAPI: they are not an API."""

from __future__ import annotations

import base64
import html
from urllib.parse import parse_qsl
from uuid import UUID

import orjson
from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from lunogram_server.http.body import read_body
from lunogram_server.http.problems import ProblemError
from lunogram_server.messaging import feedback, tracking
from lunogram_server.messaging.links import BadLink, Links

router = APIRouter(include_in_schema=False)
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
MAX_FORM_BYTES = 64 * 1024
MAX_FEEDBACK_BYTES = 1024 * 1024


def _links(request: Request) -> Links:
    links: Links = request.app.state.links
    return links


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:32rem;"
        "margin:3rem auto;padding:0 1rem}button{font:inherit;padding:.4rem 1rem}label{display:block;margin:.3rem 0}"
        f"</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


@router.get("/t/o/{token}")
async def open_pixel(token: str, request: Request) -> Response:
    """Always the pixel (a bad link must not show a broken image); a good one records the open."""
    try:
        async with request.app.state.pool.connection() as conn:
            await tracking.opened(conn, _links(request), token)
    except BadLink:
        pass
    return Response(PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})


@router.get("/t/c/{token}")
async def click(token: str, request: Request) -> Response:
    try:
        async with request.app.state.pool.connection() as conn:
            url = await tracking.clicked(conn, _links(request), token)
    except BadLink:
        raise ProblemError(404, "link: not a link of ours") from None
    return RedirectResponse(
        url, status_code=302, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    )


@router.get("/unsubscribe/{token}")
async def unsubscribe_page(token: str, request: Request) -> Response:
    """A page with a button: mail scanners follow GET links, so GET alone never unsubscribes."""
    try:
        _links(request).read("unsubscribe", token)
    except BadLink:
        return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
    action = html.escape(str(request.url.path))
    return _page(
        "Unsubscribe",
        f'<form method=post action="{action}"><p>Stop receiving these messages?</p>'
        "<button type=submit name=confirm value=yes>Unsubscribe</button></form>",
    )


@router.post("/unsubscribe/{token}")
async def unsubscribe(token: str, request: Request) -> Response:
    """RFC 8058 one-click (`List-Unsubscribe=One-Click`, from the mail client) or the page's button."""
    body = (await read_body(request, MAX_FORM_BYTES)).decode(errors="replace")
    source = "one_click" if "List-Unsubscribe=One-Click" in body else "unsubscribe_link"
    try:
        async with request.app.state.pool.connection() as conn:
            done = await tracking.unsubscribe(conn, _links(request), token, source)
            prefs = _links(request).preferences_url(done["project_id"], done["user_id"])
    except BadLink:
        return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
    return _page(
        "Unsubscribed",
        "<p>You will not receive these messages any more.</p>"
        f'<p><a href="{html.escape(prefs)}">Your preferences</a></p>',
    )


@router.get("/preferences/{token}")
async def preferences_page(token: str, request: Request) -> Response:
    try:
        async with request.app.state.pool.connection() as conn:
            _, _, groups = await tracking.preferences(conn, _links(request), token)
    except BadLink:
        return _page("Link not valid", "<p>This link is not valid.</p>", 404)
    return _page("Your preferences", _preferences_form(str(request.url.path), groups))


@router.post("/preferences/{token}")
async def save_preferences(token: str, request: Request) -> Response:
    body = (await read_body(request, MAX_FORM_BYTES)).decode(errors="replace")
    chosen = set()
    for key, value in parse_qsl(body):
        if key == "group":
            try:
                chosen.add(UUID(value))
            except ValueError:
                continue
    try:
        async with request.app.state.pool.connection() as conn:
            groups = await tracking.set_preferences(conn, _links(request), token, chosen)
    except BadLink:
        return _page("Link not valid", "<p>This link is not valid.</p>", 404)
    return _page("Your preferences", "<p>Saved.</p>" + _preferences_form(str(request.url.path), groups))


def _preferences_form(action: str, groups: list[dict[str, object]]) -> str:
    rows = []
    for group in groups:
        name = html.escape(str(group["name"]))
        if group["kind"] == "transactional":
            rows.append(f"<label><input type=checkbox checked disabled> {name} (always sent)</label>")
        else:
            checked = " checked" if group["subscribed"] else ""
            rows.append(f'<label><input type=checkbox name=group value="{group["id"]}"{checked}> {name}</label>')
    button = "<p><button type=submit>Save</button></p>"
    return f'<form method=post action="{html.escape(action)}">{"".join(rows)}{button}</form>'


@router.post("/webhooks/messages/{provider_id}/{token}")
async def provider_feedback(provider_id: UUID, token: str, request: Request) -> Response:
    body = await read_body(request, MAX_FEEDBACK_BYTES)
    url = str(request.url)
    async with request.app.state.pool.connection() as conn:
        try:
            changed = await feedback.receive(
                conn,
                _links(request),
                request.app.state.keyring,
                provider_id,
                token,
                body,
                url=url,
                signature=request.headers.get("x-twilio-signature"),
            )
        except feedback.Refused as exc:
            raise ProblemError(exc.status, str(exc)) from None
    return Response(orjson.dumps({"applied": changed}), media_type="application/json")
