"""Principal: who is calling, as auth established it."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from . import errors, keys

# The challenge every 401 carries (RFC 6750); a rejected credential adds error="invalid_token".
CHALLENGE = 'Bearer realm="chatkit-gateway"'


@dataclass(frozen=True, slots=True)
class Principal:
    id: str  # stable and unique: "key:<name>", "user:<forwarded user>", "jwt:<sub>"
    name: str  # for display only
    is_admin: bool = False
    groups: tuple[str, ...] = ()
    via: str = "api_key"  # api_key | trusted_headers | jwt | client_secret


def require_principal(request: web.Request) -> Principal:
    """The caller, or 401: without an auth plugin in the chain nobody is authenticated."""
    principal = request.get(keys.principal)
    if principal is None:
        raise errors.Unauthenticated(headers={"WWW-Authenticate": CHALLENGE})
    return principal


def require_admin(request: web.Request) -> Principal:
    """An admin caller, else 401 (nobody) or 403 (not an admin)."""
    principal = require_principal(request)
    if not principal.is_admin:
        raise errors.Forbidden()
    return principal
