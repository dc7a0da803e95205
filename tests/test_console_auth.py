"""Console accounts and access without a browser: the first-owner link, sign-in and its limit, sessions
and CSRF on the admin API, roles (a viewer changes nothing), logout, the CLI. Secret keys keep working."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from console_helpers import (
    OWNER_PASSWORD,
    Console,
    browser_client,
    cli,
    create_owner,
    login,
    login_token_of,
    make_user,
    setup_link,
)
from helpers import Server, uid, wait_until

RULE = {"type": "property", "path": "data.plan", "op": "equals", "value": "pro"}


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = dict(response.json())
    assert body["status"] == status, body
    assert body["title"], body
    assert body["detail"], body
    return body


def test_the_first_owner_link_works_once_and_there_is_no_default_password(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory()
    link = setup_link(server)
    assert link.startswith(f"http://127.0.0.1:{server.port}/console/setup/")
    with browser_client(server) as anonymous:
        # nothing to sign in with before the link is used
        page = anonymous.get("/console/login")
        refused = anonymous.post(
            "/console/login",
            data={"email": "admin@example.com", "password": "admin", "login_token": login_token_of(page.text)},
        )
        assert refused.status_code == 401
        assert anonymous.get("/console").status_code == 303  # to the login page
    owner = create_owner(server, "first@example.com")
    home = owner.http.get("/console")
    assert home.status_code == 200
    assert "first@example.com" in home.text
    cookie = owner.http.cookies.jar
    session_cookie = next(c for c in cookie if c.name == "lunogram_session")
    assert session_cookie.has_nonstandard_attr("HttpOnly")
    assert session_cookie.path == "/"
    assert not session_cookie.secure  # served over http here; https makes it Secure
    assert "default-src 'self'" in home.headers["content-security-policy"]
    # the link is spent
    with browser_client(server) as again:
        path = link.split(str(server.port), 1)[1]
        assert again.get(path).status_code == 410
    # another server on the same database: the installation has an owner, no new link
    second = server_factory(database_url=server.database_url)
    assert "Console      :" in second.log()
    assert "First owner" not in second.log()
    owner.close()


def test_a_setup_link_expires(server_factory: Callable[..., Server]) -> None:
    server = server_factory(extra_env={"LUNOGRAM_CONSOLE_LINK_HOURS": "0.0005"})  # 1.8 s
    path = setup_link(server).split(str(server.port), 1)[1]
    with browser_client(server) as http:
        wait_until(lambda: http.get(path).status_code == 410, timeout=15, what="the link to expire")


def test_sign_in_failures_are_limited_per_account_and_per_address(server_factory: Callable[..., Server]) -> None:
    server = server_factory(
        extra_env={
            "LUNOGRAM_CONSOLE_LOGIN_FAILURES_PER_ACCOUNT": "3",
            "LUNOGRAM_CONSOLE_LOGIN_FAILURES_PER_ADDRESS": "5",
        }
    )
    create_owner(server, "guarded@example.com").close()
    for _ in range(3):
        _, answer = login(server, "guarded@example.com", "wrong password!")
        assert answer.status_code == 401
    # the account is locked for the window: even the right password gets 429 (and no hashing is spent)
    _, answer = login(server, "guarded@example.com", OWNER_PASSWORD)
    assert answer.status_code == 429
    assert int(answer.headers["Retry-After"]) > 0
    # two more failures from this address on other accounts reach the address limit
    for _ in range(2):
        _, answer = login(server, "nobody@example.com", "wrong password!")
        assert answer.status_code == 401
    _, answer = login(server, "someone-else@example.com", "whatever password")
    assert answer.status_code == 429


def test_a_session_calls_the_admin_api_with_its_csrf_token_and_secret_keys_keep_working(
    console_server: Server, console_owner: Console
) -> None:
    owner = console_owner
    assert owner.api("GET", "/api/admin/lists").status_code == 200
    name = uid("list")
    # a change without the session's CSRF token is refused and changes nothing
    no_token = owner.http.post("/api/admin/lists", json={"name": name})
    assert "X-CSRF-Token" in _problem(no_token, 403)["detail"]
    wrong = owner.http.post("/api/admin/lists", json={"name": name}, headers={"X-CSRF-Token": "nope"})
    _problem(wrong, 403)
    listed = owner.api("GET", "/api/admin/lists").json()
    assert name not in [item["name"] for item in listed]
    made = owner.api("POST", "/api/admin/lists", json={"name": name})
    assert made.status_code == 201, made.text
    # secret keys: as before, with or without a session cookie alongside
    with console_server.client() as key:
        assert key.get(f"/admin/lists/{made.json()['id']}").status_code == 200
    both = owner.http.get(
        f"/api/admin/lists/{made.json()['id']}", headers={"Authorization": f"Bearer {console_server.secret_key}"}
    )
    assert both.status_code == 200
    # the client API is for keys only: a cookie is no key
    assert owner.http.post("/api/client/users", json={"identifier": [{"external_id": uid()}]}).status_code == 401


def test_a_viewer_can_read_but_never_change_anything(console_server: Server, console_owner: Console) -> None:
    email = f"{uid('viewer')}@example.com"
    make_user(console_server, email, "viewer")
    viewer, answer = login(console_server, email, OWNER_PASSWORD)
    assert answer.status_code == 303
    made = console_owner.api("POST", "/api/admin/lists", json={"name": uid("list"), "rule": RULE})
    list_id = made.json()["id"]
    assert viewer.api("GET", "/api/admin/lists").status_code == 200
    assert viewer.api("GET", f"/api/admin/lists/{list_id}").status_code == 200
    # reads that are POSTs are allowed: counting a rule changes nothing
    counted = viewer.api("POST", "/api/admin/lists/preview", json={"rule": RULE})
    assert counted.status_code == 200
    assert counted.json()["count"] >= 0
    for method, path, body in [
        ("POST", "/api/admin/lists", {"name": "nope"}),
        ("PATCH", f"/api/admin/lists/{list_id}", {"name": "renamed"}),
        ("DELETE", f"/api/admin/lists/{list_id}", None),
        ("POST", "/api/admin/journeys", {"name": "nope", "graph": {"steps": {}}}),
        ("POST", "/api/admin/keys", {"kind": "secret"}),
        ("POST", "/api/admin/subscription-groups", {"name": "g", "channel": "email"}),
    ]:
        refused = viewer.api(method, path, json=body)
        assert "viewer" in _problem(refused, 403)["detail"], (method, path)
    assert console_owner.api("GET", f"/api/admin/lists/{list_id}").json()["name"] == made.json()["name"]
    viewer.close()


def test_an_editor_changes_content_but_not_keys_or_providers(console_server: Server, console_owner: Console) -> None:
    email = f"{uid('editor')}@example.com"
    make_user(console_server, email, "editor")
    editor, _ = login(console_server, email, OWNER_PASSWORD)
    assert editor.api("POST", "/api/admin/lists", json={"name": uid("list")}).status_code == 201
    _problem(editor.api("POST", "/api/admin/keys", json={"kind": "public"}), 403)
    _problem(editor.api("POST", "/api/admin/providers", json={"name": "x", "kind": "webhook"}), 403)
    made = console_owner.api("POST", "/api/admin/keys", json={"kind": "public", "name": "by the owner"})
    assert made.status_code == 201
    assert made.json()["key"].startswith("pk_")
    editor.close()


def test_logout_ends_the_session_on_every_client(console_server: Server) -> None:
    email = f"{uid('leaver')}@example.com"
    make_user(console_server, email, "editor")
    first, _ = login(console_server, email, OWNER_PASSWORD)
    token = first.http.cookies["lunogram_session"]
    with browser_client(console_server) as copy:
        copy.cookies.set("lunogram_session", token)
        assert copy.get("/api/admin/lists").status_code == 200
        out = first.form("/console/logout", {})
        assert out.status_code == 303
        _problem(copy.get("/api/admin/lists"), 401)
        assert copy.get("/console").status_code == 303
    first.close()


def test_console_forms_need_the_csrf_token(console_server: Server) -> None:
    email = f"{uid('forms')}@example.com"
    make_user(console_server, email, "editor")
    editor, _ = login(console_server, email, OWNER_PASSWORD)
    refused = editor.http.post("/console/logout", data={})
    assert refused.status_code == 403
    assert editor.http.get("/console").status_code == 200  # still signed in
    assert editor.form("/console/logout", {}).status_code == 303
    editor.close()


def test_cli_creates_and_resets_console_users(console_server: Server) -> None:
    email = f"{uid('cli')}@example.com"
    made = cli(console_server, "users", "create", email, "--project", "default", "--role", "admin")
    assert made.returncode == 0, made.stderr
    link = made.stdout.strip().rsplit(" ", 1)[1]
    assert "/console/link/" in link
    path = "/console/link/" + link.rsplit("/", 1)[1]  # printed with the configured address, not the test's port
    with browser_client(console_server) as http:
        page = http.get(path)
        assert page.status_code == 200
        assert email in page.text
        set_password = http.post(
            path,
            data={
                "password": OWNER_PASSWORD,
                "password_again": OWNER_PASSWORD,
                "login_token": login_token_of(page.text),
            },
        )
        assert set_password.status_code == 303
        assert http.get("/console").status_code == 200
        assert http.get(path).status_code == 410  # once
        reset = cli(console_server, "users", "reset", email, "--password-stdin", stdin="another long password\n")
        assert reset.returncode == 0, reset.stderr
        assert http.get("/console").status_code == 303  # the reset ended the session
    _, refused = login(console_server, email, OWNER_PASSWORD)
    assert refused.status_code == 401
    signed, ok = login(console_server, email, "another long password")
    assert ok.status_code == 303
    assert "admin" in signed.http.get("/console").text
    listing = cli(console_server, "users", "list")
    assert email in listing.stdout
    assert "default:admin" in listing.stdout
    duplicate = cli(console_server, "users", "create", email)
    assert duplicate.returncode == 1
    assert "already" in duplicate.stdout + duplicate.stderr
    signed.close()


@pytest.mark.parametrize("password", ["short", "x" * 2000])
def test_passwords_out_of_bounds_are_refused(console_server: Server, password: str) -> None:
    answer = cli(
        console_server, "users", "create", f"{uid('pw')}@example.com", "--password-stdin", stdin=password + "\n"
    )
    assert answer.returncode == 1
    assert "password" in answer.stdout + answer.stderr
