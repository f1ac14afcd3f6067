"""Processes: start them pinned to a CPU, wait for their port, read their CPU time and memory, stop them."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

LOAD_CPU = 0  # the load generator and the upstreams
PROXY_CPU = 1  # the proxy under test
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def pin_self(cpu: int = LOAD_CPU) -> None:
    """Pin this process (the load generator) to `cpu`; children inherit it unless started pinned elsewhere."""
    os.sched_setaffinity(0, {cpu})


def pin(pid: int | None, cpu: int) -> None:
    """Move every thread of a running process to `cpu`."""
    if pid is None:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {cpu})


def raise_open_files(wanted: int = 65536) -> int:
    """Raise RLIMIT_NOFILE as far as the hard limit allows (children inherit it); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


class Process:
    """A child process pinned to one CPU, its output in a log file; stopped for sure by stop()."""

    def __init__(self, name: str, argv: Sequence[str], *, cpu: int, log: Path,
                 env: Mapping[str, str] | None = None, cwd: str | None = None) -> None:
        self.name = name
        self.log_path = log
        self._log = open(log, "ab")
        self.popen = subprocess.Popen(
            ["taskset", "-c", str(cpu), *argv], stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=dict(env) if env is not None else None, cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid  # taskset execs the program, so this is the program's pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        self._log.close()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5)


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of `pid`, in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def reset_peak_rss(pid: int) -> None:
    """Reset VmHWM to the current RSS (proc(5): writing 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass
