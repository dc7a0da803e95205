"""The journey graph editor in a real headless Chromium (Playwright) against a real `lunogram serve`.

The editor's page is served under the server's own origin: Playwright answers `/__editor_test` with a small
HTML page and the committed bundle, so the bundle calls the real admin API same-origin (here with a secret
key). Nothing of the server is stubbed: every other request goes to it.

The browser is the one every browser test gets (the `browser` fixture, browser_helpers.py: the system's Chromium;
without it these tests skip, except in CI, where they fail). Screenshots: test-artifacts/screenshots/editor-*.png.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect

from browser_helpers import ROOT, SCREENSHOTS
from helpers import Server, ident, uid, wait_until

BUNDLE = ROOT / "src" / "lunogram_server" / "console" / "static" / "editor"
TIMEOUT_MS = 20_000
CSRF_TOKEN = "csrf-token-of-the-page"


@pytest.fixture(scope="module")
def eserver(server_factory: Callable[..., Server]) -> Server:
    return server_factory(extra_env={"LUNOGRAM_JOURNEY_POLL_SECONDS": "0.2"})


@pytest.fixture
def ec(eserver: Server) -> Iterator[httpx.Client]:
    with eserver.client() as c:
        yield c


def _page_html(journey_id: str, key: str, read_only: bool) -> str:
    options = {
        "journeyId": journey_id,
        "apiBase": "/api/admin",
        "csrfToken": CSRF_TOKEN,
        "apiKey": key,
        "readOnly": read_only,
        "pollSeconds": 0.5,
    }
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Journey editor</title>
<link rel="stylesheet" href="/__editor_test/editor.css"></head>
<body style="margin:0"><main><div id="editor" style="height:100vh"></div></main>
<script src="/__editor_test/editor.js"></script>
<script>window.editor = LunogramJourneyEditor.mount(document.getElementById("editor"), {json.dumps(options)});</script>
</body></html>"""


@pytest.fixture
def open_editor(browser: Browser, eserver: Server) -> Iterator[Callable[..., Page]]:
    contexts = []
    errors: list[str] = []  # uncaught errors in any page: none is acceptable

    def open_(journey_id: str, read_only: bool = False) -> Page:
        context = browser.new_context(viewport={"width": 1280, "height": 720})
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        def serve(route: Route) -> None:
            name = route.request.url.split("/__editor_test", 1)[1].split("?", 1)[0].lstrip("/")
            if name in ("editor.js", "editor.css"):
                kind = "text/javascript" if name.endswith(".js") else "text/css"
                route.fulfill(status=200, content_type=kind, body=(BUNDLE / name).read_bytes())
            else:
                route.fulfill(
                    status=200, content_type="text/html", body=_page_html(journey_id, eserver.secret_key, read_only)
                )

        page.route(f"{eserver.root_url}/__editor_test**", serve)
        page.goto(f"{eserver.root_url}/__editor_test")
        expect(page.locator(".lje-toolbar")).to_be_visible()
        assert errors == [], errors
        return page

    yield open_
    for context in contexts:
        context.close()
    assert errors == [], errors


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"editor-{name}.png"))


def node(page: Page, key: str) -> Any:
    return page.locator(f'.react-flow__node[data-id="{key}"]')


def drag_step(page: Page, palette_id: str, x: int, y: int) -> None:
    """Drag a palette entry onto the graph at (x, y) of the canvas."""
    page.drag_and_drop(f'[data-palette="{palette_id}"]', ".lje-canvas", target_position={"x": x, "y": y})


def connect(page: Page, source: str, handle: str, target: str) -> None:
    """Draw an edge with the mouse, from a step's exit handle to another step's entry handle."""
    start = node(page, source).locator(f'.react-flow__handle.source[data-handleid="{handle}"]').bounding_box()
    end = node(page, target).locator(".react-flow__handle.target").bounding_box()
    assert start is not None, f"no exit {handle} on {source}"
    assert end is not None, f"no way into {target}"
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(end["x"] + end["width"] / 2, end["y"] + end["height"] / 2, steps=8)
    page.mouse.up()
    expect(page.locator(f'.react-flow__edge[data-id="{source}:{handle}"]')).to_have_count(1)


def has_class(name: str) -> re.Pattern[str]:
    return re.compile(rf"(^|\s){re.escape(name)}(\s|$)")


def create_journey(client: httpx.Client, steps: dict[str, Any], publish: bool = False) -> dict[str, Any]:
    created = client.post("/admin/journeys", json={"name": uid("Editor journey"), "graph": {"steps": steps}})
    assert created.status_code == 201, created.text
    journey = dict(created.json())
    if publish:
        published = client.post(f"/admin/journeys/{journey['id']}/publish")
        assert published.status_code == 200, published.text
        journey = dict(published.json())
    return journey


def upsert_user(client: httpx.Client, external_id: str, email: str) -> None:
    response = client.post("/client/users", json={"identifier": [ident(external_id)], "email": email})
    assert response.status_code in (200, 201, 202), response.text


def test_build_publish_and_watch_a_three_step_journey(
    open_editor: Callable[..., Page], ec: httpx.Client, eserver: Server
) -> None:
    journey = create_journey(ec, {"start": {"type": "entrance", "trigger": {"kind": "api"}, "x": 0, "y": 0}})
    page = open_editor(journey["id"])
    event = uid("signup")
    changes: list[tuple[str, str, dict[str, str]]] = []
    page.on(
        "request",
        lambda r: changes.append((r.method, r.url, r.headers)) if r.method != "GET" and "/api/" in r.url else None,
    )

    # the step the journey was created with goes (selected, then the Delete key)
    node(page, "start").click()
    page.keyboard.press("Delete")
    expect(node(page, "start")).to_have_count(0)

    # three steps dragged from the palette, connected with the mouse
    drag_step(page, "entrance_event", 240, 60)
    drag_step(page, "update_user", 240, 250)
    drag_step(page, "exit", 240, 440)
    for key in ("entrance_1", "update_user_1", "exit_1"):
        expect(node(page, key)).to_be_visible()
    connect(page, "entrance_1", "next", "update_user_1")
    connect(page, "update_user_1", "next", "exit_1")

    # configured in the side panel: the entrance's event, the update's data (with a broken template)
    node(page, "entrance_1").click()
    page.get_by_label("Event name").fill(event)
    node(page, "update_user_1").click()
    data = page.get_by_label("Data to merge into the user (JSON object; strings may be Liquid templates)")
    data.fill('{"greeting": "Hi {{ user.email "}')
    shot(page, "build")

    # saved: the draft keeps the steps, their exits and positions; /validate finds the template
    page.get_by_role("button", name="Save draft").click()
    expect(page.locator(".lje-message")).to_contain_text("Draft saved, with problems")
    expect(node(page, "update_user_1").locator(".lje-badge-problems")).to_have_text("1 problem")
    expect(node(page, "update_user_1").locator(".lje-node-problems")).to_contain_text("data: template")
    expect(page.locator(".lje-panel-problems")).to_contain_text("template")
    saved = ec.get(f"/admin/journeys/{journey['id']}").json()["draft_graph"]["steps"]
    assert set(saved) == {"entrance_1", "update_user_1", "exit_1"}
    assert saved["entrance_1"]["trigger"] == {"kind": "event", "event": event}
    assert saved["entrance_1"]["next"] == "update_user_1"
    assert saved["update_user_1"]["next"] == "exit_1"
    assert saved["entrance_1"]["y"] < saved["update_user_1"]["y"] < saved["exit_1"]["y"]
    shot(page, "problem")

    # fixed, then published (publishing saves first)
    data.fill('{"greeting": "Hi {{ user.email }}"}')
    page.get_by_role("button", name="Publish").click()
    expect(page.locator(".lje-message")).to_contain_text("Published version 1")
    expect(page.locator(".lje-status")).to_have_text("live")
    expect(page.locator(".lje-badge-problems")).to_have_count(0)
    through = node(page, "entrance_1").locator('[data-count="through"]')
    expect(through).to_have_text("0 through")

    # an event through the Client API: the run goes through, the counts on the graph follow
    who = uid("walker")
    upsert_user(ec, who, f"{who}@example.com")
    sent = ec.post("/client/users/events", json=[{"name": event, "identifier": [ident(who)]}])
    assert sent.status_code == 202, sent.text
    expect(through).to_have_text("1 through")
    expect(node(page, "update_user_1").locator('[data-count="through"]')).to_have_text("1 through")
    expect(node(page, "exit_1").locator('[data-count="through"]')).to_have_text("1 through")
    profile = wait_until(
        lambda: (u := ec.get("/admin/users", params={"external_id": who}).json())["data"].get("greeting") and u,
        what="the update step's data",
    )
    assert profile["data"]["greeting"] == f"Hi {who}@example.com"
    shot(page, "counts")

    # the user's path, highlighted on the graph with each step's outcome
    page.get_by_role("tab", name="Counts and paths").click()
    page.get_by_label("User id or external id").fill(who)
    page.get_by_role("button", name="Show path").click()
    for key, outcome in (("entrance_1", "entered"), ("update_user_1", "updated"), ("exit_1", "exited")):
        expect(node(page, key).locator(".lje-node")).to_have_class(has_class("lje-trail-user"))
        expect(node(page, key).locator(".lje-node-trail li")).to_have_attribute("data-outcome", outcome)
    expect(page.locator(".react-flow__edge.lje-edge-trail")).to_have_count(2)
    shot(page, "user-path")

    # the dry run for another user, with the entering event: drawn with the reason at each step
    other = uid("dry")
    upsert_user(ec, other, f"{other}@example.com")
    page.get_by_label("Simulate for user (id or external id)").fill(other)
    page.get_by_label("Entering event (JSON, optional)").fill(json.dumps({"name": event, "data": {"plan": "pro"}}))
    page.get_by_role("button", name="Run the dry run").click()
    expect(page.locator(".lje-trail")).to_contain_text("ends exited")
    expect(node(page, "update_user_1").locator(".lje-node")).to_have_class(has_class("lje-trail-sim"))
    update_reason = node(page, "update_user_1").locator(".lje-node-trail li")
    expect(update_reason).to_have_attribute("data-outcome", "would_update")
    expect(update_reason).to_contain_text("greeting")
    expect(node(page, "exit_1").locator(".lje-node-trail li")).to_contain_text("exits")
    shot(page, "dry-run")
    # the dry run changed nothing
    assert "greeting" not in ec.get("/admin/users", params={"external_id": other}).json()["data"]

    # pause and resume from the toolbar
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".lje-status")).to_have_text("paused")
    assert ec.get(f"/admin/journeys/{journey['id']}").json()["status"] == "paused"
    page.get_by_role("button", name="Resume").click()
    expect(page.locator(".lje-status")).to_have_text("live")

    # every change the editor made went to the admin API, same-origin, with the page's CSRF token
    made = {(method, url.split("/api/admin/journeys/", 1)[-1].split("/", 1)[-1]) for method, url, _ in changes}
    assert made >= {("PUT", "draft"), ("POST", "validate"), ("POST", "publish"), ("POST", "simulate")}
    assert made >= {("POST", "pause"), ("POST", "resume")}
    for method, url, headers in changes:
        assert url.startswith(f"{eserver.root_url}/api/admin/"), url
        assert headers.get("x-csrf-token") == CSRF_TOKEN, (method, url)


# what each palette entry becomes, and whether a save refuses it until its required fields are filled in
PALETTE = [
    ("entrance_event", "entrance_1", True),
    ("entrance_organization_event", "entrance_2", True),
    ("entrance_list", "entrance_3", True),
    ("entrance_schedule", "entrance_4", True),
    ("entrance_api", "entrance_5", False),
    ("delay_duration", "delay_1", False),
    ("delay_time_of_day", "delay_2", False),
    ("delay_date", "delay_3", True),
    ("wait_for_event", "wait_for_event_1", True),
    ("condition", "condition_1", False),
    ("split", "split_1", False),
    ("experiment", "experiment_1", False),
    ("rate_limit", "rate_limit_1", False),
    ("send", "send_1", True),
    ("webhook", "webhook_1", False),
    ("update_user", "update_user_1", True),
    ("add_to_list", "add_to_list_1", True),
    ("remove_from_list", "remove_from_list_1", True),
    ("emit_event", "emit_event_1", True),
    ("enter_journey", "enter_journey_1", True),
    ("goal", "goal_1", True),
    ("exit", "exit_1", False),
]


def test_every_step_type_from_the_keyboard_and_past_versions_read_only(
    open_editor: Callable[..., Page], ec: httpx.Client
) -> None:
    v1 = {"first": {"type": "entrance", "trigger": {"kind": "api"}, "next": "bye"}, "bye": {"type": "exit"}}
    journey = create_journey(ec, v1, publish=True)
    v2 = {"second": {"type": "entrance", "trigger": {"kind": "api"}}}
    assert ec.put(f"/admin/journeys/{journey['id']}/draft", json={"graph": {"steps": v2}}).status_code == 200
    assert ec.post(f"/admin/journeys/{journey['id']}/publish").status_code == 200
    page = open_editor(journey["id"])

    # every palette entry, added with the keyboard (focus, Enter)
    for palette_id, _, _ in PALETTE:
        page.locator(f'[data-palette="{palette_id}"]').focus()
        page.keyboard.press("Enter")
    for palette_id, key, _ in PALETTE:
        expected_type = palette_id.split("_")[0] if palette_id.startswith(("entrance", "delay")) else palette_id
        expect(node(page, key).locator(".lje-node")).to_have_attribute("data-type", expected_type)

    # the save is refused; each step missing a required field shows it, the others show nothing
    page.get_by_role("button", name="Save draft").click()
    expect(page.locator(".lje-message")).to_contain_text("Not saved")
    for _, key, refused in PALETTE:
        expect(node(page, key).locator(".lje-badge-problems")).to_have_count(1 if refused else 0)
    expect(node(page, "entrance_1").locator(".lje-node-problems")).to_contain_text("trigger.event")
    expect(node(page, "add_to_list_1").locator(".lje-node-problems")).to_contain_text("list_id")
    assert ec.get(f"/admin/journeys/{journey['id']}").json()["draft_graph"] is None  # nothing was saved
    shot(page, "palette")

    # a past version (not the live one) is shown read-only: no palette, no deleting
    page.get_by_label("Version shown").select_option("1")
    expect(node(page, "first")).to_be_visible()
    expect(node(page, "bye")).to_be_visible()
    expect(page.locator(".lje-palette")).to_have_count(0)
    expect(page.locator(".lje-readonly-note")).to_contain_text("version 1")
    node(page, "first").click()
    page.keyboard.press("Delete")
    expect(node(page, "first")).to_have_count(1)
    expect(page.get_by_label("Event name")).to_have_count(0)  # an API entrance: nothing to name
    expect(page.get_by_label("Trigger")).to_be_disabled()
    shot(page, "version")
    # and the unsaved draft is still there when going back to it
    page.get_by_label("Version shown").select_option("draft")
    expect(node(page, "goal_1")).to_be_visible()

    # mounted read-only (a viewer): the live version, nothing that changes anything
    viewer = open_editor(journey["id"], read_only=True)
    expect(node(viewer, "second")).to_be_visible()
    expect(viewer.get_by_label("Version shown")).to_have_value("2")
    for name in ("Save draft", "Validate", "Publish", "Pause"):
        expect(viewer.get_by_role("button", name=name)).to_have_count(0)
    expect(viewer.locator(".lje-palette")).to_have_count(0)
    expect(viewer.locator('option[value="draft"]')).to_have_count(0)
