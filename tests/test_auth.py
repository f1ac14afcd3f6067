"""auth: API keys, trusted headers, JWT; 401/403/429; the consumed credential never goes upstream."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway import keys
from gateway.__main__ import main
from gateway.apikeys import hash_key
from gateway.app import create_app
from gateway.chain import wrap
from gateway.principal import require_admin
from gateway.schema import ConfigError
from plugins import REGISTRY
from tests.harness import gateway_settings
from tests.plugin_helpers import KEY, new_session, plugins_yaml, stream_turn

ISSUER, AUDIENCE = "https://idp.example", "chatkit-gateway"
JWT_SECRET = "jwt-shared-secret-of-at-least-32-bytes!!"
FAST_POLL = {"GATEWAY__STORAGE__POLL_SECONDS": "0.05"}  # changes by other processes seen within 50 ms


async def whoami(request: web.Request) -> web.Response:
    """A gateway route for the tests: the caller, or 401/403 when ?admin asks for an admin."""
    principal = require_admin(request) if "admin" in request.query else request.get(keys.principal)
    if principal is None:
        return web.json_response(None)
    return web.json_response({"id": principal.id, "name": principal.name, "admin": principal.is_admin,
                              "groups": list(principal.groups), "via": principal.via})


class Gateway:
    """A started gateway with a /api/test/whoami route inside the chain, and the settings it came from."""

    def __init__(self, client, tmp_path, environ) -> None:
        self.client = client
        self.app = client.app
        self.config = str(tmp_path / "config.yaml")
        self.environ = environ

    def failures(self, reason: str) -> float:
        return self.app[keys.metrics_registry].get_sample_value("gateway_auth_failures_total", {"reason": reason}) or 0

    async def whoami(self, **headers: str) -> tuple[int, object]:
        response = await self.client.get("/api/test/whoami", headers=headers)
        return response.status, await response.json()

    async def cli(self, capsys, *argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, [*argv, "--config", self.config], self.environ)
        out, err = capsys.readouterr()
        return code, out, err


@pytest.fixture
def start(aiohttp_client, tmp_path, fake_openai):
    async def start(*plugins, environ=None) -> Gateway:
        env = {"JWT_SECRET": JWT_SECRET, "MODEL_API_BASE": fake_openai.base_url,
               "OPENAI_API_KEY": fake_openai.api_key, "GATEWAY__STORAGE__PATH": str(tmp_path / "gateway.db"),
               **FAST_POLL, **(environ or {})}
        settings = gateway_settings(tmp_path, fake_openai.base_url, fake_openai.api_key,
                                    config=plugins_yaml(*plugins), environ=env)
        app = create_app(settings, REGISTRY)
        app.router.add_get("/api/test/whoami", wrap(whoami, app[keys.plugins]))
        client = await aiohttp_client(app, server_kwargs={"handler_cancellation": True})
        return Gateway(client, tmp_path, env)

    return start


def auth(**options):
    return {"name": "auth", **options}


async def test_an_api_key_authenticates_as_a_bearer_token_or_in_x_api_key(start):
    gateway = await start(auth())
    key = await gateway.app[keys.api_keys].create("ci-bot", admin=False, actor="test")
    assert key.startswith("gk_") and len(key) >= 35
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
        assert await gateway.whoami(**headers) == (200, {"id": "key:ci-bot", "name": "ci-bot", "admin": False,
                                                         "groups": [], "via": "api_key"})


async def test_only_a_hash_and_a_short_prefix_of_a_key_are_stored(start, tmp_path):
    gateway = await start(auth())
    key = await gateway.app[keys.api_keys].create("stored", admin=False, actor="test")
    with sqlite3.connect(tmp_path / "gateway.db") as db:
        rows = db.execute("SELECT * FROM api_keys").fetchall()
        dump = "\n".join(db.iterdump())
    assert key not in dump and key[3:] not in dump
    assert hash_key(key) in dump
    (row,) = rows
    assert key[:9] in row and key not in str(row)


async def test_a_missing_credential_is_401_with_a_bearer_challenge(start):
    gateway = await start(auth())
    response = await gateway.client.get("/api/chatkit/threads")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="chatkit-gateway"'
    body = await response.json()
    assert body["error"] == "unauthenticated" and body["request_id"]
    assert gateway.failures("missing_credential") == 1


@pytest.mark.parametrize(("headers", "reason"), [
    ({"Authorization": "Bearer gk_" + "x" * 40}, "unknown_key"),
    ({"X-API-Key": "gk_" + "y" * 40}, "unknown_key"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "unsupported_scheme"),
    ({"Authorization": "Bearer"}, "unsupported_scheme"),
    ({"Authorization": "Bearer not-a-key"}, "invalid_credential"),
])
async def test_a_bad_credential_is_401_and_counted_by_reason(start, fake_openai, headers, reason):
    gateway = await start(auth())
    response = await gateway.client.get("/api/chatkit/threads", headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="chatkit-gateway", error="invalid_token"'
    assert (await response.json())["error"] == "unauthenticated"
    assert gateway.failures(reason) == 1
    assert not fake_openai.requests


async def test_a_revoked_key_is_refused_at_once(start):
    gateway = await start(auth())
    book = gateway.app[keys.api_keys]
    key = await book.create("leaver", admin=False, actor="test")
    assert (await gateway.whoami(**{"X-API-Key": key}))[0] == 200
    assert await book.revoke("leaver", actor="test") == 1
    assert (await gateway.whoami(**{"X-API-Key": key}))[0] == 401
    assert gateway.failures("revoked_key") == 1


async def test_the_consumed_credential_never_reaches_the_upstream(start, fake_openai):
    gateway = await start(auth(jwt={"issuer": ISSUER, "audience": AUDIENCE, "secret": {"$env": "JWT_SECRET"}}))
    key = await gateway.app[keys.api_keys].create("app", admin=False, actor="test")
    token = hs256()
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}, {"Authorization": f"Bearer {token}"},
                    {"X-Forwarded-User": "alice", "X-Forwarded-Groups": "staff"}):
        response = await gateway.client.post("/api/chatkit/sessions", json={"user": "u", "workflow": {"id": "wf_a"}},
                                             headers=headers)
        assert response.status == 200, await response.text()
        sent = fake_openai.requests[-1]
        assert sent.headers["authorization"] == f"Bearer {fake_openai.api_key}"
        for name in ("x-api-key", "x-forwarded-user", "x-forwarded-groups"):
            assert name not in sent.headers
        for value in (key, token, key[3:]):
            assert all(value not in header for header in sent.headers.values())


async def test_a_chatkit_client_secret_passes_auth_and_goes_upstream_as_it_is(start, fake_openai):
    gateway = await start(auth())
    key = await gateway.app[keys.api_keys].create("web", admin=False, actor="test")
    secret = await new_session(gateway.client, {"X-API-Key": key})
    response, body = await stream_turn(gateway.client, secret)
    assert response.status == 200 and b"thread.created" in body
    assert fake_openai.requests[-1].headers["authorization"] == f"Bearer {secret}"
    forged = await gateway.client.get("/api/chatkit/threads", headers={"Authorization": "Bearer ek_forged_1234"})
    assert forged.status == 401 and (await forged.json())["error"] == "invalid_client_secret"  # the relay's check
    assert gateway.failures("unknown_key") == gateway.failures("invalid_credential") == 0


async def test_trusted_headers_from_a_trusted_proxy_name_the_user_and_admin_groups_grant_admin(start):
    gateway = await start(auth(admin_groups=["gateway-admins"]))
    status, user = await gateway.whoami(**{"X-Forwarded-User": "alice", "X-Forwarded-Email": "alice@corp.example",
                                            "X-Forwarded-Groups": "staff, gateway-admins"})
    assert status == 200
    assert user == {"id": "user:alice", "name": "alice@corp.example", "admin": True,
                    "groups": ["staff", "gateway-admins"], "via": "trusted_headers"}
    status, user = await gateway.whoami(**{"X-Forwarded-User": "bob", "X-Forwarded-Groups": "staff"})
    assert (status, user["admin"]) == (200, False)
    response = await gateway.client.get("/api/test/whoami?admin=1", headers={"X-Forwarded-User": "bob"})
    assert response.status == 403 and (await response.json())["error"] == "forbidden"


async def test_trusted_headers_from_an_untrusted_peer_are_ignored_counted_and_logged(start, caplog):
    gateway = await start(auth(admin_groups=["gateway-admins"]),
                          environ={"GATEWAY__SERVER__TRUSTED_PROXIES": "[10.0.0.0/8]"})
    spoofed = {"X-Forwarded-User": "root", "X-Forwarded-Groups": "gateway-admins"}
    with caplog.at_level(logging.WARNING, logger="chatkit_gateway.auth"):
        response = await gateway.client.get("/api/test/whoami", headers=spoofed)
    assert response.status == 401
    assert gateway.failures("untrusted_forwarded_headers") == 1
    (record,) = [r for r in caplog.records if r.name == "chatkit_gateway.auth"]
    assert "not a trusted proxy" in record.getMessage() and record.client_ip == "127.0.0.1"
    key = await gateway.app[keys.api_keys].create("user", admin=False, actor="test")
    status, user = await gateway.whoami(**spoofed, **{"X-API-Key": key})
    assert (status, user["id"], user["admin"]) == (200, "key:user", False)


async def test_trusted_headers_can_be_turned_off(start):
    gateway = await start(auth(trusted_headers=False))
    assert (await gateway.whoami(**{"X-Forwarded-User": "alice"}))[0] == 401


def hs256(secret: str = JWT_SECRET, **claims) -> str:
    now = int(time.time())
    base = {"sub": "u-42", "name": "Ada", "groups": ["staff", "ops"], "iss": ISSUER, "aud": AUDIENCE,
            "iat": now, "exp": now + 300}
    return jwt.encode({**base, **claims}, secret, algorithm="HS256")


@pytest.mark.parametrize(("token", "reason"), [
    (lambda: hs256(exp=int(time.time()) - 3600), "expired_token"),
    (lambda: hs256(aud="someone-else"), "wrong_audience"),
    (lambda: hs256(iss="https://evil.example"), "wrong_issuer"),
    (lambda: hs256(secret="another-secret-of-at-least-32-bytes!!"), "bad_signature"),
    (lambda: hs256()[:-4] + "AAAA", "bad_signature"),
    (lambda: "a.b.c", "invalid_token"),
    (lambda: jwt.encode({"sub": "x", "iss": ISSUER, "aud": AUDIENCE}, JWT_SECRET, algorithm="HS256"),
     "invalid_token"),  # no expiry
])
async def test_a_jwt_that_is_expired_for_another_audience_or_badly_signed_is_refused(start, token, reason):
    gateway = await start(auth(jwt={"issuer": ISSUER, "audience": AUDIENCE, "secret": {"$env": "JWT_SECRET"}}))
    response = await gateway.client.get("/api/test/whoami", headers={"Authorization": f"Bearer {token()}"})
    assert response.status == 401
    assert gateway.failures(reason) == 1


async def test_a_valid_hs256_jwt_maps_its_claims_to_the_principal(start):
    options = {"issuer": ISSUER, "audience": AUDIENCE, "secret": {"$env": "JWT_SECRET"}, "name_claim": "email",
               "groups_claim": "roles"}
    gateway = await start(auth(jwt=options, admin_groups=["ops"]))
    token = hs256(email="ada@corp.example", roles="staff,ops")
    assert await gateway.whoami(Authorization=f"Bearer {token}") == (200, {
        "id": "jwt:u-42", "name": "ada@corp.example", "admin": True, "groups": ["staff", "ops"], "via": "jwt"})


@pytest.fixture(scope="module")
def rsa_keys():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048), \
        rsa.generate_private_key(public_exponent=65537, key_size=2048)


def rs256(private_key, kid: str | None = "k1", **claims) -> str:
    now = int(time.time())
    body = {"sub": "svc", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, **claims}
    return jwt.encode(body, private_key, algorithm="RS256", headers={"kid": kid} if kid else None)


@pytest.mark.parametrize("source", ["public_key_file", "jwks_file"])
async def test_rs256_jwts_are_checked_against_a_public_key_or_a_jwks_file(start, tmp_path, rsa_keys, source):
    signer, stranger = rsa_keys
    if source == "public_key_file":
        path = tmp_path / "public.pem"
        path.write_bytes(signer.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    else:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signer.public_key()))
        path = tmp_path / "jwks.json"
        path.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}))
    gateway = await start(auth(jwt={"issuer": ISSUER, "audience": AUDIENCE, source: str(path)}))
    assert (await gateway.whoami(Authorization=f"Bearer {rs256(signer)}"))[1]["id"] == "jwt:svc"
    assert (await gateway.whoami(Authorization=f"Bearer {rs256(signer, kid=None)}"))[0] == 200
    assert (await gateway.whoami(Authorization=f"Bearer {rs256(stranger)}"))[0] == 401
    assert (await gateway.whoami(Authorization=f"Bearer {rs256(signer, aud='other')}"))[0] == 401
    assert (await gateway.whoami(Authorization=f"Bearer {hs256()}"))[0] == 401  # no algorithm confusion
    assert gateway.failures("bad_signature") + gateway.failures("unknown_signing_key") == 1
    assert gateway.failures("wrong_audience") == 1


async def test_failed_attempts_are_rate_limited_per_client_ip(start):
    gateway = await start(auth(max_failures=3, failure_window_seconds=60))
    key = await gateway.app[keys.api_keys].create("good", admin=False, actor="test")
    attacker = {"X-Forwarded-For": "203.0.113.7"}  # the test client is a trusted proxy
    for _ in range(3):
        assert (await gateway.client.get("/api/test/whoami", headers={**attacker, "X-API-Key": "gk_" + "z" * 40})
                ).status == 401
    blocked = await gateway.client.get("/api/test/whoami", headers={**attacker, "X-API-Key": key})
    assert blocked.status == 429
    assert (await blocked.json())["error"] == "rate_limited"
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    assert gateway.failures("rate_limited") == 1
    other = await gateway.client.get("/api/test/whoami", headers={"X-Forwarded-For": "198.51.100.1", "X-API-Key": key})
    assert other.status == 200
    assert (await gateway.client.get("/api/test/whoami", headers=attacker)).status == 401  # no credential: no attempt


async def test_admin_routes_want_an_admin(start):
    gateway = await start(auth())
    book = gateway.app[keys.api_keys]
    user, admin = await book.create("user", admin=False, actor="t"), await book.create("ops", admin=True, actor="t")
    response = await gateway.client.get("/api/test/whoami?admin=1", headers={"X-API-Key": user})
    assert response.status == 403 and (await response.json())["error"] == "forbidden"
    response = await gateway.client.get("/api/test/whoami?admin=1", headers={"X-API-Key": admin})
    assert response.status == 200 and (await response.json())["admin"] is True
    assert (await gateway.client.get("/api/test/whoami?admin=1")).status == 401


async def test_without_the_auth_plugin_admin_routes_are_refused_never_open(start):
    gateway = await start("access_log")
    response = await gateway.client.get("/api/test/whoami?admin=1", headers={"X-Forwarded-User": "admin"})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="chatkit-gateway"'


async def test_gateway_admin_api_key_creates_then_updates_the_bootstrap_admin_key(start, capsys):
    first = await start(auth(), environ={"GATEWAY_ADMIN_API_KEY": KEY})
    assert await first.whoami(**{"X-API-Key": KEY}) == (200, {
        "id": "key:bootstrap-admin", "name": "bootstrap-admin", "admin": True, "groups": [], "via": "api_key"})
    rotated = "gk_" + "r" * 40
    second = await start(auth(), environ={"GATEWAY_ADMIN_API_KEY": rotated})
    assert (await second.whoami(**{"X-API-Key": KEY}))[0] == 401
    assert (await second.whoami(**{"X-API-Key": rotated}))[1]["admin"] is True
    code, out, _ = await second.cli(capsys, "keys", "list")
    assert code == 0 and out.count("bootstrap-admin") == 1


async def test_the_bootstrap_key_can_come_from_the_plugin_options(start):
    gateway = await start(auth(bootstrap_admin_key={"$env": "MY_ADMIN_KEY"}), environ={"MY_ADMIN_KEY": KEY})
    assert (await gateway.whoami(**{"X-API-Key": KEY}))[1]["id"] == "key:bootstrap-admin"


def test_a_malformed_bootstrap_key_fails_start_up(tmp_path):
    settings = gateway_settings(tmp_path, "http://127.0.0.1:9", "sk-x", config=plugins_yaml("auth"),
                                environ={"GATEWAY_ADMIN_API_KEY": "password123"})
    with pytest.raises(ConfigError) as caught:
        create_app(settings, REGISTRY)
    assert caught.value.path == "GATEWAY_ADMIN_API_KEY"
    assert "password123" not in str(caught.value)


async def test_keys_made_and_revoked_by_the_cli_reach_a_running_gateway(start, capsys):
    gateway = await start(auth())
    code, out, err = await gateway.cli(capsys, "keys", "create", "--name", "deploy-bot", "--admin")
    assert code == 0 and "only time" in err
    key = out.strip()
    assert key.startswith("gk_")
    assert await eventually(lambda: gateway.whoami(**{"X-API-Key": key}), (200, {
        "id": "key:deploy-bot", "name": "deploy-bot", "admin": True, "groups": [], "via": "api_key"}))
    code, out, _ = await gateway.cli(capsys, "keys", "list")
    assert code == 0
    assert "deploy-bot" in out and key[:9] in out and key not in out and hash_key(key) not in out
    code, out, _ = await gateway.cli(capsys, "keys", "revoke", key[:9])
    assert (code, out.strip()) == (0, "revoked 1 key")
    assert await eventually(lambda: status_of(gateway.whoami(**{"X-API-Key": key})), 401)
    code, _, err = await gateway.cli(capsys, "keys", "revoke", "nobody")
    assert code == 1 and "no live key" in err
    code, _, err = await gateway.cli(capsys, "keys", "create", "--name", "deploy-bot")
    assert code == 1 and "already exists" in err


async def test_authentication_keeps_working_while_sqlite_is_locked_or_slow(start, tmp_path, monkeypatch, caplog):
    gateway = await start(auth())
    key = await gateway.app[keys.api_keys].create("steady", admin=False, actor="test")
    store = gateway.app[keys.store]

    async def locked(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    async def slow(*args, **kwargs):
        await asyncio.sleep(30)

    holder = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        with caplog.at_level(logging.WARNING, logger="chatkit_gateway.store"):
            monkeypatch.setattr(store, "data_version", locked)
            monkeypatch.setattr(store, "list_keys", locked)
            await asyncio.sleep(0.2)  # a few refreshes fail meanwhile
            started = time.perf_counter()
            for _ in range(20):
                assert (await gateway.whoami(**{"X-API-Key": key}))[0] == 200
            monkeypatch.setattr(store, "data_version", slow)
            await asyncio.sleep(0.1)
            for _ in range(20):
                assert (await gateway.whoami(**{"X-API-Key": key}))[0] == 200
            assert time.perf_counter() - started < 2.0
    finally:
        holder.rollback()
        holder.close()
    assert any("store not polled for changes: database is locked" in r.getMessage() for r in caplog.records)


async def status_of(call) -> int:
    return (await call)[0]


async def eventually(probe, expected, timeout: float = 3.0):
    """Poll `probe()` until it returns `expected` (the refresh runs every 50 ms here)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value == expected or time.monotonic() > deadline:
            assert value == expected
            return True
        await asyncio.sleep(0.05)
