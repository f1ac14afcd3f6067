"""A real Prometheus scrapes a real gateway with deploy/prometheus.yml, and loads deploy/alerts.yml,
whose rules promtool accepts and whose metrics the gateway really exposes."""

from __future__ import annotations

import re
import subprocess

import aiohttp
import pytest
import yaml

from tests.live_servers import DEPLOY, PROMTOOL, require_program, running_gateway, running_prometheus, wait_until

pytestmark = pytest.mark.integration

CONFIG = "plugins: [access_log, metrics]\n"
METRIC_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def alert_expressions() -> list[str]:
    groups = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def exposed_families(metrics: str) -> set[str]:
    return set(re.findall(r"^# TYPE (\S+) ", metrics, re.MULTILINE))


def family_of(name: str, families: set[str]) -> str | None:
    for candidate in (name, *(name.removesuffix(suffix) for suffix in METRIC_SUFFIXES if name.endswith(suffix))):
        if candidate in families:
            return candidate
    return None


@pytest.mark.parametrize("arguments", [["check", "rules", "deploy/alerts.yml"],
                                       ["check", "config", "deploy/prometheus.yml"]])
def test_promtool_accepts_the_shipped_files(arguments):
    result = subprocess.run([require_program(PROMTOOL), *arguments], cwd=DEPLOY.parent, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


async def test_prometheus_scrapes_the_gateway_and_sees_its_traffic(tmp_path, fake_openai):
    async with running_gateway(tmp_path / "gateway", fake_openai.base_url, fake_openai.api_key,
                               config=CONFIG) as gateway, \
            running_prometheus(tmp_path / "prometheus", [f"127.0.0.1:{gateway.port}"]) as prometheus:
        async with aiohttp.ClientSession() as client:
            for _ in range(5):
                async with client.get(gateway.url + "/api/chatkit/threads") as response:
                    assert response.status == 200

        # Prometheus applies new targets at most every 5 s: the first scrape comes after about that long.
        up = await wait_until(lambda: prometheus.query('up{job="chatkit-gateway"} == 1'), "up == 1")
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{gateway.port}"

        async def counted() -> list:
            result = await prometheus.query('sum(gateway_requests_total{route="/api/chatkit/threads"})')
            return result if result and float(result[0]["value"][1]) == 5 else []

        await wait_until(counted, "Prometheus to see the 5 relayed requests")

        rules = (await prometheus.api("/api/v1/rules"))["groups"]
        loaded = {rule["name"]: rule["health"] for group in rules for rule in group["rules"]}
        assert len(loaded) == len(alert_expressions()) and set(loaded.values()) == {"ok"}, loaded


async def test_every_metric_the_alert_rules_use_is_one_the_gateway_exposes(tmp_path, fake_openai):
    config = "plugins: [access_log, metrics, auth]\n"
    async with running_gateway(tmp_path, fake_openai.base_url, fake_openai.api_key, config=config) as gateway:
        async with aiohttp.ClientSession() as client:
            async with client.get(gateway.url + "/metrics") as response:
                families = exposed_families(await response.text())
    used = {name for expr in alert_expressions() for name in re.findall(r"\b(gateway_[a-z_]+)", expr)}
    assert used and {name: family_of(name, families) for name in used if not family_of(name, families)} == {}
