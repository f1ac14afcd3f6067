"""The relay through a real corporate forward proxy (tinyproxy): HTTP, HTTPS by CONNECT, auth, NO_PROXY."""

from __future__ import annotations

import logging

import pytest

from tests.fakes.openai_upstream import FakeOpenAI, start_fake
from tests.harness import gateway_settings, start_gateway
from tests.support.aio import wait_server_idle

SESSION = {"user": "u1", "workflow": {"id": "wf_proxy"}}


@pytest.fixture
async def tls_fake(test_ca):
    fake = FakeOpenAI()
    runner, _ = await start_fake(fake, ssl_context=test_ca.server_ssl_context())
    yield fake
    await wait_server_idle(runner)  # let TLS connections finish closing before the server goes
    await runner.cleanup()


def proxy_yaml(url: str, *, credentials: bool = False, ca_bundle=None) -> str:
    lines = ["upstream:", "  proxy:", f"    url: {url}"]
    if credentials:
        lines += ["    username: {$env: PROXY_USER}", "    password: {$env: PROXY_PASS}"]
    if ca_bundle:
        lines.append(f"  ca_bundle: {ca_bundle}")
    return "\n".join(lines) + "\n"


async def test_plain_http_goes_through_the_proxy(aiohttp_client, fake_openai, forward_proxy, tmp_path):
    settings = gateway_settings(tmp_path, fake_openai.base_url, fake_openai.api_key, config=proxy_yaml(forward_proxy.url))
    gateway = await start_gateway(aiohttp_client, settings)
    response = await gateway.post("/api/chatkit/sessions", json=SESSION)
    assert response.status == 200, await response.text()
    forward_proxy.wait_for_log(f"{fake_openai.base_url}/v1/chatkit/sessions")
    assert fake_openai.requests_to("/v1/chatkit/sessions")[-1].headers["authorization"] == f"Bearer {fake_openai.api_key}"


async def test_https_goes_through_the_proxy_by_connect_trusting_the_ca_bundle(
        aiohttp_client, tls_fake, forward_proxy, test_ca, tmp_path):
    config = proxy_yaml(forward_proxy.url, ca_bundle=test_ca.ca_cert)
    gateway = await start_gateway(aiohttp_client, gateway_settings(tmp_path, tls_fake.base_url, tls_fake.api_key,
                                                                   config=config))
    response = await gateway.post("/api/chatkit/sessions", json=SESSION)
    assert response.status == 200, await response.text()
    assert (await response.json())["client_secret"].startswith("ek_")
    port = tls_fake.base_url.rsplit(":", 1)[1]
    forward_proxy.wait_for_log(f"CONNECT 127.0.0.1:{port}")


async def test_https_to_an_untrusted_certificate_is_refused(aiohttp_client, tls_fake, forward_proxy, tmp_path):
    gateway = await start_gateway(aiohttp_client, gateway_settings(tmp_path, tls_fake.base_url, tls_fake.api_key,
                                                                   config=proxy_yaml(forward_proxy.url)))
    response = await gateway.post("/api/chatkit/sessions", json=SESSION)
    assert response.status == 502
    body = await response.json()
    assert body["error"] == "upstream_unavailable" and "TLS verification" in body["message"]
    assert not tls_fake.requests


async def test_proxy_credentials_are_used_and_never_logged(aiohttp_client, tls_fake, auth_forward_proxy, test_ca,
                                                           tmp_path, caplog):
    config = proxy_yaml(auth_forward_proxy.url, credentials=True, ca_bundle=test_ca.ca_cert)
    environ = {"PROXY_USER": auth_forward_proxy.user, "PROXY_PASS": auth_forward_proxy.password}
    gateway = await start_gateway(aiohttp_client, gateway_settings(tmp_path, tls_fake.base_url, tls_fake.api_key,
                                                                   config=config, environ=environ))
    response = await gateway.post("/api/chatkit/sessions", json=SESSION)
    assert response.status == 200, await response.text()

    caplog.set_level(logging.DEBUG)
    environ["PROXY_PASS"] = "not-the-right-password"
    wrong = await start_gateway(aiohttp_client, gateway_settings(tmp_path, tls_fake.base_url, tls_fake.api_key,
                                                                 config=config, environ=environ))
    response = await wrong.post("/api/chatkit/sessions", json=SESSION)
    assert response.status == 502
    body = await response.json()
    assert body["error"] == "upstream_proxy_error"
    assert body["proxy"] == f"127.0.0.1:{auth_forward_proxy.port}"
    assert "the proxy answered 40" in body["message"]  # tinyproxy says 401 to a CONNECT, others 407
    logged = caplog.text
    assert f"127.0.0.1:{auth_forward_proxy.port}" in logged
    for secret in (auth_forward_proxy.password, "not-the-right-password"):
        assert secret not in logged and secret not in str(body)


async def test_the_environment_proxy_with_inline_credentials(aiohttp_client, fake_openai, auth_forward_proxy, tmp_path):
    environ = {"HTTP_PROXY": auth_forward_proxy.auth_url}
    gateway = await start_gateway(aiohttp_client, gateway_settings(tmp_path, fake_openai.base_url, fake_openai.api_key,
                                                                   environ=environ))
    response = await gateway.post("/api/chatkit/sessions", json=SESSION)
    assert response.status == 200, await response.text()
    auth_forward_proxy.wait_for_log(f"{fake_openai.base_url}/v1/chatkit/sessions")


async def test_no_proxy_sends_matching_hosts_direct(aiohttp_client, fake_openai, forward_proxy, tmp_path):
    environ = {"HTTP_PROXY": forward_proxy.url, "NO_PROXY": "localhost,127.0.0.1"}
    gateway = await start_gateway(aiohttp_client, gateway_settings(tmp_path, fake_openai.base_url, fake_openai.api_key,
                                                                   environ=environ))
    before = forward_proxy.log_text()
    response = await gateway.post("/api/chatkit/sessions", json=SESSION)
    assert response.status == 200
    assert "/v1/chatkit/sessions" not in forward_proxy.log_text()[len(before):]


async def test_a_refusing_proxy_is_502_upstream_proxy_error(aiohttp_client, fake_openai, refusing_proxy_url, tmp_path):
    gateway = await start_gateway(aiohttp_client, gateway_settings(tmp_path, fake_openai.base_url, fake_openai.api_key,
                                                                   config=proxy_yaml(refusing_proxy_url)))
    response = await gateway.post("/api/chatkit/sessions", json=SESSION)
    assert response.status == 502
    assert (await response.json())["error"] == "upstream_proxy_error"
    assert not fake_openai.requests
