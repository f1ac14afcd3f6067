"""The "bare" peer of the relay axis: the gateway's upstream client (gateway/http1.py) behind a server
of ~40 lines on httptools (llhttp) and uvloop, no aiohttp, no policy. Beside the floor (the same
client behind aiohttp's server) it shows what aiohttp's server costs a relayed request, which is what
a server protocol of the gateway's own could win.

    python -m bench.bare_proxy --port 8082 --upstream http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import asyncio
import gc

import httptools
import uvloop

from gateway import http1

from .naive_proxy import relayed, upstream_client

PREFIX = b"/api/chatkit/"


class BareRelay(asyncio.Protocol):
    """One client connection: each request relayed upstream, answered in order (keep-alive)."""

    def __init__(self, client: http1.Client) -> None:
        self.client = client
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.previous: asyncio.Task[None] | None = None  # answers leave in the order their requests came
        self.url = self.body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()  # type: ignore[union-attr]

    def on_message_begin(self) -> None:
        self.url = self.body = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        answering = self.answer(method, self.url, self.body, self.previous)
        self.previous = asyncio.get_running_loop().create_task(answering)

    async def answer(self, method: str, url: bytes, body: bytes, previous: asyncio.Task[None] | None) -> None:
        status, raw = 404, b"{}"
        if url.startswith(PREFIX):
            try:
                status, raw = await relayed(self.client, method, url[len(PREFIX):].decode(), body or None)
            except http1.TransportError:
                status, raw = 502, b"{}"
        if previous is not None:
            await previous
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 %d -\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                                 % (status, len(raw), raw))


async def serve(port: int, upstream: str) -> None:
    client = upstream_client(upstream)
    server = await asyncio.get_running_loop().create_server(lambda: BareRelay(client), "127.0.0.1", port,
                                                            backlog=1024)
    gc.freeze()  # as the gateway does after start-up
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_proxy")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
