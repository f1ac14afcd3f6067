"""A real openai-chatkit ChatKitServer, served by aiohttp in-process: the upstream of a `kind: server` slug.

It calls no model: `respond()` echoes the user's words as text deltas, one every `delay` seconds.
A message containing "hold" stops after its first delta until the test sets `release`. Every
request must carry identity headers signed with the shared secret (verified with gateway/identity.py,
as an integrator would); each user sees only their own threads.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from gateway.identity import Identity, InvalidIdentity, verify

with warnings.catch_warnings():  # chatkit's widget classes warn about themselves when imported
    warnings.simplefilter("ignore", DeprecationWarning)
    from chatkit.server import ChatKitServer, StreamingResult
    from chatkit.store import NotFoundError, Store
    from chatkit.types import (AssistantMessageContent, AssistantMessageContentPartTextDelta, AssistantMessageItem,
                               Attachment, Page, ProgressUpdateEvent, ThreadItem, ThreadItemAddedEvent,
                               ThreadItemDoneEvent, ThreadItemUpdatedEvent, ThreadMetadata)

Context = dict[str, Any]  # {"user": the gw_… id the gateway signed}


def page(records: list[Any], after: str | None, limit: int, order: str) -> Page[Any]:
    ordered = records[::-1] if order == "desc" else records
    ids = [r.id for r in ordered]
    start = ids.index(after) + 1 if after in ids else 0
    chosen = ordered[start:start + limit]
    has_more = start + limit < len(ordered)
    return Page(data=chosen, has_more=has_more, after=chosen[-1].id if has_more and chosen else None)


class MemoryStore(Store[Context]):
    """Threads and items in dicts; a thread belongs to the user who created it."""

    def __init__(self) -> None:
        self.threads: dict[str, tuple[str, ThreadMetadata]] = {}
        self.items: dict[str, list[ThreadItem]] = {}
        self.attachments: dict[str, Attachment] = {}

    async def load_thread(self, thread_id: str, context: Context) -> ThreadMetadata:
        owner, thread = self.threads.get(thread_id, (None, None))
        if thread is None or owner != context["user"]:
            raise NotFoundError(f"thread {thread_id} not found")
        return thread

    async def save_thread(self, thread: ThreadMetadata, context: Context) -> None:
        self.threads[thread.id] = (context["user"], ThreadMetadata.model_validate(thread.model_dump(exclude={"items"})))
        self.items.setdefault(thread.id, [])

    async def load_thread_items(self, thread_id: str, after: str | None, limit: int, order: str,
                                context: Context) -> Page[ThreadItem]:
        await self.load_thread(thread_id, context)
        return page(self.items[thread_id], after, limit, order)

    async def save_attachment(self, attachment: Attachment, context: Context) -> None:
        self.attachments[attachment.id] = attachment

    async def load_attachment(self, attachment_id: str, context: Context) -> Attachment:
        if attachment_id not in self.attachments:
            raise NotFoundError(f"attachment {attachment_id} not found")
        return self.attachments[attachment_id]

    async def delete_attachment(self, attachment_id: str, context: Context) -> None:
        self.attachments.pop(attachment_id, None)

    async def load_threads(self, limit: int, after: str | None, order: str, context: Context) -> Page[ThreadMetadata]:
        mine = [thread for owner, thread in self.threads.values() if owner == context["user"]]
        return page(sorted(mine, key=lambda t: t.created_at), after, limit, order)

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: Context) -> None:
        await self.load_thread(thread_id, context)
        self.items[thread_id].append(item)

    async def save_item(self, thread_id: str, item: ThreadItem, context: Context) -> None:
        await self.load_thread(thread_id, context)
        items = self.items[thread_id]
        for i, existing in enumerate(items):
            if existing.id == item.id:
                items[i] = item
                return
        items.append(item)

    async def load_item(self, thread_id: str, item_id: str, context: Context) -> ThreadItem:
        await self.load_thread(thread_id, context)
        for item in self.items[thread_id]:
            if item.id == item_id:
                return item
        raise NotFoundError(f"item {item_id} not found")

    async def delete_thread(self, thread_id: str, context: Context) -> None:
        await self.load_thread(thread_id, context)
        del self.threads[thread_id], self.items[thread_id]

    async def delete_thread_item(self, thread_id: str, item_id: str, context: Context) -> None:
        await self.load_thread(thread_id, context)
        self.items[thread_id] = [i for i in self.items[thread_id] if i.id != item_id]


class EchoServer(ChatKitServer[Context]):
    """Echoes the user's words back, one text delta every `delay` seconds."""

    def __init__(self, delay: float = 0.15) -> None:
        super().__init__(MemoryStore())
        self.delay = delay
        self.held = asyncio.Event()  # set when a "hold" message has sent its first delta
        self.release = asyncio.Event()

    async def respond(self, thread: ThreadMetadata, input_user_message: Any, context: Context) -> AsyncIterator[Any]:
        words = [part.text for part in input_user_message.content if getattr(part, "text", None)] \
            if input_user_message else []
        text = " ".join(words)
        yield ProgressUpdateEvent(text="echoing")
        item = AssistantMessageItem(id=self.store.generate_item_id("message", thread, context), thread_id=thread.id,
                                    created_at=datetime.now(), content=[])
        yield ThreadItemAddedEvent(item=item)
        for i, word in enumerate(text.split()[:20]):
            if i:
                await asyncio.sleep(self.delay)
            yield ThreadItemUpdatedEvent(item_id=item.id, update=AssistantMessageContentPartTextDelta(
                content_index=0, delta=word + " "))
            if i == 0 and "hold" in text:
                self.held.set()
                await self.release.wait()
        yield ThreadItemDoneEvent(item=item.model_copy(update={"content": [AssistantMessageContent(text=text)]}))


class ServedChatKit:
    """The server, its aiohttp app, and what it saw: the identity and headers of each accepted request."""

    def __init__(self, secret: str, delay: float = 0.15) -> None:
        self.secret = secret
        self.server = EchoServer(delay)
        self.identities: list[Identity] = []
        self.headers: list[CIMultiDict[str]] = []
        self.refused: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def endpoint(self, request: web.Request) -> web.StreamResponse:
        try:
            identity = verify(request.headers, self.secret)
        except InvalidIdentity as exc:
            self.refused.append(str(exc))
            return web.json_response({"error": {"message": f"identity refused: {exc}"}}, status=401)
        self.identities.append(identity)
        self.headers.append(CIMultiDict(request.headers))
        try:
            result = await self.server.process(await request.read(), {"user": identity.user})
        except ValueError:  # an unknown type or a body that is not JSON: ChatKitServer raises, we answer 500
            return web.Response(status=500, text="Internal Server Error")
        if not isinstance(result, StreamingResult):
            return web.Response(body=result.json, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        async for chunk in result:
            await response.write(chunk)
        await response.write_eof()
        return response

    async def start(self) -> ServedChatKit:
        app = web.Application()
        app.router.add_post("/chatkit", self.endpoint)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/chatkit"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
