"""The admin pages (/admin) and the chat page (/chat): server-rendered, outside the plugin chain.

`install(app)` mounts both as sub-apps of the root app, each behind a PageGuard (its own login,
CSRF, security headers), with one Jinja environment on the root app that both find through
request.config_dict, and serves their CSS and JS, and the public chatkit-gateway.js, at /static/.

A new admin page (telephony routes, say) is a `<name>_page.py` module with its handlers, its
lines in ADMIN_ROUTES, an entry in render.NAV and its words in i18n.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from .. import errors, keys
from . import (audit_page, chat_page, keys_page, login_page, sessions_page, status_page, telephony_page,
               workflows_page)
from .cookie import SessionCookie
from .guard import PageGuard, security_headers
from .render import redirect, setup_templates

STATIC = Path(__file__).parent / "static"
PUBLIC_MODULES = frozenset({"chatkit-gateway.js"})  # imported by other sites' front ends: CORS allowed

ADMIN_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
             "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def home(request: web.Request) -> web.Response:
    return redirect("/admin/workflows")


ADMIN_ROUTES: tuple[tuple[str, str, Handler, str], ...] = (
    ("GET", "", home, "admin_home"),
    ("GET", "/", home, "admin_home_slash"),
    ("GET", "/login", login_page.show, "admin_login"),
    ("POST", "/login", login_page.login, "admin_login_post"),
    ("POST", "/logout", login_page.logout, "admin_logout"),
    ("GET", "/workflows", workflows_page.show, "admin_workflows"),
    ("POST", "/workflows", workflows_page.create, "admin_workflow_create"),
    ("GET", "/workflows/{slug}/edit", workflows_page.edit, "admin_workflow_edit"),
    ("POST", "/workflows/{slug}/edit", workflows_page.update, "admin_workflow_update"),
    ("GET", "/workflows/{slug}/delete", workflows_page.confirm_delete, "admin_workflow_confirm_delete"),
    ("POST", "/workflows/{slug}/delete", workflows_page.delete, "admin_workflow_delete"),
    ("POST", "/start", workflows_page.set_start, "admin_start"),
    ("GET", "/telephony", telephony_page.show, "admin_telephony"),
    ("POST", "/telephony", telephony_page.create, "admin_telephony_create"),
    ("GET", "/telephony/{number}/edit", telephony_page.edit, "admin_telephony_edit"),
    ("POST", "/telephony/{number}/edit", telephony_page.update, "admin_telephony_update"),
    ("GET", "/telephony/{number}/delete", telephony_page.confirm_delete, "admin_telephony_confirm_delete"),
    ("POST", "/telephony/{number}/delete", telephony_page.delete, "admin_telephony_delete"),
    ("GET", "/sessions", sessions_page.show, "admin_sessions"),
    ("POST", "/sessions/{session_id}/cancel", sessions_page.cancel, "admin_session_cancel"),
    ("GET", "/keys", keys_page.show, "admin_keys"),
    ("POST", "/keys", keys_page.create, "admin_key_create"),
    ("POST", "/keys/revoke", keys_page.revoke, "admin_key_revoke"),
    ("GET", "/audit", audit_page.show, "admin_audit"),
    ("GET", "/status", status_page.show, "admin_status"),
)
OPEN_ROUTES = frozenset({"admin_login", "admin_login_post"})


def chat_csp(script_url: str) -> str:
    """The admin policy, plus the ChatKit script's origin (its iframe and the calls it makes)."""
    parts = urlsplit(script_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    return (f"default-src 'none'; script-src 'self' {origin}; style-src 'self' {origin}; img-src 'self' data: "
            f"{origin}; font-src {origin}; connect-src 'self' {origin} https://api.openai.com; frame-src {origin}; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def admin_app() -> web.Application:
    admin = web.Application(middlewares=[PageGuard(open_routes=OPEN_ROUTES).middleware])
    admin.on_response_prepare.append(security_headers(ADMIN_CSP))
    for method, path, handler, name in ADMIN_ROUTES:
        admin.router.add_route(method, path, handler, name=name)
    return admin


def chat_app(script_url: str) -> web.Application:
    chat = web.Application(middlewares=[PageGuard(json_routes=frozenset({"chat_session"}), admin=False).middleware])
    chat.on_response_prepare.append(security_headers(chat_csp(script_url)))
    chat.router.add_get("", chat_page.show, name="chat")
    chat.router.add_post("/session", chat_page.session, name="chat_session")
    return chat


def static_files(directory: Path) -> Handler:
    """GET /static/{name}: the files of `directory`, read once; nothing else is reachable."""
    files = {}
    for path in sorted(directory.iterdir()):
        body = path.read_bytes()
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        files[path.name] = (body, content_type, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')

    async def serve(request: web.Request) -> web.Response:
        found = files.get(request.match_info["name"])
        if found is None:
            raise errors.NotFound()
        body, content_type, etag = found
        headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        if request.match_info["name"] in PUBLIC_MODULES:
            headers["Access-Control-Allow-Origin"] = "*"
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)

    return serve


async def cookie_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[keys.admin_cookie].open(app[keys.store])
    yield


def install(app: web.Application) -> None:
    """Mount /admin, /chat and /static on the root app; call it after the store's cleanup context."""
    settings = app[keys.settings].admin
    app[keys.admin_cookie] = SessionCookie(settings.session_secret, settings.session_hours * 3600)
    app.cleanup_ctx.append(cookie_ctx)
    setup_templates(app)
    app.add_subapp("/admin", admin_app())
    app.add_subapp("/chat", chat_app(settings.chatkit_script))
    app.router.add_get("/static/{name}", static_files(STATIC), name="static")
