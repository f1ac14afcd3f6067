"""metrics: /metrics passes promtool; counters and histograms move with traffic; labels stay bounded."""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import string
import subprocess
import sys
from pathlib import Path

import aiohttp
import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway import keys
from plugins.metrics import DURATION_BUCKETS, Buckets, value_of
from tests.plugin_helpers import KEY, gateway_with, new_session, turn
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
ADMIN = {"X-API-Key": KEY}
ENV = {"GATEWAY_ADMIN_API_KEY": KEY}


def value(gateway, name: str, **labels: str) -> float:
    return gateway.app[keys.metrics_registry].get_sample_value(name, labels) or 0.0


def series(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def promtool_check(text: str) -> None:
    """`promtool check metrics` must accept the exposition; a missing promtool is a failure, not a skip."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: install the Debian package `prometheus` (scripts/install-test-deps.sh)",
                    pytrace=False)
    checked = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()


async def test_metrics_pass_promtool_after_every_kind_of_traffic(aiohttp_client, tmp_path, fake_openai):
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, "access_log", "metrics", "auth", "workflow",
                                 environ=ENV, extra_yaml="workflows:\n  - {slug: support, workflow_id: wf_support}\n")
    secret = await new_session(gateway, {**ADMIN, "X-ChatKit-Workflow": "support"})
    async with gateway.post("/api/chatkit/conversation", json=turn("hi"),
                            headers={"Authorization": f"Bearer {secret}"}) as response:
        await response.read()
    await gateway.get("/api/chatkit/threads")  # 401
    await gateway.get("/api/chatkit/threads", headers={**ADMIN, "x-fake-fault": "status=503"})
    await gateway.get("/api/chatkit/threads", headers={**ADMIN, "X-ChatKit-Workflow": "nope"})  # 404
    response = await gateway.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    promtool_check(text)
    for name in ("gateway_requests_total", "gateway_request_duration_seconds_bucket", "gateway_requests_in_flight",
                 "gateway_upstream_request_duration_seconds_bucket", "gateway_upstream_errors_total",
                 "gateway_active_streams", "gateway_stream_ttfb_seconds_bucket", "gateway_stream_events_total",
                 "gateway_overhead_seconds_bucket", "gateway_sessions_created_total", "gateway_auth_failures_total",
                 "gateway_build_info"):
        assert re.search(rf"^{name}[{{ ]", text, re.M), name
    assert "# TYPE gateway_config_reloads_total counter" in text


async def test_requests_are_counted_and_timed_by_route_template_method_and_status_class(
        aiohttp_client, tmp_path, fake_openai):
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, "metrics")
    labels = {"route": "/api/chatkit/threads/{id}", "method": "GET", "status": "4xx"}
    for thread in ("cthr_a", "cthr_b", "cthr_c"):
        assert (await gateway.get(f"/api/chatkit/threads/{thread}")).status == 404  # the fake knows none
    assert value(gateway, "gateway_requests_total", **labels) == 3
    assert value(gateway, "gateway_request_duration_seconds_count", **labels) == 3
    assert value(gateway, "gateway_request_duration_seconds_bucket", **labels, le="+Inf") == 3
    assert value(gateway, "gateway_overhead_seconds_count", route="/api/chatkit/threads/{id}") == 3
    assert value(gateway, "gateway_upstream_request_duration_seconds_count", upstream="openai") == 3
    overhead = value(gateway, "gateway_overhead_seconds_sum", route="/api/chatkit/threads/{id}")
    assert 0 < overhead < value(gateway, "gateway_request_duration_seconds_sum", **labels)
    assert value(gateway, "gateway_requests_in_flight") == 0
    text = await (await gateway.get("/metrics")).text()
    assert "cthr_a" not in text  # ids are never labels


async def test_in_flight_and_active_streams_rise_during_a_stream_and_fall_after(aiohttp_client, tmp_path, fake_openai):
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, "metrics")
    secret = await new_session(gateway)
    route = "/api/chatkit/conversation"
    async with gateway.post(route, json=turn("one two three"), headers={"Authorization": f"Bearer {secret}"}) as r:
        first = await r.content.readany()
        assert value(gateway, "gateway_requests_in_flight") == 1
        assert value(gateway, "gateway_active_streams") == 1
        assert value(gateway, "gateway_stream_ttfb_seconds_count", route=route) == 1  # at the first chunk
        body = first + await r.read()
    await asyncio.sleep(0.05)
    assert value(gateway, "gateway_requests_in_flight") == 0
    assert value(gateway, "gateway_active_streams") == 0
    assert value(gateway, "gateway_stream_events_total", route=route) >= 5
    assert value(gateway, "gateway_requests_total", route=route, method="POST", status="2xx") == 1
    assert b"thread.created" in body
    assert value(gateway, "gateway_stream_ttfb_seconds_count", route="/api/chatkit/sessions") == 0  # JSON: no stream


async def test_upstream_errors_are_counted_by_upstream_and_kind(aiohttp_client, tmp_path, fake_openai):
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, "metrics")
    assert (await gateway.get("/api/chatkit/threads", headers={"x-fake-fault": "status=503"})).status == 503
    assert value(gateway, "gateway_upstream_errors_total", upstream="openai", kind="status_5xx") == 1
    down = await gateway_with(aiohttp_client, tmp_path / "down", fake_openai, "metrics",
                              base_url=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert (await down.get("/api/chatkit/threads")).status == 502
    assert value(down, "gateway_upstream_errors_total", upstream="openai", kind="upstream_unavailable") == 1
    assert value(down, "gateway_upstream_request_duration_seconds_count", upstream="openai") == 0


async def test_sessions_are_counted_by_workflow_slug_and_outcome(aiohttp_client, tmp_path, fake_openai):
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, "metrics", "workflow",
                                 extra_yaml="workflows:\n  - {slug: support, workflow_id: wf_support}\n")
    await new_session(gateway, {"X-ChatKit-Workflow": "support"})
    await new_session(gateway)
    response = await gateway.post("/api/chatkit/sessions", json={"user": "u", "workflow": {"id": "wf_fail500"}})
    assert response.status == 500
    assert value(gateway, "gateway_sessions_created_total", slug="support", outcome="created") == 1
    assert value(gateway, "gateway_sessions_created_total", slug="unknown", outcome="created") == 1
    assert value(gateway, "gateway_sessions_created_total", slug="unknown", outcome="failed") == 1


async def test_auth_failures_are_counted_by_reason(aiohttp_client, tmp_path, fake_openai):
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, "metrics", "auth")
    await gateway.get("/api/chatkit/threads")
    await gateway.get("/api/chatkit/threads", headers={"X-API-Key": "gk_" + "n" * 40})
    text = await (await gateway.get("/metrics")).text()
    assert 'gateway_auth_failures_total{reason="missing_credential"} 1.0' in text
    assert 'gateway_auth_failures_total{reason="unknown_key"} 1.0' in text
    assert 'gateway_requests_total{method="GET",route="/api/chatkit/{tail}",status="4xx"} 2.0' in text


def random_path(rng: random.Random) -> tuple[str, str]:
    word = "".join(rng.choices(string.ascii_letters + string.digits, k=12))
    method = rng.choice(["GET", "POST", "DELETE", "PROPFIND", "MKCOL"])
    shapes = [
        f"/api/chatkit/{word}",
        f"/api/chatkit/threads/cthr_{word}",
        f"/api/chatkit/threads/cthr_{word}/items",
        "/api/chatkit/threads" + f"/x_{word}" * rng.randint(1, 30),
        "/api/chatkit/" + "/".join(rng.choice(["sessions", "items", f"id_{word}"]) for _ in range(rng.randint(1, 8))),
        f"/{word}/{word}",
        f"/api/chatkit/{word}?user={word}",
    ]
    return method, rng.choice(shapes)


async def test_series_stay_bounded_after_a_thousand_random_paths(aiohttp_client, tmp_path, fake_openai):
    cap = 20  # distinct route labels kept; later ones are "other"
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai, {"name": "metrics", "max_label_values": cap})
    rng = random.Random(3)
    words = set()
    for _ in range(1000 // 50):
        batch = [random_path(rng) for _ in range(50)]
        words.update(re.findall(r"[A-Za-z0-9]{12}", " ".join(path for _, path in batch)))
        for answer in await asyncio.gather(*(gateway.request(method, path) for method, path in batch)):
            answer.release()
    text = await (await gateway.get("/metrics")).text()
    samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    routes = {s.labels["route"] for s in samples if "route" in s.labels}
    assert len(routes) <= cap + 1 and "other" in routes
    assert {s.labels["method"] for s in samples if "method" in s.labels} <= {"GET", "POST", "DELETE", "other"}
    assert {s.labels["status"] for s in samples if "status" in s.labels} <= {"2xx", "4xx", "5xx"}
    label_sets = {tuple(sorted(s.labels.items())) for s in samples if s.name == "gateway_requests_total"}
    assert len(label_sets) <= (cap + 1) * 4 * 3
    # Per label set: a counter (2 samples with _created) and a histogram (14 buckets, +Inf, count, sum, created);
    # per route: the overhead histogram (12 buckets, +Inf, count, sum, created); and a few fixed series.
    assert len(samples) == len(series(text)) <= len(label_sets) * 20 + len(routes) * 16 + 50
    assert not any(word in text for word in words)  # no raw path, id or query value is a label
    promtool_check(text)


async def test_two_apps_in_one_process_have_their_own_registries(aiohttp_client, tmp_path, fake_openai):
    one = await gateway_with(aiohttp_client, tmp_path / "one", fake_openai, "metrics")
    two = await gateway_with(aiohttp_client, tmp_path / "two", fake_openai, "metrics")
    await one.get("/api/chatkit/threads")
    labels = {"route": "/api/chatkit/threads", "method": "GET", "status": "2xx"}
    assert value(one, "gateway_requests_total", **labels) == 1
    assert value(two, "gateway_requests_total", **labels) == 0
    assert prometheus_client.REGISTRY.get_sample_value("gateway_requests_total", labels) is None


async def test_metrics_on_their_own_port_behind_a_bearer_token(aiohttp_client, tmp_path, fake_openai):
    port = free_port()
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai,
                                 {"name": "metrics", "port": port, "token": {"$env": "METRICS_TOKEN"}},
                                 environ={"METRICS_TOKEN": "scrape-token-0123456789"})
    await gateway.get("/api/chatkit/threads")
    assert (await gateway.get("/metrics")).status == 404  # not on the main port
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as client:
        for headers in ({}, {"Authorization": "Bearer wrong-token"}):
            async with client.get(url, headers=headers) as response:
                assert response.status == 401
                assert (await response.json())["error"] == "unauthenticated"
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
        async with client.get(url, headers={"Authorization": "Bearer scrape-token-0123456789"}) as response:
            assert response.status == 200
            text = await response.text()
    assert 'gateway_requests_total{method="GET",route="/api/chatkit/threads",status="2xx"} 1.0' in text
    assert "scrape-token" not in text
    promtool_check(text)


async def test_a_metrics_token_guards_the_main_port_too(aiohttp_client, tmp_path, fake_openai):
    gateway = await gateway_with(aiohttp_client, tmp_path, fake_openai,
                                 {"name": "metrics", "token": {"$env": "METRICS_TOKEN"}},
                                 environ={"METRICS_TOKEN": "scrape-token-0123456789"})
    assert (await gateway.get("/metrics")).status == 401
    assert (await gateway.get("/metrics", headers={"Authorization": "Bearer scrape-token-0123456789"})).status == 200


def test_the_fast_paths_move_the_same_samples_as_prometheus_clients_own_methods():
    """Buckets and value_of reach into prometheus_client's children: a new version that changes them fails here."""
    amounts = [0.0, 0.005, 0.0050001, 0.3, 1.0, 299.9, 300.0, 300.1, 1e9] + [random.expovariate(5) for _ in range(500)]
    expositions = []
    for fast in (True, False):
        registry = CollectorRegistry()
        histogram = Histogram("h", "h", ["route"], buckets=DURATION_BUCKETS, registry=registry).labels("r")
        counter = Counter("c", "c", ["route"], registry=registry).labels("r")
        gauge = Gauge("g", "g", registry=registry)
        observe = Buckets(histogram).observe if fast else histogram.observe
        count, level = (value_of(counter).inc, value_of(gauge).inc) if fast else (counter.inc, gauge.inc)
        for amount in amounts:
            observe(amount)
            count(3)
            level(-1)
        expositions.append([line for line in generate_latest(registry).decode().splitlines() if "_created" not in line])
    assert expositions[0] == expositions[1]
    assert 'h_bucket{le="300.0",route="r"} 507.0' in expositions[0]


WORKER = """
import asyncio, sys
from aiohttp.test_utils import TestClient, TestServer
from gateway.app import create_app
from gateway.settings import load_settings
from plugins import REGISTRY

async def main(db, requests):
    settings = load_settings(None, {"GATEWAY__STORAGE__PATH": db, "GATEWAY__PLUGINS": "[metrics]"})
    async with TestClient(TestServer(create_app(settings, REGISTRY, {}))) as client:
        for _ in range(requests):
            await client.get("/api/chatkit/threads")  # no upstream key: a quick 503
        print(await (await client.get("/metrics")).text())

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_several_worker_processes_add_up_in_multiprocess_mode(tmp_path):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}

    async def worker(requests: int) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER, str(tmp_path / "gateway.db"), str(requests), cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        return out.decode()

    await worker(3)
    text = await worker(4)  # the second worker's /metrics also sums the first one's files
    assert 'gateway_requests_total{method="GET",route="/api/chatkit/threads",status="5xx"} 7.0' in text
    assert re.search(r"^gateway_build_info\{.*\} 1\.0$", text, re.M)
    promtool_check(text)
