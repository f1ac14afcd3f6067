"""Auth: who is calling, from an API key, a JWT, or the trusted proxy's X-Forwarded-User."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from aiohttp import web

from gateway import errors, keys
from gateway.apikeys import BOOTSTRAP_NAME, KEY_SHAPE, KeyBook
from gateway.chain import Handler
from gateway.principal import CHALLENGE, Principal
from gateway.relay import client_secret_of
from gateway.schema import ConfigError, Secret

log = logging.getLogger("chatkit_gateway.auth")

FORWARDED = ("X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Groups")
MISSING = {"WWW-Authenticate": CHALLENGE}
INVALID = {"WWW-Authenticate": CHALLENGE + ', error="invalid_token"'}


@dataclass(frozen=True)
class JwtSettings:
    """Exactly one of `secret` (HS256), `public_key_file` or `jwks_file` (RS256)."""

    issuer: str
    audience: str
    secret: Secret | None = None
    public_key_file: str | None = None
    jwks_file: str | None = None
    leeway_seconds: float = 30.0
    id_claim: str = "sub"
    name_claim: str = "name"
    groups_claim: str = "groups"

    def __post_init__(self) -> None:
        given = [n for n in ("secret", "public_key_file", "jwks_file") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ConfigError("secret", "give exactly one of secret ({$env: NAME}), public_key_file or jwks_file")
        for name in ("public_key_file", "jwks_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(name, f"no such file: {path}")


@dataclass(frozen=True)
class Settings:
    admin_groups: tuple[str, ...] = ()  # members of any of these groups (trusted headers, JWT) are admins
    trusted_headers: bool = True  # honour X-Forwarded-User/-Email/-Groups from a trusted proxy
    bootstrap_admin_key: Secret | None = None  # else GATEWAY_ADMIN_API_KEY; made or updated at start
    jwt: JwtSettings | None = None
    max_failures: int = 10  # failed attempts per client IP and window before 429
    failure_window_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.bootstrap_admin_key is not None and not KEY_SHAPE.fullmatch(self.bootstrap_admin_key.reveal()):
            raise ConfigError("bootstrap_admin_key", "expected gk_ and at least 32 url-safe characters")
        for name in ("max_failures", "failure_window_seconds"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")


class Rejected(Exception):
    """A credential that does not authenticate, and why (a bounded metric label)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FailureLimiter:
    """Failed attempts per client IP in fixed windows; past the limit, the IP waits for its window to end."""

    MAX_TRACKED = 10_000  # client IPs remembered at once; the oldest window goes first

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._windows: dict[str, list[float]] = {}  # ip -> [window start, failures]

    def wait(self, ip: str, now: float) -> float:
        """Seconds `ip` must wait before its next attempt counts (0 when it may try now)."""
        entry = self._windows.get(ip)
        if entry is None or entry[1] < self.limit:
            return 0.0
        return max(0.0, entry[0] + self.window - now)

    def fail(self, ip: str, now: float) -> None:
        entry = self._windows.get(ip)
        if entry is not None and now - entry[0] < self.window:
            entry[1] += 1
            return
        if entry is None and len(self._windows) >= self.MAX_TRACKED:
            self._windows = {k: e for k, e in self._windows.items() if now - e[0] < self.window}
            if len(self._windows) >= self.MAX_TRACKED:
                del self._windows[next(iter(self._windows))]
        self._windows[ip] = [now, 1]


class Auth:
    """Reads: Authorization / X-API-Key, X-Forwarded-User/-Email/-Groups (from a trusted peer only), client_ip.
    Writes: request[keys.principal]; app[keys.auth_required], app[keys.api_keys]; failures in app[keys.auth_failures].
    Answers locally: 401 unauthenticated (no or bad credential), 429 rate_limited (too many failures from one IP)."""

    name: ClassVar[str] = "auth"
    after: ClassVar[tuple[str, ...]] = ()
    Settings: ClassVar[type] = Settings

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.admin_groups = frozenset(settings.admin_groups)
        self.jwt = None
        if settings.jwt is not None:
            # Imported only when configured: PyJWT and the cryptography it loads are ~9 MB per process.
            from plugins.auth_jwt import JwtVerifier
            self.jwt = JwtVerifier(settings.jwt, self.admin_groups)

    def setup(self, app: web.Application) -> None:
        bootstrap = self.settings.bootstrap_admin_key or app[keys.settings].admin_api_key
        if bootstrap is not None and not KEY_SHAPE.fullmatch(bootstrap.reveal()):
            raise ConfigError("GATEWAY_ADMIN_API_KEY", "expected gk_ and at least 32 url-safe characters")
        app[keys.auth_required] = True
        app[keys.api_keys] = KeyBook(app[keys.store])
        app[keys.auth_limiter] = FailureLimiter(self.settings.max_failures, self.settings.failure_window_seconds)

        async def api_keys_ctx(app: web.Application) -> AsyncIterator[None]:
            book = app[keys.api_keys]
            if bootstrap is not None and await book.ensure(BOOTSTRAP_NAME, bootstrap.reveal(), admin=True,
                                                           actor="bootstrap"):
                log.info("bootstrap admin key %r set (%s)", BOOTSTRAP_NAME, bootstrap.fingerprint,
                         extra={"key_fingerprint": bootstrap.fingerprint})
            await book.load()
            app[keys.store_changes].follow("API keys", book.load)
            yield

        app.cleanup_ctx.append(api_keys_ctx)

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        principal = self.authenticate(request)
        if principal is not None:
            request[keys.principal] = principal
        return await handler(request)

    def authenticate(self, request: web.Request) -> Principal | None:
        """The caller's principal; None for a ChatKit client secret, which the relay checks and forwards."""
        headers = request.headers
        forwarded = None
        if "X-Forwarded-User" in headers or "X-Forwarded-Email" in headers or "X-Forwarded-Groups" in headers:
            forwarded = self.forwarded_principal(request)
        credential = headers.get("X-API-Key")
        if credential is None:
            authorization = headers.get("Authorization")
            if authorization is None:
                if forwarded is not None:
                    return forwarded
                raise self.reject(request, "missing_credential", MISSING)
            if client_secret_of(request) is not None:
                return forwarded
            scheme, _, credential = authorization.partition(" ")
            if scheme.lower() != "bearer":
                credential = ""
        return self.verify(request, credential.strip())

    def verify(self, request: web.Request, credential: str) -> Principal:
        """The principal `credential` stands for; each failure counts against the client IP."""
        app = request.app
        limiter = app[keys.auth_limiter]
        client_ip = request[keys.client_ip]
        now = time.monotonic()
        wait = limiter.wait(client_ip, now)
        if wait:
            app[keys.auth_failures].labels("rate_limited").inc()
            raise errors.TooManyRequests(headers={"Retry-After": str(math.ceil(wait))})
        try:
            return self.identify(app, credential)
        except Rejected as rejected:
            limiter.fail(client_ip, now)
            raise self.reject(request, rejected.reason, INVALID) from None

    def identify(self, app: web.Application, credential: str) -> Principal:
        if credential.startswith("gk_"):
            book = app[keys.api_keys]
            principal = book.principal_for(credential)
            if principal is not None:
                return principal
            raise Rejected("revoked_key" if book.is_revoked(credential) else "unknown_key")
        if self.jwt is not None and credential:
            return self.jwt.verify(credential)
        raise Rejected("invalid_credential" if credential else "unsupported_scheme")

    def forwarded_principal(self, request: web.Request) -> Principal | None:
        """The user nginx vouches for; the headers of any other peer are counted and ignored."""
        if not request[keys.peer_trusted]:
            request.app[keys.auth_failures].labels("untrusted_forwarded_headers").inc()
            log.warning("ignored X-Forwarded-User/-Email/-Groups from %s, which is not a trusted proxy",
                        request[keys.client_ip],
                        extra={"request_id": request[keys.request_id], "client_ip": request[keys.client_ip],
                               "reason": "untrusted_forwarded_headers"})
            return None
        if not self.settings.trusted_headers:
            return None
        headers = request.headers
        user = headers.get("X-Forwarded-User", "").strip()
        email = headers.get("X-Forwarded-Email", "").strip()
        if not (user or email):
            return None
        groups = tuple(g.strip() for g in headers.get("X-Forwarded-Groups", "").split(",") if g.strip())
        return Principal(id=f"user:{user or email}", name=email or user, groups=groups,
                         is_admin=not self.admin_groups.isdisjoint(groups), via="trusted_headers")

    def reject(self, request: web.Request, reason: str, headers: dict[str, str]) -> errors.GatewayError:
        request.app[keys.auth_failures].labels(reason).inc()
        return errors.Unauthenticated(headers=headers)
