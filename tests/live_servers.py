"""Real programs for the deployment tests: the gateway as `python -m gateway serve`, nginx with
deploy/nginx.conf, and Prometheus with deploy/prometheus.yml, each on a free port of 127.0.0.1.

A missing nginx or prometheus fails the test (never skips it). Every process is stopped on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
NGINX = "/usr/sbin/nginx"
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
STOP_TIMEOUT = 10.0


def require_program(path: str) -> str:
    """The program's path; a test that needs a missing one fails, saying how to install it."""
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run `bash scripts/install-test-deps.sh` (or `make test-deps`)",
                    pytrace=False)
    return path


def clean_environ(extra: Mapping[str, str]) -> dict[str, str]:
    """This environment without proxies or gateway settings of the machine running the tests."""
    dropped = re.compile(r"(?i)(https?|all|no)_proxy|GATEWAY__.*|GATEWAY_CONFIG|PROMETHEUS_MULTIPROC_DIR")
    return {**{k: v for k, v in os.environ.items() if not dropped.fullmatch(k)}, **extra}


async def wait_until(probe, what: str, timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Await `probe()` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


async def answers(url: str) -> bool:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as client:
            async with client.get(url) as response:
                return response.status < 500
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return False


async def wait_answering(process: subprocess.Popen, url: str, what: str, log_path: Path) -> None:
    """Wait until `url` answers; fail with the process's log if it exits first."""
    async def probe() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}:\n{log_path.read_text()}")
        return await answers(url)

    await wait_until(probe, f"{what} to answer {url}")


async def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    if process.poll() is None:
        process.kill()
        process.wait()


# ---------------------------------------------------------------- the gateway


@dataclass
class GatewayProcess:
    process: subprocess.Popen
    port: int
    log_path: Path
    config_path: Path
    environ: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
        return lines


@contextlib.asynccontextmanager
async def running_gateway(workdir: Path, upstream_base: str, api_key: str, *, config: str = "plugins: []\n",
                          environ: Mapping[str, str] | None = None) -> AsyncIterator[GatewayProcess]:
    """`python -m gateway serve --config …` in front of `upstream_base`, started and answering /healthz."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config_path = workdir / "config.yaml"
    config_path.write_text(config)
    env = clean_environ({"MODEL_API_BASE": upstream_base, "OPENAI_API_KEY": api_key,
                         "GATEWAY__SERVER__PORT": str(port), "GATEWAY__SERVER__DRAIN_SECONDS": "1",
                         "GATEWAY__STORAGE__PATH": str(workdir / "gateway.db"), **(environ or {})})
    log_path = workdir / "gateway.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config_path)],
                                   cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    gateway = GatewayProcess(process, port, log_path, config_path, env)
    try:
        await wait_answering(process, gateway.url + "/healthz", "the gateway", log_path)
        yield gateway
    finally:
        await stop_process(process)


# ---------------------------------------------------------------- nginx


def replace_directive(conf: str, name: str, replacement: str) -> str:
    """`conf` with its one `name …;` directive replaced by `replacement` (one or more directives)."""
    pattern = re.compile(rf"^(?P<indent>[ \t]*){re.escape(name)}\s[^;]*;", re.MULTILINE)
    found = len(pattern.findall(conf))
    if found != 1:
        raise AssertionError(f"deploy/nginx.conf has {found} `{name}` directives, expected one")
    return pattern.sub(lambda match: match.group("indent") + replacement, conf)


@dataclass
class Nginx:
    process: subprocess.Popen
    port: int
    prefix: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_log(self) -> list[dict[str, Any]]:
        lines = (self.prefix / "access.log").read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@contextlib.asynccontextmanager
async def running_nginx(prefix: Path, gateway_port: int, *, allow: Iterable[str] = ("127.0.0.1",),
                        directives: Mapping[str, str] | None = None) -> AsyncIterator[Nginx]:
    """deploy/nginx.conf from a temporary prefix, in front of the gateway on 127.0.0.1:`gateway_port`.

    The site/ files say what docker-compose's say differently; `directives` replaces single directives
    of the shipped file (a shorter read timeout, buffering switched on) and nothing else.
    """
    nginx = require_program(NGINX)
    site = prefix / "site"
    site.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (site / "listen.conf").write_text(f"listen 127.0.0.1:{port};\n")
    (site / "gateway.conf").write_text(f"server 127.0.0.1:{gateway_port};\n")
    (site / "allow.conf").write_text("".join(f"allow {address};\n" for address in allow))
    conf = (DEPLOY / "nginx.conf").read_text()
    for name, replacement in (directives or {}).items():
        conf = replace_directive(conf, name, replacement)
    (prefix / "nginx.conf").write_text(conf)
    with (prefix / "access.log").open("w") as access_log, (prefix / "error.log").open("w") as error_log:
        process = subprocess.Popen(
            [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr",
             "-g", f"daemon off; pid {prefix / 'nginx.pid'};"],
            stdout=access_log, stderr=error_log)
    server = Nginx(process, port, prefix)
    try:
        async def started() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"nginx exited with {process.returncode}:\n"
                                     + (prefix / "error.log").read_text())
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            writer.close()
            await writer.wait_closed()
            return True

        await wait_until(started, "nginx to listen")
        yield server
    finally:
        await stop_process(process, signal.SIGQUIT)  # graceful: let workers finish and exit


# ---------------------------------------------------------------- prometheus


@dataclass
class Prometheus:
    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def api(self, path: str, **params: str) -> Any:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
            async with client.get(self.url + path, params=params) as response:
                body = await response.json()
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, expression: str) -> list[dict[str, Any]]:
        return (await self.api("/api/v1/query", query=expression))["result"]


@contextlib.asynccontextmanager
async def running_prometheus(workdir: Path, targets: Iterable[str], *,
                             interval: str = "1s") -> AsyncIterator[Prometheus]:
    """Prometheus with deploy/prometheus.yml, its targets and intervals changed, its rules as shipped."""
    prometheus = require_program(PROMETHEUS)
    workdir.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    config["rule_files"] = [str(DEPLOY / name) for name in config["rule_files"]]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": list(targets)}]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (workdir / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [prometheus, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
    server = Prometheus(process, port)
    try:
        await wait_answering(process, server.url + "/-/ready", "prometheus", workdir / "prometheus.log")
        yield server
    finally:
        await stop_process(process)
