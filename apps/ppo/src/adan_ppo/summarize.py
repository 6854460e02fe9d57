"""Aggregate learning curves per (task, optimizer, seed): plots with a confidence band and tables.

Generic: input is a set of curves ``(task, optimizer, seed) -> [(step, value), ...]``, read from
either a grid output directory (``runs/<task>/<optimizer>/seed<N>/eval.csv`` + ``config.json``)
or a long CSV with columns ``task,optimizer,seed,step,value``. Outputs in ``--out``:

- ``<task>.png``: mean over seeds against steps, one line per optimizer, with a two-sided
  ``--confidence`` Student-t interval of the mean (the Adan paper's figure uses 75 %);
- ``summary.csv`` / ``summary.md``: per task and optimizer, the final and the best mean return
  with the std over seeds, and the steps each optimizer needs to reach the baseline's final mean.

Definitions (also written into summary.md):
- Seeds are aligned on the evaluation steps they all have; ``final`` is the last such step.
- ``std`` is the population std over seeds (numpy default, as in Tianshou's benchmark files).
- ``best`` is the maximum over steps of the seed-mean curve, with the std at that step.
- ``steps_to_baseline_final``: first step at which the optimizer's mean curve reaches the
  baseline optimizer's final mean (empty if never).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from .atomic import write_csv_atomic, write_text_atomic
from .tstats import t_ppf

Curves = dict[tuple[str, str], dict[int, list[tuple[int, float]]]]

SUMMARY_HEADER = (
    "task",
    "optimizer",
    "n_seeds",
    "final_step",
    "final_mean",
    "final_std",
    "best_mean",
    "best_std",
    "best_step",
    "baseline",
    "steps_to_baseline_final",
)


def load_grid_curves(root: Path, value: str = "mean_return") -> Curves:
    """Curves from ``root/runs/**/eval.csv`` (task/optimizer/seed read from each config.json)."""
    curves: Curves = defaultdict(dict)
    for eval_csv in sorted(Path(root).glob("runs/**/eval.csv")):
        config_path = eval_csv.parent / "config.json"
        if not config_path.exists():
            continue
        config = json.loads(config_path.read_text())
        with open(eval_csv, newline="") as f:
            points = [(int(r["step"]), float(r[value])) for r in csv.DictReader(f)]
        if points:
            curves[(config["env"], config["optimizer"])][int(config["seed"])] = points
    return dict(curves)


def load_long_csv(path: Path) -> Curves:
    """Curves from a CSV with columns task, optimizer, seed, step, value."""
    curves: Curves = defaultdict(lambda: defaultdict(list))
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"task", "optimizer", "seed", "step", "value"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"{path}: missing columns {sorted(missing)}; need task, optimizer, "
                "seed, step, value"
            )
        for r in reader:
            curves[(r["task"], r["optimizer"])][int(r["seed"])].append(
                (int(r["step"]), float(r["value"]))
            )
    return {k: {s: sorted(p) for s, p in v.items()} for k, v in curves.items()}


def write_long_csv(curves: Curves, path: Path) -> None:
    """The inverse of :func:`load_long_csv`: one row per (task, optimizer, seed, step)."""
    rows = (
        (task, opt, seed, step, value)
        for (task, opt), seed_curves in sorted(curves.items())
        for seed, points in sorted(seed_curves.items())
        for step, value in points
    )
    write_csv_atomic(Path(path), ("task", "optimizer", "seed", "step", "value"), rows)


def align(seed_curves: dict[int, list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values[seed, step])`` on the steps every seed has."""
    common = set.intersection(*({s for s, _ in pts} for pts in seed_curves.values()))
    steps = np.array(sorted(common), dtype=np.int64)
    values = np.array(
        [[dict(pts)[s] for s in steps] for _, pts in sorted(seed_curves.items())], dtype=np.float64
    ).reshape(len(seed_curves), len(steps))
    return steps, values


def confidence_band(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Student-t interval of the mean over axis 0 (no band for a single seed)."""
    n = values.shape[0]
    mean = values.mean(axis=0)
    if n < 2:
        return mean, mean
    half = t_ppf(0.5 + confidence / 2.0, n - 1) * values.std(axis=0, ddof=1) / math.sqrt(n)
    return mean - half, mean + half


def summarize(curves: Curves, baseline: str = "adam") -> list[dict]:
    """One summary row per (task, optimizer); see the module docstring for definitions."""
    rows = []
    tasks = sorted({t for t, _ in curves})
    for task in tasks:
        stats = {}
        for (t, opt), seed_curves in sorted(curves.items()):
            if t != task:
                continue
            steps, values = align(seed_curves)
            if len(steps) == 0:
                continue
            mean, std = values.mean(axis=0), values.std(axis=0)
            best = int(np.argmax(mean))
            stats[opt] = (steps, mean)
            rows.append(
                {
                    "task": task,
                    "optimizer": opt,
                    "n_seeds": values.shape[0],
                    "final_step": int(steps[-1]),
                    "final_mean": float(mean[-1]),
                    "final_std": float(std[-1]),
                    "best_mean": float(mean[best]),
                    "best_std": float(std[best]),
                    "best_step": int(steps[best]),
                    "baseline": baseline
                    if baseline in {o for t2, o in curves if t2 == task}
                    else "",
                    "steps_to_baseline_final": "",
                }
            )
        if baseline in stats:
            target = stats[baseline][1][-1]
            for row in rows:
                if row["task"] == task and row["optimizer"] in stats:
                    steps, mean = stats[row["optimizer"]]
                    reached = np.nonzero(mean >= target)[0]
                    row["steps_to_baseline_final"] = int(steps[reached[0]]) if len(reached) else ""
    return rows


def plot_task(
    task: str,
    curves: Curves,
    out_png: Path,
    confidence: float = 0.75,
    reference: tuple[np.ndarray, np.ndarray, np.ndarray, str] | None = None,
) -> None:
    """Mean curve per optimizer with its confidence band; optional dashed reference curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (t, opt), seed_curves in sorted(curves.items()):
        if t != task:
            continue
        steps, values = align(seed_curves)
        lo, hi = confidence_band(values, confidence)
        (line,) = ax.plot(steps, values.mean(axis=0), label=f"{opt} ({values.shape[0]} seeds)")
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.25, linewidth=0)
    if reference is not None:
        r_steps, r_mean, r_std, label = reference
        ax.plot(r_steps, r_mean, "--", color="0.4", linewidth=1, label=label)
    ax.set_title(f"{task}: mean evaluation return, {confidence:.0%} CI band")
    ax.set_xlabel("env steps")
    ax.set_ylabel("return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = out_png.with_name(f".{out_png.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out_png)


def _fmt(x, digits: int = 1) -> str:
    return "" if x == "" else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def write_summary(rows: list[dict], out_dir: Path, title: str, notes: list[str] = ()) -> None:
    write_csv_atomic(
        out_dir / "summary.csv",
        SUMMARY_HEADER,
        ([_fmt(r[k], 2) for k in SUMMARY_HEADER] for r in rows),
    )
    lines = [
        f"# {title}",
        "",
        "| task | optimizer | seeds | final step | final return | best return (step) | "
        "steps to reach baseline's final |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reach = r["steps_to_baseline_final"]
        reach = "" if not r["baseline"] else (f"{reach:,}" if reach != "" else "not reached")
        lines.append(
            f"| {r['task']} | {r['optimizer']} | {r['n_seeds']} | {r['final_step']:,} | "
            f"{r['final_mean']:.1f} ± {r['final_std']:.1f} | {r['best_mean']:.1f} ± "
            f"{r['best_std']:.1f} ({r['best_step']:,}) | {reach} |"
        )
    lines += [
        "",
        "Mean ± std over seeds (population std). Seeds are aligned on common evaluation "
        "steps; 'final' is the last of them, 'best' the maximum of the seed-mean curve. "
        "'Steps to reach baseline's final': first evaluation step at which the mean curve "
        "is at least the baseline optimizer's final mean.",
        "",
    ]
    lines += [f"- {n}" for n in notes]
    write_text_atomic(out_dir / "summary.md", "\n".join(lines).rstrip() + "\n")


def tianshou_reference(tianshou_dir: Path, task: str):
    """Tianshou v0.4.9 PPO (Adam) curve for the v3/v2 counterpart of a v5 task, if present."""
    name = task.split("-v")[0]
    for version in ("v3", "v2"):
        path = Path(tianshou_dir) / f"{name}-{version}" / "result.json"
        if path.exists():
            records = [r for r in json.loads(path.read_text()) if r.get("Agent") == "PPO"]
            records.sort(key=lambda r: r["env_step"])
            return (
                np.array([r["env_step"] for r in records]),
                np.array([r["rew"] for r in records]),
                np.array([r["rew_std"] for r in records]),
                f"Tianshou PPO+Adam, {name}-{version} (10 seeds)",
            )
    return None


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
    if not curves:
        raise ValueError("no curves found: nothing to summarize (did any run write eval.csv?)")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summarize(curves, baseline)
    notes = list(notes)
    if tianshou_dir:
        notes.append(
            "Dashed: Tianshou v0.4.9 PPO+Adam benchmark (10 seeds) on the gym v3 task, "
            "stochastic evaluation, lr decayed over 3,072,000 steps: an order-of-magnitude "
            "reference only (different env version, protocol and schedule)."
        )
    for task in sorted({t for t, _ in curves}):
        ref = tianshou_reference(tianshou_dir, task) if tianshou_dir else None
        if ref is not None and max_step_reference:
            last = max(
                s
                for (t, _), sc in curves.items()
                if t == task
                for pts in sc.values()
                for s, _ in pts
            )
            keep = ref[0] <= max(last, ref[0][1])
            ref = (ref[0][keep], ref[1][keep], ref[2][keep], ref[3])
        plot_task(task, curves, out_dir / f"{task}.png", confidence, ref)
        notes.append(f"[{task}.png]({task}.png)")
    write_summary(rows, out_dir, title, notes)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m adan_ppo.summarize",
        description="Plot mean curves with a confidence band and write summary.md/summary.csv.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--grid", type=Path, help="grid output directory (holds runs/)")
    src.add_argument(
        "--curves-csv", type=Path, help="long CSV with columns task,optimizer,seed,step,value"
    )
    p.add_argument("--out", type=Path, help="where to write (default: the --grid directory)")
    p.add_argument("--baseline", default="adam", help="optimizer the others are compared with")
    p.add_argument("--confidence", type=float, default=0.75, help="confidence of the band")
    p.add_argument("--title", default="PPO on MuJoCo: Adam vs Adan", help="summary.md title")
    p.add_argument(
        "--tianshou-dir",
        type=Path,
        help="folder with Tianshou's <Env>-v3/result.json files, drawn as a dashed "
        "reference curve (gym v3 envs: order of magnitude only)",
    )
    p.add_argument(
        "--export-curves",
        type=Path,
        metavar="CSV",
        help="also write all curves as a long CSV (readable again with --curves-csv)",
    )
    args = p.parse_args(argv)
    if not 0 < args.confidence < 1:
        p.error("--confidence must be in (0, 1)")
    try:
        curves = load_grid_curves(args.grid) if args.grid else load_long_csv(args.curves_csv)
        out = args.out or args.grid or Path(".")
        rows = run(curves, out, args.baseline, args.confidence, args.title, args.tianshou_dir)
        if args.export_curves:
            write_long_csv(curves, args.export_curves)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((out / "summary.md").read_text())
    print(f"wrote {len(rows)} rows to {out / 'summary.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
