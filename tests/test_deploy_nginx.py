"""deploy/nginx.conf in front of a real `python -m gateway serve`: streams pass event by event, idle
streams survive on heartbeats, request ids, client addresses and body limits carry through."""

from __future__ import annotations

import asyncio
import json
import re
import time

import aiohttp
import pytest

from gateway.settings import ServerSettings
from tests.live_servers import DEPLOY, running_gateway, running_nginx
from tests.support.ports import reserve_refusing_port

pytestmark = pytest.mark.integration

CONFIG = """\
server:
  heartbeat_seconds: 0.5
  trusted_proxies: [127.0.0.1/32, 127.0.0.2/32]  # nginx, and a load balancer in front of it
plugins: [access_log, metrics]
"""
CLIENT = "127.0.0.3"  # an ordinary client: loopback, yet not a trusted proxy
LOAD_BALANCER = "127.0.0.2"


@pytest.fixture
async def gateway(tmp_path, fake_openai):
    async with running_gateway(tmp_path / "gateway", fake_openai.base_url, fake_openai.api_key,
                               config=CONFIG) as gateway:
        yield gateway


@pytest.fixture
async def nginx(tmp_path, gateway):
    async with running_nginx(tmp_path / "nginx", gateway.port) as nginx:
        yield nginx


def client_from(address: str = "127.0.0.1", **kwargs) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0), force_close=True),
                                 **kwargs)


def turn(text: str) -> dict:
    return {"type": "threads.create", "params": {"input": {
        "content": [{"type": "input_text", "text": text}], "attachments": [], "inference_options": {}}}}


async def client_secret(client: aiohttp.ClientSession, base: str) -> str:
    async with client.post(base + "/api/chatkit/sessions", json={"user": "u1", "workflow": {"id": "wf_abc"}}) as r:
        assert r.status == 200, await r.text()
        return (await r.json())["client_secret"]


async def read_frames(response: aiohttp.ClientResponse, started: float) -> list[tuple[float, bytes]]:
    """Each SSE frame (events and comments) with the time it arrived."""
    frames, buffer = [], b""
    async for chunk in response.content.iter_any():
        buffer += chunk
        while b"\n\n" in buffer:
            frame, buffer = buffer.split(b"\n\n", 1)
            frames.append((time.monotonic() - started, frame))
    return frames


def events(frames: list[tuple[float, bytes]]) -> list[tuple[float, dict]]:
    return [(at, json.loads(frame.removeprefix(b"data: "))) for at, frame in frames if frame.startswith(b"data: ")]


async def test_sse_through_nginx_arrives_event_by_event(nginx, fake_openai):
    fake_openai.frame_delay = 0.05
    async with client_from() as client:
        secret = await client_secret(client, nginx.url)
        started = time.monotonic()
        async with client.post(nginx.url + "/api/chatkit/conversation", json=turn("hello through nginx"),
                               headers={"Authorization": f"Bearer {secret}"}) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            arrived = events(await read_frames(response, started))
    assert [event["type"] for _, event in arrived][::len(arrived) - 1] == ["thread.created", "thread.updated"]
    gaps = [later - earlier for (earlier, _), (later, _) in zip(arrived, arrived[1:])]
    # The fake sends a frame every 50 ms: behind a buffering nginx they would arrive at once, at the end.
    assert sum(gap >= 0.025 for gap in gaps) >= len(gaps) - 1, gaps
    assert arrived[0][0] < 0.5 and arrived[-1][0] - arrived[0][0] >= 0.05 * (len(arrived) - 1) * 0.8


async def test_a_stream_silent_for_5_s_survives_a_2_s_nginx_read_timeout_on_heartbeats(tmp_path, gateway,
                                                                                      fake_openai):
    async with running_nginx(tmp_path / "nginx", gateway.port,
                             directives={"proxy_read_timeout": "proxy_read_timeout 2s;"}) as nginx, \
            client_from() as client:
        secret = await client_secret(client, nginx.url)
        started = time.monotonic()
        async with client.post(nginx.url + "/api/chatkit/conversation", json=turn("!!silent"),
                               headers={"Authorization": f"Bearer {secret}"}) as response:
            frames = await read_frames(response, started)
    heartbeats = [at for at, frame in frames if frame == b": keep-alive"]
    arrived = events(frames)
    assert arrived[-1][1]["type"] == "thread.updated"  # the whole turn, after 5 s of upstream silence
    assert arrived[-1][0] >= 5.0
    assert len(heartbeats) >= 8
    assert max(b - a for a, b in zip(heartbeats, heartbeats[1:])) < 1.0


async def test_without_heartbeats_the_same_nginx_cuts_the_silent_stream(tmp_path, fake_openai):
    async with running_gateway(tmp_path / "gateway", fake_openai.base_url, fake_openai.api_key, config=CONFIG,
                               environ={"GATEWAY__SERVER__HEARTBEAT_SECONDS": "0"}) as gateway, \
            running_nginx(tmp_path / "nginx", gateway.port,
                          directives={"proxy_read_timeout": "proxy_read_timeout 2s;"}) as nginx, \
            client_from() as client:
        secret = await client_secret(client, nginx.url)
        started = time.monotonic()
        async with client.post(nginx.url + "/api/chatkit/conversation", json=turn("!!silent"),
                               headers={"Authorization": f"Bearer {secret}"}) as response:
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        assert 1.9 < time.monotonic() - started < 4.0


async def test_nginx_request_id_is_the_one_the_gateway_logs_and_sends_upstream(nginx, gateway, fake_openai):
    async with client_from() as client:
        async with client.get(nginx.url + "/api/chatkit/threads") as response:
            assert response.status == 200
            request_id = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)  # nginx's $request_id
    await asyncio.sleep(0.2)  # nginx writes its access log line after the response
    assert [line["request_id"] for line in nginx.access_log()] == [request_id]
    access = [line for line in gateway.log_lines() if line.get("logger") == "backend"]
    assert [(line["request_id"], line["route"]) for line in access] == [(request_id, "/api/chatkit/threads")]
    assert fake_openai.requests_to("/v1/chatkit/threads")[-1].headers["x-request-id"] == request_id


async def test_the_client_address_comes_from_x_forwarded_for_only_through_trusted_proxies(nginx, gateway,
                                                                                        fake_openai):
    async def upstream_saw(client: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> dict[str, str]:
        async with client.get(url + "/api/chatkit/threads", headers=headers) as response:
            assert response.status == 200
        return fake_openai.requests_to("/v1/chatkit/threads")[-1].headers

    spoofed = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    async with client_from(CLIENT) as client:
        through_nginx = await upstream_saw(client, nginx.url, spoofed)
        direct = await upstream_saw(client, gateway.url, spoofed)
    async with client_from(LOAD_BALANCER) as load_balancer:
        behind_balancer = await upstream_saw(load_balancer, nginx.url, {"X-Forwarded-For": "198.51.100.7"})
    # nginx appends the client's address; the gateway takes the rightmost hop it does not trust.
    assert through_nginx["x-forwarded-for"] == CLIENT
    assert through_nginx["x-forwarded-proto"] == "http"  # nginx's own $scheme, not the client's claim
    # Straight from an untrusted peer, X-Forwarded-* count for nothing.
    assert direct["x-forwarded-for"] == CLIENT
    assert direct["x-forwarded-proto"] == "http"
    # A trusted balancer in front of nginx: the client it names is the client.
    assert behind_balancer["x-forwarded-for"] == "198.51.100.7"


async def test_a_client_cannot_log_in_by_sending_the_trusted_identity_headers_through_nginx(tmp_path, fake_openai):
    config = "plugins: [access_log, {name: auth}]\n"
    impersonation = {"X-Forwarded-User": "mallory", "X-Forwarded-Groups": "admins"}
    async with running_gateway(tmp_path / "gateway", fake_openai.base_url, fake_openai.api_key,
                               config=config) as gateway, \
            running_nginx(tmp_path / "nginx", gateway.port) as nginx, client_from() as client:
        async with client.get(gateway.url + "/api/chatkit/_diag/stream", headers=impersonation) as direct:
            assert direct.status == 200  # the gateway does honour them from a trusted peer (here: 127.0.0.1)
        async with client.get(nginx.url + "/api/chatkit/_diag/stream", headers=impersonation) as response:
            assert response.status == 401
            assert (await response.json())["error"] == "unauthenticated"


def declared_upload(size: int) -> bytes:
    """Request headers declaring a `size`-byte body, which is never sent: both refuse on the header."""
    return (f"POST /api/chatkit/files HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {size}\r\nConnection: close\r\n\r\n").encode()


async def answer_to(port: int, request: bytes) -> tuple[int, dict, dict[str, str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        status_line, *header_lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in header_lines if ": " in line)
        body = await asyncio.wait_for(reader.readexactly(int(headers["Content-Length"])), 5)
    finally:
        writer.close()
    return int(status_line.split()[1]), json.loads(body), headers


async def test_an_over_limit_body_is_refused_alike_by_nginx_and_by_the_gateway(nginx, gateway, fake_openai):
    conf = (DEPLOY / "nginx.conf").read_text()
    megabytes = int(re.search(r"^\s*client_max_body_size (\d+)m;", conf, re.MULTILINE).group(1))
    limit = ServerSettings().max_body_bytes
    assert megabytes * 1024 * 1024 == limit

    by_nginx = await answer_to(nginx.port, declared_upload(limit + 1))
    by_gateway = await answer_to(gateway.port, declared_upload(limit + 1))
    for status, body, headers in (by_nginx, by_gateway):
        assert status == 413
        assert body["request_id"] == headers["X-Request-ID"]
    assert {**by_nginx[1], "request_id": None} == {**by_gateway[1], "request_id": None}
    assert by_nginx[1] == {"error": "body_too_large", "message": by_gateway[1]["message"],
                           "request_id": by_nginx[1]["request_id"], "limit_bytes": limit}
    assert not fake_openai.requests_to("/v1/chatkit/files")


async def test_metrics_and_admin_answer_only_the_allow_list(nginx):
    async with client_from("127.0.0.1") as allowed:
        async with allowed.get(nginx.url + "/metrics") as response:
            assert response.status == 200
            assert "gateway_requests_total" in await response.text()
    async with client_from(CLIENT) as stranger:
        for path in ("/metrics", "/admin/", "/admin/keys"):
            async with stranger.get(nginx.url + path) as response:
                assert response.status == 403, path
                body = await response.json()
                assert body["error"] == "forbidden" and body["request_id"] == response.headers["X-Request-ID"]
        async with stranger.get(nginx.url + "/healthz") as response:
            assert response.status == 200


async def test_a_gateway_that_is_down_is_a_502_in_the_gateway_error_shape(tmp_path):
    with reserve_refusing_port() as refusing:
        async with running_nginx(tmp_path / "nginx", refusing.getsockname()[1]) as nginx, client_from() as client:
            async with client.get(nginx.url + "/api/chatkit/threads") as response:
                assert response.status == 502
                body = await response.json()
    assert body["error"] == "gateway_unavailable"
    assert body["request_id"] == response.headers["X-Request-ID"]
