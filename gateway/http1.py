"""A lean HTTP/1.1 client for the upstream hop: keep-alive connections to one origin, on asyncio protocols.

The relay needs little of a general client: one origin per upstream, keep-alive, bodies as bytes or
as a stream, a forward proxy (plain HTTP, or CONNECT for HTTPS), TLS. aiohttp's ClientSession spent
~100 µs of CPU per relayed request on the rest (BENCHMARKS.md); here a request is a formatted head, a
write, and llhttp (httptools) calling back as the answer arrives. Failures are the exceptions below;
`gateway.upstream` turns them into the gateway's errors.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

log = logging.getLogger("chatkit_gateway.upstream")

READ_HIGH_WATER = 256 * 1024  # buffered answer bytes at which the upstream socket stops being read
READ_LOW_WATER = 64 * 1024
WITH_EMPTY_BODY = frozenset({"POST", "PUT", "PATCH"})  # methods that say "Content-Length: 0" when bodiless
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PUT", "TRACE"})


class TransportError(Exception):
    """A failure below HTTP: the request may or may not have reached the upstream."""


class ConnectFailed(TransportError):
    def __init__(self, host: str, port: int, error: OSError, *, to_proxy: bool) -> None:
        super().__init__(f"cannot connect to {host}:{port} ({error.strerror or error})")
        self.host, self.port, self.error, self.to_proxy = host, port, error, to_proxy


class CertificateFailed(TransportError):
    def __init__(self, host: str, error: ssl.SSLCertVerificationError) -> None:
        super().__init__(f"TLS verification of {host} failed: {error.verify_message or error}")


class ProxyRefused(TransportError):
    """The forward proxy answered a CONNECT with something other than 200."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the proxy answered {status}")
        self.status = status


class Timeout(TransportError):
    pass


class Disconnected(TransportError):
    """The upstream closed the connection, or spoke something that is not HTTP/1.1."""


@dataclass(frozen=True)
class Origin:
    """Where requests go: the upstream's scheme, host and port, and the forward proxy on the way."""

    scheme: str
    host: str
    port: int
    proxy_scheme: str | None = None
    proxy_host: str | None = None
    proxy_port: int | None = None
    proxy_headers: tuple[tuple[str, str], ...] = ()  # Proxy-Authorization, for the proxy only

    @property
    def authority(self) -> str:
        """host:port, as a CONNECT names it (an IPv6 literal in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.authority if self.port != default else self.authority.rsplit(":", 1)[0]

    @property
    def absolute_form(self) -> bool:
        """Plain HTTP through a proxy names the whole URL in the request line and has no tunnel."""
        return self.proxy_host is not None and self.scheme == "http"


class Response:
    """An answer being received: status and headers first, then the body as it arrives."""

    status: int
    reason: str
    headers: CIMultiDictProxy[str]

    def __init__(self, connection: Connection, method: str) -> None:
        self.connection = connection
        self.method = method
        self.raw_headers: list[tuple[str, str]] = []
        self.reason = ""
        self.keep_alive = False
        self.until_close = False  # a body framed by the connection's end
        self.head: asyncio.Future[None] = connection.loop.create_future()
        self.complete = False
        self.error: BaseException | None = None
        self.received = False  # any byte of the answer
        self.sender: asyncio.Task[None] | None = None  # the task streaming the request body
        self.released = False
        self._chunks: deque[bytes] | None = None  # made when first needed: a diverted stream never buffers
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self.last_data = connection.loop.time()
        self.idle: float | None = None  # the read timeout: seconds without a byte
        self.deadline: float | None = None  # the total timeout, in loop time
        self.watchdog: Watchdog | None = None
        self._sink: Callable[[bytes], None] | None = None

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "application/octet-stream").split(";", 1)[0].strip().lower()

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None and value.isdigit() else None

    # Fed by the connection ------------------------------------------------------------------

    def headers_done(self, status: int, keep_alive: bool) -> None:
        self.status = status
        self.keep_alive = keep_alive
        self.headers = CIMultiDictProxy(CIMultiDict(self.raw_headers))
        self.raw_headers = []
        no_body = self.method == "HEAD" or status in (204, 304)
        self.until_close = (not no_body and "Content-Length" not in self.headers
                            and "Transfer-Encoding" not in self.headers)
        if not self.head.done():
            self.head.set_result(None)
        if self.method == "HEAD":
            self.keep_alive = False  # llhttp would wait for the body a HEAD answer announces
            self.finish()

    def feed(self, chunk: bytes) -> None:
        if self._sink is not None:
            self._sink(chunk)
            return
        if self._chunks is None:
            self._chunks = deque()
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > READ_HIGH_WATER:
            self.pause()
        self._wake()

    def finish(self) -> None:
        if not self.complete and self.error is None:
            self.complete = True
            self.stop_watch()
            self._wake()

    def fail(self, error: BaseException) -> None:
        if self.complete or self.error is not None:
            return
        self.error = error
        self.stop_watch()
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved here: whoever awaits it sees it; nobody may not
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def overdue(self, now: float) -> bool:
        return bool((self.idle and not self._paused and now - self.last_data >= self.idle)  # paused: we are slow
                    or (self.deadline is not None and now >= self.deadline))

    def stop_watch(self) -> None:
        if self.watchdog is not None:
            self.watchdog.watched.discard(self)
            self.watchdog = None

    # Read by the caller -----------------------------------------------------------------------

    async def readany(self) -> bytes:
        """The next bytes of the body as they came, or b"" at its end."""
        while not self._chunks:
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            await self._news()
        assert self._chunks is not None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered < READ_LOW_WATER:
            self.resume()
        return chunk

    def divert(self, sink: Callable[[bytes], None]) -> None:
        """From now on hand each body chunk to `sink` as it arrives: no buffer, no task switch per chunk.
        The sink must not raise; to stop, it calls `fail`. Wait for the end with `until_end`."""
        while self._chunks:
            chunk = self._chunks.popleft()
            self._buffered -= len(chunk)
            sink(chunk)
        self._sink = sink
        self.resume()

    async def until_end(self) -> None:
        """Wait until a diverted body has all arrived; raises what ended it early."""
        try:
            while True:
                if self.error is not None:
                    raise self.error
                if self.complete:
                    return
                await self._news()
        finally:
            self._sink = None  # sinks hold their answer: let go, so neither waits for the cyclic collector

    async def _news(self) -> None:
        """Wait for the next chunk, the end, or a failure."""
        self._waiter = self.connection.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def pause(self) -> None:
        """Stop reading the upstream (its own flow control then slows it down) until `resume`."""
        if not self._paused:
            self._paused = True
            self.connection.pause_reading()

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self.last_data = self.connection.loop.time()  # the silence while paused was ours, not the upstream's
            self.connection.resume_reading()

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, or its first `limit` bytes."""
        parts = []
        size = 0
        while limit is None or size < limit:
            chunk = await self.readany()
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
        body = b"".join(parts)
        return body if limit is None else body[:limit]


class Watchdog:
    """The timeouts of every answer in flight, checked by one timer rather than a timer per answer
    (arming and cancelling one per request was ~2% of a relayed request's CPU). An answer times out
    within a quarter of its timeout after it is due."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.watched: set[Response] = set()
        self.tick = 1.0
        self._handle: asyncio.TimerHandle | None = None

    def watch(self, response: Response, idle: float | None, deadline: float | None) -> None:
        if not idle and deadline is None:
            return
        response.idle, response.deadline, response.watchdog = idle, deadline, self
        span = idle if idle else deadline - self.loop.time()  # type: ignore[operator]
        tick = min(self.tick, max(span / 4, 0.005))
        self.watched.add(response)
        if self._handle is not None and tick < self.tick:
            self._handle.cancel()  # a shorter timeout joined: check at its pace from now on
            self._handle = None
        self.tick = tick
        if self._handle is None:
            self._handle = self.loop.call_later(self.tick, self._check)

    def _check(self) -> None:
        now = self.loop.time()
        for response in [response for response in self.watched if response.overdue(now)]:
            response.fail(Timeout("the upstream went silent past the read timeout"
                                  if response.deadline is None or now < response.deadline
                                  else "the upstream did not answer within the total timeout"))
            response.connection.close()
        self._handle = self.loop.call_later(self.tick, self._check) if self.watched else None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Connection(asyncio.Protocol):
    """One keep-alive connection to the origin (or the proxy), carrying one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._drained: asyncio.Future[None] | None = None
        self._tunnel_answer: asyncio.Future[bytes] | None = None
        self._tunnel_buffer = b""

    # asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._tunnel_answer is not None:
            self._tunnel_received(data)
            return
        response = self.response
        if response is None or response.complete or response.error is not None:
            self.close()  # bytes nobody asked for: this connection cannot be trusted again
            return
        response.last_data = self.loop.time()
        response.received = True
        assert self.parser is not None  # made None only by connection_lost, the last callback
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response.fail(Disconnected(f"the upstream's answer is not valid HTTP/1.1 ({exc})"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close; HTTP/1.1 has no half-closed use here

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is not None and not response.complete:
            if response.until_close and response.head.done() and response.error is None:
                response.finish()
            else:
                response.fail(Disconnected("the upstream closed the connection"
                                           + ("" if response.head.done() else " before answering")))
        if self._tunnel_answer is not None and not self._tunnel_answer.done():
            self._tunnel_answer.set_exception(Disconnected("the proxy closed the connection"))
        self._wake_writer(Disconnected("the upstream closed the connection"))
        self.parser = None  # it holds this protocol's callbacks: let go, so that neither waits for the collector

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = self.loop.create_future()

    def resume_writing(self) -> None:
        self._wake_writer(None)

    def _wake_writer(self, error: Exception | None) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            if error is None:
                drained.set_result(None)
            else:
                drained.set_exception(error)
                drained.exception()

    async def drain(self) -> None:
        if self.closed:
            raise Disconnected("the upstream closed the connection")
        if self._drained is not None:
            await asyncio.shield(self._drained)

    # httptools callbacks --------------------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        assert self.response is not None
        self.response.reason += reason.decode("latin-1")  # llhttp hands the reason over in pieces as it arrives

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.raw_headers.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        response = self.response
        parser = self.parser
        assert response is not None and parser is not None
        status = parser.get_status_code()
        if 100 <= status < 200:
            response.raw_headers.clear()  # an interim answer (100 Continue): the real one follows
            response.reason = ""
            return
        response.headers_done(status, parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response.feed(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response is not None and response.head.done():  # not the end of an interim answer
            response.finish()

    # For the client ---------------------------------------------------------------------------------

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.closed = True

    def reusable(self) -> bool:
        response = self.response
        return (not self.closed and response is not None and response.complete and response.keep_alive
                and not response.until_close and (response.sender is None or response.sender.done()))

    async def open_tunnel(self, target: str, headers: Iterable[tuple[str, str]]) -> None:
        """Ask the proxy for a tunnel to `target` (host:port) and wait for its 200."""
        assert self.transport is not None
        self._tunnel_answer = self.loop.create_future()
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}", *(f"{n}: {v}" for n, v in headers)]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        try:
            head = await self._tunnel_answer
        finally:
            self._tunnel_answer = None
        status_line = head.split(b"\r\n", 1)[0].split()
        status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
        if status != 200:
            raise ProxyRefused(status)

    def _tunnel_received(self, data: bytes) -> None:
        self._tunnel_buffer += data
        if b"\r\n\r\n" in self._tunnel_buffer:
            assert self._tunnel_answer is not None
            head, _, _ = self._tunnel_buffer.partition(b"\r\n\r\n")
            self._tunnel_buffer = b""
            if not self._tunnel_answer.done():
                self._tunnel_answer.set_result(head)
        elif len(self._tunnel_buffer) > 65536:
            self._tunnel_answer.set_exception(Disconnected("the proxy's answer to CONNECT is not HTTP"))


def request_head(method: str, target: str, host: str, headers: Any, framing: Iterable[tuple[str, str]],
                 body: bytes | AsyncIterator[bytes] | None) -> tuple[bytes, bool]:
    """The request line and headers, and whether the body goes chunked.

    The body's framing is the caller's Content-Length if it gave one, else chunked for a stream, else
    the length of the bytes. A value that would split the head (a line break) is refused.
    """
    lines = [f"{method} {target} HTTP/1.1", "Host: " + host]
    has_length = False
    for name, value in headers.items() if isinstance(headers, Mapping) else headers:
        lower = name.lower()
        if lower == "host":
            continue
        has_length = has_length or lower == "content-length"
        lines.append(f"{name}: {value}")
    lines += [f"{name}: {value}" for name, value in framing]
    chunked = False
    if not has_length:
        if body is not None and not isinstance(body, bytes):
            chunked = True
            lines.append("Transfer-Encoding: chunked")
        elif body or method in WITH_EMPTY_BODY:
            lines.append(f"Content-Length: {len(body) if body else 0}")
    text = "\r\n".join(lines)
    if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1:
        raise ValueError("a header name or value contains a line break")
    return (text + "\r\n\r\n").encode("utf-8", "surrogateescape"), chunked


def chunk_frame(chunk: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(chunk), chunk)


class Client:
    """Keep-alive connections to one origin. Open in cleanup_ctx (nothing to open), close there."""

    def __init__(self, origin: Origin, *, ssl_context: ssl.SSLContext | None, connect_timeout: float | None,
                 keepalive_seconds: float = 30.0, max_connections: int = 0, proxy_label: str = "direct") -> None:
        self.origin = origin
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.keepalive_seconds = keepalive_seconds
        self.max_connections = max_connections
        self.proxy_label = proxy_label
        self.loop = asyncio.get_running_loop()
        self._idle: list[Connection] = []
        self._open = 0
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self.watchdog = Watchdog(self.loop)

    async def close(self) -> None:
        self.watchdog.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        while self._idle:
            self._idle.pop().close()

    # Connections --------------------------------------------------------------------------------------

    async def _acquire(self) -> Connection:
        now = self.loop.time()
        while self._idle:
            connection = self._idle.pop()  # the most recently used first: the likeliest to be alive
            if not connection.closed and now - connection.idle_since < self.keepalive_seconds:
                connection.reused = True
                return connection
            self._drop(connection)
        while self.max_connections and self._open >= self.max_connections:
            waiter = self.loop.create_future()
            self._slot_waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._next_waiter()  # woken, then cancelled before it ran: the turn goes on
                raise
            if self._idle:
                return await self._acquire()
        self._open += 1
        try:
            if self.connect_timeout:
                async with asyncio.timeout(self.connect_timeout):
                    return await self._connect()
            return await self._connect()
        except BaseException:
            self._open -= 1
            self._next_waiter()
            raise

    async def _connect(self) -> Connection:
        origin = self.origin
        if log.isEnabledFor(logging.DEBUG):
            log.debug("connect_tcp.started host=%r proxy=%r", origin.host, self.proxy_label,
                      extra={"host": origin.host, "proxy": self.proxy_label})
        via_proxy = origin.proxy_host is not None
        host = origin.proxy_host if via_proxy else origin.host
        port = origin.proxy_port if via_proxy else origin.port
        first_tls = (origin.proxy_scheme if via_proxy else origin.scheme) == "https"
        try:
            _, connection = await self.loop.create_connection(
                lambda: Connection(self.loop), host, port,
                ssl=self.ssl_context if first_tls else None, server_hostname=host if first_tls else None)
        except ssl.SSLCertVerificationError as exc:
            raise CertificateFailed(host or "", exc) from None
        except OSError as exc:
            raise ConnectFailed(host or "", port or 0, exc, to_proxy=via_proxy) from None
        if via_proxy and origin.scheme == "https":
            try:
                await connection.open_tunnel(origin.authority, origin.proxy_headers)
                assert connection.transport is not None
                connection.transport = await self.loop.start_tls(  # type: ignore[assignment]
                    connection.transport, connection, self.ssl_context, server_hostname=origin.host)
            except ssl.SSLCertVerificationError as exc:
                connection.close()
                raise CertificateFailed(origin.host, exc) from None
            except BaseException:
                connection.close()
                raise
        return connection

    def _release(self, connection: Connection) -> None:
        if connection.reusable():
            if connection.response is not None and connection.response._paused:
                connection.resume_reading()  # an answer left unread had stopped the reading
            connection.response = None
            connection.idle_since = self.loop.time()
            self._idle.append(connection)
            if self._sweeper is None:
                self._sweeper = self.loop.call_later(self.keepalive_seconds, self._sweep)
            self._next_waiter()
        else:
            connection.response = None  # the connection and its answer hold each other
            self._drop(connection)

    def _drop(self, connection: Connection) -> None:
        connection.close()
        self._open -= 1
        self._next_waiter()

    def _next_waiter(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep(self) -> None:
        """Close the connections idle past keepalive_seconds (the upstream may have closed them already)."""
        self._sweeper = None
        now = self.loop.time()
        keep = []
        for connection in self._idle:
            if connection.closed or now - connection.idle_since >= self.keepalive_seconds:
                self._drop(connection)
            else:
                keep.append(connection)
        self._idle = keep
        if keep:
            self._sweeper = self.loop.call_later(self.keepalive_seconds, self._sweep)

    # Requests -------------------------------------------------------------------------------------------

    async def send(self, method: str, target: str, headers: Any, body: bytes | AsyncIterator[bytes] | None,
                   *, idle_timeout: float | None, deadline: float | None) -> Response:
        """Send a request (`headers`: a mapping, or (name, value) pairs) and wait for the answer's head.
        Call `release(response)` when done with it.

        A kept-alive connection the upstream closed as it was being reused fails before any byte of
        an answer; an idempotent request is then sent once more on a new connection, as browsers do.
        """
        connection = await self._acquire()
        response = Response(connection, method)
        try:
            return await self._exchange(response, target, headers, body, idle_timeout, deadline)
        except Disconnected:
            if not (connection.reused and method in IDEMPOTENT and not response.received
                    and not isinstance(body, AsyncIterator)):
                raise
        for stale in self._idle:
            self._drop(stale)  # the upstream probably closed these as well
        self._idle.clear()
        connection = await self._acquire()
        return await self._exchange(Response(connection, method), target, headers, body, idle_timeout, deadline)

    async def _exchange(self, response: Response, target: str, headers: Any,
                        body: bytes | AsyncIterator[bytes] | None, idle_timeout: float | None,
                        deadline: float | None) -> Response:
        origin = self.origin
        if origin.absolute_form:
            target = f"http://{origin.host_header}{target}"
        connection = response.connection
        method = response.method
        connection.response = response
        try:
            head, chunked = request_head(method, target, origin.host_header, headers,
                                         origin.proxy_headers if origin.absolute_form else (), body)
            assert connection.transport is not None
            if isinstance(body, bytes) and body:
                connection.transport.writelines((head, body))
            else:
                connection.transport.write(head)
            self.watchdog.watch(response, idle_timeout, deadline)
            if body is not None and not isinstance(body, bytes):
                response.sender = asyncio.create_task(self._send_body(connection, response, body, chunked=chunked))
            await response.head
        except BaseException:
            self._release_failed(response)
            raise
        return response

    async def _send_body(self, connection: Connection, response: Response, body: AsyncIterator[bytes],
                         *, chunked: bool) -> None:
        """Stream a request body, waiting for the socket to drain; a failure of the body ends the exchange."""
        try:
            async for chunk in body:
                if connection.closed:
                    return
                if chunk:
                    assert connection.transport is not None
                    connection.transport.write(chunk_frame(chunk) if chunked else chunk)
                    response.last_data = self.loop.time()  # an upload in progress is not a silent upstream
                    await connection.drain()
            if chunked and not connection.closed:
                assert connection.transport is not None
                connection.transport.write(b"0\r\n\r\n")
        except TransportError:
            return  # the exchange itself reports the upstream's failure
        except Exception as exc:  # noqa: BLE001 - e.g. the body grew past its limit: that is the answer
            response.fail(exc)
            connection.close()

    def release(self, response: Response) -> None:
        """Done with this answer: its connection goes back to the pool if it can carry another."""
        connection = response.connection
        if connection.response is not response or response.released:
            return
        response.released = True
        if response.error is not None:
            response.error.__traceback__ = None  # its frames hold this answer: no cycle left behind
        elif not response.complete:
            response.fail(Disconnected("the answer was abandoned"))
        response.stop_watch()
        if response.sender is not None and not response.sender.done():
            response.sender.cancel()
            connection.close()
        self._release(connection)

    def _release_failed(self, response: Response) -> None:
        response.connection.close()
        self.release(response)
