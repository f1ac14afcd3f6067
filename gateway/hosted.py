"""The hosted-workflow HTTP API: list for any user; create, change, delete, Start and reload for admins.

Every change goes through the Registry, which validates with the registry's one rule, writes the
store, swaps the in-memory catalog and records an audit entry (who, when, what, before, after).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import errors, keys
from .bodies import json_object
from .principal import require_admin, require_principal
from .registry import Catalog, Registry, WorkflowEntry, entry_fields
from .schema import ConfigError

ADMIN_ONLY = {"hosted": ("workflow_id", "version", "state_variables", "session"),
              "server": ("url", "api_key_env", "proxy", "timeouts", "replaces")}


def described(entry: WorkflowEntry, registry: Registry, catalog: Catalog, *, admin: bool,
              shadowed_by: WorkflowEntry | None = None) -> dict[str, Any]:
    """An entry as the API shows it; remote ids and settings only to admins."""
    live = shadowed_by is None
    row: dict[str, Any] = {
        "slug": entry.slug, "kind": entry.kind, "label": entry.label, "description": entry.description,
        "available": live and registry.available(entry), "default": live and catalog.default() is entry,
        "source": entry.source,
    }
    if admin:
        fields = entry_fields(entry)
        row.update({name: fields.get(name) for name in ADMIN_ONLY[entry.kind]})
        row.update(managed=entry.source == "managed", created_at=entry.created_at,
                   shadowed_by=shadowed_by.source if shadowed_by else None)
    return row


async def list_workflows(request: web.Request) -> web.Response:
    principal = require_principal(request)
    registry = request.app[keys.registry]
    catalog = registry.catalog
    rows = [described(entry, registry, catalog, admin=principal.is_admin) for entry in catalog.entries]
    if principal.is_admin:
        rows += [described(entry, registry, catalog, admin=True, shadowed_by=winner)
                 for entry, winner in catalog.shadowed]
    return web.json_response(rows)


async def create_workflow(request: web.Request) -> web.Response:
    principal = require_admin(request)
    registry = request.app[keys.registry]
    entry = await registry.create(await json_object(request), actor=principal.id)
    request[keys.workflow] = entry
    return web.json_response(described(entry, registry, registry.catalog, admin=True), status=201,
                             headers={"Location": f"/api/chatkit/hosted/{entry.slug}"})


async def update_workflow(request: web.Request) -> web.Response:
    principal = require_admin(request)
    registry = request.app[keys.registry]
    entry = await registry.update(request.match_info["slug"], await json_object(request), actor=principal.id)
    request[keys.workflow] = entry
    return web.json_response(described(entry, registry, registry.catalog, admin=True))


async def delete_workflow(request: web.Request) -> web.Response:
    principal = require_admin(request)
    await request.app[keys.registry].delete(request.match_info["slug"], actor=principal.id)
    return web.Response(status=204)


async def set_start(request: web.Request) -> web.Response:
    """PUT {"workflow": "<slug>"} names the default workflow; {"workflow": null} returns to config.yaml's."""
    principal = require_admin(request)
    body = await json_object(request)
    if "workflow" not in body:
        raise errors.InvalidField('Send {"workflow": "<slug>"}, or {"workflow": null} to clear.', field="workflow")
    catalog = await request.app[keys.registry].set_start(body["workflow"], actor=principal.id)
    default = catalog.default()
    return web.json_response({"workflow": catalog.start, "default": default.slug if default else None})


async def reload_config(request: web.Request) -> web.Response:
    """Re-read `workflows:` and `start:` from config.yaml, as SIGHUP does."""
    principal = require_admin(request)
    try:
        catalog = await request.app[keys.registry].reload(actor=principal.id)
    except ConfigError as exc:
        raise errors.ConfigInvalid(f"config reload failed, the running config is kept: {exc}",
                                   key=exc.path) from None
    return web.json_response({"result": "ok", **catalog.summary()})
