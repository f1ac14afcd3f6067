"""Event streams through the EventForwarder: a slow client pauses the upstream (bounded memory, every
byte intact), a client or upstream leaving mid-stream ends the other side, heartbeats never split an
event, HTTP/1.0 clients still get the stream.

The upstream here is a small asyncio server of the test's own (`ScriptedUpstream`): each test scripts
its answer and can see what the gateway does to it (its writes paused, its connection lost). The
clients are raw sockets, so the chunked framing the gateway writes is checked byte for byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import struct
import tracemalloc
from collections.abc import Awaitable, Callable, Mapping

import pytest
from aiohttp import web

from gateway.app import create_app
from plugins import REGISTRY
from tests.harness import gateway_settings
from tests.plugin_helpers import access_lines, captured_logs

API_KEY = "sk-test-forwarding-key-0000"
REQUEST = b"GET /api/chatkit/threads HTTP/1.1\r\nHost: gateway\r\n\r\n"
KEEP_ALIVE = b": keep-alive\n\n"


# ---------------------------------------------------------------- a scripted upstream


class UpstreamConnection(asyncio.Protocol):
    """One connection from the gateway; answers each request head with the upstream's script."""

    def __init__(self, upstream: ScriptedUpstream) -> None:
        self.upstream = upstream
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.task: asyncio.Task[None] | None = None
        self.answered = 0  # requests answered on this connection
        self.written = 0  # body bytes handed to the socket
        self.paused = False  # the socket is full: the gateway is not reading
        self.pauses = 0
        self._writable: asyncio.Future[None] | None = None
        self.lost: asyncio.Future[float] = self.loop.create_future()  # resolves to the loop time of the loss

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.upstream.connections.append(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next()

    def _next(self) -> None:
        if self.task is not None or b"\r\n\r\n" not in self.buffer or self.lost.done():
            return
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)  # the gateway sends these GETs without a body
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        self.upstream.requests.append((self, request_line))
        self.task = self.loop.create_task(self._answer(request_line))

    async def _answer(self, request_line: str) -> None:
        try:
            await self.upstream.script(self, request_line)
        except ConnectionError:
            return
        finally:
            self.task = None
            self.answered += 1
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(self.loop.time())
        self._wake()

    def pause_writing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()

    def _wake(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # For scripts ----------------------------------------------------------------------------------

    def head(self, content_type: str = "text/event-stream", framing: str = "Transfer-Encoding: chunked") -> None:
        assert self.transport is not None
        self.transport.write(f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n{framing}\r\n\r\n".encode())

    def write(self, data: bytes) -> None:
        if self.lost.done():
            raise ConnectionResetError("the gateway closed the upstream connection")
        assert self.transport is not None
        self.transport.write(data)
        self.written += len(data)

    async def drain(self) -> None:
        while self.paused and not self.lost.done():
            self._writable = self.loop.create_future()
            await self._writable
        if self.lost.done():
            raise ConnectionResetError("the gateway closed the upstream connection")

    async def send(self, data: bytes) -> None:
        """One chunk of a chunked body, waiting while the gateway does not read."""
        self.write(b"%x\r\n%b\r\n" % (len(data), data))
        await self.drain()

    def end(self) -> None:
        assert self.transport is not None
        self.transport.write(b"0\r\n\r\n")

    async def hold_until_lost(self, seconds: float = 5.0) -> None:
        await asyncio.wait_for(asyncio.shield(self.lost), seconds)


Script = Callable[[UpstreamConnection, str], Awaitable[None]]


class ScriptedUpstream:
    def __init__(self) -> None:
        self.script: Script = self._unset
        self.connections: list[UpstreamConnection] = []
        self.requests: list[tuple[UpstreamConnection, str]] = []
        self.server: asyncio.Server | None = None
        self.base_url = ""

    @staticmethod
    async def _unset(connection: UpstreamConnection, request_line: str) -> None:
        raise AssertionError("no script set")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: UpstreamConnection(self), "127.0.0.1", 0)
        self.base_url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for connection in self.connections:
            if connection.transport is not None:
                connection.transport.abort()
            if connection.task is not None:
                connection.task.cancel()
        tasks = [c.task for c in self.connections if c.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.server.wait_closed()


@pytest.fixture
async def upstream():
    server = ScriptedUpstream()
    await server.start()
    yield server
    await server.close()


def settings_for(tmp_path, upstream: ScriptedUpstream, environ: Mapping[str, str] | None = None):
    """The gateway's settings in front of `upstream`, with the access log on."""
    return gateway_settings(tmp_path, upstream.base_url, API_KEY, config="plugins: [access_log]\n", environ=environ)


async def start_gateway_for(aiohttp_client, tmp_path, upstream: ScriptedUpstream, *,
                            environ: Mapping[str, str] | None = None):
    """The gateway in front of `upstream`, served with handler cancellation as `serve` does (aiohttp's
    TestServer always cancels a handler whose client left)."""
    return await aiohttp_client(create_app(settings_for(tmp_path, upstream, environ), REGISTRY))


@pytest.fixture
async def gateway_port(request, aiohttp_client, tmp_path, upstream):
    """The port of a gateway in front of `upstream`; parametrized (indirect) False, served without handler
    cancellation: a client leaving then cancels nothing, so only the forwarder can notice it."""
    if getattr(request, "param", True):
        yield (await start_gateway_for(aiohttp_client, tmp_path, upstream)).port
        return
    runner = web.AppRunner(create_app(settings_for(tmp_path, upstream), REGISTRY), handler_cancellation=False,
                           access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield runner.addresses[0][1]
    await runner.cleanup()


async def access_line(logs, timeout: float = 3.0) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (lines := [line for line in access_lines(logs) if line["path"] == "/api/chatkit/threads"]):
        assert loop.time() < deadline, logs.getvalue()
        await asyncio.sleep(0.02)
    return lines[-1]


# ---------------------------------------------------------------- a raw client


class Incomplete(Exception):
    """The connection ended before the chunked body's terminating 0-chunk."""


class RawClient:
    """A client socket read only when the test says so, parsing HTTP/1.1 framing strictly."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.buffer = bytearray()

    @classmethod
    async def connect(cls, port: int, *, receive_buffer: int | None = None) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if receive_buffer is not None:  # before connecting, so the window is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return cls(sock)

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def _fill(self) -> None:
        try:
            data = await asyncio.wait_for(self.loop.sock_recv(self.sock, 256 * 1024), 5)
        except ConnectionResetError:
            data = b""
        if not data:
            raise Incomplete(f"connection closed with {len(self.buffer)} unparsed bytes")
        self.buffer += data

    async def read_until(self, separator: bytes) -> bytes:
        while (end := self.buffer.find(separator)) < 0:
            await self._fill()
        data = bytes(self.buffer[:end])
        del self.buffer[:end + len(separator)]
        return data

    async def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def read_head(self) -> tuple[int, dict[str, str]]:
        status_line, *lines = (await self.read_until(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        return int(status_line.split()[1]), {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}

    async def read_chunk(self) -> bytes | None:
        """The next chunk's payload; None at the terminating 0-chunk (no trailers expected)."""
        size_line = await self.read_until(b"\r\n")
        assert re.fullmatch(rb"[0-9a-f]+", size_line), f"bad chunk size line {size_line[:40]!r}"
        size = int(size_line, 16)
        payload = await self.read_exactly(size)
        assert await self.read_exactly(2) == b"\r\n", "chunk not followed by CRLF"
        return payload if size else None

    async def read_chunks(self) -> list[bytes]:
        chunks = []
        while (chunk := await self.read_chunk()) is not None:
            chunks.append(chunk)
        return chunks

    async def read_to_eof(self) -> bytes:
        try:
            while True:
                await self._fill()
        except Incomplete:
            data = bytes(self.buffer)
            self.buffer.clear()
            return data

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def clients():
    opened: list[RawClient] = []

    async def connect(port: int, **kwargs) -> RawClient:
        client = await RawClient.connect(port, **kwargs)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        client.close()


# ---------------------------------------------------------------- bodies

EVENT_SIZE = 16 * 1024


def event(i: int) -> bytes:
    prefix = b"data: %08d " % i
    return prefix + bytes([97 + i % 26]) * (EVENT_SIZE - len(prefix) - 2) + b"\n\n"


def body_digest(count: int) -> str:
    digest = hashlib.sha256()
    for i in range(count):
        digest.update(event(i))
    return digest.hexdigest()


def streaming(count: int | None) -> Script:
    """An upstream sending `count` (None: endless) 16 KB events as fast as the gateway takes them."""

    async def script(connection: UpstreamConnection, request_line: str) -> None:
        connection.head()
        i = 0
        while count is None or i < count:
            await connection.send(event(i))
            i += 1
        connection.end()

    return script


async def read_stream(client: RawClient) -> tuple[int, str]:
    """Read a whole chunked answer: its size and sha256; asserts it is an event stream."""
    status, headers = await client.read_head()
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    digest, size = hashlib.sha256(), 0
    while (chunk := await client.read_chunk()) is not None:
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


# ---------------------------------------------------------------- backpressure


async def test_a_client_that_reads_nothing_pauses_the_upstream_and_then_gets_every_byte(
        aiohttp_client, tmp_path, upstream, clients):
    count = 30 * 1024 * 1024 // EVENT_SIZE  # 30 MB
    upstream.script = streaming(count)
    gateway = await start_gateway_for(aiohttp_client, tmp_path, upstream)
    tracemalloc.start()
    try:
        client = await clients(gateway.port, receive_buffer=64 * 1024)
        await client.send(REQUEST)
        await asyncio.sleep(1.2)  # the client reads nothing
        (connection,) = upstream.connections
        stalled_at = connection.written
        await asyncio.sleep(0.3)
        assert connection.paused, "the upstream's writes should be blocked while the client reads nothing"
        assert connection.written == stalled_at, "the upstream kept writing to a gateway that should not read"
        # What the upstream got rid of sits in the sockets' kernel buffers (autotuned on loopback: ~8 MB
        # seen here) and under the gateway's 256 KB high-water mark: nowhere near the 30 MB body.
        assert stalled_at < count * EVENT_SIZE // 2, f"{stalled_at / 1e6:.1f} MB written for a stalled client"
        size, digest = await read_stream(client)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == count * EVENT_SIZE
    assert digest == body_digest(count)  # every byte, in order
    assert connection.pauses >= 1
    assert peak < 8 * 1024 * 1024, f"peak traced memory {peak / 1e6:.1f} MB for a 30 MB body"


async def test_a_client_slower_than_the_read_timeout_is_not_an_upstream_timeout(
        aiohttp_client, tmp_path, upstream, clients):
    """The upstream is paused because of the client, not silent: the read timeout must not cut it."""
    count = 24 * 1024 * 1024 // EVENT_SIZE  # more than the sockets' kernel buffers take (~8 MB)
    upstream.script = streaming(count)
    gateway = await start_gateway_for(aiohttp_client, tmp_path, upstream,
                                      environ={"GATEWAY__UPSTREAM__TIMEOUTS__READ": "0.3"})
    with captured_logs() as logs:
        client = await clients(gateway.port, receive_buffer=64 * 1024)
        await client.send(REQUEST)
        await asyncio.sleep(1.0)  # more than three read timeouts with the upstream paused
        assert upstream.connections[0].paused
        size, digest = await read_stream(client)
        line = await access_line(logs)
    assert (size, digest) == (count * EVENT_SIZE, body_digest(count))
    assert (line["status"], line["error"]) == (200, None)


async def test_a_stream_that_ends_while_paused_leaves_its_upstream_connection_usable(
        aiohttp_client, tmp_path, upstream, clients):
    """The last events and the end arrive in the read that pauses the upstream; the client then leaves.
    The upstream connection goes back to the pool, and the next request on it must be answered (it used
    to stay paused, and that request waited for the read timeout)."""
    gateway = await start_gateway_for(aiohttp_client, tmp_path, upstream,
                                      environ={"GATEWAY__UPSTREAM__TIMEOUTS__READ": "3"})

    def buffered_for_client() -> int:
        (handler,) = gateway.server.runner.server.connections  # the gateway's side of the raw client
        return handler.transport.get_write_buffer_size()

    async def ends_in_one_read(connection: UpstreamConnection, request_line: str) -> None:
        if connection.answered:  # the next request: a short stream
            connection.head()
            await connection.send(b"data: next\n\n")
            connection.end()
            return
        connection.head()
        i = 0
        while (buffered := buffered_for_client()) < 224 * 1024:  # under the 256 KB mark: never paused so far
            size = 32768 if buffered < 160 * 1024 else 8192  # fast while the kernel takes it all
            await connection.send(event(i)[:size - 2] + b"\n\n")
            i += 1
            await asyncio.sleep(0.002)  # each event its own read by the gateway
        tail = b"".join(b"%x\r\n%b\r\n" % (8192, event(n)[:8190] + b"\n\n") for n in range(i, i + 5))
        connection.write(tail + b"0\r\n\r\n")  # one read: past the mark, and the end

    upstream.script = ends_in_one_read
    client = await clients(gateway.port, receive_buffer=16 * 1024)
    await client.send(REQUEST)
    for _ in range(300):
        if upstream.connections and upstream.connections[0].answered:
            break
        await asyncio.sleep(0.01)
    assert upstream.connections[0].answered, "the upstream never sent the end of its answer"
    await asyncio.sleep(0.1)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # leaves without reading the end
    await asyncio.sleep(0.1)
    async with asyncio.timeout(1.5):
        response = await gateway.get("/api/chatkit/threads")
        assert response.status == 200
        assert await response.read() == b"data: next\n\n"
    assert [c for c, _ in upstream.requests] == [upstream.connections[0]] * 2  # the same, pooled connection


# ---------------------------------------------------------------- a client leaving


@pytest.mark.parametrize("gateway_port", [True, False], ids=["cancelled", "uncancelled"], indirect=True)
async def test_a_stalled_client_that_leaves_closes_the_paused_upstream(gateway_port, upstream, clients):
    upstream.script = streaming(None)
    with captured_logs() as logs:
        client = await clients(gateway_port, receive_buffer=64 * 1024)
        await client.send(REQUEST)
        status, _ = await client.read_head()
        assert status == 200 and await client.read_chunk()
        for _ in range(200):
            if upstream.connections[0].paused:
                break
            await asyncio.sleep(0.01)
        connection = upstream.connections[0]
        assert connection.paused
        await asyncio.sleep(0.2)
        client.close()
        closed_at = asyncio.get_running_loop().time()
        lost_at = await asyncio.wait_for(asyncio.shield(connection.lost), 1.0)
        line = await access_line(logs)
    assert lost_at - closed_at < 1.0
    assert (line["status"], line["error"]) == (499, "client_disconnected")


@pytest.mark.parametrize("gateway_port", [False], ids=["uncancelled"], indirect=True)
async def test_a_client_leaving_between_events_closes_the_upstream_at_its_next_event_without_cancellation(
        gateway_port, upstream, clients):
    """Without handler cancellation, nothing but the forwarder notices: the next event finds the client gone."""

    async def slow(connection: UpstreamConnection, request_line: str) -> None:
        connection.head()
        for i in range(20):
            await connection.send(b"data: %d\n\n" % i)
            await asyncio.sleep(0.3)
        connection.end()

    upstream.script = slow
    with captured_logs() as logs:
        client = await clients(gateway_port)
        await client.send(REQUEST)
        await client.read_head()
        assert await client.read_chunk() == b"data: 0\n\n"
        client.close()
        closed_at = asyncio.get_running_loop().time()
        lost_at = await asyncio.wait_for(asyncio.shield(upstream.connections[0].lost), 1.5)
        line = await access_line(logs)
    assert lost_at - closed_at < 0.3 + 0.5  # at the next event (0.3 s), not at the end of the stream
    assert upstream.connections[0].written < 5 * len(b"9\r\ndata: 1\n\n\r\n")
    assert (line["status"], line["error"]) == (499, "client_disconnected")


# ---------------------------------------------------------------- heartbeats


async def test_heartbeats_go_between_events_never_inside_one(aiohttp_client, tmp_path, upstream, clients):
    async def halting(connection: UpstreamConnection, request_line: str) -> None:
        connection.head()
        await connection.send(b"data: one\n\n")
        await asyncio.sleep(0.4)  # silent between whole events: comments
        await connection.send(b"data: abc")
        await asyncio.sleep(0.4)  # silent inside an event: none
        await connection.send(b"def\n")
        await asyncio.sleep(0.3)  # still inside it (one line ended, not the event)
        await connection.send(b"\n")
        connection.end()

    upstream.script = halting
    gateway = await start_gateway_for(aiohttp_client, tmp_path, upstream,
                                      environ={"GATEWAY__SERVER__HEARTBEAT_SECONDS": "0.1"})
    client = await clients(gateway.port)
    await client.send(REQUEST)
    status, headers = await client.read_head()
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    chunks = await client.read_chunks()
    body = b"".join(chunks)
    assert body.replace(KEEP_ALIVE, b"") == b"data: one\n\ndata: abcdef\n\n"
    before, inside, _ = body.partition(b"data: abcdef\n\n")
    assert inside, f"a comment split the event: {body!r}"
    assert before.startswith(b"data: one\n\n") and before.count(KEEP_ALIVE) >= 2
    assert before == b"data: one\n\n" + KEEP_ALIVE * before.count(KEEP_ALIVE)
    assert KEEP_ALIVE in chunks  # a comment is a chunk of its own


# ---------------------------------------------------------------- HTTP/1.0


@pytest.mark.parametrize("connection_header", ["", "Connection: keep-alive\r\n"])
@pytest.mark.parametrize("content_type", ["text/event-stream", "application/json"])
async def test_an_http_1_0_client_gets_the_body_unframed_until_the_connection_closes(
        aiohttp_client, tmp_path, upstream, clients, connection_header, content_type):
    """The pump path: no chunked framing for HTTP/1.0, so the end of the body is the end of the connection,
    even for a client that asked to keep it alive."""
    events = [b"data: {\"n\": %d}\n\n" % i for i in range(5)]

    async def paced(connection: UpstreamConnection, request_line: str) -> None:
        connection.head(content_type)
        for data in events:
            await connection.send(data)
            await asyncio.sleep(0.02)
        connection.end()

    upstream.script = paced
    gateway = await start_gateway_for(aiohttp_client, tmp_path, upstream)
    client = await clients(gateway.port)
    await client.send(f"GET /api/chatkit/threads HTTP/1.0\r\nHost: gateway\r\n{connection_header}\r\n".encode())
    status, headers = await client.read_head()
    assert status == 200 and headers["content-type"] == content_type
    assert "transfer-encoding" not in headers and "content-length" not in headers
    assert headers.get("connection", "close").lower() != "keep-alive"
    async with asyncio.timeout(2):
        assert await client.read_to_eof() == b"".join(events)  # and then the connection closes


# ---------------------------------------------------------------- an upstream failing mid-stream


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_an_upstream_dropping_mid_stream_leaves_the_client_without_the_final_chunk(
        aiohttp_client, tmp_path, upstream, clients, how):
    async def drops(connection: UpstreamConnection, request_line: str) -> None:
        connection.head()
        await connection.send(b"data: one\n\n")
        await connection.send(b"data: two\n\n")
        await connection.send(b"data: thr")
        await asyncio.sleep(0.05)
        assert connection.transport is not None
        getattr(connection.transport, how)()

    upstream.script = drops
    gateway = await start_gateway_for(aiohttp_client, tmp_path, upstream)
    with captured_logs() as logs:
        client = await clients(gateway.port)
        await client.send(REQUEST)
        status, _ = await client.read_head()
        received = []
        with pytest.raises(Incomplete):
            while (chunk := await client.read_chunk()) is not None:
                received.append(chunk)
        line = await access_line(logs)
    assert b"".join(received) == b"data: one\n\ndata: two\n\ndata: thr"
    assert not client.buffer  # nothing after the last whole chunk: no 0-chunk, no stray bytes
    assert (status, line["status"], line["error"]) == (200, 200, "upstream_disconnected")


async def test_an_upstream_silent_past_the_read_timeout_is_cut_short(aiohttp_client, tmp_path, upstream, clients):
    async def falls_silent(connection: UpstreamConnection, request_line: str) -> None:
        connection.head()
        await connection.send(b"data: one\n\n")
        await connection.hold_until_lost()

    upstream.script = falls_silent
    gateway = await start_gateway_for(aiohttp_client, tmp_path, upstream,
                                      environ={"GATEWAY__UPSTREAM__TIMEOUTS__READ": "0.3"})
    loop = asyncio.get_running_loop()
    with captured_logs() as logs:
        client = await clients(gateway.port)
        await client.send(REQUEST)
        await client.read_head()
        assert await client.read_chunk() == b"data: one\n\n"
        first_at = loop.time()
        with pytest.raises(Incomplete):
            await client.read_chunk()
        cut_after = loop.time() - first_at
        line = await access_line(logs)
    assert 0.25 < cut_after < 1.0
    assert (line["status"], line["error"]) == (200, "upstream_timeout")
    assert upstream.connections[0].lost.done()  # the gateway closed the silent upstream too


async def test_an_upstream_ending_its_unframed_stream_by_closing_ends_it_cleanly(
        aiohttp_client, tmp_path, upstream, clients):
    """An event stream without Content-Length or chunking ends when the upstream closes: a clean end."""

    async def until_close(connection: UpstreamConnection, request_line: str) -> None:
        connection.head(framing="Connection: close")
        for i in range(3):
            connection.write(b"data: %d\n\n" % i)
            await asyncio.sleep(0.02)
        assert connection.transport is not None
        connection.transport.close()

    upstream.script = until_close
    gateway = await start_gateway_for(aiohttp_client, tmp_path, upstream)
    with captured_logs() as logs:
        client = await clients(gateway.port)
        await client.send(REQUEST)
        await client.read_head()
        assert b"".join(await client.read_chunks()) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
        line = await access_line(logs)
    assert (line["status"], line["error"], line["events"]) == (200, None, 3)
