"""Standard Webhooks, as OpenAI signs them: who sent a delivery, and whether it was already acted on.

`verify` is the whole signature check, a pure function: HMAC-SHA256 over ``id.timestamp.body``,
a timestamp within `tolerance` seconds either way, any of the space-separated ``v1,<base64>``
signatures. Its verdict is the official SDK's (`openai.webhooks.unwrap`), which the tests check.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from . import errors
from .storage import Store

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300  # seconds, the SDK's and Standard Webhooks' default
REPLAY_SECONDS = 24 * 3600  # how long an acted-on webhook id is remembered; the sender retries for hours
MAX_REMEMBERED = 100_000  # webhook ids held in memory at once; older ones are still in the store
CLAIM_SECONDS = 300  # a claim older than this is a dead worker's: another may act (call control takes ≤ 60 s)

T = TypeVar("T")


class SignatureRejected(Exception):
    """The delivery is not authentic (or not fresh); `reason` is a short, loggable label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def signing_key(secret: str) -> bytes:
    """The HMAC key: a ``whsec_`` secret is base64 after its prefix, any other secret is its UTF-8 bytes."""
    if secret.startswith(SECRET_PREFIX):
        try:
            key = base64.b64decode(secret[len(SECRET_PREFIX):])
        except binascii.Error:
            raise ValueError("a whsec_ secret must be base64 after its prefix") from None
    else:
        key = secret.encode()
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def verify(key: bytes, headers: Mapping[str, str], body: bytes, *, now: float,
           tolerance: float = DEFAULT_TOLERANCE) -> str:
    """The delivery's webhook id when `body` and `headers` were signed with `key` within `tolerance`; else raises."""
    webhook_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (webhook_id and timestamp and signatures):
        raise SignatureRejected("missing_headers")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise SignatureRejected("bad_timestamp") from None
    if int(now) - sent_at > tolerance:
        raise SignatureRejected("stale_timestamp")
    if sent_at > int(now) + tolerance:
        raise SignatureRejected("future_timestamp")
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [part.removeprefix("v1,") for part in signatures.split()]
    if not any(hmac.compare_digest(expected, signature) for signature in offered):
        raise SignatureRejected("bad_signature")
    return webhook_id


class Deliveries:
    """Webhook ids already acted on: in memory for this process, in SQLite across restarts and workers.

    `once(id, act)` runs `act` unless `id` was already acted on, and records `id` only once `act`
    succeeded, so a sender's retry after a failure acts, and a replay does not. Copies of one id
    that arrive together take turns. The action is shielded: a sender that hangs up does not
    cancel it half done (its retry would then repeat it); it finishes and is recorded.
    """

    def __init__(self, store: Store, *, keep_seconds: float = REPLAY_SECONDS,
                 max_remembered: int = MAX_REMEMBERED, claim_seconds: float = CLAIM_SECONDS) -> None:
        self.store = store
        self.keep_seconds = keep_seconds
        self.claim_seconds = claim_seconds
        self.max_remembered = max_remembered
        self._seen: dict[str, float] = {}  # webhook id -> when recorded, oldest first
        self._turns: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # webhook id -> (lock, [holders and waiters])
        self._running: set[asyncio.Task[Any]] = set()  # strong references to shielded actions

    async def once(self, webhook_id: str, act: Callable[[], Awaitable[T]]) -> T | None:
        """`act`'s result, or None when `webhook_id` was already acted on."""
        task = asyncio.ensure_future(self._once(webhook_id, act))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return await asyncio.shield(task)

    async def settle(self) -> None:
        """Let the actions under way finish (at shutdown, before the upstream closes)."""
        await asyncio.gather(*self._running, return_exceptions=True)

    async def _once(self, webhook_id: str, act: Callable[[], Awaitable[T]]) -> T | None:
        async with self._turn(webhook_id):
            if webhook_id in self._seen:
                return None
            now = time.time()
            claim = await self.store.claim_delivery(webhook_id, now, since=now - self.keep_seconds,
                                                    stale_before=now - self.claim_seconds)
            if claim == "done":
                return None
            if claim == "busy":  # another worker is acting on this very delivery right now
                raise errors.WebhookInProgress()
            try:
                result = await act()
            except BaseException:
                await self.store.release_delivery(webhook_id)
                raise
            await self.record(webhook_id)
            return result

    @asynccontextmanager
    async def _turn(self, webhook_id: str) -> AsyncIterator[None]:
        lock, users = self._turns.setdefault(webhook_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._turns[webhook_id]

    async def record(self, webhook_id: str) -> None:
        now = time.time()
        self._seen[webhook_id] = now
        self._forget_before(now - self.keep_seconds)
        await self.store.record_delivery(webhook_id, now)

    async def purge(self) -> None:
        """Forget ids older than the replay window, here and in the store."""
        cutoff = time.time() - self.keep_seconds
        self._forget_before(cutoff)
        await self.store.purge_deliveries(cutoff)

    def _forget_before(self, cutoff: float) -> None:
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if at >= cutoff and len(self._seen) <= self.max_remembered:
                return
            del self._seen[oldest]
