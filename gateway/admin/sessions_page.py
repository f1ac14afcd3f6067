"""The Sessions page: the ChatKit sessions this gateway issued that have not expired, with cancel."""

from __future__ import annotations

import time

from aiohttp import web

from .. import keys, sessions
from ..storage import SessionRecord
from .render import page, redirect

LIMIT = 200


def status(record: SessionRecord, now: float) -> str:
    if record.status == "cancelled":
        return "cancelled"
    return "expired" if record.expires_at <= now else "active"


async def show(request: web.Request) -> web.Response:
    config = request.config_dict
    book = config[keys.sessions]
    await book.flush()  # records are written behind the responses that issued them
    now = time.time()
    records = await config[keys.store].live_sessions(now)
    newest = sorted((book.find(r.id) or r for r in records), key=lambda r: r.created_at, reverse=True)[:LIMIT]
    rows = [{"id": r.id, "slug": r.slug, "principal": r.principal, "created_at": r.created_at,
             "expires_at": r.expires_at, "status": status(r, now)} for r in newest]
    return page(request, "sessions.html", section="sessions", rows=rows)


async def cancel(request: web.Request) -> web.Response:
    """Cancel through the API's own handler: the secret is refused at once, the upstream is told, it is audited."""
    request[keys.principal] = request[keys.page_user]
    await sessions.cancel_session(request)
    return redirect("/admin/sessions", done="session_cancelled", id=request.match_info["session_id"])
