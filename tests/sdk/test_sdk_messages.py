"""The Python SDK's transactional send (`client.messages`) against a real `lunogram serve`, sync and async."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import lunogram
import pytest

from helpers import Server, uid, wait_until


@pytest.fixture
def sdk(server: Server) -> Iterator[lunogram.Client]:
    with lunogram.Client(server.secret_key, base_url=server.base_url, max_retries=0) as client:
        yield client


@pytest.fixture
async def async_sdk(server: Server) -> AsyncIterator[lunogram.AsyncClient]:
    async with lunogram.AsyncClient(server.secret_key, base_url=server.base_url, max_retries=0) as client:
        yield client


def template(client: httpx.Client) -> str:
    body = {"name": uid("receipt"), "channel": "email", "variants": {"en": {"subject": "Thanks", "html": "<p>ok</p>"}}}
    made = client.post("/admin/templates", json=body)
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def test_send_is_once_per_key_and_its_story_is_readable(sdk: lunogram.Client, client: httpx.Client) -> None:
    template_id = template(client)
    key = uid("key")
    first = sdk.messages.send(template_id, uid("buyer"), key=key, data={"order": 7})
    again = sdk.messages.send(template_id, uid("someone-else"), key=key)
    assert first.id == again.id
    assert first.channel == "email"
    # the user has no email address: the sender records that, and the story says so
    skipped = wait_until(lambda: (m := sdk.messages.get(first.id)).status != "queued" and m)
    assert (skipped.status, skipped.reason) == ("skipped", "no email address")
    assert [e["kind"] for e in skipped.events] == ["skipped"]
    with pytest.raises(lunogram.NotFoundError):
        sdk.messages.send("00000000-0000-0000-0000-000000000000", uid("u"), key=uid("k"))
    with pytest.raises(ValueError, match="key"):
        sdk.messages.send(template_id, uid("u"), key="")


async def test_async_send(async_sdk: lunogram.AsyncClient, client: httpx.Client) -> None:
    template_id = template(client)
    sent = await async_sdk.messages.send(template_id, uid("buyer"), key=uid("key"))
    assert (await async_sdk.messages.get(sent.id)).id == sent.id


def test_a_public_key_cannot_send(server: Server, client: httpx.Client) -> None:
    template_id = template(client)
    with (
        lunogram.Client(server.public_key, base_url=server.base_url, max_retries=0) as public,
        pytest.raises(lunogram.LunogramError),
    ):
        public.messages.send(template_id, uid("u"), key=uid("k"))
