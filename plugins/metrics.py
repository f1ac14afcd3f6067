"""Metrics: Prometheus metrics of the gateway routes, exposed at /metrics from the app's own registry.

Labels come only from bounded sets: route templates (capped at `max_label_values`, the rest is
"other"), known methods, status classes, upstream names, error codes, workflow slugs (capped too).
With PROMETHEUS_MULTIPROC_DIR set before start, every worker writes its values to that directory
and /metrics serves the sum over all workers (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import hmac
import platform
import time
import weakref
from bisect import bisect_left
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values
from prometheus_client.exposition import choose_encoder

import gateway
from gateway import errors, keys
from gateway.chain import Handler, ended_by, observe_chunks, route_of
from gateway.exchange import Exchange
from gateway.forwarded import TrustedProxies
from gateway.middlewares import core
from gateway.schema import ConfigError, Secret

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
TTFB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATUS_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")
SESSION_ROUTES = frozenset({"/api/chatkit/session", "/api/chatkit/sessions"})  # ours, and the relayed REST one
OTHER = "other"


@dataclass(frozen=True)
class Settings:
    path: str = "/metrics"
    port: int | None = None  # serve /metrics on this port (its own site) instead of the main one
    host: str | None = None  # with `port`: the address to bind (default: server.host)
    token: Secret | None = None  # when set, /metrics wants `Authorization: Bearer <token>`
    max_label_values: int = 100  # distinct routes (and slugs) kept as labels; later ones become "other"

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ConfigError("path", "must start with /")
        if self.port is not None and not 0 < self.port < 65536:
            raise ConfigError("port", f"expected 1-65535, got {self.port}")
        if self.max_label_values < 1:
            raise ConfigError("max_label_values", "must be positive")


class Bounded:
    """The values seen so far, up to `limit` of them; any value past that is reported as "other"."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return OTHER
        self.seen.add(value)
        return value


class LoopValue:
    """prometheus_client's MutexValue without its lock, for the values only the event loop's thread moves
    and reads (requests, and /metrics served on the same loop): each of a request's ~10 increments took
    and released a lock. In multiprocess mode the values live in files and are left as they are."""

    __slots__ = ("_exemplar", "_value")

    def __init__(self, value: float) -> None:
        self._value = value
        self._exemplar: Any = None

    def inc(self, amount: float) -> None:
        self._value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self._value = value

    def set_exemplar(self, exemplar: Any) -> None:
        self._exemplar = exemplar

    def get(self) -> float:
        return self._value

    def get_exemplar(self) -> Any:
        return self._exemplar


def unlocked(value: Any) -> Any:
    return LoopValue(value.get()) if type(value) is values.MutexValue else value


def value_of(metric: Counter | Gauge) -> Any:
    """The value a counter child or a gauge keeps, unlocked, to `inc()` directly: what Counter.inc and
    Gauge.inc do after their per-call checks (prometheus-client is pinned; tests/test_metrics.py checks
    the equivalence)."""
    metric._value = unlocked(metric._value)
    return metric._value


class Buckets:
    """A histogram child's observe(): its sum and the first bucket whose bound holds the amount, found by
    bisection instead of prometheus_client's per-call checks and loop over the bounds; its values unlocked."""

    __slots__ = ("bounds", "buckets", "sum")

    def __init__(self, child: Histogram) -> None:
        self.bounds = tuple(child._upper_bounds)  # the last is +Inf
        child._buckets[:] = [unlocked(bucket) for bucket in child._buckets]
        child._sum = unlocked(child._sum)
        self.buckets = child._buckets
        self.sum = child._sum

    def observe(self, amount: float) -> None:
        self.sum.inc(amount)
        self.buckets[bisect_left(self.bounds, amount)].inc(1)


@dataclass(frozen=True, slots=True)
class RequestSeries:
    """What one request of a (route, method, status class) moves: its count, duration and overhead."""

    count: Any
    duration: Buckets
    overhead: Buckets


class Instruments:
    """Every metric of the chain, and the children the requests move cached per label set (labels() takes a
    lock and validates; the children's own inc() and observe() check more on each call)."""

    def __init__(self, registry: CollectorRegistry, max_label_values: int) -> None:
        r = registry
        self.requests = Counter("gateway_requests", "Gateway requests by route template, method and status class.",
                                ["route", "method", "status"], registry=r)
        self.duration = Histogram("gateway_request_duration_seconds",
                                  "Time from request to the end of the answer (a stream: its end).",
                                  ["route", "method", "status"], buckets=DURATION_BUCKETS, registry=r)
        self.in_flight = Gauge("gateway_requests_in_flight", "Gateway requests being handled.",
                               registry=r, multiprocess_mode="livesum")
        self.overhead = Histogram("gateway_overhead_seconds",
                                  "Time of a request not spent waiting on the upstream.",
                                  ["route"], buckets=OVERHEAD_BUCKETS, registry=r)
        self.upstream_duration = Histogram("gateway_upstream_request_duration_seconds",
                                           "Time spent waiting on the upstream, per request that got an answer.",
                                           ["upstream"], buckets=DURATION_BUCKETS, registry=r)
        self.upstream_errors = Counter("gateway_upstream_errors", "Upstream failures by upstream and kind.",
                                       ["upstream", "kind"], registry=r)
        self.active_streams = Gauge("gateway_active_streams", "Event streams being relayed.",
                                    registry=r, multiprocess_mode="livesum")
        self.stream_ttfb = Histogram("gateway_stream_ttfb_seconds",
                                     "Time from request to the first byte of an event stream sent to the client.",
                                     ["route"], buckets=TTFB_BUCKETS, registry=r)
        self.stream_events = Counter("gateway_stream_events", "SSE events relayed to clients.",
                                     ["route"], registry=r)
        self.sessions = Counter("gateway_sessions_created", "ChatKit session creations by workflow slug and outcome.",
                                ["slug", "outcome"], registry=r)
        self.operations = Counter("gateway_chatkit_operations",
                                  "ChatKit protocol requests to server slugs by slug, operation and status class.",
                                  ["slug", "operation", "status"], registry=r)
        build = Gauge("gateway_build_info", "Build information; the value is always 1.", ["version", "python"],
                      registry=r, multiprocess_mode="max")
        build.labels(gateway.__version__, platform.python_version()).set(1)
        self.route_label = Bounded(max_label_values)
        self.slug_label = Bounded(max_label_values)
        self.requests_in_flight = value_of(self.in_flight)
        self.streams_active = value_of(self.active_streams)
        self._requests: dict[tuple[str, str, str], RequestSeries] = {}
        self._overhead: dict[str, Buckets] = {}
        self._streams: dict[str, tuple[Buckets, Any]] = {}
        self._upstream: dict[str, Buckets] = {}
        self._sessions: dict[tuple[str, str], Any] = {}
        self._operations: dict[tuple[str, str, str], Any] = {}

    def request_series(self, route: str, method: str, status: str) -> RequestSeries:
        key = (route, method, status)
        series = self._requests.get(key)
        if series is None:
            overhead = self._overhead.get(route)
            if overhead is None:
                overhead = self._overhead[route] = Buckets(self.overhead.labels(route))
            series = self._requests[key] = RequestSeries(value_of(self.requests.labels(*key)),
                                                         Buckets(self.duration.labels(*key)), overhead)
        return series

    def stream_children(self, route: str) -> tuple[Buckets, Any]:
        """(time to first byte, events) of the event streams of `route`."""
        children = self._streams.get(route)
        if children is None:
            children = self._streams[route] = (Buckets(self.stream_ttfb.labels(route)),
                                               value_of(self.stream_events.labels(route)))
        return children

    def upstream_buckets(self, upstream: str) -> Buckets:
        buckets = self._upstream.get(upstream)
        if buckets is None:
            buckets = self._upstream[upstream] = Buckets(self.upstream_duration.labels(upstream))
        return buckets

    def counted(self, cache: dict[tuple[str, ...], Any], metric: Counter, key: tuple[str, ...]) -> Any:
        """The value of metric.labels(*key), looked up once per label set."""
        value = cache.get(key)
        if value is None:
            value = cache[key] = value_of(metric.labels(*key))
        return value

    def record(self, request: web.Request, status: int, streamed: bool) -> None:
        exchange = request[keys.exchange]
        duration = time.perf_counter() - exchange.started
        self.requests_in_flight.inc(-1)
        route = self.route_label(route_of(request))
        method = request.method if request.method in METHODS else OTHER
        status_class = STATUS_CLASSES[status // 100 if 100 <= status < 600 else 0]
        series = self.request_series(route, method, status_class)
        series.count.inc(1)
        series.duration.observe(duration)
        series.overhead.observe(max(0.0, duration - exchange.upstream_wait))
        if streamed:
            self.streams_active.inc(-1)
            self.stream_children(route)[1].inc(exchange.events)
        if exchange.upstream is not None:
            self.record_upstream(exchange)
        if route in SESSION_ROUTES and method == "POST":
            workflow = request.get(keys.workflow)
            slug = self.slug_label(workflow.slug) if workflow is not None else "unknown"
            outcome = "created" if status < 400 else "rejected" if status < 500 else "failed"
            self.counted(self._sessions, self.sessions, (slug, outcome)).inc(1)
        operation = request.get(keys.operation)  # a bounded set, read by the protocol endpoint from the body's head
        if operation is not None:
            workflow = request.get(keys.workflow)
            slug = self.slug_label(workflow.slug) if workflow is not None else "unknown"
            self.counted(self._operations, self.operations, (slug, operation, status_class)).inc(1)

    def record_upstream(self, exchange: Exchange) -> None:
        if exchange.upstream_status is not None:
            self.upstream_buckets(exchange.upstream).observe(exchange.upstream_wait)
        error = exchange.error
        if error is not None and error.startswith("upstream_") and error != "upstream_not_configured":
            kind = error  # a stable error code: a bounded set
        elif exchange.upstream_status is not None and (exchange.upstream_status >= 500 or exchange.upstream_status == 429):
            kind = "status_5xx" if exchange.upstream_status >= 500 else "status_429"
        else:
            return
        self.upstream_errors.labels(exchange.upstream, kind).inc()


class StreamWatch:
    """A chunk observer: at the first chunk of an event stream, counts the stream and its time to first byte."""

    __slots__ = ("instruments", "request", "streaming")

    def __init__(self, instruments: Instruments, request: web.Request) -> None:
        self.instruments = instruments
        # The request holds this watch among its observers: a strong reference back would make a cycle
        # that keeps every request's objects alive until the garbage collector finds it.
        self.request = weakref.ref(request)
        self.streaming: bool | None = None  # None until the first chunk

    def __call__(self, chunk: bytes) -> None:
        if self.streaming is not None:
            return
        request = self.request()  # alive: only code that holds the request streams its chunks
        exchange = request[keys.exchange]
        self.streaming = exchange.event_stream
        if self.streaming:
            m = self.instruments
            m.streams_active.inc(1)
            ttfb, _ = m.stream_children(m.route_label(route_of(request)))
            ttfb.observe((exchange.first_byte_at or time.perf_counter()) - exchange.started)


def exposition_registry(app_registry: CollectorRegistry) -> CollectorRegistry:
    """The app's registry; in multiprocess mode, one that sums the files of every worker."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return app_registry
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def exposition(registry: CollectorRegistry, token: Secret | None) -> Callable[[web.Request], Awaitable[web.Response]]:
    expected = token.reveal().encode() if token is not None else None

    async def metrics(request: web.Request) -> web.Response:
        if expected is not None:
            given = request.headers.get("Authorization", "")
            if given[:7].lower() != "bearer " or not hmac.compare_digest(given[7:].strip().encode(), expected):
                raise errors.Unauthenticated(headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(registry), headers={"Content-Type": content_type})

    return metrics


class Metrics:
    """Reads: the route template, method, status, workflow, ChatKit operation and Exchange of each request; its chunks.
    Writes: the gateway_* metrics in app[keys.metrics_registry]; serves them at /metrics (outside the chain).
    Answers locally: never in the chain; /metrics answers 401 without the configured bearer token."""

    name: ClassVar[str] = "metrics"
    after: ClassVar[tuple[str, ...]] = ()
    Settings: ClassVar[type] = Settings

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def setup(self, app: web.Application) -> None:
        s = self.settings
        app[keys.instruments] = Instruments(app[keys.metrics_registry], s.max_label_values)
        handler = exposition(exposition_registry(app[keys.metrics_registry]), s.token)
        if s.port is None:
            app.router.add_get(s.path, handler, name="metrics")
            return
        server = app[keys.settings].server
        host = s.host or server.host
        reuse_port = getattr(values.ValueClass, "_multiprocess", False) or None  # workers share the port

        async def metrics_site(app: web.Application) -> AsyncIterator[None]:
            metrics_app = web.Application(middlewares=[core(TrustedProxies(server.trusted_proxies))])
            metrics_app.router.add_get(s.path, handler, name="metrics")
            runner = web.AppRunner(metrics_app, access_log=None, handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, host, s.port, reuse_port=reuse_port).start()
            yield
            await runner.cleanup()

        app.cleanup_ctx.append(metrics_site)

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        instruments = request.app[keys.instruments]
        watch = StreamWatch(instruments, request)
        observe_chunks(request, watch)
        instruments.requests_in_flight.inc(1)
        try:
            response = await handler(request)
        except BaseException as exc:
            instruments.record(request, ended_by(exc)[0], bool(watch.streaming))
            raise
        instruments.record(request, response.status, bool(watch.streaming))
        return response
