"""`python -m gateway doctor`: one line per check, a non-zero exit when one fails, and the reason."""

from __future__ import annotations

import asyncio
import io
import sys
import time
from email.utils import formatdate

import pytest

from gateway import diag, doctor
from tests.harness import gateway_settings, start_gateway
from tests.live_servers import ROOT, running_gateway, running_nginx
from tests.support.ports import reserve_refusing_port

ADMIN_KEY = "gk_doctor_admin_key_0123456789abcdefghijkl"
# An intermediary that really holds events back: nginx 1.22 with `proxy_buffering on` alone still
# passes each chunk once the gateway goes quiet; compressing the buffered stream is what bunches it.
BUFFERING_NGINX = {
    "proxy_buffering": "proxy_buffering on; proxy_ignore_headers X-Accel-Buffering; proxy_buffers 8 1m;",
    "gzip": "gzip on; gzip_types text/event-stream; gzip_min_length 1;",
}


def outcomes(report: str) -> dict[str, str]:
    """{check name: OK | FAIL | SKIP} from the doctor's lines."""
    rows = [line.split(None, 2) for line in report.splitlines()[1:]]
    return {name: outcome for outcome, name, _ in rows}


def line_of(report: str, name: str) -> str:
    return next(line for line in report.splitlines() if line.split()[1:2] == [name])


async def run_doctor(settings, **kwargs) -> tuple[int, str]:
    out = io.StringIO()
    status = await doctor.run(settings, out, **kwargs)
    return status, out.getvalue()


@pytest.mark.integration
async def test_the_doctor_command_passes_against_a_direct_gateway(tmp_path, fake_openai):
    async with running_gateway(tmp_path, fake_openai.base_url, fake_openai.api_key) as gateway:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "doctor", "--config", str(gateway.config_path), "--url", gateway.url,
            cwd=ROOT, env=gateway.environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        report = (await process.communicate())[0].decode()
    assert process.returncode == 0, report
    assert outcomes(report) == {"stream": "OK", "upstream": "OK", "key": "OK", "clock": "OK"}, report
    assert "nothing on the path buffers" in line_of(report, "stream")
    assert f"{fake_openai.base_url} answered GET /v1/models with 200" in line_of(report, "upstream")
    assert fake_openai.requests_to("/v1/models")[-1].headers["authorization"] == f"Bearer {fake_openai.api_key}"
    assert fake_openai.api_key not in report


@pytest.mark.integration
async def test_the_doctor_reports_an_nginx_that_buffers_streams(tmp_path, fake_openai):
    settings = gateway_settings(tmp_path, fake_openai.base_url, fake_openai.api_key)
    async with running_gateway(tmp_path / "gateway", fake_openai.base_url, fake_openai.api_key) as gateway, \
            running_nginx(tmp_path / "nginx", gateway.port, directives=BUFFERING_NGINX) as nginx:
        status, report = await run_doctor(settings, url=nginx.url)
    assert status == 1
    assert outcomes(report) == {"stream": "FAIL", "upstream": "OK", "key": "OK", "clock": "OK"}, report
    stream = line_of(report, "stream")
    assert "something on the path buffers streams" in stream and "gzip-compressed" in stream
    assert "proxy_buffering off" in stream


async def test_a_key_the_upstream_rejects_fails_the_key_check(aiohttp_client, fake_openai, tmp_path):
    settings = gateway_settings(tmp_path, fake_openai.base_url, "sk-rejected-by-upstream-9999")
    gateway = await start_gateway(aiohttp_client, settings)
    status, report = await run_doctor(settings, url=str(gateway.make_url("")))
    assert status == 1
    assert outcomes(report) == {"stream": "OK", "upstream": "OK", "key": "FAIL", "clock": "OK"}, report
    key = line_of(report, "key")
    assert "rejects OPENAI_API_KEY (…9999) with 401: Incorrect API key provided" in key
    assert "sk-rejected-by-upstream" not in report


async def test_a_missing_key_fails_the_key_check_but_the_upstream_is_still_reached(fake_openai, tmp_path):
    settings = gateway_settings(tmp_path, fake_openai.base_url, None)
    status, report = await run_doctor(settings, url="http://127.0.0.1:9")
    assert status == 1
    assert outcomes(report)["upstream"] == "OK"
    assert line_of(report, "key").endswith("OPENAI_API_KEY is not set")


async def test_unreachable_gateway_and_refusing_proxy_are_named(fake_openai, tmp_path):
    with reserve_refusing_port() as refusing_gateway, reserve_refusing_port() as refusing_proxy:
        proxy = f"127.0.0.1:{refusing_proxy.getsockname()[1]}"
        settings = gateway_settings(tmp_path, fake_openai.base_url, fake_openai.api_key,
                                    environ={"HTTP_PROXY": f"http://{proxy}"})
        url = f"http://127.0.0.1:{refusing_gateway.getsockname()[1]}"
        status, report = await run_doctor(settings, url=url)
    assert status == 1
    assert outcomes(report) == {"stream": "FAIL", "upstream": "FAIL", "key": "SKIP", "clock": "SKIP"}, report
    assert f"cannot reach {url}/api/chatkit/_diag/stream" in line_of(report, "stream")
    assert f"via {proxy}" in line_of(report, "upstream") and "proxy" in line_of(report, "upstream").split("via")[1]
    assert not fake_openai.requests


async def test_the_diagnostic_stream_is_guarded_by_the_auth_plugin(aiohttp_client, fake_openai, tmp_path):
    settings = gateway_settings(tmp_path, fake_openai.base_url, fake_openai.api_key, config="plugins: [auth]\n",
                                environ={"GATEWAY_ADMIN_API_KEY": ADMIN_KEY})
    gateway = await start_gateway(aiohttp_client, settings)
    status, report = await run_doctor(settings, url=str(gateway.make_url("")))
    assert status == 1
    assert "(401 unauthenticated): pass a gateway key with --api-key" in line_of(report, "stream")
    status, report = await run_doctor(settings, url=str(gateway.make_url("")), api_key=ADMIN_KEY)
    assert status == 0, report


async def test_the_diagnostic_stream_paces_timestamped_events_like_a_relayed_stream(aiohttp_client, fake_openai,
                                                                                    tmp_path):
    gateway = await start_gateway(aiohttp_client, gateway_settings(tmp_path, fake_openai.base_url, None))
    started = time.monotonic()
    response = await gateway.get("/api/chatkit/_diag/stream")
    body = await response.read()
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response.headers["X-Accel-Buffering"] == "no" and response.headers["Cache-Control"] == "no-cache"
    frames, rest = doctor.frames_of(body)
    data = [doctor.diag_data(frame) for frame in frames]
    assert rest == b"" and [d["seq"] for d in data] == list(range(diag.EVENTS))
    assert 0.85 <= data[-1]["monotonic"] - data[0]["monotonic"] < 1.2
    assert abs(data[0]["wall_time"] - time.time()) < 2 and time.monotonic() - started >= 0.9
    assert not fake_openai.requests  # answered by the gateway itself


@pytest.mark.parametrize(("offset", "outcome"), [(0, "OK"), (-4, "OK"), (120, "FAIL"), (-3600, "FAIL")])
def test_clock_skew_against_the_upstreams_date_header(offset, outcome):
    now = time.time()
    check = doctor.judge_clock(formatdate(now + offset, usegmt=True), now)
    assert check.outcome == outcome, check
    if offset == 120:
        assert "120 s behind the upstream's" in check.detail
