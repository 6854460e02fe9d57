"""Summaries of a grid: per-task plots, ``summary.md`` and ``summary.csv``.

Input is a set of curves (see :mod:`adan_repro.curves`) and the direction of the metric
(``higher`` is better for a return or an accuracy, ``lower`` for a loss or a perplexity).

Definitions (also written into summary.md):

- Seeds are aligned on the evaluation steps they all have; ``final`` is the last such step.
- ``std`` is the population std over seeds (numpy default, as in Tianshou's benchmark files).
- ``best`` is the best point of the seed-mean curve (maximum or minimum by direction), with the
  std at that step.
- ``steps_to_baseline_final``: first step at which the optimizer's mean curve is at least as
  good as the baseline's final mean (empty if never).
- The difference from the baseline, per task and optimizer, is taken on the per-seed final
  values and on the per-seed areas under the curve (trapezoid area over the steps both
  optimizers share, divided by their span: the curve's average over the run). Its 95 %
  confidence interval and two-sided p-value come from Welch's t-test
  (``scipy.stats.ttest_ind(equal_var=False)``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from . import curves as C
from .atomic import Batch, csv_writer, text_writer
from .plot import Reference, draw_task
from .rundir import prepare_dir
from .stats import Difference, area_under_curve, welch

DIRECTIONS = ("higher", "lower")
ALPHA = 0.05  # the level the plain-language verdict uses
CI_LEVEL = 0.95  # of the difference from the baseline
BASE_HEADER = (
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
# Appended after the original columns, so readers of older summary.csv files keep working.
DIFF_HEADER = (
    "auc_mean",
    "auc_std",
    "final_diff",
    "final_diff_ci_low",
    "final_diff_ci_high",
    "final_p",
    "auc_diff",
    "auc_diff_ci_low",
    "auc_diff_ci_high",
    "auc_p",
)
SUMMARY_HEADER = BASE_HEADER + DIFF_HEADER


def check_direction(direction: str) -> None:
    """Raise ValueError unless ``direction`` is ``higher`` or ``lower``."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'higher' or 'lower' (is better), got {direction!r}")


def _better_or_equal(values: np.ndarray, target: float, direction: str) -> np.ndarray:
    return values >= target if direction == "higher" else values <= target


def summarize(curves: C.Curves, baseline: str = "adam", direction: str = "higher") -> list[dict]:
    """One row per (task, optimizer) with the columns of ``SUMMARY_HEADER``.

    Rows of an optimizer other than the baseline also hold the two :class:`Difference` objects
    behind the ``final_*`` and ``auc_*`` columns, under ``_final`` and ``_auc``.
    """
    check_direction(direction)
    pick = np.argmax if direction == "higher" else np.argmin
    rows = []
    for task in C.tasks(curves):
        stats = {}
        opts = {o for t, o in curves if t == task}
        for (t, opt), seed_curves in sorted(curves.items()):
            if t != task:
                continue
            steps, values = C.align(seed_curves)
            if len(steps) == 0:
                continue
            mean, std = values.mean(axis=0), values.std(axis=0)
            best = int(pick(mean))
            auc = area_under_curve(steps, values)
            stats[opt] = (steps, mean)
            row = dict.fromkeys(SUMMARY_HEADER, "")
            row.update(
                task=task,
                optimizer=opt,
                n_seeds=values.shape[0],
                final_step=int(steps[-1]),
                final_mean=float(mean[-1]),
                final_std=float(std[-1]),
                best_mean=float(mean[best]),
                best_std=float(std[best]),
                best_step=int(steps[best]),
                baseline=baseline if baseline in opts else "",
                auc_mean=float(auc.mean()),
                auc_std=float(auc.std()),
            )
            rows.append(row)
        if baseline not in stats:
            continue
        target = stats[baseline][1][-1]
        for row in rows:
            if row["task"] == task and row["optimizer"] in stats:
                steps, mean = stats[row["optimizer"]]
                reached = np.nonzero(_better_or_equal(mean, target, direction))[0]
                row["steps_to_baseline_final"] = int(steps[reached[0]]) if len(reached) else ""
            if row["task"] == task and row["optimizer"] != baseline:
                final, auc = compare(
                    curves[(task, row["optimizer"])], curves[(task, baseline)], CI_LEVEL
                )
                row["_final"], row["_auc"] = final, auc
                for name, d in (("final", final), ("auc", auc)):
                    row[f"{name}_diff"] = d.diff
                    row[f"{name}_diff_ci_low"] = "" if d.ci_low is None else d.ci_low
                    row[f"{name}_diff_ci_high"] = "" if d.ci_high is None else d.ci_high
                    row[f"{name}_p"] = "" if d.p is None else d.p
    return rows


def compare(
    opt_curves: dict[int, list[tuple[int, float]]],
    base_curves: dict[int, list[tuple[int, float]]],
    confidence: float = CI_LEVEL,
) -> tuple[Difference, Difference]:
    """Welch differences (optimizer - baseline) of the final values and of the areas, on the
    evaluation steps every seed of both optimizers has."""
    opt_steps, _ = C.align(opt_curves)
    base_steps, _ = C.align(base_curves)
    common = set(opt_steps.tolist()) & set(base_steps.tolist())
    if not common:
        raise ValueError("the optimizer and the baseline share no evaluation step")
    steps_a, a = C.align(C.restrict(opt_curves, common))
    _, b = C.align(C.restrict(base_curves, common))
    final = welch(a[:, -1], b[:, -1], confidence)
    auc = welch(area_under_curve(steps_a, a), area_under_curve(steps_a, b), confidence)
    return final, auc


def verdict(d: Difference, opt: str, baseline: str, direction: str) -> str:
    """A plain sentence on what the seeds say about ``opt`` against ``baseline``."""
    if not d.testable:
        return f"{d.reason}."
    if d.p < ALPHA:
        better = (d.diff > 0) == (direction == "higher")
        return (
            f"{opt} is {'better' if better else 'worse'} than {baseline} "
            f"(p = {d.p:.3g} < {ALPHA:g})."
        )
    return (
        f"the seeds cannot tell {opt} from {baseline} (p = {d.p:.3g}; the "
        f"{d.confidence:.0%} interval includes 0)."
    )


def _fmt(x, digits: int) -> str:
    return "" if x == "" else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def _csv_cell(key: str, value, digits: int) -> str:
    if key.endswith("_p") and value != "":
        return f"{value:.4g}"
    return _fmt(value, digits)


def summary_csv_rows(rows: list[dict], digits: int = 2) -> list[list[str]]:
    """The cells of summary.csv (values rounded to ``digits``, p-values to 4 digits)."""
    return [[_csv_cell(k, r[k], digits) for k in SUMMARY_HEADER] for r in rows]


def summary_markdown(
    rows: list[dict],
    title: str,
    label: str = "value",
    direction: str = "higher",
    digits: int = 1,
    notes: Sequence[str] = (),
) -> str:
    """The text of summary.md."""
    f = f".{digits}f"
    lines = [
        f"# {title}",
        "",
        f"| task | optimizer | seeds | final step | final {label} | best {label} (step) | "
        "steps to reach baseline's final |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reach = r["steps_to_baseline_final"]
        reach = "" if not r["baseline"] else (f"{reach:,}" if reach != "" else "not reached")
        lines.append(
            f"| {r['task']} | {r['optimizer']} | {r['n_seeds']} | {r['final_step']:,} | "
            f"{r['final_mean']:{f}} ± {r['final_std']:{f}} | {r['best_mean']:{f}} ± "
            f"{r['best_std']:{f}} ({r['best_step']:,}) | {reach} |"
        )
    best = "maximum" if direction == "higher" else "minimum"
    reach_word = "at least" if direction == "higher" else "at most"
    lines += [
        "",
        "Mean ± std over seeds (population std). Seeds are aligned on common evaluation "
        f"steps; 'final' is the last of them, 'best' the {best} of the seed-mean curve. "
        "'Steps to reach baseline's final': first evaluation step at which the mean curve "
        f"is {reach_word} the baseline optimizer's final mean.",
        "",
    ]
    compared = [r for r in rows if "_final" in r]
    if compared:
        lines += _difference_section(compared, label, direction, digits)
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"


def _difference_section(rows: list[dict], label: str, direction: str, digits: int) -> list[str]:
    f = f".{digits}f"
    better = "higher" if direction == "higher" else "lower"
    lines = [
        "## Difference from the baseline",
        "",
        "| task | optimizer − baseline | quantity | difference | 95% CI | Welch p | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    sentences = []
    for r in rows:
        for name, d in ((f"final {label}", r["_final"]), ("area under the curve", r["_auc"])):
            ci = "" if d.ci_low is None else f"[{d.ci_low:{f}}, {d.ci_high:{f}}]"
            p = "" if d.p is None else f"{d.p:.3g}"
            lines.append(
                f"| {r['task']} | {r['optimizer']} − {r['baseline']} | {name} | "
                f"{d.diff:+{f}} | {ci} | {p} | {d.n_a} vs {d.n_b} |"
            )
            sentences.append(
                f"- {r['task']}, {name}: " + verdict(d, r["optimizer"], r["baseline"], direction)
            )
    lines += [
        "",
        f"{better.capitalize()} is better. Difference: mean over the optimizer's seeds minus "
        "mean over the baseline's, of the final value and of the area under the curve "
        "(trapezoid area over the evaluation steps both share, divided by their span: the "
        "average over the run). 95% confidence interval and two-sided p-value from Welch's "
        "unequal-variance t-test (scipy.stats.ttest_ind, equal_var=False), which treats the "
        "seeds of the two optimizers as independent samples.",
        "",
        *sentences,
        "",
    ]
    return lines


def run(
    curves: C.Curves,
    out_dir: Path,
    baseline: str = "adam",
    confidence: float = 0.75,
    title: str = "Optimizer comparison",
    *,
    direction: str = "higher",
    label: str = "value",
    xlabel: str = "steps",
    digits: int = 1,
    references: Mapping[str, Sequence[Reference]] | None = None,
    notes: Sequence[str] = (),
) -> list[dict]:
    """Write ``<task>.png`` per task, ``summary.csv`` and ``summary.md``; return the rows.

    Everything is computed and checked before the first file is written, and the files are
    put in place together (:class:`adan_repro.atomic.Batch`): an error leaves the old ones.
    """
    check_direction(direction)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not curves:
        raise ValueError("no curves found: nothing to summarize (did any run write eval.csv?)")
    out_dir = prepare_dir(out_dir)
    rows = summarize(curves, baseline, direction)
    notes = list(notes)
    task_list = C.tasks(curves)
    notes += [f"[{task}.png]({task}.png)" for task in task_list]
    with Batch() as batch:
        for task in task_list:
            refs = (references or {}).get(task, ())
            batch.add(
                out_dir / f"{task}.png",
                lambda p, task=task, refs=refs: draw_task(
                    task, curves, p, confidence, refs, label, xlabel
                ),
            )
        batch.add(out_dir / "summary.csv", csv_writer(SUMMARY_HEADER, summary_csv_rows(rows)))
        text = summary_markdown(rows, title, label, direction, digits, notes)
        batch.add(out_dir / "summary.md", text_writer(text))
    return rows


def load_references(path: Path) -> dict[str, list[Reference]]:
    """Reference curves from a CSV with columns task, label, step, value."""
    grouped: dict[tuple[str, str], list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"task", "label", "step", "value"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"{path}: missing columns {sorted(missing)}; need task, label, step, value"
            )
        for r in reader:
            point = (int(r["step"]), float(r["value"]))
            grouped.setdefault((r["task"], r["label"]), []).append(point)
    refs: dict[str, list[Reference]] = {}
    for (task, label), pts in sorted(grouped.items()):
        pts.sort()
        refs.setdefault(task, []).append(
            Reference(np.array([s for s, _ in pts]), np.array([v for _, v in pts]), label)
        )
    return refs


def add_summary_args(p: argparse.ArgumentParser, title: str = "Optimizer comparison") -> None:
    """The flags every summary CLI shares: the input (--grid or --curves-csv), --out,
    --baseline, --confidence, --title and --export-curves."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--grid", type=Path, help="grid output directory (holds runs/)")
    src.add_argument(
        "--curves-csv", type=Path, help="long CSV with columns task,optimizer,seed,step,value"
    )
    p.add_argument("--out", type=Path, help="where to write (default: the --grid directory)")
    p.add_argument("--baseline", default="adam", help="optimizer the others are compared with")
    p.add_argument("--confidence", type=float, default=0.75, help="confidence of the plot band")
    p.add_argument("--title", default=title, help="summary.md title")
    p.add_argument(
        "--export-curves",
        type=Path,
        metavar="CSV",
        help="also write all curves as a long CSV (readable again with --curves-csv)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m adan_repro.summarize",
        description="Plot mean curves with a confidence band and write summary.md/summary.csv "
        "with each optimizer's difference from the baseline (Welch's t-test).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_summary_args(p)
    p.add_argument("--metric", default="value", help="eval.csv column to summarize (--grid)")
    p.add_argument("--task-key", default="task", help="config.json key naming the task")
    p.add_argument("--optimizer-key", default="optimizer", help="config.json key of the optimizer")
    p.add_argument("--seed-key", default="seed", help="config.json key of the seed")
    p.add_argument("--direction", choices=DIRECTIONS, default="higher", help="which is better")
    p.add_argument("--label", help="name of the metric in tables and plots (default --metric)")
    p.add_argument("--xlabel", default="steps", help="x axis label of the plots")
    p.add_argument("--digits", type=int, default=1, help="decimals in summary.md")
    p.add_argument("--references", type=Path, help="CSV task,label,step,value drawn dashed")
    return p


def run_cli(
    args: argparse.Namespace,
    load: Callable[[], C.Curves],
    write: Callable[[C.Curves, Path], list[dict]],
) -> int:
    """The body every summary CLI shares (flags from :func:`add_summary_args`): load the
    curves, write the summary where ``--out`` (or ``--grid``) says, export the curves if asked,
    print the table. A bad input or output is an ``error:`` line and exit status 2."""
    try:
        curves = load()
        out = args.out or args.grid or Path(".")
        rows = write(curves, out)
        if args.export_curves:
            C.write_long_csv(curves, args.export_curves)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((out / "summary.md").read_text())
    print(f"wrote {len(rows)} rows to {out / 'summary.csv'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def load() -> C.Curves:
        if args.grid:
            return C.load_run_folders(
                args.grid, args.metric, args.task_key, args.optimizer_key, args.seed_key
            )
        return C.load_long_csv(args.curves_csv)

    def write(curves: C.Curves, out: Path) -> list[dict]:
        return run(
            curves,
            out,
            args.baseline,
            args.confidence,
            args.title,
            direction=args.direction,
            label=args.label or args.metric,
            xlabel=args.xlabel,
            digits=args.digits,
            references=load_references(args.references) if args.references else None,
        )

    return run_cli(args, load, write)


if __name__ == "__main__":
    sys.exit(main())
