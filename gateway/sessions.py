"""ChatKit sessions: minted upstream for a registry entry, and remembered so the relay knows its own secrets.

`POST /api/chatkit/session` mints one for the caller, with an upstream `user` derived from the
principal (a `user` in the request is ignored); `POST /api/chatkit/session/{id}/cancel` cancels
one. Issued sessions live in memory by secret hash; the store is written behind, in batches of one
transaction each, and a worker that does not know a secret looks for it in the store for a moment
before refusing it (another worker's record may still be on its way).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
from aiohttp import web

from . import errors, keys
from .bodies import json_object
from .principal import require_principal
from .registry import UPSTREAM_SESSION_DEFAULTS, UPSTREAM_TTL_SECONDS, SessionOptions, WorkflowEntry, layered, pruned
from .schema import dump
from .storage import SessionRecord, Store, Write, audit_entry, session_insert, session_status, sessions_purge
from .upstream import CHATKIT_BETA, Reply, Upstream

if TYPE_CHECKING:
    from .settings import SessionsSettings

log = logging.getLogger("chatkit_gateway.sessions")

USER_KEY = "user_hash_secret"  # the kv row holding the generated key of upstream user ids
SLUG_FIELD = "hosted_workflow_slug"
FLUSH_SECONDS = 5.0  # how long shutdown waits for session records still to be written
MAX_BATCH = 500  # writes in one transaction: a backlog is written in a few, none holding the write lock long
# How long the writer lets writes gather after the first: no client waits for it, and one thread hop per
# few ms instead of one per request spares ~0.1 ms of each minting request at low load. Not longer: a
# request that shares its CPU with the commit waits behind it (c=1 on one CPU, added p99: 0.46-0.48 ms
# with 10 ms, 0.38-0.41 with 6; 2 ms costs 8% of the c=1 throughput and 3% at 64 connections).
GATHER_SECONDS = 0.006
# Pauses between looks in the store for a secret this worker does not know (~0.4 s in all): the worker
# that issued it writes its record behind its answer, a few ms later (more under load).
LOOKUP_PAUSES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
SERVER_API_URL = "/api/chatkit/w/{slug}"  # where the ChatKit web component talks to a server entry


def secret_hash(client_secret: str) -> str:
    return hashlib.sha256(client_secret.encode()).hexdigest()


class SessionBook:
    """The sessions this gateway issued, by secret hash, in memory. Every write to the store (a new
    session, a cancel, an audit entry, a purge) joins one queue, in order; a background task writes all
    that has gathered in one transaction, then the next lot (group commit). Nothing
    waits for the store on the way to a client: a commit per minted session was the whole tail of a
    minting request's latency (p99 3.2 ms against 0.26 ms without it, BENCHMARKS.md)."""

    def __init__(self, store: Store, settings: SessionsSettings) -> None:
        self.store = store
        self.settings = settings
        self._by_hash: dict[str, SessionRecord] = {}
        self._hash_of: dict[str, str] = {}  # session id -> secret hash
        self._writes: asyncio.Queue[Write] = asyncio.Queue()
        self._user_key: bytes | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        configured = self.settings.user_hash_secret
        key = configured.reveal() if configured else await self.store.setdefault_value(USER_KEY, secrets.token_hex(32))
        self._user_key = key.encode()
        for record in await self.store.live_sessions(time.time()):
            self._keep(record)
        self._tasks = [asyncio.create_task(self._write_behind()), asyncio.create_task(self._purge_regularly())]

    async def close(self) -> None:
        _, purger = self._tasks
        purger.cancel()
        try:
            await asyncio.wait_for(self.flush(), FLUSH_SECONDS)
        except asyncio.TimeoutError:
            log.error("shutdown: %d session writes were dropped", self._writes.qsize())
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def user_of(self, principal_id: str) -> str:
        """The upstream `user` for a principal: stable, opaque, the same on every worker; never an e-mail."""
        assert self._user_key is not None, "SessionBook used before open()"
        digest = hmac.new(self._user_key, principal_id.encode(), hashlib.sha256).hexdigest()
        return "gw_" + digest[:32]  # 128 bits, short enough for any upstream limit on `user`

    def active(self, client_secret: str) -> SessionRecord | None:
        """The record of a secret this gateway issued, unless it has expired or been cancelled."""
        return self._active(self._by_hash.get(secret_hash(client_secret)))

    async def check(self, client_secret: str) -> SessionRecord | None:
        """`active`, also knowing secrets that another worker issued (read from the store on a miss)."""
        digest = secret_hash(client_secret)
        record = self._by_hash.get(digest)
        if record is None:
            record = await self._look_up(digest)
        return self._active(record)

    async def _look_up(self, digest: str) -> SessionRecord | None:
        """A record from the store, looked for a few times: the worker that issued it writes it behind."""
        for pause in LOOKUP_PAUSES:
            if pause:
                await asyncio.sleep(pause)
            record = await self.store.session_by_hash(digest)
            if record is not None:
                self._keep(record)
                return record
        return None

    async def follow_cancellations(self) -> None:
        """Learn the sessions another worker cancelled (a StoreChanges follower)."""
        for record in await self.store.cancelled_sessions(time.time()):
            if record.secret_hash in self._by_hash:
                self._keep(record)

    @staticmethod
    def _active(record: SessionRecord | None) -> SessionRecord | None:
        if record is None or record.status != "active" or record.expires_at <= time.time():
            return None
        return record

    def find(self, session_id: str) -> SessionRecord | None:
        secret = self._hash_of.get(session_id)
        return None if secret is None else self._by_hash.get(secret)

    def issue(self, record: SessionRecord) -> None:
        """Keep the record; the store gets it shortly after, for the other workers and the next start."""
        self._keep(record)
        self._later(session_insert(record))

    def cancel(self, session_id: str) -> SessionRecord | None:
        """Refuse the session's secret from now on; the store learns it shortly after."""
        record = self.find(session_id)
        if record is None or record.status == "cancelled":
            return record
        cancelled = dataclasses.replace(record, status="cancelled")
        self._keep(cancelled)
        self._later(session_status(record.secret_hash, "cancelled"))
        return cancelled

    def audit(self, actor: str, action: str, obj: str, before: Any, after: Any) -> None:
        self._later(audit_entry(actor, action, obj, before, after))

    def purge(self, now: float) -> int:
        """Forget expired sessions, here at once and in the store behind."""
        expired = [record for record in self._by_hash.values() if record.expires_at <= now]
        for record in expired:
            del self._by_hash[record.secret_hash]
            self._hash_of.pop(record.id, None)
        self._later(sessions_purge(now))
        return len(expired)

    async def flush(self) -> None:
        """Wait until every write issued so far has reached the store."""
        await self._writes.join()

    def _keep(self, record: SessionRecord) -> None:
        self._by_hash[record.secret_hash] = record
        self._hash_of[record.id] = record.secret_hash

    def _later(self, write: Write) -> None:
        self._writes.put_nowait(write)

    async def _write_behind(self) -> None:
        while True:
            batch = [await self._writes.get()]
            await asyncio.sleep(GATHER_SECONDS)
            while len(batch) < MAX_BATCH and not self._writes.empty():
                batch.append(self._writes.get_nowait())
            try:
                await self._write_batch(batch)
            finally:
                for _ in batch:
                    self._writes.task_done()

    async def _write_batch(self, batch: list[Write]) -> None:
        """One transaction; every failure is logged (the records stay valid in this worker's memory)."""
        try:
            outcomes = await self.store.write_batch(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("%d session writes failed together; their records stay valid in memory", len(batch),
                      exc_info=exc)
            return
        for write, outcome in zip(batch, outcomes):
            if outcome is not None:  # the statement has placeholders only: no hash, no value in the log
                log.error("a session write failed (%s): %s; its record stays valid in memory", write.sql, outcome)

    async def _purge_regularly(self) -> None:
        while True:
            await asyncio.sleep(self.settings.purge_seconds)
            self.purge(time.time())


async def sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    book = app[keys.sessions]
    await book.open()
    app[keys.store_changes].follow("issued sessions", book.follow_cancellations)
    yield
    await book.close()


# What goes upstream and what comes back ----------------------------------------------------------

def session_options(defaults: SessionOptions, entry: WorkflowEntry) -> SessionOptions:
    """The entry's own settings over `sessions:` in config.yaml, over the upstream's defaults."""
    return layered(layered(UPSTREAM_SESSION_DEFAULTS, defaults), entry.session)


def session_body(entry: WorkflowEntry, user: str, options: SessionOptions) -> dict[str, Any]:
    """The body of POST /v1/chatkit/sessions, keys in the order the official SDK sends them."""
    workflow: dict[str, Any] = {"id": entry.workflow_id}
    if entry.version is not None:
        workflow["version"] = entry.version
    if entry.state_variables:
        workflow["state_variables"] = dict(entry.state_variables)
    body: dict[str, Any] = {"user": user, "workflow": workflow}
    configuration = pruned(dump(options.chatkit_configuration))
    if configuration:
        body["chatkit_configuration"] = configuration
    body["expires_after"] = {"anchor": "created_at", "seconds": options.expires_after}
    body["rate_limits"] = pruned(dump(options.rate_limits))
    return body


@dataclass(frozen=True)
class Minted:
    id: str
    client_secret: str
    expires_at: int  # unix seconds


def minted(data: Any, ttl: int, now: float) -> Minted:
    """The session in an upstream answer; ValueError says what is missing."""
    if not isinstance(data, dict):
        raise ValueError("the answer is not a JSON object")
    client_secret, session_id, expires_at = data.get("client_secret"), data.get("id"), data.get("expires_at")
    if not isinstance(client_secret, str) or not client_secret:
        raise ValueError("the answer has no client_secret")
    if not isinstance(session_id, str) or not session_id:
        raise ValueError("the answer has no session id")
    if not isinstance(expires_at, (int, float)) or isinstance(expires_at, bool):
        expires_at = now + ttl  # the TTL we asked for, never a guess of our own
    return Minted(session_id, client_secret, int(expires_at))


def upstream_failure(reply: Reply, *, on_404: type[errors.GatewayError]) -> errors.GatewayError:
    """Our error for an upstream error: never its status passed through as our own."""
    context = {"upstream_status": reply.status, "upstream_message": reply.error_message()}
    if reply.status in (401, 403):
        return errors.UpstreamAuthFailed(**context)
    if reply.status == 404:
        return on_404(**context)
    if reply.status == 429:
        retry_after = reply.headers.get("Retry-After", "")
        return errors.UpstreamRateLimited(headers={"Retry-After": retry_after if retry_after.isdigit() else "1"},
                                          **context)
    return errors.UpstreamError(**context)


def creation_failed(entry: WorkflowEntry, status: int | None, message: str) -> None:
    log.error("ChatKit session creation failed for workflow %s: upstream status %s: %s", entry.slug,
              status if status is not None else "none", message,
              extra={"slug": entry.slug, "workflow": entry.slug, "upstream_status": status})


async def call_upstream(request: web.Request, path: str, body: dict[str, Any] | None) -> Reply:
    """One non-streaming ChatKit REST call with the server key, timed into the request's exchange."""
    upstream: Upstream = request.config_dict[keys.upstream]
    exchange = request[keys.exchange]
    exchange.upstream = upstream.name
    started = time.perf_counter()
    try:
        reply = await upstream.post_json(path, body, headers={"OpenAI-Beta": CHATKIT_BETA,
                                                              "X-Request-ID": request[keys.request_id]})
    finally:
        exchange.upstream_wait += time.perf_counter() - started
    exchange.upstream_status = reply.status
    return reply


# Handlers --------------------------------------------------------------------------------------

async def create_session(request: web.Request) -> web.Response:
    principal = require_principal(request)
    requested = (await json_object(request, required=False)).get(SLUG_FIELD)
    app = request.config_dict  # the chat page's sub-app mints through here too
    registry, book = app[keys.registry], app[keys.sessions]
    if requested is not None or keys.workflow not in request:
        request[keys.workflow] = registry.resolve(requested)
    entry = request[keys.workflow]
    if entry.kind == "server":
        return server_session(entry)
    options = session_options(app[keys.settings].sessions.options, entry)
    assert options.expires_after is not None
    try:
        reply = await call_upstream(request, "/v1/chatkit/sessions",
                                    session_body(entry, book.user_of(principal.id), options))
    except errors.GatewayError as error:  # timeout, unreachable, proxy, no key
        creation_failed(entry, None, f"{error.code}: {error.text}")
        raise
    if not reply.ok:
        error = upstream_failure(reply, on_404=errors.UpstreamWorkflowNotFound)
        creation_failed(entry, reply.status, error.context["upstream_message"])
        registry.note_session_outcome(entry.slug, error.code)
        raise error
    now = time.time()
    try:
        session = minted(reply.json(), options.expires_after, now)
    except ValueError as exc:
        creation_failed(entry, reply.status, str(exc))
        raise errors.UpstreamError(f"The upstream answered without a usable session: {exc}.",
                                   upstream_status=reply.status) from None
    registry.note_session_outcome(entry.slug, None)
    book.issue(SessionRecord(session.id, principal.id, entry.slug, secret_hash(session.client_secret), now,
                             session.expires_at))
    response = web.Response(body=orjson.dumps({"client_secret": session.client_secret, "expires_at": session.expires_at,
                                               "session_id": session.id,
                                               "workflow": {"slug": entry.slug, "label": entry.label}}),
                            content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def server_session(entry: WorkflowEntry) -> web.Response:
    """A server entry needs no secret: the front end mounts ChatKit with `api.url` pointing at the gateway."""
    response = web.json_response({"kind": "server", "api_url": SERVER_API_URL.format(slug=entry.slug),
                                  "workflow": {"slug": entry.slug, "label": entry.label}})
    response.headers["Cache-Control"] = "no-store"
    return response


async def cancel_session(request: web.Request) -> web.Response:
    principal = require_principal(request)
    book = request.config_dict[keys.sessions]  # config_dict: the admin pages' sub-app cancels through here too
    session_id = request.match_info["session_id"]
    record = book.find(session_id)
    if record is None or (record.principal != principal.id and not principal.is_admin):
        raise errors.SessionNotFound(session_id=session_id)  # someone else's session does not exist for you
    entry = request.config_dict[keys.registry].find(record.slug)
    if entry is not None:
        request[keys.workflow] = entry
    if record.status != "cancelled":
        book.cancel(record.id)  # refused by the relay from now on, whatever the upstream says
        if record.principal != principal.id:
            book.audit(principal.id, "session.cancel", f"session:{record.id}",
                       {"principal": record.principal, "status": record.status}, {"status": "cancelled"})
        reply = await call_upstream(request, f"/v1/chatkit/sessions/{quote(record.id, safe='')}/cancel", None)
        if not reply.ok:
            error = upstream_failure(reply, on_404=errors.UpstreamError)
            log.error("ChatKit session cancel failed: upstream status %s: %s", reply.status,
                      error.context["upstream_message"], extra={"upstream_status": reply.status, "slug": record.slug})
            raise error
    return web.json_response({"session_id": record.id, "status": "cancelled"})


async def session_behind(request: web.Request, client_secret: str) -> SessionRecord | None:
    """The active session behind `client_secret`, checked once per request: the workflow plugin and the
    relay both ask, and a secret nobody here knows waits ~0.4 s on the store before it is refused."""
    checked = request.get(keys.checked_session)
    if checked is None or checked[0] != client_secret:
        checked = request[keys.checked_session] = (client_secret, await request.app[keys.sessions].check(client_secret))
    return checked[1]


def remember_relayed(request: web.Request, raw: bytes) -> None:
    """Record a session minted through the relay (the SDK's sessions.create), so its secret is honoured."""
    try:
        data = orjson.loads(raw)
        session = minted(data, UPSTREAM_TTL_SECONDS, time.time())
    except ValueError as exc:
        log.warning("a session minted through the relay could not be recorded: %s", exc)
        return
    workflow = data.get("workflow")
    workflow_id = workflow.get("id") if isinstance(workflow, dict) else None
    entry = request.get(keys.workflow) or request.app[keys.registry].catalog.find_by_workflow_id(workflow_id)
    principal = request.get(keys.principal)
    request.app[keys.sessions].issue(SessionRecord(
        session.id, principal.id if principal else "anonymous", entry.slug if entry else None,
        secret_hash(session.client_secret), time.time(), session.expires_at))
