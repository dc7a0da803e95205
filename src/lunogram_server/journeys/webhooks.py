"""Calling a webhook step's URL, refusing the server's own networks.

A journey's URL is written by an operator and filled from user data, so it goes through the same check as
every URL the server did not choose itself (netcheck.py): the server's own networks are refused unless the
operator allows them (LUNOGRAM_WEBHOOK_ALLOWED_NETWORKS), and the request goes to the address checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from lunogram_server.netcheck import Network, Refused, resolve

MAX_RESPONSE_BYTES = 64 * 1024  # what a step stores of a response body (JSON only)


@dataclass(frozen=True)
class Outcome:
    status: int | None  # None: no answer (network error, timeout)
    body: Any  # the JSON body, or None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


async def call(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    headers: dict[str, str],
    body: Any,
    timeout: float,  # noqa: ASYNC109 - httpx's own timeout: it covers connect, write and each read
    idempotency_key: str,
    allowed: list[Network],
) -> Outcome:
    try:
        checked = await resolve(url, allowed)
    except Refused as exc:
        return Outcome(0, None, str(exc))
    except OSError as exc:
        return Outcome(None, None, str(exc))
    sent = {
        "User-Agent": "lunogram-journeys",
        **headers,
        "Host": checked.host_header,
        "Idempotency-Key": idempotency_key,
    }
    content = None if body is None else orjson.dumps(body)
    if content is not None:
        sent.setdefault("Content-Type", "application/json")
    try:
        async with client.stream(
            method,
            checked.url,
            headers=sent,
            content=content,
            timeout=timeout,
            extensions={"sni_hostname": checked.server_name},
        ) as response:
            raw = b""
            async for chunk in response.aiter_bytes():
                raw += chunk
                if len(raw) > MAX_RESPONSE_BYTES:
                    raw = b""
                    break
            try:
                parsed = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                parsed = None
            return Outcome(response.status_code, parsed, None)
    except httpx.InvalidURL as exc:  # not an HTTPError: a URL httpx cannot send is not worth retrying
        return Outcome(0, None, f"url: {exc}")
    except httpx.HTTPError as exc:
        return Outcome(None, None, f"{type(exc).__name__}: {exc}".strip(": "))
