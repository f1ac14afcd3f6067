"""The relay: /api/chatkit/{tail} → {base}/v1/chatkit/{tail}, streaming both ways.

The tail is checked on the raw path, so nothing the client encodes can leave /v1/chatkit/.
The server key is injected for every caller except one that carries a ChatKit client secret
(``Bearer ek_…``), whose request goes upstream as it is, provided this gateway issued that secret
and it has neither expired nor been cancelled. Sessions minted through the relay are recorded too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping

from aiohttp import HttpVersion11, web

from . import errors, http1, keys, scoping, sessions
from .exchange import Exchange
from .heartbeats import Beat
from .upstream import CHATKIT_BETA, Call, Upstream, error_message

log = logging.getLogger("chatkit_gateway.relay")

PREFIX = "/api/chatkit/"
SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9_.~-]*")  # no leading dot: no "." or ".."

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
# Never sent upstream: the client's own identity, cookies and routing facts, which we set ourselves.
REQUEST_DROP = HOP_BY_HOP | frozenset({
    "host", "cookie", "authorization", "x-api-key", "openai-beta", "x-request-id",
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip",
    "x-forwarded-user", "x-forwarded-email", "x-forwarded-groups", "forwarded",
    "x-chatkit-workflow",
})
# A session minted through the relay is read whole to record its secret: asked for uncompressed.
MINTING_DROP = REQUEST_DROP | {"accept-encoding"}
# On every event stream the gateway sends: no proxy may buffer it, no cache may keep it.
STREAM_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}
# Bytes queued for a slow client at which an event stream's upstream stops being read, and resumes.
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024
DRAIN_CHECK_SECONDS = 0.01
# Never sent back: the upstream's cookies and framing; aiohttp writes its own Server and Date.
RESPONSE_DROP = HOP_BY_HOP | frozenset({"set-cookie", "server", "date", "x-request-id", "content-length"})


def safe_tail(request: web.Request) -> str:
    """The part after /api/chatkit/, from the raw path; anything escaping or encoded is refused."""
    tail = checked_tail(request.raw_path.split("?", 1)[0])
    if tail is None:
        raise errors.InvalidPath()
    return tail


@functools.lru_cache(maxsize=4096)  # most requests go to a few paths: check each once
def checked_tail(raw: str) -> str | None:
    if not raw.startswith(PREFIX):
        return None
    tail = raw[len(PREFIX):]
    if not tail or not all(SAFE_SEGMENT.fullmatch(segment) for segment in tail.split("/")):
        return None
    return tail


STATIC_SEGMENTS = frozenset({"sessions", "cancel", "threads", "items", "conversation", "files", "domain_keys",
                             "verify", "verify_hosted"})
# The ChatKit API's paths: the only route labels a relayed request can get, besides "other".
KNOWN_ROUTES = frozenset("/api/chatkit/" + path for path in (
    "sessions", "sessions/{id}/cancel", "threads", "threads/{id}", "threads/{id}/items", "conversation",
    "files", "domain_keys/verify", "domain_keys/verify_hosted"))


@functools.lru_cache(maxsize=4096)
def route_template(tail: str) -> str:
    """A bounded label for a relayed path: ids become {id}; anything unfamiliar is "other"."""
    parts = []
    for i, segment in enumerate(tail.split("/")):
        if segment in STATIC_SEGMENTS:
            parts.append(segment)
        elif i > 0 and "_" in segment and segment.split("_", 1)[0].isalpha():
            parts.append("{id}")
        else:
            return "other"
    template = "/api/chatkit/" + "/".join(parts)
    return template if template in KNOWN_ROUTES else "other"


def upstream_query(raw: str) -> str:
    """The query string as sent, less the `workflow` parameter the gateway itself consumes."""
    if "workflow=" not in raw:
        return raw
    return "&".join(part for part in raw.split("&") if not part.startswith("workflow="))


def client_secret_of(request: web.Request) -> str | None:
    """The ChatKit client secret the caller presents, if any."""
    value = request.headers.get("Authorization", "")
    if value[:10].lower() == "bearer ek_":
        return value[7:].strip()
    return None


NO_TOKENS: frozenset[str] = frozenset()


def connection_tokens(headers: Mapping[str, str] | web.BaseRequest) -> frozenset[str]:
    """The header names a Connection header lists, lower-cased: hop-by-hop for this hop only."""
    value = headers.headers.get("Connection") if isinstance(headers, web.BaseRequest) else headers.get("Connection")
    if not value:
        return NO_TOKENS
    return frozenset(token.strip().lower() for token in value.split(","))


Headers = list[tuple[str, str]]


def passed_headers(request: web.Request, drop_prefix: str | None = None,
                   dropped: frozenset[str] = REQUEST_DROP) -> Headers:
    """The client's headers any upstream may see (plus `X-Forwarded-*` and `X-Request-ID`), without credentials,
    as (name, value) pairs. The names the gateway sets itself are all in REQUEST_DROP, so a caller appends
    them without duplicating a client's header (plain pairs: no CIMultiDict built, no scan by name)."""
    named = connection_tokens(request)
    kept = [(name, value) for name, value in request.headers.items()
            if (lower := name.lower()) not in dropped and lower not in named
            and not (drop_prefix and lower.startswith(drop_prefix))]
    forwarded_proto = request.headers.get("X-Forwarded-Proto") if request[keys.peer_trusted] else None
    kept += (("X-Forwarded-For", request[keys.client_ip]), ("X-Forwarded-Proto", forwarded_proto or request.scheme),
             ("X-Request-ID", request[keys.request_id]))
    return kept


def upstream_headers(request: web.Request, upstream: Upstream, client_secret: str | None, minting: bool) -> Headers:
    """The request's headers as the model API should see them."""
    headers = passed_headers(request, dropped=MINTING_DROP if minting else REQUEST_DROP)
    if client_secret is not None:
        headers.append(("Authorization", "Bearer " + client_secret))
        beta = request.headers.get("OpenAI-Beta")
        if beta is not None:
            headers.append(("OpenAI-Beta", beta))
    else:
        assert upstream.api_key is not None
        headers += (("Authorization", "Bearer " + upstream.api_key.reveal()), ("OpenAI-Beta", CHATKIT_BETA))
    if minting:
        headers.append(("Accept-Encoding", "identity"))
    return headers


def replaced(headers: Headers, name: str, value: str) -> Headers:
    """`headers` with `name` (any case) set to `value` alone."""
    lower = name.lower()
    return [(n, v) for n, v in headers if n.lower() != lower] + [(name, value)]


def response_headers(upstream_response: http1.Response) -> Headers:
    """The upstream answer's headers the client may see, as pairs for the aiohttp response to take."""
    received = upstream_response.headers
    named = connection_tokens(received)
    kept = [(name, value) for name, value in received.items()
            if (lower := name.lower()) not in RESPONSE_DROP and lower not in named]
    upstream_id = received.get("X-Request-ID")
    if upstream_id is not None:
        kept.append(("X-Upstream-Request-ID", upstream_id))
    return kept


def is_event_stream(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


async def limited_body(request: web.Request, limit: int, exchange: Exchange) -> AsyncIterator[bytes]:
    """The request body as it arrives, refusing to go past `limit` bytes."""
    async for chunk in request.content.iter_any():
        exchange.bytes_in += len(chunk)
        if exchange.bytes_in > limit:
            raise errors.BodyTooLarge(limit_bytes=limit)
        yield chunk


def request_body(request: web.Request, limit: int, exchange: Exchange) -> AsyncIterator[bytes] | None:
    if not request.body_exists:
        return None
    if request.content_length is not None and request.content_length > limit:
        raise errors.BodyTooLarge(limit_bytes=limit)
    return limited_body(request, limit, exchange)


def relayed_body(request: web.Request, limit: int, exchange: Exchange) -> bytes | AsyncIterator[bytes] | None:
    """request_body, but as bytes when the whole body has arrived already (most relayed requests):
    no async generator, streaming payload and per-chunk awaits (a few % of a relayed request's CPU)."""
    length = request.content_length
    if length is not None and 0 < length <= limit:
        content = request.content
        if content.is_eof() and content.exception() is None and content.total_bytes == length:
            body = content.read_nowait()
            exchange.bytes_in += len(body)
            return body
    return request_body(request, limit, exchange)


async def upstream_error_message(response: http1.Response, limit: int = 8192) -> str:
    """The upstream's error message (from an OpenAI error body, else the text), secrets masked."""
    return error_message(await response.read(limit))


async def pump(upstream_response: http1.Response, response: web.StreamResponse, exchange: Exchange,
               observers: Iterable[Callable[[bytes], None]], beat: Beat | None) -> None:
    """Copy the upstream body to the client chunk by chunk, as it arrives."""
    readany = upstream_response.readany
    write = response.write
    while True:
        waited = time.perf_counter()
        chunk = await readany()
        now = time.perf_counter()
        exchange.upstream_wait += now - waited
        if not chunk:
            return
        exchange.count_chunk(chunk)
        for observe in observers:
            observe(chunk)
        if beat is not None:
            beat.last_write = now
        await write(chunk)


async def forward(request: web.Request, upstream_response: http1.Response, exchange: Exchange,
                  observers: Iterable[Callable[[bytes], None]], beat: Beat | None) -> None:
    """Pass an event stream on through an EventForwarder, until it ends."""
    waited = time.perf_counter()
    forwarder = EventForwarder(request, upstream_response, exchange, observers, beat)
    try:
        upstream_response.divert(forwarder)
        await upstream_response.until_end()
    finally:
        forwarder.ended = True
        exchange.upstream_wait += time.perf_counter() - waited


async def relay_minted_session(request: web.Request, upstream_response: http1.Response) -> web.Response:
    """A session minted through the relay: its small JSON answer is read whole, to record its secret."""
    try:
        raw = await upstream_response.read()
    except http1.Timeout:
        raise errors.UpstreamTimeout() from None
    except http1.TransportError:
        raise errors.UpstreamUnavailable("The upstream dropped its answer.") from None
    request[keys.exchange].count_chunk(raw)
    for observe in request.get(keys.chunk_observers, ()):
        observe(raw)
    sessions.remember_relayed(request, raw)
    return web.Response(body=raw, status=upstream_response.status, reason=upstream_response.reason,
                        headers=response_headers(upstream_response))


async def outgoing(request: web.Request, tail: str, upstream: Upstream, client_secret: str | None,
                   minting: bool) -> Call:
    """The request to send upstream. Its headers and body are built here, so that they are not held
    by the handler for as long as a stream lasts."""
    headers = upstream_headers(request, upstream, client_secret, minting)
    query = upstream_query(request.rel_url.raw_query_string)
    body: bytes | AsyncIterator[bytes] | None = None
    if client_secret is None and scoping.needs_scoping(request):
        body, query = await scoping.restrict(request, tail, query)
        if body is not None:
            headers = replaced(headers, "Content-Length", str(len(body)))
    if body is None:
        body = relayed_body(request, request.app[keys.settings].server.max_body_bytes, request[keys.exchange])
    return upstream.request(request.method, "/v1/chatkit/" + tail, query=query, headers=headers, data=body)


async def relay(request: web.Request) -> web.StreamResponse:
    tail = safe_tail(request)
    request[keys.route] = route_template(tail)
    app = request.app
    upstream = app[keys.upstream]
    exchange = request[keys.exchange]
    exchange.upstream = upstream.name
    client_secret = client_secret_of(request)
    if client_secret is not None:
        if await sessions.session_behind(request, client_secret) is None:
            raise errors.InvalidClientSecret()
    else:
        if app.get(keys.auth_required) and keys.principal not in request:
            raise errors.Unauthenticated()  # the server key is never used for an anonymous caller
        if not upstream.api_key:
            raise errors.UpstreamNotConfigured()
    route = request[keys.route]
    minting = client_secret is None and request.method == "POST" and route == scoping.SESSIONS
    cancelling = client_secret is None and request.method == "POST" and route == scoping.SESSION_CANCEL
    call = await outgoing(request, tail, upstream, client_secret, minting)
    waited = time.perf_counter()
    async with call as upstream_response:
        exchange.upstream_wait += time.perf_counter() - waited
        exchange.upstream_status = upstream_response.status
        if upstream_response.status in (401, 403) and client_secret is None:
            message = await upstream_error_message(upstream_response)
            log.error("upstream %s rejected the gateway's key (%s): %s", upstream.name,
                      upstream_response.status, message,
                      extra={"upstream_status": upstream_response.status, "upstream": upstream.name})
            raise errors.UpstreamAuthFailed(upstream_status=upstream_response.status, upstream_message=message)
        if upstream_response.status == 200 and minting:
            return await relay_minted_session(request, upstream_response)
        if upstream_response.status == 200 and cancelling:
            app[keys.sessions].cancel(tail.split("/")[1])
        return await stream_back(request, upstream_response, upstream.name)


async def stream_back(request: web.Request, upstream_response: http1.Response,
                      upstream_name: str) -> web.StreamResponse:
    """Send the upstream's answer to the client: its status and headers, then its body as it arrives."""
    exchange = request[keys.exchange]
    response = web.StreamResponse(status=upstream_response.status, reason=upstream_response.reason,
                                  headers=response_headers(upstream_response))
    forwarding = False
    if is_event_stream(upstream_response.content_type):
        exchange.event_stream = True
        response.headers.update(STREAM_HEADERS)
        forwarding = request.version >= HttpVersion11 and request.transport is not None
        if forwarding:
            response.enable_chunked_encoding()  # the forwarder frames each chunk itself
    elif upstream_response.content_length is not None and "Content-Encoding" not in response.headers:
        response.content_length = upstream_response.content_length
    if request.version < HttpVersion11 and response.content_length is None:
        # The body ends with the connection; aiohttp would keep an HTTP/1.0 keep-alive one open after it.
        response.force_close()
    await response.prepare(request)
    heartbeats = request.app[keys.heartbeats]
    beat = heartbeats.start(response, exchange) if exchange.event_stream else None
    observers = request.get(keys.chunk_observers, ())
    try:
        if forwarding:
            await forward(request, upstream_response, exchange, observers, beat)
        else:
            await pump(upstream_response, response, exchange, observers, beat)
    except ConnectionResetError:
        exchange.error = "client_disconnected"  # the caller's leaving its `async with` closes the upstream
        raise
    except http1.Timeout:
        return cut_short(request, response, upstream_name, "upstream_timeout", "went silent past the read timeout")
    except http1.TransportError:
        return cut_short(request, response, upstream_name, "upstream_disconnected", "dropped the response mid-body")
    finally:
        heartbeats.stop(beat)
    await response.write_eof()
    return response


class ClientGone(ConnectionResetError):
    """The client closed its connection while an event stream was being forwarded to it."""


class EventForwarder:
    """The sink of an event stream: each upstream chunk is counted, observed and written to the
    client's socket (framed as an HTTP chunk) from the upstream connection's callback, with no task
    switch and no await per event. A client that reads slowly pauses the upstream until it catches up."""

    __slots__ = ("beat", "ended", "exchange", "observers", "transport", "upstream", "waiting")

    def __init__(self, request: web.Request, upstream_response: http1.Response, exchange: Exchange,
                 observers: Iterable[Callable[[bytes], None]], beat: Beat | None) -> None:
        assert request.transport is not None
        self.transport = request.transport
        self.upstream = upstream_response
        self.exchange = exchange
        self.observers = observers
        self.beat = beat
        self.waiting = False
        self.ended = False  # the stream is over: its connection may be carrying another answer now

    def __call__(self, chunk: bytes) -> None:
        transport = self.transport
        if transport.is_closing():
            self.upstream.fail(ClientGone())
            return
        self.exchange.count_chunk(chunk)
        for observe in self.observers:
            observe(chunk)
        if self.beat is not None:
            self.beat.last_write = time.perf_counter()
        transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        if not self.waiting and transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            self.waiting = True
            self.upstream.pause()
            asyncio.get_running_loop().call_later(DRAIN_CHECK_SECONDS, self._check_drained)

    def _check_drained(self) -> None:
        if self.ended:
            return
        if self.transport.is_closing():
            self.upstream.fail(ClientGone())
        elif self.transport.get_write_buffer_size() <= WRITE_LOW_WATER:
            self.waiting = False
            self.upstream.resume()
        else:
            asyncio.get_running_loop().call_later(DRAIN_CHECK_SECONDS, self._check_drained)


def cut_short(request: web.Request, response: web.StreamResponse, upstream_name: str, error: str,
              what: str) -> web.StreamResponse:
    """End the client's connection without a clean end, so it sees an incomplete stream
    rather than a short but "complete" one."""
    request[keys.exchange].error = error
    log.warning("upstream %s %s", upstream_name, what, extra={"upstream": upstream_name, "error": error})
    if request.transport is not None:
        request.transport.close()
    return response
