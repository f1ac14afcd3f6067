"""The real-program fixtures work: tinyproxy forwards http, tunnels https by
CONNECT to a server with a test-CA certificate, enforces BasicAuth, and a
refusing proxy URL refuses. Only aiohttp's client and server are used.
"""

from __future__ import annotations

import ssl
import uuid

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509

from tests.support.fixtures import PROXY_PASSWORD, PROXY_USER, require_binary
from tests.support.aio import wait_server_idle
from tests.support.forward_proxy import ForwardProxy, tinyproxy_missing_reason
from tests.support.ports import free_port, wait_for_port
from tests.support.tls import TLSFiles

pytestmark = pytest.mark.integration

TIMEOUT = aiohttp.ClientTimeout(total=10)


def _echo_app() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "path": request.path,
                "scheme": request.scheme,
                "via": request.headers.get("Via", ""),
                "proxy_authorization": request.headers.get("Proxy-Authorization", ""),
            }
        )

    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    return app


@pytest.fixture
async def http_upstream(aiohttp_server):
    server = await aiohttp_server(_echo_app(), host="127.0.0.1")
    yield server
    await wait_server_idle(server)


@pytest.fixture
async def https_upstream(aiohttp_server, test_ca: TLSFiles):
    server = await aiohttp_server(_echo_app(), host="127.0.0.1", ssl=test_ca.server_ssl_context())
    yield server
    # TLS close_notify through the tunnel finishes asynchronously: without
    # this, the server-side socket can leak (ResourceWarning) at teardown.
    await wait_server_idle(server)


def _path() -> str:
    return f"/probe-{uuid.uuid4().hex[:12]}"


async def test_http_request_goes_through_proxy(forward_proxy: ForwardProxy, http_upstream):
    path = _path()
    url = f"http://127.0.0.1:{http_upstream.port}{path}"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        async with session.get(url, proxy=forward_proxy.url) as resp:
            assert resp.status == 200
            body = await resp.json()
    assert body["path"] == path
    # tinyproxy added its Via header on the way through ...
    assert "chatkit-test-proxy" in body["via"]
    # ... and logged the absolute-form request line.
    assert f"GET {url} HTTP/1.1" in forward_proxy.request_lines()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_https_through_proxy_by_connect_trusting_test_ca(
    forward_proxy: ForwardProxy, https_upstream, test_ca: TLSFiles, host: str
):
    path = _path()
    url = f"https://{host}:{https_upstream.port}{path}"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        async with session.get(
            url, proxy=forward_proxy.url, ssl=test_ca.client_ssl_context()
        ) as resp:
            assert resp.status == 200
            body = await resp.json()
    await forward_proxy.wait_idle()
    assert body == {"path": path, "scheme": "https", "via": "", "proxy_authorization": ""}
    # The tunnel is opaque to the proxy: only the CONNECT line is logged.
    lines = forward_proxy.request_lines()
    assert f"CONNECT {host}:{https_upstream.port} HTTP/1.1" in lines
    assert not any(path in line for line in lines)


async def test_https_through_proxy_rejects_untrusted_cert(forward_proxy: ForwardProxy, https_upstream):
    """Without the test CA the same tunnel fails verification: TLS is real, end to end."""
    url = f"https://127.0.0.1:{https_upstream.port}/"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with session.get(url, proxy=forward_proxy.url, ssl=ssl.create_default_context()):
                pass
    await forward_proxy.wait_idle()
    assert f"CONNECT 127.0.0.1:{https_upstream.port} HTTP/1.1" in forward_proxy.request_lines()


async def test_proxy_auth_accepts_right_credentials(auth_forward_proxy: ForwardProxy, http_upstream):
    assert auth_forward_proxy.user == PROXY_USER
    assert auth_forward_proxy.password == PROXY_PASSWORD
    path = _path()
    url = f"http://127.0.0.1:{http_upstream.port}{path}"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        # credentials in the proxy URL ...
        async with session.get(url, proxy=auth_forward_proxy.auth_url) as resp:
            assert resp.status == 200
            body = await resp.json()
        # ... or, for a plain-http target, Proxy-Authorization among the
        # request headers (the request itself goes to the proxy).
        async with session.get(
            url,
            proxy=auth_forward_proxy.url,
            headers={"Proxy-Authorization": auth_forward_proxy.proxy_authorization},
        ) as resp2:
            assert resp2.status == 200
    assert body["path"] == path
    # tinyproxy strips Proxy-Authorization before forwarding.
    assert body["proxy_authorization"] == ""
    assert auth_forward_proxy.request_lines().count(f"GET {url} HTTP/1.1") == 2


async def test_aiohttp_drops_proxy_headers_for_plain_http_targets(
    auth_forward_proxy: ForwardProxy, http_upstream
):
    """Tripwire for an aiohttp 3.14.5 quirk the gateway must know about:
    ``proxy_headers={"Proxy-Authorization": ...}`` (what aiohttp's own
    deprecation message recommends instead of proxy_auth=) is only sent with
    CONNECT, so an authenticated proxy refuses a plain-http request. If this
    starts failing, aiohttp fixed it: delete this test."""
    url = f"http://127.0.0.1:{http_upstream.port}/"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        async with session.get(
            url, proxy=auth_forward_proxy.url, proxy_headers=auth_forward_proxy.proxy_headers
        ) as resp:
            assert resp.status == 407


async def test_proxy_auth_rejects_missing_or_wrong_credentials(
    auth_forward_proxy: ForwardProxy, http_upstream
):
    url = f"http://127.0.0.1:{http_upstream.port}/"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        async with session.get(url, proxy=auth_forward_proxy.url) as resp:
            assert resp.status == 407
            assert resp.headers.get("Proxy-Authenticate", "").startswith("Basic")
        async with session.get(
            url,
            proxy=auth_forward_proxy.url,
            proxy_headers={"Proxy-Authorization": aiohttp.encode_basic_auth(PROXY_USER, "wrong")},
        ) as resp:
            # tinyproxy 1.11.1 (Debian bookworm) answers 401 for *wrong*
            # credentials (upstream bug #532, later fixed to 407).
            assert resp.status in (401, 407)
    auth_forward_proxy.wait_for_log("Request (file descriptor")


async def test_proxy_auth_connect_without_credentials_is_407(
    auth_forward_proxy: ForwardProxy, https_upstream, test_ca: TLSFiles
):
    url = f"https://127.0.0.1:{https_upstream.port}/"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        with pytest.raises(aiohttp.ClientHttpProxyError) as err:
            async with session.get(url, proxy=auth_forward_proxy.url, ssl=test_ca.client_ssl_context()):
                pass
        assert err.value.status == 407
        # With the credentials the tunnel opens.
        async with session.get(
            url,
            proxy=auth_forward_proxy.url,
            proxy_headers=auth_forward_proxy.proxy_headers,
            ssl=test_ca.client_ssl_context(),
        ) as resp:
            assert resp.status == 200
    await auth_forward_proxy.wait_idle()
    assert auth_forward_proxy.request_lines().count(f"CONNECT 127.0.0.1:{https_upstream.port} HTTP/1.1") == 2


async def test_refusing_proxy_url_gives_connection_error(refusing_proxy_url: str, http_upstream):
    url = f"http://127.0.0.1:{http_upstream.port}/"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        with pytest.raises(aiohttp.ClientProxyConnectionError):
            async with session.get(url, proxy=refusing_proxy_url):
                pass


def test_test_ca_files(test_ca: TLSFiles):
    for path in (test_ca.ca_cert, test_ca.server_cert, test_ca.server_key, test_ca.server_chain):
        assert path.is_file() and path.parent == test_ca.directory
    assert (test_ca.ca_cert.name, test_ca.server_cert.name, test_ca.server_key.name) == (
        "ca.pem",
        "server.pem",
        "server.key",
    )
    ca = x509.load_pem_x509_certificate(test_ca.ca_cert.read_bytes())
    leaf = x509.load_pem_x509_certificate(test_ca.server_cert.read_bytes())
    assert leaf.issuer == ca.subject
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    leaf.verify_directly_issued_by(ca)
    assert isinstance(test_ca.server_ssl_context(), ssl.SSLContext)


def test_stop_leaves_no_process_and_closes_port(tmp_path):
    require_binary(tinyproxy_missing_reason())
    with ForwardProxy(tmp_path) as proxy:
        port, proc = proxy.port, proxy.process
        assert proc is not None and proc.poll() is None
        assert wait_for_port("127.0.0.1", port, 2)
    assert proc.poll() is not None
    assert proxy.process is None
    assert not wait_for_port("127.0.0.1", port, 0.2)
    # the log survives for post-mortem reading
    assert "Shutting down" in proxy.log_path.read_text()


def test_missing_binary_fails_not_skips(tmp_path):
    missing = str(tmp_path / "no-such-tinyproxy")
    reason = tinyproxy_missing_reason(missing)
    assert reason and "install-test-deps.sh" in reason
    with pytest.raises(FileNotFoundError, match="install-test-deps"):
        ForwardProxy(tmp_path, binary=missing).start()
    with pytest.raises(pytest.fail.Exception, match="tinyproxy binary not found"):
        require_binary(reason)


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
