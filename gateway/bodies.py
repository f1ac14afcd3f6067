"""The JSON bodies the gateway reads itself (sessions, the admin API); the relay streams, never reads."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from . import errors


async def json_object(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    """The body as a JSON object; an empty body is {} when the body is optional."""
    raw = await request.read()
    if not raw.strip() and not required:
        return {}
    try:
        value = orjson.loads(raw)  # JSON is UTF-8 (RFC 8259): another charset is not JSON
    except ValueError:
        raise errors.InvalidJSON() from None
    if not isinstance(value, dict):
        raise errors.InvalidJSON()
    return value
