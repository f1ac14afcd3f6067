"""Helpers for the plugin chain's tests: a gateway with some plugins, sessions and streams, captured logs."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from gateway.logs import configure_logging
from tests.harness import gateway_settings, start_gateway

ACCESS_FIELDS = frozenset({
    "ts", "level", "msg", "request_id", "method", "route", "path", "status", "duration_ms", "upstream_ms",
    "ttfb_ms", "bytes_in", "bytes_out", "events", "principal", "workflow", "client_ip", "upstream_status", "error",
})
KEY = "gk_" + "k" * 40  # a well-formed API key, used as the bootstrap admin key in tests


def plugins_yaml(*plugins: str | Mapping[str, Any]) -> str:
    """`plugins:` as config.yaml writes it: names, or mappings of a name and its options."""
    return "plugins: " + json.dumps([p if isinstance(p, str) else dict(p) for p in plugins]) + "\n"


async def gateway_with(aiohttp_client, tmp_path, fake, *plugins: str | Mapping[str, Any],
                       environ: Mapping[str, str] | None = None, extra_yaml: str = "", registry=None,
                       base_url: str | None = None):
    """A started gateway in front of `fake` (or `base_url`) with these plugins, as config.yaml would list them."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    settings = gateway_settings(tmp_path, base_url or fake.base_url, fake.api_key,
                                config=plugins_yaml(*plugins) + extra_yaml, environ=environ)
    if registry is None:
        return await start_gateway(aiohttp_client, settings)
    return await start_gateway(aiohttp_client, settings, registry)


def turn(text: str) -> dict[str, Any]:
    return {"type": "threads.create", "params": {"input": {
        "content": [{"type": "input_text", "text": text}], "attachments": [], "inference_options": {}}}}


async def new_session(client, headers: Mapping[str, str] | None = None, workflow: str = "wf_abc") -> str:
    """A ChatKit client secret minted through the gateway's relay."""
    response = await client.post("/api/chatkit/sessions", json={"user": "u1", "workflow": {"id": workflow}},
                                 headers=dict(headers or {}))
    assert response.status == 200, await response.text()
    return (await response.json())["client_secret"]


async def stream_turn(client, secret: str, text: str = "hello there") -> tuple[Any, bytes]:
    """One streamed turn on /conversation: (the response, every byte of its body)."""
    async with client.post("/api/chatkit/conversation", json=turn(text),
                           headers={"Authorization": f"Bearer {secret}"}) as response:
        body = await response.read()
    return response, body


@contextlib.contextmanager
def captured_logs(fmt: str = "json", level: str = "INFO") -> Iterator[io.StringIO]:
    """Every log line, formatted and redacted as `serve` does, into a string buffer."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging(level, fmt, stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def access_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [line for line in json_lines(stream) if line["logger"] == "backend"]
