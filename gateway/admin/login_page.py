"""Signing in to the admin pages with an admin API key, and out again.

The key is checked by the auth plugin's KeyBook (in memory, the same check as an API call), and
failures count against the same per-IP limit. Behind nginx, trusted headers sign a user in on
every request instead, and no cookie login is needed.
"""

from __future__ import annotations

import math
import time

from aiohttp import web

from .. import keys
from . import i18n
from .forms import posted
from .guard import forbidden
from .render import page, redirect

HOME = "/admin/workflows"


def safe_next(value: str) -> str:
    """Where to go after login: one of our page paths, never another site."""
    if value.startswith(("/admin", "/chat")) and not value.startswith("//") and "\\" not in value:
        return value
    return HOME


def form(request: web.Request, *, next_path: str, error: str | None = None, status: int = 200) -> web.Response:
    t = i18n.translator(request[keys.page_language])
    return page(request, "login.html", status=status, title=t("login.title"), error=error,
                next=safe_next(next_path), keys_enabled=keys.api_keys in request.config_dict)


async def show(request: web.Request) -> web.Response:
    user = request[keys.page_user]
    if user is not None and user.is_admin:
        return redirect(safe_next(request.query.get("next", "")))
    return form(request, next_path=request.query.get("next", ""))


async def login(request: web.Request) -> web.Response:
    fields = await posted(request, ("api_key", "next"))
    config = request.config_dict
    t = i18n.translator(request[keys.page_language])
    book = config.get(keys.api_keys)
    if book is None:
        return form(request, next_path=fields["next"], error=t("login.no_auth"), status=401)
    limiter, client_ip, now = config[keys.auth_limiter], request[keys.client_ip], time.monotonic()
    wait = limiter.wait(client_ip, now)
    if wait:
        config[keys.auth_failures].labels("rate_limited").inc()
        return form(request, next_path=fields["next"], error=t("login.rate_limited", seconds=math.ceil(wait)),
                    status=429)
    key = fields["api_key"]
    principal = book.principal_for(key) if key else None
    if principal is None:
        limiter.fail(client_ip, now)
        config[keys.auth_failures].labels("revoked_key" if key and book.is_revoked(key) else "unknown_key").inc()
        return form(request, next_path=fields["next"], error=t("login.invalid"), status=401)
    if not principal.is_admin:
        return forbidden(request, principal)
    cookie = config[keys.admin_cookie]
    response = redirect(safe_next(fields["next"]))
    cookie.write(request, response, cookie.logged_in(principal))
    await config[keys.store].audit(principal.id, "admin.login", "admin", None, {"client_ip": client_ip})
    return response


async def logout(request: web.Request) -> web.Response:
    response = redirect("/admin/login")
    request.config_dict[keys.admin_cookie].clear(request, response)
    return response
