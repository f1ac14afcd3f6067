"""Requests leave no cyclic garbage: the process's collector policy (gateway/collector.py) counts on it.

Full collections are made rare because a relayed request, a minted session and a streamed turn are
freed by reference counting alone, and so are the failures that keep objects of a long stream or a
pooled connection (an upstream that drops, a stream it cuts). A reference cycle there would make
those objects wait for a full collection, and memory grow between two. Here the collector is
stopped while the shipped chain handles each kind of request, then asked what it found unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web

from gateway import collector, keys
from tests.plugin_helpers import KEY, gateway_with, new_session, stream_turn

SHIPPED_CHAIN = ("access_log", "metrics", "auth", "workflow")
SERVER_SIDE = ("gateway", "plugins", "aiohttp.web", "aiohttp.http", "aiohttp._http", "aiohttp.streams")


def server_side(obj: object) -> bool:
    """An object the gateway (not the test's client) made: its type is the gateway's or aiohttp's server's,
    or it is a coroutine or frame running their code."""
    code = getattr(obj, "cr_code", None) or getattr(obj, "f_code", None)
    if code is not None:
        return "/gateway/" in code.co_filename or "/plugins/" in code.co_filename or "/web_" in code.co_filename
    return type(obj).__module__.startswith(SERVER_SIDE)


def unreachable_after(collected: set[int]) -> list[object]:
    """The server-side objects the collector finds unreachable now, leaving out those found before."""
    gc.collect()
    found = [obj for obj in gc.garbage if id(obj) not in collected and server_side(obj)]
    collected.update(id(obj) for obj in gc.garbage)
    return found


@pytest.fixture
def collector_stopped() -> Iterator[set[int]]:
    """The cyclic collector off, and what it finds kept for inspection rather than freed."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield set()
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        gc.collect()


async def test_relayed_requests_minted_sessions_and_streams_leave_no_cycles(aiohttp_client, tmp_path, fake_openai,
                                                                             collector_stopped):
    client = await gateway_with(aiohttp_client, tmp_path, fake_openai, *SHIPPED_CHAIN,
                                environ={"GATEWAY_ADMIN_API_KEY": KEY, "CHATKIT_WORKFLOW_ID": "wf_garbage"})
    auth = {"Authorization": f"Bearer {KEY}"}

    async def relayed() -> None:
        await new_session(client, auth)

    async def minted() -> None:
        response = await client.post("/api/chatkit/session", json={"user": "u1"}, headers=auth)
        assert response.status == 200, await response.text()

    async def streamed() -> None:
        response, body = await stream_turn(client, await new_session(client, auth))
        assert response.status == 200 and body.count(b"\n\n") > 3

    async def upstream_failed() -> None:
        response = await client.post("/api/chatkit/sessions", json={"user": "u1", "workflow": {"id": "wf_abc"}},
                                     headers={**auth, "X-Fake-Fault": "status=503"})
        assert response.status == 503

    async def upstream_dropped() -> None:
        response = await client.post("/api/chatkit/sessions", json={"user": "u1", "workflow": {"id": "wf_abc"}},
                                     headers={**auth, "X-Fake-Fault": "drop"})
        assert response.status == 502 and (await response.json())["error"] == "upstream_unavailable"

    async def stream_cut() -> None:
        with contextlib.suppress(aiohttp.ClientPayloadError):
            await stream_turn(client, await new_session(client, auth), "!!disconnect")

    async def refused() -> None:
        response = await client.post("/api/chatkit/sessions", json={"user": "u1"},
                                     headers={"Authorization": "Bearer gk_not_a_key_of_this_gateway_000000"})
        assert response.status == 401

    for name, run in (("relayed request", relayed), ("minted session", minted), ("streamed turn", streamed),
                      ("upstream error", upstream_failed), ("dropped upstream", upstream_dropped),
                      ("stream the upstream cut", stream_cut), ("refused caller", refused)):
        await run()  # the first of a kind fills caches (metric children, compiled routes); those are not garbage
        unreachable_after(collector_stopped)
        for _ in range(5):
            await run()
        found = unreachable_after(collector_stopped)
        kinds = sorted({type(obj).__qualname__ for obj in found})
        assert not found, f"a {name} left {len(found)} objects in reference cycles: {kinds}"
    assert client.app[keys.sessions] is not None


async def test_the_collector_policy_freezes_the_start_up_heap_and_still_collects_on_its_timer():
    app = web.Application()
    app.cleanup_ctx.append(collector.policy(every_seconds=0.05))
    saved = gc.get_threshold()
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        assert gc.get_freeze_count() > 0  # what start-up built is out of the collector's sight
        assert gc.get_threshold() == (saved[0], saved[1], collector.FULL_COLLECTION_EVERY)
        full = gc.get_stats()[2]["collections"]
        await asyncio.sleep(0.3)
        assert gc.get_stats()[2]["collections"] >= full + 2  # the timer's full collections, every 0.05 s
    finally:
        await runner.cleanup()
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == saved
