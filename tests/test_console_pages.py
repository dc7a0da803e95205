"""Console pages and the admin API routes they brought, over HTTP (the browser suite drives the same pages
in Chromium): every page renders, the event figures count what was applied, search reads its query the
documented ways, the rule preview counts as the list does, keys are made and revoked."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from console_helpers import OWNER_PASSWORD, Console, browser_client, login_token_of, make_user
from helpers import Server, ident, uid, wait_until


@pytest.fixture
def api(console_server: Server) -> Iterator[httpx.Client]:
    with console_server.client() as client:
        yield client


def _upsert(api: httpx.Client, external_id: str, **fields: object) -> str:
    made = api.post("/client/users", json={"identifier": [ident(external_id)], **fields})
    assert made.status_code == 200, made.text
    return str(made.json()["id"])


def test_the_catalogue_and_the_overview_count_applied_events(console_owner: Console, api: httpx.Client) -> None:
    name = uid("clicked")
    person = uid("counted")
    batch = [{"name": name, "identifier": [ident(person)], "data": {"n": n}} for n in range(3)]
    assert api.post("/client/users/events", json=batch).status_code == 202

    def counted() -> bool:
        page = console_owner.http.get("/console/events")
        row = re.search(rf"<strong>{name}</strong></td><td>user</td><td class=\"num\">(\d+)</td>", page.text)
        return row is not None and row.group(1) == "3"

    wait_until(counted, what="the catalogue to count three events")
    page = console_owner.http.get("/console/events").text
    assert "&#34;n&#34;: 2" in page  # the latest payload is the sample
    assert person in console_owner.http.get("/console/events/stream").text
    figures = console_owner.http.get("/console/overview/figures").text
    processed = re.search(r'id="fig-processed">([\d,]+)<', figures)
    assert processed is not None
    assert int(processed.group(1).replace(",", "")) >= 3


def test_search_reads_identifiers_emails_data_and_ids(console_owner: Console, api: httpx.Client) -> None:
    stem = uid("srch")
    first = _upsert(api, f"{stem}_a", email=f"{stem}.a@Example.com", data={"tier": stem, "seats": 7})
    second = _upsert(api, f"{stem}_b", data={"tier": stem, "address": {"city": "Paris"}})

    def found(q: str) -> tuple[str, list[str]]:
        answer = console_owner.api("GET", "/api/admin/users/search", params={"q": q})
        assert answer.status_code == 200, answer.text
        return answer.json()["mode"], [row["id"] for row in answer.json()["results"]]

    assert found(stem) == ("identifier", [first, second])
    assert found(f"{stem}_b") == ("identifier", [second])
    assert found(f"{stem}.A@example") == ("email", [first])  # e-mail prefixes ignore case
    assert found(f"tier={stem}")[0] == "data"
    assert sorted(found(f"tier={stem}")[1]) == sorted([first, second])
    assert found(f'{{"tier": "{stem}", "seats": 7}}') == ("data", [first])
    assert found("seats=7")[0] == "data"
    assert first in found("seats=7")[1]  # 7 is read as a number
    assert found("address.city=Paris")[0] == "data"
    assert second in found("address.city=Paris")[1]
    assert found(first) == ("id", [first])
    assert found(f"{stem}_zzz") == ("identifier", [])
    assert found("")[0] == "recent"
    bad = console_owner.api("GET", "/api/admin/users/search", params={"q": "{not json"})
    assert bad.status_code == 400
    assert bad.json()["detail"].startswith("q:")
    page = console_owner.http.get("/console/users/results", params={"q": stem})
    assert f"{stem}_a" in page.text
    assert f"{stem}_b" in page.text


def test_the_rule_preview_counts_what_the_list_will_hold(console_owner: Console, api: httpx.Client) -> None:
    tag = uid("tag")
    for n in range(4):
        _upsert(api, f"{tag}_{n}", data={"cohort": tag, "score": n})
    rule = {
        "type": "all",
        "rules": [
            {"type": "property", "path": "data.cohort", "op": "equals", "value": tag},
            {"type": "property", "path": "data.score", "op": "gte", "value": 2},
        ],
    }
    counted = console_owner.api("POST", "/api/admin/lists/preview", json={"rule": rule})
    assert counted.status_code == 200, counted.text
    assert counted.json() == {"count": 2, "capped": False}
    made = api.post("/admin/lists", json={"name": tag, "rule": rule}).json()
    wait_until(lambda: api.get(f"/admin/lists/{made['id']}").json()["member_count"] == 2, what="the list")
    # a rule that could not be saved is refused as saving would refuse it
    bad = api.post(
        "/admin/lists/preview", json={"rule": {"type": "list", "list_id": made["id"]}, "list_id": made["id"]}
    )
    assert bad.status_code == 400
    assert "itself" in bad.json()["detail"]
    # the console's builder counts through the same function
    form = {
        "r.type": "all",
        "r.rules.0.type": "property",
        "r.rules.0.path": "data.cohort",
        "r.rules.0.op": "equals",
        "r.rules.0.value": tag,
    }
    assert 'id="count-value">4<' in console_owner.form("/console/lists/count", form).text


def test_api_keys_are_made_listed_by_prefix_and_revoked(console_owner: Console, console_server: Server) -> None:
    made = console_owner.api("POST", "/api/admin/keys", json={"kind": "public", "name": "web", "allow": ["read"]})
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    listed = console_owner.api("GET", "/api/admin/keys").json()
    row = next(item for item in listed if item["id"] == made.json()["id"])
    assert row["key_prefix"] == key[:10]
    assert "key" not in row
    assert row["allow"] == ["read"]
    refused = console_owner.api("POST", "/api/admin/keys", json={"kind": "secret", "allow": ["read"]})
    assert refused.status_code == 400
    with console_server.client(key) as browser_key:
        assert browser_key.get("/admin/users/search").status_code == 200
        assert console_owner.api("DELETE", f"/api/admin/keys/{made.json()['id']}").status_code == 204
        wait_until(lambda: browser_key.get("/admin/users/search").status_code == 401, what="the key refused")
    again = console_owner.api("DELETE", f"/api/admin/keys/{made.json()['id']}")
    assert again.status_code == 404


def test_every_page_renders_for_the_owner(console_owner: Console, api: httpx.Client) -> None:
    person = uid("pages")
    user_id = _upsert(api, person, email=f"{person}@example.com", data={"plan": "pro"})
    org = api.post("/client/organizations", json={"identifier": [ident(uid("org"))], "name": "Pages Inc"})
    organization_id = org.json()["id"]
    journey = console_owner.form("/console/journeys", {"name": uid("j"), "event": "signup"})
    assert journey.status_code == 303
    journey_id = journey.headers["location"].split("/")[3]
    template = console_owner.form("/console/templates", {"name": uid("t"), "channel": "sms", "locale": "en"})
    assert template.status_code == 303
    static = console_owner.form("/console/lists/static", {"name": uid("static")})
    assert static.status_code == 303
    for path in [
        "/console",
        "/console/users",
        f"/console/users?q={person}",
        f"/console/users/{user_id}",
        "/console/organizations",
        f"/console/organizations/{organization_id}",
        "/console/events",
        "/console/lists",
        "/console/lists/new",
        static.headers["location"],
        "/console/journeys",
        f"/console/journeys/{journey_id}",
        f"/console/journeys/{journey_id}/editor",
        "/console/templates",
        template.headers["location"],
        "/console/campaigns",
        "/console/providers",
        "/console/groups",
        "/console/keys",
        "/console/project",
        "/console/members",
    ]:
        page = console_owner.http.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        assert "<main" in page.text
    missing = console_owner.http.get(f"/console/users/{organization_id}")
    assert missing.status_code == 404
    static_file = console_owner.http.get("/console/static/htmx.min.js")
    assert static_file.status_code == 200
    assert static_file.text.startswith("var htmx=")


def test_htmx_is_the_pinned_file_its_manifest_names() -> None:
    static = Path(__file__).resolve().parents[1] / "src" / "lunogram_server" / "console" / "static"
    manifest = (static / "VENDORED.md").read_text()
    row = re.search(r"\| htmx\.min\.js \| htmx\.org \(npm, [^)]*\) \| (2\.\d+\.\d+) \| ([0-9a-f]{64}) \|", manifest)
    assert row is not None
    assert hashlib.sha256((static / "htmx.min.js").read_bytes()).hexdigest() == row.group(2)
    assert b"htmx" in (static / "htmx.min.js").read_bytes()[:20]


def test_the_session_cookie_is_secure_behind_https(console_server: Server) -> None:
    email = f"{uid('tls')}@example.com"
    make_user(console_server, email, "viewer")
    https = {"X-Forwarded-Proto": "https"}  # from 127.0.0.1, a proxy uvicorn trusts by default
    with browser_client(console_server) as http:
        page = http.get("/console/login", headers=https)
        form_cookie = page.headers["set-cookie"]
        assert "secure" in form_cookie.lower()
        # a client keeps a Secure cookie for https only; this one talks http to the "proxy's" backend
        login_token = login_token_of(page.text)
        assert f"lunogram_login_csrf={login_token};" in form_cookie
        signed = http.post(
            "/console/login",
            headers={**https, "Cookie": f"lunogram_login_csrf={login_token}"},
            data={"email": email, "password": OWNER_PASSWORD, "login_token": login_token},
        )
        assert signed.status_code == 303, signed.text[:300]
        session = next(c for c in signed.headers.get_list("set-cookie") if c.startswith("lunogram_session="))
        flags = {part.strip().lower() for part in session.split(";")[1:]}
        assert {"secure", "httponly", "samesite=lax", "path=/"} <= flags

        # the same sign-in over plain http (no proxy saying https) gets a cookie without Secure
        page = http.get("/console/login")
        login_token = login_token_of(page.text)
        assert "secure" not in page.headers["set-cookie"].lower()
        signed = http.post(
            "/console/login",
            data={"email": email, "password": OWNER_PASSWORD, "login_token": login_token},
        )
        assert signed.status_code == 303, signed.text[:300]
        session = next(c for c in signed.headers.get_list("set-cookie") if c.startswith("lunogram_session="))
        flags = {part.strip().lower() for part in session.split(";")[1:]}
        assert "secure" not in flags
        assert {"httponly", "samesite=lax"} <= flags
