"""What a caller who is not an admin may do with the server key through the relay.

ChatKit scopes threads to the session's `user`, and the server key can name any user. So for a
non-admin principal the relay keeps to that principal's own user (the derived `gw_…` id):
- `POST /sessions`: the body's `user` is replaced by the caller's own;
- `GET /threads`: the `user` filter is set to the caller's own;
- `POST /sessions/{id}/cancel`: only sessions the caller was issued (else 404);
- anything else (one thread, its items, deleting it, uploads): 403. A user reaches a thread with the
  client secret of a session, which the upstream itself scopes to that user.
Admins, and gateways without an auth plugin, relay as is.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from aiohttp import web

from . import errors, keys

SESSIONS = "/api/chatkit/sessions"
SESSION_CANCEL = "/api/chatkit/sessions/{id}/cancel"
THREADS = "/api/chatkit/threads"


def needs_scoping(request: web.Request) -> bool:
    principal = request.get(keys.principal)
    return principal is not None and not principal.is_admin


def own_user(request: web.Request) -> str:
    return request.app[keys.sessions].user_of(request[keys.principal].id)


async def own_session_body(request: web.Request) -> bytes:
    """The session-create body with `user` set to the caller's own."""
    try:
        body = json.loads(await request.read())
    except ValueError:
        raise errors.InvalidJSON() from None
    if not isinstance(body, dict):
        raise errors.InvalidJSON()
    body["user"] = own_user(request)
    return json.dumps(body).encode()


def own_threads_query(request: web.Request, raw_query: str) -> str:
    """The thread-list query with its `user` filter set to the caller's own."""
    kept = [part for part in raw_query.split("&") if part and not part.startswith("user=")]
    return "&".join([*kept, "user=" + quote(own_user(request), safe="")])


def check_cancel(request: web.Request, session_id: str) -> None:
    record = request.app[keys.sessions].find(session_id)
    if record is None or record.principal != request[keys.principal].id:
        raise errors.NotFound("No such session.", session_id=session_id)


async def restrict(request: web.Request, tail: str, query: str) -> tuple[bytes | None, str]:
    """For a non-admin caller: the body to send instead of the client's (or None), and the query."""
    route, method = request[keys.route], request.method
    if method == "POST" and route == SESSIONS:
        return await own_session_body(request), query
    if method == "GET" and route == THREADS:
        return None, own_threads_query(request, query)
    if method == "POST" and route == SESSION_CANCEL:
        check_cancel(request, tail.split("/")[1])
        return None, query
    raise errors.Forbidden(f"Only an admin may call {method} {route} with the gateway's key; "
                           "use the client secret of your ChatKit session.")
