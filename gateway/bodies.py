"""The JSON bodies the gateway reads itself (sessions, the admin API); the relay streams, never reads."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from . import errors


async def json_object(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    """The body as a JSON object; an empty body is {} when the body is optional."""
    text = await request.text()
    if not text.strip() and not required:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise errors.InvalidJSON() from None
    if not isinstance(value, dict):
        raise errors.InvalidJSON()
    return value
