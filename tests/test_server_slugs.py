"""Slugs served by a self-hosted ChatKit server: the way off Agent Builder.

The upstream is a real openai-chatkit ChatKitServer (tests/chatkit_server_app.py) that verifies
the gateway's signed identity headers with gateway/identity.py; auth is the real auth plugin.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from gateway import keys
from gateway.__main__ import main
from gateway.identity import InvalidIdentity, signed_headers, verify
from gateway.operations import OTHER, PEEK_BYTES, peek, top_level_type
from gateway.registry import parse_entry
from gateway.schema import ConfigError
from tests.chatkit_server_app import ServedChatKit
from tests.hosted_harness import ADMIN, ALICE, BOB, Gateway, start

SECRET = "identity-secret-for-tests-0123456789abcdef"
SERVER_KEY = "server-key-for-echo-keyed-7777"
PLUGINS = "plugins:\n  - name: access_log\n  - name: metrics\n  - name: auth\n  - name: workflow\n"
CAROL = {"X-Forwarded-User": "carol", "X-Forwarded-Email": "carol@example.com",
         "X-Forwarded-Groups": "support, eu-west"}  # as nginx's auth_request would send them
LIST_THREADS = {"type": "threads.list", "params": {"order": "desc"}}


def create_thread(text: str) -> dict[str, Any]:
    return {"type": "threads.create", "params": {"input": {
        "content": [{"type": "input_text", "text": text}], "attachments": [], "inference_options": {}}}}


def config(server_url: str, *, support: str = "hosted", echo_read_timeout: float | None = None) -> str:
    if support == "hosted":
        support_entry = "  - {slug: support, label: Support, workflow_id: wf_support1}\n"
    else:
        support_entry = f"  - {{slug: support, label: Support, kind: server, url: '{server_url}', proxy: direct}}\n"
    echo_timeouts = f", timeouts: {{read: {echo_read_timeout}}}" if echo_read_timeout else ""
    return ("identity:\n  secret: {$env: GATEWAY_IDENTITY_SECRET}\nworkflows:\n" + support_entry
            + f"  - {{slug: echo, label: Echo, kind: server, url: '{server_url}', replaces: support{echo_timeouts}}}\n"
            + f"  - {{slug: echo-keyed, kind: server, url: '{server_url}', api_key_env: ECHO_SERVER_KEY}}\n")


@pytest.fixture
async def chatkit_server() -> AsyncIterator[ServedChatKit]:
    served = await ServedChatKit(SECRET).start()
    yield served
    served.server.release.set()
    await served.stop()


@pytest.fixture
async def gateway(aiohttp_client, tmp_path, fake_openai, chatkit_server) -> Gateway:
    return await start(aiohttp_client, tmp_path, fake_openai, config(chatkit_server.url), plugins=PLUGINS,
                       environ={"GATEWAY_IDENTITY_SECRET": SECRET, "ECHO_SERVER_KEY": SERVER_KEY})


async def timed_events(response: aiohttp.ClientResponse) -> list[tuple[float, dict[str, Any]]]:
    """Each SSE event of the response with the moment it arrived."""
    received = []
    async for line in response.content:
        if line.startswith(b"data: "):
            received.append((time.perf_counter(), json.loads(line[6:])))
    return received


async def stream_turn(gateway: Gateway, slug: str, text: str) -> list[dict[str, Any]]:
    async with gateway.client.post(f"/api/chatkit/w/{slug}", json=create_thread(text), headers=ALICE) as response:
        assert response.status == 200, await response.text()
        return [event for _, event in await timed_events(response)]


# Streaming both ways ---------------------------------------------------------------------------

async def test_threads_create_streams_through_the_gateway_event_by_event(gateway):
    async with gateway.client.post("/api/chatkit/w/echo", json=create_thread("one two three four"),
                                   headers=ALICE) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        assert response.headers["X-Accel-Buffering"] == "no"
        received = await timed_events(response)
    types = [event["type"] for _, event in received]
    assert types[0] == "thread.created" and types[-1] == "thread.item.done"
    deltas = [at for at, event in received if event["type"] == "thread.item.updated"]
    assert len(deltas) == 4
    assert min(b - a for a, b in zip(deltas, deltas[1:])) > 0.08  # each came on its own, as the server sent it
    assert received[-1][1]["item"]["content"][0]["text"] == "one two three four"


async def test_threads_list_and_items_list_answer_json_for_the_callers_own_threads(gateway):
    events = await stream_turn(gateway, "echo", "hello there")
    thread_id = events[0]["thread"]["id"]
    status, threads = await gateway.call("POST", "/api/chatkit/w/echo", ALICE, json=LIST_THREADS)
    assert status == 200 and [t["id"] for t in threads["data"]] == [thread_id]
    status, items = await gateway.call("POST", "/api/chatkit/w/echo", ALICE,
                                       json={"type": "items.list", "params": {"thread_id": thread_id, "order": "asc"}})
    assert status == 200 and [i["type"] for i in items["data"]] == ["user_message", "assistant_message"]
    status, theirs = await gateway.call("POST", "/api/chatkit/w/echo", BOB, json=LIST_THREADS)
    assert status == 200 and theirs["data"] == []  # the server scoped them by the signed user id


async def test_a_large_body_reaches_the_server_whole_after_the_operation_is_peeked(gateway):
    text = "first " + "x" * 400_000 + " last"  # far past the peek, in three words (three deltas)
    events = await stream_turn(gateway, "echo", text)
    thread_id = events[0]["thread"]["id"]
    status, items = await gateway.call("POST", "/api/chatkit/w/echo", ALICE,
                                       json={"type": "items.list", "params": {"thread_id": thread_id, "order": "asc"}})
    assert items["data"][0]["content"][0]["text"] == text


# Identity --------------------------------------------------------------------------------------

async def test_the_server_gets_the_users_identity_signed_and_none_of_the_clients_own(gateway, chatkit_server):
    forged = {"X-Gateway-User": "gw_forged", "X-Gateway-User-Groups": "admins",
              "X-Gateway-Signature": "v1=" + "0" * 64, "X-Gateway-Anything": "x"}
    status, _ = await gateway.call("POST", "/api/chatkit/w/echo", headers={**CAROL, **forged}, json=LIST_THREADS)
    assert status == 200
    identity = chatkit_server.identities[-1]
    assert identity.user == gateway.app[keys.sessions].user_of("user:carol")  # the same gw_… a hosted session gets
    assert (identity.name, identity.groups, identity.workflow) == ("carol@example.com", ("support", "eu-west"), "echo")
    seen = chatkit_server.headers[-1]
    assert seen.getall("X-Gateway-User") == [identity.user]
    assert "X-Gateway-Anything" not in seen and "X-Forwarded-User" not in seen and "Authorization" not in seen


async def test_the_gateway_key_never_reaches_the_server_and_its_own_key_does(gateway, chatkit_server):
    await gateway.call("POST", "/api/chatkit/w/echo", ALICE, json=LIST_THREADS)
    assert "Authorization" not in chatkit_server.headers[-1]
    status, _ = await gateway.call("POST", "/api/chatkit/w/echo-keyed", ALICE, json=LIST_THREADS)
    assert status == 200
    assert chatkit_server.headers[-1]["Authorization"] == f"Bearer {SERVER_KEY}"


async def test_the_server_refuses_identity_headers_the_gateway_did_not_sign(chatkit_server):
    who = {"user": "gw_0123", "name": "Mallory", "groups": ["admins"], "workflow": "echo"}
    forged = signed_headers("a-secret-that-is-not-the-shared-one-000000", **who)
    stale = signed_headers(SECRET, **who, now=time.time() - 3600)
    tampered = {**signed_headers(SECRET, **{**who, "groups": []}), "X-Gateway-User-Groups": "admins"}
    async with aiohttp.ClientSession() as client:
        for headers in (forged, stale, tampered, {}):
            async with client.post(chatkit_server.url, json=LIST_THREADS, headers=headers) as response:
                assert response.status == 401
        async with client.post(chatkit_server.url, json=LIST_THREADS, headers=signed_headers(SECRET, **who)) as response:
            assert response.status == 200
    assert chatkit_server.refused == ["bad signature", "stale timestamp", "bad signature",
                                      "missing header x-gateway-timestamp"]


def test_identity_values_survive_the_headers_whatever_their_characters():
    headers = signed_headers(SECRET, user="gw_ab", name="Zoë Ünal\nCEO", groups=["R&D, Paris", "ops"], workflow="w",
                             now=1_000_000)
    assert all(value.isascii() and "\n" not in value for value in headers.values())
    identity = verify({k.lower(): v for k, v in headers.items()}, SECRET, now=1_000_100)
    assert (identity.name, identity.groups, identity.timestamp) == ("Zoë Ünal\nCEO", ("R&D, Paris", "ops"), 1_000_000)
    with pytest.raises(InvalidIdentity, match="twice"):
        verify(CIMultiDict([*headers.items(), ("X-Gateway-User", "gw_other")]), SECRET, now=1_000_100)


# Sessions, the flip and streams in flight ------------------------------------------------------

async def test_a_session_for_a_server_slug_names_the_endpoint_instead_of_minting(gateway, fake_openai):
    status, body = await gateway.session(ALICE, "echo")
    assert status == 200
    assert body == {"kind": "server", "api_url": "/api/chatkit/w/echo", "workflow": {"slug": "echo", "label": "Echo"}}
    assert not [r for r in fake_openai.requests if r.path == "/v1/chatkit/sessions"]


async def test_server_entries_are_listed_with_their_kind_and_no_secret(gateway):
    rows = {row["slug"]: row for row in await gateway.listing(ALICE)}
    assert (rows["support"]["kind"], rows["echo"]["kind"]) == ("hosted", "server")
    assert rows["echo"]["available"] and "url" not in rows["echo"]
    admin_rows = {row["slug"]: row for row in await gateway.listing(ADMIN)}
    assert admin_rows["echo-keyed"]["api_key_env"] == "ECHO_SERVER_KEY"
    assert SERVER_KEY not in json.dumps(admin_rows)


async def test_a_hosted_or_unknown_slug_has_no_protocol_endpoint(gateway):
    status, body = await gateway.call("POST", "/api/chatkit/w/support", ALICE, json=LIST_THREADS)
    assert (status, body["error"], body["slug"]) == (409, "workflow_not_server", "support")
    status, body = await gateway.call("POST", "/api/chatkit/w/nowhere", ALICE, json=LIST_THREADS)
    assert (status, body["error"]) == (404, "hosted_workflow_not_found")
    status, body = await gateway.call("POST", "/api/chatkit/w/echo", json=LIST_THREADS)
    assert (status, body["error"]) == (401, "unauthenticated")


async def test_a_flip_from_hosted_to_server_moves_the_next_session_and_spares_streams_in_flight(
        gateway, fake_openai, chatkit_server):
    status, before = await gateway.session(ALICE, "support")
    assert status == 200 and before["client_secret"].startswith("ek_")
    fake_openai.silent_seconds = 1.0  # the hosted turn below pauses after its first event
    hosted_started, server = asyncio.Event(), chatkit_server.server

    async def hosted_turn() -> list[bytes]:
        async with gateway.client.post("/api/chatkit/conversation", json=create_thread("!!silent please"),
                                       headers={"Authorization": f"Bearer {before['client_secret']}"}) as response:
            assert response.status == 200
            lines = [await response.content.readline()]
            hosted_started.set()
            return lines + [line async for line in response.content]

    hosted = asyncio.create_task(hosted_turn())
    served = asyncio.create_task(stream_turn(gateway, "echo", "hold on a moment"))
    await asyncio.wait_for(asyncio.gather(hosted_started.wait(), server.held.wait()), 5)

    # support becomes a ChatKit server; echo's timeouts change, so the client its stream uses is retired
    gateway.config.write_text(PLUGINS + config(chatkit_server.url, support="server", echo_read_timeout=30))
    status, reloaded = await gateway.call("POST", "/api/admin/reload", ADMIN)
    assert status == 200 and "support (config, server)" in reloaded["workflows"]
    status, after = await gateway.session(ALICE, "support")
    assert after == {"kind": "server", "api_url": "/api/chatkit/w/support",
                     "workflow": {"slug": "support", "label": "Support"}}

    status, threads = await gateway.call("POST", after["api_url"], ALICE, json=LIST_THREADS)
    assert status == 200 and threads["data"]  # the flipped slug speaks ChatKit to the server at once

    server.release.set()
    events = await asyncio.wait_for(served, 5)
    assert events[-1]["type"] == "thread.item.done"
    assert events[-1]["item"]["content"][0]["text"] == "hold on a moment"
    hosted_lines = await asyncio.wait_for(hosted, 5)
    assert sum(b'"thread.item.done"' in line for line in hosted_lines) == 2  # the user's message, then the answer


# Operation labels ------------------------------------------------------------------------------

def operation_counts(exposition: str) -> dict[tuple[str, str, str], float]:
    return {(s.labels["slug"], s.labels["operation"], s.labels["status"]): s.value
            for family in text_string_to_metric_families(exposition) if family.name == "gateway_chatkit_operations"
            for s in family.samples if s.name.endswith("_total")}


async def test_operation_labels_are_bounded_and_anything_unknown_is_other(gateway):
    padded = {"params": {"order": "desc", "note": "x" * PEEK_BYTES}, "type": "threads.list"}  # type past the peek
    for body in (LIST_THREADS, {"type": "threads.explode", "params": {}}, b"this is not json", padded):
        kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
        await gateway.call("POST", "/api/chatkit/w/echo", ALICE, **kwargs)
    metrics = await (await gateway.client.get("/metrics")).text()
    assert operation_counts(metrics) == {("echo", "threads.list", "2xx"): 1.0, ("echo", OTHER, "5xx"): 2.0,
                                         ("echo", OTHER, "2xx"): 1.0}
    assert "threads.explode" not in metrics


def test_the_operation_is_the_top_level_type_only():
    assert top_level_type(b'{"type": "threads.create", "params": {}}') == "threads.create"
    assert top_level_type(b'{"params": {"input": {"content": [{"type": "input_text"}]}}, "type": "items.list"}') \
        == "items.list"
    assert top_level_type(b'{"params": {"type": "threads.list"}}') is None
    assert top_level_type(b'[{"type": "threads.list"}]') is None
    assert top_level_type(b'{"type": "threads.li') is None  # not yet known: read on


async def test_peek_reads_only_what_it_needs_and_hands_on_every_byte():
    chunks = [b'{"ty', b'pe": "items.li', b'st", "params": ', b'{"thread_id": "thr_1"}}']
    pulled = []

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            pulled.append(chunk)
            yield chunk

    operation, whole = await peek(body())
    assert operation == "items.list" and len(pulled) == 3  # the last chunk is still with the client
    assert b"".join([chunk async for chunk in whole]) == b"".join(chunks)
    operation, whole = await peek(body(), limit=8)
    assert operation == OTHER and b"".join([chunk async for chunk in whole]) == b"".join(chunks)


# Config, the admin API and the migration plan -----------------------------------------------------

@pytest.mark.parametrize(("entry", "path"), [
    ({"slug": "s", "kind": "server"}, "url"),
    ({"slug": "s", "kind": "server", "url": "http://x/chatkit", "workflow_id": "wf_1"}, "workflow_id"),
    ({"slug": "s", "workflow_id": "wf_1", "url": "http://x/chatkit"}, "url"),  # a half-done flip
    ({"slug": "s", "kind": "server", "url": "http://user:pw@x/chatkit"}, "url"),
    ({"slug": "s", "kind": "server", "url": "http://x/chatkit", "api_key_env": "sk-live-key"}, "api_key_env"),
    ({"slug": "s", "kind": "server", "url": "http://x/chatkit", "api_key": "sk-live-key"}, "api_key"),
])
def test_a_server_entry_is_checked_by_the_registrys_one_rule(entry, path):
    with pytest.raises(ConfigError) as raised:
        parse_entry(entry, "workflows[0]", source="config")
    assert raised.value.path == f"workflows[0].{path}"


async def test_a_managed_server_entry_names_its_key_variable_and_never_stores_a_key(gateway, chatkit_server):
    status, body = await gateway.create(slug="managed-echo", kind="server", url=chatkit_server.url,
                                        api_key={"$env": "ECHO_SERVER_KEY"})
    assert (status, body["error"]) == (400, "invalid_field")
    status, body = await gateway.create(slug="managed-echo", kind="server", url=chatkit_server.url,
                                        api_key_env="ECHO_SERVER_KEY")
    assert status == 201 and body["kind"] == "server"
    status, _ = await gateway.call("POST", "/api/chatkit/w/managed-echo", ALICE, json=LIST_THREADS)
    assert status == 200 and chatkit_server.headers[-1]["Authorization"] == f"Bearer {SERVER_KEY}"
    stored = [record.data for record in await gateway.app[keys.store].list_workflows()]
    assert SERVER_KEY not in json.dumps(stored)


def test_migrate_plan_lists_each_hosted_entry_its_replacement_and_the_answer_after_the_flip(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("storage: {path: ':memory:'}\n" + config("http://chat.internal:8000/chatkit")
                    + "  - {slug: sales, workflow_id: wf_sales1}\n")
    environ = {"GATEWAY_IDENTITY_SECRET": SECRET}
    assert main(["migrate-plan", "--config", str(path), "--json"], environ) == 0
    plan = {step["slug"]: step for step in json.loads(capsys.readouterr().out)["hosted"]}
    assert plan["support"]["replacement"] == "echo"
    assert plan["support"]["session_after_flip"] == {"kind": "server", "api_url": "/api/chatkit/w/support",
                                                     "workflow": {"slug": "support", "label": "Support"}}
    assert plan["sales"]["replacement"] is None and plan["sales"]["session_after_flip"] is None
    assert main(["migrate-plan", "--config", str(path)], environ) == 0
    text = capsys.readouterr().out
    assert "support (config, wf_support1)" in text and "replacement:  none" in text
