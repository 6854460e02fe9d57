"""The grid's summary: MLM pretraining curves, then the GLUE dev scores of every (pretraining
optimizer, fine-tuning optimizer) pipeline under each protocol, with Welch differences from
``adam→adam``.

Files, written together and atomically into the grid folder OUT (an error leaves the old ones):

- ``pretrain/summary.md``, ``pretrain/summary.csv``, ``pretrain/pretrain.png``: adan_repro's
  curve summary of the validation MLM loss; ``curves.csv``: those curves as a long CSV.
- ``glue.csv``: one row per finished fine-tuning run and protocol, scores ×100.
- ``summary.csv``: per task (and the GLUE ``average``), protocol and pipeline: n, mean, std,
  min, max over runs, and the Welch difference from ``adam→adam``.
- ``glue_paper.png``, ``glue_clean.png``: bars per task and pipeline, with every run as a dot.
- ``summary.md``: all of it for reading.

Only finished runs (``done.json``) are read: a run still training has no protocol picks yet,
and a half-trained pretraining curve would cut every seed's curve to its length.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from adan_repro import curves as C
from adan_repro import rundir, summarize
from adan_repro.atomic import Batch, csv_writer, text_writer
from adan_repro.stats import Difference, welch

from .glue import TASKS

BASELINE = "adam→adam"  # the paper's comparison is adan→adan against this
PIPELINES = ("adam→adam", "adan→adan", "adam→adan", "adan→adam")  # display order
PROTOCOLS = ("paper", "clean", "last")
PLOTTED = ("paper", "clean")  # "last" is a sanity check, not a result worth a figure
AVERAGE = "average"
PRETRAIN = "pretrain"  # the config "task" of a pretraining run
PRETRAIN_METRIC = "valid_loss"
CI_LEVEL = summarize.CI_LEVEL  # of every difference; `confidence` is only the plot band's
ALPHA = summarize.ALPHA
DIGITS = 4  # decimals of the ×100 scores in the CSV files: exact enough to recompute from
GLUE_HEADER = ("task", "pretrain_optimizer", "pretrain_seed", "optimizer", "seed", "pipeline",
               "protocol", "metric", "value", "step")  # fmt: skip
SUMMARY_HEADER = ("task", "protocol", "pipeline", "metric", "n", "mean", "std", "min", "max",
                  "baseline", "diff", "diff_ci_low", "diff_ci_high", "p")  # fmt: skip
PROTOCOL_TEXT = {
    "paper": "the checkpoint with the best dev accuracy (the lowest dev loss for STS-B), scored "
    "on that same dev set, CoLA without its first dev example, as the paper's `acc_test.py` "
    "did: dev both chooses and scores, so it flatters every pipeline",
    "clean": "the checkpoint chosen on a held-out part of train by the task's own metric; dev "
    "is scored once, at that checkpoint, on every example",
    "last": "the final checkpoint, scored on dev: no selection at all",
}


@dataclass(frozen=True)
class Score:
    """One protocol's dev score of one finished fine-tuning run (a row of glue.csv)."""

    label: str  # the run's config "task", e.g. CoLA.pre-adan-1
    task: str
    pretrain_optimizer: str
    pretrain_seed: int | str  # an int unless the config holds something else
    optimizer: str
    seed: int
    protocol: str
    metric: str
    value: float  # ×100
    step: int

    @property
    def pipeline(self) -> str:
        return f"{self.pretrain_optimizer}→{self.optimizer}"


@dataclass
class Grid:
    """What the finished runs of OUT hold."""

    curves: C.Curves = field(default_factory=dict)  # ("pretrain", optimizer) -> seed -> points
    scores: list[Score] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)  # run folders without done.json


def _seed(value) -> int | str:
    """The pretraining seed: the grid records it as a string note ("1")."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return "" if value is None else str(value)


def _seed_order(value: int | str) -> tuple:
    # ints first, numerically; anything else after them, as text (never mixed in one compare)
    return (0, value, "") if isinstance(value, int) else (1, 0, value)


def _task_order(task: str) -> tuple:
    names = list(TASKS)
    return (names.index(task), "") if task in names else (len(names), task)


def _pipeline_order(pipeline: str) -> tuple:
    return (PIPELINES.index(pipeline), "") if pipeline in PIPELINES else (len(PIPELINES), pipeline)


def _scores(config: dict, done: dict, label: str) -> list[Score]:
    """The protocol picks of a finished fine-tuning run; a protocol absent from done.json
    (``clean`` when nothing was held out) gives no row."""
    common = dict(
        label=label,
        task=str(config["glue_task"]),
        pretrain_optimizer=str(config.get("pretrain_optimizer", "?")),
        pretrain_seed=_seed(config.get("pretrain_seed")),
        optimizer=str(config["optimizer"]),
        seed=int(config["seed"]),
        metric=str(done.get("metric", "")),
    )
    return [
        Score(protocol=p, value=100.0 * float(done[p]["dev"]), step=int(done[p]["step"]), **common)
        for p in PROTOCOLS
        if p in done
    ]


def load(out: Path, wanted: set[str] | None = None) -> Grid:
    """The finished runs under ``out/runs`` whose label (config "task") is in ``wanted``.

    The depth is fixed (``runs/<label>/<optimizer>/seed<N>``) so that the Hugging Face
    ``config.json`` files inside a run's ``final/`` folder are never taken for runs.
    """
    grid = Grid()
    curves: dict = {}
    for config_path in sorted(Path(out).glob(f"runs/*/*/seed*/{rundir.CONFIG}")):
        run_dir = config_path.parent
        config = rundir.read_config(run_dir)
        label = str(config.get("task", ""))
        if wanted is not None and label not in wanted:
            continue
        if not rundir.is_done(run_dir):
            grid.unfinished.append(str(run_dir.relative_to(out)))
            continue
        if label == PRETRAIN:
            rows = rundir.read_eval(run_dir / rundir.EVAL, int_columns=("step", "tokens"))
            if rows and PRETRAIN_METRIC not in rows[0]:
                raise ValueError(
                    f"{run_dir / rundir.EVAL} has no {PRETRAIN_METRIC!r} column "
                    f"(it has {', '.join(rows[0])})"
                )
            if rows:
                points = sorted((int(r["step"]), float(r[PRETRAIN_METRIC])) for r in rows)
                per_seed = curves.setdefault((PRETRAIN, str(config["optimizer"])), {})
                per_seed[int(config["seed"])] = points
        elif "glue_task" in config:
            done = json.loads((run_dir / rundir.DONE).read_text())
            grid.scores += _scores(config, done, label)
    grid.curves = curves
    grid.scores.sort(
        key=lambda s: (_task_order(s.task), _pipeline_order(s.pipeline),
                       _seed_order(s.pretrain_seed), s.seed, PROTOCOLS.index(s.protocol))
    )  # fmt: skip
    return grid


def samples(scores: Sequence[Score]) -> dict[tuple[str, str, str], np.ndarray]:
    """``(task, protocol, pipeline) -> values`` over runs, with the GLUE average as task
    ``average``.

    The average of one (pipeline, protocol, pretraining seed, fine-tuning seed) is the mean
    over the grid's tasks, and it exists only when that combination has every one of them: an
    average over fewer tasks would mix easy and hard tasks differently per pipeline.
    """
    out: dict[tuple[str, str, str], list[float]] = {}
    combos: dict[tuple, dict[str, list[float]]] = {}
    for s in scores:
        out.setdefault((s.task, s.protocol, s.pipeline), []).append(s.value)
        key = (s.pipeline, s.protocol, s.pretrain_seed, s.seed)
        combos.setdefault(key, {}).setdefault(s.task, []).append(s.value)
    all_tasks = {s.task for s in scores}
    for (pipeline, protocol, *_), per_task in combos.items():
        if set(per_task) == all_tasks:
            mean = float(np.mean([np.mean(v) for v in per_task.values()]))
            out.setdefault((AVERAGE, protocol, pipeline), []).append(mean)
    return {k: np.array(v, dtype=np.float64) for k, v in out.items()}


def groups(scores: Sequence[Score]) -> list[str]:
    """The tasks in GLUE order, then ``average`` when there is any task."""
    tasks = sorted({s.task for s in scores}, key=_task_order)
    return [*tasks, AVERAGE] if tasks else []


def pipelines(values: dict[tuple[str, str, str], np.ndarray]) -> list[str]:
    return sorted({p for _, _, p in values}, key=_pipeline_order)


def summary_table(
    values: dict[tuple[str, str, str], np.ndarray], metrics: dict[str, str], order: list[str]
) -> list[dict]:
    """One row per (task, protocol, pipeline) with the columns of ``SUMMARY_HEADER``; rows of a
    pipeline compared with the baseline also hold the :class:`Difference` under ``_d``."""
    rows = []
    for task in order:
        for protocol in PROTOCOLS:
            base = values.get((task, protocol, BASELINE))
            for pipeline in pipelines(values):
                v = values.get((task, protocol, pipeline))
                if v is None:
                    continue
                row = dict.fromkeys(SUMMARY_HEADER, "")
                row.update(task=task, protocol=protocol, pipeline=pipeline,
                           metric=metrics.get(task, ""), n=len(v), mean=float(v.mean()),
                           std=float(v.std()), min=float(v.min()), max=float(v.max()))  # fmt: skip
                if base is not None and pipeline != BASELINE:
                    d = welch(v, base, CI_LEVEL)
                    row.update(baseline=BASELINE, diff=d.diff, _d=d)
                    if d.testable:
                        row.update(diff_ci_low=d.ci_low, diff_ci_high=d.ci_high, p=d.p)
                rows.append(row)
    return rows


def _cell(key: str, x) -> str:
    if not isinstance(x, float):
        return str(x)
    return f"{x:.4g}" if key == "p" else f"{x:.{DIGITS}f}"


def glue_rows(scores: Sequence[Score]) -> list[list[str]]:
    return [
        [s.task, s.pretrain_optimizer, s.pretrain_seed, s.optimizer, s.seed, s.pipeline,
         s.protocol, s.metric, f"{s.value:.{DIGITS}f}", s.step]
        for s in scores
    ]  # fmt: skip


def verdict(d: Difference) -> str:
    """What the runs say about a difference, in words."""
    if not d.testable:
        return str(d.reason)
    if d.p < ALPHA:
        return f"{'higher' if d.diff > 0 else 'lower'}, distinguishable from noise at {ALPHA:.0%}"
    return f"not distinguishable from noise at {ALPHA:.0%}"


def draw_bars(
    protocol: str,
    values: dict[tuple[str, str, str], np.ndarray],
    order: list[str],
    metrics: dict[str, str],
    path: Path,
) -> None:
    """A grouped bar chart of one protocol: x = tasks (+ average), a bar per pipeline (mean, std
    error bar) with each run's value as a dot, so that a mean carried by one run shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [g for g in order if any((g, protocol, p) in values for p in pipelines(values))]
    pipes = [p for p in pipelines(values) if any((g, protocol, p) in values for g in shown)]
    width = 0.8 / max(1, len(pipes))
    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(shown) + 2.5), 4.4))
    try:
        for i, pipe in enumerate(pipes):
            xs, v_list = [], []
            for j, g in enumerate(shown):
                v = values.get((g, protocol, pipe))
                if v is not None:
                    xs.append(j - 0.4 + width * (i + 0.5))
                    v_list.append(v)
            bars = ax.bar(xs, [v.mean() for v in v_list], width * 0.9,
                          yerr=[v.std() for v in v_list], capsize=3, alpha=0.7,
                          label=pipe)  # fmt: skip
            color = bars.patches[0].get_facecolor()
            for x, v in zip(xs, v_list):
                spread = np.linspace(-0.25, 0.25, len(v)) * width if len(v) > 1 else [0.0]
                ax.plot(x + np.asarray(spread), v, "o", ms=3, color=color, mec="k", mew=0.5)
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels([g if g == AVERAGE else f"{g}\n({metrics.get(g, '')})" for g in shown])
        ax.axhline(0.0, color="0.5", linewidth=0.6)  # MCC and Pearson can go below 0
        ax.set_ylabel("dev score ×100 (metric per task)")
        ax.set_title(f"GLUE dev, {protocol} protocol: mean ± std over runs, dots = runs")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, title="pretrain→fine-tune", title_fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110, format="png")
    finally:
        plt.close(fig)


def _how_to_read() -> list[str]:
    return [
        "## How to read this",
        "",
        "A pipeline is *pretraining optimizer → fine-tuning recipe*. The paper compares "
        f"adan→adan with {BASELINE}; adam→adan and adan→adam tell the pretraining's share from "
        "the fine-tuning recipe's. Scores are dev scores ×100 (MCC for CoLA, Pearson for STS-B, "
        "accuracy otherwise); *average* is the mean over the tasks, per run combination, and "
        "only over combinations that have every task.",
        "",
        *[f"- **{name}**: {text}." for name, text in PROTOCOL_TEXT.items()],
        "",
        "n counts runs: pretraining seeds × fine-tuning seeds. std is the population std over "
        "those runs. The differences are mean(pipeline) − mean(adam→adam) with a Welch 95 % "
        "interval and two-sided p (scipy `ttest_ind(equal_var=False)`); the test takes the runs "
        "as independent, but runs fine-tuned from one pretrained checkpoint share it, so with "
        "few pretraining seeds the interval is too narrow where the checkpoint matters.",
        "",
    ]


def _pretrain_section(curves: C.Curves, rows: list[dict]) -> list[str]:
    if not curves:
        return ["## Pretraining", "", "No finished pretraining runs: this part is skipped.", ""]
    lines = [
        "## Pretraining (validation MLM loss, lower is better)",
        "",
        "| optimizer | seeds | final update | final valid loss | best valid loss (update) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['optimizer']} | {r['n_seeds']} | {r['final_step']:,} | "
            f"{r['final_mean']:.3f} ± {r['final_std']:.3f} | {r['best_mean']:.3f} ± "
            f"{r['best_std']:.3f} ({r['best_step']:,}) |"
        )
    lines.append("")
    compared = [r for r in rows if "_final" in r]
    for r in compared:
        d = r["_final"]
        ci = f" [{d.ci_low:+.3f}, {d.ci_high:+.3f}]" if d.testable else ""
        p = f", Welch p = {d.p:.3g}" if d.testable else ""
        lines.append(
            f"- Final valid loss, {r['optimizer']} − {r['baseline']}: {d.diff:+.3f}{ci}{p} "
            f"({d.n_a} vs {d.n_b} seeds): {verdict(d)}."
        )
    if not compared:
        lines.append("- No adam pretraining run to compare with.")
    lines += [
        "- Seeds are aligned on the updates they all have; the full table (with the area under "
        "the curve) is [pretrain/summary.md](pretrain/summary.md), the curves "
        "[pretrain/pretrain.png](pretrain/pretrain.png), every point [curves.csv](curves.csv).",
        "",
    ]
    return lines


def _protocol_section(protocol: str, table: list[dict], order: list[str], plotted: bool):
    rows = [r for r in table if r["protocol"] == protocol]
    if not rows:
        return []
    pipes = sorted({r["pipeline"] for r in rows}, key=_pipeline_order)
    cell = {(r["task"], r["pipeline"]): r for r in rows}
    lines = [
        f"## GLUE dev, {protocol} protocol",
        "",
        "| task | " + " | ".join(pipes) + " |",
        "|---|" + "---|" * len(pipes),
    ]
    for task in order:
        if not any((task, p) in cell for p in pipes):
            continue
        parts = []
        for p in pipes:
            r = cell.get((task, p))
            parts.append(f"{r['mean']:.1f} ± {r['std']:.1f} ({r['n']})" if r else "—")
        name = task if task == AVERAGE else f"{task} ({rows_metric(rows, task)})"
        lines.append(f"| {name} | " + " | ".join(parts) + " |")
    compared = [r for r in rows if "_d" in r]
    if compared:
        lines += [
            "",
            f"| task | pipeline − {BASELINE} | difference | 95 % CI | Welch p | runs | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in compared:
            d = r["_d"]
            ci = f"[{d.ci_low:+.2f}, {d.ci_high:+.2f}]" if d.testable else ""
            p = f"{d.p:.3g}" if d.testable else ""
            lines.append(
                f"| {r['task']} | {r['pipeline']} − {BASELINE} | {d.diff:+.2f} | {ci} | {p} | "
                f"{d.n_a} vs {d.n_b} | {verdict(d)} |"
            )
    if plotted:
        lines += ["", f"[glue_{protocol}.png](glue_{protocol}.png)"]
    return [*lines, ""]


def rows_metric(rows: list[dict], task: str) -> str:
    return next((r["metric"] for r in rows if r["task"] == task), "")


def markdown(
    title: str,
    grid: Grid,
    pretrain_rows: list[dict],
    table: list[dict],
    order: list[str],
    notes: Sequence[str],
) -> str:
    """The text of summary.md."""
    lines = [f"# {title}", "", *_how_to_read()]
    extra = list(notes)
    if grid.unfinished:
        extra.append(
            f"{len(grid.unfinished)} run(s) not finished yet, left out: "
            + ", ".join(f"`{u}`" for u in grid.unfinished)
        )
    if extra:
        lines += ["## Notes", "", *[f"- {n}" for n in extra], ""]
    lines += _pretrain_section(grid.curves, pretrain_rows)
    if not grid.scores:
        lines += ["## GLUE", "", "No finished GLUE fine-tuning runs yet.", ""]
    for protocol in PROTOCOLS:
        lines += _protocol_section(protocol, table, order, protocol in PLOTTED)
    lines.append(
        "Files: [glue.csv](glue.csv) (every run and protocol), [summary.csv](summary.csv) (the "
        "numbers of this page, to 4 decimals)."
    )
    return "\n".join(lines).rstrip() + "\n"


def write(
    out: Path,
    title: str,
    confidence: float = 0.75,
    notes: Sequence[str] = (),
    wanted: set[str] | None = None,
) -> None:
    """Summarize the finished runs of the grid folder ``out`` into it (see the module
    docstring); ``wanted`` (run labels: config "task" values, ``pretrain`` included) restricts
    which runs are read; ``confidence`` is the band of the pretraining plot.

    Raises ValueError when no finished run is found.
    """
    out = Path(out)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    grid = load(out, wanted)
    if not grid.curves and not grid.scores:
        which = "" if wanted is None else f" among the {len(wanted)} wanted run label(s)"
        raise ValueError(
            f"no finished runs (with done.json) under {out / 'runs'}{which}: nothing to summarize"
        )
    values = samples(grid.scores)
    order = groups(grid.scores)
    metrics = {s.task: s.metric for s in grid.scores} | {AVERAGE: AVERAGE}
    table = summary_table(values, metrics, order)
    # The same rows adan_repro's run() writes to pretrain/, computed first for summary.md.
    pretrain_rows = summarize.summarize(grid.curves, "adam", "lower") if grid.curves else []
    text = markdown(title, grid, pretrain_rows, table, order, notes)
    cells = [[_cell(k, r[k]) for k in SUMMARY_HEADER] for r in table]
    with Batch() as batch:
        batch.add(out / "glue.csv", csv_writer(GLUE_HEADER, glue_rows(grid.scores)))
        batch.add(out / "summary.csv", csv_writer(SUMMARY_HEADER, cells))
        for protocol in PLOTTED:
            if any(p == protocol for _, p, _ in values):
                batch.add(
                    out / f"glue_{protocol}.png",
                    lambda p, protocol=protocol: draw_bars(protocol, values, order, metrics, p),
                )
        if grid.curves:
            batch.add(out / "curves.csv", lambda p: C.write_long_csv(grid.curves, p))
        batch.add(out / "summary.md", text_writer(text))
        if grid.curves:
            # run() puts its files in place with a Batch of its own; called last, so that its
            # error still discards everything staged above and only our renames come after.
            summarize.run(grid.curves, out / "pretrain", "adam", confidence,
                          f"{title}: MLM pretraining", direction="lower",
                          label="validation MLM loss", xlabel="updates", digits=3,
                          notes=["Part of [../summary.md](../summary.md)."])  # fmt: skip


DEFAULT_TITLE = "BERT MLM pretraining and GLUE fine-tuning: Adam vs Adan"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m adan_bert.summary",
        description="Re-summarize a BERT grid folder: pretraining curves, GLUE dev scores per "
        "pipeline and protocol, Welch differences from adam→adam (summary.md, summary.csv, "
        "glue.csv, curves.csv, PNGs). Reads only finished runs.",
    )
    p.add_argument("out", type=Path, help="the grid's output folder (holds runs/)")
    p.add_argument(
        "--title", default=DEFAULT_TITLE, help=f"title of summary.md (default: {DEFAULT_TITLE})"
    )
    p.add_argument(
        "--confidence",
        type=float,
        default=0.75,
        help="confidence of the pretraining plot's band (default 0.75; the differences always "
        "use 95 %%)",
    )
    p.add_argument(
        "--note", action="append", default=[], help="a line for summary.md's notes (repeatable)"
    )
    p.add_argument(
        "--run",
        dest="wanted",
        action="append",
        metavar="LABEL",
        help="read only runs with this label (config 'task', e.g. pretrain or CoLA.pre-adan-1); "
        "repeatable (default: every run)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    wanted = set(args.wanted) if args.wanted else None
    try:
        write(args.out, args.title, args.confidence, args.note, wanted)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
