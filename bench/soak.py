"""Axis 6: a soak at half the maximum stream load; the proxy's RSS must plateau.

`streams` slots each open a 2-second stream (100 events paced 20 ms) again and again until the
time is up, while the proxy's VmRSS is sampled every second. Growth is measured over the second
half: (RSS at the end - RSS at the half) / RSS at the half.
"""

from __future__ import annotations

import asyncio

from . import streams
from .procs import memory_kb
from .stats import percentile

EVENTS, PACE_MS = 100, 20.0


async def _soak(port: int, path: str, headers: dict[str, str], count: int, seconds: float, pid: int) -> dict:
    loop = asyncio.get_running_loop()
    request = streams.stream_request(f"{path}?n={EVENTS}&p={PACE_MS:g}", headers)
    end = loop.time() + seconds
    results: list[streams.StreamResult] = []
    samples: list[tuple[float, int]] = []

    async def slot(index: int) -> None:
        await asyncio.sleep(index / 1000.0)
        while loop.time() < end:
            deadline = loop.time() + EVENTS * PACE_MS / 1000.0 + 15.0
            results.append(await streams.one_stream(port, request, EVENTS, 0.0, deadline))

    async def sample() -> None:
        start = loop.time()
        while loop.time() < end:
            samples.append((loop.time() - start, memory_kb(pid)["VmRSS"]))
            await asyncio.sleep(1.0)

    await asyncio.gather(sample(), *(slot(i) for i in range(count)))
    latencies = sorted(ns for r in results for ns in r.latencies_ns)
    half = [kb for t, kb in samples if t >= seconds / 2]
    mid_kb, end_kb = (half[0], half[-1]) if half else (None, None)
    return {
        "streams": count, "seconds": seconds, "streams_run": len(results),
        "dropped": sum(1 for r in results if r.error is not None),
        "stalled": sum(1 for r in results if r.max_gap_ns > 200e6),
        "errors": sorted({r.error for r in results if r.error})[:5],
        "event_p99_ms": percentile(latencies, 99, 1e-6),
        "rss_start_kb": samples[0][1] if samples else None, "rss_mid_kb": mid_kb, "rss_end_kb": end_kb,
        "rss_max_kb": max((kb for _, kb in samples), default=None),
        "growth_second_half_pct": (end_kb - mid_kb) * 100.0 / mid_kb if mid_kb else None,
        "rss_samples_kb": [kb for _, kb in samples],
    }


def run(port: int, path: str, headers: dict[str, str], *, streams_count: int, seconds: float, pid: int) -> dict:
    return streams.run_measured(_soak(port, path, headers, streams_count, seconds, pid))
