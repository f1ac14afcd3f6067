"""Config: YAML < environment, seed variables, secrets by reference, key-path errors, the CLI."""

from __future__ import annotations

import json

import pytest

from gateway.__main__ import main
from gateway.schema import ConfigError, Secret
from gateway.settings import load_settings, normalise_base
from gateway.upstream import choose_route


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_follow_the_seed():
    settings = load_settings(None, {})
    assert settings.upstream.provider == "openai"
    assert settings.upstream.base == "https://api.openai.com"
    assert settings.upstream.api_key_env == "OPENAI_API_KEY"
    assert settings.upstream.api_key is None
    assert settings.server.host == "127.0.0.1" and settings.server.port == 8080


@pytest.mark.parametrize("base", [
    "https://api.openai.com", "https://api.openai.com/", "https://api.openai.com/v1",
    "https://api.openai.com/v1/",
])
def test_model_api_base_is_normalised_so_v1_appears_once(base):
    settings = load_settings(None, {"MODEL_API_BASE": base})
    assert settings.upstream.base == "https://api.openai.com"
    assert normalise_base("http://corp.example/openai/v1") == "http://corp.example/openai"


def test_the_key_comes_from_the_variable_model_api_key_env_names():
    settings = load_settings(None, {"MODEL_API_KEY_ENV": "CHATKIT_KEY", "CHATKIT_KEY": "sk-proj-abcdefgh1234",
                                    "OPENAI_API_KEY": "sk-wrong-one-00000000"})
    assert settings.upstream.api_key == Secret("sk-proj-abcdefgh1234")
    assert "abcdefgh" not in repr(settings)
    assert settings.upstream.api_key.fingerprint == "…1234"


def test_another_provider_requires_base_and_key_variable():
    with pytest.raises(ConfigError, match="MODEL_PROVIDER=azure requires MODEL_API_BASE and MODEL_API_KEY_ENV"):
        load_settings(None, {"MODEL_PROVIDER": "azure"})
    settings = load_settings(None, {"MODEL_PROVIDER": "azure", "MODEL_API_BASE": "https://corp.example/v1/",
                                    "MODEL_API_KEY_ENV": "AZ_KEY"})
    assert settings.upstream.base == "https://corp.example"


def test_environment_wins_over_yaml(tmp_path):
    path = write(tmp_path, "upstream:\n  base: https://yaml.example\nserver:\n  port: 9000\n")
    settings = load_settings(path, {"MODEL_API_BASE": "https://env.example", "GATEWAY__SERVER__PORT": "9100"})
    assert settings.upstream.base == "https://env.example"
    assert settings.server.port == 9100


def test_unknown_keys_fail_with_their_path(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, "upstream:\n  timeouts:\n    conect: 3\n"), {})
    assert caught.value.path == "upstream.timeouts.conect"


def test_wrong_types_fail_with_their_path(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, "server:\n  port: eighty\n"), {})
    assert caught.value.path == "server.port"
    assert "integer" in caught.value.reason


def test_secrets_are_references_never_literals(tmp_path):
    with pytest.raises(ConfigError, match="environment variable PROXY_PASS is not set"):
        load_settings(write(tmp_path, "upstream:\n  proxy:\n    url: http://p:3128\n    username: u\n"
                                      "    password: {$env: PROXY_PASS}\n"), {})
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, "upstream:\n  proxy:\n    url: http://p:3128\n    password: hunter2\n"), {})
    assert caught.value.path == "upstream.proxy.password"


def test_proxy_credentials_never_sit_in_the_url(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, "upstream:\n  proxy:\n    url: http://u:pw@p:3128\n"), {})
    assert caught.value.path == "upstream.proxy.url"
    assert "pw" not in str(caught.value)


def test_environment_proxies_are_split_from_their_credentials():
    settings = load_settings(None, {"HTTPS_PROXY": "http://corp:s3cret@proxy.corp:3128", "NO_PROXY": "internal.corp"})
    proxy = settings.proxy_env.https
    assert proxy.url == "http://proxy.corp:3128"
    assert proxy.username.reveal() == "corp" and proxy.password.reveal() == "s3cret"
    route = choose_route(settings.upstream.base, settings.upstream.proxy, settings.proxy_env)
    assert route.proxy_label == "proxy.corp:3128"
    assert route.proxy_headers == {"Proxy-Authorization": "Basic Y29ycDpzM2NyZXQ="}


def test_no_proxy_bypasses_the_environment_proxy():
    settings = load_settings(None, {"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": "localhost,.openai.com"})
    assert choose_route(settings.upstream.base, None, settings.proxy_env).proxy is None


def test_explicit_proxy_wins_over_the_environment(tmp_path):
    path = write(tmp_path, "upstream:\n  proxy:\n    url: http://explicit.corp:8080\n")
    settings = load_settings(path, {"HTTPS_PROXY": "http://env.corp:3128", "NO_PROXY": ".openai.com"})
    assert choose_route(settings.upstream.base, settings.upstream.proxy, settings.proxy_env).proxy_label \
        == "explicit.corp:8080"


def test_check_config_prints_the_effective_config_with_secrets_masked(tmp_path, capsys):
    path = write(tmp_path, "upstream:\n  proxy:\n    url: http://p.corp:3128\n    username: {$env: PU}\n"
                           "    password: {$env: PP}\n")
    environ = {"OPENAI_API_KEY": "sk-live-verysecretvalue-9876", "PU": "corp", "PP": "proxy-pass-secret"}
    assert main(["check-config", "--config", str(path)], environ) == 0
    out = capsys.readouterr().out
    effective = json.loads(out)
    assert effective["upstream"]["proxy"]["url"] == "http://p.corp:3128"
    assert effective["upstream"]["api_key"].endswith("9876>")
    for secret in ("verysecretvalue", "proxy-pass-secret"):
        assert secret not in out


def test_check_config_names_the_key_path_and_exits_non_zero(tmp_path, capsys):
    path = write(tmp_path, "server:\n  prot: 1\n")
    assert main(["check-config", "--config", str(path)], {}) == 2
    assert "server.prot: unknown key" in capsys.readouterr().err


def test_gateway_config_variable_names_the_file(tmp_path, capsys):
    path = write(tmp_path, "server:\n  port: 8181\n")
    assert main(["check-config"], {"GATEWAY_CONFIG": str(path)}) == 0
    assert json.loads(capsys.readouterr().out)["server"]["port"] == 8181
