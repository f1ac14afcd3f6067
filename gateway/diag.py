"""The buffering self-check: GET /api/chatkit/_diag/stream sends timestamped SSE events at a steady pace.

`python -m gateway doctor` reads it through the public URL: events that left the gateway apart but
arrive together show that something on the path (nginx, a load balancer, a CDN) buffers streams.
It runs behind the plugin chain like every gateway route, so a configured auth plugin applies.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from aiohttp import web

from . import errors, keys
from .relay import STREAM_HEADERS

ROUTE = "/api/chatkit/_diag/stream"
EVENTS = 10
INTERVAL_SECONDS = 0.1


def diag_event(seq: int) -> bytes:
    """One SSE frame: its sequence number and when it left, by the wall clock and the monotonic clock."""
    data = {"seq": seq, "of": EVENTS, "interval": INTERVAL_SECONDS, "wall_time": time.time(),
            "monotonic": time.monotonic(), "pid": os.getpid()}
    return f"id: {seq}\nevent: diag\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def diag_stream(request: web.Request) -> web.StreamResponse:
    if request.app.get(keys.auth_required) and keys.principal not in request:
        raise errors.Unauthenticated()
    exchange = request[keys.exchange]
    exchange.event_stream = True
    observers = request.get(keys.chunk_observers, ())  # plugins see this stream as they see a relayed one
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", **STREAM_HEADERS})
    await response.prepare(request)
    started = time.monotonic()
    for seq in range(EVENTS):
        await asyncio.sleep(max(0.0, started + seq * INTERVAL_SECONDS - time.monotonic()))
        frame = diag_event(seq)
        exchange.count_chunk(frame)
        for observe in observers:
            observe(frame)
        await response.write(frame)
    await response.write_eof()
    return response
