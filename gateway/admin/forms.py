"""Reading posted forms, and showing the registry's validation errors next to the fields they concern.

The rules themselves live in the registry (`parse_entry`), the call routes (`parse_route`) and the
key book: a form only collects strings, hands them over, and places the GatewayError it gets back
under the right field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from .. import errors
from . import i18n


async def posted(request: web.Request, names: Iterable[str]) -> dict[str, str]:
    """The named fields of a posted form, stripped; a missing field is an empty string."""
    data = await request.post()
    values = {}
    for name in names:
        value = data.get(name, "")
        values[name] = value.strip() if isinstance(value, str) else ""
    return values


def field_errors(error: errors.GatewayError, fields: Iterable[str], t: i18n.Translator,
                 aliases: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """`error` placed under the form field it is about, or None when it is about none of them.

    `aliases` renames a field for a form that calls it otherwise (the routes form's slug is `workflow`)."""
    known = set(fields)
    if isinstance(error, (errors.InvalidSlug, errors.HostedWorkflowConflict, errors.HostedWorkflowNotFound)):
        field = "slug"
    elif isinstance(error, errors.InvalidWorkflowId):
        field = "workflow_id"
    elif isinstance(error, (errors.InvalidNumber, errors.TelephonyRouteConflict)):
        field = "number"
    elif isinstance(error, errors.InvalidField):
        field = str(error.context.get("field", "")).split(".", 1)[0].split("[", 1)[0]
    else:
        return None
    field = (aliases or {}).get(field, field)
    if field not in known:
        return None
    return {field: message(error, t)}


def message(error: errors.GatewayError, t: i18n.Translator) -> str:
    """The error in the page's language when we have its words, else the gateway's own text."""
    key = f"error.{error.code}"
    if key not in i18n.EN:
        return error.text
    values: dict[str, Any] = {}
    if "source" in error.context:
        values["source"] = t(f"source.{error.context['source']}")
    return t(key, **values)
