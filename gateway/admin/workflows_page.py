"""The "Hosted workflows" pages (the seed's "Workflows hébergés"): list, add, edit, delete, Start.

Every change goes through the Registry, as the HTTP API's do: the same validation, the same
audit entry, the same in-memory swap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .. import errors, keys
from ..registry import WorkflowEntry
from . import i18n
from .forms import field_errors, posted
from .render import page, redirect

FIELDS = ("slug", "workflow_id", "label", "version", "description")  # the Add form makes hosted entries
EDITABLE = {  # what the edit form shows for each kind: (field, required)
    "hosted": (("workflow_id", True), ("label", False), ("version", False), ("description", False)),
    "server": (("url", True), ("label", False), ("description", False)),
}
OPTIONAL = ("label", "version", "description")


@dataclass(frozen=True)
class Row:
    entry: WorkflowEntry
    available: bool
    is_start: bool
    is_default: bool
    unavailable_reason: str


def rows(request: web.Request, t: i18n.Translator) -> list[Row]:
    registry = request.config_dict[keys.registry]
    catalog = registry.catalog
    default = catalog.default()
    key_missing = not request.config_dict[keys.settings].upstream.api_key
    reason = t("status.key") + ": " + t("status.key_missing") if key_missing else ""
    return [Row(entry, registry.available(entry), entry.slug == catalog.start, entry is default, reason)
            for entry in catalog.entries]


def listing(request: web.Request, *, form: dict[str, str] | None = None, errors_: dict[str, str] | None = None,
            status: int = 200) -> web.Response:
    t = i18n.translator(request[keys.page_language])
    catalog = request.config_dict[keys.registry].catalog
    return page(request, "workflows.html", status=status, section="workflows", rows=rows(request, t),
                shadowed=catalog.shadowed, start=catalog.start,
                start_resolves=catalog.start is not None and catalog.find(catalog.start) is not None,
                form=form or dict.fromkeys(FIELDS, ""), errors=errors_ or {})


async def show(request: web.Request) -> web.Response:
    return listing(request)


def declared(form: dict[str, str], names: tuple[str, ...]) -> dict[str, Any]:
    """The form as an entry's fields: an empty optional field is left unset."""
    return {name: (form[name] or None) if name in OPTIONAL else form[name] for name in names}


async def create(request: web.Request) -> web.Response:
    form = await posted(request, FIELDS)
    user = request[keys.page_user]
    try:
        entry = await request.config_dict[keys.registry].create(
            {k: v for k, v in declared(form, FIELDS).items() if v is not None}, actor=user.id)
    except errors.GatewayError as error:
        inline = field_errors(error, FIELDS, i18n.translator(request[keys.page_language]))
        if inline is None:
            raise
        return listing(request, form=form, errors_=inline, status=error.status)
    return redirect("/admin/workflows", done="workflow_created", slug=entry.slug)


def managed(request: web.Request) -> WorkflowEntry:
    """The managed entry the path names: 404 when none has that slug, 409 when config.yaml owns it."""
    entry = request.config_dict[keys.registry].catalog.resolve(request.match_info["slug"])
    if entry.source != "managed":
        raise errors.HostedWorkflowReadOnly(slug=entry.slug, source=entry.source)
    return entry


def editable(entry: WorkflowEntry) -> tuple[str, ...]:
    return tuple(name for name, _ in EDITABLE[entry.kind])


def edit_page(request: web.Request, entry: WorkflowEntry, form: dict[str, str], errors_: dict[str, str],
              status: int = 200) -> web.Response:
    t = i18n.translator(request[keys.page_language])
    return page(request, "workflow_edit.html", status=status, section="workflows", slug=entry.slug,
                fields=EDITABLE[entry.kind], form=form, errors=errors_, title=t("edit.title", slug=entry.slug))


async def edit(request: web.Request) -> web.Response:
    entry = managed(request)
    form = {name: "" if getattr(entry, name) is None else str(getattr(entry, name)) for name in editable(entry)}
    return edit_page(request, entry, form, {})


async def update(request: web.Request) -> web.Response:
    entry = managed(request)
    names = editable(entry)
    form = await posted(request, names)
    try:
        entry = await request.config_dict[keys.registry].update(entry.slug, declared(form, names),
                                                                 actor=request[keys.page_user].id)
    except errors.GatewayError as error:
        inline = field_errors(error, names, i18n.translator(request[keys.page_language]))
        if inline is None:
            raise
        return edit_page(request, entry, form, inline, status=error.status)
    return redirect("/admin/workflows", done="workflow_updated", slug=entry.slug)


async def confirm_delete(request: web.Request) -> web.Response:
    entry = managed(request)
    t = i18n.translator(request[keys.page_language])
    catalog = request.config_dict[keys.registry].catalog
    return page(request, "workflow_delete.html", section="workflows", entry=entry,
                is_start=catalog.start == entry.slug, title=t("delete.title", slug=entry.slug))


async def delete(request: web.Request) -> web.Response:
    entry = managed(request)
    await request.config_dict[keys.registry].delete(entry.slug, actor=request[keys.page_user].id)
    return redirect("/admin/workflows", done="workflow_deleted", slug=entry.slug)


async def set_start(request: web.Request) -> web.Response:
    """Name the Start workflow; an empty slug returns to config.yaml's `start:`."""
    slug = (await posted(request, ("slug",)))["slug"] or None
    await request.config_dict[keys.registry].set_start(slug, actor=request[keys.page_user].id)
    if slug is None:
        return redirect("/admin/workflows", done="start_cleared")
    return redirect("/admin/workflows", done="start_set", slug=slug.lower())
