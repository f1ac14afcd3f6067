"""Small statistics helpers."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(ordered: Sequence[float], pct: float, scale: float = 1.0) -> float | None:
    """The nearest-rank percentile of an already sorted sequence, times `scale`; None when empty."""
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, round(pct / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[rank] * scale


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b
