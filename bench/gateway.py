"""The gateway under test: a temporary config, an API key when auth is in the chain, a real subprocess.

`python -m gateway serve --config <tmp>/config.yaml`, log level WARNING to a file, pinned to the
proxy CPU. The shipped chain is config.yaml's `plugins:`; while that list is empty, it is the chain
the issue names (access_log, metrics, auth, workflow), keeping those plugins that exist.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .procs import PROXY_CPU, Process, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
ISSUE_CHAIN = ("access_log", "metrics", "auth", "workflow")
UPSTREAM_KEY_ENV = "BENCH_UPSTREAM_KEY"
WORKFLOW = {"slug": "bench", "workflow_id": "wf_bench"}


@dataclass
class Chain:
    name: str  # "empty" or "shipped"
    plugins: list[dict[str, Any]]
    missing: list[str] = field(default_factory=list)  # plugins of the issue's chain that do not exist yet

    @property
    def names(self) -> list[str]:
        return [p["name"] for p in self.plugins]


def builtin_plugins() -> dict[str, type]:
    sys.path.insert(0, str(ROOT))
    from plugins import REGISTRY
    return dict(REGISTRY)


def shipped_chain() -> Chain:
    raw = yaml.safe_load((ROOT / "config.yaml").read_text()) or {}
    declared = [p if isinstance(p, dict) else {"name": p} for p in raw.get("plugins") or []]
    if declared:
        return Chain("shipped", declared)
    available = builtin_plugins()
    return Chain("shipped", [{"name": n} for n in ISSUE_CHAIN if n in available],
                 missing=[n for n in ISSUE_CHAIN if n not in available])


def write_config(directory: Path, port: int, upstream_port: int, chain: Chain) -> Path:
    config = {
        "server": {"host": "127.0.0.1", "port": port},
        "upstream": {"base": f"http://127.0.0.1:{upstream_port}", "api_key_env": UPSTREAM_KEY_ENV,
                     "max_connections": 0},  # 0 = no pool limit: 1,000 streams need 1,000 upstream connections
        "log": {"level": "INFO", "format": "json"},  # the default: one access line per request
        "storage": {"path": str(directory / "gateway.db")},
        "plugins": chain.plugins,
    }
    if (ROOT / "gateway" / "registry.py").exists():
        config["workflows"] = [WORKFLOW]
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def environment(directory: Path, admin_key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY") and not k.endswith("_PROXY")
           and k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    env[UPSTREAM_KEY_ENV] = "sk-bench-" + "0" * 32
    env["PYTHONPATH"] = str(ROOT)
    if admin_key:
        env["GATEWAY_ADMIN_API_KEY"] = admin_key
    return env


def create_api_key(config: Path, env: dict[str, str]) -> str | None:
    """`python -m gateway keys create --name bench --admin`, when that command exists; the key it prints."""
    # An admin key: a non-admin caller with the server key is kept to its own ChatKit user (403 on
    # the stream route, its /sessions body rewritten), which is not the relay this bench measures.
    done = subprocess.run([sys.executable, "-m", "gateway", "keys", "create", "--name", "bench", "--admin",
                           "--config", str(config)], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=60)
    if done.returncode != 0:
        return None
    tokens = re.findall(r"gk_[A-Za-z0-9_\-]{32,}", done.stdout)
    return tokens[-1] if tokens else None


class Gateway:
    """One gateway process for one chain and one upstream."""

    def __init__(self, directory: Path, port: int, upstream_port: int, chain: Chain) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.chain = chain
        self.port = port
        self.config = write_config(directory, port, upstream_port, chain)
        self.headers: dict[str, str] = {}
        self.key_source: str | None = None
        admin_key = None
        if "auth" in chain.names:
            env = environment(directory, None)
            key = create_api_key(self.config, env)
            self.key_source = "python -m gateway keys create" if key else "GATEWAY_ADMIN_API_KEY"
            if key is None:
                key = admin_key = "gk_" + secrets.token_urlsafe(32)  # the bootstrap admin key
            self.headers["Authorization"] = "Bearer " + key
        self.env = environment(directory, admin_key)
        self.process = Process(f"gateway-{chain.name}",
                               [sys.executable, "-m", "gateway", "serve", "--config", str(self.config)],
                               cpu=PROXY_CPU, log=directory / "gateway.log", env=self.env, cwd=str(ROOT))
        try:
            wait_for_port(port, self.process.popen, timeout=30)
        except RuntimeError:
            self.process.stop()
            raise RuntimeError(f"gateway did not start:\n{self.process.tail()}") from None

    def stop(self) -> None:
        self.process.stop()
