"""A lean SMTP server for the benchmarks: takes every message, counts it and its Message-ID, keeps nothing else.

    .venv/bin/python bench/smtp_sink.py [--port 0]      # prints "listening <port>" once ready

A real SMTP server over TCP (RFC 5321): EHLO/HELO, MAIL, RCPT, DATA (dot-unstuffed, so the Message-ID read
is the one sent), BDAT (RFC 3030), RSET, NOOP, QUIT; it advertises PIPELINING (RFC 2920) and CHUNKING
(`--no-chunking`: not) and answers every complete command in the order it came. `XSTATS` answers
`250 <messages> <distinct Message-IDs>` for the bench to read.

Why not aiosmtpd, as the tests use: pure Python with a coroutine per command, it spent more CPU per message
than the server under test, and in the bench's own process it competed with the sender for the two cores
(docs/performance.md, "Messaging"). This one runs in its own process, on uvloop, answers a pipelined
group with one write, and its CPU is reported apart ("smtp sink").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*?)\r?$", re.IGNORECASE | re.MULTILINE)


class Stats:
    def __init__(self) -> None:
        self.messages = 0
        self.ids: set[bytes] = set()


class SinkProtocol(asyncio.Protocol):
    def __init__(self, stats: Stats, chunking: bool) -> None:
        self.stats = stats
        self.chunking = chunking
        self.buffer = bytearray()
        self.in_data = False
        self.chunk_left = 0  # bytes of the current BDAT chunk still to come
        self.chunk_last = False
        self.chunks = bytearray()
        self.recipients = 0
        self.sender = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transport is no asyncio.Transport
        transport.write(b"220 sink.bench ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out: list[bytes] = []
        while True:
            if self.chunk_left:
                taken = self.buffer[: self.chunk_left]
                self.chunks += taken
                del self.buffer[: len(taken)]
                self.chunk_left -= len(taken)
                if self.chunk_left:
                    break
                out.append(self._chunk_done())
                continue
            if self.in_data:
                if self.buffer.startswith(b".\r\n"):  # an empty message
                    body = b""
                    del self.buffer[:3]
                else:
                    end = self.buffer.find(b"\r\n.\r\n")
                    if end < 0:
                        break
                    body = bytes(self.buffer[: end + 2])
                    del self.buffer[: end + 5]
                self.in_data = False
                self._message(body)
                out.append(b"250 2.0.0 accepted\r\n")
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                break
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 2]
            reply = self._command(line)
            if reply is None:  # QUIT
                out.append(b"221 2.0.0 bye\r\n")
                assert self.transport is not None
                self.transport.write(b"".join(out))
                self.transport.close()
                return
            out.append(reply)
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def _chunk_done(self) -> bytes:
        if not self.recipients:  # refused transaction: the chunk is read and dropped
            self.chunks.clear()
            return b"554 5.5.1 no valid recipients\r\n"
        if not self.chunk_last:
            return b"250 2.0.0 chunk received\r\n"
        body, self.chunks = bytes(self.chunks), bytearray()
        self._message(body, stuffed=False)
        return b"250 2.0.0 accepted\r\n"

    def _command(self, line: bytes) -> bytes | None:
        verb = line[:4].upper()
        if verb == b"BDAT" and self.chunking:
            size, _, last = line[5:].strip().partition(b" ")
            if not size.isdigit() or last.strip().upper() not in (b"", b"LAST"):
                return b"501 5.5.4 Syntax: BDAT <size> [LAST]\r\n"
            self.chunk_left, self.chunk_last = int(size), bool(last.strip())
            if self.chunk_left:
                return b""  # answered once the chunk is in
            return self._chunk_done()
        if verb == b"MAIL":
            self.sender, self.recipients = True, 0
            return b"250 2.1.0 OK\r\n"
        if verb == b"RCPT":
            if not self.sender:
                return b"503 5.5.1 MAIL first\r\n"
            self.recipients += 1
            return b"250 2.1.5 OK\r\n"
        if verb == b"DATA":
            if not self.recipients:
                return b"503 5.5.1 RCPT first\r\n"
            self.in_data = True
            return b"354 end with <CRLF>.<CRLF>\r\n"
        if verb == b"EHLO":
            chunking = b"250-CHUNKING\r\n" if self.chunking else b""
            return b"250-sink.bench\r\n250-PIPELINING\r\n" + chunking + b"250-8BITMIME\r\n250 SIZE 10485760\r\n"
        if verb == b"HELO":
            return b"250 sink.bench\r\n"
        if verb == b"RSET":
            self.sender, self.recipients = False, 0
            return b"250 2.0.0 OK\r\n"
        if verb == b"NOOP":
            return b"250 2.0.0 OK\r\n"
        if verb == b"QUIT":
            return None
        if line.upper() == b"XSTATS":
            return f"250 {self.stats.messages} {len(self.stats.ids)}\r\n".encode()
        return b"500 5.5.2 unknown command\r\n"

    def _message(self, body: bytes, *, stuffed: bool = True) -> None:
        head = body.split(b"\r\n\r\n", 1)[0]
        if stuffed and (b"\r\n.." in head or head.startswith(b"..")):
            head = head.replace(b"\r\n..", b"\r\n.")
            if head.startswith(b".."):
                head = head[1:]
        found = _MESSAGE_ID.search(head)
        self.stats.messages += 1
        self.sender, self.recipients = False, 0
        self.stats.ids.add(found.group(1).strip() if found else b"")


async def serve(port: int, chunking: bool = True) -> None:
    stats = Stats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkProtocol(stats, chunking), "127.0.0.1", port, backlog=512)
    print("listening", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


async def stats(port: int) -> tuple[int, int]:
    """(messages, distinct Message-IDs) the sink at `port` has taken."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()
        writer.write(b"XSTATS\r\n")
        line = await reader.readline()
        writer.write(b"QUIT\r\n")
        _, messages, distinct = line.split()
        return int(messages), int(distinct)
    finally:
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-chunking", action="store_true", help="do not offer CHUNKING (BDAT): DATA only")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(serve(args.port, not args.no_chunking))
    except ImportError:
        asyncio.run(serve(args.port, not args.no_chunking))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
