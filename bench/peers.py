"""The peers of one run and the upstreams they share, started and stopped together.

Upstreams (nginx with a fixed session JSON; the SSE server) run on the load CPU with the load
generator; each proxy under test (nginx, the gateways) runs on the proxy CPU. The gateways are
started per phase, pointed at the JSON upstream for the request axes and at the SSE upstream for
the stream axes; nginx routes both from one process.
"""

from __future__ import annotations

import sys
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from . import nginx
from .gateway import Chain, Gateway, shipped_chain
from .procs import LOAD_CPU, PROXY_CPU, Process, free_port, wait_for_port

SESSIONS_BODY = '{"user":"bench-user","workflow":{"id":"wf_bench"}}'  # relayed as is
MINT_BODY = '{"hosted_workflow_slug":"bench"}'  # the gateway's own session route


@dataclass
class Peer:
    name: str
    port: int
    session_path: str  # the relayed POST .../chatkit/sessions
    stream_path: str  # the relayed SSE stream
    process: Process | None = None  # the proxy under test; None for direct
    headers: dict[str, str] = field(default_factory=dict)
    chain: Chain | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def check(peer: Peer, path: str, body: str = SESSIONS_BODY) -> tuple[int, bytes]:
    """One request through the peer: its status and body."""
    request = urllib.request.Request(peer.url(path), data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json", **peer.headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Bench:
    """Everything one run starts: upstreams, nginx, and the gateways of the current phase."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.stack = ExitStack()
        self.json_port, self.sse_port, self.nginx_port = free_port(), free_port(), free_port()
        self.empty = Chain("empty", [])
        self.shipped = shipped_chain()
        self.gateways: list[Gateway] = []

    def __enter__(self) -> Bench:
        self.stack.__enter__()
        try:
            self._start(nginx.start_fixed_json(self.workdir / "nginx-json", self.json_port, cpu=LOAD_CPU),
                        self.json_port)
            self._start(Process("sse-upstream", [sys.executable, "-m", "bench.sse_upstream",
                                                 "--port", str(self.sse_port)],
                                cpu=LOAD_CPU, log=self.workdir / "sse-upstream.log",
                                cwd=str(Path(__file__).resolve().parent.parent)), self.sse_port)
            self.nginx = self._start(nginx.start_proxy(self.workdir / "nginx-proxy", self.nginx_port,
                                                       self.json_port, self.sse_port, cpu=PROXY_CPU),
                                     self.nginx_port)
        except BaseException:
            self.stack.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_gateways()
        self.stack.__exit__(*exc)

    def _start(self, process: Process, port: int) -> Process:
        self.stack.callback(process.stop)
        try:
            wait_for_port(port, process.popen)
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n{process.tail()}") from None
        return process

    @property
    def chains(self) -> list[Chain]:
        """The empty chain, and the shipped chain when it differs from it."""
        return [self.empty, self.shipped] if self.shipped.plugins else [self.empty]

    def start_gateways(self, phase: str) -> list[Peer]:
        """A fresh gateway per chain, pointed at the JSON ("requests") or the SSE ("streams") upstream."""
        self.stop_gateways()
        upstream = self.json_port if phase == "requests" else self.sse_port
        peers = []
        for chain in self.chains:
            gateway = Gateway(self.workdir / f"gateway-{chain.name}-{phase}", free_port(), upstream, chain)
            self.gateways.append(gateway)
            peers.append(Peer(f"gateway ({chain.name} chain)", gateway.port, "/api/chatkit/sessions",
                              "/api/chatkit/stream", gateway.process, dict(gateway.headers), chain))
        return peers

    def stop_gateways(self) -> None:
        while self.gateways:
            self.gateways.pop().stop()

    def direct(self, phase: str) -> Peer:
        port = self.json_port if phase == "requests" else self.sse_port
        return Peer("direct", port, "/v1/chatkit/sessions", "/v1/chatkit/stream")

    def naive_peer(self) -> Peer:
        """The naive aiohttp proxy (bench/naive_proxy.py) in front of the JSON upstream, for scale."""
        return self._scale_peer("naive aiohttp proxy", "aiohttp", "bench.naive_proxy", "--client", "aiohttp")

    def floor_peer(self) -> Peer:
        """aiohttp's server and the gateway's upstream client, no policy: the ceiling of this architecture."""
        return self._scale_peer("floor: aiohttp server + gateway client", "gateway", "bench.naive_proxy",
                                "--client", "gateway")

    def bare_peer(self) -> Peer:
        """The gateway's upstream client behind a bare httptools server: what aiohttp's server costs."""
        return self._scale_peer("bare: httptools server + gateway client", "bare", "bench.bare_proxy")

    def _scale_peer(self, name: str, tag: str, module: str, *options: str) -> Peer:
        """A policy-free proxy of bench/ (`module`) in front of the JSON upstream, on the proxy CPU."""
        port = free_port()
        process = self._start(Process(name, [sys.executable, "-m", module, "--port", str(port),
                                             "--upstream", f"http://127.0.0.1:{self.json_port}", *options],
                                      cpu=PROXY_CPU, log=self.workdir / f"proxy-{tag}.log",
                                      cwd=str(Path(__file__).resolve().parent.parent)), port)
        return Peer(name, port, "/api/chatkit/sessions", "", process)

    def nginx_peer(self) -> Peer:
        return Peer("nginx", self.nginx_port, "/api/chatkit/sessions", "/api/chatkit/stream", self.nginx)

    def peers(self, phase: str) -> list[Peer]:
        """direct, nginx, then the gateways (started fresh for this phase)."""
        return [self.direct(phase), self.nginx_peer(), *self.start_gateways(phase)]
