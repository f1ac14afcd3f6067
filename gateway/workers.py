"""Several workers on one port: `server.workers: N` runs N processes that each bind the port with
SO_REUSEPORT, so the kernel spreads new connections among them.

The supervisor (this module, in the process that ran `serve`) prepares what the workers share:
the SQLite database is migrated once here, before any worker opens it (WAL lets them all use it),
and a fresh PROMETHEUS_MULTIPROC_DIR holds every worker's metrics so /metrics adds them up. It holds
the port bound (never listening) so a foreign process cannot take it between two workers, starts
the workers, replaces any that dies, and on SIGTERM or SIGINT stops them all gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import multiprocess

from .settings import Settings
from .storage import Store

log = logging.getLogger("chatkit_gateway.workers")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
QUICK_DEATH_SECONDS = 1.0  # a worker that dies this young is restarted after this long, not at once
KILL_GRACE_SECONDS = 5.0  # on top of drain_seconds, before a worker that will not stop is killed
PR_SET_PDEATHSIG = 1


def serve_workers(settings: Settings, target: Callable[..., Any], *args: Any) -> int:
    """Run `target(*args)` in `server.workers` processes until SIGTERM or SIGINT; returns the exit status."""
    server = settings.server
    try:
        held = hold_port(server.host, server.port)
    except OSError as exc:
        log.error("cannot bind %s:%d: %s", server.host, server.port, exc.strerror or exc)
        return 1
    with held, shared_metrics_dir():
        asyncio.run(migrate(settings.storage.path))
        supervisor = Supervisor(server.workers, target, args, stop_timeout=server.drain_seconds + KILL_GRACE_SECONDS)
        return supervisor.run()


def hold_port(host: str, port: int) -> socket.socket:
    """Bind the workers' port without listening: it stays ours, yet receives no connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def shared_metrics_dir() -> Iterator[str]:
    """A fresh multiprocess metrics directory for this run (stale files would corrupt the totals)."""
    path = tempfile.mkdtemp(prefix="chatkit-gateway-metrics-")
    os.environ[MULTIPROC_ENV] = path  # workers inherit it, so prometheus_client starts in multiprocess mode
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


async def migrate(path: str) -> None:
    """Create or migrate the database once, so that workers starting together never race to do it."""
    store = Store(path)
    await store.open()
    await store.close()


def worker_main(supervisor_pid: int, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """A worker process: die with the supervisor, leave Ctrl-C to it, then serve."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor_pid:
        sys.exit(1)  # the supervisor died before the line above took effect
    os.setpgrp()  # a terminal's Ctrl-C reaches the supervisor only, which stops the workers once
    sys.exit(target(*args))


@dataclass
class Worker:
    slot: int
    process: multiprocessing.process.BaseProcess
    started_at: float


class Supervisor:
    def __init__(self, count: int, target: Callable[..., Any], args: tuple[Any, ...], *,
                 stop_timeout: float) -> None:
        self.count = count
        self.target = target
        self.args = args
        self.stop_timeout = stop_timeout
        self.context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited loop or threads
        self.workers: dict[int, Worker] = {}
        self.restarts: dict[int, float] = {}  # slot -> when to start its replacement

    def run(self) -> int:
        with StopSignals() as wakeup:
            for slot in range(self.count):
                self.start(slot)
            while not wakeup.stopping:
                self.wait(wakeup.fileno())
                wakeup.drain()
                self.replace_dead()
            log.info("stopping %d workers (signal %s)", len(self.workers), wakeup.stopping[0])
            self.stop_all()
        return 0

    def start(self, slot: int) -> None:
        process = self.context.Process(target=worker_main, args=(os.getpid(), self.target, self.args),
                                       name=f"chatkit-gateway-worker-{slot}")
        process.start()
        self.workers[slot] = Worker(slot, process, time.monotonic())
        log.info("worker %d started (pid %d)", slot, process.pid)

    def wait(self, wakeup_fd: int) -> None:
        timeout = None
        if self.restarts:
            timeout = max(0.0, min(self.restarts.values()) - time.monotonic())
        sentinels = [worker.process.sentinel for worker in self.workers.values()]
        multiprocessing.connection.wait([wakeup_fd, *sentinels], timeout)

    def replace_dead(self) -> None:
        now = time.monotonic()
        for slot, worker in list(self.workers.items()):
            if worker.process.is_alive():
                continue
            del self.workers[slot]
            pid, code = worker.process.pid, worker.process.exitcode
            worker.process.close()
            multiprocess.mark_process_dead(pid)
            quick = now - worker.started_at < QUICK_DEATH_SECONDS
            log.error("worker %d (pid %d) exited with %s; %s", slot, pid, describe_exit(code),
                      "restarting it in 1 s" if quick else "restarting it")
            self.restarts[slot] = now + (QUICK_DEATH_SECONDS if quick else 0.0)
        for slot, due in list(self.restarts.items()):
            if due <= now:
                del self.restarts[slot]
                self.start(slot)

    def stop_all(self) -> None:
        processes = [worker.process for worker in self.workers.values()]
        for process in processes:
            process.terminate()  # SIGTERM: each worker drains its streams for drain_seconds
        deadline = time.monotonic() + self.stop_timeout
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker pid %d did not stop in time; killing it", process.pid)
                process.kill()
                process.join()
        self.workers.clear()


def describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"status {code}"


class StopSignals:
    """SIGTERM and SIGINT, noted, and made readable on a file descriptor so the wait loop wakes up."""

    def __init__(self) -> None:
        self.stopping: list[str] = []
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)
        self._previous: dict[int, Any] = {}
        self._previous_fd = -1

    def __enter__(self) -> StopSignals:
        self._previous = {signum: signal.signal(signum, self.note) for signum in (signal.SIGTERM, signal.SIGINT)}
        self._previous_fd = signal.set_wakeup_fd(self._write)
        return self

    def __exit__(self, *exc_info: object) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        os.close(self._read)
        os.close(self._write)

    def fileno(self) -> int:
        return self._read

    def note(self, signum: int, frame: Any) -> None:
        self.stopping.append(signal.Signals(signum).name)

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 512):
                pass
