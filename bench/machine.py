"""The machine a run was measured on."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "absent"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "unknown"


def facts() -> dict[str, str | int]:
    return {
        "nproc": os.cpu_count() or 0,
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": _version("aiohttp"),
        "uvloop": _version("uvloop"),
        "multidict": _version("multidict"),
        "yarl": _version("yarl"),
        "nginx": _first_line(["nginx", "-v"]).replace("nginx version: ", ""),
        "wrk": _first_line(["wrk", "-v"]).split(" [")[0],
    }
