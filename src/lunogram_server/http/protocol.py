"""uvicorn's HTTP/1.1 protocol, sending each response in one write.

Why: uvicorn writes a response's status line and headers, then its body, as two writes; each is a system
call and a TCP segment of its own, and the client is woken for the head only to wait for the body
(`strace` of a loaded worker: 5,720 writes for ~1,850 requests before, 2,518 for ~1,760 after; the upsert
benchmark's throughput did not move measurably either way). Here the writes made in one
turn of the event loop (a small response's head and body) leave together at the end of that turn; a
streamed body still goes out as it comes, a turn later at most.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


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

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's own
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_OneWritePerTurn(transport, self.loop))  # type: ignore[arg-type]
