"""python -m bench.ab --old <dir>: two gateway builds head to head, shipped chain, on the proxy CPU at once.

The machine's load moves absolute numbers by 2×, so a code change is measured against the code before
it in the same minutes: both builds run side by side (the old one from a checkout, e.g.
`git worktree add /tmp/old HEAD`), and rounds alternate in ABBA order. Per build: relayed requests
(wrk c64: req/s and the gateway's CPU µs per request) and event streams (CPU µs per event).

    .venv/bin/python -m bench.ab --old /tmp/old --rounds 4
    .venv/bin/python -m bench.ab --old /tmp/old --axes streams --streams 200 --events 250 --pace 20
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from . import gateway as gw
from . import nginx, streams, wrk
from .peers import SESSIONS_BODY
from .procs import LOAD_CPU, Process, cpu_seconds, free_port, pin_self, raise_open_files, wait_for_port
from .stats import median


def start(root: Path, workdir: Path, upstream_port: int, chain: gw.Chain) -> gw.Gateway:
    """A gateway of the code under `root` (bench.gateway reads its ROOT at each call)."""
    saved = gw.ROOT
    gw.ROOT = root
    try:
        return gw.Gateway(workdir, free_port(), upstream_port, chain)
    finally:
        gw.ROOT = saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, type=Path, help="the old build's checkout (a git worktree)")
    parser.add_argument("--new", type=Path, default=gw.ROOT, help="the new build (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=4, help="ABBA rounds (each runs both builds)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per wrk run")
    parser.add_argument("--axes", default="relay,streams")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--pace", type=float, default=20.0, help="ms between events")
    parser.add_argument("--chain", default="shipped", choices=("shipped", "empty"))
    args = parser.parse_args(argv)
    axes = set(args.axes.split(","))
    pin_self(LOAD_CPU)
    raise_open_files()
    workdir = Path(tempfile.mkdtemp(prefix="chatkit-ab-"))
    chain = gw.shipped_chain() if args.chain == "shipped" else gw.Chain("empty", [])
    json_port, sse_port = free_port(), free_port()
    procs: list = []
    try:
        upstream = nginx.start_fixed_json(workdir / "nginx-json", json_port, cpu=LOAD_CPU)
        procs.append(upstream)
        wait_for_port(json_port, upstream.popen)
        sse = Process("sse-upstream", [gw.sys.executable, "-m", "bench.sse_upstream",
                                       "--port", str(sse_port)], cpu=LOAD_CPU, log=workdir / "sse.log",
                      cwd=str(gw.ROOT))
        procs.append(sse)
        wait_for_port(sse_port, sse.popen)
        builds = {}
        for name, root in (("old", args.old.resolve()), ("new", args.new.resolve())):
            for phase, port in (("relay", json_port), ("streams", sse_port)):
                if phase in axes:
                    g = start(root, workdir / f"{name}-{phase}", port, chain)
                    procs.append(g)
                    builds[name, phase] = g
        results: dict = {(n, a): [] for n in ("old", "new") for a in ("rps", "us_req", "us_event")}
        if "relay" in axes:
            scripts = {n: wrk.write_script(workdir / f"wrk-{n}.lua", SESSIONS_BODY, builds[n, "relay"].headers)
                       for n in ("old", "new")}
            url = {n: f"http://127.0.0.1:{builds[n, 'relay'].port}/api/chatkit/sessions" for n in ("old", "new")}
            for n in ("old", "new"):
                wrk.run(url[n], scripts[n], connections=64, seconds=1)
            for r in range(args.rounds):
                for n in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    pid = builds[n, "relay"].process.pid
                    before = cpu_seconds(pid)
                    res = wrk.run(url[n], scripts[n], connections=64, seconds=args.seconds)
                    us = (cpu_seconds(pid) - before) * 1e6 / max(1, res.requests)
                    results[n, "rps"].append(res.rps)
                    results[n, "us_req"].append(us)
                    print(f"relay round {r + 1} {n}: {res.rps:,.0f} req/s, {us:.1f} µs CPU/req, "
                          f"errors {res.errors}", flush=True)
        if "streams" in axes:
            for r in range(args.rounds):
                for n in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    g = builds[n, "streams"]
                    before = cpu_seconds(g.process.pid)
                    run = streams.run(g.port, "/api/chatkit/stream", streams=args.streams, events=args.events,
                                      pace_ms=args.pace, headers=g.headers, ramp_s=1.0)
                    us = (cpu_seconds(g.process.pid) - before) * 1e6 / max(1, run.events)
                    results[n, "us_event"].append(us)
                    print(f"streams round {r + 1} {n}: {run.events} events, {us:.1f} µs CPU/event, "
                          f"p99 {run.event_p99_ms or 0:.2f} ms, dropped {run.dropped} {run.errors[:1]}", flush=True)
        print()
        for axis, label in (("rps", "relay req/s"), ("us_req", "CPU µs/relayed req"), ("us_event", "CPU µs/event")):
            old, new = results["old", axis], results["new", axis]
            if old and new:
                mo, mn = median(old), median(new)
                print(f"{label:22s} old {mo:10.1f}  new {mn:10.1f}  change {100 * (mn - mo) / mo:+.1f}%  "
                      f"(medians of {len(old)})")
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
