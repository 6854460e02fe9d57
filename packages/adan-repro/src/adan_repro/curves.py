"""Learning curves per (task, optimizer, seed), read from run folders or from a long CSV.

``Curves`` maps ``(task, optimizer)`` to ``{seed: [(step, value), ...]}`` with steps sorted. A
long CSV has one row per point, with columns ``task,optimizer,seed,step,value``.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from . import rundir
from .atomic import write_csv_atomic

Curves = dict[tuple[str, str], dict[int, list[tuple[int, float]]]]
LONG_COLUMNS = ("task", "optimizer", "seed", "step", "value")


def load_run_folders(
    root: Path,
    metric: str,
    task_key: str = "task",
    optimizer_key: str = "optimizer",
    seed_key: str = "seed",
) -> Curves:
    """Curves of ``metric`` from ``root/runs/**/eval.csv``; task, optimizer and seed come from
    each run's ``config.json`` under the given keys.

    Raises ValueError naming the columns on offer when an evaluation CSV lacks ``metric``.
    """
    curves: Curves = defaultdict(dict)
    for eval_csv in sorted(Path(root).glob(f"runs/**/{rundir.EVAL}")):
        config_path = eval_csv.parent / rundir.CONFIG
        if not config_path.exists():
            continue
        config = json.loads(config_path.read_text())
        with open(eval_csv, newline="") as f:
            reader = csv.DictReader(f)
            columns = [c for c in reader.fieldnames or () if c != "step"]
            if metric not in columns:
                raise ValueError(
                    f"unknown metric {metric!r}: {eval_csv} has {', '.join(columns) or 'none'}"
                )
            points = sorted((int(r["step"]), float(r[metric])) for r in reader)
        if points:
            key = (str(config[task_key]), str(config[optimizer_key]))
            curves[key][int(config[seed_key])] = points
    return dict(curves)


def load_long_csv(path: Path) -> Curves:
    """Curves from a CSV with columns task, optimizer, seed, step, value."""
    curves: dict = defaultdict(lambda: defaultdict(list))
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = set(LONG_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"{path}: missing columns {sorted(missing)}; need {', '.join(LONG_COLUMNS)}"
            )
        for r in reader:
            curves[(r["task"], r["optimizer"])][int(r["seed"])].append(
                (int(r["step"]), float(r["value"]))
            )
    return {k: {s: sorted(p) for s, p in v.items()} for k, v in curves.items()}


def long_rows(curves: Curves) -> list[tuple]:
    """One row per (task, optimizer, seed, step), sorted, for a long CSV."""
    return [
        (task, opt, seed, step, value)
        for (task, opt), seed_curves in sorted(curves.items())
        for seed, points in sorted(seed_curves.items())
        for step, value in points
    ]


def write_long_csv(curves: Curves, path: Path) -> None:
    """The inverse of :func:`load_long_csv`."""
    write_csv_atomic(Path(path), LONG_COLUMNS, long_rows(curves))


def align(seed_curves: dict[int, list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values[seed, step])`` on the steps every seed has (seeds in sorted order)."""
    common = set.intersection(*({s for s, _ in pts} for pts in seed_curves.values()))
    steps = np.array(sorted(common), dtype=np.int64)
    values = np.array(
        [[dict(pts)[s] for s in steps] for _, pts in sorted(seed_curves.items())], dtype=np.float64
    ).reshape(len(seed_curves), len(steps))
    return steps, values


def restrict(seed_curves: dict[int, list[tuple[int, float]]], steps: set[int]) -> dict:
    """The same curves with only the points at ``steps``."""
    return {seed: [(s, v) for s, v in pts if s in steps] for seed, pts in seed_curves.items()}


def tasks(curves: Curves) -> list[str]:
    """The tasks in sorted order."""
    return sorted({t for t, _ in curves})
