"""Where a message may be sent when the destination URL is not the operator's own setting.

Webhook URLs and Web Push endpoints come from templates, user data or browsers, so they must not become a
way to reach what only the server can: loopback, private, link-local (cloud metadata), multicast and
reserved addresses are refused unless the operator allowed those networks (`allowed`). The name is
resolved once and the request goes to the address that was checked (the Host header and the TLS server
name stay the URL's), so a DNS answer that changes between the check and the connection cannot slip past.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refused(ValueError):
    """The URL is not one this server may call (a permanent failure: not retried)."""


@dataclass(frozen=True)
class Target:
    url: str  # the URL with the checked address in place of the host name
    host_header: str
    server_name: str  # for TLS (SNI and certificate check)


def parse_networks(spec: str | Iterable[str]) -> list[Network]:
    """`10.0.0.0/8,127.0.0.1` (or a list of CIDRs) -> networks; ValueError on a bad one."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    return [ipaddress.ip_network(part.strip(), strict=False) for part in parts if part.strip()]


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


async def resolve(url: str, allowed: Sequence[Network], *, field: str = "url", https_only: bool = False) -> Target:
    """The checked target of `url`; Refused for a URL that may not be called, OSError when the name does
    not resolve (which may pass: the caller retries). `https_only` lets plain http through only to the
    networks the operator allowed."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Refused(f"{field}: is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused(f"{field}: must be an http or https URL with a host")
    if parts.username or parts.password:
        raise Refused(f"{field}: must not carry credentials (use a header)")
    host = parts.hostname
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {host}: {exc.strerror}") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    chosen = None
    for address in addresses:
        permitted = any(address in network for network in allowed)
        if _forbidden(address) and not permitted:
            continue
        if https_only and parts.scheme != "https" and not permitted:
            raise Refused(f"{field}: must be an https URL")
        chosen = address
        break
    if chosen is None:
        shown = addresses[0] if addresses else "?"
        raise Refused(f"{field}: {host} resolves to an address this server may not call ({shown})")
    literal = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    host_header = parts.netloc.rpartition("@")[2]
    return Target(urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), host_header, host)
