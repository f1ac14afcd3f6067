"""Rendering pages: the one Jinja environment, the context every page shares, redirects and flashes."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
import jinja2
from aiohttp import web

from .. import keys
from . import i18n

NAV = (("workflows", "/admin/workflows"), ("telephony", "/admin/telephony"), ("sessions", "/admin/sessions"),
       ("keys", "/admin/keys"), ("audit", "/admin/audit"), ("status", "/admin/status"), ("chat", "/chat"))
# What a redirect may report after a change (`?done=`), and the values its message may show.
FLASHES = {"workflow_created": ("slug",), "workflow_updated": ("slug",), "workflow_deleted": ("slug",),
           "start_set": ("slug",), "start_cleared": (), "session_cancelled": ("id",), "key_revoked": ("name",),
           "route_created": ("number",), "route_updated": ("number",), "route_deleted": ("number",)}


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def compact(value: Any, limit: int = 240) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def setup_templates(app: web.Application) -> None:
    """One environment on the root app, found by both page sub-apps through request.config_dict."""
    env = aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("gateway.admin", "templates"), autoescape=True,
                               undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = when
    env.filters["compact"] = compact


def flash(request: web.Request, t: i18n.Translator) -> str | None:
    done = request.query.get("done")
    if done not in FLASHES:
        return None
    return t(f"flash.{done}", **{name: request.query.get(name, "") for name in FLASHES[done]})


def page(request: web.Request, template: str, *, status: int = 200, section: str | None = None,
         **context: Any) -> web.Response:
    """`template` rendered with what every page needs: language, user, CSRF token, navigation."""
    lang = request[keys.page_language]
    t = i18n.translator(lang)
    user = request[keys.page_user]
    visit = request[keys.admin_visit]
    query = dict(request.query)
    query.pop("done", None)
    shared = {
        "lang": lang, "languages": i18n.LANGUAGES, "t": t, "user": user, "nav": NAV, "section": section,
        "csrf_token": request.config_dict[keys.admin_cookie].csrf_token(visit), "flash": flash(request, t),
        "logout": user is not None and visit.principal is not None and user.id == visit.principal.id,
        "with_lang": lambda code: urlencode({**query, "lang": code}),
        "title": t(f"nav.{section}") if section else "",
    }
    return aiohttp_jinja2.render_template(template, request, {**shared, **context}, status=status)


def redirect(location: str, **done: str) -> web.Response:
    """303 See Other to `location`, telling the next page what was done (`done=`, and its values)."""
    if done:
        location += ("&" if "?" in location else "?") + urlencode(done)
    return web.Response(status=303, headers={"Location": location})
