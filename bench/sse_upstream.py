"""The SSE upstream: a lean uvloop server that streams N events of 256 B, paced P ms, on any path.

Run as its own process: ``python -m bench.sse_upstream --port 9000``. A request's query sets the
stream: ``?n=60&p=50``. Each event is stamped with time.monotonic_ns() when it is written, so a
client on the same machine (CLOCK_MONOTONIC is shared) measures its latency end to end.
Keep-alive: a connection serves one stream after another, as a proxy's pool uses it.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
from urllib.parse import parse_qs

EVENT_SIZE = 256
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n")
CHUNK_HEAD = b"%x\r\n" % EVENT_SIZE
PREFIX = b'data: {"type":"bench","t":"'
PAD_LEN = EVENT_SIZE - len(PREFIX) - len(b'0000000000000000000","i":0000,"pad":"') - len(b'"}\n\n')


def event(stamp_ns: int, index: int) -> bytes:
    """One chunk holding one 256-byte SSE event; the stamp is a fixed-width string so it is never split."""
    body = b'%s%019d","i":%04d,"pad":"%s"}\n\n' % (PREFIX, stamp_ns, index, b"x" * PAD_LEN)
    return CHUNK_HEAD + body + b"\r\n"


class StreamServer(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.body_left = 0  # request body bytes still to skip (Content-Length)
        self.chunked_body = False  # skipping a chunked request body up to its last chunk
        self.streaming = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.advance()

    def advance(self) -> None:
        """Skip a request body, then start a stream for each complete request head."""
        while not self.streaming:
            if self.body_left:
                taken = min(self.body_left, len(self.buffer))
                self.buffer = self.buffer[taken:]
                self.body_left -= taken
                if self.body_left:
                    return
                self.start(*self.pending)
                continue
            if self.chunked_body:
                end = self.buffer.find(b"0\r\n\r\n")
                if end < 0:
                    return
                self.buffer = self.buffer[end + 5:]
                self.chunked_body = False
                self.start(*self.pending)
                continue
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4:]
            request_line, *header_lines = head.split("\r\n")
            target = request_line.split(" ")[1]
            query = parse_qs(target.partition("?")[2])
            self.pending = (int(query.get("n", ["60"])[0]), float(query.get("p", ["50"])[0]) / 1000.0)
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
            if headers.get("transfer-encoding", "").lower() == "chunked":
                self.chunked_body = True
            else:
                self.body_left = int(headers.get("content-length", "0"))
                if not self.body_left:
                    self.start(*self.pending)

    def start(self, count: int, pace: float) -> None:
        assert self.transport is not None
        self.streaming = True
        self.transport.write(HEAD)
        loop = asyncio.get_running_loop()
        self.send(loop, loop.time(), 0, count, pace)

    def send(self, loop: asyncio.AbstractEventLoop, start: float, index: int, count: int, pace: float) -> None:
        """Write event `index`, then schedule the next on an absolute grid, so pacing does not drift."""
        self.timer = None
        if self.transport is None:
            return
        self.transport.write(event(time.monotonic_ns(), index))
        index += 1
        if index < count:
            self.timer = loop.call_at(start + index * pace, self.send, loop, start, index, count, pace)
        else:
            self.transport.write(b"0\r\n\r\n")
            self.streaming = False
            self.advance()  # a pipelined next request, if any


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StreamServer, "127.0.0.1", port, backlog=4096, reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.run(serve(args.port))
    except ImportError:
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
