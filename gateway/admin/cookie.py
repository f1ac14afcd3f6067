"""The admin session cookie: signed with HMAC-SHA256, HttpOnly, SameSite=Strict, expiring, Secure over HTTPS.

Every browser that opens an admin page gets one. Before login it only carries a random nonce,
which binds the CSRF token of the login form; a login replaces it with a new nonce and the
principal. The signing key comes from `admin.session_secret`, or is generated once and kept in
the store, so every worker and every restart signs alike.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from aiohttp import web

from .. import keys
from ..principal import Principal
from ..schema import Secret
from ..storage import Store

COOKIE = "ckg_session"
SECRET_KEY = "admin_session_secret"  # the kv row holding the generated signing key
ANONYMOUS_SECONDS = 3600  # how long a login form stays usable


@dataclass(frozen=True)
class Visit:
    """What a valid cookie says: a nonce binding the CSRF token, its expiry, and who logged in."""

    nonce: str
    expires_at: int
    principal: Principal | None = None
    stored: bool = True  # False for a visit made for this request, whose cookie is still to be set


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def same(given: str, expected: str) -> bool:
    """Constant-time equality that also accepts non-ASCII input (which never matches)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def is_https(request: web.Request) -> bool:
    """HTTPS to this gateway, or to the trusted proxy in front of it (X-Forwarded-Proto)."""
    if request.scheme == "https":
        return True
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return request[keys.peer_trusted] and forwarded.split(",")[0].strip().lower() == "https"


class SessionCookie:
    def __init__(self, configured: Secret | None, lifetime_seconds: float) -> None:
        self.configured = configured
        self.lifetime = int(lifetime_seconds)
        self._key: bytes | None = None

    async def open(self, store: Store) -> None:
        secret = self.configured.reveal() if self.configured else await store.setdefault_value(
            SECRET_KEY, secrets.token_hex(32))
        self._key = secret.encode()

    def _mac(self, purpose: str, message: str) -> str:
        assert self._key is not None, "SessionCookie used before open()"
        return b64(hmac.new(self._key, f"{purpose}\n{message}".encode(), hashlib.sha256).digest())

    # Visits

    def anonymous(self) -> Visit:
        return Visit(secrets.token_urlsafe(16), int(time.time()) + ANONYMOUS_SECONDS, stored=False)

    def logged_in(self, principal: Principal) -> Visit:
        """A fresh visit for `principal`: a new nonce, so a token seen before login is worthless after."""
        return Visit(secrets.token_urlsafe(16), int(time.time()) + self.lifetime, principal, stored=False)

    def read(self, request: web.Request) -> Visit | None:
        """The visit the request's cookie carries, if its signature holds and it has not expired."""
        value = request.cookies.get(COOKIE, "")
        payload, _, signature = value.partition(".")
        if not payload or not same(signature, self._mac("cookie", payload)):
            return None
        try:
            data = json.loads(unb64(payload))
            expires_at = int(data["exp"])
            who = data.get("p")
            principal = None if who is None else Principal(id=who["id"], name=who["name"], is_admin=who["admin"],
                                                           via=who["via"])
            visit = Visit(str(data["n"]), expires_at, principal)
        except (ValueError, KeyError, TypeError):
            return None
        return visit if visit.expires_at > time.time() else None

    def write(self, request: web.Request, response: web.StreamResponse, visit: Visit) -> None:
        data: dict[str, object] = {"n": visit.nonce, "exp": visit.expires_at}
        if visit.principal is not None:
            p = visit.principal
            data["p"] = {"id": p.id, "name": p.name, "admin": p.is_admin, "via": p.via}
        payload = b64(json.dumps(data, separators=(",", ":")).encode())
        response.set_cookie(COOKIE, f"{payload}.{self._mac('cookie', payload)}", path="/",
                            max_age=max(0, visit.expires_at - int(time.time())), httponly=True,
                            samesite="Strict", secure=is_https(request))

    def clear(self, request: web.Request, response: web.StreamResponse) -> None:
        response.del_cookie(COOKIE, path="/", httponly=True, samesite="Strict", secure=is_https(request))

    # CSRF: a token bound to the visit's nonce, checked on every form post

    def csrf_token(self, visit: Visit) -> str:
        return self._mac("csrf", visit.nonce)

    def csrf_ok(self, visit: Visit | None, token: str | None) -> bool:
        return visit is not None and visit.stored and bool(token) and same(token or "", self.csrf_token(visit))
