"""Profile the gateway under the relay load: ``python -m bench.profile [--chain shipped] [--seconds 15]``.

wrk drives POST /api/chatkit/sessions at 64 connections (or, with --streams N, N streams of
20 ms-paced events) while py-spy samples the gateway process. py-spy is not a dependency of the
project: ``.venv/bin/pip install py-spy``. Writes the collapsed stacks and a summary (top frames by
own time and by inclusive time) to bench/results/profile-<chain>-<load>.{txt,collapsed}.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from . import streams, wrk
from .peers import SESSIONS_BODY, Bench
from .procs import LOAD_CPU, cpu_seconds, pin_self, raise_open_files
from .report import RESULTS

SPY_MODE = ["--nonblocking"]  # Python frames only; --native pauses the process and cuts its throughput 4-fold


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        sys.exit("bench.profile: py-spy missing: .venv/bin/pip install py-spy")
    return found


IDLE_LEAVES = ("_connection_worker_thread (aiosqlite/core.py:59)",)  # aiosqlite's thread blocked on its queue


def source_file(frame: str) -> str:
    """"Client._exchange (gateway/http1.py:652)" -> "gateway/http1.py"."""
    _, _, where = frame.rpartition(" (")
    return where.rpartition(":")[0] or frame


def summarize(collapsed: Path, top: int = 30) -> str:
    """Top frames by own and inclusive samples. A `run_app` leaf is the uvloop loop itself: its C code
    (I/O callbacks, the C HTTP parser) and its idle time, which py-spy cannot see into."""
    own: collections.Counter[str] = collections.Counter()
    own_by_file: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[-1] in IDLE_LEAVES:
            continue
        total += count
        own[frames[-1]] += count
        own_by_file[source_file(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "own time (the frame itself was running):"]
    lines += [f"{count * 100 / total:5.1f}%  {frame}" for frame, count in own.most_common(top)]
    lines += ["", "own time by file (a C call is counted in the Python line that made it):"]
    lines += [f"{count * 100 / total:5.1f}%  {name}" for name, count in own_by_file.most_common(top)]
    lines += ["", "inclusive time (the frame was on the stack):"]
    lines += [f"{count * 100 / total:5.1f}%  {frame}" for frame, count in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--chain", choices=("empty", "shipped"), default="shipped")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--streams", type=int, default=0, help="profile N 20 ms-paced streams instead of wrk")
    args = parser.parse_args(argv)
    spy = py_spy()
    pin_self(LOAD_CPU)
    raise_open_files()
    load = f"streams{args.streams}" if args.streams else "relay"
    workdir = Path(tempfile.mkdtemp(prefix="chatkit-profile-"))
    try:
        with Bench(workdir) as bench:
            peers = bench.start_gateways("streams" if args.streams else "requests")
            peer = next(p for p in peers if p.chain is not None and p.chain.name == args.chain)
            collapsed = RESULTS / f"profile-{args.chain}-{load}.collapsed"
            RESULTS.mkdir(parents=True, exist_ok=True)
            before = cpu_seconds(peer.pid)
            if args.streams:
                events = (args.seconds + 2) * 50
                driver = threading.Thread(target=streams.run, args=(peer.port, peer.stream_path), kwargs=dict(
                    streams=args.streams, events=events, pace_ms=20.0, headers=peer.headers, ramp_s=1.0))
            else:
                script = wrk.write_script(workdir / "wrk.lua", SESSIONS_BODY, peer.headers)
                driver = threading.Thread(target=lambda: print(wrk.run(
                    peer.url(peer.session_path), script, connections=64, seconds=args.seconds + 2)))
            driver.start()
            subprocess.run([spy, "record", *SPY_MODE, "-r", "500", "-p", str(peer.pid), "-d", str(args.seconds),
                            "-f", "raw", "-o", str(collapsed)], check=True, capture_output=True,
                           timeout=args.seconds + 60)
            driver.join()
            print(f"gateway CPU: {cpu_seconds(peer.pid) - before:.1f} s")
            summary = summarize(collapsed)
            (RESULTS / f"profile-{args.chain}-{load}.txt").write_text(summary + "\n")
            print(summary)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
