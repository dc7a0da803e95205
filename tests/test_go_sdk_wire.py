"""The Go SDK's wire shapes against a real server: every request its documented types marshal to, and every
answer decoded, field by field, as its documented types would decode it (tests/go_sdk_types.py).

What this shows: for each Client method of the Go SDK, a body built exactly as encoding/json marshals the
SDK's request type (nil maps as `null`, omitempty fields left out, times with nanoseconds) is accepted by
the route docs/api.md gives for it, with the status the method expects (2xx), and does what it says; each
answer decodes into the SDK's response type with no error, no field left at its zero value for want of a
key, no null for a non-pointer field and no key the type lacks; errors decode into APIError.

What it does not show: the Go SDK itself is not compiled or run here (that would take a Go toolchain and
the SDK's source). Its HTTP code (the paths it joins to the base URL, its headers, how it treats a 2xx
without a body) is unpublished and untested; the server answers both `<base>/client/...` with base `/api`
and without it, and takes the key with or without `Bearer `, to leave it room.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from go_sdk_types import TYPES, GoTime, marshal, unmarshal_problems
from helpers import Server, loopback_client, uid, wait_until

FUTURE = GoTime(datetime.now(UTC).replace(microsecond=0) + timedelta(days=30), nanosecond=123456789)
AMSTERDAM = timezone(timedelta(hours=2))


def ids(*external_ids: str, source: str = "") -> list[dict[str, Any]]:
    """[]ExternalID values (Go field names)."""
    return [{"ExternalID": e, "Source": source} for e in external_ids]


def call(client: httpx.Client, method: str, path: str, type_name: str, value: Any, *, status: int) -> httpx.Response:
    """Send what the Go SDK's `type_name` marshals to; `value` is a Go value (a list for []Event)."""
    if isinstance(value, list):
        body: Any = [marshal(type_name, item) for item in value]
    else:
        body = marshal(type_name, value)
    response = client.request(method, path, json=body)
    assert response.status_code == status, (body, response.status_code, response.text)
    return response


# problem JSON carries `status` and, for a 400, `errors` besides the title and detail the SDKs read (api.md)
OURS = {"APIError": frozenset({"status", "errors"})}


def decoded(response: httpx.Response, type_name: str) -> dict[str, Any]:
    answer: dict[str, Any] = response.json()
    assert unmarshal_problems(type_name, answer, ours=OURS.get(type_name, frozenset())) == [], answer
    return answer


def test_the_transcription_covers_every_method(client: httpx.Client) -> None:
    # the SDK's client methods (pkg.go.dev index) and the request and response types each one uses
    methods = {
        "UpsertUser": ("UpsertUserRequest", "User"),
        "DeleteUser": ("DeleteUserRequest", None),
        "PostUserEvents": ("Event", None),
        "UpsertUserScheduled": ("UpsertUserScheduledRequest", "ScheduledAccepted"),
        "DeleteUserScheduled": ("DeleteUserScheduledRequest", None),
        "UpsertOrganization": ("UpsertOrganizationRequest", "Organization"),
        "DeleteOrganization": ("DeleteOrganizationRequest", None),
        "AddOrganizationUser": ("OrganizationUserRequest", None),
        "RemoveOrganizationUser": ("RemoveOrganizationUserRequest", None),
        "PostOrganizationEvents": ("OrganizationEvent", None),
        "UpsertOrganizationScheduled": ("UpsertOrganizationScheduledRequest", "ScheduledAccepted"),
        "DeleteOrganizationScheduled": ("DeleteOrganizationScheduledRequest", None),
    }
    for request, response in methods.values():
        assert request in TYPES
        assert response is None or response in TYPES
    assert len(methods) == 12


def test_users_as_the_go_sdk_sends_them(client: httpx.Client) -> None:
    ext, crm = uid(), uid("crm")
    full = {
        "Identifier": [{"ExternalID": ext, "Metadata": {"signup_flow": "web"}}, {"ExternalID": crm, "Source": "crm"}],
        "Email": "jane@example.com",
        "Phone": "+31612345678",
        "Timezone": "Europe/Amsterdam",
        "Locale": "nl-NL",
        "Data": {"first_name": "Jane", "plan": "enterprise", "amount": 99.99},
    }
    user = decoded(call(client, "POST", "/client/users", "UpsertUserRequest", full, status=200), "User")
    assert (user["email"], user["phone"], user["timezone"], user["locale"]) == (
        "jane@example.com",
        "+31612345678",
        "Europe/Amsterdam",
        "nl-NL",
    )
    assert user["data"] == full["Data"]
    assert {(i["source"], i["external_id"]) for i in user["identifier"]} == {("default", ext), ("crm", crm)}

    # only an identifier: every pointer nil and Data nil, so omitted; Go's User then has Email "" and so on
    bare = decoded(
        call(client, "POST", "/client/users", "UpsertUserRequest", {"Identifier": ids(uid())}, status=200), "User"
    )
    assert not {"email", "phone", "timezone", "locale"} & set(bare)
    assert bare["data"] == {}
    assert bare["version"] == 1

    call(client, "DELETE", "/client/users", "DeleteUserRequest", {"Identifier": ids(ext)}, status=204)
    missing = call(client, "DELETE", "/client/users", "DeleteUserRequest", {"Identifier": ids(ext)}, status=404)
    decoded(missing, "APIError")


def test_events_as_the_go_sdk_sends_them(client: httpx.Client) -> None:
    ext, plan = uid(), uid("plan")
    user = decoded(
        call(
            client,
            "POST",
            "/client/users",
            "UpsertUserRequest",
            {"Identifier": ids(ext), "Data": {"plan": plan}},
            status=200,
        ),
        "User",
    )
    events = [
        # Data unset: Event.Data has no omitempty, so Go sends "data": null
        {"Name": "opened_app", "Identifier": ids(ext)},
        {"Name": "purchase_completed", "Identifier": ids(ext), "Data": {"product_id": "prod_789", "amount": 99.99}},
        {"Name": "feature_announcement", "Match": {"plan": plan}, "Data": {"feature": "advanced_analytics"}},
    ]
    assert marshal("Event", events[0])["data"] is None
    response = call(client, "POST", "/client/users/events", "Event", events, status=202)
    assert response.content == b""

    def history() -> list[tuple[str, Any]]:
        page = client.get(f"/admin/users/{user['id']}/events", params={"limit": 10}).json()
        return sorted((e["name"], e["data"]) for e in page["events"])

    wait_until(lambda: len(history()) == 3, what="the three events in the user's history")
    assert history() == [
        ("feature_announcement", {"feature": "advanced_analytics"}),
        ("opened_app", {}),
        ("purchase_completed", {"product_id": "prod_789", "amount": 99.99}),
    ]

    org = uid("o")
    org_events = [{"Name": "subscription_upgraded", "Identifier": ids(org)}]  # OrganizationEvent.Data omitempty
    assert "data" not in marshal("OrganizationEvent", org_events[0])
    call(client, "POST", "/client/organizations/events", "OrganizationEvent", org_events, status=202)

    # a bad event: the whole batch is refused, and the problem decodes into APIError
    refused = call(client, "POST", "/client/users/events", "Event", [{"Name": "", "Identifier": ids(ext)}], status=400)
    problem = decoded(refused, "APIError")
    assert "name" in problem["detail"]


def test_organizations_and_memberships_as_the_go_sdk_sends_them(client: httpx.Client) -> None:
    org, user = uid("o"), uid()
    acme = {"Identifier": ids(org), "Name": "Acme Corp", "Data": {"industry": "technology", "size": "enterprise"}}
    created = decoded(
        call(client, "POST", "/client/organizations", "UpsertOrganizationRequest", acme, status=200), "Organization"
    )
    assert (created["name"], created["data"]) == ("Acme Corp", acme["Data"])
    unnamed = decoded(
        call(
            client,
            "POST",
            "/client/organizations",
            "UpsertOrganizationRequest",
            {"Identifier": ids(uid("o"))},
            status=200,
        ),
        "Organization",
    )
    assert "name" not in unnamed

    ref = {"Organization": {"Identifier": ids(org)}, "User": {"Identifier": ids(user)}}
    added = call(
        client,
        "POST",
        "/client/organizations/users",
        "OrganizationUserRequest",
        {**ref, "Data": {"role": "admin", "department": "engineering"}},
        status=200,
    )
    assert added.content == b""
    call(client, "POST", "/client/organizations/users", "OrganizationUserRequest", ref, status=200)  # Data nil
    detail = client.get("/admin/organizations", params={"external_id": org}).json()
    assert [m["data"] for m in detail["members"]] == [{"role": "admin", "department": "engineering"}]

    call(client, "DELETE", "/client/organizations/users", "RemoveOrganizationUserRequest", ref, status=204)
    call(client, "DELETE", "/client/organizations", "DeleteOrganizationRequest", {"Identifier": ids(org)}, status=204)


@pytest.mark.parametrize("kind", ["users", "organizations"])
def test_schedules_as_the_go_sdk_sends_them(client: httpx.Client, kind: str) -> None:
    prefix = "User" if kind == "users" else "Organization"
    target = uid()
    once = {
        "Name": "trial_end",
        "Identifier": ids(target),
        # a Go time with nanoseconds and an offset, as time.Time marshals it
        "ScheduledAt": GoTime(FUTURE.moment.astimezone(AMSTERDAM), nanosecond=FUTURE.nanosecond),
        "Data": {"plan": "pro", "amount": 29.99},
    }
    assert marshal(f"Upsert{prefix}ScheduledRequest", once)["scheduled_at"].endswith(".123456789+02:00")
    path = f"/client/{kind}/scheduled"
    accepted = decoded(
        call(client, "POST", path, f"Upsert{prefix}ScheduledRequest", once, status=202), "ScheduledAccepted"
    )
    assert accepted["name"] == "trial_end"
    assert accepted["data"] == once["Data"]
    fires = datetime.fromisoformat(accepted["scheduled_at"])
    assert abs(fires - FUTURE.moment) < timedelta(seconds=1)

    weekly = {"Name": "weekly_digest", "Identifier": ids(target), "Interval": "168h"}
    recurring = decoded(
        call(client, "POST", path, f"Upsert{prefix}ScheduledRequest", weekly, status=202), "ScheduledAccepted"
    )
    assert recurring["name"] == "weekly_digest"

    for name in ("trial_end", "weekly_digest"):
        removed = call(
            client,
            "DELETE",
            path,
            f"Delete{prefix}ScheduledRequest",
            {"Name": name, "Identifier": ids(target)},
            status=200,
        )
        assert removed.content == b""
    gone = call(
        client,
        "DELETE",
        path,
        f"Delete{prefix}ScheduledRequest",
        {"Name": "trial_end", "Identifier": ids(target)},
        status=404,
    )
    decoded(gone, "APIError")


def test_errors_decode_into_api_error(server: Server, client: httpx.Client) -> None:
    # a request type's nil slice without omitempty: "identifier": null
    no_identifier = call(client, "POST", "/client/users", "UpsertUserRequest", {"Email": "a@b.co"}, status=400)
    assert "identifier" in decoded(no_identifier, "APIError")["detail"]
    with server.client("sk_not_a_key_of_anyone") as stranger:
        unknown = call(stranger, "POST", "/client/users", "UpsertUserRequest", {"Identifier": ids(uid())}, status=401)
    decoded(unknown, "APIError")
    with loopback_client(base_url=server.base_url, headers={"Authorization": server.public_key}, timeout=30) as public:
        # a bare key (no "Bearer "), and a public key on a route it may not use: 403
        forbidden = call(public, "DELETE", "/client/users", "DeleteUserRequest", {"Identifier": ids(uid())}, status=403)
    decoded(forbidden, "APIError")
