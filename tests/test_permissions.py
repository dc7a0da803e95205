"""Keys and permissions: what public and secret keys may do, widened keys, revocation, and the keys CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import PUBLIC_KEY, SECRET_KEY, Server, ident, uid, wait_until

LUNOGRAM = Path(sys.executable).parent / "lunogram"


def cli(server: Server, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the installed `lunogram` command against the shared server's database."""
    assert LUNOGRAM.exists(), f"the lunogram console script is not installed at {LUNOGRAM}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNOGRAM_") and k != "DATABASE_URL"}
    env["COLUMNS"] = "300"
    result = subprocess.run(
        [str(LUNOGRAM), *args, "--database-url", server.database_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def created_key(result: subprocess.CompletedProcess[str], prefix: str) -> str:
    keys = re.findall(rf"^({prefix}[A-Za-z0-9_-]{{16,}})\s*$", result.stdout, re.MULTILINE)
    assert len(keys) == 1, result.stdout
    key: str = keys[0]
    return key


def assert_problem(response: httpx.Response, status: int, title: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    problem: dict[str, Any] = response.json()
    assert problem["title"] == title
    assert problem["status"] == status
    assert problem["detail"]
    return problem


def member_body(org: str, user: str) -> dict[str, Any]:
    return {"organization": {"identifier": [ident(org)]}, "user": {"identifier": [ident(user)]}}


@pytest.fixture(scope="module")
def widened_key(server: Server) -> str:
    return created_key(
        cli(server, "keys", "create", "--public", "--allow", "delete", "--allow", "read", "--name", "widened"), "pk_"
    )


@pytest.fixture
def widened(server: Server, widened_key: str) -> Iterator[httpx.Client]:
    with server.client(widened_key) as c:
        yield c


# --- public keys -------------------------------------------------------------------------------------------------


def test_public_key_may_upsert_users_organizations_and_memberships(public_client: httpx.Client) -> None:
    user, org = uid(), uid("o")
    response = public_client.post("/client/users", json={"identifier": [ident(user)], "data": {"via": "browser"}})
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"via": "browser"}
    assert (
        public_client.post("/client/organizations", json={"identifier": [ident(org)], "name": "A"}).status_code == 200
    )
    added = public_client.post("/client/organizations/users", json={**member_body(org, user), "data": {"r": 1}})
    assert added.status_code == 200, added.text


def test_public_key_may_not_delete(public_client: httpx.Client, client: httpx.Client) -> None:
    user, org = uid(), uid("o")
    client.post("/client/organizations/users", json=member_body(org, user)).raise_for_status()
    attempts = [
        ("/client/users", {"identifier": [ident(user)]}),
        ("/client/organizations", {"identifier": [ident(org)]}),
        ("/client/organizations/users", member_body(org, user)),
    ]
    for path, body in attempts:
        problem = assert_problem(public_client.request("DELETE", path, json=body), 403, "forbidden")
        assert "delete" in problem["detail"]
    # nothing was deleted
    detail = client.get("/admin/organizations", params={"external_id": org}).json()
    assert detail["member_count"] == 1
    assert client.get("/admin/users", params={"external_id": user}).status_code == 200


def test_public_key_may_not_read(public_client: httpx.Client, client: httpx.Client) -> None:
    user, org = uid(), uid("o")
    u = client.post("/client/users", json={"identifier": [ident(user)]}).json()
    o = client.post("/client/organizations", json={"identifier": [ident(org)]}).json()
    for path, params in [
        (f"/admin/users/{u['id']}", {}),
        ("/admin/users", {"external_id": user}),
        (f"/admin/organizations/{o['id']}", {}),
        ("/admin/organizations", {"external_id": org}),
    ]:
        problem = assert_problem(public_client.get(path, params=params), 403, "forbidden")
        assert "read" in problem["detail"]
        assert user not in problem["detail"]


def test_secret_key_may_do_everything(client: httpx.Client) -> None:
    user, org = uid(), uid("o")
    u = client.post("/client/users", json={"identifier": [ident(user)]})
    assert u.status_code == 200
    assert client.post("/client/organizations", json={"identifier": [ident(org)]}).status_code == 200
    assert client.post("/client/organizations/users", json=member_body(org, user)).status_code == 200
    assert client.get(f"/admin/users/{u.json()['id']}").status_code == 200
    assert client.get("/admin/organizations", params={"external_id": org}).status_code == 200
    assert client.request("DELETE", "/client/organizations/users", json=member_body(org, user)).status_code == 204
    assert client.request("DELETE", "/client/organizations", json={"identifier": [ident(org)]}).status_code == 204
    assert client.request("DELETE", "/client/users", json={"identifier": [ident(user)]}).status_code == 204


# --- widened public keys -----------------------------------------------------------------------------------------


def test_widened_public_key_may_delete_and_read(widened: httpx.Client, widened_key: str) -> None:
    assert widened_key.startswith("pk_")
    user, org = uid(), uid("o")
    created = widened.post("/client/users", json={"identifier": [ident(user)]})
    assert created.status_code == 200
    assert widened.post("/client/organizations/users", json=member_body(org, user)).status_code == 200
    read = widened.get(f"/admin/users/{created.json()['id']}")
    assert read.status_code == 200
    assert len(read.json()["memberships"]) == 1
    assert widened.get("/admin/organizations", params={"external_id": org}).json()["member_count"] == 1
    assert widened.request("DELETE", "/client/organizations/users", json=member_body(org, user)).status_code == 204
    assert widened.request("DELETE", "/client/organizations", json={"identifier": [ident(org)]}).status_code == 204
    assert widened.request("DELETE", "/client/users", json={"identifier": [ident(user)]}).status_code == 204
    assert widened.get(f"/admin/users/{created.json()['id']}").status_code == 404


def test_widening_is_per_permission(server: Server) -> None:
    reader = created_key(cli(server, "keys", "create", "--public", "--allow", "read"), "pk_")
    user = uid()
    with server.client(reader) as c:
        assert c.post("/client/users", json={"identifier": [ident(user)]}).status_code == 200
        assert c.get("/admin/users", params={"external_id": user}).status_code == 200
        assert_problem(c.request("DELETE", "/client/users", json={"identifier": [ident(user)]}), 403, "forbidden")
    cli(server, "keys", "revoke", reader)


def test_cli_rejects_unknown_permissions_and_widened_secret_keys(server: Server) -> None:
    unknown = cli(server, "keys", "create", "--public", "--allow", "everything", check=False)
    assert unknown.returncode != 0
    assert "unknown permission" in unknown.stdout + unknown.stderr
    secret = cli(server, "keys", "create", "--secret", "--allow", "read", check=False)
    assert secret.returncode != 0
    assert not re.search(r"sk_[A-Za-z0-9_-]{16,}", secret.stdout)


# --- authentication ----------------------------------------------------------------------------------------------


def test_revoked_key_gets_401(server: Server) -> None:
    key = created_key(cli(server, "keys", "create", "--secret", "--name", "short-lived"), "sk_")
    with server.client(key) as c:
        assert c.post("/client/users", json={"identifier": [ident(uid())]}).status_code == 200
        revoked = cli(server, "keys", "revoke", key)
        assert "revoked" in revoked.stdout
        assert key not in revoked.stdout

        def rejected() -> bool:
            return c.post("/client/users", json={"identifier": [ident(uid())]}).status_code == 401

        wait_until(rejected, timeout=10, what="the revoked key to be rejected")
        problem = assert_problem(c.get("/admin/users", params={"external_id": "x"}), 401, "unauthorized")
        assert "revoked" in problem["detail"]
    again = cli(server, "keys", "revoke", key, check=False)
    assert again.returncode != 0
    assert "no active key" in again.stdout + again.stderr


def test_bare_key_without_bearer_is_accepted(server: Server) -> None:
    ext = uid()
    for header in (SECRET_KEY, f"bearer {SECRET_KEY}", f"Bearer   {SECRET_KEY}"):
        response = httpx.post(
            f"{server.base_url}/client/users", json={"identifier": [ident(ext)]}, headers={"Authorization": header}
        )
        assert response.status_code == 200, (header, response.text)
    bare_public = httpx.post(
        f"{server.base_url}/client/users", json={"identifier": [ident(ext)]}, headers={"Authorization": PUBLIC_KEY}
    )
    assert bare_public.status_code == 200
    # a bare public key is still a public key
    forbidden = httpx.get(
        f"{server.base_url}/admin/users", params={"external_id": ext}, headers={"Authorization": PUBLIC_KEY}
    )
    assert forbidden.status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer sk_not_a_real_key_123456"},
        {"Authorization": f"Basic {SECRET_KEY}"},
        {"Authorization": SECRET_KEY + "x"},
    ],
)
def test_missing_or_unknown_key_gets_401(server: Server, headers: dict[str, str]) -> None:
    response = httpx.post(f"{server.base_url}/client/users", json={"identifier": [ident(uid())]}, headers=headers)
    assert_problem(response, 401, "unauthorized")
    admin = httpx.get(f"{server.base_url}/admin/users/{uuid.uuid4()}", headers=headers)
    assert admin.status_code == 401


def test_keys_list_does_not_print_full_keys(server: Server, widened_key: str) -> None:
    listing = cli(server, "keys", "list")
    out = listing.stdout
    for key in (SECRET_KEY, PUBLIC_KEY, widened_key):
        assert key not in out
        assert key[:10] in out  # the prefix, to tell keys apart and to revoke by
    assert "widened" in out
    assert "delete,read" in out
    scoped = cli(server, "keys", "list", "--project", "default").stdout
    assert widened_key[:10] in scoped
    assert widened_key not in scoped
