"""The pooled clients of self-hosted ChatKit servers: one Upstream per distinct server target.

The pool follows the registry. When the catalog changes, targets that appeared are opened and
targets no longer declared are retired: closed at once when idle, else when their last request
ends, so that a reload never cuts a stream in flight.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from yarl import URL

from . import keys
from .registry import DIRECT, Catalog, Registry, ServerTimeouts, WorkflowEntry
from .schema import Secret
from .settings import ProxySettings, Settings, Timeouts
from .upstream import Route, Upstream, choose_route

log = logging.getLogger("chatkit_gateway.servers")


@dataclass(frozen=True)
class Target:
    """What makes two server entries share a client: the same endpoint, reached the same way."""

    url: str
    api_key_env: str | None
    proxy: str | None
    timeouts: ServerTimeouts | None

    @classmethod
    def of(cls, entry: WorkflowEntry) -> Target:
        assert entry.url is not None, "a server entry always has a url"
        return cls(str(URL(entry.url)), entry.api_key_env, entry.proxy, entry.timeouts)


class ServerPool:
    """Upstreams of the registry's server entries, opened and retired as the catalog changes."""

    def __init__(self, registry: Registry, settings: Settings, environ: Mapping[str, str]) -> None:
        self._registry = registry
        self._settings = settings
        self._environ = environ
        self._catalog: Catalog | None = None  # the catalog the pool last followed
        self._wanted: frozenset[Target] = frozenset()
        self._open: dict[Target, Upstream] = {}  # wanted ones, and retired ones still in use
        self._in_use: dict[Target, int] = {}

    async def follow(self) -> None:
        """Open the targets the current catalog declares; close the others unless in use."""
        catalog = self._registry.catalog
        if catalog is self._catalog:
            return
        self._catalog = catalog
        self._wanted = frozenset(Target.of(e) for e in catalog.entries if e.kind == "server")
        for target in self._wanted - self._open.keys():
            await self._opened(target)
        for target in [t for t in self._open if t not in self._wanted and not self._in_use.get(t)]:
            await self._open.pop(target).close()

    @asynccontextmanager
    async def lease(self, entry: WorkflowEntry) -> AsyncIterator[Upstream]:
        """The Upstream of `entry`, kept open until the request using it ends."""
        await self.follow()
        target = Target.of(entry)
        upstream = self._open.get(target) or await self._opened(target)  # an entry swapped out meanwhile
        self._in_use[target] = self._in_use.get(target, 0) + 1
        try:
            yield upstream
        finally:
            self._in_use[target] -= 1
            if not self._in_use[target]:
                del self._in_use[target]
                if target not in self._wanted and self._open.get(target) is upstream:
                    del self._open[target]
                    await upstream.close()

    async def close(self) -> None:
        opened, self._open = self._open, {}
        for upstream in opened.values():
            await upstream.close()

    async def _opened(self, target: Target) -> Upstream:
        upstream = self._open[target] = self._upstream(target)
        await upstream.open()
        if target.api_key_env and not upstream.api_key:
            log.warning("ChatKit server %s: the variable %s holding its key is not set", upstream.name,
                        target.api_key_env, extra={"upstream": upstream.name})
        return upstream

    def _upstream(self, target: Target) -> Upstream:
        config = self._settings.upstream
        own = target.timeouts or ServerTimeouts()
        timeouts = Timeouts(connect=own.connect or config.timeouts.connect, read=own.read or config.timeouts.read,
                            total=config.timeouts.total)
        key = self._environ.get(target.api_key_env) if target.api_key_env else None
        parts = urlsplit(target.url)
        return Upstream(f"server:{parts.netloc}", target.url, api_key=Secret(key) if key else None,
                        route=server_route(target, self._settings), timeouts=timeouts, ca_bundle=config.ca_bundle,
                        max_connections=config.max_connections, keepalive_seconds=config.keepalive_seconds)


def server_route(target: Target, settings: Settings) -> Route:
    """`proxy: direct` goes straight; a proxy URL goes through it; unset follows HTTPS_PROXY/HTTP_PROXY/NO_PROXY."""
    if target.proxy == DIRECT:
        return Route(None, None, "direct")
    explicit = ProxySettings(url=target.proxy) if target.proxy else None
    return choose_route(target.url, explicit, settings.proxy_env)


async def servers_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the registry has loaded: open the servers it declares; close them all at the end."""
    pool = app[keys.servers]
    await pool.follow()
    yield
    await pool.close()
