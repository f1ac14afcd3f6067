"""Axes 4 and 5: concurrent SSE streams through each peer, and the most stall-free 20 ms streams.

The stream client runs in this (load) process; the proxy's peak RSS is read from VmHWM, reset
before each run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from . import streams
from .peers import Peer
from .procs import memory_kb, reset_peak_rss
from .stats import minus

Progress = Callable[[str], None]

LEVELS = (1, 100, 1000)
EVENTS, PACE_MS = 60, 50.0
STEP_PACE_MS = 20.0
STALL_MS = 200.0
STEPS = (100, 200, 300, 400, 500, 600, 800, 1000, 1250)


def ramp_for(count: int) -> float:
    """Open about one stream per millisecond, so the accept queue never overflows."""
    return count / 1000.0


def one_run(peer: Peer, count: int, *, events: int, pace_ms: float) -> dict:
    if peer.pid:
        reset_peak_rss(peer.pid)
        before = memory_kb(peer.pid)["VmRSS"]
    run = streams.run(peer.port, peer.stream_path, streams=count, events=events, pace_ms=pace_ms,
                      headers=peer.headers, ramp_s=ramp_for(count), stall_ms=STALL_MS).as_dict()
    if peer.pid:
        peak = memory_kb(peer.pid)["VmHWM"]
        run.update(rss_before_kb=before, peak_rss_kb=peak, kb_per_stream=(peak - before) / count)
    return run


def concurrent(peers: Sequence[Peer], *, progress: Progress, levels: Sequence[int] = LEVELS) -> dict:
    """Axis 4: 1, 100 and 1,000 streams of 60 events x 256 B paced 50 ms, peers interleaved per level."""
    results: dict[str, dict] = {}
    for count in levels:
        level: dict[str, dict] = {}
        for peer in peers:
            run = one_run(peer, count, events=EVENTS, pace_ms=PACE_MS)
            level[peer.name] = run
            progress(f"streams x{count} {peer.name}: ttfb p50 {fmt(run['ttfb_p50_ms'])} ms, event p50 "
                     f"{fmt(run['event_p50_ms'])} / p99 {fmt(run['event_p99_ms'])} ms, dropped {run['dropped']}, "
                     f"max gap {run['max_gap_ms']:.0f} ms, late p99 {fmt(run['late_p99_ms'])} ms"
                     + (f", peak RSS {run['peak_rss_kb'] / 1024:.1f} MB" if "peak_rss_kb" in run else ""))
        direct = level.get("direct", {})
        for run in level.values():
            for key in ("ttfb_p50_ms", "ttfb_p99_ms", "event_p50_ms", "event_p99_ms"):
                run["added_" + key] = minus(run[key], direct.get(key))
        results[str(count)] = level
    return results


def stall_free(run: dict) -> bool:
    return run["dropped"] == 0 and run["stalled"] == 0


def step(peer: Peer, count: int) -> dict:
    events = int((ramp_for(count) + 1.0) * 1000 / STEP_PACE_MS)  # 1 s with all streams open
    run = one_run(peer, count, events=events, pace_ms=STEP_PACE_MS)
    return {"streams": count, "ok": stall_free(run),
            **{k: run[k] for k in ("dropped", "stalled", "max_gap_ms", "event_p99_ms", "late_p99_ms", "peak_rss_kb",
                                   "errors") if k in run}}


def max_streams(peer: Peer, direct: Peer, *, progress: Progress, steps: Sequence[int] = STEPS) -> dict:
    """Axis 5: step up 20 ms-paced streams until the peer stalls (a gap over 200 ms) or drops one.

    Direct runs each step too: once direct stalls, the load generator (one core, shared with the
    upstream) is the limit, and the answer is "at least" the last step the peer held. A step the
    peer fails is tried once more, since this machine is shared and noisy.
    """
    best, tried, limit = 0, [], "steps"  # what ended the stepping: "steps", "harness" or "peer"
    for count in steps:
        control = step(direct, count)
        progress(f"max streams direct x{count}: {'ok' if control['ok'] else 'STALL'}, max gap "
                 f"{control['max_gap_ms']:.0f} ms, late p99 {fmt(control['late_p99_ms'])} ms")
        if not control["ok"]:
            limit = "harness"  # the load generator cannot drive this many, even direct
            break
        run = step(peer, count)
        if not run["ok"]:
            progress(f"max streams {peer.name} x{count}: stalled (max gap {run['max_gap_ms']:.0f} ms, "
                     f"dropped {run['dropped']}); trying once more")
            run = step(peer, count)
        tried.append({**run, "direct_ok": control["ok"]})
        progress(f"max streams {peer.name} x{count}: {'ok' if run['ok'] else 'STALL'}, max gap "
                 f"{run['max_gap_ms']:.0f} ms, event p99 {fmt(run['event_p99_ms'])} ms, late p99 "
                 f"{fmt(run['late_p99_ms'])} ms" + (f", errors {run['errors']}" if run["errors"] else ""))
        if not run["ok"]:
            limit = "peer"
            break
        best = count
    return {"peer": peer.name, "max_streams": best, "at_least": limit != "peer", "limit": limit, "pace_ms": STEP_PACE_MS,
            "stall_ms": STALL_MS, "steps": tried}


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
