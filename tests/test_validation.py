"""Every error class of the API: status, problem JSON (`{title, detail, status}`) with `detail` naming the field
and the rule, and proof that a refused write stored nothing (docs/api.md "Errors").

Routes: POST/DELETE /client/users, /client/organizations, /client/organizations/users and the admin GETs.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from helpers import Server, ident, loopback_client, uid, wait_until

MIB = 1024 * 1024
BODY_LIMIT = 5 * MIB
MAX_DEPTH = 32

TITLES = {
    400: "bad request",
    401: "unauthorized",
    403: "forbidden",
    404: "resource not found",
    405: "method not allowed",
    413: "payload too large",
    415: "unsupported media type",
}

USERS = "/client/users"
ORGS = "/client/organizations"
MEMBERS = "/client/organizations/users"
WRITE_ROUTES = [
    ("POST", USERS),
    ("DELETE", USERS),
    ("POST", ORGS),
    ("DELETE", ORGS),
    ("POST", MEMBERS),
    ("DELETE", MEMBERS),
]
ADMIN_READS = [
    ("/admin/users", {"external_id": "x"}),
    ("/admin/users/00000000-0000-4000-8000-000000000000", {}),
    ("/admin/organizations", {"external_id": "x"}),
    ("/admin/organizations/00000000-0000-4000-8000-000000000000", {}),
]
ADMIN_READ_IDS = ["users-by-external-id", "user-by-id", "organizations-by-external-id", "organization-by-id"]
JSON = {"Content-Type": "application/json"}
MISSING = object()


def route_id(route: tuple[str, str]) -> str:
    return f"{route[0]} {route[1]}"


# --------------------------------------------------------------------------------------------------- helpers


def assert_problem(response: httpx.Response, status: int, detail: str | None = None, *, prefix: str = "") -> Any:
    """The response is problem JSON for `status`; `detail` equals `detail` (or starts with `prefix`)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["title"] == TITLES[status]
    assert body["status"] == status
    assert isinstance(body["detail"], str)
    assert body["detail"]
    if detail is not None:
        assert body["detail"] == detail
    assert body["detail"].startswith(prefix), body["detail"]
    return body


def external_ids(value: Any) -> list[str]:
    """Every string `external_id` anywhere in a request body."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("external_id"), str):
                found.append(item["external_id"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def stored(db: psycopg.Connection[Any], ids: list[str]) -> int:
    """How many user or organization identifiers with these external ids the database holds."""
    ids = [i for i in ids if "\x00" not in i]  # PostgreSQL text cannot hold NUL, so neither can the tables
    row = db.execute(
        "SELECT (SELECT count(*) FROM user_identifiers WHERE external_id = ANY (%(ids)s))"
        " + (SELECT count(*) FROM organization_identifiers WHERE external_id = ANY (%(ids)s))",
        {"ids": ids},
    ).fetchone()
    assert row is not None
    return int(row[0])


def assert_nothing_stored(db: psycopg.Connection[Any], body: Any) -> None:
    ids = external_ids(body)
    assert ids, "the body should name at least one fresh identifier"
    assert stored(db, ids) == 0


def send(client: httpx.Client, method: str, path: str, body: Any) -> httpx.Response:
    return client.request(method, path, content=json.dumps(body), headers=JSON)


def valid_body(path: str) -> dict[str, Any]:
    """A valid body for a write route, naming fresh identifiers only."""
    if path == MEMBERS:
        return {"organization": {"identifier": [ident(uid("o"))]}, "user": {"identifier": [ident(uid())]}}
    return {"identifier": [ident(uid())]}


def upsert(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def json_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((json_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((json_depth(v) for v in value), default=0)
    return 0


def nest(levels: int) -> dict[str, Any]:
    """An object nesting exactly `levels` deep."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


def body_at_depth(path: str, depth: int) -> dict[str, Any]:
    """A body for `path` whose JSON nests exactly `depth` levels (padding in identifier metadata)."""

    def build(levels: int) -> dict[str, Any]:
        body = valid_body(path)
        target = body["organization"] if path == MEMBERS else body
        target["identifier"][0]["metadata"] = nest(levels)
        return body

    base = json_depth(build(1)) - 1
    body = build(depth - base)
    assert json_depth(body) == depth
    return body


def padded_body(path: str, size: int) -> bytes:
    """A body for `path`, valid but for its size, of exactly `size` bytes."""
    body = valid_body(path)
    target = body["organization"] if path == MEMBERS else body
    target["identifier"][0]["metadata"] = {"pad": ""}
    empty = json.dumps(body).encode()
    target["identifier"][0]["metadata"] = {"pad": "a" * (size - len(empty))}
    raw = json.dumps(body).encode()
    assert len(raw) == size
    return raw


@pytest.fixture
def anon(server: Server) -> Iterator[httpx.Client]:
    """A client without any Authorization header."""
    with loopback_client(base_url=server.base_url, timeout=30) as c:
        yield c


# ----------------------------------------------------------------------------------- identifier rules (400)

# where an identifier list sits in each write route's body
IDENTIFIER_TARGETS = [
    pytest.param("POST", USERS, "", id="POST users"),
    pytest.param("DELETE", USERS, "", id="DELETE users"),
    pytest.param("POST", ORGS, "", id="POST organizations"),
    pytest.param("DELETE", ORGS, "", id="DELETE organizations"),
    pytest.param("POST", MEMBERS, "organization.", id="POST members organization"),
    pytest.param("POST", MEMBERS, "user.", id="POST members user"),
    pytest.param("DELETE", MEMBERS, "organization.", id="DELETE members organization"),
    pytest.param("DELETE", MEMBERS, "user.", id="DELETE members user"),
]

# (make the `identifier` value from a fresh external id, path below `identifier`, rule)
IDENTIFIER_CASES = [
    pytest.param(lambda e: [], "", "must contain at least 1 item(s)", id="empty-list"),
    pytest.param(lambda e: MISSING, "", "is required", id="missing"),
    pytest.param(lambda e: None, "", "must be an array", id="null"),
    pytest.param(lambda e: {"external_id": e}, "", "must be an array", id="object-for-array"),
    pytest.param(lambda e: e, "", "must be an array", id="string-for-array"),
    pytest.param(lambda e: [e], "[0]", "must be an object", id="string-item"),
    pytest.param(lambda e: [{"source": "crm"}], "[0].external_id", "is required", id="no-external-id"),
    pytest.param(lambda e: [{"external_id": ""}], "[0].external_id", "must not be empty", id="empty-external-id"),
    pytest.param(lambda e: [{"external_id": " \t "}], "[0].external_id", "must not be blank", id="blank-external-id"),
    pytest.param(lambda e: [{"external_id": 42}], "[0].external_id", "must be a string", id="number-external-id"),
    pytest.param(lambda e: [{"external_id": None}], "[0].external_id", "must be a string", id="null-external-id"),
    pytest.param(
        lambda e: [{"external_id": e + "x" * 512}],
        "[0].external_id",
        "is too long (at most 512 characters)",
        id="long-external-id",
    ),
    pytest.param(lambda e: [ident(e, source="")], "[0].source", "must not be empty", id="empty-source"),
    pytest.param(lambda e: [{"external_id": e, "source": 7}], "[0].source", "must be a string", id="number-source"),
    pytest.param(
        lambda e: [ident(e, source="s" * 256)], "[0].source", "is too long (at most 255 characters)", id="long-source"
    ),
    pytest.param(lambda e: [{"external_id": e, "metadata": [1]}], "[0].metadata", "must be an object", id="meta-array"),
    pytest.param(lambda e: [{"external_id": e, "metadata": "x"}], "[0].metadata", "must be an object", id="meta-str"),
    pytest.param(
        lambda e: [{"external_id": e, "externalId": e}], "[0].externalId", "is not a known field", id="unknown-field"
    ),
    pytest.param(
        lambda e: [ident(e), {"external_id": ""}], "[1].external_id", "must not be empty", id="second-one-bad"
    ),
    pytest.param(
        lambda e: [ident(f"{e}_{i}") for i in range(101)], "", "must contain at most 100 item(s)", id="101-items"
    ),
]


def with_identifier(path: str, side: str, value: Any) -> dict[str, Any]:
    target: dict[str, Any] = {} if value is MISSING else {"identifier": value}
    if path != MEMBERS:
        return target
    other = {"identifier": [ident(uid("other"))]}
    return (
        {"organization": target, "user": other} if side == "organization." else {"organization": other, "user": target}
    )


@pytest.mark.parametrize(("make", "suffix", "rule"), IDENTIFIER_CASES)
@pytest.mark.parametrize(("method", "path", "side"), IDENTIFIER_TARGETS)
def test_identifier_rules(
    client: httpx.Client,
    db: psycopg.Connection[Any],
    method: str,
    path: str,
    side: str,
    make: Callable[[str], Any],
    suffix: str,
    rule: str,
) -> None:
    fresh = uid()
    body = with_identifier(path, side, make(fresh))
    field = f"{side}identifier{suffix}"
    problem = assert_problem(send(client, method, path, body), 400, f"{field}: {rule}")
    assert problem["errors"] == [{"field": field, "rule": rule}]
    assert stored(db, [fresh, *external_ids(body)]) == 0


# ------------------------------------------------------------------------------------- field rules (400)

BAD_EMAIL = "email: is not a valid email address ("
E164_RULE = "phone: must be an E.164 phone number: + and 2 to 15 digits, e.g. +31612345678"
TZ_RULE = "timezone: must be an IANA timezone name, e.g. America/Chicago"
LOCALE_RULE = "locale: must be a BCP 47 language tag, e.g. en or es-MX"

USER_FIELD_CASES = [
    pytest.param({"email": "no-at-sign"}, BAD_EMAIL, id="email-no-at"),
    pytest.param({"email": "two@@example.com"}, BAD_EMAIL, id="email-two-ats"),
    pytest.param({"email": "jane@"}, BAD_EMAIL, id="email-no-domain"),
    pytest.param({"email": ""}, BAD_EMAIL, id="email-empty"),
    pytest.param({"email": 42}, "email: must be a string", id="email-number"),
    pytest.param({"phone": "0612345678"}, E164_RULE, id="phone-no-plus"),
    pytest.param({"phone": "+0612345678"}, E164_RULE, id="phone-leading-zero"),
    pytest.param({"phone": "+31 6 1234 5678"}, E164_RULE, id="phone-spaces"),
    pytest.param({"phone": "+1234567890123456"}, E164_RULE, id="phone-16-digits"),
    pytest.param({"phone": "+1"}, E164_RULE, id="phone-1-digit"),
    pytest.param({"phone": ""}, E164_RULE, id="phone-empty"),
    pytest.param({"phone": 31612345678}, "phone: must be a string", id="phone-number"),
    pytest.param({"timezone": "Mars/Olympus_Mons"}, TZ_RULE, id="tz-unknown"),
    pytest.param({"timezone": "localtime"}, TZ_RULE, id="tz-localtime"),
    pytest.param({"timezone": "America/Chicago "}, TZ_RULE, id="tz-trailing-space"),
    pytest.param({"timezone": ""}, TZ_RULE, id="tz-empty"),
    pytest.param({"timezone": 2}, "timezone: must be a string", id="tz-number"),
    pytest.param({"locale": "english"}, LOCALE_RULE, id="locale-word"),
    pytest.param({"locale": "e"}, LOCALE_RULE, id="locale-one-letter"),
    pytest.param({"locale": "en-"}, LOCALE_RULE, id="locale-dangling-dash"),
    pytest.param({"locale": "en US"}, LOCALE_RULE, id="locale-space"),
    pytest.param({"locale": ""}, LOCALE_RULE, id="locale-empty"),
    pytest.param({"locale": ["en"]}, "locale: must be a string", id="locale-array"),
    pytest.param({"data": "x"}, "data: must be an object", id="data-string"),
    pytest.param({"data": [1, 2]}, "data: must be an object", id="data-array"),
    pytest.param({"data": 1}, "data: must be an object", id="data-number"),
    pytest.param({"data": True}, "data: must be an object", id="data-bool"),
    pytest.param({"externalId": "x"}, "externalId: is not a known field", id="unknown-camelcase"),
    pytest.param({"first_name": "Jane"}, "first_name: is not a known field", id="unknown-trait"),
]


@pytest.mark.parametrize(("fields", "detail"), USER_FIELD_CASES)
def test_user_field_rules(
    client: httpx.Client, db: psycopg.Connection[Any], fields: dict[str, Any], detail: str
) -> None:
    body = {"identifier": [ident(uid())], **fields}
    response = send(client, "POST", USERS, body)
    if detail.endswith("("):
        assert_problem(response, 400, prefix=detail)
    else:
        assert_problem(response, 400, detail)
    assert_nothing_stored(db, body)


ORG_FIELD_CASES = [
    pytest.param({"name": 5}, "name: must be a string", id="name-number"),
    pytest.param({"name": ["a"]}, "name: must be a string", id="name-array"),
    pytest.param({"name": "n" * 1025}, "name: is too long (at most 1024 characters)", id="name-too-long"),
    pytest.param({"data": []}, "data: must be an object", id="data-array"),
    pytest.param({"data": "x"}, "data: must be an object", id="data-string"),
    pytest.param({"email": "a@b.co"}, "email: is not a known field", id="unknown-field"),
]


@pytest.mark.parametrize(("fields", "detail"), ORG_FIELD_CASES)
def test_organization_field_rules(
    client: httpx.Client, db: psycopg.Connection[Any], fields: dict[str, Any], detail: str
) -> None:
    body = {"identifier": [ident(uid("o"))], **fields}
    assert_problem(send(client, "POST", ORGS, body), 400, detail)
    assert_nothing_stored(db, body)


def _member(**changes: Any) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        body: dict[str, Any] = valid_body(MEMBERS)
        for key, value in changes.items():
            if value is MISSING:
                del body[key]
            else:
                body[key] = value
        return body

    return make


MEMBER_FIELD_CASES = [
    pytest.param("POST", _member(user=MISSING), "user: is required", id="POST-no-user"),
    pytest.param("POST", _member(organization=MISSING), "organization: is required", id="POST-no-organization"),
    pytest.param("POST", _member(user=[]), "user: must be an object", id="POST-user-array"),
    pytest.param("POST", _member(organization="acme"), "organization: must be an object", id="POST-org-string"),
    pytest.param(
        "POST",
        _member(user={"identifier": [ident(uid())], "email": "x@y.z"}),
        "user.email: is not a known field",
        id="POST-user-unknown",
    ),
    pytest.param("POST", _member(data="x"), "data: must be an object", id="POST-data-string"),
    pytest.param("POST", _member(role="admin"), "role: is not a known field", id="POST-unknown"),
    pytest.param("DELETE", _member(user=MISSING), "user: is required", id="DELETE-no-user"),
    pytest.param("DELETE", _member(data={"a": 1}), "data: is not a known field", id="DELETE-data"),
]


@pytest.mark.parametrize(("method", "make", "detail"), MEMBER_FIELD_CASES)
def test_membership_field_rules(
    client: httpx.Client, db: psycopg.Connection[Any], method: str, make: Callable[[], dict[str, Any]], detail: str
) -> None:
    body = make()
    assert_problem(send(client, method, MEMBERS, body), 400, detail)
    assert_nothing_stored(db, body)


def test_every_bad_field_is_named_once(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    body = {"identifier": [{"external_id": ""}, ident(uid())], "email": "nope", "data": 1, "extra": True}
    problem = assert_problem(send(client, "POST", USERS, body), 400)
    fields = [e["field"] for e in problem["errors"]]
    assert sorted(fields) == sorted(["identifier[0].external_id", "email", "data", "extra"])
    for error in problem["errors"]:
        assert f"{error['field']}: {error['rule']}" in problem["detail"]
    assert problem["detail"].count("; ") == 3
    assert_nothing_stored(db, body)


# ----------------------------------------------------------------------------- body-level rules (400, 413)

BODY_CASES = [
    pytest.param(lambda b: b"", "body: is required", id="empty-body"),
    pytest.param(lambda b: json.dumps(b).encode()[:-3], "body: is not valid JSON (", id="truncated"),
    pytest.param(lambda b: json.dumps(b).encode() + b" x", "body: is not valid JSON (", id="trailing-garbage"),
    pytest.param(lambda b: b"{'identifier': []}", "body: is not valid JSON (", id="single-quotes"),
    pytest.param(lambda b: json.dumps(b).encode().replace(b"}", b",}", 1), "body: is not valid JSON (", id="comma"),
    pytest.param(lambda b: b"[]", "body: must be an object", id="array"),
    pytest.param(lambda b: b"null", "body: must be an object", id="null"),
    pytest.param(lambda b: b'"identifier"', "body: must be an object", id="string"),
    pytest.param(lambda b: b"42", "body: must be an object", id="number"),
]


@pytest.mark.parametrize(("make", "detail"), BODY_CASES)
@pytest.mark.parametrize("route", WRITE_ROUTES, ids=route_id)
def test_malformed_bodies(
    client: httpx.Client, db: psycopg.Connection[Any], route: tuple[str, str], make: Callable[[Any], bytes], detail: str
) -> None:
    method, path = route
    body = valid_body(path)
    response = client.request(method, path, content=make(body), headers=JSON)
    if detail.endswith("("):
        assert_problem(response, 400, prefix=detail)
    else:
        assert_problem(response, 400, detail)
    assert_nothing_stored(db, body)


NUL_DETAIL = "body: strings must not contain the NUL character (\\u0000)"


@pytest.mark.parametrize("where", ["external_id", "source", "metadata-value", "metadata-key"])
@pytest.mark.parametrize("route", WRITE_ROUTES, ids=route_id)
def test_nul_in_strings(client: httpx.Client, db: psycopg.Connection[Any], route: tuple[str, str], where: str) -> None:
    method, path = route
    body = valid_body(path)
    first = (body["organization"] if path == MEMBERS else body)["identifier"][0]
    fresh = first["external_id"]
    if where == "external_id":
        first["external_id"] = fresh + "\x00"
    elif where == "source":
        first["source"] = "crm\x00"
    elif where == "metadata-value":
        first["metadata"] = {"note": "a\x00b"}
    else:
        first["metadata"] = {"k\x00": 1}
    raw = json.dumps(body).encode()
    assert b"\\u0000" in raw
    assert_problem(client.request(method, path, content=raw, headers=JSON), 400, NUL_DETAIL)
    assert stored(db, [fresh, *external_ids(body)]) == 0


def test_nul_in_user_data_and_email(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    for fields in ({"data": {"a": ["x\x00"]}}, {"email": "a\x00@b.co"}, {"data": {"\x00": 1}}):
        body = {"identifier": [ident(uid())], **fields}
        assert_problem(send(client, "POST", USERS, body), 400, NUL_DETAIL)
        assert_nothing_stored(db, body)


def test_escaped_backslash_u0000_is_not_a_nul(client: httpx.Client) -> None:
    """The six characters `\\u0000` (escaped backslash) are an ordinary string, accepted as such."""
    user = upsert(client, USERS, {"identifier": [ident(uid())], "data": {"path": "C:\\u0000"}})
    assert user["data"] == {"path": "C:\\u0000"}


@pytest.mark.parametrize("route", WRITE_ROUTES, ids=route_id)
def test_json_deeper_than_32_levels(client: httpx.Client, db: psycopg.Connection[Any], route: tuple[str, str]) -> None:
    method, path = route
    body = body_at_depth(path, MAX_DEPTH + 1)
    detail = f"body: JSON nests deeper than {MAX_DEPTH} levels"
    assert_problem(send(client, method, path, body), 400, detail)
    assert_nothing_stored(db, body)


@pytest.mark.parametrize("path", [USERS, ORGS, MEMBERS])
def test_json_of_exactly_32_levels_is_accepted(client: httpx.Client, path: str) -> None:
    response = send(client, "POST", path, body_at_depth(path, MAX_DEPTH))
    assert response.status_code == 200, response.text


def test_json_nesting_beyond_the_parser_limit_is_a_400(client: httpx.Client) -> None:
    for raw in (b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000, b"[" * 200_000):
        assert_problem(client.post(USERS, content=raw, headers=JSON), 400, prefix="body: ")


@pytest.mark.parametrize("route", WRITE_ROUTES, ids=route_id)
def test_body_over_5_mib_with_content_length(
    client: httpx.Client, db: psycopg.Connection[Any], route: tuple[str, str]
) -> None:
    method, path = route
    raw = padded_body(path, BODY_LIMIT + 1)
    response = client.request(method, path, content=raw, headers=JSON)
    assert response.request.headers["content-length"] == str(BODY_LIMIT + 1)
    assert_problem(response, 413, f"body: larger than the limit of {BODY_LIMIT} bytes")
    assert_nothing_stored(db, json.loads(raw))


@pytest.mark.parametrize("route", WRITE_ROUTES, ids=route_id)
def test_body_over_5_mib_chunked(client: httpx.Client, db: psycopg.Connection[Any], route: tuple[str, str]) -> None:
    method, path = route
    raw = padded_body(path, BODY_LIMIT + 1)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(raw), 64 * 1024):
            yield raw[start : start + 64 * 1024]

    response = client.request(method, path, content=chunks(), headers=JSON)
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, f"body: larger than the limit of {BODY_LIMIT} bytes")
    assert_nothing_stored(db, json.loads(raw))


def test_oversized_content_length_is_refused_before_the_body_is_sent(server: Server) -> None:
    """413 on the declared length alone: the server answers while the client has sent only headers."""
    request = (
        f"POST /api/client/users HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.secret_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {BODY_LIMIT * 2}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before a response: {received!r}"
            received += chunk
        head, _, payload = received.partition(b"\r\n\r\n")
        length = int(next(line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))[15:])
        while len(payload) < length:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed mid-response: {received!r}"
            payload += chunk
    assert head.startswith(b"HTTP/1.1 413 "), received
    assert b"content-type: application/json" in head.lower()
    problem = json.loads(payload)
    assert problem == {
        "title": "payload too large",
        "detail": f"body: larger than the limit of {BODY_LIMIT} bytes",
        "status": 413,
    }


def test_body_of_exactly_5_mib_is_accepted(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    """A batch of events (each `data` within its own cap, LUNOGRAM_MAX_EVENT_DATA_BYTES): a profile's data and
    metadata are capped far below the body limit, so an upsert that size is refused for its data (413)."""
    name = uid("full")
    events: list[dict[str, Any]] = [
        {"name": name, "identifier": [ident(uid())], "data": {"pad": ""}} for _ in range(100)
    ]
    per, extra = divmod(BODY_LIMIT - len(json.dumps(events).encode()), len(events))
    for n, event in enumerate(events):
        event["data"]["pad"] = "a" * (per + (extra if n == 0 else 0))
    raw = json.dumps(events).encode()
    assert len(raw) == BODY_LIMIT
    response = client.post("/client/users/events", content=raw, headers=JSON)
    assert response.status_code == 202, response.text[:300]
    wait_until(lambda: stored(db, external_ids(events)) == 100, what="the events applied")
    oversized = client.post(USERS, content=padded_body(USERS, BODY_LIMIT), headers=JSON)
    assert oversized.status_code == 413
    assert oversized.json()["detail"].startswith("identifier[0].metadata: at least")


# ----------------------------------------------------------------------------------------- media type (415)


@pytest.mark.parametrize(
    "content_type",
    ["application/xml", "text/html", "multipart/form-data; boundary=x", "application/octet-stream", "text/csv"],
)
@pytest.mark.parametrize("route", WRITE_ROUTES, ids=route_id)
def test_unsupported_content_type(
    client: httpx.Client, db: psycopg.Connection[Any], route: tuple[str, str], content_type: str
) -> None:
    method, path = route
    body = valid_body(path)
    response = client.request(method, path, content=json.dumps(body), headers={"Content-Type": content_type})
    media = content_type.split(";")[0]
    assert_problem(response, 415, f"Content-Type: send application/json, not {media!r}")
    assert_nothing_stored(db, body)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.lunogram+json",
        "text/plain",
        "application/x-www-form-urlencoded",
    ],
)
def test_json_bodies_under_lenient_content_types_are_accepted(client: httpx.Client, content_type: str | None) -> None:
    """curl -d (form-urlencoded), fetch with a string body (text/plain) and no header at all still carry JSON."""
    ext = uid()
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(USERS, content=json.dumps({"identifier": [ident(ext)]}), headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["identifier"][0]["external_id"] == ext


# ------------------------------------------------------------------------------------------- auth (401, 403)

MISSING_KEY = "Authorization: missing API key; send `Authorization: Bearer <key>`"
EMPTY_TOKEN = "Authorization: the Bearer token is empty"
UNKNOWN_KEY = "Authorization: unknown or revoked API key"
MALFORMED_PREFIX = "Authorization: malformed API key: a key starts with `pk_` or `sk_`"
MALFORMED_LENGTH = "Authorization: malformed API key: a key is 16 to 128 characters long"
AUTH_CASES = [
    pytest.param(None, MISSING_KEY, id="no-header"),
    pytest.param("", MISSING_KEY, id="empty-header"),
    pytest.param("Bearer", EMPTY_TOKEN, id="bearer-without-token"),
    pytest.param("Bearer sk_unknown_0123456789", UNKNOWN_KEY, id="unknown-secret"),
    pytest.param("Bearer pk_unknown_0123456789", UNKNOWN_KEY, id="unknown-public"),
    pytest.param("sk_unknown_0123456789", UNKNOWN_KEY, id="bare-unknown"),
    pytest.param("Basic dXNlcjpwYXNz", MALFORMED_PREFIX, id="basic-auth"),
    pytest.param("Bearer sk_short", MALFORMED_LENGTH, id="too-short"),
]


@pytest.mark.parametrize(("authorization", "detail"), AUTH_CASES)
@pytest.mark.parametrize("route", WRITE_ROUTES, ids=route_id)
def test_unauthorized_writes(
    anon: httpx.Client, db: psycopg.Connection[Any], route: tuple[str, str], authorization: str | None, detail: str
) -> None:
    method, path = route
    body = valid_body(path)
    headers = dict(JSON)
    if authorization is not None:
        headers["Authorization"] = authorization
    response = anon.request(method, path, content=json.dumps(body), headers=headers)
    assert_problem(response, 401, detail)
    assert_nothing_stored(db, body)


@pytest.mark.parametrize(("authorization", "detail"), AUTH_CASES)
@pytest.mark.parametrize(("path", "params"), ADMIN_READS, ids=ADMIN_READ_IDS)
def test_unauthorized_admin_reads(
    anon: httpx.Client, path: str, params: dict[str, str], authorization: str | None, detail: str
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    assert_problem(anon.get(path, params=params, headers=headers), 401, detail)


@pytest.mark.parametrize("authorization", ["{key}", "bearer {key}", "BEARER {key}", "Bearer  {key}"])
def test_accepted_authorization_spellings(anon: httpx.Client, server: Server, authorization: str) -> None:
    headers = {"Authorization": authorization.format(key=server.secret_key)}
    response = anon.post(USERS, json={"identifier": [ident(uid())]}, headers=headers)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("route", [r for r in WRITE_ROUTES if r[0] == "DELETE"], ids=route_id)
def test_public_key_may_not_delete(
    client: httpx.Client, public_client: httpx.Client, db: psycopg.Connection[Any], route: tuple[str, str]
) -> None:
    method, path = route
    body = valid_body(path)
    # the target exists, so a 204 would be possible: the 403 is about the key, and nothing is removed
    if path == MEMBERS:
        assert client.post(MEMBERS, json=body).status_code == 200
    else:
        upsert(client, path, body)
    before = stored(db, external_ids(body))
    assert before >= 1
    response = public_client.request(method, path, json=body)
    assert_problem(response, 403, prefix="a public key may not delete: use a secret key")
    assert stored(db, external_ids(body)) == before
    if path == MEMBERS:
        count = db.execute(
            "SELECT count(*) FROM organization_members m JOIN user_identifiers u ON u.user_id = m.user_id"
            " WHERE u.external_id = %s",
            (body["user"]["identifier"][0]["external_id"],),
        ).fetchone()
        assert count is not None
        assert count[0] == 1


@pytest.mark.parametrize(("path", "params"), ADMIN_READS, ids=ADMIN_READ_IDS)
def test_public_key_may_not_read(public_client: httpx.Client, path: str, params: dict[str, str]) -> None:
    assert_problem(public_client.get(path, params=params), 403, prefix="a public key may not read: use a secret key")


@pytest.mark.parametrize("path", [USERS, ORGS, MEMBERS])
def test_public_key_may_upsert(public_client: httpx.Client, path: str) -> None:
    response = public_client.post(path, json=valid_body(path))
    assert response.status_code == 200, response.text


# ------------------------------------------------------------------------------------ admin reads (400, 404)

ADMIN_QUERY_CASES = [
    pytest.param({}, "query.external_id: is required", id="no-external-id"),
    pytest.param({"source": "crm"}, "query.external_id: is required", id="source-only"),
    pytest.param({"external_id": ""}, "query.external_id: must not be empty", id="empty-external-id"),
    pytest.param({"external_id": "x", "source": ""}, "query.source: must not be empty", id="empty-source"),
    pytest.param(
        {"external_id": "x" * 513}, "query.external_id: is too long (at most 512 characters)", id="long-external-id"
    ),
    pytest.param(
        {"external_id": "x", "source": "s" * 256},
        "query.source: is too long (at most 255 characters)",
        id="long-source",
    ),
    pytest.param({"external_id": "a\x00b"}, "query.external_id: ", id="nul-external-id"),
    pytest.param({"external_id": "x", "source": "\x00"}, "query.source: ", id="nul-source"),
]


@pytest.mark.parametrize(("params", "detail"), ADMIN_QUERY_CASES)
@pytest.mark.parametrize("kind", ["users", "organizations"])
def test_admin_lookup_query_rules(client: httpx.Client, kind: str, params: dict[str, str], detail: str) -> None:
    response = client.get(f"/admin/{kind}", params=params)
    if detail.endswith(": "):
        assert_problem(response, 400, prefix=detail)
    else:
        assert_problem(response, 400, detail)


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g", "%00"])
@pytest.mark.parametrize(("kind", "param"), [("users", "user_id"), ("organizations", "organization_id")])
def test_admin_get_by_malformed_id(client: httpx.Client, kind: str, param: str, bad_id: str) -> None:
    assert_problem(client.get(f"/admin/{kind}/{bad_id}"), 400, f"path.{param}: must be a UUID")


@pytest.mark.parametrize(("kind", "what"), [("users", "user"), ("organizations", "organization")])
def test_admin_reads_of_unknown_profiles_are_404(client: httpx.Client, kind: str, what: str) -> None:
    unknown = uuid.uuid4()
    assert_problem(client.get(f"/admin/{kind}/{unknown}"), 404, f"{what} {unknown}: not found in this project")
    ext = uid()
    detail = f"{what} with default:{ext}: not found in this project"
    assert_problem(client.get(f"/admin/{kind}", params={"external_id": ext}), 404, detail)
    detail = f"{what} with crm:{ext}: not found in this project"
    assert_problem(client.get(f"/admin/{kind}", params={"external_id": ext, "source": "crm"}), 404, detail)


def test_admin_reads_find_what_exists(client: httpx.Client) -> None:
    """Control for the 404s above: the same reads answer 200 once the profiles exist."""
    ext = uid()
    user = upsert(client, USERS, {"identifier": [ident(ext, source="crm")]})
    org = upsert(client, ORGS, {"identifier": [ident(ext)]})
    assert client.get(f"/admin/users/{user['id']}").json()["id"] == user["id"]
    assert client.get("/admin/users", params={"external_id": ext, "source": "crm"}).json()["id"] == user["id"]
    assert client.get(f"/admin/organizations/{org['id']}").json()["id"] == org["id"]
    assert client.get("/admin/organizations", params={"external_id": ext}).json()["id"] == org["id"]


# ---------------------------------------------------------------------------------- deletes of unknowns (404)


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        (USERS, "identifier: no user in this project has these identifiers"),
        (ORGS, "identifier: no organization in this project has these identifiers"),
    ],
)
def test_delete_of_unknown_profile_is_404(client: httpx.Client, path: str, detail: str) -> None:
    assert_problem(client.request("DELETE", path, json={"identifier": [ident(uid())]}), 404, detail)


def test_delete_of_unknown_membership_is_404_naming_what_is_missing(client: httpx.Client) -> None:
    org, user = ident(uid("o")), ident(uid())
    body = {"organization": {"identifier": [org]}, "user": {"identifier": [user]}}
    detail = "organization.identifier: no organization in this project has these identifiers"
    assert_problem(client.request("DELETE", MEMBERS, json=body), 404, detail)
    upsert(client, ORGS, {"identifier": [org]})
    detail = "user.identifier: no user in this project has these identifiers"
    assert_problem(client.request("DELETE", MEMBERS, json=body), 404, detail)
    upsert(client, USERS, {"identifier": [user]})
    assert_problem(client.request("DELETE", MEMBERS, json=body), 404, "the user is not a member of the organization")
    assert client.post(MEMBERS, json=body).status_code == 200
    assert client.request("DELETE", MEMBERS, json=body).status_code == 204


# ------------------------------------------------------------------------------------------ routing (404, 405)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/client/nope"),
        ("POST", "/api/client/users/extra"),
        ("POST", "/api/client/user"),
        ("DELETE", "/api/admin/nope"),
        ("GET", "/api/nope"),
        ("GET", "/nope"),
    ],
)
@pytest.mark.parametrize("authorized", [True, False], ids=["with-key", "without-key"])
def test_unknown_route_is_problem_404(server: Server, method: str, path: str, authorized: bool) -> None:
    headers = {"Authorization": f"Bearer {server.secret_key}"} if authorized else {}
    response = httpx.request(method, server.root_url + path, headers=headers, json={}, follow_redirects=False)
    assert_problem(response, 404, "no such route")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/api/client/users", "POST, DELETE"),
        ("PUT", "/api/client/users", "POST, DELETE"),
        ("PATCH", "/api/client/organizations", "POST, DELETE"),
        ("GET", "/api/client/organizations/users", "POST, DELETE"),
        ("POST", "/api/admin/users", "GET"),
        ("DELETE", "/api/admin/organizations", "GET"),
        ("PUT", "/api/admin/users/00000000-0000-4000-8000-000000000000", "GET"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_wrong_method_is_problem_405_with_allow(server: Server, method: str, path: str, allow: str) -> None:
    headers = {"Authorization": f"Bearer {server.secret_key}"}
    response = httpx.request(method, server.root_url + path, headers=headers)
    assert_problem(response, 405, "this method is not allowed on this route")
    assert response.headers["allow"] == allow


# ------------------------------------------------------------------------ responses without a body (no JSON type)


def test_bodyless_successes_claim_no_json_content_type(client: httpx.Client) -> None:
    org, user = ident(uid("o")), ident(uid())
    membership = {"organization": {"identifier": [org]}, "user": {"identifier": [user]}}
    responses = {
        "add member": client.post(MEMBERS, json={**membership, "data": {"role": "admin"}}),
        "remove member": client.request("DELETE", MEMBERS, json=membership),
        "delete user": client.request("DELETE", USERS, json={"identifier": [user]}),
        "delete organization": client.request("DELETE", ORGS, json={"identifier": [org]}),
    }
    expected = {"add member": 200, "remove member": 204, "delete user": 204, "delete organization": 204}
    for name, response in responses.items():
        assert response.status_code == expected[name], (name, response.text)
        assert response.content == b"", name
        assert "json" not in response.headers.get("content-type", ""), name
    for response in (client.post(USERS, json={"identifier": [user]}), client.post(ORGS, json={"identifier": [org]})):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json()["id"]


# ---------------------------------------------------------------------------------- nothing half-written


@pytest.mark.parametrize(
    ("path", "side"),
    [(USERS, ""), (ORGS, ""), (MEMBERS, "organization."), (MEMBERS, "user.")],
    ids=["users", "organizations", "members-organization", "members-user"],
)
def test_upsert_whose_second_identifier_is_bad_creates_nothing(
    client: httpx.Client, db: psycopg.Connection[Any], path: str, side: str
) -> None:
    first = uid()
    body = with_identifier(path, side, [ident(first), {"external_id": "ok", "source": ""}])
    assert_problem(send(client, "POST", path, body), 400, f"{side}identifier[1].source: must not be empty")
    assert stored(db, external_ids(body)) == 0
    for kind in ("users", "organizations"):
        assert client.get(f"/admin/{kind}", params={"external_id": first}).status_code == 404


def test_refused_update_leaves_the_user_as_it_was(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    ext, new_ext = uid(), uid()
    user = upsert(client, USERS, {"identifier": [ident(ext)], "email": "a@b.co", "data": {"plan": "free"}})
    body = {
        "identifier": [ident(ext), ident(new_ext, source="crm")],
        "email": "c@d.co",
        "data": {"plan": "pro"},
        "timezone": "Nowhere/Special",
    }
    assert_problem(send(client, "POST", USERS, body), 400, TZ_RULE)
    after = client.get(f"/admin/users/{user['id']}").json()
    assert after["version"] == user["version"]
    assert after["email"] == "a@b.co"
    assert after["data"] == {"plan": "free"}
    assert "timezone" not in after
    assert [i["external_id"] for i in after["identifier"]] == [ext]
    assert stored(db, [new_ext]) == 0


def test_refused_upsert_does_not_merge(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    """Naming two existing users would merge them; a bad field in the same request must prevent that."""
    a, b = uid(), uid()
    user_a = upsert(client, USERS, {"identifier": [ident(a)]})
    user_b = upsert(client, USERS, {"identifier": [ident(b)]})
    body = {"identifier": [ident(a), ident(b)], "phone": "12345"}
    assert_problem(send(client, "POST", USERS, body), 400, E164_RULE)
    assert client.get(f"/admin/users/{user_a['id']}").json()["identifier"][0]["external_id"] == a
    assert client.get(f"/admin/users/{user_b['id']}").json()["identifier"][0]["external_id"] == b
    merges = db.execute(
        "SELECT count(*) FROM user_merges WHERE survivor_id = ANY (%s) OR merged_id = ANY (%s)",
        ([user_a["id"], user_b["id"]], [user_a["id"], user_b["id"]]),
    ).fetchone()
    assert merges is not None
    assert merges[0] == 0


@pytest.mark.parametrize("path", [USERS, ORGS])
def test_refused_delete_removes_nothing(client: httpx.Client, path: str) -> None:
    ext = uid()
    profile = upsert(client, path, {"identifier": [ident(ext)]})
    body = {"identifier": [ident(ext), {"external_id": ""}]}
    assert_problem(send(client, "DELETE", path, body), 400, "identifier[1].external_id: must not be empty")
    kind = "users" if path == USERS else "organizations"
    assert client.get(f"/admin/{kind}/{profile['id']}").status_code == 200


def test_refused_membership_delete_keeps_the_membership(client: httpx.Client) -> None:
    org, user = ident(uid("o")), ident(uid())
    membership = {"organization": {"identifier": [org]}, "user": {"identifier": [user]}}
    assert client.post(MEMBERS, json=membership).status_code == 200
    bad = {"organization": {"identifier": [org]}, "user": {"identifier": [user, {"external_id": " "}]}}
    assert_problem(send(client, "DELETE", MEMBERS, bad), 400, "user.identifier[1].external_id: must not be blank")
    detail = client.get("/admin/organizations", params={"external_id": org["external_id"]}).json()
    assert detail["member_count"] == 1


def test_refused_membership_add_creates_neither_side(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    body = valid_body(MEMBERS)
    body["data"] = ["not", "an", "object"]
    assert_problem(send(client, "POST", MEMBERS, body), 400, "data: must be an object")
    assert_nothing_stored(db, body)
    # control: the same body with valid data creates both sides
    body["data"] = {"role": "owner"}
    assert send(client, "POST", MEMBERS, body).status_code == 200
    assert stored(db, external_ids(body)) == 2
