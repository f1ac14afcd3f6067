"""The plugin chain: config order, `after`, option validation, dotted-path plugins, the chunk hook."""

from __future__ import annotations

import json
import time
from typing import ClassVar

import pytest
from aiohttp import web

from gateway import errors
from gateway.app import create_app
from gateway.chain import Handler
from gateway.schema import ConfigError
from plugins import REGISTRY
from tests.harness import gateway_settings
from tests.plugin_helpers import captured_logs, gateway_with, new_session, plugins_yaml, stream_turn
from tests.plugins_thirdparty import SEEN

CALLS = web.AppKey("test_chain_calls", list)


class Recorder:
    """Records when it runs, around the handler."""

    name: ClassVar[str] = "recorder"
    after: ClassVar[tuple[str, ...]] = ()

    def setup(self, app: web.Application) -> None:
        app.setdefault(CALLS, [])

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request.app[CALLS].append(f"{self.name} before")
        response = await handler(request)
        request.app[CALLS].append(f"{self.name} after {response.status}")
        return response


class Outer(Recorder):
    name = "outer"


class Inner(Recorder):
    name = "inner"


class Refuser(Recorder):
    """Answers locally, as a plugin does: by raising a GatewayError."""

    name = "refuser"

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raise errors.Forbidden("refused by the test plugin")


class NeedsAuth(Recorder):
    name = "needs_auth"
    after = ("auth",)


TEST_PLUGINS = {**REGISTRY, "outer": Outer, "inner": Inner, "refuser": Refuser, "needs_auth": NeedsAuth}


def settings_for(tmp_path, *plugins, environ=None):
    return gateway_settings(tmp_path, "http://127.0.0.1:9", "sk-test", config=plugins_yaml(*plugins), environ=environ)


async def test_plugins_run_in_config_order_outermost_first(aiohttp_client, tmp_path, fake_openai):
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, "outer", "inner", registry=TEST_PLUGINS)
    response = await gateway.get("/api/chatkit/threads")
    assert response.status == 200
    assert gateway.app[CALLS] == ["outer before", "inner before", "inner after 200", "outer after 200"]


async def test_a_plugin_answering_locally_is_seen_as_a_response_by_the_plugins_around_it(
        aiohttp_client, tmp_path, fake_openai):
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, "outer", "refuser", registry=TEST_PLUGINS)
    response = await gateway.get("/api/chatkit/threads")
    assert response.status == 403
    body = await response.json()
    assert body["error"] == "forbidden" and body["request_id"] == response.headers["X-Request-ID"]
    assert gateway.app[CALLS] == ["outer before", "outer after 403"]
    assert not fake_openai.requests


async def test_plugins_wrap_the_gateway_routes_only(aiohttp_client, tmp_path, fake_openai):
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, "outer", "metrics", "auth",
                                 registry=TEST_PLUGINS)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await gateway.get(path)).status == 200, path
    assert gateway.app[CALLS] == []
    assert (await gateway.get("/api/chatkit/threads")).status == 401
    assert gateway.app[CALLS] == ["outer before", "outer after 401"]


@pytest.mark.parametrize(("plugins", "path", "reason"), [
    (["needs_auth", "auth"], "plugins[0]", "must be listed after 'auth'"),
    (["needs_auth"], "plugins[0]", "must be listed after 'auth'"),
    (["auth", "auth"], "plugins[1]", "listed twice"),
    (["nonsense"], "plugins[0].name", "unknown plugin 'nonsense'"),
    (["tests.nowhere.Plugin"], "plugins[0].name", "cannot load plugin"),
    ([{"name": "access_log", "level": "DEBUG"}], "plugins[0].level", "takes no options"),
    ([{"name": "metrics", "bogus": 1}], "plugins[0].bogus", "unknown key"),
    ([{"name": "metrics", "port": "ninety"}], "plugins[0].port", "expected an integer"),
    ([{"name": "metrics", "port": 70000}], "plugins[0].port", "expected 1-65535"),
    ([{"name": "metrics", "token": "written-in-the-file"}], "plugins[0].token", "{$env: NAME}"),
    ([{"name": "auth", "max_failures": 0}], "plugins[0].max_failures", "must be positive"),
    ([{"name": "auth", "admin_groups": "admins"}], "plugins[0].admin_groups", "expected a list"),
    ([{"name": "auth", "jwt": {"issuer": "i", "audience": "a"}}], "plugins[0].jwt.secret", "exactly one of"),
    ([{"name": "auth", "jwt": {"audience": "a", "secret": {"$env": "JWT_SECRET"}}}], "plugins[0].jwt.issuer",
     "is required"),
    ([{"name": "auth", "jwt": {"issuer": "i", "audience": "a", "jwks_file": "/nonexistent.json"}}],
     "plugins[0].jwt.jwks_file", "no such file"),
    ([{"name": "tests.plugins_thirdparty.StampHeader"}], "plugins[0].value", "is required"),
    ([{"name": "tests.plugins_thirdparty.StampHeader", "value": "v", "header": "X Bad"}], "plugins[0].header",
     "not a header name"),
])
def test_a_bad_plugin_list_fails_start_up_naming_the_key(tmp_path, plugins, path, reason):
    with pytest.raises(ConfigError) as caught:
        create_app(settings_for(tmp_path, *plugins, environ={"JWT_SECRET": "s" * 32}), TEST_PLUGINS)
    assert caught.value.path == path
    assert reason in caught.value.reason


def test_the_shipped_config_enables_access_log_metrics_auth_and_workflow_in_that_order():
    from pathlib import Path

    from gateway.settings import load_settings

    settings = load_settings(Path(__file__).resolve().parent.parent / "config.yaml", {})
    assert [spec.name for spec in settings.plugins] == ["access_log", "metrics", "auth", "workflow"]


async def test_a_third_party_plugin_named_by_dotted_path_works_like_a_built_in(aiohttp_client, tmp_path, fake_openai):
    stamp = {"name": "tests.plugins_thirdparty.StampHeader", "header": "X-Stamp", "value": "thirdparty"}
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, "access_log", stamp)
    with captured_logs() as logs:
        secret = await new_session(gateway)
        response, body = await stream_turn(gateway, secret)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["X-Stamp"] == "thirdparty"  # set before the stream's headers went out
    chunks, size = gateway.app[SEEN][-1]
    assert size == len(body) and chunks > 1  # it saw every chunk, as they went out one by one
    ended = [json.loads(line) for line in logs.getvalue().splitlines() if '"backend"' in line][-1]
    assert ended["bytes_out"] == len(body) and ended["events"] == body.count(b"\n\n")


async def test_a_third_party_plugin_stamps_locally_made_answers_too(aiohttp_client, tmp_path, fake_openai):
    stamp = {"name": "tests.plugins_thirdparty.StampHeader", "value": "v1"}
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, stamp, "auth")
    response = await gateway.get("/api/chatkit/threads")
    assert response.status == 401 and response.headers["X-Stamp"] == "v1"
    assert "X-Stamp" not in (await gateway.get("/healthz")).headers


async def test_chunk_observers_do_not_hold_chunks_back(aiohttp_client, tmp_path, fake_openai):
    stamp = {"name": "tests.plugins_thirdparty.StampHeader", "value": "v"}
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, "access_log", "metrics", stamp)
    secret = await new_session(gateway)
    arrivals = []
    async with gateway.post("/api/chatkit/conversation", headers={"Authorization": f"Bearer {secret}"},
                            json={"type": "threads.create", "params": {"input": {
                                "content": [{"type": "input_text", "text": "one two three four five"}],
                                "attachments": [], "inference_options": {}}}}) as response:
        async for _ in response.content.iter_any():
            arrivals.append(time.perf_counter())
    # The fake sends a frame every 20 ms: buffered, they would arrive in one or two reads.
    assert len(arrivals) >= 6
    assert arrivals[-1] - arrivals[0] >= 0.1
