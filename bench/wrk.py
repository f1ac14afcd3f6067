"""wrk: POST a small JSON body and read its summary as JSON (a Lua done() hook prints it)."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

WRK = shutil.which("wrk") or "/usr/bin/wrk"
MARK = "BENCH_JSON "

SCRIPT = """\
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{mark}{{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass
class WrkResult:
    rps: float
    requests: int
    errors: int  # connect, read, write, timeout and non-2xx/3xx answers
    p50_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def write_script(path: Path, body: str, headers: dict[str, str]) -> Path:
    lines = "\n".join(f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items())
    path.write_text(SCRIPT.format(body=body, headers=lines, mark=MARK))
    return path


def run(url: str, script: Path, *, connections: int, seconds: float, threads: int = 1) -> WrkResult:
    argv = [WRK, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
            "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    line = next((l for l in out.splitlines() if l.startswith(MARK)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    s = json.loads(line[len(MARK):])
    errors = s["connect"] + s["read"] + s["write"] + s["status"] + s["timeout"]
    return WrkResult(rps=s["requests"] / (s["duration_us"] / 1e6), requests=s["requests"], errors=errors,
                     p50_ms=s["p50_us"] / 1000.0, p99_ms=s["p99_us"] / 1000.0, max_ms=s["max_us"] / 1000.0)
