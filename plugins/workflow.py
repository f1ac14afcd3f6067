"""Workflow: names the workflow of each gateway request, wherever it is known without reading the body."""

from __future__ import annotations

from typing import ClassVar

from aiohttp import web

from gateway import keys
from gateway.chain import Handler
from gateway.registry import WorkflowEntry
from gateway.relay import client_secret_of

HEADER = "X-ChatKit-Workflow"
QUERY = "workflow"


class Workflow:
    """Reads: the route's {slug}, the X-ChatKit-Workflow header, the `workflow` query parameter, else
    the session behind the caller's client secret. Writes: request[keys.workflow] (a WorkflowEntry).
    Answers locally: 404 hosted_workflow_not_found (400 invalid_slug) for a slug it cannot resolve."""

    name: ClassVar[str] = "workflow"
    after: ClassVar[tuple[str, ...]] = ()  # it reads no principal, so it may sit anywhere in the chain

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        entry = await resolve(request)
        if entry is not None:
            request[keys.workflow] = entry
        return await handler(request)


async def resolve(request: web.Request) -> WorkflowEntry | None:
    registry = request.app[keys.registry]
    named = request.match_info.get("slug") or request.headers.get(HEADER) or request.query.get(QUERY)
    if named:
        return registry.resolve(named)
    client_secret = client_secret_of(request)
    if client_secret is not None:
        record = await request.app[keys.sessions].check(client_secret)
        if record is not None and record.slug is not None:
            return registry.find(record.slug)
    return None
