"""`server.workers: 2`: two processes on one port, one set of metrics, a killed worker replaced."""

from __future__ import annotations

import asyncio
import os
import re
import signal

import aiohttp
import pytest

from tests.live_servers import running_gateway, wait_until

pytestmark = pytest.mark.integration

CONFIG = "server:\n  workers: 2\nplugins: [access_log, metrics]\n"


async def readyz_pid(url: str) -> int | None:
    """The pid of the worker that answers a fresh connection, or None while none does."""
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
            async with client.get(url + "/readyz") as response:
                return (await response.json())["pid"]
    except aiohttp.ClientError:
        return None


async def answering_pids(url: str, connections: int = 16) -> set[int]:
    return {pid for pid in await asyncio.gather(*(readyz_pid(url) for _ in range(connections))) if pid}


async def both_workers(url: str) -> set[int]:
    async def two() -> set[int] | None:
        pids = await answering_pids(url)
        return pids if len(pids) == 2 else None

    return await wait_until(two, "both workers to answer")


async def diag_stream_pid(url: str) -> int:
    """Which worker served one diagnostic stream, read whole on its own connection."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
        async with client.get(url + "/api/chatkit/_diag/stream") as response:
            body = await response.text()
    return int(re.search(r'"pid":(\d+)', body).group(1))


def sample(metrics: str, name: str, route: str) -> float:
    pattern = rf'^{name}\{{[^}}]*route="{re.escape(route)}"[^}}]*\}} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, metrics, re.MULTILINE))


@pytest.fixture
async def gateway(tmp_path, fake_openai):
    async with running_gateway(tmp_path, fake_openai.base_url, fake_openai.api_key, config=CONFIG) as gateway:
        yield gateway


async def test_two_workers_share_the_port_and_metrics_add_up_across_them(gateway):
    workers = await both_workers(gateway.url)
    assert gateway.process.pid not in workers  # the supervisor serves nothing itself

    served_by = await asyncio.gather(*(diag_stream_pid(gateway.url) for _ in range(12)))
    assert set(served_by) == workers, f"every worker served some streams: {served_by}"

    route = "/api/chatkit/_diag/stream"
    for _ in range(6):  # scrapes on fresh connections land on either worker: each sees the sum
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
            async with client.get(gateway.url + "/metrics") as response:
                metrics = await response.text()
        assert sample(metrics, "gateway_requests_total", route) == 12
        assert sample(metrics, "gateway_stream_events_total", route) == 12 * 10
        assert re.search(r"^gateway_requests_in_flight \S+$", metrics, re.MULTILINE)  # live workers summed


async def test_a_killed_worker_is_replaced_and_stopping_leaves_no_worker_behind(gateway):
    first = await both_workers(gateway.url)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)

    async def replaced() -> set[int] | None:
        pids = await answering_pids(gateway.url)
        return pids if len(pids) == 2 and victim not in pids else None

    second = await wait_until(replaced, "a replacement worker")
    assert len(second & first) == 1
    assert "exited with signal SIGKILL; restarting it" in gateway.log_path.read_text()

    gateway.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(gateway.process.wait, 10) == 0

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    assert all(gone(pid) for pid in second)


async def test_one_worker_is_the_process_itself(tmp_path, fake_openai):
    async with running_gateway(tmp_path, fake_openai.base_url, fake_openai.api_key) as gateway:
        assert await answering_pids(gateway.url, 4) == {gateway.process.pid}


async def test_a_client_secret_minted_by_one_worker_is_honoured_by_the_other(gateway):
    await both_workers(gateway.url)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
        async with client.post(gateway.url + "/api/chatkit/sessions",
                               json={"user": "u1", "workflow": {"id": "wf_abc"}}) as response:
            secret = (await response.json())["client_secret"]
        statuses = []
        for _ in range(8):  # fresh connections: both workers answer some (the fake allows 10 a minute)
            async with client.post(gateway.url + "/api/chatkit/conversation",
                                   json={"type": "threads.list", "params": {}},
                                   headers={"Authorization": f"Bearer {secret}"}) as response:
                statuses.append(response.status)
    assert set(statuses) == {200}, statuses


async def test_a_session_cancelled_on_one_worker_is_refused_by_every_worker_soon_after(gateway):
    await both_workers(gateway.url)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
        async with client.post(gateway.url + "/api/chatkit/sessions",
                               json={"user": "u1", "workflow": {"id": "wf_abc"}}) as response:
            session = await response.json()
        for _ in range(6):  # both workers learn the secret first
            async with client.post(gateway.url + "/api/chatkit/conversation", json={"type": "threads.list", "params": {}},
                                   headers={"Authorization": f"Bearer {session['client_secret']}"}) as response:
                assert response.status == 200
        async with client.post(gateway.url + f"/api/chatkit/sessions/{session['id']}/cancel") as response:
            assert response.status == 200
        await asyncio.sleep(2.5)  # storage.poll_seconds is 2 by default
        statuses = set()
        for _ in range(12):
            async with client.post(gateway.url + "/api/chatkit/conversation", json={"type": "threads.list", "params": {}},
                                   headers={"Authorization": f"Bearer {session['client_secret']}"}) as response:
                statuses.add(response.status)
    assert statuses == {401}
