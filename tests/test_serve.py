"""`python -m gateway serve` as a real process: its start-up line, debug connection lines, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from gateway import keys
from tests.harness import gateway_settings, start_gateway
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-serve-test-secret-value-4242"


class ServedGateway:
    def __init__(self, process: asyncio.subprocess.Process, port: int, log_path: Path) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.lines() if line.startswith("{")]


async def serve(tmp_path, upstream_base: str, *, level="INFO", extra_yaml="") -> ServedGateway:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"server:\n  port: {port}\n  drain_seconds: 1\nlog:\n  level: {level}\n{extra_yaml}")
    log_path = tmp_path / "gateway.log"
    env = {**os.environ, "MODEL_API_BASE": upstream_base, "OPENAI_API_KEY": KEY,
           "GATEWAY__STORAGE__PATH": str(tmp_path / "gw.db")}
    with log_path.open("w") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "serve", "--config", str(config), cwd=ROOT, env=env,
            stdout=log_file, stderr=asyncio.subprocess.STDOUT)
    served = ServedGateway(process, port, log_path)
    deadline = time.monotonic() + 15
    async with aiohttp.ClientSession() as client:
        while time.monotonic() < deadline:
            try:
                async with client.get(served.url + "/healthz") as response:
                    if response.status == 200:
                        return served
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
    process.kill()
    await process.wait()
    raise AssertionError("the gateway did not start:\n" + log_path.read_text())


async def stop(served: ServedGateway) -> None:
    if served.process.returncode is None:
        served.process.kill()
        await served.process.wait()


async def test_startup_logs_one_line_with_the_upstream_and_the_proxy_never_the_key(tmp_path, fake_openai):
    fake_openai.api_key = KEY
    served = await serve(tmp_path, fake_openai.base_url)
    try:
        started = [line for line in served.json_lines() if line["msg"].startswith("ChatKit gateway up")]
        assert len(started) == 1
        assert fake_openai.base_url in started[0]["msg"] and started[0]["proxy"] == "direct"
        assert started[0]["key_fingerprint"] == "…4242"
        assert KEY not in served.log_path.read_text()
    finally:
        await stop(served)


async def test_debug_logs_each_new_upstream_connection_like_the_seed(tmp_path, fake_openai):
    fake_openai.api_key = KEY
    served = await serve(tmp_path, fake_openai.base_url, level="DEBUG")
    try:
        async with aiohttp.ClientSession() as client:
            async with client.get(served.url + "/api/chatkit/threads") as response:
                assert response.status == 200
        await asyncio.sleep(0.2)
        connects = [line for line in served.json_lines() if line["msg"].startswith("connect_tcp.started")]
        assert connects and connects[0]["host"] == "127.0.0.1" and connects[0]["proxy"] == "direct"
        assert "host='127.0.0.1'" in connects[0]["msg"]
        assert KEY not in served.log_path.read_text()
    finally:
        await stop(served)


async def test_sigterm_lets_a_stream_drain_then_closes_it_at_the_deadline(tmp_path, fake_openai):
    fake_openai.api_key = KEY
    served = await serve(tmp_path, fake_openai.base_url)
    try:
        async with aiohttp.ClientSession() as client:
            async with client.post(served.url + "/api/chatkit/sessions",
                                   json={"user": "u", "workflow": {"id": "wf_drain"}}) as response:
                secret = (await response.json())["client_secret"]
            async with client.post(served.url + "/api/chatkit/conversation",
                                   headers={"Authorization": f"Bearer {secret}"},
                                   json={"type": "threads.create", "params": {"input": {
                                       "content": [{"type": "input_text", "text": "!!slow"}],
                                       "attachments": [], "inference_options": {}}}}) as stream:
                await stream.content.readany()
                served.process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                received_after = 0
                with pytest.raises(aiohttp.ClientPayloadError):
                    async for _ in stream.content.iter_any():
                        received_after += 1
        assert received_after >= 1, "in-flight stream kept flowing during the drain"
        code = await asyncio.wait_for(served.process.wait(), 10)
        assert code == 0
        assert time.monotonic() - signalled < 5  # drain_seconds is 1; the stream would take 6 s
    finally:
        await stop(served)


async def test_readyz_turns_503_once_shutdown_begins(aiohttp_client, fake_openai, tmp_path):
    gateway = await start_gateway(aiohttp_client, gateway_settings(tmp_path, fake_openai.base_url, KEY))
    assert (await gateway.get("/readyz")).status == 200
    await gateway.app.shutdown()
    response = await gateway.get("/readyz")
    assert response.status == 503
    assert (await response.json())["checks"]["shutting_down"]["ok"] is False
    assert gateway.app[keys.lifecycle].shutting_down
