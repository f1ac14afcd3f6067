"""gateway.http1, the upstream hop's HTTP/1.1 client, against tiny real servers whose bytes the test controls.

Each server is `asyncio.start_server` with a handler written for the case; it counts the connections it
accepts, so reuse is checked where it happens, on the wire.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field

import pytest
from multidict import CIMultiDict

from gateway import http1
from tests.support.ports import reserve_refusing_port

MAX_READ = 256 * 1024  # the most an asyncio socket transport hands over in one data_received


# The tiny servers ---------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    target: str
    headers: CIMultiDict[str]
    head: bytes  # the request line and headers as sent
    raw_body: bytes  # the body with its framing (chunks and all)
    body: bytes  # the body without its framing


async def read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    raw, body = [], []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.strip(), 16)
        data = await reader.readexactly(size + 2)
        raw += [size_line, data]
        assert data.endswith(b"\r\n"), data
        body.append(data[:-2])
        if size == 0:
            return b"".join(raw), b"".join(body)


@dataclass
class RawServer:
    """A loopback server running `handle(server, reader, writer, conn)` for each connection (conn: 1, 2, …)."""

    handle: Callable[[RawServer, asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
    accepted: int = 0
    open: int = 0
    max_open: int = 0
    requests: list[tuple[int, Request]] = field(default_factory=list)  # (conn, request), in arrival order
    eof: dict[int, asyncio.Event] = field(default_factory=dict)  # set when the client closed conn
    port: int = 0

    async def start(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn = self.accepted
        self.eof[conn] = asyncio.Event()
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await self.handle(self, reader, writer, conn)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client left, or the test is over (a cancelled handler would be logged as an error)
        finally:
            self.open -= 1
            self._tasks.discard(task)
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()

    async def next_request(self, reader: asyncio.StreamReader, conn: int) -> Request | None:
        """The next request on this connection, or None when the client closed it."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            self.eof[conn].set()
            return None
        except ConnectionError:
            self.eof[conn].set()
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
        assert version == "HTTP/1.1"
        headers = CIMultiDict(line.split(": ", 1) for line in lines[1:] if line)
        raw = body = b""
        if "Content-Length" in headers:
            raw = body = await reader.readexactly(int(headers["Content-Length"]))
        elif headers.get("Transfer-Encoding") == "chunked":
            raw, body = await read_chunked(reader)
        request = Request(method, target, headers, head, raw, body)
        self.requests.append((conn, request))
        return request

    async def until_eof(self, reader: asyncio.StreamReader, conn: int) -> bytes:
        """Everything else the client sends on conn, until it closes it."""
        rest = await reader.read()
        self.eof[conn].set()
        return rest

    async def closed_by_client(self, conn: int, timeout: float = 2.0) -> bool:
        try:
            await asyncio.wait_for(self.eof[conn].wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


def answer(body: bytes = b"ok", *headers: str, status: str = "200 OK", version: str = "HTTP/1.1",
           length: bool = True) -> bytes:
    lines = [f"{version} {status}", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def answering(make: Callable[[Request, int], bytes]) -> Callable[..., Awaitable[None]]:
    """A keep-alive server: answers each request on a connection with `make(request, conn)`."""

    async def handle(server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     conn: int) -> None:
        while (request := await server.next_request(reader, conn)) is not None:
            writer.write(make(request, conn))
            await writer.drain()

    return handle


OK = answering(lambda request, conn: answer(f"{request.method} {request.target} on {conn}".encode()))

Start = Callable[..., Awaitable[tuple[RawServer, http1.Client]]]


@pytest.fixture
async def serve() -> AsyncIterator[Start]:
    """`await serve(handle, **client_options)`: a started RawServer and a Client for its origin."""
    servers: list[RawServer] = []
    clients: list[http1.Client] = []

    async def start(handle: Callable[..., Awaitable[None]], *, origin: Callable[[int], http1.Origin] | None = None,
                    **options: object) -> tuple[RawServer, http1.Client]:
        server = RawServer(handle)
        await server.start()
        servers.append(server)
        options.setdefault("ssl_context", None)
        options.setdefault("connect_timeout", 5.0)
        where = origin(server.port) if origin else http1.Origin("http", "127.0.0.1", server.port)
        client = http1.Client(where, **options)  # type: ignore[arg-type]
        clients.append(client)
        return server, client

    yield start
    for client in clients:
        await client.close()
    for server in servers:
        await server.close()


async def fetch(client: http1.Client, method: str = "GET", target: str = "/", headers: object = None,
                body: bytes | AsyncIterator[bytes] | None = None, *, idle_timeout: float | None = 5.0,
                deadline: float | None = None) -> tuple[http1.Response, bytes]:
    """One whole exchange: send, read the body, release."""
    response = await client.send(method, target, headers or {}, body, idle_timeout=idle_timeout, deadline=deadline)
    try:
        data = await asyncio.wait_for(response.read(), 5)
    finally:
        client.release(response)
    return response, data


async def chunks(*parts: bytes, pause: float = 0.0) -> AsyncIterator[bytes]:
    for part in parts:
        if pause:
            await asyncio.sleep(pause)
        yield part


# Keep-alive ---------------------------------------------------------------------------------------------


async def test_sequential_requests_share_one_connection(serve):
    """A complete keep-alive answer puts its connection back; the next request goes out on it."""
    server, client = await serve(OK)
    _, first = await fetch(client, target="/a")
    _, second = await fetch(client, target="/b")
    assert (first, second) == (b"GET /a on 1", b"GET /b on 1")
    assert server.accepted == 1


async def test_an_answer_saying_connection_close_is_not_reused(serve):
    """`Connection: close` ends the connection even when the server would carry on."""
    server, client = await serve(answering(lambda request, conn: answer(b"x", "Connection: close")))
    await fetch(client)
    await fetch(client)
    assert server.accepted == 2
    assert await server.closed_by_client(1)


async def test_an_http10_answer_is_not_reused(serve):
    """HTTP/1.0 without keep-alive is one request per connection."""
    server, client = await serve(answering(lambda request, conn: answer(b"old", version="HTTP/1.0")))
    response, body = await fetch(client)
    assert (response.status, body) == (200, b"old")
    await fetch(client)
    assert server.accepted == 2


async def test_a_close_delimited_body_is_read_to_the_end_and_not_reused(serve):
    """No Content-Length, no chunks: the body is what arrives until the server closes, all of it."""
    pieces = [bytes([65 + i]) * 1000 for i in range(20)]

    async def handle(server, reader, writer, conn):
        await server.next_request(reader, conn)
        writer.write(answer(b"", length=False))
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.002)

    server, client = await serve(handle)
    response, body = await fetch(client)
    assert response.until_close
    assert body == b"".join(pieces)
    await fetch(client)
    assert server.accepted == 2


# Answers' framing ---------------------------------------------------------------------------------------


async def test_an_answer_dribbled_byte_by_byte_after_a_100_continue_arrives_whole(serve, monkeypatch):
    """Head and chunked body one byte per TCP write, after an interim 100: status, reason, headers and body intact."""
    received = []
    feed = http1.Connection.data_received
    monkeypatch.setattr(http1.Connection, "data_received", lambda self, data: (received.append(data), feed(self, data)))
    body_chunks = [b"hello ", b"chunked ", b"world" * 5]
    wire = (b"HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n"
            b"HTTP/1.1 200 Fine Thanks\r\nX-Real: yes\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in body_chunks) + b"0\r\n\r\n")

    async def handle(server, reader, writer, conn):
        while await server.next_request(reader, conn) is not None:
            for i in range(len(wire)):
                writer.write(wire[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0.0005)

    server, client = await serve(handle)
    response, body = await fetch(client)
    assert len(received) > len(wire) // 2  # it really came in pieces
    assert response.status == 200
    assert response.reason == "Fine Thanks"
    assert response.headers["X-Real"] == "yes" and "X-Interim" not in response.headers
    assert body == b"".join(body_chunks)
    await fetch(client)
    assert server.accepted == 1  # a chunked answer leaves the connection reusable


async def test_a_head_answer_with_a_content_length_completes_without_its_body(serve):
    """A HEAD answer announces a length it does not send; reading it ends at once."""
    _, client = await serve(answering(lambda request, conn: answer(b"x" * 1000)[:-1000]))
    response, body = await fetch(client, "HEAD")
    assert (response.status, response.content_length, body) == (200, 1000, b"")


async def test_a_204_has_no_body_and_keeps_the_connection(serve):
    server, client = await serve(answering(lambda request, conn: b"HTTP/1.1 204 No Content\r\n\r\n"))
    response, body = await fetch(client, "DELETE")
    assert (response.status, body) == (204, b"")
    await fetch(client, "DELETE")
    assert server.accepted == 1


async def test_a_body_cut_short_of_its_content_length_is_disconnected(serve):
    async def handle(server, reader, writer, conn):
        await server.next_request(reader, conn)
        writer.write(answer(b"0123456789")[:-5])

    _, client = await serve(handle)
    response = await client.send("GET", "/", {}, None, idle_timeout=5, deadline=None)
    try:
        assert await response.readany() == b"01234"
        with pytest.raises(http1.Disconnected):
            await response.readany()
    finally:
        client.release(response)


# Requests' framing --------------------------------------------------------------------------------------


async def test_a_bytes_body_goes_with_its_content_length(serve):
    server, client = await serve(OK)
    await fetch(client, "POST", "/p", {"Content-Type": "application/json"}, b'{"a": 1}')
    request = server.requests[0][1]
    assert request.headers["Content-Length"] == "8" and "Transfer-Encoding" not in request.headers
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == b'{"a": 1}'


async def test_a_streamed_body_goes_chunked_with_correct_framing(serve):
    """Empty pieces are skipped (an empty chunk would end the body); the last chunk ends it."""
    server, client = await serve(OK)
    _, answered = await fetch(client, "POST", "/up", {}, chunks(b"abc", b"", b"x" * 300, pause=0.01))
    request = server.requests[0][1]
    assert request.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in request.headers
    assert request.raw_body == b"3\r\nabc\r\n12c\r\n" + b"x" * 300 + b"\r\n0\r\n\r\n"
    assert answered == b"POST /up on 1"


async def test_a_streamed_body_with_the_callers_content_length_goes_raw(serve):
    server, client = await serve(OK)
    await fetch(client, "PUT", "/", {"Content-Length": "6"}, chunks(b"abc", b"def"))
    request = server.requests[0][1]
    assert request.headers.getall("Content-Length") == ["6"] and "Transfer-Encoding" not in request.headers
    assert request.raw_body == b"abcdef"


async def test_a_bodiless_post_says_content_length_0_and_a_get_says_nothing(serve):
    server, client = await serve(OK)
    await fetch(client, "POST")
    await fetch(client, "GET")
    post, get = (request for _, request in server.requests)
    assert post.headers.getall("Content-Length") == ["0"]
    assert "Content-Length" not in get.headers and "Transfer-Encoding" not in get.headers


async def test_the_host_header_names_the_origin_and_the_callers_host_is_dropped(serve):
    server, client = await serve(OK)
    await fetch(client, headers={"Host": "evil.example", "X-A": "1"})
    request = server.requests[0][1]
    assert request.headers.getall("Host") == [f"127.0.0.1:{server.port}"]
    assert request.head.startswith(b"GET / HTTP/1.1\r\nHost: ")


def test_the_host_header_omits_the_default_port_and_brackets_ipv6():
    assert http1.Origin("http", "api.example", 80).host_header == "api.example"
    assert http1.Origin("https", "api.example", 443).host_header == "api.example"
    assert http1.Origin("https", "api.example", 80).host_header == "api.example:80"
    assert http1.Origin("http", "api.example", 8080).host_header == "api.example:8080"
    assert http1.Origin("http", "::1", 8080).host_header == "[::1]:8080"
    assert http1.Origin("https", "::1", 443).host_header == "[::1]"


async def test_plain_http_through_a_proxy_names_the_whole_url_and_sends_the_proxy_credentials(serve):
    """Absolute form in the request line; Host without the default port; Proxy-Authorization to the proxy."""
    server, client = await serve(OK, origin=lambda port: http1.Origin(
        "http", "api.example", 80, proxy_scheme="http", proxy_host="127.0.0.1", proxy_port=port,
        proxy_headers=(("Proxy-Authorization", "Basic dTpw"),)))
    await fetch(client, target="/v1/x?q=1")
    request = server.requests[0][1]
    assert request.target == "http://api.example/v1/x?q=1"
    assert request.headers["Host"] == "api.example"
    assert request.headers["Proxy-Authorization"] == "Basic dTpw"


async def test_a_proxy_refusing_connect_is_proxy_refused(serve):
    async def handle(server, reader, writer, conn):
        await server.next_request(reader, conn)
        writer.write(answer(b"", status="407 Proxy Authentication Required"))
        await server.until_eof(reader, conn)

    server, client = await serve(handle, ssl_context=ssl.create_default_context(), origin=lambda port: http1.Origin(
        "https", "api.example", 443, proxy_scheme="http", proxy_host="127.0.0.1", proxy_port=port,
        proxy_headers=(("Proxy-Authorization", "Basic dTpw"),)))
    with pytest.raises(http1.ProxyRefused) as refused:
        await client.send("GET", "/", {}, None, idle_timeout=5, deadline=None)
    assert refused.value.status == 407
    request = server.requests[0][1]
    assert (request.method, request.target, request.headers["Host"]) == ("CONNECT", "api.example:443", "api.example:443")
    assert request.headers["Proxy-Authorization"] == "Basic dTpw"
    assert await server.closed_by_client(1)
    assert client._open == 0


@pytest.mark.parametrize("headers", [{"X-Bad": "a\r\nInjected: 1"}, {"X-Bad": "a\nb"}, {"X-Bad": "a\rb"},
                                     {"X-Bad\r\nInjected": "1"}])
async def test_a_header_with_a_line_break_is_refused_and_nothing_is_sent(serve, headers):
    sent = []

    async def handle(server, reader, writer, conn):
        sent.append(await server.until_eof(reader, conn))

    server, client = await serve(handle)
    with pytest.raises(ValueError):
        await client.send("GET", "/", headers, None, idle_timeout=5, deadline=None)
    assert await server.closed_by_client(1)
    assert sent == [b""]
    assert client._open == 0


# Retrying a request the upstream dropped --------------------------------------------------------------------


def drops_the_second_request():
    """Connection 1 answers one request, then reads the next one whole and closes without a byte;
    later connections answer normally."""

    async def handle(server, reader, writer, conn):
        if conn == 1:
            request = await server.next_request(reader, conn)
            writer.write(answer(f"{request.method} first".encode()))
            await writer.drain()
            await server.next_request(reader, conn)
            return
        await OK(server, reader, writer, conn)

    return handle


async def test_a_get_on_a_kept_alive_connection_the_upstream_dropped_is_sent_again(serve):
    server, client = await serve(drops_the_second_request())
    await fetch(client)
    response, body = await fetch(client, target="/again")
    assert (response.status, body) == (200, b"GET /again on 2")
    assert server.accepted == 2
    assert [(conn, request.target) for conn, request in server.requests] == [(1, "/"), (1, "/again"), (2, "/again")]


async def test_a_post_on_a_kept_alive_connection_the_upstream_dropped_is_not_sent_again(serve):
    server, client = await serve(drops_the_second_request())
    await fetch(client, "POST", body=b"1")
    with pytest.raises(http1.Disconnected):
        await client.send("POST", "/", {}, b"2", idle_timeout=5, deadline=None)
    assert server.accepted == 1
    assert [request.body for _, request in server.requests] == [b"1", b"2"]
    assert client._open == 0


async def test_a_server_closing_a_fresh_connection_before_answering_is_disconnected(serve):
    """No retry on a new connection: the drop is not a stale keep-alive."""

    async def handle(server, reader, writer, conn):
        await server.next_request(reader, conn)

    server, client = await serve(handle)
    with pytest.raises(http1.Disconnected, match="before answering"):
        await client.send("GET", "/", {}, None, idle_timeout=5, deadline=None)
    assert server.accepted == 1


async def test_garbage_instead_of_an_answer_is_disconnected(serve):
    async def handle(server, reader, writer, conn):
        await server.next_request(reader, conn)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await server.until_eof(reader, conn)

    server, client = await serve(handle)
    with pytest.raises(http1.Disconnected, match="not valid HTTP"):
        await client.send("GET", "/", {}, None, idle_timeout=5, deadline=None)
    assert await server.closed_by_client(1)


# Timeouts -----------------------------------------------------------------------------------------------


def silent_after(prefix: bytes):
    """Read a request, send `prefix`, then say nothing until the client leaves."""

    async def handle(server, reader, writer, conn):
        await server.next_request(reader, conn)
        writer.write(prefix)
        await server.until_eof(reader, conn)

    return handle


async def test_no_head_within_the_idle_timeout_is_a_timeout_from_send(serve):
    server, client = await serve(silent_after(b""))
    started = time.monotonic()
    with pytest.raises(http1.Timeout, match="silent"):
        await client.send("GET", "/", {}, None, idle_timeout=0.3, deadline=None)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 0.3 * 3 + 0.5
    assert await server.closed_by_client(1)


async def test_a_body_going_silent_mid_way_is_a_timeout_from_readany(serve):
    server, client = await serve(silent_after(answer(b"x" * 100)[:-50]))
    response = await client.send("GET", "/", {}, None, idle_timeout=0.3, deadline=None)
    try:
        assert await response.readany() == b"x" * 50
        started = time.monotonic()
        with pytest.raises(http1.Timeout):
            await response.readany()
        elapsed = time.monotonic() - started
    finally:
        client.release(response)
    assert 0.2 <= elapsed < 0.3 * 3 + 0.5
    assert await server.closed_by_client(1)


async def test_the_total_deadline_holds_even_while_bytes_keep_coming(serve):
    async def handle(server, reader, writer, conn):
        await server.next_request(reader, conn)
        writer.write(answer(b"", "Content-Length: 1000", length=False))
        while True:
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.02)

    _, client = await serve(handle)
    started = time.monotonic()
    response = await client.send("GET", "/", {}, None, idle_timeout=None, deadline=asyncio.get_running_loop().time() + 0.4)
    try:
        with pytest.raises(http1.Timeout, match="total"):
            await asyncio.wait_for(response.read(), 5)
    finally:
        client.release(response)
    assert 0.4 <= time.monotonic() - started < 0.4 * 3 + 0.5


async def test_connecting_to_a_host_that_never_accepts_times_out():
    """A listener whose backlog is full drops SYNs: the connect hangs until connect_timeout."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        loop = asyncio.get_running_loop()
        for _ in range(5):  # fill the accept queue until a connect hangs
            filler = socket.socket()
            filler.setblocking(False)
            fillers.append(filler)
            try:
                await asyncio.wait_for(loop.sock_connect(filler, ("127.0.0.1", port)), 0.2)
            except TimeoutError:
                break
        else:
            pytest.skip("could not make a connect hang on this machine")
        client = http1.Client(http1.Origin("http", "127.0.0.1", port), ssl_context=None, connect_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await client.send("GET", "/", {}, None, idle_timeout=5, deadline=None)
        assert 0.3 <= time.monotonic() - started < 0.3 * 3 + 0.5
        assert client._open == 0
        await client.close()
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_a_refused_connect_is_connect_failed():
    with reserve_refusing_port() as held:
        port = held.getsockname()[1]
        client = http1.Client(http1.Origin("http", "127.0.0.1", port), ssl_context=None, connect_timeout=2)
        with pytest.raises(http1.ConnectFailed) as failed:
            await client.send("GET", "/", {}, None, idle_timeout=5, deadline=None)
        await client.close()
    assert (failed.value.port, failed.value.to_proxy) == (port, False)
    assert client._open == 0


# Flow control ---------------------------------------------------------------------------------------------


def sends_big_bodies(size: int, block: bytes):
    """Answers every request with `size` bytes of `block` repeated, as fast as the client takes them."""

    async def handle(server, reader, writer, conn):
        while await server.next_request(reader, conn) is not None:
            writer.write(answer(b"", f"Content-Length: {size}", length=False))
            sent = 0
            while sent < size:
                piece = block[:size - sent]
                writer.write(piece)
                sent += len(piece)
                await writer.drain()

    return handle


async def test_a_big_body_read_slowly_stays_bounded_in_memory_and_arrives_intact(serve, monkeypatch):
    size, block = 20 * 1024 * 1024, bytes(range(256)) * 4096  # 20 MiB in blocks of 1 MiB
    most, pauses = [0], [0]
    feed, pause = http1.Response.feed, http1.Connection.pause_reading

    def counting_feed(self, chunk):
        feed(self, chunk)
        most[0] = max(most[0], self._buffered)

    def counting_pause(self):
        pauses[0] += 1
        pause(self)

    monkeypatch.setattr(http1.Response, "feed", counting_feed)
    monkeypatch.setattr(http1.Connection, "pause_reading", counting_pause)
    _, client = await serve(sends_big_bodies(size, block))
    response = await client.send("GET", "/", {}, None, idle_timeout=5, deadline=None)
    digest, received, reads = hashlib.sha256(), 0, 0
    try:
        while chunk := await response.readany():
            digest.update(chunk)
            received += len(chunk)
            reads += 1
            if reads % 4 == 0:
                await asyncio.sleep(0.002)  # a slow reader: the socket outpaces it
    finally:
        client.release(response)
    assert received == size
    assert digest.hexdigest() == hashlib.sha256(block * 20).hexdigest()
    assert pauses[0] > 0  # the reader really was outpaced
    assert most[0] <= http1.READ_HIGH_WATER + MAX_READ


async def test_a_reader_that_stops_reading_is_not_an_upstream_gone_silent(serve):
    """While the client itself holds the socket's reading back, the upstream is not silent: no idle timeout."""
    size = 2 * 1024 * 1024
    _, client = await serve(sends_big_bodies(size, b"z" * size))
    response = await client.send("GET", "/", {}, None, idle_timeout=0.2, deadline=None)
    try:
        await asyncio.sleep(0.7)  # reading paused for well past the idle timeout
        assert len(await response.read()) == size
    finally:
        client.release(response)


async def test_a_connection_whose_answer_was_left_unread_carries_the_next_one(serve):
    """An answer complete but unread may have paused the socket's reading; pooled, it must read again."""
    size = http1.READ_HIGH_WATER + 1  # the very last byte pauses the reading, and completes the answer

    async def handle(server, reader, writer, conn):
        await server.next_request(reader, conn)
        writer.write(answer(b"b" * size))
        await writer.drain()
        await OK(server, reader, writer, conn)

    _, client = await serve(handle)
    response = await client.send("GET", "/big", {}, None, idle_timeout=5, deadline=None)
    for _ in range(200):
        if response.complete:
            break
        await asyncio.sleep(0.01)
    assert response.complete and response._paused
    assert await response.read(10) == b"b" * 10
    client.release(response)
    _, body = await fetch(client, target="/next", idle_timeout=1.0)
    assert body == b"GET /next on 1"


async def test_a_diverted_body_goes_to_the_sink_whole_and_the_connection_is_reused(serve):
    """divert: what was buffered first, then every chunk as it arrives; until_end returns at the end."""
    pieces = [b"data: %d\n\n" % i for i in range(30)]

    async def handle(server, reader, writer, conn):
        while await server.next_request(reader, conn) is not None:
            writer.write(answer(b"", "Transfer-Encoding: chunked", length=False))
            for piece in pieces:
                writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0.001)
            writer.write(b"0\r\n\r\n")

    server, client = await serve(handle)
    response = await client.send("GET", "/events", {}, None, idle_timeout=5, deadline=None)
    await asyncio.sleep(0.01)  # some chunks buffered before the divert
    got: list[bytes] = []
    response.divert(got.append)
    await asyncio.wait_for(response.until_end(), 5)
    client.release(response)
    assert b"".join(got) == b"".join(pieces)
    await fetch(client)
    assert server.accepted == 1


async def test_a_diverted_stream_paused_by_its_sink_past_the_idle_timeout_is_not_timed_out(serve):
    """A slow client pauses the upstream through pause(); that silence is ours, not the upstream's."""
    size = 2 * 1024 * 1024
    _, client = await serve(sends_big_bodies(size, b"e" * size))
    response = await client.send("GET", "/", {}, None, idle_timeout=0.2, deadline=None)
    got: list[bytes] = []
    response.divert(got.append)
    response.pause()
    await asyncio.sleep(0.7)
    assert response.error is None
    response.resume()
    await asyncio.wait_for(response.until_end(), 5)
    client.release(response)
    assert sum(map(len, got)) == size


# The request body's task ------------------------------------------------------------------------------------


class BodyTooLarge(Exception):
    pass


async def test_a_failing_request_body_is_what_send_raises_and_the_connection_closes(serve):
    sent = []

    async def handle(server, reader, writer, conn):
        await reader.readuntil(b"\r\n\r\n")
        sent.append(await server.until_eof(reader, conn))

    async def too_large():
        yield b"abc"
        await asyncio.sleep(0.05)
        raise BodyTooLarge()

    server, client = await serve(handle)
    with pytest.raises(BodyTooLarge):
        await client.send("POST", "/", {}, too_large(), idle_timeout=5, deadline=None)
    assert await server.closed_by_client(1)
    assert sent == [b"3\r\nabc\r\n"]  # no last chunk: the upstream cannot take it for a whole body
    assert client._open == 0


async def test_an_answer_before_the_request_body_ends_is_given_and_the_upload_stopped(serve):
    """The upstream refuses early (413); the caller gets the answer; the connection, mid-upload, is not reused."""
    more = asyncio.Event()

    async def handle(server, reader, writer, conn):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"too big", "Connection: keep-alive", status="413 Payload Too Large"))
        await server.until_eof(reader, conn)

    async def endless():
        yield b"first"
        await more.wait()  # never set
        yield b"never"

    server, client = await serve(handle)
    response, body = await fetch(client, "POST", body=endless())
    assert (response.status, body) == (413, b"too big")
    assert response.sender is not None
    await asyncio.wait([response.sender], timeout=2)
    assert response.sender.cancelled()
    assert await server.closed_by_client(1)
    assert client._open == 0


# The pool ------------------------------------------------------------------------------------------------


async def test_max_connections_1_makes_the_second_request_wait_for_the_first(serve):
    async def handle(server, reader, writer, conn):
        while (request := await server.next_request(reader, conn)) is not None:
            await asyncio.sleep(0.1)
            writer.write(answer(request.target.encode()))
            await writer.drain()

    server, client = await serve(handle, max_connections=1)
    results = await asyncio.gather(fetch(client, target="/1"), fetch(client, target="/2"))
    assert sorted(body for _, body in results) == [b"/1", b"/2"]
    assert server.accepted == 1 and server.max_open == 1


async def test_a_waiter_cancelled_just_as_its_turn_came_passes_the_turn_on(serve):
    """max_connections=1: the released connection goes to the next waiter even if the woken one left."""
    _, client = await serve(OK, max_connections=1)
    held = await client.send("GET", "/held", {}, None, idle_timeout=5, deadline=None)
    assert await held.read() == b"GET /held on 1"
    first = asyncio.create_task(fetch(client, target="/first"))
    second = asyncio.create_task(fetch(client, target="/second"))
    await asyncio.sleep(0.05)
    assert len(client._slot_waiters) == 2
    client.release(held)  # wakes `first`…
    first.cancel()  # …which leaves before it runs
    _, body = await asyncio.wait_for(second, 2)
    assert body == b"GET /second on 1"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_an_idle_connection_past_keepalive_seconds_is_closed_not_reused(serve):
    server, client = await serve(OK, keepalive_seconds=0.2)
    await fetch(client)
    assert await server.closed_by_client(1, timeout=1.0)  # swept by the client
    _, body = await fetch(client)
    assert body == b"GET / on 2"
    assert client._open == 1


async def test_an_idle_connection_found_too_old_when_needed_is_closed_not_reused(serve):
    """The same rule at the moment of reuse, before any sweep came round (here the sweep is 30 s away)."""
    server, client = await serve(OK)
    await fetch(client)
    client._idle[0].idle_since -= client.keepalive_seconds  # as old as can be kept
    _, body = await fetch(client)
    assert body == b"GET / on 2"
    assert await server.closed_by_client(1)
    assert client._open == 1


async def test_an_answer_abandoned_mid_body_closes_its_connection(serve):
    async def handle(server, reader, writer, conn):
        while await server.next_request(reader, conn) is not None:
            writer.write(answer(b"x" * 100_000)[:-50_000])
            await writer.drain()

    server, client = await serve(handle)
    response = await client.send("GET", "/", {}, None, idle_timeout=5, deadline=None)
    assert await response.readany()
    client.release(response)
    with pytest.raises(http1.Disconnected, match="abandoned"):
        await response.readany()  # a late reader is told, not left waiting
    assert await server.closed_by_client(1)
    response = await client.send("GET", "/", {}, None, idle_timeout=5, deadline=None)
    client.release(response)
    assert server.accepted == 2
    assert client._open == 0


async def test_releasing_an_answer_twice_frees_its_slot_once(serve):
    """max_connections=1: a second release of a closed connection's answer must not open a second slot."""
    async def handle(server, reader, writer, conn):
        await server.next_request(reader, conn)
        writer.write(answer(b"bye", "Connection: close"))
        await writer.drain()
        await asyncio.sleep(0.2)

    server, client = await serve(handle, max_connections=1)
    response = await client.send("GET", "/", {}, None, idle_timeout=5, deadline=None)
    client.release(response)
    client.release(response)
    assert client._open == 0


async def test_a_shorter_timeout_joining_is_checked_at_its_own_pace(serve):
    """A long idle timeout in flight first; a 0.3 s one joining later still fires within about its time."""
    server, client = await serve(silent_after(b""))
    long_wait = asyncio.create_task(client.send("GET", "/", {}, None, idle_timeout=60, deadline=None))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(http1.Timeout):
        await client.send("GET", "/", {}, None, idle_timeout=0.3, deadline=None)
    assert time.monotonic() - started < 0.3 * 3
    long_wait.cancel()
    with suppress(asyncio.CancelledError):
        await long_wait


async def test_a_slow_upload_is_not_a_silent_upstream(serve):
    """The upstream answers after the body; an upload lasting longer than the idle timeout is activity."""
    server, client = await serve(OK)
    response = await client.send("POST", "/up", {}, chunks(*[b"x" * 10] * 8, pause=0.1), idle_timeout=0.4,
                                 deadline=None)
    try:
        assert await asyncio.wait_for(response.read(), 5) == b"POST /up on 1"
    finally:
        client.release(response)
    assert server.requests[0][1].body == b"x" * 80
