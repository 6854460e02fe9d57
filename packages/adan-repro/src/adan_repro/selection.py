"""Model selection over a run's evaluations: pick the row that is best on one metric, report
another metric of that same row.

Selecting on the test set and reporting that test value (as some published setups do) and
selecting on the validation set and reporting test once (the clean protocol) are both calls of
:func:`select`, so the two numbers always come from the same rows by the same rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .summarize import check_direction


@dataclass(frozen=True)
class Selection:
    """The chosen row's step, the value it was chosen on and the value reported."""

    step: int
    selected_on: str
    selected_value: float
    reported: str
    value: float


def select(
    rows: Sequence[dict], select_on: str, report: str, direction: str = "lower"
) -> Selection:
    """The row best on ``select_on`` (the earliest of equals), reporting its ``report``.

    Raises ValueError for no rows, a missing column, or when no row has a finite
    ``select_on`` value.
    """
    check_direction(direction)
    if not rows:
        raise ValueError("no evaluations to select from")
    for col in ("step", select_on, report):
        if col not in rows[0]:
            raise ValueError(f"unknown column {col!r}; the rows have {', '.join(rows[0])}")
    finite = [r for r in rows if math.isfinite(float(r[select_on]))]
    if not finite:
        raise ValueError(f"no row has a finite {select_on!r}")
    sign = 1.0 if direction == "lower" else -1.0
    best = min(finite, key=lambda r: (sign * float(r[select_on]), int(r["step"])))
    return Selection(
        int(best["step"]), select_on, float(best[select_on]), report, float(best[report])
    )
