"""Small asyncio helpers for tests that run in-process aiohttp servers."""

from __future__ import annotations

import asyncio
import time
from typing import Any


async def wait_server_idle(server: Any, timeout: float = 5.0) -> None:
    """Wait until an aiohttp ``TestServer`` (or ``web.AppRunner``) has no open
    client connections.

    Await it after the client side closed and before the server is torn down.
    A TLS connection closed by the client (directly or through a CONNECT
    tunnel) finishes its close_notify exchange asynchronously; if the server
    shuts down first, asyncio can leave the server-side socket unclosed, which
    surfaces as a ResourceWarning (an error under filterwarnings=error) in a
    later test.
    """
    runner = getattr(server, "runner", server)
    web_server = getattr(runner, "server", None)
    if web_server is None:
        return
    deadline = time.monotonic() + timeout
    while web_server.connections:
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{len(web_server.connections)} connection(s) still open on the test server "
                f"after {timeout}s"
            )
        await asyncio.sleep(0.01)
    await asyncio.sleep(0)  # let the transports' close callbacks run
