"""Workflow: names the workflow of each gateway request, wherever it is known without reading the body."""

from __future__ import annotations

from typing import ClassVar

from aiohttp import web

from gateway import keys
from gateway.chain import Handler
from gateway.registry import WorkflowEntry
from gateway.relay import client_secret_of
from gateway.sessions import session_behind

HEADER = "X-ChatKit-Workflow"
QUERY = "workflow"


class Workflow:
    """Reads: the route's {slug}, the X-ChatKit-Workflow header, the `workflow` query parameter, else
    the session behind the caller's client secret. Writes: request[keys.workflow] (a WorkflowEntry).
    Answers locally: 404 hosted_workflow_not_found (400 invalid_slug) for a slug it cannot resolve."""

    name: ClassVar[str] = "workflow"
    after: ClassVar[tuple[str, ...]] = ()  # it reads no principal, so it may sit anywhere in the chain

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        named = request.match_info.get("slug") or request.headers.get(HEADER) or request.query.get(QUERY)
        if named:
            request[keys.workflow] = request.app[keys.registry].resolve(named)
        else:
            client_secret = client_secret_of(request)
            if client_secret is not None:  # the one case that may wait (on the store), so the others make no coroutine
                entry = await session_workflow(request, client_secret)
                if entry is not None:
                    request[keys.workflow] = entry
        return await handler(request)


async def session_workflow(request: web.Request, client_secret: str) -> WorkflowEntry | None:
    """The workflow of the session behind `client_secret`, if it is one this gateway issued."""
    record = await session_behind(request, client_secret)
    if record is not None and record.slug is not None:
        return request.app[keys.registry].find(record.slug)
    return None
