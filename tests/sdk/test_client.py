"""The Python SDK against a real `lunogram serve`: every call, sync and async, and every error class from real
answers (no mocks here; see test_sdk_offline.py for retries and client-side checks)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import lunogram
import pytest
from lunogram import ExternalID

from helpers import Server, free_port, uid


@pytest.fixture
def sdk(server: Server) -> Iterator[lunogram.Client]:
    with lunogram.Client(server.secret_key, base_url=server.base_url, max_retries=0) as client:
        yield client


@pytest.fixture
async def async_sdk(server: Server) -> AsyncIterator[lunogram.AsyncClient]:
    async with lunogram.AsyncClient(server.secret_key, base_url=server.base_url, max_retries=0) as client:
        yield client


def test_users_every_call(sdk: lunogram.Client) -> None:
    external, posthog = uid("user"), uid("ph")
    user = sdk.users.upsert(
        [ExternalID(external, metadata={"signupFlow": "web"}), {"external_id": posthog, "source": "posthog"}],
        email="Ada@Example.com",
        phone="+31612345678",
        timezone="Europe/Amsterdam",
        locale="en",
        data={"firstName": "Ada", "nested": {"camelKey": 1, "snake_key": [1, 2]}},
    )
    assert isinstance(user, lunogram.User)
    assert user.email is not None
    assert user.email.lower() == "ada@example.com"
    assert (user.phone, user.timezone, user.locale) == ("+31612345678", "Europe/Amsterdam", "en")
    assert user.data == {"firstName": "Ada", "nested": {"camelKey": 1, "snake_key": [1, 2]}}  # keys as given
    assert user.has_push_device is False
    assert user.created_at.tzinfo is not None
    assert isinstance(user.updated_at, datetime)
    ids = {(i.source, i.external_id): i for i in user.identifier}
    assert set(ids) == {("default", external), ("posthog", posthog)}
    assert ids[("default", external)].metadata == {"signupFlow": "web"}
    assert ids[("default", external)].id is not None
    assert isinstance(ids[("default", external)].created_at, datetime)

    # omitted fields keep their value, None clears one, data merges at the top level; a returned ExternalID
    # can be passed back as an identifier
    again = sdk.users.upsert(user.identifier[0], phone=None, data={"plan": "pro"})
    assert again.id == user.id
    assert again.version > user.version
    assert again.phone is None
    assert again.email == user.email
    assert again.data["plan"] == "pro"
    assert again.data["firstName"] == "Ada"

    assert (
        sdk.users.events.post(
            [
                {"name": "order.completed", "identifier": external, "data": {"orderId": "o1", "total": 9.5}},
                {"name": "page.viewed", "identifier": ExternalID(posthog, "posthog"), "data": {}},
                {"name": "plan.feature.released", "match": {"plan": f"none-{uid()}"}, "data": {"feature": "x"}},
            ]
        )
        is None
    )

    first = datetime.now(UTC) + timedelta(days=1)
    accepted = sdk.users.schedules.upsert(
        external, name="usage.report", scheduled_at=first, interval=timedelta(days=7), data={"kind": "weekly"}
    )
    assert isinstance(accepted, lunogram.ScheduledAccepted)
    assert accepted.name == "usage.report"
    assert accepted.data == {"kind": "weekly"}
    assert accepted.scheduled_at is not None
    assert abs((accepted.scheduled_at - first).total_seconds()) < 1
    once = sdk.users.schedules.upsert(external, name="reminder", scheduled_at=first.isoformat())
    assert once.scheduled_at is not None
    recurring_text = sdk.users.schedules.upsert(external, name="monthly", interval="1 month")
    assert recurring_text.scheduled_at is not None

    assert sdk.users.schedules.delete(external, name="usage.report") is None
    with pytest.raises(lunogram.NotFoundError):
        sdk.users.schedules.delete(external, name="usage.report")

    assert sdk.users.delete(external) is None
    # (a fresh user: the events above are processed asynchronously and may re-create `external` after its
    # delete, since the server creates the targets of writes that name unknown users)
    fresh = uid("user")
    sdk.users.upsert(fresh)
    assert sdk.users.delete(fresh) is None
    with pytest.raises(lunogram.NotFoundError) as caught:
        sdk.users.delete(fresh)
    assert caught.value.status_code == 404
    assert caught.value.title == "resource not found"


def test_organizations_every_call(sdk: lunogram.Client) -> None:
    org, member = uid("org"), uid("user")
    organization = sdk.organizations.upsert(org, name="Acme Inc", data={"plan": "enterprise", "seatCount": 5})
    assert isinstance(organization, lunogram.Organization)
    assert organization.name == "Acme Inc"
    assert organization.data == {"plan": "enterprise", "seatCount": 5}
    assert [(i.source, i.external_id) for i in organization.identifier] == [("default", org)]
    assert organization.created_at.tzinfo is not None
    renamed = sdk.organizations.upsert(org, name="Acme B.V.")
    assert renamed.id == organization.id
    assert renamed.version > organization.version
    assert renamed.data["seatCount"] == 5

    assert sdk.organizations.add_user(org, member, data={"role": "admin"}) is None
    assert (
        sdk.organizations.events.post(
            [
                {"name": "subscription.upgraded", "identifier": org, "data": {"from": "starter"}},
                {"name": "compliance.update", "match": {"plan": f"none-{uid()}"}},
            ]
        )
        is None
    )

    accepted = sdk.organizations.schedules.upsert(
        [org], name="billing.reminder", start_at=datetime.now(UTC), interval="1 month", data={"n": 1}
    )
    assert accepted.name == "billing.reminder"
    assert accepted.scheduled_at is not None
    assert sdk.organizations.schedules.delete(org, name="billing.reminder") is None
    with pytest.raises(lunogram.NotFoundError):
        sdk.organizations.schedules.delete(org, name="billing.reminder")

    assert sdk.organizations.remove_user(org, member) is None
    with pytest.raises(lunogram.NotFoundError):
        sdk.organizations.remove_user(org, member)
    assert sdk.organizations.delete(org) is None
    fresh = uid("org")  # see test_users_every_call: events may re-create `org` asynchronously
    sdk.organizations.upsert(fresh)
    assert sdk.organizations.delete(fresh) is None
    with pytest.raises(lunogram.NotFoundError):
        sdk.organizations.delete(fresh)


def test_error_classes_from_real_answers(server: Server, sdk: lunogram.Client) -> None:
    with pytest.raises(lunogram.ValidationError) as bad:
        sdk.users.upsert({"external_id": ""})
    assert bad.value.status_code == 400
    assert bad.value.title == "bad request"
    assert "external_id" in bad.value.detail
    assert isinstance(bad.value, lunogram.APIError)
    assert isinstance(bad.value, lunogram.LunogramError)

    with pytest.raises(lunogram.ValidationError) as batch:
        sdk.users.events.post([{"name": "ok", "identifier": uid(), "data": {}}, {"name": "bad", "data": {}}])
    assert batch.value.detail.startswith("[1]")

    with pytest.raises(lunogram.ValidationError, match="interval"):
        sdk.users.schedules.upsert(uid(), name="x", interval="fortnightly")

    with (
        lunogram.Client("sk_not_a_key", base_url=server.base_url) as wrong,
        pytest.raises(lunogram.UnauthorizedError) as unauthorized,
    ):
        wrong.users.upsert(uid())
    assert unauthorized.value.status_code == 401

    external = uid()
    with lunogram.Client(server.public_key, base_url=server.base_url) as public:
        assert public.users.upsert(external).identifier[0].external_id == external  # allowed
        with pytest.raises(lunogram.ForbiddenError) as forbidden:
            public.users.delete(external)
        with pytest.raises(lunogram.ForbiddenError):
            public.users.events.post([{"name": "x", "match": {"plan": "pro"}, "data": {}}])
    assert forbidden.value.status_code == 403

    with pytest.raises(lunogram.NotFoundError):
        sdk.users.delete(uid("missing"))


def test_network_error_from_a_closed_port() -> None:
    with (
        lunogram.Client("sk_x", base_url=f"http://127.0.0.1:{free_port()}/api", max_retries=0) as client,
        pytest.raises(lunogram.NetworkError) as caught,
    ):
        client.users.upsert(uid())
    assert caught.value.__cause__ is not None


async def test_async_every_call(async_sdk: lunogram.AsyncClient) -> None:
    external, org = uid("user"), uid("org")
    user = await async_sdk.users.upsert(external, email="grace@example.com", data={"camelCase": True})
    assert isinstance(user, lunogram.User)
    assert user.data == {"camelCase": True}
    assert await async_sdk.users.events.post([{"name": "signed_in", "identifier": external, "data": {}}]) is None
    accepted = await async_sdk.users.schedules.upsert(
        external, name="nudge", scheduled_at=datetime.now(UTC) + timedelta(hours=1)
    )
    assert accepted.scheduled_at is not None
    assert await async_sdk.users.schedules.delete(external, name="nudge") is None

    organization = await async_sdk.organizations.upsert(org, name="Async Inc")
    assert organization.name == "Async Inc"
    assert await async_sdk.organizations.add_user(org, external) is None
    assert await async_sdk.organizations.events.post([{"name": "o.e", "identifier": org, "data": {}}]) is None
    sched = await async_sdk.organizations.schedules.upsert(org, name="tick", interval=timedelta(hours=24))
    assert sched.scheduled_at is not None
    assert await async_sdk.organizations.schedules.delete(org, name="tick") is None
    assert await async_sdk.organizations.remove_user(org, external) is None
    assert await async_sdk.organizations.delete(org) is None
    assert await async_sdk.users.delete(external) is None


async def test_async_error_classes(server: Server, async_sdk: lunogram.AsyncClient) -> None:
    with pytest.raises(lunogram.ValidationError):
        await async_sdk.users.upsert({"external_id": ""})
    with pytest.raises(lunogram.NotFoundError):
        await async_sdk.organizations.delete(uid("missing"))
    async with lunogram.AsyncClient("sk_wrong", base_url=server.base_url) as wrong:
        with pytest.raises(lunogram.UnauthorizedError):
            await wrong.users.upsert(uid())
    async with lunogram.AsyncClient(server.public_key, base_url=server.base_url) as public:
        with pytest.raises(lunogram.ForbiddenError):
            await public.organizations.delete(uid())
