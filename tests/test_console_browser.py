"""The console in a real headless Chromium (Playwright) against a real `lunogram serve`.

One browser for the module (the `browser` fixture, browser_helpers.py: Debian's Chromium, installed by
scripts/test; without it these tests fail in CI and are skipped elsewhere, saying why), one server for this
module. Screenshots of every screen go to test-artifacts/screenshots/ (CI keeps that folder as its artifacts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from browser_helpers import SCREENSHOTS
from console_helpers import OWNER_PASSWORD, setup_link
from helpers import Server, ident, loopback_client, uid, wait_until
from journey_helpers import receiver

DESKTOP = {"width": 1280, "height": 720}
PHONE = {"width": 390, "height": 844}
OWNER_EMAIL = "owner@example.com"
expect.set_options(timeout=15_000)

# every visible control has a label: <label for>, a wrapping <label>, aria-label or aria-labelledby
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')].filter(el => {
  if (el.type === 'hidden' || el.offsetParent === null) return false;
  if (el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')) return false;
  if (el.closest('label')) return false;
  return !(el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`));
}).map(el => el.outerHTML.slice(0, 120))"""
OVERFLOW = "() => document.documentElement.scrollWidth - window.innerWidth"


@pytest.fixture(scope="module")
def site(server_factory: Callable[..., Server]) -> Server:
    return server_factory(
        extra_env={
            "LUNOGRAM_JOURNEY_POLL_SECONDS": "0.2",
            "LUNOGRAM_SEND_POLL_SECONDS": "0.2",
            "LUNOGRAM_LIST_POLL_SECONDS": "0.1",
            "LUNOGRAM_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
        }
    )


@pytest.fixture(scope="module")
def api(site: Server) -> Iterator[httpx.Client]:
    with site.client() as client:
        yield client


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def new_context(browser: Browser, site: Server, viewport: dict[str, int] = DESKTOP) -> BrowserContext:
    context = browser.new_context(viewport=viewport, base_url=site.root_url)  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    return context


def sign_in(page: Page, email: str, password: str) -> None:
    page.goto("/console/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("header .who")).to_contain_text(email)


@pytest.fixture(scope="module")
def owner(browser: Browser, site: Server) -> Iterator[Page]:
    """The first owner, made in the browser with the link the server printed; a page signed in as them."""
    context = new_context(browser, site)
    page = context.new_page()
    page.goto(setup_link(site))
    shot(page, "setup")
    page.get_by_label("E-mail").fill(OWNER_EMAIL)
    page.get_by_label("Name").fill("Olivia Owner")
    page.get_by_label("Password (at least 10 characters)").fill(OWNER_PASSWORD)
    page.get_by_label("Password again").fill(OWNER_PASSWORD)
    page.get_by_role("button", name="Create owner").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    yield page
    context.close()


def csrf_token(page: Page) -> str:
    return str(page.locator('input[name="csrf_token"]').first.get_attribute("value"))


def test_first_owner_setup_then_sign_in_and_out(browser: Browser, site: Server, owner: Page) -> None:
    expect(owner.locator("header .who")).to_contain_text(f"{OWNER_EMAIL} · owner")
    shot(owner, "overview")
    # the link is spent
    context = new_context(browser, site)
    page = context.new_page()
    page.goto(setup_link(site))
    expect(page.get_by_role("heading", name="This link cannot be used")).to_be_visible()
    # a wrong password is refused, the right one signs in, signing out ends the session
    page.goto("/console")
    expect(page).to_have_url(f"{site.root_url}/console/login")
    shot(page, "login")
    page.get_by_label("E-mail").fill(OWNER_EMAIL)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong e-mail or password")
    sign_in(page, OWNER_EMAIL, OWNER_PASSWORD)
    status = page.evaluate("async () => (await fetch('/api/admin/lists')).status")
    assert status == 200
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{site.root_url}/console/login")
    status = page.evaluate("async () => (await fetch('/api/admin/lists')).status")
    assert status == 401
    context.close()


def _invite(owner: Page, email: str, role: str) -> str:
    owner.goto("/console/members")
    owner.get_by_label("E-mail").fill(email)
    owner.locator("#m-role").select_option(role)
    owner.get_by_role("button", name="Add", exact=True).click()
    return str(owner.locator("#one-time-link").inner_text())


def _accept(browser: Browser, site: Server, link: str) -> Page:
    page = new_context(browser, site).new_page()
    page.goto(link)
    page.get_by_label("Password (at least 10 characters)").fill(OWNER_PASSWORD)
    page.get_by_label("Password again").fill(OWNER_PASSWORD)
    page.get_by_role("button", name="Set password and sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    return page


def test_a_viewer_is_blocked_from_changing_anything(
    browser: Browser, site: Server, owner: Page, api: httpx.Client
) -> None:
    link = _invite(owner, "viewer@example.com", "viewer")
    shot(owner, "members")
    viewer = _accept(browser, site, link)
    expect(viewer.locator("header .who")).to_contain_text("viewer")
    before = len(api.get("/admin/lists").json())
    # no forms to change anything
    viewer.goto("/console/lists")
    expect(viewer.get_by_role("heading", name="Lists")).to_be_visible()
    expect(viewer.get_by_role("button", name="Create static list")).to_have_count(0)
    viewer.goto("/console/keys")
    expect(viewer.get_by_role("button", name="Create key")).to_have_count(0)
    # and changes sent anyway, with the session's own CSRF token, are refused
    token = csrf_token(viewer)
    forced_form = viewer.evaluate(
        """async (token) => (await fetch('/console/lists/static', {method: 'POST',
             headers: {'Content-Type': 'application/x-www-form-urlencoded'},
             body: new URLSearchParams({csrf_token: token, name: 'sneaky'})})).status""",
        token,
    )
    assert forced_form == 403
    forced_api = viewer.evaluate(
        """async (token) => { const r = await fetch('/api/admin/lists', {method: 'POST',
             headers: {'Content-Type': 'application/json', 'X-CSRF-Token': token},
             body: JSON.stringify({name: 'sneaky'})});
             return [r.status, await r.json()]; }""",
        token,
    )
    assert forced_api[0] == 403
    assert "viewer" in forced_api[1]["detail"]
    assert len(api.get("/admin/lists").json()) == before
    # reading is fine, through the console and the API
    assert viewer.evaluate("async () => (await fetch('/api/admin/lists')).status") == 200
    # the journey editor mounts read-only: the live version, nothing that changes it
    steps = {"start": {"type": "entrance", "trigger": {"kind": "api"}}}
    made = api.post("/admin/journeys", json={"name": uid("Seen"), "graph": {"steps": steps}})
    assert made.status_code == 201, made.text
    assert api.post(f"/admin/journeys/{made.json()['id']}/publish").status_code == 200
    viewer.goto(f"/console/journeys/{made.json()['id']}/editor")
    editor = viewer.locator("#journey-editor")
    expect(editor.locator('.react-flow__node[data-id="start"]')).to_be_visible()
    expect(editor.get_by_label("Version shown")).to_have_value("1")
    for name in ("Save draft", "Validate", "Publish", "Pause"):
        expect(editor.get_by_role("button", name=name, exact=True)).to_have_count(0)
    expect(editor.locator(".lje-palette")).to_have_count(0)
    viewer.context.close()


def test_changes_without_the_csrf_token_are_refused(owner: Page, api: httpx.Client) -> None:
    before = len(api.get("/admin/lists").json())
    owner.goto("/console/lists")
    statuses = owner.evaluate(
        """async () => {
          const plain = await fetch('/api/admin/lists', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                    body: JSON.stringify({name: 'no token'})});
          const wrong = await fetch('/api/admin/lists', {method: 'POST',
                                    headers: {'Content-Type': 'application/json', 'X-CSRF-Token': 'forged'},
                                    body: JSON.stringify({name: 'wrong token'})});
          return [plain.status, wrong.status]; }"""
    )
    assert statuses == [403, 403]
    # a form whose token was tampered with
    owner.locator('form[action="/console/lists/static"] input[name="csrf_token"]').evaluate(
        "el => { el.value = 'tampered' }"
    )
    owner.get_by_label("Name").fill("tampered list")
    owner.get_by_role("button", name="Create static list").click()
    expect(owner.get_by_role("alert")).to_contain_text("CSRF")
    assert len(api.get("/admin/lists").json()) == before


def test_a_rule_list_fills_as_events_arrive_through_the_client_api(owner: Page, api: httpx.Client) -> None:
    event = uid("purchase")
    owner.goto("/console/lists/new")
    owner.get_by_label("Name").fill("Buyers")
    owner.locator('[name="r.rules.0.type"]').select_option("event")
    expect(owner.locator('[name="r.rules.0.name"]')).to_be_visible()
    owner.locator('[name="r.rules.0.name"]').fill(event)
    expect(owner.locator("#count-value")).to_have_text("0")
    # nested groups: add one, then remove it again
    owner.get_by_role("button", name="Add group").click()
    expect(owner.locator('[name="r.rules.1.type"]')).to_be_visible()
    shot(owner, "list-rule-builder")
    owner.get_by_role("button", name="Remove group").click()
    expect(owner.locator('[name="r.rules.1.type"]')).to_have_count(0)
    owner.get_by_role("button", name="Create list").click()
    expect(owner.get_by_role("heading", name="List Buyers")).to_be_visible()
    buyers = [uid("buyer") for _ in range(3)]
    for external_id in buyers:
        sent = api.post("/client/users/events", json=[{"name": event, "identifier": [ident(external_id)]}])
        assert sent.status_code == 202

    def members() -> bool:
        owner.reload()
        return owner.locator("#member-count").inner_text() == "3"

    wait_until(members, timeout=30, interval=0.3, what="three members")
    for external_id in buyers:
        expect(owner.locator("#members")).to_contain_text(external_id)
    shot(owner, "list")
    # the live count of the saved rule agrees
    owner.locator('[name="r.rules.0.name"]').press("End")
    owner.locator('[name="r.rules.0.name"]').type(" ")
    owner.locator('[name="r.rules.0.name"]').press("Backspace")
    expect(owner.locator("#count-value")).to_have_text("3")


def step_node(page: Page, key: str) -> Locator:
    return page.locator(f'#journey-editor .react-flow__node[data-id="{key}"]')


def configure(page: Page, key: str, new_key: str) -> None:
    """Select a step on the graph and rename it in the side panel (its exits follow)."""
    step_node(page, key).click()
    page.get_by_label("Key", exact=True).fill(new_key)
    page.get_by_label("Key", exact=True).press("Enter")
    expect(step_node(page, new_key)).to_be_visible()


def test_a_three_step_journey_is_built_published_and_a_user_goes_through_it(owner: Page, api: httpx.Client) -> None:
    owner.goto("/console/journeys")
    owner.get_by_label("Name").fill("Onboarding")
    owner.get_by_label("Entered by the event (empty: by the API)").fill("signed_up")
    owner.get_by_role("button", name="Create").click()
    # the console's journey page mounts the graph editor bundle on the draft: the entrance made above
    expect(owner.locator("#journey-editor .lje-toolbar")).to_be_visible()
    expect(step_node(owner, "start")).to_be_visible()
    expect(owner.locator("#journey-editor .lje-status")).to_have_text("draft")
    journey_id = owner.url.split("/")[-2]
    changes: list[tuple[str, str, str | None]] = []
    owner.on(
        "request",
        lambda r: (
            changes.append((r.method, r.url, r.headers.get("x-csrf-token")))
            if r.method != "GET" and "/api/" in r.url
            else None
        ),
    )

    # the entrance dragged to the top of the graph, three steps dragged from the palette below it
    canvas = "#journey-editor .lje-canvas"
    entrance, area = step_node(owner, "start").bounding_box(), owner.locator(canvas).bounding_box()
    assert entrance is not None
    assert area is not None
    owner.mouse.move(entrance["x"] + 40, entrance["y"] + 20)
    owner.mouse.down()
    owner.mouse.move(area["x"] + 160, area["y"] + 12, steps=10)
    owner.mouse.up()
    for palette_id, x, y in (("delay_duration", 120, 130), ("update_user", 120, 250), ("exit", 120, 370)):
        owner.drag_and_drop(f'[data-palette="{palette_id}"]', canvas, target_position={"x": x, "y": y})
    for key in ("delay_1", "update_user_1", "exit_1"):
        expect(step_node(owner, key)).to_be_visible()
    # each one configured in the side panel: its key, a wait of one second, the data the update writes
    configure(owner, "delay_1", "wait")
    owner.get_by_label("Duration: amount").fill("1")
    owner.get_by_label("Duration: unit").select_option("seconds")
    configure(owner, "update_user_1", "tag")
    owner.get_by_label("Data to merge into the user (JSON object; strings may be Liquid templates)").fill(
        '{"onboarded": true}'
    )
    configure(owner, "exit_1", "done")
    # connected: the entrance to the wait with the mouse (handle to handle), the rest with the exits' selects
    start = step_node(owner, "start").locator('.react-flow__handle.source[data-handleid="next"]').bounding_box()
    end = step_node(owner, "wait").locator(".react-flow__handle.target").bounding_box()
    assert start is not None
    assert end is not None
    owner.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    owner.mouse.down()
    owner.mouse.move(end["x"] + end["width"] / 2, end["y"] + end["height"] / 2, steps=8)
    owner.mouse.up()
    expect(owner.locator('#journey-editor .react-flow__edge[data-id="start:next"]')).to_have_count(1)
    step_node(owner, "wait").click()
    owner.get_by_label('Exit "next"').select_option("tag")
    step_node(owner, "tag").click()
    owner.get_by_label('Exit "next"').select_option("done")
    expect(owner.locator("#journey-editor .react-flow__edge")).to_have_count(3)
    shot(owner, "journey-editor")

    # published from the editor's toolbar (it saves, checks, then publishes)
    owner.locator("#journey-editor").get_by_role("button", name="Publish").click()
    expect(owner.locator("#journey-editor .lje-message")).to_contain_text("Published version 1")
    expect(owner.locator("#journey-editor .lje-status")).to_have_text("live")
    live = api.get(f"/admin/journeys/{journey_id}").json()
    assert live["status"] == "live"
    assert live["live_graph"]["steps"]["start"]["next"] == "wait"
    steps = live["live_graph"]["steps"]
    assert steps["start"]["y"] < steps["wait"]["y"] < steps["tag"]["y"] < steps["done"]["y"]  # where they were put
    assert live["live_graph"]["steps"]["wait"]["duration"] == {"value": 1, "unit": "seconds"}
    assert live["live_graph"]["steps"]["tag"]["data"] == {"onboarded": True}
    # its writes went to the admin API with the session's cookie and the page's CSRF token
    csrf = owner.locator("#journey-editor").get_attribute("data-csrf-token")
    assert {(method, url.rsplit("/", 1)[-1]) for method, url, _ in changes} >= {("PUT", "draft"), ("POST", "publish")}
    assert all(token == csrf for _, _, token in changes), changes
    owner.get_by_role("link", name="Back to the journey").click()
    expect(owner.locator("#journey-status")).to_have_text("live")
    person = uid("joiner")
    sent = api.post("/client/users/events", json=[{"name": "signed_up", "identifier": [ident(person)]}])
    assert sent.status_code == 202
    user = wait_until(
        lambda: (r := api.get("/admin/users", params={"external_id": person})).status_code == 200 and r.json(),
        what="the user",
    )
    owner.goto(f"/console/users/{user['id']}")

    def finished() -> bool:
        owner.reload()
        return "exited" in owner.locator("#user-runs").inner_text()

    wait_until(finished, timeout=30, interval=0.3, what="the run to end")
    expect(owner.locator("#user-runs")).to_contain_text("start → wait → tag → done")
    shot(owner, "user")
    owner.locator("#user-runs a", has_text="start → wait → tag → done").click()
    expect(owner.locator("#run-status")).to_have_text("exited")
    expect(owner.locator("#path li")).to_have_count(4)
    shot(owner, "run")
    owner.get_by_role("link", name="Onboarding").click()
    expect(owner.locator('#steps tr[data-step="tag"] td.num').first).to_have_text("1")
    owner.get_by_label("User external id").fill(person)
    owner.get_by_role("button", name="Simulate").click()
    expect(owner.locator("#simulation li").first).to_contain_text("start")
    shot(owner, "journey")
    assert api.get(f"/admin/users/{user['id']}").json()["data"]["onboarded"] is True


def test_a_template_is_previewed_for_a_user(owner: Page, api: httpx.Client) -> None:
    reader = uid("reader")
    made = api.post(
        "/client/users",
        json={
            "identifier": [ident(reader)],
            "email": f"{reader}@example.com",
            "locale": "fr",
            "data": {"name": "Grace"},
        },
    )
    assert made.status_code == 200
    owner.goto("/console/templates")
    owner.get_by_label("Name").fill("Welcome mail")
    owner.get_by_label("Channel").select_option("email")
    owner.get_by_role("button", name="Create").click()
    expect(owner.get_by_role("heading", name="Template Welcome mail")).to_be_visible()
    owner.get_by_label("Subject", exact=True).fill("Bonjour {{ user.data.name }}")
    owner.get_by_label("HTML", exact=True).fill("<h1 style='color:#3451b2'>Bienvenue {{ user.data.name }}</h1>")
    owner.locator("#preview_user").fill(reader)
    owner.get_by_role("button", name="Preview").click()
    expect(owner.locator("#preview-subject")).to_have_text("Bonjour Grace")
    expect(owner.locator("#preview-locale")).to_have_text("en")  # the template has only en: the user's fr falls back
    # unsaved edits are previewed live
    owner.get_by_label("Subject", exact=True).fill("Salut {{ user.data.name }}")
    expect(owner.locator("#preview-subject")).to_have_text("Salut Grace")
    expect(owner.frame_locator("iframe.preview").locator("h1")).to_have_text("Bienvenue Grace")
    shot(owner, "template")
    owner.get_by_role("button", name="Save template").click()
    expect(owner.get_by_role("status")).to_contain_text("template saved")
    owner.locator("#preview_user").fill("nobody-at-all")
    owner.get_by_role("button", name="Preview").click()
    expect(owner.locator("#preview-error")).to_contain_text("No user")


def test_an_api_key_is_created_used_and_revoked(owner: Page, site: Server) -> None:
    owner.goto("/console/keys")
    owner.get_by_label("Kind").select_option("secret")
    owner.get_by_label("Label").fill("from the console")
    owner.get_by_role("button", name="Create key").click()
    key = owner.locator("#new-key").inner_text()
    assert key.startswith("sk_")
    shot(owner, "keys")
    with loopback_client(base_url=site.base_url, headers={"Authorization": f"Bearer {key}"}) as client:
        assert client.get("/admin/lists").status_code == 200
        owner.goto("/console/keys")
        owner.once("dialog", lambda dialog: dialog.accept())
        owner.get_by_role("button", name=f"Revoke {key[:10]}").click()
        expect(owner.get_by_role("status")).to_contain_text("key revoked")
        expect(owner.locator(f'tr[data-prefix="{key[:10]}"] td').nth(5)).not_to_have_text("")
        wait_until(lambda: client.get("/admin/lists").status_code == 401, what="the revoked key to be refused")


def _campaign_with_sends(owner: Page, api: httpx.Client, url: str) -> str:
    """A webhook campaign to three users, sent: its page has statistics and a chart."""
    provider = api.post("/admin/providers", json={"name": uid("hook"), "kind": "webhook", "config": {"url": url}})
    assert provider.status_code == 201, provider.text
    template = api.post(
        "/admin/templates",
        json={
            "name": uid("ping"),
            "channel": "webhook",
            "variants": {"en": {"url": url, "body": '{"u": "{{ user.id }}"}'}},
        },
    )
    assert template.status_code == 201, template.text
    audience = api.post("/admin/lists", json={"name": "Audience"}).json()
    people = [[ident(uid("fan"))] for _ in range(3)]
    assert api.post(f"/admin/lists/{audience['id']}/members", json={"users": people}).status_code == 200
    owner.goto("/console/campaigns")
    owner.get_by_label("Name").fill("Launch")
    owner.get_by_label("To the list").select_option(audience["id"])
    owner.get_by_label("Template (its channel)").select_option(template.json()["id"])
    owner.get_by_role("button", name="Create").click()
    owner.get_by_role("button", name="Schedule").click()
    # the form's POST and redirect are a navigation: a reload while it is in flight finds no page to reload
    expect(owner.get_by_role("status")).to_contain_text("sending now")

    def sent() -> bool:
        owner.reload()
        return owner.locator("#stat-sent").inner_text() == "3"

    wait_until(sent, timeout=30, interval=0.3, what="three messages sent")
    owner.reload()
    expect(owner.locator("svg.chart")).to_be_visible()
    return owner.url


def test_every_screen_renders_with_labelled_controls(
    browser: Browser, site: Server, owner: Page, api: httpx.Client
) -> None:
    person = uid("tour")
    api.post(
        "/client/users",
        json={"identifier": [ident(person)], "email": f"{person}@example.com", "data": {"plan": "pro", "seats": 3}},
    )
    api.post(
        "/client/organizations", json={"identifier": [ident(uid("acme"))], "name": "Acme", "data": {"tier": "gold"}}
    )
    api.post(
        "/client/users/events", json=[{"name": "page_viewed", "identifier": [ident(person)], "data": {"path": "/"}}]
    )
    with receiver() as hook:
        campaign_url = _campaign_with_sends(owner, api, f"{hook.url}/campaign")
        assert len(hook.received("/campaign")) == 3
    shot(owner, "campaign")
    organization = api.get("/admin/organizations/search").json()["results"][0]["id"]
    user = api.get("/admin/users/search", params={"q": person}).json()["results"][0]["id"]
    screens = {
        "overview": "/console",
        "users": "/console/users",
        "users-data-search": "/console/users?q=plan%3Dpro",
        "user-profile": f"/console/users/{user}",
        "organizations": "/console/organizations",
        "organization": f"/console/organizations/{organization}",
        "events": "/console/events",
        "lists": "/console/lists",
        "journeys": "/console/journeys",
        "templates": "/console/templates",
        "campaigns": "/console/campaigns",
        "campaign": campaign_url,
        "providers": "/console/providers",
        "groups": "/console/groups",
        "keys": "/console/keys",
        "project": "/console/project",
        "members": "/console/members",
    }
    for name, path in screens.items():
        owner.goto(path)
        expect(owner.locator("main h1")).to_be_visible()
        assert owner.evaluate(UNLABELLED) == [], name
        shot(owner, f"screen-{name}")
    # new events show up in the live stream without a reload
    owner.goto("/console/events")
    fresh = uid("live")
    api.post("/client/users/events", json=[{"name": fresh, "identifier": [ident(person)]}])
    expect(owner.locator("#stream")).to_contain_text(fresh)
    expect(owner.locator("#catalogue")).to_contain_text("page_viewed")
    # keyboard: the first Tab reaches the skip link, which moves focus to the content
    owner.goto("/console")
    owner.keyboard.press("Tab")
    assert owner.evaluate("document.activeElement.className") == "skip"
    owner.keyboard.press("Enter")
    assert owner.evaluate("document.activeElement.id") == "main"
    # read-only pages fit a phone's width
    phone = new_context(browser, site, PHONE)
    page = phone.new_page()
    sign_in(page, OWNER_EMAIL, OWNER_PASSWORD)
    for name in ("overview", "user-profile", "events", "lists", "campaign"):
        page.goto(screens[name])
        expect(page.locator("main h1")).to_be_visible()
        assert page.evaluate(OVERFLOW) <= 1, name
        shot(page, f"phone-{name}")
    phone.close()
