"""The stream client: open N concurrent SSE streams and time every event against its send stamp.

Each stream is one raw asyncio Protocol on one connection (lean enough for thousands on one core).
It finds the upstream's stamps (`"t":"<19 digits>"`) in whatever bytes arrive, so it needs no
HTTP or chunked parser: latency = receive time - send stamp, both CLOCK_MONOTONIC.
"""

from __future__ import annotations

import asyncio
import gc
import re
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .stats import percentile

STAMP = re.compile(rb'"t":"(\d{19})"')
T = TypeVar("T")
KEEP = 40  # bytes kept between reads so a stamp split across two reads is found whole
REQUEST_BODY = b'{"type":"threads.create","params":{"input":{"content":[{"type":"input_text","text":"hi"}]}}}'


@dataclass
class StreamResult:
    opened_ns: int
    ttfb_ns: int | None = None  # first event received - connection opened
    first_ns: int = 0  # when the first and the last events arrived
    last_ns: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    max_gap_ns: int = 0
    status_ok: bool | None = None
    error: str | None = None


class StreamClient(asyncio.Protocol):
    def __init__(self, request: bytes, expected: int, done: asyncio.Future) -> None:
        self.request = request
        self.expected = expected
        self.done = done
        self.result = StreamResult(opened_ns=time.monotonic_ns())
        self.tail = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        result = self.result
        if result.status_ok is None:
            result.status_ok = data.startswith(b"HTTP/1.1 200")
            if not result.status_ok:
                result.error = data[:64].decode("latin-1", "replace")
                self.finish()
                return
        buffer = self.tail + data
        end = 0
        for match in STAMP.finditer(buffer):
            end = match.end()
            if result.ttfb_ns is None:
                result.ttfb_ns = now - result.opened_ns
                result.first_ns = now
            elif now - result.last_ns > result.max_gap_ns:
                result.max_gap_ns = now - result.last_ns
            result.last_ns = now
            result.latencies_ns.append(now - int(match.group(1)))
        self.tail = buffer[max(end, len(buffer) - KEEP):]
        if len(result.latencies_ns) >= self.expected:
            self.finish()

    def connection_lost(self, exc: Exception | None) -> None:
        if len(self.result.latencies_ns) < self.expected and self.result.error is None:
            self.result.error = f"closed after {len(self.result.latencies_ns)} events"
        self.finish()

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(self.result)
        if self.transport is not None:
            self.transport.close()
            self.transport = None


def stream_request(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Accept: text/event-stream",
             "Content-Type: application/json", f"Content-Length: {len(REQUEST_BODY)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + REQUEST_BODY


async def one_stream(port: int, request: bytes, expected: int, delay: float, deadline: float) -> StreamResult:
    await asyncio.sleep(delay)
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()
    opened = time.monotonic_ns()
    try:
        transport, client = await asyncio.wait_for(
            loop.create_connection(lambda: StreamClient(request, expected, done), "127.0.0.1", port),
            timeout=max(0.1, deadline - loop.time()))
    except (OSError, asyncio.TimeoutError) as exc:
        return StreamResult(opened_ns=opened, error=f"connect: {exc!r}")
    client.result.opened_ns = opened  # count the connect in the time to first byte
    try:
        return await asyncio.wait_for(done, timeout=max(0.1, deadline - loop.time()))
    except asyncio.TimeoutError:
        client.result.error = f"timed out after {len(client.result.latencies_ns)} events"
        client.finish()
        return client.result


@dataclass
class StreamRun:
    streams: int
    completed: int
    dropped: int
    events: int
    ttfb_p50_ms: float | None
    ttfb_p99_ms: float | None
    event_p50_ms: float | None
    event_p99_ms: float | None
    event_max_ms: float | None
    max_gap_ms: float
    stalled: int  # streams with a gap between events over the stall threshold
    late_p99_ms: float | None  # how much longer than (events - 1) x pace the streams took: falling behind
    errors: list[str]

    def as_dict(self) -> dict:
        return dict(self.__dict__)


async def run_streams(port: int, path: str, *, streams: int, events: int, pace_ms: float,
                      headers: dict[str, str], ramp_s: float, stall_ms: float = 200.0) -> StreamRun:
    """Open `streams` streams spread over `ramp_s` seconds and wait for them all (bounded in time)."""
    request = stream_request(f"{path}?n={events}&p={pace_ms:g}", headers)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ramp_s + events * pace_ms / 1000.0 + 15.0
    step = ramp_s / streams if streams > 1 else 0.0
    results = await asyncio.gather(*(one_stream(port, request, events, i * step, deadline) for i in range(streams)))
    latencies = sorted(ns for r in results for ns in r.latencies_ns)
    ttfbs = sorted(r.ttfb_ns for r in results if r.ttfb_ns is not None)
    dropped = [r for r in results if r.error is not None]
    nominal_ns = (events - 1) * pace_ms * 1e6
    late = sorted(r.last_ns - r.first_ns - nominal_ns for r in results if r.error is None)
    ms = 1e-6
    return StreamRun(
        streams=streams, completed=streams - len(dropped), dropped=len(dropped), events=len(latencies),
        ttfb_p50_ms=percentile(ttfbs, 50, ms), ttfb_p99_ms=percentile(ttfbs, 99, ms),
        event_p50_ms=percentile(latencies, 50, ms), event_p99_ms=percentile(latencies, 99, ms),
        event_max_ms=latencies[-1] * ms if latencies else None,
        max_gap_ms=max((r.max_gap_ns for r in results), default=0) * ms,
        stalled=sum(1 for r in results if r.max_gap_ns * ms > stall_ms),
        late_p99_ms=percentile(late, 99, ms),
        errors=sorted({r.error for r in dropped if r.error})[:5],
    )


def run_measured(coroutine: Coroutine[Any, Any, T]) -> T:
    """`coroutine` on a fresh uvloop event loop, the cyclic collector paused meanwhile: its full
    collections walk every latency kept so far (15 million in a 10-minute soak) and would stall the
    load generator, not the proxy, by hundreds of milliseconds."""
    gc.collect()
    gc.disable()
    try:
        import uvloop
        return uvloop.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)
    finally:
        gc.enable()


def run(port: int, path: str, **kwargs) -> StreamRun:
    """run_streams on a fresh event loop (the load generator's process is pinned to its CPU)."""
    return run_measured(run_streams(port, path, **kwargs))
