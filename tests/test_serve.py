"""`python -m gateway serve` as a real process: its start-up line, debug connection lines, SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import pytest

from gateway import keys
from tests.harness import gateway_settings, start_gateway
from tests.live_servers import running_gateway, wait_until

KEY = "sk-serve-test-secret-value-4242"


def serve(tmp_path, fake, level: str = "INFO"):
    fake.api_key = KEY
    return running_gateway(tmp_path / "gw", fake.base_url, KEY, config=f"log:\n  level: {level}\n")


async def test_startup_logs_one_line_with_the_upstream_and_the_proxy_never_the_key(tmp_path, fake_openai):
    async with serve(tmp_path, fake_openai) as served:
        started = [line for line in served.log_lines() if line["msg"].startswith("ChatKit gateway up")]
        assert len(started) == 1
        assert fake_openai.base_url in started[0]["msg"] and started[0]["proxy"] == "direct"
        assert started[0]["key_fingerprint"] == "…4242"
        assert KEY not in served.log_path.read_text()


async def test_debug_logs_each_new_upstream_connection_like_the_seed(tmp_path, fake_openai):
    async with serve(tmp_path, fake_openai, level="DEBUG") as served:
        async with aiohttp.ClientSession() as client:
            async with client.get(served.url + "/api/chatkit/threads") as response:
                assert response.status == 200
        await asyncio.sleep(0.2)
        connects = [line for line in served.log_lines() if line["msg"].startswith("connect_tcp.started")]
        assert connects and connects[0]["host"] == "127.0.0.1" and connects[0]["proxy"] == "direct"
        assert "host='127.0.0.1'" in connects[0]["msg"]
        assert KEY not in served.log_path.read_text()


async def test_sigterm_lets_a_stream_drain_then_closes_it_at_the_deadline(tmp_path, fake_openai):
    async with serve(tmp_path, fake_openai) as served:  # drain_seconds is 1 there
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
        assert await wait_until(lambda: exited(served.process), "the gateway to exit", timeout=10) == "exit 0"
        assert time.monotonic() - signalled < 5  # drain_seconds is 1; the stream would take 6 s


async def exited(process) -> str | None:
    return None if process.poll() is None else f"exit {process.returncode}"


async def test_readyz_turns_503_once_shutdown_begins(aiohttp_client, fake_openai, tmp_path):
    gateway = await start_gateway(aiohttp_client, gateway_settings(tmp_path, fake_openai.base_url, KEY))
    assert (await gateway.get("/readyz")).status == 200
    await gateway.app.shutdown()
    response = await gateway.get("/readyz")
    assert response.status == 503
    assert (await response.json())["checks"]["shutting_down"]["ok"] is False
    assert gateway.app[keys.lifecycle].shutting_down
