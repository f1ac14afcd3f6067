"""Exchange: what happened between the gateway and its upstream for one request.

Handlers fill it in; plugins read it once the handler returns (for a stream, once it ends).
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(slots=True)
class Exchange:
    started: float  # time.perf_counter() when the gateway got the request
    upstream: str | None = None  # the upstream's name, a bounded label
    upstream_status: int | None = None
    upstream_wait: float = 0.0  # seconds spent waiting on the upstream (headers and body reads)
    first_byte_at: float | None = None  # perf_counter of the first body chunk sent to the client
    bytes_in: int = 0
    bytes_out: int = 0
    events: int = 0  # SSE events relayed
    event_stream: bool = False
    error: str | None = None  # a stable code when the exchange failed (upstream_disconnected, …)
    _tail: bytes = b""  # the last two bytes sent, to find frame ends split across chunks

    @classmethod
    def begin(cls) -> Exchange:
        return cls(started=time.perf_counter())

    def count_chunk(self, chunk: bytes) -> None:
        """Count bytes and, on event streams, the SSE events the chunk completes."""
        if self.first_byte_at is None:
            self.first_byte_at = time.perf_counter()
        self.bytes_out += len(chunk)
        if self.event_stream:
            self.events += chunk.count(b"\n\n") + chunk.count(b"\r\n\r\n")
            if self._tail[-1:] == b"\n" and self._tail != b"\n\n" and chunk[:1] == b"\n":
                self.events += 1
            self._tail = chunk[-2:] if len(chunk) >= 2 else (self._tail + chunk)[-2:]

    @property
    def at_event_boundary(self) -> bool:
        """True when the last chunk ended an SSE frame, so a comment line can go in between."""
        return self.bytes_out == 0 or self._tail == b"\n\n"

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    def ttfb_ms(self) -> float | None:
        return None if self.first_byte_at is None else (self.first_byte_at - self.started) * 1000.0
