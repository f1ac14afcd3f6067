"""A faithful in-memory fake of the OpenAI ChatKit upstream, built from reference/chatkit-protocol.md.

It serves the ChatKit REST API (sessions, threads, items), the hosted ``/conversation`` protocol
(SSE), file uploads, ``/models`` and the realtime call-control routes, all under ``/v1``. It records
every request it receives in ``FakeOpenAI.requests`` so tests can assert what the gateway sent.

Fault triggers:
- session create, keyed on ``workflow.id``: ``wf_fail401|403|404|429|500``, ``wf_slow``,
  ``wf_nonjson``, ``wf_nosecret``; ``wf_missing…`` does not exist.
- ``/conversation``, keyed on the user's text: ``!!slow``, ``!!disconnect``, ``!!error``,
  ``!!silent``, ``!!big``.
- any route, header ``x-fake-fault``: ``status=503``, ``nonjson``, ``drop``.
- call accept, by attribute: ``fail_next_accepts = n`` answers the next n accepts 500 (nothing recorded).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

DEFAULT_API_KEY = "sk-test-upstream-key-0000"
BETA = "chatkit_beta=v1"
BETA_MESSAGE = (
    "You must provide the 'OpenAI-Beta' header to access the Chatkit API. "
    "Please try again by setting the header 'OpenAI-Beta: chatkit_beta=v1'."
)
MISSING_AUTH_MESSAGE = "Missing bearer or basic authentication in header"
UPLOAD_CHUNK = 256 * 1024
BIG_DELTA = 4096
BIG_DELTA_COUNT = 8

DEFAULT_CHATKIT_CONFIGURATION = {
    "automatic_thread_titling": {"enabled": True},
    "file_upload": {"enabled": False, "max_file_size": 512, "max_files": 10},
    "history": {"enabled": True, "recent_threads": None},
}

# Session-create triggers: they work whatever `FakeOpenAI.workflows` says.
FAULT_WORKFLOWS = (
    "wf_fail401", "wf_fail403", "wf_fail404", "wf_fail429", "wf_fail500", "wf_slow", "wf_nonjson", "wf_nosecret"
)

MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-realtime")


# ---------------------------------------------------------------- records and state


@dataclass
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: str  # the raw query string, as sent ("" when none); parsed: `params`
    headers: dict[str, str]  # names lower-cased; repeated headers joined with ", "
    body: bytes  # empty for uploads: see upload_size / upload_sha256
    request_id: str
    started_at: float  # loop time
    status: int | None = None
    frames_sent: int = 0
    finished_at: float | None = None  # loop time the stream ended normally
    disconnected_at: float | None = None  # loop time the client went away mid-stream
    upload_size: int | None = None
    upload_sha256: str | None = None

    @property
    def disconnected(self) -> bool:
        return self.disconnected_at is not None

    @property
    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Session:
    id: str
    client_secret: str | None
    user: str
    workflow: dict[str, Any]
    chatkit_configuration: dict[str, Any]
    max_requests_per_1_minute: int
    created_at: float
    expires_at: int
    cancelled_at: float | None = None
    recent_requests: deque[float] = field(default_factory=deque)

    def status(self, now: float) -> str:
        if self.cancelled_at is not None and self.cancelled_at < self.expires_at:
            return "cancelled"
        if now >= self.expires_at:
            return "expired"
        return "active"


@dataclass
class Item:
    id: str
    thread_id: str
    created_at: float
    role: str  # "user" | "assistant"
    text: str


@dataclass
class Thread:
    id: str
    user: str
    created_at: float
    title: str | None = None
    items: list[Item] = field(default_factory=list)


@dataclass
class CallAction:
    call_id: str
    action: str  # accept | reject | refer | hangup
    body: Any  # parsed JSON, or None when the body was empty


class ApiError(Exception):
    """An OpenAI-style error answer: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or error_type(status)
        self.param = param
        self.code = code
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return web.json_response(body, status=self.status, headers=self.headers)


def error_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def mask_key(key: str) -> str:
    """Show a key the way OpenAI error messages do: its last 4 characters only."""
    prefix = "sk-" if key.startswith("sk-") else ""
    tail = key[-4:] if len(key) >= 12 else ""
    return f"{prefix}…{tail}"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


ENTRY = web.RequestKey("fake_openai_entry", RecordedRequest)


# ---------------------------------------------------------------- stream pacing


@dataclass
class Pacing:
    """How a stream is paced and whether the fake cuts it."""

    delay: float
    silence_after_first: float = 0.0
    drop_after: int | None = None  # close the socket once this many frames were sent

    def pause_before(self, index: int) -> float:
        return self.delay + (self.silence_after_first if index == 1 else 0.0)


# A frame is an event plus what becomes true in the fake once the client has received it.
Frame = tuple[dict[str, Any], Callable[[], None] | None]


async def pause(request: web.Request, seconds: float) -> None:
    """Sleep between frames, but notice at once when the client goes away.

    Without handler_cancellation aiohttp only reports a gone client on the next write,
    which would be seconds late for `!!silent`; the connection drops its transport at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        if request.transport is None or request.transport.is_closing():
            raise ConnectionResetError("the client went away")
        await asyncio.sleep(min(left, 0.01))


def sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


# ---------------------------------------------------------------- the fake


class FakeOpenAI:
    """In-memory fake of api.openai.com for ChatKit; see the module docstring for triggers."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        workflows: set[str] | None = None,
        frame_delay: float = 0.02,
        slow_seconds: float = 5.0,
        silent_seconds: float = 5.0,
    ) -> None:
        self.api_key = api_key
        self.workflows = workflows
        self.frame_delay = frame_delay
        self.slow_seconds = slow_seconds
        self.silent_seconds = silent_seconds
        self.base_url: str | None = None
        self.requests: list[RecordedRequest] = []
        self.sessions: dict[str, Session] = {}
        self.threads: dict[str, Thread] = {}
        self.uploads: list[dict[str, Any]] = []  # {id, name, mime_type, size, sha256}
        self.calls: list[CallAction] = []
        self.fail_next_accepts = 0
        self.clock_offset = 0.0
        self._secrets: dict[str, Session] = {}

    # -- public helpers for tests

    def now(self) -> float:
        return time.time() + self.clock_offset

    def advance(self, seconds: float) -> None:
        """Move the fake's wall clock forward (session expiry, rate-limit windows)."""
        self.clock_offset += seconds

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path and (method is None or r.method == method)]

    def seed_thread(self, user: str, *, title: str | None = None, turns: int = 0) -> Thread:
        """Store a thread with `turns` user/assistant message pairs, as if a chat had happened."""
        thread = Thread(new_id("cthr"), user, self.now(), title)
        for n in range(turns):
            thread.items.append(Item(new_id("cthi"), thread.id, self.now(), "user", f"question {n}"))
            thread.items.append(Item(new_id("cthi"), thread.id, self.now(), "assistant", f"answer {n}"))
        self.threads[thread.id] = thread
        return thread

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.on_response_prepare.append(self._on_response_prepare)
        add = app.router.add_route
        add("POST", "/v1/chatkit/sessions", self.create_session)
        add("POST", "/v1/chatkit/sessions/{session_id}/cancel", self.cancel_session)
        add("GET", "/v1/chatkit/threads", self.list_threads)
        add("GET", "/v1/chatkit/threads/{thread_id}", self.retrieve_thread)
        add("DELETE", "/v1/chatkit/threads/{thread_id}", self.delete_thread)
        add("GET", "/v1/chatkit/threads/{thread_id}/items", self.list_items)
        add("POST", "/v1/chatkit/conversation", self.conversation)
        add("POST", "/v1/chatkit/files", self.upload_file, name="upload")
        add("GET", "/v1/models", self.list_models)
        add("POST", "/v1/realtime/calls/{call_id}/{action:accept|reject|refer|hangup}", self.call_action)
        return app

    # -- recording, generic faults, error shape

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        entry = await self._record(request)
        request[ENTRY] = entry
        try:
            fault = request.headers.get("x-fake-fault")
            if fault:
                return self._generic_fault(request, fault)
            return await handler(request)
        except ApiError as error:
            return error.response()
        except web.HTTPMethodNotAllowed:
            return ApiError(405, f"Invalid method for URL ({request.method} {request.path})").response()
        except web.HTTPNotFound:
            return ApiError(404, f"Invalid URL ({request.method} {request.path})").response()

    async def _record(self, request: web.Request) -> RecordedRequest:
        # Uploads are read as a stream by their handler (50 MB bodies): don't buffer them here.
        streamed = request.match_info.route.name == "upload"
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        entry = RecordedRequest(
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers=headers,
            body=b"" if streamed else await request.read(),
            request_id=f"req_{secrets.token_hex(16)}",
            started_at=asyncio.get_running_loop().time(),
        )
        self.requests.append(entry)
        return entry

    async def _on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        entry = request.get(ENTRY)
        if entry is not None:
            entry.status = response.status
            response.headers["x-request-id"] = entry.request_id

    def _generic_fault(self, request: web.Request, fault: str) -> web.StreamResponse:
        if fault == "drop":
            return self._drop(request)
        if fault == "nonjson":
            return html_page()
        status = fault.removeprefix("status=")
        if fault.startswith("status=") and status.isdigit():
            raise ApiError(int(status), f"Injected fault: status {status}.")
        raise ApiError(400, f"Unknown x-fake-fault: {fault!r}.")

    def _drop(self, request: web.Request) -> web.StreamResponse:
        # Closing the transport first makes aiohttp's own write of this response fail quietly.
        if request.transport is not None:
            request.transport.close()
        return web.Response()

    # -- auth

    def _bearer(self, request: web.Request) -> str:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, MISSING_AUTH_MESSAGE)
        return token.strip()

    def _require_api_key(self, request: web.Request) -> str:
        key = self._bearer(request)
        if key != self.api_key:
            raise ApiError(401, f"Incorrect API key provided: {mask_key(key)}.", code="invalid_api_key")
        return key

    def _require_beta(self, request: web.Request, *, optional: bool = False) -> None:
        values = {v.strip() for v in request.headers.get("OpenAI-Beta", "").split(",") if v.strip()}
        if (optional and not values) or BETA in values:
            return
        raise ApiError(400, BETA_MESSAGE, code="invalid_beta")

    def _require_rest(self, request: web.Request) -> str:
        key = self._require_api_key(request)
        self._require_beta(request)
        return key

    def _session_for_secret(self, request: web.Request) -> Session:
        session = self._secrets.get(self._bearer(request))
        if session is None:
            raise ApiError(401, "Invalid client secret.", code="invalid_client_secret")
        status = session.status(self.now())
        if status != "active":
            raise ApiError(401, f"Client secret is no longer valid: session {status}.", code="invalid_client_secret")
        return session

    def _count_request(self, session: Session) -> None:
        now = self.now()
        window = session.recent_requests
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) >= session.max_requests_per_1_minute:
            raise ApiError(
                429,
                f"Rate limit reached for session {session.id}: "
                f"{session.max_requests_per_1_minute} requests per minute.",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(max(1, int(window[0] + 60 - now)))},
            )
        window.append(now)

    # -- sessions

    async def create_session(self, request: web.Request) -> web.StreamResponse:
        key = self._require_rest(request)
        body = json_object(request[ENTRY].body)
        user = body.get("user")
        if not isinstance(user, str) or not user:
            raise missing("user")
        workflow = body.get("workflow")
        if not isinstance(workflow, dict):
            raise missing("workflow")
        workflow_id = workflow.get("id")
        if not isinstance(workflow_id, str) or not workflow_id:
            raise missing("workflow.id")
        fault = await self._workflow_fault(workflow_id, key)
        if fault is not None:
            return fault
        if not self._workflow_exists(workflow_id):
            raise ApiError(404, f"Workflow with id '{workflow_id}' not found.")
        session = self._new_session(user, workflow, body)
        payload = render_session(session, self.now())
        if session.client_secret is None:
            del payload["client_secret"]
        return web.json_response(payload)

    async def _workflow_fault(self, workflow_id: str, key: str) -> web.StreamResponse | None:
        masked = mask_key(key)
        if workflow_id.startswith("wf_fail401"):
            raise ApiError(401, f"Incorrect API key provided: {masked}.", code="invalid_api_key")
        if workflow_id.startswith("wf_fail403"):
            raise ApiError(
                403,
                f"The API key {masked} does not have access to workflow '{workflow_id}'.",
                code="insufficient_permissions",
            )
        if workflow_id.startswith("wf_fail404"):
            raise ApiError(404, f"Workflow with id '{workflow_id}' not found.")
        if workflow_id.startswith("wf_fail429"):
            raise ApiError(
                429,
                "Rate limit reached for requests. Please try again in 7s.",
                code="rate_limit_exceeded",
                headers={"Retry-After": "7"},
            )
        if workflow_id.startswith("wf_fail500"):
            raise ApiError(500, "The server had an error while processing your request. Sorry about that!")
        if workflow_id.startswith("wf_slow"):
            await asyncio.sleep(self.slow_seconds)
        if workflow_id.startswith("wf_nonjson"):
            return html_page()
        return None

    def _workflow_exists(self, workflow_id: str) -> bool:
        if workflow_id.startswith(FAULT_WORKFLOWS):
            return True
        if self.workflows is not None:
            return workflow_id in self.workflows
        return workflow_id.startswith("wf_") and not workflow_id.startswith("wf_missing")

    def _new_session(self, user: str, workflow: dict[str, Any], body: dict[str, Any]) -> Session:
        now = self.now()
        ttl = expires_after_seconds(body.get("expires_after"))
        session = Session(
            id=new_id("cksess"),
            client_secret=new_id("ek"),
            user=user,
            workflow=workflow_with_defaults(workflow),
            chatkit_configuration=configuration_with_defaults(body.get("chatkit_configuration")),
            max_requests_per_1_minute=requests_per_minute(body.get("rate_limits")),
            created_at=now,
            expires_at=int(now) + ttl,
        )
        if workflow["id"].startswith("wf_nosecret"):
            session.client_secret = None
        self.sessions[session.id] = session
        if session.client_secret:
            self._secrets[session.client_secret] = session
        return session

    async def cancel_session(self, request: web.Request) -> web.StreamResponse:
        self._require_rest(request)
        session_id = request.match_info["session_id"]
        if not session_id.startswith("cksess"):
            raise ApiError(
                400,
                f"Invalid 'session_id': '{session_id}'. Expected an ID that begins with 'cksess'.",
                param="session_id",
                code="invalid_value",
            )
        session = self.sessions.get(session_id)
        if session is None:
            raise ApiError(404, f"Session with id '{session_id}' not found.")
        if session.cancelled_at is None:
            session.cancelled_at = self.now()
        payload = render_session(session, self.now())
        payload["client_secret"] = ""
        return web.json_response(payload)

    # -- REST threads and items

    async def list_threads(self, request: web.Request) -> web.StreamResponse:
        self._require_rest(request)
        user = request.query.get("user")
        threads = [t for t in self.threads.values() if user is None or t.user == user]
        page, has_more = paginate(threads, **page_params(request.query))
        return web.json_response(rest_list([rest_thread(t) for t in page], has_more))

    async def retrieve_thread(self, request: web.Request) -> web.StreamResponse:
        self._require_rest(request)
        return web.json_response(rest_thread(self._thread(request.match_info["thread_id"])))

    async def delete_thread(self, request: web.Request) -> web.StreamResponse:
        self._require_rest(request)
        thread = self._thread(request.match_info["thread_id"])
        del self.threads[thread.id]
        return web.json_response({"id": thread.id, "object": "chatkit.thread.deleted", "deleted": True})

    async def list_items(self, request: web.Request) -> web.StreamResponse:
        self._require_rest(request)
        thread = self._thread(request.match_info["thread_id"])
        page, has_more = paginate(thread.items, **page_params(request.query))
        return web.json_response(rest_list([rest_item(i) for i in page], has_more))

    def _thread(self, thread_id: str, user: str | None = None) -> Thread:
        thread = self.threads.get(thread_id)
        if thread is None or (user is not None and thread.user != user):
            raise ApiError(404, f"Thread with id '{thread_id}' not found.")
        return thread

    # -- the hosted ChatKit protocol

    async def conversation(self, request: web.Request) -> web.StreamResponse:
        self._require_beta(request, optional=True)
        session = self._session_for_secret(request)
        self._count_request(session)
        body = json_object(request[ENTRY].body)
        op, params = body.get("type"), body.get("params") or {}
        if not isinstance(params, dict):
            raise ApiError(400, "Invalid 'params': expected an object.", param="params", code="invalid_type")
        if op in STREAMING_OPS:
            return await self._stream_turn(request, session, op, params)
        json_op = JSON_OPS.get(op)
        if json_op is None:
            raise invalid("type", f"{op!r} is not a ChatKit request type.")
        return web.json_response(json_op(self, request, session, params))

    async def _stream_turn(
        self, request: web.Request, session: Session, op: str, params: dict[str, Any]
    ) -> web.StreamResponse:
        text = input_text(params) if op in ("threads.create", "threads.add_user_message") else None
        if op == "threads.create":
            thread = Thread(new_id("cthr"), session.user, self.now())
            self.threads[thread.id] = thread
        else:
            thread = self._thread(str(params.get("thread_id")), session.user)
        frames = self._turn_frames(session, thread, text, new_thread=op == "threads.create")
        return await self._write_stream(request, frames, self._pacing(text or ""))

    def _pacing(self, text: str) -> Pacing:
        if "!!slow" in text:
            return Pacing(delay=0.5)
        if "!!silent" in text:
            return Pacing(delay=self.frame_delay, silence_after_first=self.silent_seconds)
        if "!!disconnect" in text:
            return Pacing(delay=self.frame_delay, drop_after=2)
        return Pacing(delay=self.frame_delay)

    def _turn_frames(self, session: Session, thread: Thread, text: str | None, *, new_thread: bool) -> list[Frame]:
        """The events of one turn, in the order ChatKitServer emits them (protocol doc, §3)."""
        frames: list[Frame] = []
        if new_thread:
            frames.append(({"type": "thread.created", "thread": stream_thread(thread)}, None))
        if text is not None:
            user_item = Item(new_id("cthi"), thread.id, self.now(), "user", text)
            frames.append(({"type": "thread.item.done", "item": stream_item(user_item)}, store(thread, user_item)))
        frames.append(({"type": "stream_options", "stream_options": {"allow_cancel": True}}, None))
        if text is not None and "!!error" in text:
            frames.append(({"type": "error", "code": "stream.error", "allow_retry": True}, None))
            return frames
        frames += self._assistant_frames(thread, reply_deltas(text))
        titling = session.chatkit_configuration["automatic_thread_titling"].get("enabled", True)
        if text and thread.title is None and titling:
            frames.append(title_frame(thread, text[:60]))
        return frames

    def _assistant_frames(self, thread: Thread, deltas: list[str]) -> list[Frame]:
        item = Item(new_id("cthi"), thread.id, self.now(), "assistant", "".join(deltas))
        empty = {**stream_item(item), "content": []}
        part = {"annotations": [], "text": "", "type": "output_text"}
        added = {"type": "assistant_message.content_part.added", "content_index": 0, "content": part}
        frames: list[Frame] = [
            ({"type": "thread.item.added", "item": empty}, None),
            (item_update(item, added), None),
        ]
        for delta in deltas:
            update = {"type": "assistant_message.content_part.text_delta", "content_index": 0, "delta": delta}
            frames.append((item_update(item, update), None))
        done_part = {**part, "text": item.text}
        update = {"type": "assistant_message.content_part.done", "content_index": 0, "content": done_part}
        frames.append((item_update(item, update), None))
        frames.append(({"type": "thread.item.done", "item": stream_item(item)}, store(thread, item)))
        return frames

    async def _write_stream(self, request: web.Request, frames: list[Frame], pacing: Pacing) -> web.StreamResponse:
        entry = request[ENTRY]
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        try:
            for index, (event, on_sent) in enumerate(frames):
                if index == pacing.drop_after:
                    return self._drop(request)
                await pause(request, pacing.pause_before(index))
                await response.write(sse(event))
                entry.frames_sent += 1
                if on_sent is not None:
                    on_sent()
            await response.write_eof()
        except ConnectionResetError:
            entry.disconnected_at = loop.time()
            return response  # aiohttp finishes a response to a closed client quietly
        except asyncio.CancelledError:  # the client went away under handler_cancellation=True
            entry.disconnected_at = loop.time()
            raise
        entry.finished_at = loop.time()
        return response

    # Non-streaming protocol ops: (fake, request, session, params) -> JSON body.

    def _op_get_thread(self, request: web.Request, session: Session, params: dict[str, Any]) -> Any:
        thread = self._thread(str(params.get("thread_id")), session.user)
        page, has_more = paginate(thread.items, after=None, before=None, limit=20, order="asc")
        return stream_thread(thread, [stream_item(i) for i in page], has_more)

    def _op_list_threads(self, request: web.Request, session: Session, params: dict[str, Any]) -> Any:
        threads = [t for t in self.threads.values() if t.user == session.user]
        page, has_more = paginate(threads, **protocol_page_params(params))
        return protocol_page([stream_thread(t) for t in page], has_more)

    def _op_list_items(self, request: web.Request, session: Session, params: dict[str, Any]) -> Any:
        thread = self._thread(str(params.get("thread_id")), session.user)
        page, has_more = paginate(thread.items, **protocol_page_params(params))
        return protocol_page([stream_item(i) for i in page], has_more)

    def _op_update_thread(self, request: web.Request, session: Session, params: dict[str, Any]) -> Any:
        thread = self._thread(str(params.get("thread_id")), session.user)
        thread.title = params.get("title")
        return stream_thread(thread)

    def _op_delete_thread(self, request: web.Request, session: Session, params: dict[str, Any]) -> Any:
        thread = self._thread(str(params.get("thread_id")), session.user)
        del self.threads[thread.id]
        return {}

    def _op_create_attachment(self, request: web.Request, session: Session, params: dict[str, Any]) -> Any:
        mime_type = str(params.get("mime_type") or "application/octet-stream")
        upload_url = f"{request.url.origin()}/v1/chatkit/files"
        return attachment(new_id("cfile"), str(params.get("name") or "file"), mime_type, upload_url)

    def _op_empty(self, request: web.Request, session: Session, params: dict[str, Any]) -> Any:
        return {}

    def _op_transcribe(self, request: web.Request, session: Session, params: dict[str, Any]) -> Any:
        return {"text": "transcribed audio"}

    # -- uploads, models, realtime call control

    async def upload_file(self, request: web.Request) -> web.StreamResponse:
        self._require_api_key_or_secret(request)
        self._require_beta(request, optional=True)
        if not request.content_type.startswith("multipart/"):
            raise ApiError(400, f"Invalid Content-Type header ({request.content_type}), expected multipart/form-data.")
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if part.name != "file":
                await part.release()
                continue
            upload = await self._sink(part)
            entry = request[ENTRY]
            entry.upload_size, entry.upload_sha256 = upload["size"], upload["sha256"]
            await drain(reader)
            return web.json_response(attachment(upload["id"], upload["name"], upload["mime_type"], None))
        raise missing("file")

    async def _sink(self, part: Any) -> dict[str, Any]:
        """Hash a multipart part chunk by chunk; the bytes themselves are not kept."""
        digest, size = hashlib.sha256(), 0
        while chunk := await part.read_chunk(UPLOAD_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        mime_type = part.headers.get("Content-Type", "application/octet-stream")
        upload = {
            "id": new_id("cfile"),
            "name": part.filename or "file",
            "mime_type": mime_type,
            "size": size,
            "sha256": digest.hexdigest(),
        }
        self.uploads.append(upload)
        return upload

    def _require_api_key_or_secret(self, request: web.Request) -> None:
        if self._bearer(request) in self._secrets:
            self._session_for_secret(request)
        else:
            self._require_api_key(request)

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        self._require_api_key(request)
        data = [{"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "system"} for m in MODELS]
        return web.json_response({"object": "list", "data": data})

    async def call_action(self, request: web.Request) -> web.StreamResponse:
        self._require_api_key(request)
        raw = request[ENTRY].body
        body = json_object(raw) if raw else None
        action = request.match_info["action"]
        required = {"accept": "type", "refer": "target_uri"}.get(action)
        if required and required not in (body or {}):
            raise missing(required)
        if action == "accept" and self.fail_next_accepts > 0:
            self.fail_next_accepts -= 1
            raise ApiError(500, "The server had an error while processing your request.")
        self.calls.append(CallAction(request.match_info["call_id"], action, body))
        return web.Response(status=200)


STREAMING_OPS = {
    "threads.create",
    "threads.add_user_message",
    "threads.add_client_tool_output",
    "threads.add_structured_input",
    "threads.retry_after_item",
    "threads.custom_action",
}

JSON_OPS: dict[str, Callable[..., Any]] = {
    "threads.get_by_id": FakeOpenAI._op_get_thread,
    "threads.list": FakeOpenAI._op_list_threads,
    "items.list": FakeOpenAI._op_list_items,
    "threads.update": FakeOpenAI._op_update_thread,
    "threads.delete": FakeOpenAI._op_delete_thread,
    "items.feedback": FakeOpenAI._op_empty,
    "attachments.create": FakeOpenAI._op_create_attachment,
    "attachments.delete": FakeOpenAI._op_empty,
    "input.transcribe": FakeOpenAI._op_transcribe,
    "threads.sync_custom_action": FakeOpenAI._op_empty,
}


# ---------------------------------------------------------------- request parsing


def json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        raise ApiError(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(value, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return value


def missing(param: str) -> ApiError:
    return ApiError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def invalid(param: str, message: str) -> ApiError:
    return ApiError(400, f"Invalid '{param}': {message}", param=param, code="invalid_value")


def expires_after_seconds(value: Any) -> int:
    if value is None:
        return 600
    if not isinstance(value, dict):
        raise invalid("expires_after", "expected an object.")
    for key in ("anchor", "seconds"):
        if key not in value:
            raise missing(f"expires_after.{key}")
    seconds = value["seconds"]
    if not isinstance(seconds, int) or seconds <= 0:
        raise invalid("expires_after.seconds", "expected a positive integer.")
    return seconds


def requests_per_minute(value: Any) -> int:
    limit = (value or {}).get("max_requests_per_1_minute", 10)
    if not isinstance(limit, int) or limit <= 0:
        raise invalid("rate_limits.max_requests_per_1_minute", "expected a positive integer.")
    return limit


def workflow_with_defaults(workflow: dict[str, Any]) -> dict[str, Any]:
    state = workflow.get("state_variables")
    for key, value in (state or {}).items():
        if len(key) > 64 or not isinstance(value, str | int | float | bool):
            raise invalid("workflow.state_variables", f"bad state variable {key!r}.")
    return {
        "id": workflow["id"],
        "version": workflow.get("version"),
        "state_variables": state,
        "tracing": {"enabled": True, **(workflow.get("tracing") or {})},
    }


def configuration_with_defaults(value: Any) -> dict[str, Any]:
    given = value or {}
    return {name: {**default, **(given.get(name) or {})} for name, default in DEFAULT_CHATKIT_CONFIGURATION.items()}


def input_text(params: dict[str, Any]) -> str:
    content = (params.get("input") or {}).get("content") or []
    return " ".join(part.get("text", "") for part in content if isinstance(part, dict))


def page_params(query: Any) -> dict[str, Any]:
    """Cursor parameters of the REST list endpoints (default: 20, newest first)."""
    try:
        limit = int(query.get("limit", 20))
    except ValueError:
        raise invalid("limit", "expected an integer.") from None
    if not 1 <= limit <= 100:
        raise invalid("limit", "expected an integer between 1 and 100.")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid("order", "expected 'asc' or 'desc'.")
    return {"after": query.get("after"), "before": query.get("before"), "limit": limit, "order": order}


def protocol_page_params(params: dict[str, Any]) -> dict[str, Any]:
    return page_params({k: str(v) for k, v in params.items() if k in ("limit", "order", "after") and v is not None})


def paginate(
    items: list[Any], *, after: str | None, before: str | None, limit: int, order: str
) -> tuple[list[Any], bool]:
    """One page of `items` (oldest first) and whether more lie beyond it. Unknown cursors are ignored."""
    window = list(items) if order == "asc" else list(reversed(items))
    ids = [i.id for i in window]
    if after in ids:
        window = window[ids.index(after) + 1 :]
    ids = [i.id for i in window]
    if before in ids:
        window = window[: ids.index(before)]
        return window[-limit:], len(window) > limit
    return window[:limit], len(window) > limit


# ---------------------------------------------------------------- rendering


def render_session(session: Session, now: float) -> dict[str, Any]:
    return {
        "id": session.id,
        "object": "chatkit.session",
        "client_secret": session.client_secret,
        "expires_at": session.expires_at,
        "status": session.status(now),
        "user": session.user,
        "workflow": session.workflow,
        "rate_limits": {"max_requests_per_1_minute": session.max_requests_per_1_minute},
        "max_requests_per_1_minute": session.max_requests_per_1_minute,
        "chatkit_configuration": session.chatkit_configuration,
    }


def rest_list(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def rest_thread(thread: Thread) -> dict[str, Any]:
    return {
        "id": thread.id,
        "object": "chatkit.thread",
        "created_at": int(thread.created_at),
        "status": {"type": "active"},
        "title": thread.title,
        "user": thread.user,
    }


def rest_item(item: Item) -> dict[str, Any]:
    common = {
        "id": item.id,
        "object": "chatkit.thread_item",
        "created_at": int(item.created_at),
        "thread_id": item.thread_id,
    }
    if item.role == "user":
        content = [{"type": "input_text", "text": item.text}]
        return {
            **common, "type": "chatkit.user_message", "content": content, "attachments": [], "inference_options": None
        }
    content = [{"type": "output_text", "text": item.text, "annotations": []}]
    return {**common, "type": "chatkit.assistant_message", "content": content}


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def stream_thread(thread: Thread, items: list[dict[str, Any]] | None = None, has_more: bool = False) -> dict[str, Any]:
    rendered: dict[str, Any] = {
        "id": thread.id,
        "created_at": iso(thread.created_at),
        "status": {"type": "active"},
        "metadata": {},
        "items": {"data": items or [], "has_more": has_more},
    }
    if thread.title is not None:
        rendered["title"] = thread.title
    return rendered


def stream_item(item: Item) -> dict[str, Any]:
    common = {"id": item.id, "thread_id": item.thread_id, "created_at": iso(item.created_at)}
    if item.role == "user":
        content = [{"type": "input_text", "text": item.text}]
        return {**common, "type": "user_message", "content": content, "attachments": [], "inference_options": {}}
    content = [{"annotations": [], "text": item.text, "type": "output_text"}]
    return {**common, "type": "assistant_message", "content": content}


def protocol_page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"data": data, "has_more": has_more, "after": data[-1]["id"] if data else None}


def attachment(file_id: str, name: str, mime_type: str, upload_url: str | None) -> dict[str, Any]:
    rendered = {"id": file_id, "type": "file", "mime_type": mime_type, "name": name, "upload_url": upload_url}
    if mime_type.startswith("image/"):
        rendered.update(type="image", preview_url=f"https://files.invalid/{file_id}/preview")
    return rendered


def item_update(item: Item, update: dict[str, Any]) -> dict[str, Any]:
    return {"type": "thread.item.updated", "item_id": item.id, "update": update}


def title_frame(thread: Thread, title: str) -> Frame:
    event = {"type": "thread.updated", "thread": {**stream_thread(thread), "title": title}}
    return event, lambda: setattr(thread, "title", title)


def store(thread: Thread, item: Item) -> Callable[[], None]:
    return lambda: thread.items.append(item)


def reply_deltas(text: str | None) -> list[str]:
    """The echo reply, one delta per word; `!!big` asks for 4 KB deltas instead."""
    if text is None:
        return ["ok "]
    if "!!big" in text:
        return [f"{n % 10}" * BIG_DELTA for n in range(BIG_DELTA_COUNT)]
    return [word + " " for word in f"echo: {text}".split(" ")]


def html_page() -> web.Response:
    return web.Response(status=200, text="<html><body><h1>Bad gateway</h1></body></html>", content_type="text/html")


async def drain(reader: Any) -> None:
    while (part := await reader.next()) is not None:
        await part.release()


# ---------------------------------------------------------------- serving


async def start_fake(fake: FakeOpenAI, ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, str]:
    """Serve `fake` on 127.0.0.1 at a free port; returns the runner and the base URL (without /v1)."""
    # handler_cancellation=True: a client that goes away cancels the stream at once, so
    # `disconnected_at` is exact even while the fake is sleeping between frames.
    runner = web.AppRunner(fake.app(), handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    scheme = "https" if ssl_context is not None else "http"
    fake.base_url = f"{scheme}://127.0.0.1:{port}"
    return runner, fake.base_url
