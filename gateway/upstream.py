"""Upstream: one pool of connections per upstream, its proxy, its trust store and its timeouts.

Failures below HTTP become GatewayErrors here, once, so every caller maps them the same way:
a forward proxy that refuses is `upstream_proxy_error` (naming the proxy host, never its
credentials), an unreachable host `upstream_unavailable`, a slow one `upstream_timeout`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from urllib.request import proxy_bypass_environment

import aiohttp
import certifi
import orjson
from multidict import CIMultiDictProxy
from yarl import URL

from . import errors, http1
from .logs import redact
from .schema import Secret
from .settings import ProxyEnvironment, ProxySettings, Timeouts

log = logging.getLogger("chatkit_gateway.upstream")

CHATKIT_BETA = "chatkit_beta=v1"  # the OpenAI-Beta value every ChatKit REST call carries


def error_message(raw: bytes) -> str:
    """The message of an upstream error body (OpenAI's shape, else the text), secrets masked."""
    try:
        body = orjson.loads(raw)
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
            return orjson.loads(self.body)
        except ValueError:
            return None

    def error_message(self) -> str:
        return error_message(self.body)


class Call:
    """One request in flight, as an async context manager: the answer inside, its connection released after."""

    __slots__ = ("upstream", "method", "target", "headers", "data", "stream", "response")

    def __init__(self, upstream: Upstream, method: str, target: str, headers: Any,
                 data: bytes | AsyncIterator[bytes] | None, stream: bool) -> None:
        self.upstream, self.method, self.target, self.headers = upstream, method, target, headers
        self.data, self.stream = data, stream
        self.response: http1.Response | None = None

    async def __aenter__(self) -> http1.Response:
        headers, data, self.headers, self.data = self.headers, self.data, None, None  # not kept for a stream's life
        self.response = await self.upstream.send(self.method, self.target, headers, data, self.stream)
        return self.response

    async def __aexit__(self, *exc_info: object) -> None:
        if self.response is not None:
            self.upstream.client.release(self.response)


class Upstream:
    """A named upstream base URL with its pool of connections. Open in cleanup_ctx, then use."""

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
        parts = urlsplit(base)
        self.base_path = parts.path.rstrip("/")
        proxy = route.proxy
        self.origin = http1.Origin(
            parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80),
            proxy_scheme=proxy.scheme if proxy else None, proxy_host=proxy.host if proxy else None,
            proxy_port=proxy.port if proxy else None,
            proxy_headers=tuple((route.proxy_headers or {}).items()))
        self._client: http1.Client | None = None

    @property
    def client(self) -> http1.Client:
        assert self._client is not None, "Upstream used before open()"
        return self._client

    async def open(self) -> None:
        self._client = http1.Client(
            self.origin, ssl_context=trust_context(self.ca_bundle), connect_timeout=self.timeouts.connect,
            keepalive_seconds=self.keepalive_seconds, max_connections=self.max_connections,
            proxy_label=self.route.proxy_label)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def url(self, path: str, query: str = "") -> str:
        """The full URL of `path` (already safe and percent-encoded), for pages and logs."""
        return self.base + path + ("?" + query if query else "")

    def request(self, method: str, path: str, *, query: str = "", headers: Any,
                data: bytes | AsyncIterator[bytes] | None = None, stream: bool = True) -> Call:
        """`async with upstream.request(...) as response:` one request to base + `path`; transport
        failures before the answer become GatewayErrors, and the connection is released at the end.

        A stream (`stream=True`) fails when the upstream is silent for the read timeout; any other call
        when it has not answered whole within the total timeout.
        """
        return Call(self, method, self.base_path + path + ("?" + query if query else ""), headers, data, stream)

    async def send(self, method: str, target: str, headers: Any, data: bytes | AsyncIterator[bytes] | None,
                   stream: bool) -> http1.Response:
        timeouts = self.timeouts
        deadline = None if stream or not timeouts.total else asyncio.get_running_loop().time() + timeouts.total
        try:
            response = await self.client.send(method, target or "/", headers or {}, data,
                                              idle_timeout=timeouts.read if stream else None, deadline=deadline)
        except (TimeoutError, http1.TransportError) as exc:
            # Its traceback's frames hold the failed answer, which holds it: dropped, so that the
            # answer and its connection are freed now, not at the collector's next full collection.
            exc.__traceback__ = None
            raise self._failure(exc) from None
        if response.status == 407 and self.route.proxy is not None:
            self.client.release(response)
            raise self._proxy_failure("the proxy asked for credentials (407)")
        return response

    async def post_json(self, path: str, body: Mapping[str, Any] | None, *,
                        headers: Mapping[str, str] | None = None) -> Reply:
        """POST `body` as JSON (or nothing) with the server key, under the call timeout; read the whole answer."""
        if not self.api_key:
            raise errors.UpstreamNotConfigured()
        sent = {"Authorization": "Bearer " + self.api_key.reveal(), "Accept": "application/json",
                "Content-Type": "application/json", **(headers or {})}
        data = orjson.dumps(body) if body is not None else b""
        async with self.request("POST", path, headers=sent, data=data, stream=False) as response:
            try:
                raw = await response.read()
            except http1.TransportError as exc:
                raise self._failure(exc) from None
            return Reply(response.status, response.headers, raw)

    def _failure(self, exc: TimeoutError | http1.TransportError) -> errors.GatewayError:
        """Our error for a request that got no answer."""
        if isinstance(exc, http1.ProxyRefused):
            return self._proxy_failure(str(exc))
        if isinstance(exc, http1.ConnectFailed) and exc.to_proxy:
            return self._proxy_failure(f"cannot connect to the proxy ({exc.error.strerror or exc.error})")
        if isinstance(exc, (TimeoutError, http1.Timeout)):
            return self._timed_out()
        return self._unavailable(str(exc))

    def _timed_out(self) -> errors.GatewayError:
        log.warning("upstream %s timed out", self.name, extra={"upstream": self.name})
        return errors.UpstreamTimeout()

    def _proxy_failure(self, reason: str) -> errors.GatewayError:
        log.warning("forward proxy %s failed: %s", self.route.proxy_label, reason,
                    extra={"upstream": self.name, "proxy": self.route.proxy_label})
        return errors.UpstreamProxyError(f"The forward proxy {self.route.proxy_label} failed: {reason}.",
                                         proxy=self.route.proxy_label)

    def _unavailable(self, reason: str) -> errors.GatewayError:
        log.warning("upstream %s unreachable: %s", self.name, reason,
                    extra={"upstream": self.name, "proxy": self.route.proxy_label})
        return errors.UpstreamUnavailable(f"The upstream could not be reached: {reason}.")
