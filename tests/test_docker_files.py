"""Dockerfile and docker-compose.yml, checked without a Docker engine: they parse, and their commands,
ports and paths agree with each other, with the README and the Makefile, and with the code."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml

from gateway.settings import ServerSettings, load_settings
from tests.harness import gateway_settings, start_gateway
from tests.live_servers import DEPLOY, ROOT
from tests.support.ports import reserve_refusing_port

README_COMMAND = "python -m gateway serve --config /etc/chatkit-gateway/config.yaml"


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def instruction(name: str) -> list[str]:
    return [arguments for found, arguments in dockerfile() if found == name]


def image_environment() -> dict[str, str]:
    env = {}
    for arguments in instruction("ENV"):
        env.update(dict(pair.split("=", 1) for pair in shlex.split(arguments)))
    return env


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def mounts(service: str) -> dict[str, str]:
    """{container path: host path} of a service's volumes."""
    found = {}
    for volume in compose()["services"][service]["volumes"]:
        source, target = volume.split(":")[:2]
        found[target] = source
    return found


def test_the_image_runs_the_readme_command_as_a_non_root_user():
    assert instruction("FROM") == ["python:3.11-slim"]
    command = json.loads(instruction("CMD")[0])
    assert " ".join(command) == README_COMMAND
    assert README_COMMAND in (ROOT / "README.md").read_text()
    assert compose()["services"]["backend"]["command"] == command
    (user,) = instruction("USER")
    assert user.split(":")[0] not in ("root", "0")
    assert any("pip install /src" in run for run in instruction("RUN"))
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert all(re.match(r"^[A-Za-z0-9_.\[\]-]+==[^,;\s]+(;.*)?$", dep) for dep in dependencies), dependencies


def test_the_image_serves_the_default_port_on_every_interface_with_sqlite_on_its_volume():
    env = image_environment()
    settings = load_settings(ROOT / "config.yaml", env)  # the shipped config under the image's environment
    (volume,) = json.loads(instruction("VOLUME")[0])
    (config_copy,) = [arguments.split()[-1] for arguments in instruction("COPY") if arguments.startswith("config.yaml")]
    assert settings.server.host == "0.0.0.0"
    assert settings.storage.path.startswith(volume + "/")
    assert instruction("EXPOSE") == [str(settings.server.port)] == [str(ServerSettings().port)]
    assert config_copy == README_COMMAND.split()[-1]
    backend = mounts("backend")
    assert backend[config_copy] == "./config.yaml"
    assert volume in backend and backend[volume] in compose()["volumes"]


async def test_the_healthcheck_probes_healthz_without_curl_and_never_through_a_proxy(aiohttp_client, fake_openai,
                                                                                    tmp_path):
    (healthcheck,) = instruction("HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"] and "/healthz" in command[2] and "curl" not in healthcheck
    gateway = await start_gateway(aiohttp_client, gateway_settings(tmp_path, fake_openai.base_url, None))

    async def probe(port: int, proxy: int) -> int:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", command[2], stderr=asyncio.subprocess.DEVNULL,
            env={"GATEWAY__SERVER__PORT": str(port), "HTTP_PROXY": f"http://127.0.0.1:{proxy}", "NO_PROXY": ""})
        return await process.wait()

    with reserve_refusing_port() as refusing:
        nothing = refusing.getsockname()[1]
        assert await probe(gateway.port, proxy=nothing) == 0
        assert await probe(nothing, proxy=nothing) != 0


def test_the_packages_the_image_copies_are_all_the_gateway_needs(tmp_path):
    copied = [arguments.split()[0] for arguments in instruction("COPY") if arguments.split()[-1].startswith("/src")]
    assert sorted(copied) == ["gateway", "plugins", "pyproject.toml"]
    for name in copied:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert sorted(found["include"]) == ["gateway*", "plugins*"]
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import gateway.__main__, plugins; "
              "print(gateway.__main__.__file__, plugins.__file__)")
    imported = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=tmp_path, capture_output=True,
                              text=True, check=True).stdout.split()
    assert all(path.startswith(str(tmp_path)) for path in imported), imported


def test_compose_runs_backend_nginx_and_prometheus_with_the_deploy_files():
    spec = compose()
    assert set(spec["services"]) == {"backend", "nginx", "prometheus"}
    backend, nginx = spec["services"]["backend"], spec["services"]["nginx"]
    assert backend["build"] == "."
    assert backend["env_file"] == [{"path": ".env", "required": False}]
    for service in spec["services"]:
        for target, source in mounts(service).items():
            assert source in spec["volumes"] or (ROOT / source).exists(), f"{service}: {source} → {target}"

    # nginx: the one deploy/nginx.conf, its site/ includes beside it, the gateway service as upstream.
    assert mounts("nginx") == {"/etc/nginx/nginx.conf": "./deploy/nginx.conf", "/etc/nginx/site": "./deploy/nginx-site"}
    includes = re.findall(r"^\s*include (site/\S+);", (DEPLOY / "nginx.conf").read_text(), re.MULTILINE)
    assert {path.removeprefix("site/") for path in includes} == {p.name for p in (DEPLOY / "nginx-site").iterdir()}
    port = int(instruction("EXPOSE")[0])
    assert re.search(rf"^server backend:{port};$", (DEPLOY / "nginx-site/gateway.conf").read_text(), re.MULTILINE)
    assert backend["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert nginx["depends_on"]["backend"]["condition"] == "service_healthy"

    # Only nginx's fixed address is a trusted proxy, on the network both are on.
    subnet = ipaddress.ip_network(spec["networks"]["chatkit"]["ipam"]["config"][0]["subnet"])
    nginx_address = nginx["networks"]["chatkit"]["ipv4_address"]
    trusted = yaml.safe_load(backend["environment"]["GATEWAY__SERVER__TRUSTED_PROXIES"])
    assert trusted == [f"{nginx_address}/32"] and ipaddress.ip_address(nginx_address) in subnet

    # Prometheus: its config and rules side by side, scraping the backend service on the gateway's port.
    config_dir = "/etc/prometheus"
    assert mounts("prometheus")[f"{config_dir}/prometheus.yml"] == "./deploy/prometheus.yml"
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    for rules in prometheus["rule_files"]:
        assert mounts("prometheus")[f"{config_dir}/{rules}"] == f"./deploy/{rules}"
    (job,) = prometheus["scrape_configs"]
    assert job["static_configs"] == [{"targets": [f"backend:{port}"]}]


def test_the_readme_and_the_makefile_use_the_same_commands():
    readme = (ROOT / "README.md").read_text()
    assert "docker compose up -d backend" in readme
    dry_run = subprocess.run(["make", "-n", "run", "doctor", "CONFIG=some.yaml"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
    assert "-m gateway serve --config some.yaml" in dry_run
    assert "-m gateway doctor --config some.yaml" in dry_run
    for command in ("python -m gateway doctor", "promtool check rules deploy/alerts.yml"):
        assert command in readme, command


@pytest.mark.parametrize("name", ["docker-compose.yml", "deploy/prometheus.yml", "deploy/alerts.yml"])
def test_the_yaml_files_parse(name):
    assert isinstance(yaml.safe_load((ROOT / name).read_text()), dict)
