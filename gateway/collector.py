"""The cyclic garbage collector's policy for a serving process (`policy()`, a cleanup_ctx).

Python's default runs a full collection after every ten young ones, and a full collection walks
every live object: with a thousand streams open (some 90,000 objects) each one stopped every stream
for 20-30 ms, several times a run (bench/, axis 4). So the heap built at start-up, which lives as long
as the process, is frozen out of the collector's sight, and full collections come after 1,000 young
ones. Requests and streams, failed ones included, leave no cyclic garbage (tests/test_garbage.py), so
waiting longer frees the same; a full collection on a timer as well bounds what a cycle on some other
path could keep.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable

from aiohttp import web

FULL_COLLECTION_EVERY = 1000  # young collections between two full ones (Python's default: 10)
FULL_COLLECTION_SECONDS = 600.0  # and one at least this often


def policy(every_seconds: float = FULL_COLLECTION_SECONDS) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx to append last, once every other resource of the app has opened."""

    async def collector_ctx(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        saved = gc.get_threshold()
        gc.collect()
        gc.freeze()  # frozen objects are still freed by reference counting; only cycles among them would stay
        gc.set_threshold(saved[0], saved[1], FULL_COLLECTION_EVERY)

        def collect() -> None:
            nonlocal timer
            gc.collect()
            timer = loop.call_later(every_seconds, collect)

        timer = loop.call_later(every_seconds, collect)
        yield
        timer.cancel()
        gc.set_threshold(*saved)
        gc.unfreeze()

    return collector_ctx
