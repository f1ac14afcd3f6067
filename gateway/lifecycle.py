"""Lifecycle: readiness and shutdown state of this process."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Lifecycle:
    shutting_down: bool = False
    active_streams: int = 0
