"""Calling a webhook step's URL, refusing the server's own networks.

A journey's URL is written by an operator and filled from user data, so it must not become a way to reach
what only the server can: loopback, private, link-local (cloud metadata), multicast and reserved addresses
are refused unless the operator allows those networks (LUNOGRAM_WEBHOOK_ALLOWED_NETWORKS). The name is
resolved once and the request goes to the address that was checked (the Host header and TLS name stay the
URL's), so a DNS answer that changes between check and connect cannot slip past.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

MAX_RESPONSE_BYTES = 64 * 1024  # what a step stores of a response body (JSON only)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refused(ValueError):
    """The URL is not one a webhook may call (a permanent failure: not retried)."""


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


def parse_networks(spec: str) -> list[Network]:
    return [ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip()]


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


async def resolve(url: str, allowed: list[Network]) -> tuple[str, str, str]:
    """(the URL with the checked address in place of the name, the Host header, the TLS server name)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Refused("url: not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("url: must be an http or https URL with a host")
    if parts.username or parts.password:
        raise Refused("url: must not carry credentials (use a header)")
    host = parts.hostname
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {host}: {exc.strerror}") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    chosen = None
    for address in addresses:
        if _forbidden(address) and not any(address in network for network in allowed):
            continue
        chosen = address
        break
    if chosen is None:
        raise Refused(
            f"url: {host} resolves to an address webhooks may not call ({addresses[0] if addresses else '?'})"
        )
    literal = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    host_header = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), host_header, host


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
        target, host_header, server_name = await resolve(url, allowed)
    except Refused as exc:
        return Outcome(0, None, str(exc))
    except OSError as exc:
        return Outcome(None, None, str(exc))
    sent = {"User-Agent": "lunogram-journeys", **headers, "Host": host_header, "Idempotency-Key": idempotency_key}
    content = None if body is None else orjson.dumps(body)
    if content is not None:
        sent.setdefault("Content-Type", "application/json")
    try:
        async with client.stream(
            method,
            target,
            headers=sent,
            content=content,
            timeout=timeout,
            extensions={"sni_hostname": server_name},
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
