"""Who the user is, told to a self-hosted ChatKit server in headers signed by the gateway.

This module uses the standard library only: a ChatKit server may import it, or copy it whole, and
call `verify(request.headers, secret)` before `ChatKitServer.process()`.

Scheme v1. The gateway strips every client header starting with ``X-Gateway-`` and sends:

    X-Gateway-User         the derived user id, ``gw_`` and 32 hex digits (stable per principal)
    X-Gateway-User-Name    the display name, UTF-8 percent-encoded (RFC 3986, nothing left unescaped)
    X-Gateway-User-Groups  the groups, each percent-encoded the same way, joined by ``,`` (may be empty)
    X-Gateway-Workflow     the slug the request was sent to
    X-Gateway-Timestamp    unix seconds when the gateway signed
    X-Gateway-Signature    ``v1=`` and the lowercase hex HMAC-SHA256, keyed with the shared secret
                           (its UTF-8 bytes), of the lines
                           ``v1``, timestamp, workflow, user, name, groups, joined by ``\\n``,
                           each exactly as sent in its header (still percent-encoded).

A server accepts the identity when the signature matches (compared in constant time) and the
timestamp is within `MAX_AGE_SECONDS` of its own clock, either way. The signature covers the
identity, not the body: keep the server reachable from the gateway only.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

VERSION = "v1"
PREFIX = "x-gateway-"  # every client header with this prefix is dropped by the gateway
USER = "X-Gateway-User"
NAME = "X-Gateway-User-Name"
GROUPS = "X-Gateway-User-Groups"
WORKFLOW = "X-Gateway-Workflow"
TIMESTAMP = "X-Gateway-Timestamp"
SIGNATURE = "X-Gateway-Signature"
SIGNED = (TIMESTAMP, WORKFLOW, USER, NAME, GROUPS)  # in the order they are signed
MAX_AGE_SECONDS = 300


class InvalidIdentity(ValueError):
    """The identity headers are missing, malformed, stale or not signed with the shared secret."""


@dataclass(frozen=True)
class Identity:
    user: str  # gw_…: use it as the owner of threads and attachments
    name: str
    groups: tuple[str, ...]
    workflow: str
    timestamp: int


def _digest(secret: str | bytes, values: Iterable[str]) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    message = "\n".join((VERSION, *values)).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_headers(secret: str | bytes, *, user: str, name: str, groups: Iterable[str], workflow: str,
                   now: float | None = None) -> dict[str, str]:
    """The identity headers the gateway adds to a request for a ChatKit server."""
    headers = {
        TIMESTAMP: str(int(time.time() if now is None else now)),
        WORKFLOW: workflow,
        USER: user,
        NAME: quote(name, safe=""),
        GROUPS: ",".join(quote(group, safe="") for group in groups),
    }
    headers[SIGNATURE] = f"{VERSION}={_digest(secret, (headers[h] for h in SIGNED))}"
    return headers


def verify(headers: Mapping[str, str], secret: str | bytes, *, now: float | None = None,
           max_age: float = MAX_AGE_SECONDS) -> Identity:
    """The identity the gateway signed into `headers` (any mapping: names are matched in any case)."""
    seen: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith(PREFIX):
            if lower in seen:
                raise InvalidIdentity(f"{name} appears twice")
            seen[lower] = value
    try:
        values = [seen[h.lower()] for h in SIGNED]
        signature = seen[SIGNATURE.lower()]
    except KeyError as missing:
        raise InvalidIdentity(f"missing header {missing.args[0]}") from None
    expected = f"{VERSION}={_digest(secret, values)}"
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise InvalidIdentity("bad signature")
    timestamp, workflow, user, name, groups = values
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise InvalidIdentity("bad timestamp")
    if abs((time.time() if now is None else now) - int(timestamp)) > max_age:
        raise InvalidIdentity("stale timestamp")
    return Identity(user=user, name=unquote(name), groups=tuple(unquote(g) for g in groups.split(",") if g),
                    workflow=workflow, timestamp=int(timestamp))
