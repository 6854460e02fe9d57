"""One plot per task: mean over seeds per optimizer, a confidence band, dashed references."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .curves import Curves, align
from .stats import confidence_band


@dataclass(frozen=True)
class Reference:
    """A published curve drawn dashed for comparison (e.g. the paper's figure, digitised)."""

    steps: np.ndarray
    values: np.ndarray
    label: str


def draw_task(
    task: str,
    curves: Curves,
    path: Path,
    confidence: float = 0.75,
    references: Sequence[Reference] = (),
    ylabel: str = "value",
    xlabel: str = "steps",
    yscale: str = "linear",
) -> None:
    """Write the task's plot to ``path`` (a PNG; the caller makes the write atomic).

    ``yscale="log"`` suits metrics that fall by orders of magnitude, such as perplexity.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    try:
        for (t, opt), seed_curves in sorted(curves.items()):
            if t != task:
                continue
            steps, values = align(seed_curves)
            lo, hi = confidence_band(values, confidence)
            n = values.shape[0]
            label = f"{opt} ({n} seed{'s' if n != 1 else ''})"
            (line,) = ax.plot(steps, values.mean(axis=0), label=label)
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.25, linewidth=0)
        for ref, style in zip(references, itertools.cycle(("--", ":", "-."))):
            ax.plot(ref.steps, ref.values, style, color="0.35", linewidth=1.2, label=ref.label)
        ax.set_title(f"{task}: mean evaluation {ylabel}, {confidence:.0%} CI band")
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and epochs are counts
        ax.set_ylabel(ylabel)
        ax.set_yscale(yscale)
        if yscale == "log":  # plain numbers (180, 200) rather than 1.8 x 10^2
            from matplotlib.ticker import FuncFormatter

            plain = FuncFormatter(lambda v, _: f"{v:g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110, format="png")
    finally:
        plt.close(fig)
