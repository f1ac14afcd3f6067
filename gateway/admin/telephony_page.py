"""The "Telephony routes" pages (« Routes téléphoniques »): list, add, edit a route's workflow, delete.

Every change goes through the same functions as the routes API (telephony.checked_route and
checked_workflow, then CallRoutes): the same validation, the same audit entry, the same swap of
the route table. Routes from config.yaml are listed read-only.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .. import errors, keys
from ..callroutes import CallRoute
from ..telephony import checked_route, checked_workflow
from . import i18n
from .forms import field_errors, posted
from .render import page, redirect

FIELDS = ("number", "workflow")
ALIASES = {"slug": "workflow"}  # the registry's slug errors concern the form's workflow field


@dataclass(frozen=True)
class Row:
    route: CallRoute
    resolves: bool
    shadowed_by: CallRoute | None = None


def errors_inline(request: web.Request, error: errors.GatewayError, names: tuple[str, ...]) -> dict[str, str]:
    """`error` under its field; an error about no field of the form goes on to the guard's error page."""
    inline = field_errors(error, names, i18n.translator(request[keys.page_language]), ALIASES)
    if inline is None:
        raise error
    return inline


def listing(request: web.Request, *, form: dict[str, str] | None = None, errors_: dict[str, str] | None = None,
            status: int = 200) -> web.Response:
    registry = request.config_dict[keys.registry]
    table = request.config_dict[keys.call_routes].table

    def resolves(slug: str) -> bool:
        return registry.find(slug) is not None

    default = table.default_workflow
    return page(request, "telephony.html", status=status, section="telephony",
                rows=[Row(route, resolves(route.workflow)) for route in table.routes],
                shadowed=[Row(route, resolves(route.workflow), winner) for route, winner in table.shadowed],
                default=default, default_resolves=default is not None and resolves(default),
                reject_status=request.config_dict[keys.settings].telephony.reject_status,
                slugs=[entry.slug for entry in registry.catalog.entries],
                form=form or dict.fromkeys(FIELDS, ""), errors=errors_ or {})


async def show(request: web.Request) -> web.Response:
    return listing(request)


async def create(request: web.Request) -> web.Response:
    form = await posted(request, FIELDS)
    try:
        route, _ = checked_route(request.config_dict[keys.registry], form)
        route = await request.config_dict[keys.call_routes].create(route, actor=request[keys.page_user].id)
    except errors.GatewayError as error:
        return listing(request, form=form, errors_=errors_inline(request, error, FIELDS), status=error.status)
    return redirect("/admin/telephony", done="route_created", number=route.number)


def managed(request: web.Request) -> CallRoute:
    """The managed route the path names: 404 when no route has it, 409 when config.yaml owns it."""
    return request.config_dict[keys.call_routes].managed(request.match_info["number"])


def edit_page(request: web.Request, route: CallRoute, form: dict[str, str], errors_: dict[str, str],
              status: int = 200) -> web.Response:
    t = i18n.translator(request[keys.page_language])
    return page(request, "telephony_edit.html", status=status, section="telephony", route=route, form=form,
                errors=errors_, slugs=[entry.slug for entry in request.config_dict[keys.registry].catalog.entries],
                title=t("telephony.edit_title", number=route.number))


async def edit(request: web.Request) -> web.Response:
    route = managed(request)
    return edit_page(request, route, {"workflow": route.workflow}, {})


async def update(request: web.Request) -> web.Response:
    route = managed(request)
    form = await posted(request, ("workflow",))
    try:
        checked_workflow(request.config_dict[keys.registry], form["workflow"])
        route = await request.config_dict[keys.call_routes].update(route.number, form["workflow"],
                                                                    actor=request[keys.page_user].id)
    except errors.GatewayError as error:
        return edit_page(request, route, form, errors_inline(request, error, ("workflow",)), status=error.status)
    return redirect("/admin/telephony", done="route_updated", number=route.number)


async def confirm_delete(request: web.Request) -> web.Response:
    route = managed(request)
    t = i18n.translator(request[keys.page_language])
    return page(request, "telephony_delete.html", section="telephony", route=route,
                default=request.config_dict[keys.call_routes].table.default_workflow,
                reject_status=request.config_dict[keys.settings].telephony.reject_status,
                title=t("telephony.delete_title", number=route.number))


async def delete(request: web.Request) -> web.Response:
    route = managed(request)
    await request.config_dict[keys.call_routes].delete(route.number, actor=request[keys.page_user].id)
    return redirect("/admin/telephony", done="route_deleted", number=route.number)
