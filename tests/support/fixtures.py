"""pytest fixtures for real external programs: a tinyproxy forward proxy and a test CA.

The suite imports test helpers as ``tests.…`` (``python -m pytest`` from the repo root), and
tests/conftest.py registers these fixtures for every test module.

Fixtures:
  forward_proxy       function scope; a started ``ForwardProxy`` (tinyproxy, no auth)
  auth_forward_proxy  function scope; a started ``ForwardProxy`` with BasicAuth
                      user ``corp`` / password ``s3cret-proxy-pass``
  refusing_proxy_url  function scope; ``"http://127.0.0.1:PORT"`` where PORT is held
                      bound but not listening, so connecting is refused
  test_ca             session scope; ``TLSFiles`` (ca.pem, server.pem, server.key, ...)

A missing binary is a test FAILURE, never a skip: under CI (env CI set) and
locally alike, with a message saying how to install it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .forward_proxy import ForwardProxy, tinyproxy_missing_reason
from .ports import LOOPBACK, reserve_refusing_port
from .tls import TLSFiles, make_test_ca

PROXY_USER = "corp"
PROXY_PASSWORD = "s3cret-proxy-pass"


def require_binary(reason: str | None) -> None:
    """Fail the test (never skip) when an external program is missing."""
    if reason is None:
        return
    where = "CI is set: integration programs must be installed" if os.environ.get("CI") else (
        "not under CI, but integration tests still need it"
    )
    pytest.fail(f"{reason} [{where}]", pytrace=False)


def _start_proxy(tmp_path_factory: pytest.TempPathFactory, **kwargs: object) -> ForwardProxy:
    require_binary(tinyproxy_missing_reason())
    workdir = tmp_path_factory.mktemp("tinyproxy")
    proxy = ForwardProxy(workdir, **kwargs)  # type: ignore[arg-type]
    return proxy.start()


@pytest.fixture
def forward_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForwardProxy]:
    """A real tinyproxy on 127.0.0.1:<free port>, no authentication."""
    proxy = _start_proxy(tmp_path_factory)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def auth_forward_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForwardProxy]:
    """A real tinyproxy requiring BasicAuth corp / s3cret-proxy-pass."""
    proxy = _start_proxy(tmp_path_factory, user=PROXY_USER, password=PROXY_PASSWORD)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def refusing_proxy_url() -> Iterator[str]:
    """A proxy URL whose port refuses connections (bound, never listening)."""
    sock = reserve_refusing_port()
    try:
        yield f"http://{LOOPBACK}:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost / ::1."""
    return make_test_ca(tmp_path_factory.mktemp("test-ca"))
