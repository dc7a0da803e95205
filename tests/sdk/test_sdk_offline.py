"""The Python SDK without a server: retries (httpx.MockTransport), request encoding, client-side checks, config."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import lunogram
import pytest
from lunogram import NOT_GIVEN, ExternalID
from lunogram._base import parse_retry_after
from lunogram._operations import encode_identifier, encode_interval

BASE = "http://lunogram.test/api"
NOW = "2025-01-02T03:04:05.123456+00:00"
USER = {
    "id": "0b6f6f4e-8e39-4d1e-9a54-6c1f1f3f0c11",
    "project_id": "5d8f0d5e-4b1a-4c1f-8c3b-1a2b3c4d5e6f",
    "identifier": [
        {
            "id": "9a1e0c7e-1111-4d1e-9a54-6c1f1f3f0c11",
            "source": "default",
            "external_id": "u1",
            "metadata": {},
            "created_at": NOW,
            "updated_at": "2025-01-02T03:04:05Z",
        }
    ],
    "email": None,
    "phone": None,
    "data": {"firstName": "Ada"},
    "timezone": None,
    "locale": None,
    "has_push_device": False,
    "version": 1,
    "created_at": NOW,
    "updated_at": NOW,
    "some_future_field": 1,
}

Reply = httpx.Response | Exception


class Recorder:
    """A MockTransport handler answering from a script (the last entry repeats) and keeping every request."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def body(self, i: int = -1) -> Any:
        return json.loads(self.requests[i].content)

    def keys(self) -> list[str | None]:
        return [r.headers.get("idempotency-key") for r in self.requests]


def ok(body: Any = None, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body) if body is not None else httpx.Response(status)


def problem(status: int, detail: str = "", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"title": f"t{status}", "detail": detail, "status": status}, headers=headers)


def make(recorder: Recorder, **kwargs: Any) -> tuple[lunogram.Client, list[float]]:
    sleeps: list[float] = []
    http = httpx.Client(transport=httpx.MockTransport(recorder))
    client = lunogram.Client("sk_test", base_url=BASE, http_client=http, **kwargs)
    client._sleep = sleeps.append
    return client, sleeps


def make_async(recorder: Recorder, **kwargs: Any) -> tuple[lunogram.AsyncClient, list[float]]:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    http = httpx.AsyncClient(transport=httpx.MockTransport(recorder))
    client = lunogram.AsyncClient("sk_test", base_url=BASE, http_client=http, **kwargs)
    client._sleep = sleep
    return client, sleeps


# --- retries ----------------------------------------------------------------------------------------------


def test_503_then_success_retries_with_the_same_idempotency_key() -> None:
    recorder = Recorder(problem(503), ok(USER))
    client, sleeps = make(recorder)
    user = client.users.upsert("u1")
    assert user.id == USER["id"]
    assert len(recorder.requests) == 2
    keys = recorder.keys()
    assert keys[0] is not None
    assert keys[0] == keys[1]
    assert len(sleeps) == 1
    assert 0.25 <= sleeps[0] <= 0.5
    assert recorder.requests[0].content == recorder.requests[1].content


def test_429_honours_retry_after() -> None:
    recorder = Recorder(problem(429, headers={"Retry-After": "3"}), ok(status=202))
    client, sleeps = make(recorder)
    client.users.events.post([{"name": "e", "identifier": "u1", "data": {}}])
    assert sleeps == [3.0]
    assert len(set(recorder.keys())) == 1


def test_network_error_then_success() -> None:
    recorder = Recorder(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), ok(USER))
    client, sleeps = make(recorder)
    assert client.users.upsert("u1").version == 1
    assert len(recorder.requests) == 3
    assert len(set(recorder.keys())) == 1
    assert len(sleeps) == 2
    assert 0.5 <= sleeps[1] <= 1.0  # exponential: the second wait doubles


def test_each_call_gets_its_own_idempotency_key_and_deletes_none() -> None:
    recorder = Recorder(ok(USER))
    client, _ = make(recorder)
    client.users.upsert("u1")
    client.users.upsert("u1")
    recorder.replies = [ok(status=204)]
    client.users.delete("u1")
    first, second, delete = recorder.keys()
    assert first != second
    assert delete is None
    assert recorder.requests[2].method == "DELETE"
    assert recorder.body(2) == {"identifier": [{"source": "default", "external_id": "u1"}]}


@pytest.mark.parametrize(
    ("reply", "error", "status"),
    [
        (problem(503, "down"), lunogram.RequestError, 503),
        (problem(500), lunogram.RequestError, 500),
        (problem(429, headers={"Retry-After": "1"}), lunogram.RateLimitError, 429),
        (httpx.ConnectError("refused"), lunogram.NetworkError, None),
    ],
)
def test_gives_up_after_max_retries(reply: Reply, error: type[lunogram.LunogramError], status: int | None) -> None:
    recorder = Recorder(reply)
    client, sleeps = make(recorder, max_retries=2)
    with pytest.raises(error) as caught:
        client.organizations.upsert("o1")
    assert len(recorder.requests) == 3
    assert len(sleeps) == 2
    assert len(set(recorder.keys())) == 1
    if status is None:
        assert isinstance(caught.value.__cause__, httpx.ConnectError)
    else:
        assert isinstance(caught.value, lunogram.APIError)
        assert caught.value.status_code == status
        assert caught.value.title == f"t{status}"
    if isinstance(caught.value, lunogram.RateLimitError):
        assert caught.value.retry_after == 1.0


def test_client_errors_are_not_retried() -> None:
    for status, error in [
        (400, lunogram.ValidationError),
        (401, lunogram.UnauthorizedError),
        (403, lunogram.ForbiddenError),
        (404, lunogram.NotFoundError),
        (409, lunogram.RequestError),
    ]:
        recorder = Recorder(problem(status, "why"))
        client, sleeps = make(recorder)
        with pytest.raises(error) as caught:
            client.users.delete("u1")
        assert (len(recorder.requests), sleeps) == (1, [])
        assert caught.value.detail == "why"
        assert str(caught.value) == f"{status} t{status}: why"


def test_max_retries_zero_and_long_retry_after_are_not_waited_for() -> None:
    recorder = Recorder(problem(503))
    client, _ = make(recorder, max_retries=0)
    with pytest.raises(lunogram.RequestError):
        client.users.upsert("u1")
    assert len(recorder.requests) == 1

    recorder = Recorder(problem(429, headers={"Retry-After": "3600"}))
    client, sleeps = make(recorder)
    with pytest.raises(lunogram.RateLimitError) as caught:
        client.users.upsert("u1")
    assert (len(recorder.requests), sleeps, caught.value.retry_after) == (1, [], 3600.0)


def test_non_json_error_body() -> None:
    recorder = Recorder(httpx.Response(502, text="<html>bad gateway</html>"))
    client, _ = make(recorder, max_retries=0)
    with pytest.raises(lunogram.RequestError) as caught:
        client.users.upsert("u1")
    assert caught.value.status_code == 502
    assert caught.value.title == "Bad Gateway"
    assert "bad gateway" in caught.value.detail


def test_unexpected_success_body() -> None:
    client, _ = make(Recorder(ok({"not": "a user"})))
    with pytest.raises(lunogram.LunogramError, match="unexpected 200 answer to POST users"):
        client.users.upsert("u1")


def test_retry_after_http_date() -> None:
    later = datetime.now(UTC) + timedelta(seconds=30)
    assert 28 <= (parse_retry_after(format_datetime(later, usegmt=True)) or 0) <= 30
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_async_retries_503_429_and_network_errors() -> None:
    recorder = Recorder(
        problem(503), problem(429, headers={"Retry-After": "2"}), httpx.ConnectError("refused"), ok(USER)
    )
    client, sleeps = make_async(recorder, max_retries=3)
    user = await client.users.upsert("u1")
    assert user.identifier[0].external_id == "u1"
    assert len(recorder.requests) == 4
    assert len(set(recorder.keys())) == 1
    assert sleeps[1] == 2.0
    assert len(sleeps) == 3

    recorder = Recorder(httpx.ConnectError("refused"))
    client, sleeps = make_async(recorder, max_retries=1)
    with pytest.raises(lunogram.NetworkError):
        await client.users.events.post([{"name": "e", "identifier": "u1"}])
    assert (len(recorder.requests), len(sleeps)) == (2, 1)


# --- requests and responses -------------------------------------------------------------------------------


def test_request_shape_headers_and_response_parsing() -> None:
    recorder = Recorder(ok(USER))
    client, _ = make(recorder)
    user = client.users.upsert(
        [ExternalID("u1", metadata={"someKey": 1}), {"external_id": "p1", "source": "posthog"}, "u2"],
        email="a@example.com",
        phone=None,
        data={"firstName": "Ada", "nested": {"camelCase": [1]}, "when": datetime(2025, 1, 1, tzinfo=UTC)},
    )
    request = recorder.requests[0]
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/client/users"
    assert request.headers["authorization"] == "Bearer sk_test"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith(f"lunogram-python/{lunogram.__version__}")
    assert recorder.body() == {
        "identifier": [
            {"source": "default", "external_id": "u1", "metadata": {"someKey": 1}},
            {"external_id": "p1", "source": "posthog"},
            {"source": "default", "external_id": "u2"},
        ],
        "email": "a@example.com",
        "phone": None,  # None is sent (clears); omitted fields are not
        "data": {"firstName": "Ada", "nested": {"camelCase": [1]}, "when": "2025-01-01T00:00:00+00:00"},
    }
    assert user.created_at == datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert user.identifier[0].updated_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert user.data == {"firstName": "Ada"}


def test_schedule_encoding() -> None:
    recorder = Recorder(ok({"id": "s1", "name": "n", "scheduled_at": NOW, "data": {}}, status=202))
    client, _ = make(recorder)
    tz = timezone(timedelta(hours=2))
    accepted = client.organizations.schedules.upsert(
        "o1", name="n", scheduled_at=datetime(2030, 4, 1, 9, tzinfo=tz), interval=timedelta(days=7), data=None
    )
    assert recorder.body() == {
        "name": "n",
        "identifier": [{"source": "default", "external_id": "o1"}],
        "scheduled_at": "2030-04-01T09:00:00+02:00",
        "interval": "168h",
        "data": None,
    }
    assert str(recorder.requests[0].url) == f"{BASE}/client/organizations/scheduled"
    assert accepted == lunogram.ScheduledAccepted(id="s1", name="n", scheduled_at=datetime.fromisoformat(NOW), data={})


def test_membership_and_events_encoding() -> None:
    recorder = Recorder(ok())
    client, _ = make(recorder)
    client.organizations.add_user("o1", ExternalID("u1", "crm"), data={"roleName": "admin"})
    assert recorder.body() == {
        "organization": {"identifier": [{"source": "default", "external_id": "o1"}]},
        "user": {"identifier": [{"source": "crm", "external_id": "u1"}]},
        "data": {"roleName": "admin"},
    }
    client.organizations.events.post([{"name": "e", "match": {"planName": "pro"}}])
    assert recorder.body() == [{"name": "e", "match": {"planName": "pro"}}]
    assert str(recorder.requests[-1].url) == f"{BASE}/client/organizations/events"


def test_naive_datetime_is_rejected_before_sending() -> None:
    recorder = Recorder(ok())
    client, _ = make(recorder)
    with pytest.raises(ValueError, match="naive"):
        client.users.schedules.upsert("u1", name="n", scheduled_at=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        client.users.schedules.upsert("u1", name="n", start_at=datetime.now(), interval="1h")
    with pytest.raises(ValueError, match="naive"):
        client.users.upsert("u1", data={"at": datetime(2030, 1, 1)})
    assert recorder.requests == []


async def test_async_naive_datetime_is_rejected() -> None:
    recorder = Recorder(ok())
    client, _ = make_async(recorder)
    with pytest.raises(ValueError, match="naive"):
        await client.organizations.schedules.upsert("o1", name="n", scheduled_at=datetime(2030, 1, 1))
    assert recorder.requests == []


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(hours=24), "24h"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(days=1, hours=1, minutes=1, seconds=1), "25h1m1s"),
        (timedelta(weeks=1), "168h"),
        ("7 days", "7 days"),
    ],
)
def test_interval_encoding(value: timedelta | str, text: str) -> None:
    assert encode_interval(value) == text


@pytest.mark.parametrize("value", [timedelta(0), timedelta(seconds=-5), timedelta(seconds=1.5)])
def test_bad_timedelta_interval(value: timedelta) -> None:
    with pytest.raises(ValueError, match="interval"):
        encode_interval(value)


def test_identifier_checks() -> None:
    expected = [{"source": "s", "external_id": "x", "metadata": {"k": 1}}]
    assert encode_identifier(ExternalID("x", "s", {"k": 1})) == expected
    assert encode_identifier(("a", "b")) == [
        {"source": "default", "external_id": "a"},
        {"source": "default", "external_id": "b"},
    ]
    with pytest.raises(ValueError, match="at least one"):
        encode_identifier([])
    with pytest.raises(ValueError, match="external_id"):
        encode_identifier({"externalId": "x"})
    with pytest.raises(TypeError):
        encode_identifier(42)  # type: ignore[arg-type]
    recorder = Recorder(ok())
    client, _ = make(recorder)
    with pytest.raises(ValueError, match="at least one event"):
        client.users.events.post([])
    with pytest.raises(TypeError):
        client.users.events.post({"name": "e"})  # type: ignore[arg-type]
    assert recorder.requests == []
    assert repr(NOT_GIVEN) == "NOT_GIVEN"
    assert not NOT_GIVEN


# --- configuration ----------------------------------------------------------------------------------------


def test_env_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LUNOGRAM_API_KEY", raising=False)
    monkeypatch.delenv("LUNOGRAM_BASE_URL", raising=False)
    with pytest.raises(lunogram.LunogramError, match="LUNOGRAM_API_KEY"):
        lunogram.Client()
    monkeypatch.setenv("LUNOGRAM_API_KEY", "sk_from_env")
    with lunogram.Client() as client:
        assert client.api_key == "sk_from_env"
        assert client.base_url == lunogram.DEFAULT_BASE_URL == "https://console.lunogram.com/api"
    monkeypatch.setenv("LUNOGRAM_BASE_URL", "https://self.example/api/")
    with lunogram.Client() as client:
        assert client.base_url == "https://self.example/api"
    with lunogram.Client("sk_arg", base_url="http://other/api") as client:
        assert (client.api_key, client.base_url) == ("sk_arg", "http://other/api")
    assert "sk_from_env" not in repr(lunogram.Client())


async def test_async_env_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUNOGRAM_API_KEY", "sk_env")
    monkeypatch.setenv("LUNOGRAM_BASE_URL", "http://env.example/api")
    async with lunogram.AsyncClient() as client:
        assert (client.api_key, client.base_url) == ("sk_env", "http://env.example/api")


def test_context_managers_close_only_their_own_pool() -> None:
    with lunogram.Client("sk_x", base_url=BASE) as client:
        own = client._http
    assert own.is_closed
    mine = httpx.Client()
    with lunogram.Client("sk_x", base_url=BASE, http_client=mine):
        pass
    assert not mine.is_closed
    mine.close()


async def test_async_context_manager_closes_the_pool() -> None:
    async with lunogram.AsyncClient("sk_x", base_url=BASE) as client:
        own = client._http
    assert own.is_closed


def test_timeout_is_applied_per_request() -> None:
    seen: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return ok(status=204)

    http = httpx.Client(transport=httpx.MockTransport(handler))
    client = lunogram.Client("sk", base_url=BASE, timeout=1.5, http_client=http)
    client.users.delete("u1")
    assert seen == [{"connect": 1.5, "read": 1.5, "write": 1.5, "pool": 1.5}]


def test_namespace_methods_are_documented() -> None:
    upsert: Callable[..., Any] = lunogram.Client("sk", base_url=BASE).users.upsert
    assert upsert.__name__ == "upsert"
    assert upsert.__doc__ is not None
    assert "Create or update the user" in upsert.__doc__
