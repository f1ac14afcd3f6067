"""ChatKit sessions: minted upstream with a server-derived user, recorded, cancelled, honoured by the relay."""

from __future__ import annotations

import hashlib
import hmac
import logging

import pytest

from gateway import keys
from gateway.sessions import LOOKUP_PAUSES
from tests.hosted_harness import ADMIN, ALICE, BOB, eventually, start

SUPPORT = """
workflows:
  - slug: support
    workflow_id: wf_support
    label: Support desk
"""


def sent_sessions(fake):
    return fake.requests_to("/v1/chatkit/sessions", "POST")


def every_log_line(caplog) -> str:
    return "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)


async def test_the_upstream_receives_exactly_the_session_body_the_entry_and_defaults_describe(
        aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, """
sessions:
  expires_after: 900
  rate_limits: {max_requests_per_1_minute: 30}
  chatkit_configuration:
    history: {enabled: true, recent_threads: 5}
workflows:
  - slug: voice
    workflow_id: wf_voice
    label: Assistant vocal
    version: 3
    state_variables: {lang: fr, max_turns: 4, strict: true}
    session:
      rate_limits: {max_requests_per_1_minute: 50}
      chatkit_configuration:
        file_upload: {enabled: true, max_files: 3, max_file_size: 10}
""")
    status, body = await gateway.session(ALICE, "voice", user="victim@example.com")
    assert status == 200, body
    sent = sent_sessions(fake_openai)[-1]
    assert sent.headers["authorization"] == f"Bearer {fake_openai.api_key}"
    assert sent.headers["openai-beta"] == "chatkit_beta=v1"
    upstream_body = sent.json()
    assert list(upstream_body) == ["user", "workflow", "chatkit_configuration", "expires_after", "rate_limits"]
    assert upstream_body == {
        "user": gateway.app[keys.sessions].user_of("key:alice"),
        "workflow": {"id": "wf_voice", "version": "3", "state_variables": {"lang": "fr", "max_turns": 4, "strict": True}},
        "chatkit_configuration": {"file_upload": {"enabled": True, "max_files": 3, "max_file_size": 10},
                                  "history": {"enabled": True, "recent_threads": 5}},
        "expires_after": {"anchor": "created_at", "seconds": 900},
        "rate_limits": {"max_requests_per_1_minute": 50},
    }
    minted = fake_openai.sessions[body["session_id"]]
    assert body == {"client_secret": minted.client_secret, "expires_at": minted.expires_at,
                    "session_id": minted.id, "workflow": {"slug": "voice", "label": "Assistant vocal"}}
    assert isinstance(body["expires_at"], int)


async def test_without_settings_the_body_carries_the_upstream_defaults_explicitly(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, SUPPORT)
    response = await gateway.client.post("/api/chatkit/session", headers=ALICE)
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert sent_sessions(fake_openai)[-1].json() == {
        "user": gateway.app[keys.sessions].user_of("key:alice"),
        "workflow": {"id": "wf_support"},
        "expires_after": {"anchor": "created_at", "seconds": 600},
        "rate_limits": {"max_requests_per_1_minute": 10},
    }


async def test_the_upstream_user_is_derived_from_the_principal_never_taken_from_the_request(
        aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, SUPPORT + "sessions:\n  user_hash_secret: {$env: UHS}\n",
                          environ={"UHS": "a-server-side-secret"})
    await gateway.session(ALICE, user="bob@example.com")
    await gateway.session(ALICE, user="someone-else")
    await gateway.session(BOB)
    alice_1, alice_2, bob = (r.json()["user"] for r in sent_sessions(fake_openai))
    expected = "gw_" + hmac.new(b"a-server-side-secret", b"key:alice", hashlib.sha256).hexdigest()[:32]
    assert alice_1 == alice_2 == expected
    assert bob != alice_1 and bob.startswith("gw_")
    assert "alice" not in alice_1 and "@" not in alice_1


async def test_without_a_configured_secret_the_user_key_is_generated_once_and_kept(aiohttp_client, tmp_path, fake_openai):
    first = await start(aiohttp_client, tmp_path, fake_openai, SUPPORT)
    user = first.app[keys.sessions].user_of("key:alice")
    await first.client.close()
    second = await start(aiohttp_client, tmp_path, fake_openai, SUPPORT)
    assert second.app[keys.sessions].user_of("key:alice") == user


async def test_a_session_needs_an_authenticated_caller(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, SUPPORT)
    status, body = await gateway.session({})
    assert (status, body["error"]) == (401, "unauthenticated")
    assert not sent_sessions(fake_openai)


@pytest.mark.parametrize(("workflow_id", "status", "code"), [
    ("wf_fail401", 502, "upstream_auth_failed"),
    ("wf_fail403", 502, "upstream_auth_failed"),
    ("wf_fail404", 502, "upstream_workflow_not_found"),
    ("wf_missing1", 502, "upstream_workflow_not_found"),
    ("wf_fail429", 429, "upstream_rate_limited"),
    ("wf_fail500", 502, "upstream_error"),
])
async def test_upstream_errors_become_gateway_errors_with_the_upstream_status_and_message(
        aiohttp_client, tmp_path, fake_openai, caplog, workflow_id, status, code):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, f"workflows:\n  - {{slug: w, workflow_id: {workflow_id}}}\n")
    response = await gateway.client.post("/api/chatkit/session", headers=ALICE)
    body = await response.json()
    upstream_status = sent_sessions(fake_openai)[-1].status
    assert (response.status, body["error"], body["upstream_status"]) == (status, code, upstream_status)
    assert body["upstream_message"] and body["request_id"] == response.headers["X-Request-ID"]
    assert fake_openai.api_key not in body["upstream_message"]
    if code == "upstream_rate_limited":
        assert response.headers["Retry-After"] == "7"
    failure = next(r for r in caplog.records if r.getMessage().startswith("ChatKit session creation failed"))
    assert f"upstream status {upstream_status}" in failure.getMessage()
    assert body["upstream_message"] in failure.getMessage()


@pytest.mark.parametrize(("workflow_id", "reason"), [
    ("wf_nonjson", "not a JSON object"),
    ("wf_nosecret", "no client_secret"),
])
async def test_an_unusable_success_is_502_upstream_error(aiohttp_client, tmp_path, fake_openai, caplog, workflow_id, reason):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, f"workflows:\n  - {{slug: w, workflow_id: {workflow_id}}}\n")
    status, body = await gateway.session()
    assert (status, body["error"], body["upstream_status"]) == (502, "upstream_error", 200)
    assert reason in body["message"]
    assert any(r.getMessage().startswith("ChatKit session creation failed") and reason in r.getMessage()
               for r in caplog.records)


async def test_a_slow_upstream_is_504_upstream_timeout(aiohttp_client, tmp_path, fake_openai, caplog):
    fake_openai.slow_seconds = 2.0
    gateway = await start(aiohttp_client, tmp_path, fake_openai,
                          "upstream: {timeouts: {total: 0.3}}\nworkflows:\n  - {slug: slow, workflow_id: wf_slow}\n")
    status, body = await gateway.session()
    assert (status, body["error"]) == (504, "upstream_timeout")
    assert any(r.getMessage().startswith("ChatKit session creation failed") for r in caplog.records)


async def test_an_unreachable_upstream_is_502_upstream_unavailable(aiohttp_client, tmp_path, fake_openai, caplog):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, SUPPORT, environ={"MODEL_API_BASE": "http://127.0.0.1:9"})
    status, body = await gateway.session()
    assert (status, body["error"]) == (502, "upstream_unavailable")
    assert any(r.getMessage().startswith("ChatKit session creation failed") for r in caplog.records)


async def test_no_log_line_ever_carries_a_secret(aiohttp_client, tmp_path, fake_openai, caplog):
    caplog.set_level(logging.DEBUG, logger="chatkit_gateway")
    gateway = await start(aiohttp_client, tmp_path, fake_openai, SUPPORT + """
  - {slug: broken, workflow_id: wf_fail401}
sessions:
  user_hash_secret: {$env: UHS}
""", environ={"UHS": "uhs-0123456789abcdef"})
    _, minted = await gateway.session()
    relayed = await gateway.client.post("/api/chatkit/conversation", json={"type": "threads.list", "params": {}},
                                        headers={"Authorization": f"Bearer {minted['client_secret']}"})
    assert relayed.status == 200
    await gateway.session(slug="broken")
    await gateway.call("POST", f"/api/chatkit/session/{minted['session_id']}/cancel", ALICE)
    await gateway.client.post("/api/chatkit/conversation", json={"type": "threads.list", "params": {}},
                              headers={"Authorization": f"Bearer {minted['client_secret']}"})
    await gateway.settle()
    logged = every_log_line(caplog)
    assert "ChatKit session creation failed" in logged
    for secret in (minted["client_secret"], fake_openai.api_key, "uhs-0123456789abcdef"):
        assert secret not in logged


async def test_the_relay_refuses_a_client_secret_this_gateway_did_not_issue(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, SUPPORT)
    minted_elsewhere = fake_openai._new_session("u1", {"id": "wf_support"}, {}).client_secret
    for secret in (minted_elsewhere, "ek_forged_0000000000"):
        status, body = await gateway.call("POST", "/api/chatkit/conversation",
                                          headers={"Authorization": f"Bearer {secret}"},
                                          json={"type": "threads.list", "params": {}})
        assert (status, body["error"]) == (401, "invalid_client_secret")
    assert not fake_openai.requests_to("/v1/chatkit/conversation")


async def test_the_relay_refuses_an_expired_client_secret(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, SUPPORT)
    fake_openai.advance(-3600)  # the upstream dates the session an hour back: it expired for us already
    _, minted = await gateway.session()
    status, body = await gateway.call("POST", "/api/chatkit/conversation", json={"type": "threads.list", "params": {}},
                                      headers={"Authorization": f"Bearer {minted['client_secret']}"})
    assert (status, body["error"]) == (401, "invalid_client_secret")


async def test_expired_records_are_purged_in_the_background(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, SUPPORT + "sessions: {purge_seconds: 0.05}\n")
    fake_openai.advance(-3600)
    _, expired = await gateway.session()
    fake_openai.advance(3600)
    _, live = await gateway.session()
    book, store = gateway.app[keys.sessions], gateway.app[keys.store]
    await eventually(lambda: book.find(expired["session_id"]) is None)
    await gateway.settle()
    assert [r.id for r in await store.live_sessions(0)] == [live["session_id"]]


async def test_the_owner_cancels_a_session_upstream_and_its_secret_stops_working(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, SUPPORT)
    _, minted = await gateway.session(ALICE)
    conversation = {"json": {"type": "threads.list", "params": {}},
                    "headers": {"Authorization": f"Bearer {minted['client_secret']}"}}
    assert (await gateway.client.post("/api/chatkit/conversation", **conversation)).status == 200
    cancel = f"/api/chatkit/session/{minted['session_id']}/cancel"
    status, body = await gateway.call("POST", cancel, BOB)
    assert (status, body["error"]) == (404, "session_not_found")
    status, body = await gateway.call("POST", cancel, ALICE)
    assert (status, body) == (200, {"session_id": minted["session_id"], "status": "cancelled"})
    sent = fake_openai.requests_to(f"/v1/chatkit/sessions/{minted['session_id']}/cancel")
    assert len(sent) == 1 and sent[0].headers["authorization"] == f"Bearer {fake_openai.api_key}"
    status, body = await gateway.call("POST", "/api/chatkit/conversation", **conversation)
    assert (status, body["error"]) == (401, "invalid_client_secret")
    await gateway.settle()
    [record] = await gateway.app[keys.store].live_sessions(0)
    assert record.status == "cancelled"


async def test_an_admin_cancels_anyones_session_and_it_is_audited(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, SUPPORT)
    _, minted = await gateway.session(BOB)
    status, _ = await gateway.call("POST", f"/api/chatkit/session/{minted['session_id']}/cancel", ADMIN)
    assert status == 200
    status, body = await gateway.call("POST", "/api/chatkit/session/cksess_unknown/cancel", ADMIN)
    assert (status, body["error"]) == (404, "session_not_found")
    await gateway.settle()
    [entry] = await gateway.app[keys.store].list_audit(obj=f"session:{minted['session_id']}")
    assert (entry.actor, entry.action, entry.before["principal"], entry.after) == (
        "key:root", "session.cancel", "key:bob", {"status": "cancelled"})


async def test_records_are_kept_by_secret_hash_and_survive_a_restart(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, SUPPORT)
    _, minted = await gateway.session(ALICE)
    await gateway.settle()
    [record] = await gateway.app[keys.store].live_sessions(0)
    assert (record.id, record.principal, record.slug, record.status) == (minted["session_id"], "key:alice", "support", "active")
    assert record.secret_hash == hashlib.sha256(minted["client_secret"].encode()).hexdigest()
    assert record.expires_at == minted["expires_at"]
    await gateway.client.close()
    restarted = await start(aiohttp_client, tmp_path, fake_openai, SUPPORT)
    status, _ = await restarted.call("POST", "/api/chatkit/conversation", json={"type": "threads.list", "params": {}},
                                     headers={"Authorization": f"Bearer {minted['client_secret']}"})
    assert status == 200


async def test_a_session_minted_through_the_relay_is_recorded_and_honoured(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, SUPPORT)
    status, minted = await gateway.call("POST", "/api/chatkit/sessions", ALICE,
                                        json={"user": "backend-user", "workflow": {"id": "wf_support"}})
    assert status == 200
    record = gateway.app[keys.sessions].active(minted["client_secret"])
    assert (record.principal, record.slug) == ("key:alice", "support")
    status, _ = await gateway.call("POST", f"/api/chatkit/sessions/{minted['id']}/cancel", ALICE)
    assert status == 200
    assert gateway.app[keys.sessions].active(minted["client_secret"]) is None


async def test_a_secret_nobody_here_issued_is_looked_for_once_per_request(aiohttp_client, tmp_path, fake_openai):
    # The workflow plugin and the relay both need the session behind the secret; a miss waits on the
    # store for another worker's write, and that wait is paid once, not by each of them.
    gateway = await start(aiohttp_client, tmp_path, fake_openai, SUPPORT)
    store = gateway.app[keys.store]
    looked_up = []
    by_hash = store.session_by_hash

    async def counting(digest):
        looked_up.append(digest)
        return await by_hash(digest)

    store.session_by_hash = counting
    status, body = await gateway.call("POST", "/api/chatkit/conversation",
                                      headers={"Authorization": "Bearer ek_unknown_0000000000"},
                                      json={"type": "threads.list", "params": {}})
    assert (status, body["error"]) == (401, "invalid_client_secret")
    assert len(looked_up) == len(LOOKUP_PAUSES) and len(set(looked_up)) == 1
