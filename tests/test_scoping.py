"""Through the relay, a user who is not an admin keeps to their own ChatKit user with the server key."""

from __future__ import annotations

from urllib.parse import parse_qs

from gateway import keys
from tests.hosted_harness import ADMIN, ALICE, BOB, start


def own_user(gateway, name: str) -> str:
    return gateway.app[keys.sessions].user_of(f"key:{name}")


async def test_a_user_minting_through_the_relay_gets_a_session_for_their_own_user_only(
        aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai)
    status, session = await gateway.call("POST", "/api/chatkit/sessions", ALICE,
                                         json={"user": "bob@example.com", "workflow": {"id": "wf_abc"}})
    assert status == 200, session
    received = fake_openai.requests_to("/v1/chatkit/sessions")[-1]
    sent = received.json()
    assert sent["user"] == own_user(gateway, "alice") != "bob@example.com"
    assert sent["workflow"] == {"id": "wf_abc"}
    # The rewritten body's own length, once; the answer asked for uncompressed (its secret is read).
    assert received.headers["content-length"] == str(len(received.body))
    assert received.headers["accept-encoding"] == "identity"


async def test_a_user_listing_threads_sees_only_their_own(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai)
    fake_openai.seed_thread(own_user(gateway, "alice"), title="mine")
    fake_openai.seed_thread(own_user(gateway, "bob"), title="bob's")
    status, page = await gateway.call("GET", f"/api/chatkit/threads?limit=5&user={own_user(gateway, 'bob')}", ALICE)
    assert status == 200, page
    assert [thread["title"] for thread in page["data"]] == ["mine"]
    query = parse_qs(fake_openai.requests_to("/v1/chatkit/threads")[-1].query)
    assert query == {"limit": ["5"], "user": [own_user(gateway, "alice")]}


async def test_a_user_cannot_reach_one_thread_or_delete_it_with_the_server_key(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai)
    thread = fake_openai.seed_thread(own_user(gateway, "bob"), title="bob's")
    for method, path in (("GET", f"/api/chatkit/threads/{thread.id}"),
                         ("GET", f"/api/chatkit/threads/{thread.id}/items"),
                         ("DELETE", f"/api/chatkit/threads/{thread.id}")):
        status, body = await gateway.call(method, path, ALICE)
        assert status == 403 and body["error"] == "forbidden", (method, path, body)
    assert not fake_openai.requests_to(f"/v1/chatkit/threads/{thread.id}")
    status, body = await gateway.call("GET", f"/api/chatkit/threads/{thread.id}", ADMIN)
    assert status == 200 and body["title"] == "bob's"


async def test_a_user_may_cancel_only_the_sessions_they_were_issued(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai)
    status, bobs = await gateway.call("POST", "/api/chatkit/sessions", BOB, json={"workflow": {"id": "wf_abc"}})
    assert status == 200
    status, body = await gateway.call("POST", f"/api/chatkit/sessions/{bobs['id']}/cancel", ALICE)
    assert status == 404 and body["error"] == "not_found"
    status, body = await gateway.call("POST", f"/api/chatkit/sessions/{bobs['id']}/cancel", BOB)
    assert status == 200 and body["status"] == "cancelled"


async def test_an_admin_relays_as_is(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai)
    status, _ = await gateway.call("POST", "/api/chatkit/sessions", ADMIN,
                                   json={"user": "service-account", "workflow": {"id": "wf_abc"}})
    assert status == 200
    assert fake_openai.requests_to("/v1/chatkit/sessions")[-1].json()["user"] == "service-account"
