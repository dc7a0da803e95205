"""http/protocol.py: a response's head and body leave in one write, and nothing written is lost."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from helpers import Server
from lunogram_server.http.protocol import _OneWritePerTurn


class _Transport:
    """Records what reaches the socket."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.sent.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return f"info:{name}"


async def test_writes_of_one_turn_leave_together_and_close_sends_what_was_written() -> None:
    transport = _Transport()
    wrapped = _OneWritePerTurn(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    wrapped.write(b"HTTP/1.1 200 OK\r\n\r\n")
    wrapped.write(memoryview(b"body"))
    assert transport.sent == []
    await asyncio.sleep(0)
    assert transport.sent == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    wrapped.write(b"more")
    wrapped.close()
    assert transport.sent[-1] == b"more"
    assert transport.closed
    assert wrapped.get_extra_info("peername") == "info:peername"


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, body = received.split(b"\r\n\r\n", 1)
    headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    while len(body) < int(headers[b"content-length"]):
        body += sock.recv(65536)
    return head, body


def test_a_keep_alive_connection_gets_whole_responses(server: Server) -> None:
    """Requests one after the other on one connection, each answer read whole before the next is sent."""
    body = b'{"identifier":[{"external_id":"keep-alive"}]}'
    request = (
        b"POST /api/client/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {server.secret_key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for _ in range(3):
            sock.sendall(request)
            head, answer = _read_response(sock)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert b'"external_id": "keep-alive"' in answer
