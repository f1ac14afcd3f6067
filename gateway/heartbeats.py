"""Heartbeats: an SSE comment on every event stream that has been silent for `heartbeat_seconds`.

One timer looks after all open streams, instead of a sleeping task per stream: a task and its
frames are ~1 KB a stream and a timer re-armed per event (issue 9's memory target is 25 KB a stream).
A stream gets its comment within a quarter of the interval after it falls due.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from .exchange import Exchange

KEEP_ALIVE = b": keep-alive\n\n"


class Beat:
    """One open event stream; the relay sets `last_write` whenever it sends the client something."""

    __slots__ = ("response", "exchange", "last_write")

    def __init__(self, response: web.StreamResponse, exchange: Exchange) -> None:
        self.response = response
        self.exchange = exchange
        self.last_write = time.perf_counter()


class Heartbeats:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._beats: set[Beat] = set()
        self._writes: set[asyncio.Task[None]] = set()
        self._handle: asyncio.TimerHandle | None = None

    def start(self, response: web.StreamResponse, exchange: Exchange) -> Beat | None:
        """Keep this stream alive until `stop`; None when heartbeats are off."""
        if self.interval <= 0:
            return None
        beat = Beat(response, exchange)
        self._beats.add(beat)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.interval / 4, self._tick)
        return beat

    def stop(self, beat: Beat | None) -> None:
        if beat is not None:
            self._beats.discard(beat)

    def _tick(self) -> None:
        due = time.perf_counter() - self.interval
        for beat in self._beats:
            if beat.last_write <= due:
                beat.last_write = due + self.interval
                task = asyncio.create_task(self._send(beat))
                self._writes.add(task)
                task.add_done_callback(self._writes.discard)
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(self.interval / 4, self._tick) if self._beats else None

    @staticmethod
    async def _send(beat: Beat) -> None:
        # Checked as the write starts (the write reaches the socket before the first await inside it),
        # so the comment never lands in the middle of an event the relay is passing on.
        if beat.exchange.at_event_boundary:
            try:
                await beat.response.write(KEEP_ALIVE)
            except (ConnectionResetError, RuntimeError):
                pass  # the client left, or the stream ended meanwhile: the relay sees to it

    async def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        for task in list(self._writes):
            task.cancel()
        self._beats.clear()
