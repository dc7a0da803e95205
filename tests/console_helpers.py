"""Helpers for console tests: the first-owner link from a server's banner, a signed-in HTTP client, and
console users made with the CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass

import httpx
import psycopg
from argon2 import PasswordHasher

from helpers import Server, loopback_client, wait_until

OWNER_PASSWORD = "correct horse battery staple"
_SETUP = re.compile(r"First owner  : (\S+/console/setup/(\S+))")
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_LOGIN_TOKEN = re.compile(r'name="login_token" value="([^"]+)"')


def setup_link(server: Server) -> str:
    """The one-time link the server printed (its URL as printed)."""
    found = wait_until(lambda: _SETUP.search(server.log()), timeout=10, what="the first-owner link in the banner")
    return str(found.group(1))


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no csrf_token in the page"
    return found.group(1)


def login_token_of(html: str) -> str:
    found = _LOGIN_TOKEN.search(html)
    assert found, "no login_token in the page"
    return found.group(1)


@dataclass
class Console:
    """A browser-like HTTP client: cookies kept, redirects not followed, the session's CSRF token known."""

    server: Server
    http: httpx.Client
    csrf: str = ""

    def refresh_csrf(self) -> str:
        page = self.http.get("/console")
        assert page.status_code == 200, page.text[:500]
        self.csrf = csrf_of(page.text)
        return self.csrf

    def form(self, path: str, data: dict[str, str]) -> httpx.Response:
        return self.http.post(path, data={**data, "csrf_token": self.csrf})

    def api(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """The admin API with the session (and its CSRF token on changes)."""
        headers = {"X-CSRF-Token": self.csrf} if method.upper() not in ("GET", "HEAD") else {}
        return self.http.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        self.http.close()


def browser_client(server: Server) -> httpx.Client:
    return loopback_client(base_url=server.root_url, timeout=30, follow_redirects=False)


def create_owner(server: Server, email: str = "owner@example.com") -> Console:
    """Use the server's setup link; the client is then signed in as the first owner."""
    http = browser_client(server)
    path = setup_link(server).split(str(server.port), 1)[1]
    page = http.get(path)
    assert page.status_code == 200, page.text[:500]
    done = http.post(
        path,
        data={
            "email": email,
            "name": "Owner",
            "password": OWNER_PASSWORD,
            "password_again": OWNER_PASSWORD,
            "login_token": login_token_of(page.text),
        },
    )
    assert done.status_code == 303, done.text[:500]
    console = Console(server, http)
    console.refresh_csrf()
    return console


def login(server: Server, email: str, password: str) -> tuple[Console, httpx.Response]:
    http = browser_client(server)
    page = http.get("/console/login")
    answer = http.post(
        "/console/login",
        data={"email": email, "password": password, "login_token": login_token_of(page.text), "next": "/console"},
    )
    console = Console(server, http)
    if answer.status_code == 303:
        console.refresh_csrf()
    return console, answer


def cli(server: Server, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`lunogram <args> --database-url <the server's>`."""
    return subprocess.run(
        [sys.executable, "-m", "lunogram_server", *args, "--database-url", server.database_url],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**server.env},
        check=False,
    )


def make_user(server: Server, email: str, role: str, password: str = OWNER_PASSWORD, project: str = "default") -> None:
    """A console user with a role, written straight to the database (the CLI takes seconds per call;
    test_console_auth.py tests the CLI itself)."""
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        conn.execute(
            "WITH u AS (INSERT INTO console_users (email, password_hash) VALUES (%s, %s) RETURNING id)"
            " INSERT INTO console_roles (user_id, project_id, role)"
            " SELECT u.id, p.id, %s FROM u, projects AS p WHERE p.name = %s",
            (email, PasswordHasher().hash(password), role, project),
        )
