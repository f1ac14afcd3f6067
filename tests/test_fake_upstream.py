"""The fake OpenAI upstream behaves as reference/chatkit-protocol.md says, seen through real clients."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import io
import ipaddress
import json
import os
import ssl
import sys
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import openai
import pytest
from tests.fakes.openai_upstream import BETA_MESSAGE, FakeOpenAI, start_fake

try:
    import httpx
except ModuleNotFoundError:
    # httpx-sse imports `httpx`; the openai SDK ships its successor httpx2, which has the same API.
    import httpx2 as httpx

    sys.modules["httpx"] = httpx
from httpx_sse import aconnect_sse  # noqa: E402

BETA_HEADERS = {"OpenAI-Beta": "chatkit_beta=v1"}
LIST_THREADS = {"type": "threads.list", "params": {}}


@pytest.fixture
async def sdk(fake_openai: FakeOpenAI):
    async with openai.AsyncOpenAI(
        base_url=f"{fake_openai.base_url}/v1", api_key=fake_openai.api_key, max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def new_secret(sdk: openai.AsyncOpenAI, user: str = "u1", **options: Any) -> str:
    session = await sdk.beta.chatkit.sessions.create(user=user, workflow={"id": "wf_chat"}, **options)
    return session.client_secret


def user_input(text: str) -> dict[str, Any]:
    return {"content": [{"type": "input_text", "text": text}], "attachments": [], "inference_options": {}}


def create_thread(text: str) -> dict[str, Any]:
    return {"type": "threads.create", "params": {"input": user_input(text)}}


@dataclass
class Streamed:
    status: int = 0
    headers: Any = None
    events: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    error: Exception | None = None

    @property
    def types(self) -> list[str]:
        return [e["type"] if e["type"] != "thread.item.updated" else e["update"]["type"] for e in self.events]


async def stream(base_url: str, secret: str, body: dict[str, Any], *, stop_after: int | None = None) -> Streamed:
    """POST to /conversation and parse the SSE answer with httpx-sse, timing each frame's arrival."""
    loop = asyncio.get_running_loop()
    result = Streamed()
    async with httpx.AsyncClient(timeout=10) as client:
        try:
            async with aconnect_sse(
                client, "POST", f"{base_url}/v1/chatkit/conversation", json=body, headers=auth(secret)
            ) as source:
                result.status, result.headers = source.response.status_code, source.response.headers
                async with aclosing(source.aiter_sse()) as events:
                    async for event in events:
                        result.times.append(loop.time())
                        assert event.event == "message"
                        assert event.data == json.dumps(event.json(), separators=(",", ":"))
                        result.events.append(event.json())
                        if len(result.events) == stop_after:
                            break
        except httpx.TransportError as error:
            result.error = error
    return result


async def converse_json(http: aiohttp.ClientSession, base_url: str, secret: str, body: dict[str, Any]):
    async with http.post(f"{base_url}/v1/chatkit/conversation", json=body, headers=auth(secret)) as response:
        return response.status, await response.json()


async def wait_for(condition, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------- sessions


async def test_session_create_fills_in_the_documented_defaults(fake_openai, sdk):
    before = int(fake_openai.now())

    session = await sdk.beta.chatkit.sessions.create(user="u1", workflow={"id": "wf_chat"})

    assert session.id.startswith("cksess_") and session.client_secret.startswith("ek_")
    assert session.object == "chatkit.session" and session.status == "active" and session.user == "u1"
    assert before + 600 <= session.expires_at <= before + 602
    assert session.max_requests_per_1_minute == 10 and session.rate_limits.max_requests_per_1_minute == 10
    assert session.workflow.model_dump() == {
        "id": "wf_chat", "version": None, "state_variables": None, "tracing": {"enabled": True}
    }
    assert session.chatkit_configuration.model_dump() == {
        "automatic_thread_titling": {"enabled": True},
        "file_upload": {"enabled": False, "max_file_size": 512, "max_files": 10},
        "history": {"enabled": True, "recent_threads": None},
    }


async def test_session_create_keeps_the_options_given(fake_openai, sdk):
    session = await sdk.beta.chatkit.sessions.create(
        user="u1",
        workflow={
            "id": "wf_chat", "version": "3", "state_variables": {"k": "v", "n": 1}, "tracing": {"enabled": False}
        },
        chatkit_configuration={"file_upload": {"enabled": True, "max_files": 3}, "history": {"recent_threads": 5}},
        expires_after={"anchor": "created_at", "seconds": 900},
        rate_limits={"max_requests_per_1_minute": 30},
    )

    assert session.workflow.version == "3" and session.workflow.state_variables == {"k": "v", "n": 1}
    assert session.workflow.tracing.enabled is False
    file_upload = session.chatkit_configuration.file_upload
    assert file_upload.model_dump() == {"enabled": True, "max_file_size": 512, "max_files": 3}
    assert session.chatkit_configuration.history.recent_threads == 5
    assert session.expires_at >= int(fake_openai.now()) + 899
    assert session.max_requests_per_1_minute == 30 == session.rate_limits.max_requests_per_1_minute


async def test_requests_are_recorded_as_they_arrived(fake_openai, sdk):
    session = await sdk.beta.chatkit.sessions.create(user="u1", workflow={"id": "wf_chat"})

    [entry] = fake_openai.requests_to("/v1/chatkit/sessions", "POST")
    assert entry.headers["authorization"] == f"Bearer {fake_openai.api_key}"
    assert entry.headers["openai-beta"] == "chatkit_beta=v1"
    assert entry.headers["user-agent"].startswith("AsyncOpenAI/Python")
    assert entry.json() == {"user": "u1", "workflow": {"id": "wf_chat"}}
    assert entry.status == 200
    assert session._request_id == entry.request_id


async def test_cancel_returns_a_cancelled_session_and_kills_its_secret(fake_openai, sdk, http):
    session = await sdk.beta.chatkit.sessions.create(user="u1", workflow={"id": "wf_chat"})

    cancelled = await sdk.beta.chatkit.sessions.cancel(session.id)

    assert cancelled.id == session.id and cancelled.status == "cancelled" and cancelled.client_secret == ""
    status, body = await converse_json(http, fake_openai.base_url, session.client_secret, LIST_THREADS)
    assert status == 401 and body["error"]["type"] == "invalid_request_error"


async def test_a_session_expires_after_its_ttl(fake_openai, sdk, http):
    session = await sdk.beta.chatkit.sessions.create(
        user="u1", workflow={"id": "wf_chat"}, expires_after={"anchor": "created_at", "seconds": 60}
    )
    fake_openai.advance(61)

    status, _ = await converse_json(http, fake_openai.base_url, session.client_secret, LIST_THREADS)
    assert status == 401
    assert (await sdk.beta.chatkit.sessions.cancel(session.id)).status == "expired"


# ---------------------------------------------------------------- REST errors


async def test_a_request_without_the_beta_header_is_rejected(fake_openai, http):
    url = f"{fake_openai.base_url}/v1/chatkit/sessions"
    body = {"user": "u1", "workflow": {"id": "wf_chat"}}

    async with http.post(url, json=body, headers=auth(fake_openai.api_key)) as response:
        assert response.status == 400
        assert await response.json() == {
            "error": {"message": BETA_MESSAGE, "type": "invalid_request_error", "param": None, "code": "invalid_beta"}
        }


@pytest.mark.parametrize(
    ("body", "param"),
    [({"workflow": {"id": "wf_chat"}}, "user"), ({"user": "u1"}, "workflow")],
)
async def test_session_create_names_the_missing_parameter(fake_openai, http, body, param):
    url = f"{fake_openai.base_url}/v1/chatkit/sessions"

    async with http.post(url, json=body, headers={**auth(fake_openai.api_key), **BETA_HEADERS}) as response:
        error = (await response.json())["error"]
    assert response.status == 400
    assert error == {
        "message": f"Missing required parameter: '{param}'.",
        "type": "invalid_request_error",
        "param": param,
        "code": "missing_required_parameter",
    }


async def test_an_unknown_workflow_is_not_found(fake_openai, sdk):
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.beta.chatkit.sessions.create(user="u1", workflow={"id": "wf_missing_1"})
    assert caught.value.body["message"] == "Workflow with id 'wf_missing_1' not found."

    fake_openai.workflows = {"wf_known"}
    await sdk.beta.chatkit.sessions.create(user="u1", workflow={"id": "wf_known"})
    with pytest.raises(openai.NotFoundError):
        await sdk.beta.chatkit.sessions.create(user="u1", workflow={"id": "wf_chat"})


async def test_cancel_wants_a_cksess_id(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.beta.chatkit.sessions.cancel("sess_1")
    assert caught.value.code == "invalid_value" and caught.value.param == "session_id"
    assert caught.value.body["message"] == "Invalid 'session_id': 'sess_1'. Expected an ID that begins with 'cksess'."


async def test_a_wrong_key_is_named_by_its_last_four_characters_only(fake_openai):
    wrong = "sk-wrong-key-that-ends-abcd"
    async with openai.AsyncOpenAI(base_url=f"{fake_openai.base_url}/v1", api_key=wrong, max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.beta.chatkit.sessions.create(user="u1", workflow={"id": "wf_chat"})
    assert caught.value.code == "invalid_api_key"
    assert caught.value.body["message"] == "Incorrect API key provided: sk-…abcd."


async def test_a_request_without_a_key_is_rejected(fake_openai, http):
    async with http.get(f"{fake_openai.base_url}/v1/models") as response:
        assert response.status == 401
        assert (await response.json())["error"]["message"] == "Missing bearer or basic authentication in header"


async def test_unknown_routes_and_methods_answer_like_openai(fake_openai, http):
    async with http.get(f"{fake_openai.base_url}/v1/nope") as response:
        assert response.status == 404
        assert (await response.json())["error"]["message"] == "Invalid URL (GET /v1/nope)"
    async with http.get(f"{fake_openai.base_url}/v1/chatkit/files") as response:
        assert response.status == 405
        assert (await response.json())["error"]["message"] == "Invalid method for URL (GET /v1/chatkit/files)"


# ---------------------------------------------------------------- session-create fault triggers


@pytest.mark.parametrize(
    ("workflow", "exception", "status"),
    [
        ("wf_fail401", openai.AuthenticationError, 401),
        ("wf_fail403", openai.PermissionDeniedError, 403),
        ("wf_fail404", openai.NotFoundError, 404),
        ("wf_fail429", openai.RateLimitError, 429),
        ("wf_fail500", openai.InternalServerError, 500),
    ],
)
async def test_fault_workflows_answer_their_status(fake_openai, sdk, workflow, exception, status):
    with pytest.raises(exception) as caught:
        await sdk.beta.chatkit.sessions.create(user="u1", workflow={"id": workflow})

    assert caught.value.status_code == status
    assert set(caught.value.body) == {"message", "type", "param", "code"}
    assert fake_openai.api_key not in caught.value.message


@pytest.mark.parametrize("workflow", ["wf_fail401", "wf_fail403"])
async def test_auth_faults_show_the_key_tail(fake_openai, sdk, workflow):
    with pytest.raises(openai.APIStatusError) as caught:
        await sdk.beta.chatkit.sessions.create(user="u1", workflow={"id": workflow})
    assert "sk-…0000" in caught.value.message


async def test_the_429_fault_says_when_to_retry(sdk):
    with pytest.raises(openai.RateLimitError) as caught:
        await sdk.beta.chatkit.sessions.create(user="u1", workflow={"id": "wf_fail429"})
    assert caught.value.type == "rate_limit_error"
    assert caught.value.response.headers["retry-after"] == "7"


async def test_the_slow_workflow_answers_late(fake_openai, sdk):
    fake_openai.slow_seconds = 0.3
    loop = asyncio.get_running_loop()
    started = loop.time()

    session = await sdk.beta.chatkit.sessions.create(user="u1", workflow={"id": "wf_slow"})

    assert loop.time() - started >= 0.3
    assert session.status == "active"


async def test_the_nonjson_workflow_answers_html(fake_openai, http):
    url = f"{fake_openai.base_url}/v1/chatkit/sessions"
    body = {"user": "u1", "workflow": {"id": "wf_nonjson"}}
    async with http.post(url, json=body, headers={**auth(fake_openai.api_key), **BETA_HEADERS}) as response:
        assert response.status == 200 and response.content_type == "text/html"


async def test_the_nosecret_workflow_leaves_out_the_client_secret(fake_openai, http):
    url = f"{fake_openai.base_url}/v1/chatkit/sessions"
    body = {"user": "u1", "workflow": {"id": "wf_nosecret"}}
    async with http.post(url, json=body, headers={**auth(fake_openai.api_key), **BETA_HEADERS}) as response:
        session = await response.json()
    assert response.status == 200 and session["id"].startswith("cksess_")
    assert "client_secret" not in session


# ---------------------------------------------------------------- generic faults on any route


async def test_the_status_fault_answers_that_status(sdk):
    with pytest.raises(openai.InternalServerError) as caught:
        await sdk.models.list(extra_headers={"x-fake-fault": "status=503"})
    assert caught.value.status_code == 503 and caught.value.type == "server_error"


async def test_the_nonjson_fault_answers_html(fake_openai, http):
    async with http.get(f"{fake_openai.base_url}/v1/chatkit/threads", headers={"x-fake-fault": "nonjson"}) as response:
        assert response.status == 200 and response.content_type == "text/html"


async def test_the_drop_fault_closes_the_connection(fake_openai, sdk, http):
    with pytest.raises(openai.APIConnectionError):
        await sdk.models.list(extra_headers={"x-fake-fault": "drop"})
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.get(f"{fake_openai.base_url}/v1/models", headers={"x-fake-fault": "drop"}):
            pass


# ---------------------------------------------------------------- REST threads and items


async def test_threads_are_listed_newest_first_page_by_page(fake_openai, sdk):
    mine = [fake_openai.seed_thread("u1", title=f"t{n}") for n in range(25)]
    fake_openai.seed_thread("u2")

    listed = [thread.id async for thread in sdk.beta.chatkit.threads.list(user="u1", limit=10)]

    assert listed == [t.id for t in reversed(mine)]
    pages = fake_openai.requests_to("/v1/chatkit/threads", "GET")
    assert [p.params.get("after") for p in pages] == [None, listed[9], listed[19]]
    assert pages[0].query == "limit=10&user=u1"


async def test_a_thread_can_be_retrieved_and_deleted(fake_openai, sdk):
    seeded = fake_openai.seed_thread("u1", title="hello")

    thread = await sdk.beta.chatkit.threads.retrieve(seeded.id)
    deleted = await sdk.beta.chatkit.threads.delete(seeded.id)

    assert (thread.id, thread.object, thread.title, thread.user) == (seeded.id, "chatkit.thread", "hello", "u1")
    assert thread.status.type == "active"
    assert (deleted.id, deleted.object, deleted.deleted) == (seeded.id, "chatkit.thread.deleted", True)
    with pytest.raises(openai.NotFoundError):
        await sdk.beta.chatkit.threads.retrieve(seeded.id)


async def test_items_page_in_either_order(fake_openai, sdk):
    thread = fake_openai.seed_thread("u1", turns=15)
    ids = [item.id for item in thread.items]

    ascending = [item.id async for item in sdk.beta.chatkit.threads.list_items(thread.id, limit=7, order="asc")]
    first_page = await sdk.beta.chatkit.threads.list_items(thread.id)
    before = await sdk.beta.chatkit.threads.list_items(thread.id, order="asc", before=ids[10], limit=3)

    assert ascending == ids
    assert [i.id for i in first_page.data] == ids[::-1][:20] and first_page.has_more
    assert [i.id for i in before.data] == ids[7:10]
    user, assistant = first_page.data[-1], first_page.data[-2]
    assert (user.type, user.content[0].text) == ("chatkit.user_message", "question 5")
    assert (assistant.type, assistant.content[0].text) == ("chatkit.assistant_message", "answer 5")


# ---------------------------------------------------------------- the /conversation stream


async def test_a_turn_streams_its_frames_in_order_and_spaced_out(fake_openai, sdk):
    secret = await new_secret(sdk)

    result = await stream(fake_openai.base_url, secret, create_thread("hello world"))

    assert result.status == 200
    assert result.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert result.headers["transfer-encoding"] == "chunked"
    assert result.types == [
        "thread.created",
        "thread.item.done",
        "stream_options",
        "thread.item.added",
        "assistant_message.content_part.added",
        *["assistant_message.content_part.text_delta"] * 3,
        "assistant_message.content_part.done",
        "thread.item.done",
        "thread.updated",
    ]
    created, user_done, assistant_done, updated = (result.events[i] for i in (0, 1, -2, -1))
    assert created["thread"]["id"].startswith("cthr_") and created["thread"]["items"] == {"data": [], "has_more": False}
    assert user_done["item"]["type"] == "user_message" and user_done["item"]["id"].startswith("cthi_")
    assert assistant_done["item"]["content"][0]["text"] == "echo: hello world "
    assert updated["thread"]["title"] == "hello world"
    gaps = sorted(b - a for a, b in zip(result.times, result.times[1:], strict=False))
    assert gaps[len(gaps) // 2] >= 0.01  # the median gap shows the 20 ms delay
    assert result.times[-1] - result.times[0] >= 0.8 * 10 * fake_openai.frame_delay


async def test_the_stream_stores_the_thread_for_the_rest_api(fake_openai, sdk):
    secret = await new_secret(sdk)
    result = await stream(fake_openai.base_url, secret, create_thread("hello world"))
    thread_id = result.events[0]["thread"]["id"]

    thread = await sdk.beta.chatkit.threads.retrieve(thread_id)
    items = await sdk.beta.chatkit.threads.list_items(thread_id, order="asc")

    assert (thread.user, thread.title) == ("u1", "hello world")
    assert [i.type for i in items.data] == ["chatkit.user_message", "chatkit.assistant_message"]
    assert fake_openai.requests_to("/v1/chatkit/conversation")[0].finished_at is not None


async def test_a_follow_up_message_adds_to_the_thread(fake_openai, sdk, http):
    secret = await new_secret(sdk)
    first = await stream(fake_openai.base_url, secret, create_thread("hi"))
    thread_id = first.events[0]["thread"]["id"]

    body = {"type": "threads.add_user_message", "params": {"thread_id": thread_id, "input": user_input("again")}}
    second = await stream(fake_openai.base_url, secret, body)

    assert second.types[:3] == ["thread.item.done", "stream_options", "thread.item.added"]
    assert "thread.created" not in second.types and "thread.updated" not in second.types
    list_items = {"type": "items.list", "params": {"thread_id": thread_id, "order": "asc"}}
    status, items = await converse_json(http, fake_openai.base_url, secret, list_items)
    assert status == 200 and items["has_more"] is False and items["after"] == items["data"][-1]["id"]
    assert [i["type"] for i in items["data"]] == ["user_message", "assistant_message"] * 2


async def test_the_json_ops_of_the_protocol(fake_openai, sdk, http):
    secret = await new_secret(sdk)
    thread_id = (await stream(fake_openai.base_url, secret, create_thread("hi"))).events[0]["thread"]["id"]

    async def call(op: str, **params: Any) -> tuple[int, Any]:
        return await converse_json(http, fake_openai.base_url, secret, {"type": op, "params": params})

    assert (await call("threads.list"))[1]["data"][0]["id"] == thread_id
    status, thread = await call("threads.get_by_id", thread_id=thread_id)
    assert status == 200 and len(thread["items"]["data"]) == 2
    assert (await call("threads.update", thread_id=thread_id, title="renamed"))[1]["title"] == "renamed"
    assert await call("items.feedback", thread_id=thread_id, item_ids=[], kind="positive") == (200, {})
    status, attachment = await call("attachments.create", name="a.png", size=3, mime_type="image/png")
    assert attachment["type"] == "image" and attachment["upload_url"].endswith("/v1/chatkit/files")
    assert await call("threads.delete", thread_id=thread_id) == (200, {})
    assert (await call("threads.get_by_id", thread_id=thread_id))[0] == 404
    assert (await call("threads.nonsense"))[0] == 400


async def test_threads_belong_to_the_session_user(fake_openai, sdk, http):
    mine = await new_secret(sdk, user="u1")
    theirs = await new_secret(sdk, user="u2")
    thread_id = (await stream(fake_openai.base_url, mine, create_thread("hi"))).events[0]["thread"]["id"]

    get_thread = {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}
    status, body = await converse_json(http, fake_openai.base_url, theirs, get_thread)
    listed = await converse_json(http, fake_openai.base_url, theirs, LIST_THREADS)

    assert status == 404 and body["error"]["message"] == f"Thread with id '{thread_id}' not found."
    assert listed == (200, {"data": [], "has_more": False, "after": None})


async def test_conversation_wants_a_live_client_secret(fake_openai, http):
    assert (await converse_json(http, fake_openai.base_url, "ek_unknown", LIST_THREADS))[0] == 401
    assert (await converse_json(http, fake_openai.base_url, fake_openai.api_key, LIST_THREADS))[0] == 401


@pytest.mark.parametrize("beta", [{}, BETA_HEADERS])
async def test_conversation_accepts_the_beta_header_or_its_absence(fake_openai, sdk, http, beta):
    secret = await new_secret(sdk)
    url = f"{fake_openai.base_url}/v1/chatkit/conversation"
    async with http.post(url, json=LIST_THREADS, headers={**auth(secret), **beta}) as response:
        assert response.status == 200


async def test_conversation_enforces_the_session_rate_limit(fake_openai, sdk, http):
    secret = await new_secret(sdk, rate_limits={"max_requests_per_1_minute": 2})

    statuses = [(await converse_json(http, fake_openai.base_url, secret, LIST_THREADS))[0] for _ in range(2)]
    status, error = await converse_json(http, fake_openai.base_url, secret, LIST_THREADS)
    fake_openai.advance(61)

    assert statuses == [200, 200]
    assert status == 429 and error["error"]["type"] == "rate_limit_error"
    assert (await converse_json(http, fake_openai.base_url, secret, LIST_THREADS))[0] == 200


# ---------------------------------------------------------------- /conversation fault triggers


async def test_slow_frames_stop_when_the_client_goes_away(fake_openai, sdk):
    secret = await new_secret(sdk)
    loop = asyncio.get_running_loop()

    result = await stream(fake_openai.base_url, secret, create_thread("!!slow"), stop_after=2)
    gone = loop.time()
    entry = fake_openai.requests_to("/v1/chatkit/conversation")[-1]
    await wait_for(lambda: entry.disconnected)

    assert result.times[1] - result.times[0] >= 0.45
    assert entry.disconnected_at - gone < 0.25 and entry.finished_at is None
    [thread] = fake_openai.threads.values()
    assert [item.role for item in thread.items] == ["user"]  # the assistant reply was never stored


async def test_a_gone_client_is_noticed_at_once_without_handler_cancellation(aiohttp_server):
    # Gateway tests may mount the fake with aiohttp_server(fake.app()), where aiohttp
    # reports a gone client only on the next write: here that would be 5 s late.
    fake = FakeOpenAI()
    server = await aiohttp_server(fake.app())
    base_url = str(server.make_url("")).rstrip("/")
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=fake.api_key, max_retries=0) as client:
        secret = await new_secret(client)
    loop = asyncio.get_running_loop()

    await stream(base_url, secret, create_thread("!!silent"), stop_after=1)
    gone = loop.time()
    entry = fake.requests_to("/v1/chatkit/conversation")[-1]
    await wait_for(lambda: entry.disconnected)

    assert entry.disconnected_at - gone < 0.25 and entry.frames_sent == 1


async def test_disconnect_cuts_the_chunked_body_after_two_frames(fake_openai, sdk):
    secret = await new_secret(sdk)

    result = await stream(fake_openai.base_url, secret, create_thread("!!disconnect"))

    assert result.status == 200 and len(result.events) == 2
    assert isinstance(result.error, httpx.RemoteProtocolError)


async def test_error_ends_the_stream_with_an_error_event(fake_openai, sdk):
    secret = await new_secret(sdk)

    result = await stream(fake_openai.base_url, secret, create_thread("!!error"))

    assert result.status == 200 and result.error is None
    assert result.types == ["thread.created", "thread.item.done", "stream_options", "error"]
    assert result.events[-1] == {"type": "error", "code": "stream.error", "allow_retry": True}


async def test_silent_pauses_after_the_first_frame(fake_openai, sdk):
    fake_openai.silent_seconds = 0.3
    secret = await new_secret(sdk)

    result = await stream(fake_openai.base_url, secret, create_thread("!!silent"))

    assert result.times[1] - result.times[0] >= 0.3
    assert result.types[-1] == "thread.updated"


async def test_big_sends_4kb_deltas(fake_openai, sdk):
    secret = await new_secret(sdk)

    result = await stream(fake_openai.base_url, secret, create_thread("!!big"))

    updates = [e["update"] for e in result.events if e["type"] == "thread.item.updated"]
    deltas = [u["delta"] for u in updates if u["type"] == "assistant_message.content_part.text_delta"]
    assert len(deltas) > 1 and all(len(d) == 4096 for d in deltas)


# ---------------------------------------------------------------- uploads, models, realtime calls, TLS


async def test_an_upload_is_hashed_not_stored(fake_openai, http):
    payload = os.urandom(3 * 1024 * 1024 + 7)
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(payload), filename="a.bin", content_type="application/octet-stream")

    url = f"{fake_openai.base_url}/v1/chatkit/files"
    async with http.post(url, data=form, headers=auth(fake_openai.api_key)) as response:
        uploaded = await response.json()

    assert response.status == 200
    assert uploaded["id"].startswith("cfile_") and uploaded["type"] == "file" and uploaded["name"] == "a.bin"
    [entry] = fake_openai.requests_to("/v1/chatkit/files")
    assert entry.body == b""
    assert (entry.upload_size, entry.upload_sha256) == (len(payload), hashlib.sha256(payload).hexdigest())
    assert fake_openai.uploads == [
        {**{k: uploaded[k] for k in ("id", "name", "mime_type")}, "size": len(payload), "sha256": entry.upload_sha256}
    ]


async def test_an_upload_needs_the_file_field(fake_openai, http):
    form = aiohttp.FormData()
    form.add_field("other", io.BytesIO(b"x"), filename="x.txt")
    url = f"{fake_openai.base_url}/v1/chatkit/files"
    async with http.post(url, data=form, headers=auth(fake_openai.api_key)) as response:
        assert response.status == 400 and (await response.json())["error"]["param"] == "file"


async def test_models_are_listed(sdk):
    models = [model.id async for model in sdk.models.list()]
    assert "gpt-realtime" in models


async def test_call_control_is_recorded(fake_openai, sdk):
    calls = sdk.realtime.calls
    await calls.accept("rtc_1", type="realtime", model="gpt-realtime", instructions="hi")
    await calls.reject("rtc_1", status_code=486)
    await calls.refer("rtc_1", target_uri="tel:+14155550123")
    await calls.hangup("rtc_1")

    assert [(c.action, c.body) for c in fake_openai.calls] == [
        ("accept", {"type": "realtime", "model": "gpt-realtime", "instructions": "hi"}),
        ("reject", {"status_code": 486}),
        ("refer", {"target_uri": "tel:+14155550123"}),
        ("hangup", None),
    ]
    assert all("openai-beta" not in r.headers for r in fake_openai.requests)


def self_signed_certificate(tmp_path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


async def test_the_fake_can_serve_tls(tmp_path, http):
    cert, key = self_signed_certificate(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    fake = FakeOpenAI()
    runner, base_url = await start_fake(fake, ssl_context=server_context)
    try:
        client_context = ssl.create_default_context(cafile=cert)
        async with http.get(f"{base_url}/v1/models", headers=auth(fake.api_key), ssl=client_context) as response:
            assert response.status == 200
        assert base_url.startswith("https://127.0.0.1:")
    finally:
        await runner.cleanup()
