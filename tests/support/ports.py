"""Free TCP ports on the loopback interface for test servers and proxies."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that nothing listens on right now.

    The kernel picks the port (bind to 0); the socket is closed before
    returning, so another process could in principle take it before the
    caller binds. Callers that start an external program on it should retry on
    "address in use" (``tests.support.forward_proxy`` does).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def reserve_refusing_port(host: str = LOOPBACK) -> socket.socket:
    """Bind a socket to a free port without listening on it, and return it.

    While the socket stays open, the port is held (no other process can take
    it) yet every connection to it is refused (ECONNREFUSED), because nothing
    called ``listen()``. Close the socket when done.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def wait_for_port(host: str, port: int, timeout: float = 5.0) -> bool:
    """Poll until a TCP connect to ``host:port`` succeeds; False on timeout."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False
