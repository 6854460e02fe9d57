"""Model selection: best row on one metric, another metric reported, ties and errors."""

from __future__ import annotations

import math

import pytest
from adan_repro.selection import select

ROWS = [
    {"step": 1, "valid": 5.0, "test": 6.0, "acc": 0.5},
    {"step": 2, "valid": 3.0, "test": 4.5, "acc": 0.7},
    {"step": 3, "valid": 3.0, "test": 4.0, "acc": 0.9},  # ties step 2 on valid
    {"step": 4, "valid": math.nan, "test": 3.0, "acc": 0.8},
]


def test_select_on_one_metric_report_another():
    s = select(ROWS, "valid", "test")
    assert (s.step, s.selected_value, s.value) == (2, 3.0, 4.5)  # the earliest of equals
    assert select(ROWS, "test", "test").step == 4  # selection on test: a different row
    assert select(ROWS, "acc", "test", direction="higher").value == 4.0


def test_nan_rows_are_never_selected_and_errors_are_clear():
    assert select(ROWS, "valid", "test").step != 4
    with pytest.raises(ValueError, match="no evaluations"):
        select([], "valid", "test")
    with pytest.raises(ValueError, match="unknown column 'loss'"):
        select(ROWS, "loss", "test")
    with pytest.raises(ValueError, match="no row has a finite 'valid'"):
        select([{"step": 1, "valid": math.nan, "test": 1.0}], "valid", "test")
    with pytest.raises(ValueError, match="direction"):
        select(ROWS, "valid", "test", direction="up")


def test_plot_can_use_a_log_axis(tmp_path, monkeypatch):
    """Perplexity-like metrics fall by orders of magnitude: draw_task takes yscale="log"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.axes
    from adan_repro import plot

    seen = []
    real = matplotlib.axes.Axes.set_yscale
    monkeypatch.setattr(
        matplotlib.axes.Axes, "set_yscale", lambda ax, v, **kw: (seen.append(v), real(ax, v, **kw))
    )
    curves = {("t", "adam"): {1: [(1, 900.0), (2, 90.0)], 2: [(1, 800.0), (2, 95.0)]}}
    plot.draw_task("t", curves, tmp_path / "t.png", yscale="log")
    assert seen == ["log"] and (tmp_path / "t.png").stat().st_size > 0
