"""access_log: one JSON line per request with a fixed set of fields; the seed's text form; no secret ever logged."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from aiohttp import web

from gateway import keys
from gateway.logs import log_line
from tests.harness import gateway_settings, start_gateway
from tests.plugin_helpers import (
    ACCESS_FIELDS, KEY, access_lines, captured_logs, gateway_with, json_lines, new_session, plugins_yaml, turn,
)

ADMIN = {"X-API-Key": KEY}
ENV = {"GATEWAY_ADMIN_API_KEY": KEY}


async def wait_for_line(logs, predicate, timeout: float = 3.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = [line for line in access_lines(logs) if predicate(line)]
        if found:
            return found[-1]
        assert asyncio.get_running_loop().time() < deadline, logs.getvalue()
        await asyncio.sleep(0.02)


async def test_a_request_is_one_json_line_with_exactly_the_listed_fields(aiohttp_client, tmp_path, fake_openai):
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, "access_log", "metrics", "auth",
                                 environ=ENV)
    body = json.dumps({"user": "u1", "workflow": {"id": "wf_abc"}}).encode()
    with captured_logs() as logs:
        response = await gateway.post("/api/chatkit/sessions?trace=1", data=body,
                                      headers={**ADMIN, "Content-Type": "application/json"})
        answer = await response.read()
    assert response.status == 200
    (line,) = access_lines(logs)
    assert set(line) == ACCESS_FIELDS | {"logger"}
    assert line["level"] == "INFO" and line["msg"] == '"POST /api/chatkit/sessions" 200 OK'
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert (line["method"], line["route"], line["path"], line["status"]) == \
        ("POST", "/api/chatkit/sessions", "/api/chatkit/sessions", 200)
    assert line["bytes_in"] == len(body) and line["bytes_out"] == len(answer)
    assert line["principal"] == "key:bootstrap-admin" and line["client_ip"] == "127.0.0.1"
    assert line["upstream_status"] == 200 and line["error"] is None and line["events"] == 0
    assert 0 < line["upstream_ms"] <= line["duration_ms"]
    assert line["workflow"] is None
    assert "gateway;dur=" in response.headers["Server-Timing"] and "upstream;dur=" in response.headers["Server-Timing"]


async def test_a_stream_is_logged_when_it_ends_with_its_events_and_time_to_first_byte(
        aiohttp_client, tmp_path, fake_openai):
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, "access_log", "auth", environ=ENV)
    secret = await new_session(gateway, ADMIN)
    with captured_logs() as logs:
        async with gateway.post("/api/chatkit/conversation", json=turn("hello world"),
                                headers={"Authorization": f"Bearer {secret}"}) as response:
            first = await response.content.readany()
            assert first and access_lines(logs) == []  # not before the stream ends
            body = first + await response.read()
        line = await wait_for_line(logs, lambda line: line["route"] == "/api/chatkit/conversation")
    assert line["status"] == 200 and line["events"] == body.count(b"\n\n") > 5
    assert line["bytes_out"] == len(body)
    assert 0 < line["ttfb_ms"] < line["duration_ms"]
    assert line["principal"] is None  # a client secret is checked by the relay, not by auth


async def test_a_client_that_goes_away_mid_stream_is_logged_as_499_client_disconnected(
        aiohttp_client, tmp_path, fake_openai):
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, "access_log", "metrics")
    secret = await new_session(gateway)
    with captured_logs() as logs:
        response = await gateway.post("/api/chatkit/conversation", json=turn("!!slow please"),
                                      headers={"Authorization": f"Bearer {secret}"})
        assert await response.content.readany()
        response.close()
        line = await wait_for_line(logs, lambda line: line["route"] == "/api/chatkit/conversation")
    assert (line["status"], line["error"]) == (499, "client_disconnected")
    assert line["msg"] == '"POST /api/chatkit/conversation" 499 Client Closed Request'
    assert line["bytes_out"] > 0 and line["events"] >= 1
    metrics = gateway.app[keys.metrics_registry]
    assert metrics.get_sample_value("gateway_active_streams") == 0
    assert metrics.get_sample_value("gateway_requests_in_flight") == 0


async def test_a_locally_answered_request_is_logged_with_its_error_code(aiohttp_client, tmp_path, fake_openai):
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, "access_log", "auth")
    with captured_logs() as logs:
        response = await gateway.get("/api/chatkit/threads/cthr_1/items")
        answer = await response.read()
    (line,) = access_lines(logs)
    assert (line["status"], line["error"], line["principal"]) == (401, "unauthenticated", None)
    assert line["route"] == "/api/chatkit/{tail}" and line["path"] == "/api/chatkit/threads/cthr_1/items"
    assert line["bytes_out"] == len(answer) and line["upstream_ms"] is None and line["upstream_status"] is None


async def test_the_resolved_workflow_is_logged(aiohttp_client, tmp_path, fake_openai):
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, "access_log", "workflow",
                                 extra_yaml="workflows:\n  - {slug: support, workflow_id: wf_support}\n")
    with captured_logs() as logs:
        await gateway.get("/api/chatkit/threads", headers={"X-ChatKit-Workflow": "support"})
    (line,) = access_lines(logs)
    assert line["workflow"] == "support"


async def test_log_format_text_prints_the_seeds_line(aiohttp_client, tmp_path, fake_openai):
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, "access_log")
    with captured_logs("text") as logs:
        response = await gateway.post("/api/chatkit/sessions", json={"user": "u", "workflow": {"id": "wf_abc"}})
        await response.read()
    assert logs.getvalue().splitlines()[-1] == 'INFO  backend - "POST /api/chatkit/sessions" 200 OK'


async def test_routes_outside_the_chain_are_not_logged(aiohttp_client, tmp_path, fake_openai):
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, "access_log", "metrics")
    with captured_logs() as logs:
        for path in ("/healthz", "/readyz", "/metrics"):
            await gateway.get(path)
    assert access_lines(logs) == []


# ---------------------------------------------------------------- secrets

SERVER_KEY = "sk-proj-upstreamSECRETkey0123456789"
SECRETS = {
    "server key": SERVER_KEY,
    "gateway key": KEY,
    "other key": "gk_someoneElsesKey0123456789abcdefghijklmn",
    "client secret": "ek_clientSecretValue0123456789abcdef",
    "cookie": "sessionCookieValue0123456789",
    "webhook secret": "whsec_webhookSecret0123456789",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlU0VDUkVU",
    "query token": "sk-queryStringSecret0123456789",
    "body secret": "sk-bodySecretValue0123456789",
    "proxy password": "s3cretProxyPass",
}


async def leaky_upstream(request: web.Request) -> web.Response:
    """An upstream that rejects the gateway and echoes secrets in its error message, as a buggy one might."""
    await request.read()
    message = (f"Incorrect API key provided: {SERVER_KEY}; you sent {request.headers.get('Authorization')}; "
               f"retry via http://corp:{SECRETS['proxy password']}@proxy.corp:3128 with token "
               f"{SECRETS['client secret']} and {SECRETS['webhook secret']}")
    return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=401)


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_no_secret_from_headers_query_body_or_upstream_errors_reaches_a_log_line(
        aiohttp_client, aiohttp_server, tmp_path, level):
    upstream_app = web.Application()
    upstream_app.router.add_route("*", "/{tail:.*}", leaky_upstream)
    upstream = await aiohttp_server(upstream_app)
    settings = gateway_settings(tmp_path, str(upstream.make_url("")).rstrip("/"), SERVER_KEY,
                                config=plugins_yaml("access_log", "metrics", "auth"), environ=ENV)
    with captured_logs(level=level) as logs:
        gateway = await start_gateway(aiohttp_client, settings)
        answers = []
        for path in ("/api/chatkit/sessions", f"/api/chatkit/threads/{SECRETS['query token']}"):
            response = await gateway.post(
                f"{path}?api_key={SECRETS['query token']}&token={SECRETS['client secret']}",
                json={"user": "u", "workflow": {"id": "wf_abc"}, "secret": SECRETS["body secret"],
                      "webhook": SECRETS["webhook secret"]},
                headers={**ADMIN, "Cookie": f"session={SECRETS['cookie']}", "X-Other-Key": SECRETS["other key"],
                         "X-Jwt": SECRETS["jwt"]})
            answers.append(await response.text())
        for headers in ({"Authorization": f"Bearer {SECRETS['other key']}"},
                        {"Authorization": f"Bearer {SECRETS['jwt']}"},
                        {"X-API-Key": SECRETS["other key"]}):
            answers.append(await (await gateway.get("/api/chatkit/threads", headers=headers)).text())
        metrics = await (await gateway.get("/metrics")).text()
    lines = logs.getvalue().splitlines()
    assert any('"upstream_auth_failed"' in line for line in lines)  # the upstream's message was logged, masked
    assert any("Incorrect API key provided: sk-***" in line for line in lines)
    for name, secret in SECRETS.items():
        for line in lines:
            assert secret not in line, f"the {name} leaked into a log line: {line}"
        for answer in answers:
            assert secret not in answer, f"the {name} leaked into an answer: {answer}"
        assert secret not in metrics
    for line in json_lines(logs):
        assert set(line) <= ACCESS_FIELDS | {"logger", "upstream", "proxy", "host", "key_fingerprint", "reason",
                                             "traceback", "config", "detail", "kind", "slug", "outcome"}


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_line_written_without_a_log_record_is_the_line_logging_writes(fmt):
    # log_line skips the LogRecord when the gateway's handler is the only one; with another handler on
    # the root (pytest's caplog, say) it goes through logging. Both must write the same redacted line.
    fields = {"request_id": "r1", "method": "GET", "path": "/api/chatkit/x/ek_leaked_secret_0000", "status": 200,
              "principal": "key:bench", "workflow": None, "bytes_in": 2 ** 70, "not_a_field": "dropped"}
    message = '"GET /api/chatkit/x/ek_leaked_secret_0000" 200 OK'
    lines = []
    for extra_handler in (None, logging.NullHandler()):
        with captured_logs(fmt) as stream:
            root = logging.getLogger()
            if extra_handler is not None:
                root.addHandler(extra_handler)
            try:
                log_line(logging.getLogger("backend"), message, fields)
            finally:
                if extra_handler is not None:
                    root.removeHandler(extra_handler)
        [line] = stream.getvalue().splitlines()
        lines.append(json.loads(line) | {"ts": None} if fmt == "json" else line)
    assert lines[0] == lines[1]
    assert "ek_leaked" not in str(lines[0]) and "not_a_field" not in str(lines[0])
