"""/healthz (the process is alive) and /readyz (it can serve: each check listed)."""

from __future__ import annotations

import os

from aiohttp import web

from . import keys


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    checks = {name: check() for name, check in app[keys.readiness_checks].items()}
    if app[keys.lifecycle].shutting_down:
        checks["shutting_down"] = (False, "the gateway is draining and will stop")
    ready = all(ok for ok, _ in checks.values())
    body = {
        "status": "ready" if ready else "not_ready",
        "checks": {name: {"ok": ok, "detail": detail} for name, (ok, detail) in checks.items()},
        "pid": os.getpid(),  # which worker answered, when server.workers > 1
    }
    return web.json_response(body, status=200 if ready else 503)
