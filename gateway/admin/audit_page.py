"""The Audit page: who changed what, newest first, filtered by actor and object."""

from __future__ import annotations

from aiohttp import web

from .. import keys
from .render import page


async def show(request: web.Request) -> web.Response:
    store = request.config_dict[keys.store]
    actor = request.query.get("actor", "").strip()
    obj = request.query.get("object", "").strip()
    rows = await store.list_audit(actor=actor or None, obj=obj or None)
    recent = rows if not (actor or obj) else await store.list_audit()
    return page(request, "audit.html", section="audit", rows=rows, actor=actor, object=obj,
                actors=sorted({r.actor for r in recent}), objects=sorted({r.object for r in recent}))
