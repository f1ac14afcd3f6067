"""StoreChanges: notice what other processes (a worker, the CLI) committed to the store.

One task per app polls SQLite's `PRAGMA data_version`, which changes only when another connection
commits, and then calls every follower's reload. A locked or slow store skips a round: followers
keep serving what they hold in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from . import keys
from .storage import Store

log = logging.getLogger("chatkit_gateway.store")

Reload = Callable[[], Awaitable[None]]


class StoreChanges:
    def __init__(self, store: Store, interval: float) -> None:
        self.store = store
        self.interval = interval
        self._followers: list[tuple[str, Reload]] = []

    def follow(self, name: str, reload: Reload) -> None:
        """Call `reload` whenever another process has committed; `name` is for the log."""
        self._followers.append((name, reload))

    async def run(self) -> None:
        version = await self.store.data_version()
        while True:
            await asyncio.sleep(self.interval)
            try:
                latest = await self.store.data_version()
            except Exception as exc:  # sqlite3.OperationalError (locked), …
                log.warning("store not polled for changes: %s", exc, extra={"error": type(exc).__name__})
                continue
            if latest == version:
                continue
            version = latest
            for name, reload in self._followers:
                try:
                    await reload()
                except Exception as exc:
                    log.warning("%s not refreshed from the store, keeping what is in memory: %s", name, exc,
                                extra={"error": type(exc).__name__})


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the store, follow other processes' changes, close it last."""
    store = app[keys.store]
    await store.open()
    follower = asyncio.create_task(app[keys.store_changes].run(), name="store-changes")
    yield
    follower.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follower
    await store.close()
