"""The relay: /api/chatkit/{tail} → {base}/v1/chatkit/{tail}, streamed both ways, keys guarded."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import tracemalloc

import aiohttp
import pytest

from tests.harness import gateway_settings, raw_http, start_gateway

BETA = {"OpenAI-Beta": "chatkit_beta=v1"}


@pytest.fixture
async def gateway(aiohttp_client, fake_openai, tmp_path):
    settings = gateway_settings(tmp_path, fake_openai.base_url, fake_openai.api_key)
    return await start_gateway(aiohttp_client, settings)


async def create_session(gateway, workflow="wf_abc", user="u1"):
    response = await gateway.post("/api/chatkit/sessions", json={"user": user, "workflow": {"id": workflow}})
    assert response.status == 200, await response.text()
    return await response.json()


def upstream_requests(fake, path):
    return [r for r in fake.requests if r.path == path]


async def test_a_relayed_request_reaches_v1_chatkit_with_the_server_key_injected(gateway, fake_openai):
    response = await gateway.post("/api/chatkit/sessions?trace=1", json={"user": "u1", "workflow": {"id": "wf_abc"}},
                                  headers={"Authorization": "Bearer gk_client_credential_0000",
                                           "Cookie": "session=browser-cookie", "X-Api-Key": "gk_other_cred",
                                           "Connection": "keep-alive, X-Private", "X-Private": "hop",
                                           "X-Request-ID": "req-abcdef123456", "X-Custom": "kept"})
    assert response.status == 200
    assert response.headers["X-Request-ID"] == "req-abcdef123456"
    assert "gateway;dur=" in response.headers["Server-Timing"]
    sent = upstream_requests(fake_openai, "/v1/chatkit/sessions")[-1]
    assert sent.query == "trace=1"
    assert sent.headers["authorization"] == f"Bearer {fake_openai.api_key}"
    assert sent.headers["openai-beta"] == "chatkit_beta=v1"
    assert sent.headers["x-request-id"] == "req-abcdef123456"
    assert sent.headers["x-forwarded-for"] == "127.0.0.1"
    assert sent.headers["x-forwarded-proto"] == "http"
    assert sent.headers["x-custom"] == "kept"
    for dropped in ("cookie", "x-api-key", "x-private"):
        assert dropped not in sent.headers
    assert sent.headers["host"].startswith("127.0.0.1:")
    body = await response.json()
    assert body["client_secret"].startswith("ek_") and body["object"] == "chatkit.session"


async def test_a_chatkit_client_secret_is_forwarded_as_it_is(gateway, fake_openai):
    session = await create_session(gateway)
    response = await gateway.post("/api/chatkit/conversation",
                                  json={"type": "threads.list", "params": {"limit": 5, "order": "desc"}},
                                  headers={"Authorization": f"Bearer {session['client_secret']}"})
    assert response.status == 200
    sent = upstream_requests(fake_openai, "/v1/chatkit/conversation")[-1]
    assert sent.headers["authorization"] == f"Bearer {session['client_secret']}"
    assert "openai-beta" not in sent.headers


async def test_sse_events_arrive_one_by_one_as_the_upstream_sends_them(gateway, fake_openai):
    session = await create_session(gateway)
    arrivals = []
    started = time.perf_counter()
    async with gateway.post("/api/chatkit/conversation", headers={"Authorization": f"Bearer {session['client_secret']}"},
                            json={"type": "threads.create", "params": {"input": {
                                "content": [{"type": "input_text", "text": "hello world"}],
                                "attachments": [], "inference_options": {}}}}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["X-Accel-Buffering"] == "no"
        assert response.headers["Cache-Control"] == "no-cache"
        assert "Content-Encoding" not in response.headers
        buffer = b""
        async for chunk in response.content.iter_any():
            buffer += chunk
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                arrivals.append((time.perf_counter() - started, json.loads(frame.removeprefix(b"data: "))))
    types = [event["type"] for _, event in arrivals]
    assert types[0] == "thread.created" and types[-1] == "thread.updated"
    assert len(arrivals) >= 8
    gaps = [b[0] - a[0] for a, b in zip(arrivals, arrivals[1:])]
    # 20 ms between upstream frames: were the gateway buffering, they would arrive together.
    assert sum(gap >= 0.010 for gap in gaps) >= len(gaps) - 2
    assert arrivals[-1][0] - arrivals[0][0] >= 0.020 * (len(arrivals) - 1) * 0.7


async def test_the_official_sdk_sees_the_same_results_through_the_gateway(gateway, fake_openai):
    import openai

    through = openai.OpenAI(base_url=str(gateway.make_url("/api")), api_key="sk-unused-by-gateway", max_retries=0)
    direct = openai.OpenAI(base_url=f"{fake_openai.base_url}/v1", api_key=fake_openai.api_key, max_retries=0)

    def exercise(client):
        session = client.beta.chatkit.sessions.create(user="sdk-user", workflow={"id": "wf_sdk"})
        cancelled = client.beta.chatkit.sessions.cancel(session.id)
        threads = client.beta.chatkit.threads.list(limit=2)
        outcomes = [session.object, session.status, cancelled.status, cancelled.client_secret, type(threads.data)]
        for bad in (lambda: client.beta.chatkit.sessions.cancel("not-a-session"),
                    lambda: client.beta.chatkit.sessions.create(user="u", workflow={"id": "wf_missing_1"}),
                    lambda: client.beta.chatkit.threads.retrieve("cthr_nope")):
            try:
                bad()
            except openai.APIStatusError as exc:
                outcomes.append((type(exc).__name__, exc.status_code, exc.code, exc.param))
        return outcomes

    try:
        assert await asyncio.to_thread(exercise, through) == await asyncio.to_thread(exercise, direct)
    finally:
        through.close()
        direct.close()


async def test_the_sdk_lists_and_retrieves_threads_through_the_gateway(gateway, fake_openai):
    import openai

    session = await create_session(gateway, user="reader")
    async with gateway.post("/api/chatkit/conversation", headers={"Authorization": f"Bearer {session['client_secret']}"},
                            json={"type": "threads.create", "params": {"input": {
                                "content": [{"type": "input_text", "text": "hi"}], "attachments": [],
                                "inference_options": {}}}}) as response:
        await response.read()
    client = openai.OpenAI(base_url=str(gateway.make_url("/api")), api_key="sk-unused", max_retries=0)
    try:
        threads = await asyncio.to_thread(lambda: client.beta.chatkit.threads.list(user="reader"))
        assert len(threads.data) == 1
        thread = await asyncio.to_thread(client.beta.chatkit.threads.retrieve, threads.data[0].id)
        items = await asyncio.to_thread(lambda: list(client.beta.chatkit.threads.list_items(thread.id)))
        assert thread.user == "reader" and len(items) >= 2
    finally:
        client.close()


@pytest.mark.parametrize("raw_path", [
    "/api/chatkit/../models",
    "/api/chatkit/threads/../../models",
    "/api/chatkit/%2e%2e/models",
    "/api/chatkit/threads%2F..%2F..%2Fmodels",
    "/api/chatkit/threads/%2e%2e%2fmodels",
    "/api/chatkit/threads\\..\\..\\models",
    "/api/chatkit//v1/models",
    "/api/chatkit/http://evil.example/v1/models",
])
async def test_path_escapes_never_leave_v1_chatkit(gateway, fake_openai, raw_path):
    answer = await raw_http(gateway.port, f"GET {raw_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 404), answer[:200]
    assert all(r.path.startswith("/v1/chatkit/") for r in fake_openai.requests)
    assert not any("models" in r.path for r in fake_openai.requests)


async def test_an_absolute_url_request_target_is_refused(gateway, fake_openai):
    answer = await raw_http(gateway.port, b"GET http://evil.example/v1/models HTTP/1.1\r\nHost: evil.example\r\n"
                                          b"Connection: close\r\n\r\n")
    assert int(answer.split(b" ", 2)[1]) in (400, 404)
    assert not fake_openai.requests


async def test_a_50_mb_upload_streams_through_with_bounded_memory(gateway, fake_openai):
    chunk = bytes(range(256)) * 4096  # 1 MiB
    digest = hashlib.sha256()

    async def body():
        for _ in range(50):
            digest.update(chunk)
            yield chunk

    tracemalloc.start()
    try:
        with aiohttp.MultipartWriter("form-data") as form:
            part = form.append(body(), {"Content-Type": "application/octet-stream"})
            part.set_content_disposition("form-data", name="file", filename="big.bin")
            response = await gateway.post("/api/chatkit/files", data=form)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status == 200, await response.text()
    upload = fake_openai.uploads[-1]
    assert upload["size"] == 50 * len(chunk)
    assert upload["sha256"] == digest.hexdigest()
    assert peak < 16 * 1024 * 1024, f"peak traced memory {peak / 1e6:.1f} MB"


async def test_an_oversized_body_is_refused_before_reaching_the_upstream(aiohttp_client, fake_openai, tmp_path):
    settings = gateway_settings(tmp_path, fake_openai.base_url, fake_openai.api_key,
                                environ={"GATEWAY__SERVER__MAX_BODY_BYTES": "1000"})
    gateway = await start_gateway(aiohttp_client, settings)
    response = await gateway.post("/api/chatkit/files", data=b"x" * 5000)
    assert response.status == 413
    assert (await response.json())["error"] == "body_too_large"

    async def chunked():
        for _ in range(10):
            yield b"y" * 500

    response = await gateway.post("/api/chatkit/files", data=chunked())
    assert response.status == 413
    assert (await response.json())["error"] == "body_too_large"


async def test_a_client_that_disconnects_cancels_the_upstream_at_once(gateway, fake_openai):
    session = await create_session(gateway)
    response = await gateway.post("/api/chatkit/conversation", headers={"Authorization": f"Bearer {session['client_secret']}"},
                                  json={"type": "threads.create", "params": {"input": {
                                      "content": [{"type": "input_text", "text": "!!slow"}], "attachments": [],
                                      "inference_options": {}}}})
    await response.content.readany()
    response.close()
    closed_at = asyncio.get_running_loop().time()
    entry = upstream_requests(fake_openai, "/v1/chatkit/conversation")[-1]
    for _ in range(100):
        if entry.disconnected_at is not None:
            break
        await asyncio.sleep(0.01)
    assert entry.disconnected_at is not None
    assert entry.disconnected_at - closed_at < 0.45  # well before the next 0.5 s frame


async def test_an_upstream_that_drops_mid_stream_leaves_the_client_an_incomplete_stream(gateway, fake_openai):
    session = await create_session(gateway)
    async with gateway.post("/api/chatkit/conversation", headers={"Authorization": f"Bearer {session['client_secret']}"},
                            json={"type": "threads.create", "params": {"input": {
                                "content": [{"type": "input_text", "text": "!!disconnect"}], "attachments": [],
                                "inference_options": {}}}}) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_an_in_stream_error_passes_through_untouched(gateway, fake_openai):
    session = await create_session(gateway)
    async with gateway.post("/api/chatkit/conversation", headers={"Authorization": f"Bearer {session['client_secret']}"},
                            json={"type": "threads.create", "params": {"input": {
                                "content": [{"type": "input_text", "text": "!!error"}], "attachments": [],
                                "inference_options": {}}}}) as response:
        body = await response.read()
    assert response.status == 200
    assert b'"code":"stream.error"' in body


async def test_upstream_errors_that_are_not_auth_pass_through(gateway, fake_openai):
    response = await gateway.get("/api/chatkit/threads", headers={"x-fake-fault": "status=503"})
    assert response.status == 503
    response = await gateway.get("/api/chatkit/threads", headers={"x-fake-fault": "nonjson"})
    assert response.status == 200 and response.content_type == "text/html"


async def test_an_upstream_auth_failure_is_a_502_never_our_own_401(aiohttp_client, fake_openai, tmp_path):
    settings = gateway_settings(tmp_path, fake_openai.base_url, "sk-wrong-key-for-upstream-7777")
    gateway = await start_gateway(aiohttp_client, settings)
    response = await gateway.get("/api/chatkit/threads")
    assert response.status == 502
    body = await response.json()
    assert body["error"] == "upstream_auth_failed" and body["upstream_status"] == 401
    assert "sk-wrong-key-for-upstream" not in json.dumps(body)


async def test_a_missing_key_is_503_and_readyz_says_why(aiohttp_client, fake_openai, tmp_path):
    gateway = await start_gateway(aiohttp_client, gateway_settings(tmp_path, fake_openai.base_url, None))
    response = await gateway.get("/api/chatkit/threads")
    assert response.status == 503
    assert (await response.json())["error"] == "upstream_not_configured"
    ready = await gateway.get("/readyz")
    assert ready.status == 503
    checks = (await ready.json())["checks"]
    assert checks["upstream_key"] == {"ok": False, "detail": "OPENAI_API_KEY is not set"}
    assert checks["storage"]["ok"] is True
    assert (await gateway.get("/healthz")).status == 200


async def test_an_unreachable_upstream_is_502_upstream_unavailable(aiohttp_client, tmp_path):
    from tests.support.ports import free_port

    settings = gateway_settings(tmp_path, f"http://127.0.0.1:{free_port()}", "sk-test-key-unreachable")
    gateway = await start_gateway(aiohttp_client, settings)
    response = await gateway.get("/api/chatkit/threads")
    assert response.status == 502
    body = await response.json()
    assert body["error"] == "upstream_unavailable" and body["request_id"] == response.headers["X-Request-ID"]


async def test_an_upstream_dropping_before_headers_is_502(gateway):
    response = await gateway.get("/api/chatkit/threads", headers={"x-fake-fault": "drop"})
    assert response.status == 502
    assert (await response.json())["error"] == "upstream_unavailable"


async def test_a_slow_upstream_is_504_upstream_timeout(aiohttp_client, fake_openai, tmp_path):
    settings = gateway_settings(tmp_path, fake_openai.base_url, fake_openai.api_key,
                                environ={"GATEWAY__UPSTREAM__TIMEOUTS__READ": "0.3"})
    fake_openai.slow_seconds = 2
    gateway = await start_gateway(aiohttp_client, settings)
    response = await gateway.post("/api/chatkit/sessions", json={"user": "u", "workflow": {"id": "wf_slow"}})
    assert response.status == 504
    assert (await response.json())["error"] == "upstream_timeout"


async def test_unknown_routes_answer_in_the_one_error_shape(gateway):
    response = await gateway.get("/nope", headers={"X-Request-ID": "bad id with spaces"})
    assert response.status == 404
    body = await response.json()
    assert body["error"] == "not_found"
    assert body["request_id"] == response.headers["X-Request-ID"] != "bad id with spaces"


async def test_a_wrong_method_on_a_gateway_route_is_405_and_never_relayed(gateway, fake_openai):
    response = await gateway.get("/api/chatkit/session")
    assert response.status == 405
    body = await response.json()
    assert body["error"] == "method_not_allowed" and response.headers["Allow"] == "POST"
    response = await gateway.put("/api/chatkit/hosted")
    assert response.status == 405 and response.headers["Allow"] == "GET, POST"
    assert not fake_openai.requests


async def test_the_query_string_is_kept_but_the_gateways_own_workflow_parameter(gateway, fake_openai):
    response = await gateway.get("/api/chatkit/threads?limit=2&order=asc&after=cthr_1")
    assert response.status == 200
    assert fake_openai.requests_to("/v1/chatkit/threads")[-1].query == "limit=2&order=asc&after=cthr_1"
    response = await gateway.get("/api/chatkit/threads?workflow=support&limit=2")
    assert response.status == 200
    assert fake_openai.requests_to("/v1/chatkit/threads")[-1].query == "limit=2"


def test_relayed_paths_get_only_the_chatkit_apis_route_labels():
    from gateway.relay import KNOWN_ROUTES, route_template

    assert route_template("threads/cthr_1/items") == "/api/chatkit/threads/{id}/items"
    assert route_template("sessions/cksess_1/cancel") == "/api/chatkit/sessions/{id}/cancel"
    for odd in ("threads/cthr_a/cthr_b/cthr_c", "items", "threads/42", "models", "sessions/cksess_1/items"):
        assert route_template(odd) == "other"
    labels = {route_template("/".join(["threads"] + [f"cthr_{i}"] * depth)) for depth in range(1, 50) for i in range(3)}
    assert labels <= KNOWN_ROUTES | {"other"}


async def test_a_client_gone_mid_answer_logs_no_traceback(aiohttp_client, fake_openai, tmp_path, caplog):
    from gateway.app import create_app
    from plugins import REGISTRY

    async def writes_to_a_closed_client(request):
        raise ConnectionResetError("Cannot write to closing transport")

    app = create_app(gateway_settings(tmp_path, fake_openai.base_url, fake_openai.api_key), REGISTRY)
    app.router.add_get("/gone", writes_to_a_closed_client)
    client = await aiohttp_client(app)
    with caplog.at_level(logging.DEBUG):
        response = await client.get("/gone")
    assert response.status == 499
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
