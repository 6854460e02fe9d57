"""Progress-line pieces that never print ``nan``: a rate that is not measured yet says so."""

from __future__ import annotations

import math


def rate(count: float, seconds: float, unit: str = "steps/s") -> str:
    """``"1234 steps/s"``, or ``"n/a steps/s"`` when nothing was counted or timed yet."""
    if count <= 0 or seconds <= 0 or not math.isfinite(count / seconds):
        return f"n/a {unit}"
    return f"{count / seconds:.0f} {unit}"


def measured_rate(count: float, seconds: float) -> float:
    """The rate for a table (``nan`` when not measurable: a CSV cell may hold it, a line not)."""
    return count / seconds if count > 0 and seconds > 0 else math.nan


def elapsed(seconds: float) -> str:
    """``"42s"``, ``"12m05s"`` or ``"3h07m"``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
