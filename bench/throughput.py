"""Axes 1-3, driven by wrk: relayed requests at 64 connections, session minting, added latency at c=1.

Peers run interleaved (A B C D, A B C D, …); each figure is the median over the rounds. The
proxy's CPU time per request comes from its /proc/<pid>/stat around each wrk run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from . import wrk
from .peers import MINT_BODY, SESSIONS_BODY, Peer
from .procs import cpu_seconds
from .stats import median, minus

Progress = Callable[[str], None]


def measure(peer: Peer, path: str, script: Path, connections: int, seconds: float) -> dict:
    before = cpu_seconds(peer.pid) if peer.pid else None
    result = wrk.run(peer.url(path), script, connections=connections, seconds=seconds).as_dict()
    if before is not None and peer.pid and result["requests"]:
        result["cpu_us_per_req"] = (cpu_seconds(peer.pid) - before) * 1e6 / result["requests"]
    return result


def interleaved(peers: Sequence[Peer], path_of: Callable[[Peer], str], workdir: Path, *, connections: int,
                seconds: float, rounds: int, progress: Progress, label: str,
                body: str = SESSIONS_BODY) -> dict[str, dict]:
    """wrk on each peer in turn, `rounds` times, after a 1-second warm-up each; medians per peer."""
    scripts = {p.name: wrk.write_script(workdir / f"wrk-{i}.lua", body, p.headers)
               for i, p in enumerate(peers)}
    for peer in peers:
        wrk.run(peer.url(path_of(peer)), scripts[peer.name], connections=connections, seconds=1)
    runs: dict[str, list[dict]] = {p.name: [] for p in peers}
    for r in range(rounds):
        for peer in peers:
            result = measure(peer, path_of(peer), scripts[peer.name], connections, seconds)
            runs[peer.name].append(result)
            progress(f"{label} round {r + 1}/{rounds} {peer.name}: {result['rps']:,.0f} req/s, "
                     f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, errors {result['errors']}"
                     + (f", {result['cpu_us_per_req']:.0f} µs CPU/req" if "cpu_us_per_req" in result else ""))
    return {name: summarize(results) for name, results in runs.items()}


def summarize(results: list[dict]) -> dict:
    keys = ("rps", "p50_ms", "p99_ms", "max_ms", "cpu_us_per_req")
    summary = {key: median([r.get(key) for r in results]) for key in keys}
    summary["errors"] = sum(r["errors"] for r in results)
    summary["requests"] = sum(r["requests"] for r in results)
    summary["rounds"] = results
    return summary


def relayed(peers: Sequence[Peer], workdir: Path, *, seconds: float, rounds: int, progress: Progress) -> dict:
    """Axis 1: POST .../chatkit/sessions relayed to the fixed-JSON upstream, 64 connections."""
    return interleaved(peers, lambda p: p.session_path, workdir, connections=64, seconds=seconds,
                       rounds=rounds, progress=progress, label="relay c64")


def minting(peers: Sequence[Peer], workdir: Path, *, seconds: float, rounds: int, progress: Progress) -> dict:
    """Axis 2: POST /api/chatkit/session (registry lookup, upstream call, session record), 64 connections."""
    return interleaved(peers, lambda p: "/api/chatkit/session", workdir, connections=64, seconds=seconds,
                       rounds=rounds, progress=progress, label="mint c64", body=MINT_BODY)


def latency_c1(peers: Sequence[Peer], workdir: Path, *, seconds: float, rounds: int, progress: Progress) -> dict:
    """Axis 3: one connection, one request at a time; added = peer - direct, p50 and p99."""
    results = interleaved(peers, lambda p: p.session_path, workdir, connections=1, seconds=seconds,
                          rounds=rounds, progress=progress, label="latency c1")
    direct = results.get("direct", {})
    for result in results.values():
        result["added_p50_ms"] = minus(result["p50_ms"], direct.get("p50_ms"))
        result["added_p99_ms"] = minus(result["p99_ms"], direct.get("p99_ms"))
    return results
