"""A gateway for the hosted-workflow tests: config.yaml as users write it, the real auth plugin.

API keys for alice, bob (users) and root (admin) are written to the store before the gateway
starts, as `python -m gateway keys create` would. `Spy` records the workflow of each request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway import keys
from gateway.apikeys import hash_key, visible_prefix
from gateway.app import create_app
from gateway.settings import load_settings
from gateway.storage import Store
from plugins import REGISTRY

KEYS = {  # name -> (API key, is_admin); principals are "key:<name>"
    "alice": ("gk_alice-test-key-000000000000000000000000", False),
    "bob": ("gk_bob-test-key-00000000000000000000000000", False),
    "root": ("gk_root-test-key-0000000000000000000000000", True),
}
ALICE, BOB, ADMIN = ({"Authorization": f"Bearer {KEYS[name][0]}"} for name in ("alice", "bob", "root"))
DEFAULT_PLUGINS = "plugins:\n  - name: auth\n  - name: workflow\n  - name: spy\n"


SEEN = web.AppKey("test_seen_workflows", list)  # (path, workflow slug or None) per request, in order


class Spy:
    name: ClassVar[str] = "spy"
    after: ClassVar[tuple[str, ...]] = ("workflow",)

    def setup(self, app: web.Application) -> None:
        app[SEEN] = []

    async def __call__(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            entry = request.get(keys.workflow)
            request.app[SEEN].append((request.path, entry.slug if entry else None))


PLUGINS = {**REGISTRY, Spy.name: Spy}


@dataclass
class Gateway:
    """A started gateway and what a test needs to poke at it."""

    client: TestClient
    config: Path
    environ: dict[str, str] = field(default_factory=dict)

    @property
    def app(self) -> web.Application:
        return self.client.server.app

    @property
    def seen(self) -> list[tuple[str, str | None]]:
        return self.app[SEEN]

    async def call(self, method: str, path: str, who: Mapping[str, str] | None = None, **kwargs: Any) -> tuple[int, Any]:
        response = await self.client.request(method, path, headers={**(who or {}), **kwargs.pop("headers", {})},
                                             **kwargs)
        body = await response.json() if response.content_type == "application/json" else await response.text()
        return response.status, body

    async def session(self, who: Mapping[str, str] = ALICE, slug: str | None = None, **body: Any) -> tuple[int, Any]:
        if slug is not None:
            body["hosted_workflow_slug"] = slug
        return await self.call("POST", "/api/chatkit/session", who, json=body)

    async def create(self, **entry: Any) -> tuple[int, Any]:
        return await self.call("POST", "/api/chatkit/hosted", ADMIN, json=entry)

    async def listing(self, who: Mapping[str, str] = ADMIN) -> list[dict[str, Any]]:
        status, body = await self.call("GET", "/api/chatkit/hosted", who)
        assert status == 200, body
        return body

    async def settle(self) -> None:
        """Wait for the session records written behind the responses."""
        await self.app[keys.sessions].flush()


async def start(aiohttp_client: Any, tmp_path: Path, fake: Any, config: str = "", *,
                plugins: str = DEFAULT_PLUGINS, environ: Mapping[str, str] | None = None,
                api_key: str | None = "fake") -> Gateway:
    """A gateway in front of `fake`, built from `plugins` + `config` as a config.yaml."""
    env = {"MODEL_API_BASE": fake.base_url, "GATEWAY__STORAGE__PATH": str(tmp_path / "gateway.db")}
    if api_key is not None:
        env["OPENAI_API_KEY"] = fake.api_key if api_key == "fake" else api_key
    env.update(environ or {})
    path = tmp_path / "config.yaml"
    path.write_text(plugins + config)
    settings = load_settings(path, env)
    store = Store(settings.storage.path)
    await store.open()
    for name, (key, admin) in KEYS.items():
        await store.replace_key(name, visible_prefix(key), hash_key(key), admin)
    await store.close()
    app = create_app(settings, PLUGINS, env)
    return Gateway(await aiohttp_client(app), path, env)


async def eventually(condition: Any, timeout: float = 3.0) -> None:
    """Poll `condition` (sync or async) until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
