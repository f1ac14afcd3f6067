"""Starting the gateway in tests: settings the way users write them, the app the way serve runs it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

from gateway.app import create_app
from gateway.settings import Settings, load_settings
from plugins import REGISTRY


def gateway_settings(tmp_path, upstream_base: str, api_key: str | None, *, config: str | None = None,
                     environ: Mapping[str, str] | None = None, **replace: Any) -> Settings:
    """Settings for a gateway in front of `upstream_base`, as load_settings builds them."""
    env = {"MODEL_API_BASE": upstream_base, "GATEWAY__STORAGE__PATH": str(tmp_path / "gateway.db")}
    if api_key is not None:
        env["OPENAI_API_KEY"] = api_key
    env.update(environ or {})
    path = None
    if config is not None:
        path = tmp_path / "config.yaml"
        path.write_text(config)
    settings = load_settings(path, env)
    return dataclasses.replace(settings, **replace) if replace else settings


async def start_gateway(aiohttp_client, settings: Settings, plugins: Mapping[str, type] = REGISTRY):
    """A test client for the app, served with handler cancellation as `serve` does."""
    app = create_app(settings, plugins)
    return await aiohttp_client(app, server_kwargs={"handler_cancellation": True})


async def raw_http(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes exactly as given (paths no client library would send) and read the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        await writer.wait_closed()
