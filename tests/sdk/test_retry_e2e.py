"""A retried event post after a dropped response is stored once, end to end.

A small TCP proxy sits between the SDK and the real server. Once armed, it forwards the next
POST /api/client/users/events to the server, reads the server's whole answer and then closes the client's
connection without sending it: the server stored the batch but the client never heard so. The SDK retries
with the same Idempotency-Key and the server answers from its record, so the event is stored once. The same
drop without the header (raw httpx, sent twice) stores it twice: the key is what makes the retry safe.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import lunogram
import psycopg
import pytest

from helpers import Server, free_port, loopback_client, uid, wait_until

EVENTS_PATH = b"/api/client/users/events"


def _read_head(sock: socket.socket, buf: bytearray) -> bytes | None:
    """Read until the end of an HTTP head; returns the head (buf keeps the rest), None on EOF."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    del buf[:end]
    return head


def _headers(head: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        if b":" in line:
            name, value = line.split(b":", 1)
            out[name.strip().lower().decode()] = value.strip().decode()
    return out


def _read_exact(sock: socket.socket, buf: bytearray, n: int) -> bytes:
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("peer closed mid-body")
        buf += chunk
    body = bytes(buf[:n])
    del buf[:n]
    return body


def _read_body(sock: socket.socket, buf: bytearray, headers: dict[str, str]) -> bytes:
    """The message body as sent on the wire (Content-Length or chunked)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while b"\r\n0\r\n\r\n" not in b"\r\n" + buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("peer closed mid-body")
            buf += chunk
        end = (b"\r\n" + buf).index(b"\r\n0\r\n\r\n") + 5
        body = bytes(buf[:end])
        del buf[:end]
        return body
    return _read_exact(sock, buf, int(headers.get("content-length", "0")))


class DroppingProxy:
    """HTTP/1.1 keep-alive proxy to `upstream`; `arm()` makes it drop the answer to the next event post."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", free_port()))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.armed = False
        self.dropped = 0
        self.forwarded: list[bytes] = []  # request heads that reached the server
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def arm(self) -> None:
        with self.lock:
            self.armed = True

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        cbuf, ubuf = bytearray(), bytearray()
        try:
            while True:
                head = _read_head(client, cbuf)
                if head is None:
                    return
                body = _read_body(client, cbuf, _headers(head))
                upstream.sendall(head + body)
                with self.lock:
                    self.forwarded.append(head)
                    drop = self.armed and head.startswith(b"POST " + EVENTS_PATH + b" ")
                    if drop:
                        self.armed = False
                rhead = _read_head(upstream, ubuf)
                if rhead is None:
                    return
                rbody = _read_body(upstream, ubuf, _headers(rhead))
                if drop:  # the server did the work; the client never hears about it
                    with self.lock:
                        self.dropped += 1
                    return
                client.sendall(rhead + rbody)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()


@pytest.fixture
def proxy(server: Server) -> Iterator[DroppingProxy]:
    p = DroppingProxy(server.port)
    yield p
    p.close()


def _stored(database_url: str, name: str) -> int:
    """How many copies of event `name` were accepted, once the workers have applied every one of them."""

    def settled() -> tuple[int] | None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            inbox = conn.execute("SELECT count(*) FROM event_inbox WHERE name = %s", (name,)).fetchone()
            history = conn.execute("SELECT count(*) FROM user_events WHERE name = %s", (name,)).fetchone()
        assert inbox is not None
        assert history is not None
        return (history[0],) if inbox[0] == 0 and history[0] > 0 else None

    result: tuple[int] = wait_until(settled, timeout=30, what=f"event {name} applied")
    return result[0]


def _event(name: str, user: str) -> list[dict[str, Any]]:
    return [{"name": name, "identifier": [{"external_id": user}], "data": {"n": 1}}]


def test_sdk_retry_after_dropped_response_stores_once(server: Server, proxy: DroppingProxy) -> None:
    name, user = uid("retried"), uid("user")
    proxy.arm()
    with lunogram.Client(server.secret_key, base_url=proxy.base_url, max_retries=2) as sdk:
        assert sdk.users.events.post(_event(name, user)) is None  # returns normally after the retry
    assert proxy.dropped == 1
    posts = [h for h in proxy.forwarded if h.startswith(b"POST " + EVENTS_PATH)]
    assert len(posts) == 2  # the dropped attempt and the retry both reached the server ...
    keys = {_headers(h).get("idempotency-key") for h in posts}
    assert len(keys) == 1  # ... with the same Idempotency-Key
    assert None not in keys
    assert _stored(server.database_url, name) == 1


def test_without_idempotency_key_the_same_drop_stores_twice(server: Server, proxy: DroppingProxy) -> None:
    name, user = uid("unkeyed"), uid("user")
    proxy.arm()
    headers = {"Authorization": f"Bearer {server.secret_key}", "Content-Type": "application/json"}
    with loopback_client(base_url=proxy.base_url, headers=headers, timeout=30) as raw:
        with pytest.raises(httpx.RemoteProtocolError):
            raw.post("/client/users/events", json=_event(name, user))
        assert raw.post("/client/users/events", json=_event(name, user)).status_code == 202  # the naive retry
    assert proxy.dropped == 1

    # both accepted before we look: an empty inbox means both copies were applied
    assert _stored(server.database_url, name) == 2
