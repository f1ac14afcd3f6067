"""python -m bench (make bench): the gateway beside direct and nginx, every axis of issue 9, one run.

Prints progress as it goes; writes bench/results/<stamp>.{md,json}, latest.{md,json} and the latest
section of BENCHMARKS.md. Targets 127.0.0.1 only; every process it starts is stopped when it ends.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import machine, report, soak, streaming, streams, throughput
from .peers import MINT_BODY, Bench, Peer, check
from .procs import LOAD_CPU, PROXY_CPU, memory_kb, pin, pin_self, raise_open_files

AXES = ("relay", "minting", "latency", "streams", "max", "soak")
MINT_PATH = "/api/chatkit/session"
SOAK_CAP = 500  # streams re-opened without pause: past ~500 the load generator's core stalls even direct


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per wrk axis (default 2)")
    parser.add_argument("--seconds", type=float, default=5, help="seconds per wrk run at 64 connections")
    parser.add_argument("--latency-seconds", type=float, default=3, help="seconds per wrk run at c=1")
    parser.add_argument("--soak-seconds", type=float, default=60,
                        help="soak length (default 60, so make bench stays under 5 minutes; the issue's soak is 600)")
    parser.add_argument("--axes", default=",".join(AXES), help=f"comma-separated subset of {','.join(AXES)}")
    parser.add_argument("--no-write", action="store_true", help="print the table, write no results")
    return parser.parse_args(argv)


class Progress:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", flush=True)


def require_tools() -> None:
    missing = [tool for tool in ("nginx", "wrk", "taskset") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"bench: missing {', '.join(missing)}: run `make test-deps` (Debian packages nginx, wrk)")


def require_ok(peer: Peer, path: str) -> None:
    status, body = check(peer, path)
    if status != 200:
        raise RuntimeError(f"{peer.name}: POST {path} answered {status}, not 200: {body[:300]!r}")


def minting_problem(peers: list[Peer]) -> str | None:
    """Why session minting cannot be measured on these gateways, or None when it can."""
    for peer in peers:
        status, body = check(peer, MINT_PATH, MINT_BODY)
        if status == 200 and b'"session_id"' not in body:
            return f"the gateway has no {MINT_PATH} route yet (the relay answered)"
        if status != 200:
            return f"{peer.name} answered {status}: {body[:200].decode(errors='replace')}"
    return None


def request_axes(bench: Bench, axes: set[str], args: argparse.Namespace, results: dict, progress: Progress) -> None:
    peers = bench.peers("requests")
    gateways = [p for p in peers if p.chain is not None]
    results["chains"]["key"] = next((g.key_source for g in bench.gateways if g.key_source), None)
    results["idle_rss_kb"] = {p.name: memory_kb(p.pid)["VmRSS"] for p in gateways if p.pid}
    for peer in peers:
        require_ok(peer, peer.session_path)
    progress("request phase: all peers answer 200; idle RSS "
             + ", ".join(f"{n} {kb / 1024:.1f} MB" for n, kb in results["idle_rss_kb"].items()))
    common = dict(workdir=bench.workdir, rounds=args.rounds, progress=progress)
    if "relay" in axes:
        scale = [bench.naive_peer(), bench.floor_peer(), bench.bare_peer()]
        results["relay"] = throughput.relayed([*peers, *scale], seconds=args.seconds, **common)
    if "minting" in axes:
        minters = [p for p in gateways if p.chain is not None and "auth" in p.chain.names]
        problem = minting_problem(minters) if minters else "no gateway has the auth plugin, which minting needs"
        if problem:
            results["minting"] = {"skipped": problem}
            progress(f"minting: skipped: {problem}")
        else:
            results["minting"] = throughput.minting(minters, seconds=args.seconds, **common)
    if "latency" in axes:
        results["latency_c1"] = throughput.latency_c1(peers, seconds=args.latency_seconds, **common)
        for peer in peers[1:]:
            pin(peer.pid, LOAD_CPU)
        try:
            results["latency_c1_one_cpu"] = throughput.latency_c1(peers, seconds=args.latency_seconds,
                                                                  **dict(common, rounds=1))
        finally:
            for peer in peers[1:]:
                pin(peer.pid, PROXY_CPU)


def stream_axes(bench: Bench, axes: set[str], args: argparse.Namespace, results: dict, progress: Progress) -> None:
    peers = bench.peers("streams")
    for peer in peers:
        probe = streams.run(peer.port, peer.stream_path, streams=1, events=3, pace_ms=10, headers=peer.headers,
                            ramp_s=0)
        if probe.dropped:
            raise RuntimeError(f"{peer.name}: a probe stream failed: {probe.errors}")
    progress("stream phase: a probe stream passes through every peer")
    if "streams" in axes:
        results["streams"] = streaming.concurrent(peers, progress=progress)
    gateway = peers[-1]  # the shipped chain when there is one
    if "max" in axes:
        results["max_streams"] = streaming.max_streams(gateway, peers[0], progress=progress)
    if "soak" in axes:
        if args.soak_seconds <= 0:
            results["soak"] = {"skipped": "--soak-seconds 0"}
            return
        most = results.get("max_streams", {}).get("max_streams") or 2 * SOAK_CAP  # not measured: the cap
        count = max(1, min(most // 2, SOAK_CAP))
        progress(f"soak: {count} streams through {gateway.name} for {args.soak_seconds:.0f} s")
        result = soak.run(gateway.port, gateway.stream_path, gateway.headers, streams_count=count,
                          seconds=args.soak_seconds, pid=gateway.pid)
        result["peer"] = gateway.name
        results["soak"] = result
        progress(f"soak: {result['streams_run']} streams, {result['dropped']} dropped, RSS growth over the "
                 f"second half {result['growth_second_half_pct'] or 0:.1f}%")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    axes = {a.strip() for a in args.axes.split(",") if a.strip()}
    unknown = axes - set(AXES)
    if unknown:
        sys.exit(f"bench: unknown axes {', '.join(sorted(unknown))}")
    require_tools()
    pin_self(LOAD_CPU)
    open_files = raise_open_files()
    progress = Progress()
    progress(f"load generator and upstreams on CPU 0, proxies on CPU 1; open files limit {open_files}")
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    results: dict = {"started": started, "machine": machine.facts(),
                     "options": {"rounds": args.rounds, "seconds": args.seconds,
                                 "latency_seconds": args.latency_seconds, "soak_seconds": args.soak_seconds,
                                 "axes": sorted(axes)}}
    workdir = Path(tempfile.mkdtemp(prefix="chatkit-bench-"))
    ok = False
    try:
        with Bench(workdir) as bench:
            results["chains"] = {"empty": [], "shipped": bench.shipped.names, "missing": bench.shipped.missing}
            progress(f"shipped chain: {bench.shipped.names or '(empty)'}"
                     + (f"; not available yet: {bench.shipped.missing}" if bench.shipped.missing else ""))
            if axes & {"relay", "minting", "latency"}:
                request_axes(bench, axes, args, results, progress)
            if axes & {"streams", "max", "soak"}:
                stream_axes(bench, axes, args, results, progress)
        ok = True
    finally:
        results["duration_s"] = time.monotonic() - progress.started
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"bench: failed; logs kept in {workdir}", file=sys.stderr)
    text = report.markdown(results)
    print("\n" + text)
    if not args.no_write:
        progress(f"wrote {report.write(results)} and BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
