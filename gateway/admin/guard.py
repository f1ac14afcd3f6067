"""Who is looking at an admin or chat page, and the rules every such page follows.

`PageGuard` is the middleware of both page sub-apps (/admin and /chat). It reads the session
cookie or starts an anonymous visit, finds the user (trusted nginx headers, read by the auth
plugin exactly as for the API, else a cookie login still backed by a live admin key), checks the
CSRF token of every POST, and renders what goes wrong as a page. `security_headers` adds the
Content-Security-Policy and its companions to every response of a page sub-app.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from .. import errors, keys
from ..principal import Principal
from . import i18n
from .cookie import Visit
from .render import page, redirect

log = logging.getLogger("chatkit_gateway.admin")

FORWARDED = ("X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Groups")
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
LANGUAGE_SECONDS = 365 * 24 * 3600

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def auth_plugin(request: web.Request) -> Any | None:
    """The auth plugin of the chain, if one is configured: it alone decides what a credential is worth."""
    return next((p for p in request.config_dict[keys.plugins] if getattr(p, "name", None) == "auth"), None)


def forwarded_user(request: web.Request) -> Principal | None:
    """The user a trusted nginx vouches for, with admin decided by the auth plugin's admin_groups."""
    if not request[keys.peer_trusted] or not any(name in request.headers for name in FORWARDED):
        return None
    auth = auth_plugin(request)
    return auth.forwarded_principal(request) if auth is not None else None


async def cookie_user(request: web.Request, visit: Visit) -> Principal | None:
    """The principal of a cookie login, as long as its key is still live (and still an admin's)."""
    principal = visit.principal
    if principal is None or principal.via != "api_key":
        return None
    name = principal.id.removeprefix("key:")
    for record in await request.config_dict[keys.store].list_keys():
        if record.name == name and record.revoked_at is None and record.is_admin:
            return principal
    return None


@dataclass(frozen=True)
class PageGuard:
    """`open_routes` need nobody; `admin` says whether the others want an admin or any user;
    `json_routes` answer failures as the gateway's JSON errors instead of pages."""

    open_routes: frozenset[str] = frozenset()
    json_routes: frozenset[str] = frozenset()
    admin: bool = True

    @property
    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self.handle(request, handler)

        return guard

    async def handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        cookie = request.config_dict[keys.admin_cookie]
        visit = cookie.read(request)
        request[keys.admin_visit] = visit or cookie.anonymous()
        request[keys.page_language] = i18n.choose(request)
        request[keys.page_user] = forwarded_user(request) or (await cookie_user(request, visit) if visit else None)
        route = request.match_info.route.name
        try:
            response = await self.answer(request, handler, visit, route)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = self.failure(request, route, errors.NotFound() if exc.status == 404 else
                                    errors.MethodNotAllowed() if exc.status == 405 else errors.BadRequest(exc.reason))
        except errors.GatewayError as error:
            response = self.failure(request, route, error)
        except Exception:
            if route in self.json_routes:
                raise  # the core middleware logs it and answers internal_error
            log.exception("unexpected error on %s %s", request.method, request.path,
                          extra={"request_id": request[keys.request_id]})
            response = self.failure(request, route, errors.InternalError())
        if not request[keys.admin_visit].stored and not response.prepared:
            cookie.write(request, response, request[keys.admin_visit])
        if request.query.get("lang") in i18n.LANGUAGES and not response.prepared:
            response.set_cookie(i18n.COOKIE, request.query["lang"], path="/", max_age=LANGUAGE_SECONDS,
                                samesite="Strict", httponly=True)
        return response

    async def answer(self, request: web.Request, handler: Handler, visit: Visit | None,
                     route: str | None) -> web.StreamResponse:
        if request.method == "POST" and not await csrf_ok(request, visit):
            raise CsrfRefused()
        user = request[keys.page_user]
        if route not in self.open_routes:
            if user is None:
                if route in self.json_routes:
                    raise errors.Unauthenticated()
                return redirect("/admin/login?next=" + quote(request.rel_url.path_qs, safe="/"))
            if self.admin and not user.is_admin:
                return forbidden(request, user)
        return await handler(request)

    def failure(self, request: web.Request, route: str | None, error: errors.GatewayError) -> web.Response:
        if route in self.json_routes:
            raise error  # the gateway's JSON error shape, made by the core middleware
        t = i18n.translator(request[keys.page_language])
        if isinstance(error, CsrfRefused):
            heading, message, detail = t("page.csrf"), t("page.csrf_text"), None
        elif isinstance(error, errors.NotFound):
            heading, message, detail = t("page.not_found"), t("page.not_found_text"), None
        else:
            heading, message, detail = t("page.error"), t("page.error_text"), error.text
        return page(request, "message.html", status=error.status, title=heading, heading=heading, message=message,
                    detail=detail, back_href="/admin/", back_label=t("page.back"))


class CsrfRefused(errors.Forbidden):
    message = "The CSRF token is missing or invalid; reload the page."


async def csrf_ok(request: web.Request, visit: Visit | None) -> bool:
    token = request.headers.get(CSRF_HEADER)
    if token is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        value = (await request.post()).get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    return request.config_dict[keys.admin_cookie].csrf_ok(visit, token)


def forbidden(request: web.Request, user: Principal) -> web.Response:
    t = i18n.translator(request[keys.page_language])
    return page(request, "message.html", status=403, title=t("page.forbidden"), heading=t("page.forbidden"),
                message=t("page.forbidden_text", name=user.name), detail=None,
                back_href="/admin/login", back_label=t("page.sign_in_again"))


def security_headers(content_security_policy: str) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """on_response_prepare for a page sub-app: no framing, no inline script, nothing cached."""

    async def stamp(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers["Content-Security-Policy"] = content_security_policy
        headers["X-Frame-Options"] = "DENY"
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "same-origin"
        headers["Cache-Control"] = "no-store"  # pages show keys, session ids and CSRF tokens

    return stamp
