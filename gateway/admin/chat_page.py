"""The chat page: pick a workflow, get a session, mount the ChatKit web component (the seed's §4).

The page lists the workflows, and picks `?workflow=` or else the first available one (the
Start workflow when it is available). Its script asks /chat/session, which mints through the
same handler as POST /api/chatkit/session, for the user the page cookie or nginx vouches for.
"""

from __future__ import annotations

from aiohttp import web

from .. import keys, sessions
from ..registry import Catalog, Registry
from . import i18n
from .render import page


def first_available(catalog: Catalog, registry: Registry) -> str | None:
    default = catalog.default()
    if default is not None and registry.available(default):
        return default.slug
    return next((e.slug for e in catalog.entries if registry.available(e)), default.slug if default else None)


async def show(request: web.Request) -> web.Response:
    config = request.config_dict
    registry = config[keys.registry]
    catalog = registry.catalog
    settings = config[keys.settings].admin
    t = i18n.translator(request[keys.page_language])
    return page(request, "chat.html", section="chat", title=t("chat.title"),
                workflows=[(entry, registry.available(entry)) for entry in catalog.entries],
                chosen=request.query.get("workflow") or first_available(catalog, registry),
                chatkit_script=settings.chatkit_script, domain_key=settings.chatkit_domain_key)


async def session(request: web.Request) -> web.StreamResponse:
    """POST {hosted_workflow_slug}: the same answer as /api/chatkit/session, errors included."""
    request[keys.principal] = request[keys.page_user]
    return await sessions.create_session(request)
