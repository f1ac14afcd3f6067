"""Traffic: per-minute aggregates of the gateway routes over the last hour, for the admin Status page.

`recorded(handler, traffic)` wraps a route outside the plugin chain, so it counts every gateway request
whatever plugins are configured, from the same facts the access log and metrics use (the
request's Exchange, its workflow, its status). Recording is a few integer increments: a ring of
60 minutes, each with a request count, a log-scaled latency histogram and errors by workflow.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from . import keys
from .chain import Handler, ended_by

MINUTES = 60
# Latency bucket upper bounds in milliseconds, 2^(i/2) from 1 ms to about 17 minutes; the last is open.
BOUNDS_MS = tuple(2 ** (i / 2) for i in range(41))
NO_WORKFLOW = "-"


@dataclass
class Minute:
    start: int = -1  # minutes since the epoch
    requests: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS_MS) + 1))
    requests_by_workflow: dict[str, int] = field(default_factory=dict)
    errors_by_workflow: dict[str, int] = field(default_factory=dict)

    def quantile(self, q: float) -> float | None:
        """The latency (ms) below which a fraction `q` of this minute's requests finished."""
        if not self.requests:
            return None
        rank = q * self.requests
        seen = 0
        for index, count in enumerate(self.latency):
            seen += count
            if seen >= rank and count:
                return BOUNDS_MS[min(index, len(BOUNDS_MS) - 1)]
        return BOUNDS_MS[-1]


@dataclass(frozen=True)
class MinuteView:
    """One minute as the Status page charts it."""

    start: int
    requests_per_second: float
    p50_ms: float | None
    p99_ms: float | None
    errors_by_workflow: dict[str, int]
    requests_by_workflow: dict[str, int]


class Traffic:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._ring = [Minute() for _ in range(MINUTES)]

    def record(self, workflow: str | None, status: int, seconds: float, failed: bool) -> None:
        now = int(self.clock() // 60)
        minute = self._ring[now % MINUTES]
        if minute.start != now:
            minute = self._ring[now % MINUTES] = Minute(start=now)
        slug = workflow or NO_WORKFLOW
        minute.requests += 1
        minute.latency[bisect_left(BOUNDS_MS, seconds * 1000.0)] += 1
        minute.requests_by_workflow[slug] = minute.requests_by_workflow.get(slug, 0) + 1
        if failed:
            minute.errors_by_workflow[slug] = minute.errors_by_workflow.get(slug, 0) + 1

    def last_hour(self) -> list[MinuteView]:
        """The last 60 minutes, oldest first, the current (partial) one last; quiet minutes are zeros."""
        now = self.clock()
        current = int(now // 60)
        views = []
        for start in range(current - MINUTES + 1, current + 1):
            minute = self._ring[start % MINUTES]
            if minute.start != start:
                minute = Minute(start=start)
            elapsed = max(1.0, now - start * 60) if start == current else 60.0
            views.append(MinuteView(start, minute.requests / elapsed, minute.quantile(0.5), minute.quantile(0.99),
                                    dict(minute.errors_by_workflow), dict(minute.requests_by_workflow)))
        return views


def failed(status: int, stream_error: str | None) -> bool:
    """A failure the gateway or its upstream caused: a 5xx, or a stream that broke after a 2xx."""
    return status >= 500 or (status < 400 and stream_error is not None)


def recorded(handler: Handler, traffic: Traffic) -> Handler:
    """`handler`, with each request's outcome added to `traffic` (the app's, app[keys.traffic])."""

    async def recording(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except BaseException as exc:
            status, _ = ended_by(exc)
            note(traffic, request, status)
            raise
        note(traffic, request, response.status)
        return response

    return recording


def note(traffic: Traffic, request: web.Request, status: int) -> None:
    exchange = request[keys.exchange]
    workflow = request.get(keys.workflow)
    ttfb = exchange.ttfb_ms() if exchange.event_stream else None
    latency_ms = ttfb if ttfb is not None else exchange.elapsed_ms()  # a stream's latency is its first byte
    traffic.record(workflow.slug if workflow is not None else None, status, latency_ms / 1000.0,
                   failed(status, exchange.error))
