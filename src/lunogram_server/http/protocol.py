"""uvicorn's HTTP/1.1 protocol, sending each response in one write, with a bounded request head and problem
JSON for the requests it refuses itself.

Why: uvicorn writes a response's status line and headers, then its body, as two writes; each is a system
call and a TCP segment of its own, and the client is woken for the head only to wait for the body
(`strace` of a loaded worker: 5,720 writes for ~1,850 requests before, 2,518 for ~1,760 after; the upsert
benchmark's throughput did not move measurably either way). Here the writes made in one
turn of the event loop (a small response's head and body) leave together at the end of that turn; a
streamed body still goes out as it comes, a turn later at most.

The head (request line and headers) is refused past `LUNOGRAM_MAX_HEADER_BYTES` with 431: httptools has no
limit of its own (uvicorn's h11 protocol has `h11_max_incomplete_event_size`, which is where the setting is
passed), and a header of 8 MB was parsed, kept and handed to the app whole. It is counted as it arrives,
so at most one read (256 KiB) beyond the limit is ever held.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from lunogram_server.http.problems import TITLES

DEFAULT_MAX_HEAD_BYTES = 32 * 1024
# After refusing a request we still read (and drop) what the client sends for this long: closing with its
# bytes unread would reset the connection, and the reset can destroy our answer before the client reads it.
LINGER_SECONDS = 2.0

log = logging.getLogger("lunogram.http")


class _OneWritePerTurn:
    """The connection's transport, with writes gathered until the end of the current loop turn."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._pending is None:
            self._pending = [bytes(data)]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(bytes(data))

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()  # what was written before close() still goes out, as with the transport itself
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's own
        return getattr(self._transport, name)


class _HeadTooLarge(Exception):
    pass


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_limit = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_HEAD_BYTES
        self._head_open = True  # reading a request's head (or waiting for one), not its body
        self._head_bytes = 0  # bytes of the reads that began while the head was open
        self._head_unmeasured = False  # the head began inside a read that ended the previous request
        self._ended_scope: object = None  # the scope of the request that ended last
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_OneWritePerTurn(transport, self.loop))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering (see _refuse): read and drop
        self._unset_keepalive_if_required()
        if self._head_open:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._refuse_head()
            else:
                log.warning("invalid HTTP request: %s", exc)
                self._refuse(400, f"request: not valid HTTP/1.1 ({exc})")
            return
        if self._head_open:
            # a head still incomplete: what httptools holds of it is at most what was counted, plus the rest
            # of a read that ended another request
            if self._head_bytes > self._head_limit:
                self._refuse_head()
            elif self.scope is self._ended_scope:
                self._head_unmeasured = False  # no new request began in this read: the next read is counted

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, f"request: {msg}")

    def on_headers_complete(self) -> None:
        # `_head_bytes` counts whole reads, so it is at least the head's size unless the head began in a read
        # that ended another request; only then, or when it is over the limit (that read may hold body
        # bytes too), is the head measured exactly. Counting in on_url/on_header instead cost every request
        # ~4 us in a micro-benchmark of the parser callbacks; as written, the overrides cost ~2 us (the
        # parent is called by name: super() added ~0.5 us more).
        if self._head_unmeasured or self._head_bytes > self._head_limit:
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > self._head_limit:
                raise _HeadTooLarge  # inside the parser: feed_data raises a callback error caused by it
        self._head_open = self._head_unmeasured = False
        self._head_bytes = 0
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)
        self._head_open = self._head_unmeasured = True  # the next head may begin in the rest of this read
        self._head_bytes = 0
        self._ended_scope = self.scope

    def _refuse_head(self) -> None:
        self._refuse(431, f"request: the request line and headers exceed the limit of {self._head_limit} bytes")

    def _refuse(self, status: int, detail: str) -> None:
        """Answer problem JSON and end the connection, without reading the request any further; after the
        answers to the requests ahead of it on this connection (pipelined), if any."""
        self._refused = True
        cycle = self.cycle  # the last request taken; the ones ahead of it are answered first
        if cycle is None or cycle.response_complete:
            self._answer(status, detail)
            return

        def after_the_last_answer() -> None:
            self.server_state.total_requests += 1
            if not self.transport.is_closing():
                self._answer(status, detail)

        cycle.on_response = after_the_last_answer

    def _answer(self, status: int, detail: str) -> None:
        body = orjson.dumps({"title": TITLES.get(status, "error"), "detail": detail, "status": status})
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
        transport = self.transport
        transport.write(b"".join(content))
        if transport.can_write_eof():
            transport.write_eof()
            self.flow.resume_reading()
            self.loop.call_later(LINGER_SECONDS, transport.close)
        else:  # pragma: no cover - TCP transports can
            transport.close()
