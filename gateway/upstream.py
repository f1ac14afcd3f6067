"""Upstream: one pooled client session per upstream, its proxy, its trust store and its timeouts.

Failures below HTTP become GatewayErrors here, once, so every caller maps them the same way:
a forward proxy that refuses is `upstream_proxy_error` (naming the proxy host, never its
credentials), an unreachable host `upstream_unavailable`, a slow one `upstream_timeout`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit
from urllib.request import proxy_bypass_environment

import aiohttp
import certifi
from multidict import CIMultiDictProxy
from multidict import CIMultiDict
from yarl import URL

from . import errors
from .logs import redact
from .schema import Secret
from .settings import ProxyEnvironment, ProxySettings, Timeouts

log = logging.getLogger("chatkit_gateway.upstream")

CHATKIT_BETA = "chatkit_beta=v1"  # the OpenAI-Beta value every ChatKit REST call carries


def error_message(raw: bytes) -> str:
    """The message of an upstream error body (OpenAI's shape, else the text), secrets masked."""
    try:
        body = json.loads(raw)
        message = body["error"]["message"] if isinstance(body.get("error"), dict) else str(body)
    except (ValueError, KeyError, TypeError, AttributeError):
        message = raw.decode("utf-8", "replace")
    return redact(message)[:1000]


@dataclass(frozen=True)
class Route:
    """How requests to one upstream travel: through which proxy, with which credentials."""

    proxy: URL | None
    proxy_headers: dict[str, str] | None  # Proxy-Authorization, sent to the proxy only
    proxy_label: str  # host:port of the proxy, or "direct"; safe to log


def choose_route(base: str, explicit: ProxySettings | None, env: ProxyEnvironment) -> Route:
    """An explicit `proxy:` wins; otherwise HTTPS_PROXY/HTTP_PROXY by scheme, unless NO_PROXY matches."""
    proxy = explicit
    if proxy is None:
        parts = urlsplit(base)
        proxy = env.https if parts.scheme == "https" else env.http
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        if proxy and env.no_proxy and proxy_bypass_environment(host, {"no": env.no_proxy}):
            proxy = None
    if proxy is None:
        return Route(None, None, "direct")
    headers = None
    if proxy.username is not None:
        password = proxy.password.reveal() if proxy.password else ""
        headers = {"Proxy-Authorization": aiohttp.encode_basic_auth(proxy.username.reveal(), password)}
    url = URL(proxy.url)
    return Route(url, headers, f"{url.host}:{url.port}")


def trust_context(ca_bundle: str | None) -> ssl.SSLContext:
    """certifi's roots, the OS store, and an optional bundle (for TLS-inspecting proxies)."""
    context = ssl.create_default_context(cafile=certifi.where())
    context.load_default_certs()
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


def connection_tracer() -> aiohttp.TraceConfig:
    """At DEBUG, one line per new upstream connection, like the seed's connect_tcp.started."""

    async def on_request_start(session: Any, ctx: SimpleNamespace, params: Any) -> None:
        ctx.host = params.url.host

    async def on_connection_create_start(session: Any, ctx: SimpleNamespace, params: Any) -> None:
        proxy = getattr(ctx.trace_request_ctx, "proxy_label", None) if ctx.trace_request_ctx else None
        log.debug("connect_tcp.started host=%r proxy=%r", getattr(ctx, "host", None), proxy or "direct",
                  extra={"host": getattr(ctx, "host", None), "proxy": proxy or "direct"})

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    trace.on_connection_create_start.append(on_connection_create_start)
    return trace


@dataclass(frozen=True)
class Reply:
    """A whole, non-streamed upstream answer."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def error_message(self) -> str:
        return error_message(self.body)


def body_error(exc: BaseException) -> errors.GatewayError | None:
    """The GatewayError our request-body generator raised, if that is what broke the send."""
    seen = exc
    while seen is not None:
        if isinstance(seen, errors.GatewayError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class BodyWatchdog:
    """The read timeout of a streamed body, checked four times a period instead of re-armed per chunk.

    aiohttp's sock_read cancels and re-arms a timer for every chunk it receives: on a stream that is
    ~8% of the gateway's CPU per event (bench/, BENCHMARKS.md). Once the headers are in, the body's
    timeout moves here: a body silent for `seconds` (to within a quarter more) fails its next read
    with ServerTimeoutError, as sock_read did. The timer aiohttp armed for the headers stays, so a
    body that never starts still fails after exactly `seconds`.
    """

    def __init__(self, content: aiohttp.StreamReader, seconds: float) -> None:
        self.content = content
        self.seconds = seconds
        self.loop = asyncio.get_running_loop()
        self.seen = content.total_bytes
        self.since = self.loop.time()
        self.handle = self.loop.call_later(seconds / 4, self.check)

    @classmethod
    def take_over(cls, response: aiohttp.ClientResponse, seconds: float | None) -> BodyWatchdog | None:
        connection = response.connection
        if not seconds or connection is None or connection.protocol is None:
            return None  # no timeout, or the body is already in
        connection.protocol.read_timeout = None  # no new timer per chunk from now on
        return cls(response.content, seconds)

    def check(self) -> None:
        now = self.loop.time()
        if self.content.total_bytes != self.seen:
            self.seen, self.since = self.content.total_bytes, now
        elif self.content.is_eof():
            return
        elif now - self.since >= self.seconds:
            self.content.set_exception(aiohttp.ServerTimeoutError("Timeout on reading data from socket"))
            return
        self.handle = self.loop.call_later(self.seconds / 4, self.check)

    def cancel(self) -> None:
        self.handle.cancel()


class Upstream:
    """A named upstream base URL with its pooled session. Open in cleanup_ctx, then use."""

    def __init__(self, name: str, base: str, *, api_key: Secret | None, route: Route,
                 timeouts: Timeouts, ca_bundle: str | None = None, max_connections: int = 0,
                 keepalive_seconds: float = 30.0) -> None:
        self.name = name
        self.base = base
        self.api_key = api_key
        self.route = route
        self.timeouts = timeouts
        self.ca_bundle = ca_bundle
        self.max_connections = max_connections
        self.keepalive_seconds = keepalive_seconds
        self.stream_timeout = aiohttp.ClientTimeout(total=None, connect=timeouts.connect,
                                                    sock_read=timeouts.read)
        self.call_timeout = aiohttp.ClientTimeout(total=timeouts.total, connect=timeouts.connect)
        self._session: aiohttp.ClientSession | None = None
        self._trace_ctx = SimpleNamespace(proxy_label=route.proxy_label)

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Upstream used before open()"
        return self._session

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections, limit_per_host=0, keepalive_timeout=self.keepalive_seconds,
            ssl=trust_context(self.ca_bundle), enable_cleanup_closed=False,
        )
        tracers = [connection_tracer()] if log.isEnabledFor(logging.DEBUG) else []
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, trust_env=False, trace_configs=tracers,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path: str, query: str = "") -> URL:
        """`path` must already be safe and percent-encoded; it is appended to the base as is."""
        raw = self.base + path + ("?" + query if query else "")
        return URL(raw, encoded=True)

    @asynccontextmanager
    async def request(self, method: str, url: URL, *, headers: Any, data: Any = None,
                      stream: bool = True) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send one request; transport failures before the response become GatewayErrors."""
        if self.route.proxy_headers and url.scheme == "http":
            # Plain HTTP through a proxy has no CONNECT: the proxy reads its credentials from the request.
            headers = CIMultiDict(headers or {})
            headers.update(self.route.proxy_headers)
        try:
            response = await self.session.request(
                method, url, headers=headers, data=data, allow_redirects=False,
                proxy=self.route.proxy, proxy_headers=self.route.proxy_headers,
                timeout=self.stream_timeout if stream else self.call_timeout,
                trace_request_ctx=self._trace_ctx,
            )
        except aiohttp.ClientHttpProxyError as exc:
            raise self._proxy_failure(f"the proxy answered {exc.status}") from None
        except aiohttp.ClientProxyConnectionError as exc:
            raise self._proxy_failure(f"cannot connect to the proxy ({exc.os_error.strerror or exc})") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise self._unavailable(f"TLS verification of {url.host} failed: {exc.certificate_error}") from None
        except aiohttp.ClientConnectorError as exc:
            raise self._unavailable(f"cannot connect to {url.host}:{url.port} "
                                    f"({exc.os_error.strerror or exc.os_error})") from None
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            log.warning("upstream %s timed out", self.name, extra={"upstream": self.name})
            raise errors.UpstreamTimeout() from None
        except aiohttp.ClientError as exc:
            raised_by_body = body_error(exc)
            if raised_by_body is not None:
                raise raised_by_body from None  # e.g. body_too_large, from the streamed request body
            raise self._unavailable(f"{type(exc).__name__}: {exc}") from None
        watchdog = BodyWatchdog.take_over(response, self.timeouts.read) if stream else None
        try:
            if response.status == 407 and self.route.proxy is not None:
                raise self._proxy_failure("the proxy asked for credentials (407)")
            yield response
        finally:
            if watchdog is not None:
                watchdog.cancel()
            response.release()

    async def post_json(self, path: str, body: Mapping[str, Any] | None, *,
                        headers: Mapping[str, str] | None = None) -> Reply:
        """POST `body` as JSON (or nothing) with the server key, under the call timeout; read the whole answer."""
        if not self.api_key:
            raise errors.UpstreamNotConfigured()
        sent = {"Authorization": "Bearer " + self.api_key.reveal(), "Accept": "application/json",
                "Content-Type": "application/json", **(headers or {})}
        data = json.dumps(body).encode() if body is not None else b""
        async with self.request("POST", self.url(path), headers=sent, data=data, stream=False) as response:
            try:
                raw = await response.read()
            except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
                log.warning("upstream %s timed out", self.name, extra={"upstream": self.name})
                raise errors.UpstreamTimeout() from None
            except aiohttp.ClientError as exc:
                raise self._unavailable(f"{type(exc).__name__}: {exc}") from None
            return Reply(response.status, response.headers, raw)

    def _proxy_failure(self, reason: str) -> errors.GatewayError:
        log.warning("forward proxy %s failed: %s", self.route.proxy_label, reason,
                    extra={"upstream": self.name, "proxy": self.route.proxy_label})
        return errors.UpstreamProxyError(f"The forward proxy {self.route.proxy_label} failed: {reason}.",
                                         proxy=self.route.proxy_label)

    def _unavailable(self, reason: str) -> errors.GatewayError:
        log.warning("upstream %s unreachable: %s", self.name, reason,
                    extra={"upstream": self.name, "proxy": self.route.proxy_label})
        return errors.UpstreamUnavailable(f"The upstream could not be reached: {reason}.")
