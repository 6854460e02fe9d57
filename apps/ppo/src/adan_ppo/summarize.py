"""PPO's summary: adan_repro's plots and tables of the evaluation return, plus Tianshou's curve.

What is PPO's own here: the metric (``mean_return`` of eval.csv, higher is better), the config
key naming the task (``env``), the labels, and the Tianshou v0.4.9 benchmark drawn dashed as a
reference. Everything else (alignment over seeds, bands, final/best ± std, steps to reach the
baseline, the Welch difference from the baseline) is :mod:`adan_repro.summarize`; its module
docstring defines every number.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from adan_repro import summarize as harness
from adan_repro.curves import Curves, load_long_csv, load_run_folders, write_long_csv
from adan_repro.plot import Reference
from adan_repro.stats import confidence_band  # noqa: F401 - part of this module's API

summarize = harness.summarize
METRIC = "mean_return"
TIANSHOU_NOTE = (
    "Dashed: Tianshou v0.4.9 PPO+Adam benchmark (10 seeds) on the gym v3 task, "
    "stochastic evaluation, lr decayed over 3,072,000 steps: an order-of-magnitude "
    "reference only (different env version, protocol and schedule)."
)
__all__ = ["load_grid_curves", "load_long_csv", "write_long_csv", "run", "summarize", "main"]


def load_grid_curves(root: Path, value: str = METRIC) -> Curves:
    """Curves from ``root/runs/**/eval.csv`` (task/optimizer/seed read from each config.json)."""
    return load_run_folders(root, value, task_key="env")


def tianshou_reference(tianshou_dir: Path, task: str) -> Reference | None:
    """Tianshou v0.4.9 PPO (Adam) curve for the v3/v2 counterpart of a v5 task, if present."""
    name = task.split("-v")[0]
    for version in ("v3", "v2"):
        path = Path(tianshou_dir) / f"{name}-{version}" / "result.json"
        if path.exists():
            records = [r for r in json.loads(path.read_text()) if r.get("Agent") == "PPO"]
            records.sort(key=lambda r: r["env_step"])
            return Reference(
                np.array([r["env_step"] for r in records]),
                np.array([r["rew"] for r in records]),
                f"Tianshou PPO+Adam, {name}-{version} (10 seeds)",
            )
    return None


def _clipped(ref: Reference, last_step: int) -> Reference:
    # Draw the reference only over the steps the runs cover (at least its first segment).
    keep = ref.steps <= max(last_step, ref.steps[1])
    return Reference(ref.steps[keep], ref.values[keep], ref.label)


def run(
    curves: Curves,
    out_dir: Path,
    baseline: str,
    confidence: float,
    title: str,
    tianshou_dir: Path | None = None,
    max_step_reference: bool = True,
    notes: list[str] = (),
) -> list[dict]:
    """Write the per-task PNGs and the summary files; return the summary rows.

    ``notes`` are extra lines (e.g. the evaluation protocol) listed at the end of summary.md.
    """
    notes = list(notes)
    references = {}
    if tianshou_dir:
        notes.append(TIANSHOU_NOTE)
        for task in {t for t, _ in curves}:
            ref = tianshou_reference(tianshou_dir, task)
            if ref is not None and max_step_reference:
                last = max(s for (t, _), sc in curves.items() if t == task
                           for pts in sc.values() for s, _ in pts)  # fmt: skip
                ref = _clipped(ref, last)
            if ref is not None:
                references[task] = [ref]
    return harness.run(
        curves,
        out_dir,
        baseline,
        confidence,
        title,
        direction="higher",
        label="return",
        xlabel="env steps",
        references=references,
        notes=notes,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m adan_ppo.summarize",
        description="Plot mean curves with a confidence band and write summary.md/summary.csv, "
        "with each optimizer's difference from the baseline (Welch's t-test).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    harness.add_summary_args(p, title="PPO on MuJoCo: Adam vs Adan")
    p.add_argument(
        "--tianshou-dir",
        type=Path,
        help="folder with Tianshou's <Env>-v3/result.json files, drawn as a dashed "
        "reference curve (gym v3 envs: order of magnitude only)",
    )
    p.add_argument(
        "--note",
        action="append",
        default=[],
        metavar="TEXT",
        help="a line listed at the end of summary.md, e.g. the run protocol the grid writes "
        "there (repeatable); useful with --curves-csv, which holds no configs",
    )
    args = p.parse_args(argv)
    return harness.run_cli(
        args,
        lambda: load_grid_curves(args.grid) if args.grid else load_long_csv(args.curves_csv),
        lambda curves, out: run(
            curves,
            out,
            args.baseline,
            args.confidence,
            args.title,
            args.tianshou_dir,
            notes=args.note,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
