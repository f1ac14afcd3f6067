"""A real forward HTTP proxy (tinyproxy) for integration tests.

``ForwardProxy`` writes a throwaway tinyproxy config into a work directory,
starts ``/usr/bin/tinyproxy -d -c <conf>`` in the foreground on a free
127.0.0.1 port and waits until it accepts connections. Everything tinyproxy
logs goes to ``<workdir>/tinyproxy.log`` so tests can prove that traffic went
through it:

* a plain-http request through the proxy logs
  ``Request (file descriptor N): GET http://127.0.0.1:PORT/path HTTP/1.1``
* an https request (aiohttp sends CONNECT) logs
  ``Request (file descriptor N): CONNECT 127.0.0.1:PORT HTTP/1.1``

``request_lines()`` returns exactly those request lines.

tinyproxy 1.11 notes (Debian bookworm ships 1.11.1):

* ``ConnectPort``: with *no* ConnectPort line every port may be CONNECTed to
  (``ConnectPort 0`` would disable CONNECT). We write none.
* ``Allow 127.0.0.1``: once any Allow/Deny line exists, everything else is
  denied.
* ``BasicAuth user password``: a request with *no* Proxy-Authorization gets
  407; a request with a *wrong* one gets **401** in 1.11.1 (upstream bug
  tinyproxy#532, fixed later to 407). Tests should accept both for "wrong".
* As root, tinyproxy warns "You SHOULD set a UserName" and keeps running as
  root; we set no User/Group so it also works unprivileged.
* On SIGTERM it logs "Shutting down." and joins its client threads before
  exiting, so ``stop()`` waits, then kills as a fallback.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .ports import LOOPBACK, free_port, wait_for_port

TINYPROXY_BIN = "/usr/bin/tinyproxy"
INSTALL_HINT = "install it with `bash scripts/install-test-deps.sh` (Debian package 'tinyproxy')"

_REQUEST_RE = re.compile(r"Request \(file descriptor \d+\): (.+)$")


class ProxyStartError(RuntimeError):
    pass


def tinyproxy_missing_reason(binary: str = TINYPROXY_BIN) -> str | None:
    """None when ``binary`` is usable, else a message explaining what is missing."""
    if os.path.isfile(binary) and os.access(binary, os.X_OK):
        return None
    found = shutil.which("tinyproxy")
    extra = f" (a tinyproxy exists at {found}, but the tests use {binary})" if found else ""
    return f"tinyproxy binary not found at {binary}{extra}: {INSTALL_HINT}"


class ForwardProxy:
    """A tinyproxy process on 127.0.0.1:<free port>. Use as a context manager.

    Attributes (valid after ``start()``):
      host, port        127.0.0.1 and the listening port
      url               ``http://127.0.0.1:PORT`` (no credentials)
      auth_url          ``http://user:password@127.0.0.1:PORT`` (== url without auth)
      user, password    BasicAuth credentials, or None
      workdir           directory holding the config and logs
      conf_path         the generated tinyproxy.conf
      log_path          tinyproxy's LogFile (what tests read)
      stderr_path       tinyproxy's stdout/stderr (normally empty)
      process           the ``subprocess.Popen``
    """

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        user: str | None = None,
        password: str | None = None,
        binary: str = TINYPROXY_BIN,
        log_level: str = "Info",
        timeout: int = 30,
        via_proxy_name: str = "chatkit-test-proxy",
        extra_config: str = "",
        start_timeout: float = 10.0,
    ) -> None:
        if (user is None) != (password is None):
            raise ValueError("give both user and password, or neither")
        self.binary = binary
        self.user = user
        self.password = password
        self.log_level = log_level
        self.timeout = timeout
        self.via_proxy_name = via_proxy_name
        self.extra_config = extra_config
        self.start_timeout = start_timeout
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else None
        self.host = LOOPBACK
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.conf_path: Path | None = None
        self.log_path: Path | None = None
        self.stderr_path: Path | None = None

    # -- urls -------------------------------------------------------------
    @property
    def url(self) -> str:
        self._require_started()
        return f"http://{self.host}:{self.port}"

    @property
    def auth_url(self) -> str:
        self._require_started()
        if self.user is None:
            return self.url
        from urllib.parse import quote

        creds = f"{quote(self.user, safe='')}:{quote(self.password or '', safe='')}"
        return f"http://{creds}@{self.host}:{self.port}"

    @property
    def proxy_authorization(self) -> str | None:
        """The ``Proxy-Authorization`` header value (``Basic ...``), or None."""
        if self.user is None:
            return None
        import base64

        creds = f"{self.user}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(creds).decode("ascii")

    @property
    def proxy_headers(self) -> dict[str, str]:
        """Headers for aiohttp's ``proxy_headers=`` ({} without auth).

        aiohttp 3.14.5 quirk: ``proxy_headers`` only reach the proxy on the
        CONNECT request, i.e. for **https** targets. For a plain **http**
        target they are silently dropped (tinyproxy answers 407); there, put
        the header in the request's ``headers=`` or use ``auth_url``
        (credentials in the proxy URL work for both). ``proxy_auth=BasicAuth``
        works for both but is deprecated in 3.14 (DeprecationWarning, an
        error under filterwarnings=error).
        """
        value = self.proxy_authorization
        return {"Proxy-Authorization": value} if value else {}

    # -- config -----------------------------------------------------------
    def _config_text(self) -> str:
        assert self.log_path is not None
        lines = [
            "# generated by tests/support/forward_proxy.py",
            f"Port {self.port}",
            f"Listen {self.host}",
            f"Timeout {self.timeout}",
            f'LogFile "{self.log_path}"',
            "Syslog Off",
            f"LogLevel {self.log_level}",
            "MaxClients 100",
            f"Allow {LOOPBACK}",
            f'ViaProxyName "{self.via_proxy_name}"',
            # No ConnectPort line: in tinyproxy 1.11 that allows CONNECT to
            # every port (a single "ConnectPort 0" would disable CONNECT).
        ]
        if self.user is not None:
            lines.append(f"BasicAuth {self.user} {self.password}")
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    # -- lifecycle --------------------------------------------------------
    def start(self) -> "ForwardProxy":
        if self.process is not None:
            raise RuntimeError("proxy already started")
        reason = tinyproxy_missing_reason(self.binary)
        if reason:
            raise FileNotFoundError(reason)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="tinyproxy-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path = self.workdir / "tinyproxy.conf"
        self.log_path = self.workdir / "tinyproxy.log"
        self.stderr_path = self.workdir / "tinyproxy.stderr"

        last_error = ""
        for _attempt in range(3):  # free_port() can race with another process
            self.port = free_port(self.host)
            self.conf_path.write_text(self._config_text())
            self.log_path.write_text("")
            with open(self.stderr_path, "wb") as err:
                self.process = subprocess.Popen(
                    [self.binary, "-d", "-c", str(self.conf_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=err,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # no Ctrl-C from the terminal
                )
            if self._wait_ready():
                return self
            last_error = self._diagnostics()
            self._terminate()
        self.port = None
        self._cleanup_workdir()
        raise ProxyStartError(f"tinyproxy did not start: {last_error}")

    def _wait_ready(self) -> bool:
        assert self.process is not None and self.port is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            # The log line is written right after listen(); waiting for it
            # avoids a probe connection appearing in the proxy's log.
            if "Accepting connections" in self.log_text():
                return True
            time.sleep(0.02)
        # Fallback for a tinyproxy that logs differently: a TCP probe.
        return self.process.poll() is None and wait_for_port(self.host, self.port, 0.5)

    def _diagnostics(self) -> str:
        rc = self.process.poll() if self.process else None
        parts = [f"exit code {rc}" if rc is not None else "still running but not accepting"]
        for path in (self.stderr_path, self.log_path):
            if path and path.exists():
                text = path.read_text(errors="replace").strip()
                if text:
                    parts.append(f"{path.name}:\n{text[-2000:]}")
        return "\n".join(parts)

    def _terminate(self, timeout: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        else:
            proc.wait()

    def stop(self) -> None:
        """Terminate tinyproxy (SIGTERM, wait, SIGKILL fallback). Keeps the logs
        unless the work directory was created by this object."""
        self._terminate()
        self._cleanup_workdir()

    def _cleanup_workdir(self) -> None:
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> "ForwardProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _require_started(self) -> None:
        if self.port is None:
            raise RuntimeError("proxy not started")

    # -- log --------------------------------------------------------------
    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def request_lines(self) -> list[str]:
        """The request lines tinyproxy received, in order, e.g.
        ``"GET http://127.0.0.1:4242/x HTTP/1.1"`` or ``"CONNECT 127.0.0.1:4243 HTTP/1.1"``."""
        out = []
        for line in self.log_text().splitlines():
            m = _REQUEST_RE.search(line)
            if m:
                out.append(m.group(1).strip())
        return out

    def wait_for_log(self, needle: str, timeout: float = 5.0) -> str:
        """Wait until ``needle`` appears in the log; return the log. Raises
        AssertionError with the log tail on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            if needle in text:
                return text
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{needle!r} not in tinyproxy log {self.log_path} after {timeout}s; "
                    f"tail:\n{text[-3000:]}"
                )
            time.sleep(0.02)

    def open_connection_count(self) -> int:
        """Upstream connections tinyproxy opened and has not closed yet
        (from its log: "Established connection" minus "Closed connection")."""
        text = self.log_text()
        return text.count("Established connection to host") - text.count(
            "Closed connection between"
        )

    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait (without blocking the event loop) until every connection
        tinyproxy relayed is closed.

        Call it after closing the client session and before an in-process
        upstream server is torn down: a client closing a TLS connection only
        starts the close_notify exchange, and if the server is shut down
        before the tunnel is gone, asyncio leaves the server-side socket
        unclosed (a ResourceWarning, an error under filterwarnings=error).
        """
        import asyncio

        deadline = time.monotonic() + timeout
        while self.open_connection_count() > 0:
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"tinyproxy still relays {self.open_connection_count()} connection(s) "
                    f"after {timeout}s; log tail:\n{self.log_text()[-3000:]}"
                )
            await asyncio.sleep(0.01)

    def __repr__(self) -> str:
        auth = f" auth={self.user}" if self.user else ""
        return f"<ForwardProxy tinyproxy {self.host}:{self.port}{auth} log={self.log_path}>"
