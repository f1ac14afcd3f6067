"""`python -m gateway doctor`: checks the way in to the gateway and its way out, one line per check.

- stream:   the buffering self-check, read through the public URL: events the gateway sends 100 ms
            apart must arrive apart, or something on the path (nginx, a load balancer) buffers streams;
- upstream: GET {base}/v1/models with the gateway's own Upstream (same proxy, CA bundle, timeouts);
- key:      the upstream accepts the key (200, not 401);
- clock:    the upstream's Date header against the local clock.

Each line says OK, FAIL or SKIP and why; the exit status is 1 when a check failed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TextIO

import aiohttp

from . import errors
from .app import model_upstream
from .diag import ROUTE
from .settings import Settings
from .upstream import error_message, trust_context

MAX_CLOCK_SKEW_SECONDS = 10.0
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)
UNSPECIFIED_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


@dataclass(frozen=True)
class Check:
    name: str
    outcome: Literal["OK", "FAIL", "SKIP"]
    detail: str

    def line(self) -> str:
        return f"{self.outcome:<5} {self.name:<9} {self.detail}"


@dataclass(frozen=True)
class Arrival:
    sent: float  # the gateway's monotonic clock when the event left
    received: float  # the local monotonic clock when its bytes arrived


def judge_pacing(arrivals: Sequence[Arrival], first_after: float, encoding: str | None = None) -> Check:
    """Paced events that arrive in bunches mean a buffer on the path; one bunched pair is network noise."""
    if len(arrivals) < 3:
        return Check("stream", "FAIL", f"only {len(arrivals)} diagnostic events arrived")
    bunched = sum(
        1 for before, after in zip(arrivals, arrivals[1:])
        if after.received - before.received < (after.sent - before.sent) / 4
    )
    sent_span = arrivals[-1].sent - arrivals[0].sent
    received_span = arrivals[-1].received - arrivals[0].received
    facts = (f"{len(arrivals)} events sent over {sent_span:.2f} s arrived over {received_span:.2f} s, "
             f"the first after {first_after * 1000:.0f} ms")
    if bunched > 1:
        cause = (f" The stream arrives {encoding}-compressed, and compression holds events back: turn it off "
                 "for text/event-stream." if encoding else "")
        return Check("stream", "FAIL", f"something on the path buffers streams: {facts} ({bunched} of "
                                       f"{len(arrivals) - 1} gaps collapsed).{cause} Set `proxy_buffering off` "
                                       "(or honour X-Accel-Buffering) on every proxy between the clients and "
                                       "the gateway")
    return Check("stream", "OK", f"{facts}: nothing on the path buffers")


def judge_clock(date_header: str | None, local_time: float) -> Check:
    if not date_header:
        return Check("clock", "SKIP", "the upstream sent no Date header")
    try:
        upstream_time = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError):
        return Check("clock", "SKIP", f"the upstream's Date header is not a date: {date_header!r}")
    skew = local_time - upstream_time - 0.5  # Date has whole seconds: on average it is 0.5 s behind
    if abs(skew) > MAX_CLOCK_SKEW_SECONDS:
        direction = "ahead of" if skew > 0 else "behind"
        return Check("clock", "FAIL", f"the local clock is {abs(skew):.0f} s {direction} the upstream's; "
                                      "session expiry and signed tokens go wrong: enable NTP")
    return Check("clock", "OK", f"within {max(abs(skew), 0.5):.1f} s of the upstream's clock")


def frames_of(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete SSE frames in `buffer`, and what is left of it."""
    *frames, rest = buffer.replace(b"\r\n", b"\n").split(b"\n\n")
    return frames, rest


def diag_data(frame: bytes) -> dict[str, Any] | None:
    """The data of a diagnostic event; None for comments (heartbeats) and anything else."""
    for line in frame.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                data = json.loads(line[5:])
            except ValueError:
                return None
            return data if isinstance(data, dict) and "monotonic" in data else None
    return None


async def check_stream(url: str, api_key: str | None, ca_bundle: str | None) -> Check:
    target = url.rstrip("/") + ROUTE
    headers = {"Accept": "text/event-stream", "Accept-Encoding": "gzip, deflate"}  # as a browser asks
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    connector = aiohttp.TCPConnector(ssl=trust_context(ca_bundle))
    arrivals: list[Arrival] = []
    try:
        async with aiohttp.ClientSession(connector=connector, trust_env=False, timeout=STREAM_TIMEOUT) as client:
            started = time.monotonic()
            async with client.get(target, headers=headers) as response:
                if response.status != 200:
                    return Check("stream", "FAIL", await refusal(target, response))
                if response.content_type != "text/event-stream":
                    return Check("stream", "FAIL", f"{target} answered {response.content_type}, not an event "
                                                   "stream: something on the path rewrites it")
                encoding = response.headers.get("Content-Encoding")
                buffer = b""
                async for chunk in response.content.iter_any():
                    received = time.monotonic()
                    frames, buffer = frames_of(buffer + chunk)
                    arrivals += [Arrival(data["monotonic"], received)
                                 for data in map(diag_data, frames) if data is not None]
    except aiohttp.ClientConnectorError as exc:
        reason = getattr(exc, "os_error", None)
        return Check("stream", "FAIL", f"cannot reach {target}: {getattr(reason, 'strerror', None) or exc}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Check("stream", "FAIL", f"{target} broke off after {len(arrivals)} events: "
                                       f"{type(exc).__name__} {exc}".rstrip())
    first_after = arrivals[0].received - started if arrivals else 0.0
    return judge_pacing(arrivals, first_after, encoding)


async def refusal(target: str, response: aiohttp.ClientResponse) -> str:
    body = await response.read()
    try:
        code = json.loads(body).get("error")
    except (ValueError, AttributeError):
        code = None
    reason = f"{response.status} {code or response.reason}"
    if response.status in (401, 403):
        return f"{target} refused the diagnostic stream ({reason}): pass a gateway key with --api-key"
    if response.status == 404:
        return f"{target} has no diagnostic stream (404): is this URL a chatkit-gateway?"
    return f"{target} answered {reason}"


async def check_upstream(settings: Settings) -> list[Check]:
    """Reachability through the configured route, then the key, then the clock, from one GET /v1/models."""
    upstream = model_upstream(settings)
    key = upstream.api_key
    headers = {"Authorization": f"Bearer {key.reveal()}"} if key else {}
    await upstream.open()
    try:
        started = time.monotonic()
        async with upstream.request("GET", "/v1/models", headers=headers, stream=False) as response:
            body = await response.read(8192)
        elapsed = time.monotonic() - started
        local_time = time.time() - elapsed / 2  # the moment the upstream most likely wrote its Date
    except errors.GatewayError as exc:
        skipped = "not checked: the upstream could not be reached"
        return [Check("upstream", "FAIL", f"GET {upstream.base}/v1/models via {upstream.route.proxy_label}: "
                                          f"{exc.text}"),
                Check("key", "SKIP", skipped), Check("clock", "SKIP", skipped)]
    finally:
        await upstream.close()
    status = response.status
    reached = Check("upstream", "FAIL" if status >= 500 else "OK",
                    f"{upstream.base} answered GET /v1/models with {status} in {elapsed * 1000:.0f} ms "
                    f"via {upstream.route.proxy_label}")
    if key is None:
        accepted = Check("key", "FAIL", f"{settings.upstream.api_key_env} is not set")
    elif status == 200:
        accepted = Check("key", "OK", f"the upstream accepts {settings.upstream.api_key_env} ({key.fingerprint})")
    elif status in (401, 403):
        accepted = Check("key", "FAIL", f"the upstream rejects {settings.upstream.api_key_env} "
                                        f"({key.fingerprint}) with {status}: {error_message(body)}")
    else:
        accepted = Check("key", "SKIP", f"the upstream answered {status}, which says nothing about the key")
    return [reached, accepted, judge_clock(response.headers.get("Date"), local_time)]


def default_url(settings: Settings) -> str:
    host = UNSPECIFIED_HOSTS.get(settings.server.host, settings.server.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.server.port}"


async def run(settings: Settings, out: TextIO, *, url: str | None = None, api_key: str | None = None) -> int:
    url = url or default_url(settings)
    out.write(f"chatkit-gateway doctor: {url} -> {settings.upstream.base}\n")
    checks = [await check_stream(url, api_key, settings.upstream.ca_bundle), *await check_upstream(settings)]
    for check in checks:
        out.write(check.line() + "\n")
    out.flush()
    return 1 if any(check.outcome == "FAIL" for check in checks) else 0
