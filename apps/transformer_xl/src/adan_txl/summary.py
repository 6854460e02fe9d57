"""The grid's summary: valid curves against the paper's logs, the steps each optimizer needs to
reach the baseline's final valid perplexity, both evaluation protocols with Welch differences,
the paper's logged results next to ours, training speed and the runs' settings.

Files, written together and atomically into the grid folder (an error leaves the old ones):

- ``<task>_valid.png``: valid perplexity against the step (log scale), the seed mean with a 75%
  t-band per optimizer; for the paper's WikiText-103 tasks also the released logs' curves.
- ``curves.csv``: every evaluation of every run: ``task, optimizer, seed``, the columns of
  :data:`adan_txl.train.EVAL_HEADER`, then ``finished`` (1 once the run wrote done.json, else 0).
- ``summary.md``: the sections below, for reading.
- ``summary.csv``: the same numbers, flat, one row per (task, optimizer, section, metric[, seed]).

summary.csv columns (a cell is empty where it does not apply):

==============  ==============================================================================
task            the grid's task (the ``runs/<task>/`` folder)
optimizer       the optimizer (config.json)
section         ``valid`` (curves), ``reach`` (steps to the baseline's final valid ppl),
                ``protocol_paper`` / ``protocol_standard`` (done.json), ``paper_log`` (against
                the Adan paper's released logs), ``speed``
metric          what ``value`` is (see below)
seed            set on per-seed rows only (``reach`` / ``steps_to_target``)
n_seeds         seeds behind ``value``
step            the evaluation step ``value`` belongs to (final or best step; the baseline's
                final step for ``target_valid_ppl`` and ``steps_to_target_fraction``; the log's
                step for ``last_valid_ppl``; the run's steps for ``protocol_*``)
value           the number itself: a mean over seeds unless the metric says otherwise
std             population std over seeds of ``value``
ci_low/ci_high  95% t-interval of the mean over seeds (``steps_to_target`` only)
reference       the paper's logged value (``paper_log`` rows)
baseline        the optimizer compared with
baseline_task   the task whose baseline runs were used (the row's own, or ``wt103-base-200k``
                for the paper's 50k/100k tasks, which have no Adam run of their own)
diff            ``value`` minus the baseline's (or minus ``reference`` in ``paper_log``)
diff_ci_low/hi  Welch's 95% confidence interval of ``diff`` (scipy; needs 2+ seeds a side)
p               Welch's two-sided p-value
detail          words: protocol settings, "not reached", which seeds are unfinished, ...
==============  ==============================================================================

Metrics: ``valid``: ``final_valid_ppl``, ``best_valid_ppl``, ``steps_to_baseline_final`` (first
step at which the seed-mean curve is at or below the baseline's final mean, from
:func:`adan_repro.summarize.summarize`). ``reach``: ``target_valid_ppl``, ``steps_to_target``
(per seed, and over seeds), ``steps_to_target_fraction`` (the mean over the baseline's final
step). ``protocol_*``: ``test_ppl``, ``valid_ppl``. ``paper_log``: ``test_ppl``,
``last_valid_ppl``, ``test_ppl_minus_baseline`` (ours and, in ``reference``, the paper's gap to
its adam-200k run). ``speed``: ``median_train_tokens_per_s``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from adan_repro import rundir
from adan_repro.atomic import Batch, csv_writer, text_writer
from adan_repro.plot import Reference, draw_task
from adan_repro.stats import Difference, welch
from adan_repro.summarize import summarize, verdict
from scipy import stats

from .presets import RUNS, task_label
from .train import EVAL_HEADER, PROTOCOLS

PLOT_CONFIDENCE = 0.75
CI_LEVEL = 0.95
WT103 = "wt103-base"
PAPER_ADAM_RUN = "adam-200k"  # the paper's only Adam run: the yardstick of every Adan run
# The paper's tasks (wt103-base-200k, -100k, -50k), each with the runs of its step budget.
PAPER_TASKS: dict[str, list[str]] = {}
for _run in RUNS:
    PAPER_TASKS.setdefault(task_label(WT103, _run), []).append(_run)
BASELINE_TASK = task_label(WT103, PAPER_ADAM_RUN)
# Written next to this module (package data); absent, the plots just have no references.
PAPER_LOGS = resources.files(__package__) / "paper_logs.csv"
PROTOCOL_TEXT = {
    "paper": "train.py's end-of-training evaluation of the best-valid model with the training's "
    "segments and memory (tgt_len = mem_len = the training's, no clamp): **what the Adan "
    "paper's table reports**",
    "standard": "Transformer-XL's eval.py protocol on the same model (tgt_len 64, mem_len 640, "
    "clamp_len 400, same_length at WikiText-103 scale): what Transformer-XL papers usually "
    "report",
}
CURVES_HEADER = ("task", "optimizer", "seed", *EVAL_HEADER, "finished")
SUMMARY_HEADER = (
    "task", "optimizer", "section", "metric", "seed", "n_seeds", "step", "value", "std",
    "ci_low", "ci_high", "reference", "baseline", "baseline_task", "diff", "diff_ci_low",
    "diff_ci_high", "p", "detail",
)  # fmt: skip


# ---- runs ------------------------------------------------------------------------------
@dataclass
class Run:
    """One run folder with at least one evaluation."""

    task: str
    optimizer: str
    seed: int
    config: dict
    rows: list[dict]
    done: dict | None  # done.json, None while the run is unfinished

    @property
    def finished(self) -> bool:
        return self.done is not None

    @property
    def tag(self) -> str:
        return f"{self.task}/{self.optimizer}/seed{self.seed}"

    @property
    def max_step(self) -> int:
        return int(self.config["settings"]["max_step"])

    @property
    def last_step(self) -> int:
        return int(self.rows[-1]["step"])


def load_runs(out: Path) -> list[Run]:
    """Every run under ``out/runs/<task>/<optimizer>/seed<N>`` with config.json and at least
    one evaluation row, sorted by task, optimizer and seed."""
    runs = []
    for eval_csv in sorted(Path(out).glob(f"runs/*/*/seed*/{rundir.EVAL}")):
        d = eval_csv.parent
        if not (d / rundir.CONFIG).is_file():
            continue  # a folder the grid made but whose run never started
        rows = rundir.read_eval(eval_csv, ("step", "epoch"))
        if not rows:
            continue
        config = rundir.read_config(d)
        done = json.loads((d / rundir.DONE).read_text()) if rundir.is_done(d) else None
        # The task is the folder's (the grid's name for it); config.json has no task key.
        runs.append(
            Run(d.parent.parent.name, str(config["optimizer"]), int(config["seed"]), config,
                rows, done)
        )  # fmt: skip
    return sorted(runs, key=lambda r: (r.task, r.optimizer, r.seed))


def groups(runs: Iterable[Run]) -> dict[tuple[str, str], list[Run]]:
    """Runs by (task, optimizer), sorted."""
    out: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        out.setdefault((r.task, r.optimizer), []).append(r)
    return dict(sorted(out.items()))


def curves(runs: Iterable[Run], metric: str = "valid_ppl") -> dict:
    """adan_repro curves, ``(task, optimizer) -> {seed: [(step, value)]}``."""
    out: dict = {}
    for r in runs:
        out.setdefault((r.task, r.optimizer), {})[r.seed] = [
            (int(row["step"]), float(row[metric])) for row in r.rows
        ]
    return out


def baseline_task(task: str, present: Collection[tuple[str, str]], baseline: str) -> str | None:
    """The task whose ``baseline`` runs ``task`` is compared with: its own if it has any; for
    the paper's 50k and 100k tasks (the paper trained Adam only for 200k steps) the 200k task,
    since the paper's claim is that Adan at 100k matches Adam at 200k; else None."""
    if (task, baseline) in present:
        return task
    if task in PAPER_TASKS and (BASELINE_TASK, baseline) in present:
        return BASELINE_TASK
    return None


# ---- the paper's logs ------------------------------------------------------------------
def load_paper_logs(source=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The released logs' valid curves, ``run -> (steps, valid_ppl)``; {} if the file is absent.

    ``source``: a path or an importlib.resources Traversable (default :data:`PAPER_LOGS`).
    """
    source = PAPER_LOGS if source is None else source
    if not source.is_file():
        return {}
    points: dict[str, list[tuple[int, float]]] = {}
    with source.open("r", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"run", "step", "valid_ppl"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"{source}: missing columns {sorted(missing)}; need run, step, valid_ppl"
            )
        for row in reader:
            points.setdefault(row["run"], []).append((int(row["step"]), float(row["valid_ppl"])))
    return {
        run: (np.array([s for s, _ in sorted(p)]), np.array([v for _, v in sorted(p)]))
        for run, p in points.items()
    }


def reference_runs(task: str) -> list[str]:
    """The logged runs drawn on ``task``'s plot: the runs of its budget, and adam-200k on the
    shorter budgets too (the run the paper measures them against)."""
    runs = list(PAPER_TASKS.get(task, []))
    if runs and PAPER_ADAM_RUN not in runs:
        runs.append(PAPER_ADAM_RUN)
    return runs


def references(task: str, logs: dict) -> list[Reference]:
    return [
        Reference(logs[run][0], logs[run][1], f"paper's log: {run} (1 seed)")
        for run in reference_runs(task)
        if run in logs
    ]


# ---- sections --------------------------------------------------------------------------
def first_reach(rows: list[dict], target: float) -> int | None:
    """The first evaluation step with valid ppl at or below ``target`` (None: never)."""
    for row in rows:
        if row["valid_ppl"] <= target:
            return int(row["step"])
    return None


def t_interval(values: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """Student-t interval of the mean over seeds (None with fewer than two)."""
    n = len(values)
    if n < 2:
        return None
    half = stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return float(values.mean() - half), float(values.mean() + half)


def reach_table(runs: list[Run], valid: list[dict], baseline: str) -> list[dict]:
    """Per (task, optimizer other than the baseline): each seed's first step at or below the
    baseline's final mean valid ppl, their mean and t-interval when every seed got there."""
    by = {(r["task"], r["optimizer"]): r for r in valid}
    table = []
    for (task, opt), group in groups(runs).items():
        base = baseline_task(task, by, baseline)
        if opt == baseline or base is None:
            continue
        ref = by[(base, baseline)]
        target = ref["final_mean"]
        seeds = [(r, first_reach(r.rows, target)) for r in group]
        steps = np.array([s for _, s in seeds if s is not None], dtype=np.float64)
        everyone = len(steps) == len(seeds)
        mean = float(steps.mean()) if everyone else None
        table.append(
            {"task": task, "optimizer": opt, "baseline": baseline, "baseline_task": base,
             "target": target, "baseline_step": ref["final_step"],
             "baseline_seeds": ref["n_seeds"], "seeds": seeds, "mean": mean,
             "std": float(steps.std()) if everyone else None,
             "ci": t_interval(steps) if everyone else None,
             "fraction": mean / ref["final_step"] if everyone else None}
        )  # fmt: skip
    return table


def _settings_text(p: dict) -> str:
    return (
        f"tgt_len {p['tgt_len']}, mem_len {p['mem_len']}, clamp_len {p['clamp_len']}, "
        f"same_length {p['same_length']}"
    )


def protocol_table(runs: list[Run], baseline: str) -> list[dict]:
    """Per (task, optimizer, protocol), over the finished runs: test and valid ppl mean and
    population std, the settings done.json recorded, and Welch differences from the baseline."""
    finished = [r for r in runs if r.finished and r.done.get("protocols")]
    table = []
    for (task, opt), group in groups(finished).items():
        for name in PROTOCOLS:
            results = [(r, r.done["protocols"][name]) for r in group if name in r.done["protocols"]]
            if not results:
                continue
            test = np.array([p["test_ppl"] for _, p in results], dtype=np.float64)
            valid = np.array([p["valid_ppl"] for _, p in results], dtype=np.float64)
            table.append(
                {"task": task, "optimizer": opt, "protocol": name, "n_seeds": len(results),
                 "seeds": [r.seed for r, _ in results], "test": test, "valid": valid,
                 # Listed as recorded: seeds of one task could in principle differ here.
                 "settings": sorted({_settings_text(p) for _, p in results}),
                 "best_steps": [int(r.done.get("best_step", 0)) for r, _ in results],
                 "steps": sorted({int(r.done.get("steps", r.max_step)) for r, _ in results})}
            )  # fmt: skip
    by = {(r["task"], r["optimizer"], r["protocol"]): r for r in table}
    present = {(r["task"], r["optimizer"]) for r in table}
    for row in table:
        base = baseline_task(row["task"], present, baseline)
        other = by.get((base, baseline, row["protocol"]))
        if row["optimizer"] == baseline or other is None:
            continue
        row.update(
            baseline=baseline, baseline_task=base,
            test_diff=welch(row["test"], other["test"], CI_LEVEL),
            valid_diff=welch(row["valid"], other["valid"], CI_LEVEL),
        )  # fmt: skip
    return table


def paper_table(runs: list[Run], logs: dict) -> list[dict]:
    """Our finished paper runs (wt103-base tasks, config ``run`` one of the paper's) next to the
    logged test ppl and the last logged valid ppl of the same run."""
    table = []
    keyed: dict[tuple[str, str, str], list[Run]] = {}
    for r in runs:
        run = r.config.get("run")
        if r.finished and r.task in PAPER_TASKS and run in RUNS and "paper" in r.done.get(
            "protocols", {}
        ):  # fmt: skip
            keyed.setdefault((r.task, r.optimizer, run), []).append(r)
    for (task, opt, run), group in sorted(keyed.items()):
        test = np.array([r.done["protocols"]["paper"]["test_ppl"] for r in group])
        # The last logged valid: the log's own last row if we have it (adan-50k's is at 48k,
        # not 50k), else the preset's value at the run's last step.
        if run in logs:
            ref_step, ref_valid = int(logs[run][0][-1]), float(logs[run][1][-1])
        elif RUNS[run].valid_ppl is not None:
            ref_step, ref_valid = RUNS[run].max_step, RUNS[run].valid_ppl
        else:
            ref_step, ref_valid = None, None
        at = [row["valid_ppl"] for r in group for row in r.rows if row["step"] == ref_step]
        table.append(
            {"task": task, "optimizer": opt, "run": run, "seeds": [r.seed for r in group],
             "test": test, "logged_test": RUNS[run].test_ppl, "valid_step": ref_step,
             "logged_valid": ref_valid, "valid": np.array(at) if at else None}
        )  # fmt: skip
    adam = next((r for r in table if r["run"] == PAPER_ADAM_RUN), None)
    for row in table:
        if adam is not None and row is not adam:
            row["vs_adam"] = float(row["test"].mean() - adam["test"].mean())
            row["logged_vs_adam"] = RUNS[row["run"]].test_ppl - RUNS[PAPER_ADAM_RUN].test_ppl
    return table


def speed_table(runs: list[Run]) -> list[dict]:
    return [
        {"task": task, "optimizer": opt, "n_seeds": len(group),
         "median": float(np.median([row["train_tokens_per_s"] for r in group for row in r.rows])),
         "windows": sum(len(r.rows) for r in group)}
        for (task, opt), group in groups(runs).items()
    ]  # fmt: skip


# ---- summary.csv -----------------------------------------------------------------------
def _row(task: str, opt: str, section: str, metric: str, **cells) -> dict:
    row = dict.fromkeys(SUMMARY_HEADER, "")
    row.update(task=task, optimizer=opt, section=section, metric=metric)
    row.update({k: ("" if v is None else v) for k, v in cells.items()})
    return row


def _diff_cells(d: Difference | None) -> dict:
    if d is None:
        return {}
    cells = {"diff": d.diff}
    if d.testable:
        cells.update(diff_ci_low=d.ci_low, diff_ci_high=d.ci_high, p=d.p)
    else:
        cells["detail"] = d.reason
    return cells


def _unfinished_note(group: list[Run]) -> str:
    late = [f"seed{r.seed} at step {r.last_step}/{r.max_step}" for r in group if not r.finished]
    return "unfinished: " + ", ".join(late) if late else ""


def csv_rows(runs, valid, reach, protocols, paper, speed) -> list[dict]:
    """The rows of summary.csv (see the module docstring), unformatted."""
    out = []
    grouped = groups(runs)
    for r in valid:
        task, opt = r["task"], r["optimizer"]
        note = _unfinished_note(grouped[(task, opt)])
        base = {"n_seeds": r["n_seeds"], "detail": note}
        final = _diff_cells(r.get("_final"))
        if final:
            final.update(baseline=r["baseline"], baseline_task=task)
            final["detail"] = "; ".join(x for x in (note, final.get("detail", "")) if x)
        out.append(
            _row(
                task,
                opt,
                "valid",
                "final_valid_ppl",
                step=r["final_step"],
                value=r["final_mean"],
                std=r["final_std"],
                **{**base, **final},
            )
        )
        out.append(_row(task, opt, "valid", "best_valid_ppl", step=r["best_step"],
                        value=r["best_mean"], std=r["best_std"], **base))  # fmt: skip
        if r["baseline"] and opt != r["baseline"]:
            reached = r["steps_to_baseline_final"]
            out.append(
                _row(
                    task,
                    opt,
                    "valid",
                    "steps_to_baseline_final",
                    n_seeds=r["n_seeds"],
                    value=reached,
                    baseline=r["baseline"],
                    baseline_task=task,
                    detail="" if reached != "" else "not reached",
                )
            )
    for r in reach:
        task, opt = r["task"], r["optimizer"]
        common = {"baseline": r["baseline"], "baseline_task": r["baseline_task"]}
        out.append(
            _row(
                task,
                opt,
                "reach",
                "target_valid_ppl",
                n_seeds=r["baseline_seeds"],
                step=r["baseline_step"],
                value=r["target"],
                **common,
            )
        )
        for run, step in r["seeds"]:
            why = "" if step is not None else "not reached" + (
                "" if run.finished else f" (unfinished, at step {run.last_step}/{run.max_step})"
            )  # fmt: skip
            out.append(
                _row(
                    task,
                    opt,
                    "reach",
                    "steps_to_target",
                    seed=run.seed,
                    n_seeds=1,
                    value=step,
                    detail=why,
                    **common,
                )
            )
        n, ci = len(r["seeds"]), r["ci"]
        if r["mean"] is None:
            detail = f"{sum(s is None for _, s in r['seeds'])} of {n} seeds did not reach it"
        elif ci is None:
            detail = f"n = {n}: no interval"
        else:
            detail = f"95% t-interval over n = {n} seeds"
        out.append(
            _row(
                task,
                opt,
                "reach",
                "steps_to_target",
                n_seeds=n,
                value=r["mean"],
                std=r["std"],
                ci_low=ci[0] if ci else None,
                ci_high=ci[1] if ci else None,
                detail=detail,
                **common,
            )
        )
        out.append(_row(task, opt, "reach", "steps_to_target_fraction", n_seeds=n,
                        step=r["baseline_step"], value=r["fraction"], **common))  # fmt: skip
    for r in protocols:
        detail = "; ".join(r["settings"])
        for metric, key in (("test_ppl", "test"), ("valid_ppl", "valid")):
            diff = _diff_cells(r.get(f"{key}_diff"))
            if diff:
                diff.update(baseline=r["baseline"], baseline_task=r["baseline_task"])
                diff["detail"] = "; ".join(x for x in (detail, diff.get("detail", "")) if x)
            out.append(_row(r["task"], r["optimizer"], f"protocol_{r['protocol']}", metric,
                            n_seeds=r["n_seeds"], step=r["steps"][0] if len(r["steps"]) == 1
                            else None, value=float(r[key].mean()), std=float(r[key].std()),
                            **{"detail": detail, **diff}))  # fmt: skip
    for r in paper:
        task, opt, detail = r["task"], r["optimizer"], f"paper run {r['run']}, paper protocol"
        test = float(r["test"].mean())
        out.append(
            _row(
                task,
                opt,
                "paper_log",
                "test_ppl",
                n_seeds=len(r["test"]),
                value=test,
                std=float(r["test"].std()),
                reference=r["logged_test"],
                diff=test - r["logged_test"],
                detail=detail,
            )
        )
        if r["valid"] is not None:
            v = float(r["valid"].mean())
            out.append(
                _row(
                    task,
                    opt,
                    "paper_log",
                    "last_valid_ppl",
                    n_seeds=len(r["valid"]),
                    step=r["valid_step"],
                    value=v,
                    std=float(r["valid"].std()),
                    reference=r["logged_valid"],
                    diff=v - r["logged_valid"],
                    detail=f"paper run {r['run']}, valid at the log's last step",
                )
            )
        if "vs_adam" in r:
            out.append(
                _row(
                    task,
                    opt,
                    "paper_log",
                    "test_ppl_minus_baseline",
                    value=r["vs_adam"],
                    reference=r["logged_vs_adam"],
                    baseline=RUNS[PAPER_ADAM_RUN].opt,
                    baseline_task=BASELINE_TASK,
                    n_seeds=len(r["test"]),
                    detail=f"{r['run']} minus {PAPER_ADAM_RUN}, paper protocol",
                )
            )
    for r in speed:
        out.append(_row(r["task"], r["optimizer"], "speed", "median_train_tokens_per_s",
                        n_seeds=r["n_seeds"], value=r["median"],
                        detail=f"median over {r['windows']} eval windows"))  # fmt: skip
    return out


def _cell(key: str, x) -> str:
    """p-values to 4 significant digits, other floats to 8 (perplexities, steps, speeds)."""
    if isinstance(x, bool) or not isinstance(x, (float, np.floating)):
        return str(x)
    return f"{x:.4g}" if key == "p" else f"{x:.8g}"


# ---- summary.md ------------------------------------------------------------------------
def _pm(values: np.ndarray) -> str:
    return f"{values.mean():.2f} ± {values.std():.2f}"


def _diff_text(d: Difference | None) -> tuple[str, str]:
    """('+1.23 [+0.50, +1.96]', 'p') or just the difference where the test cannot run."""
    if d is None:
        return "", ""
    if not d.testable:
        return f"{d.diff:+.2f} (no test)", ""
    return f"{d.diff:+.2f} [{d.ci_low:+.2f}, {d.ci_high:+.2f}]", f"{d.p:.3g}"


def _valid_section(runs: list[Run], valid: list[dict]) -> list[str]:
    lines = [
        "## Valid perplexity curves",
        "",
        "| task | optimizer | seeds | final step | final valid ppl | best valid ppl (step) | "
        "steps to baseline's final (mean curve) | final − baseline [95% CI] | Welch p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    grouped = groups(runs)
    for r in valid:
        group = grouped[(r["task"], r["optimizer"])]
        late = sum(not x.finished for x in group)
        seeds = f"{r['n_seeds']}" + (f" ({late} unfinished)" if late else "")
        reach = r["steps_to_baseline_final"]
        if not r["baseline"] or r["optimizer"] == r["baseline"]:
            reach = ""
        else:
            reach = f"{reach:,}" if reach != "" else "not reached"
        diff, p = _diff_text(r.get("_final"))
        lines.append(
            f"| {r['task']} | {r['optimizer']} | {seeds} | {r['final_step']:,} | "
            f"{r['final_mean']:.2f} ± {r['final_std']:.2f} | {r['best_mean']:.2f} ± "
            f"{r['best_std']:.2f} ({r['best_step']:,}) | {reach} | {diff} | {p} |"
        )
    lines += [
        "",
        "Lower is better. Seeds are aligned on the evaluation steps they all have (an "
        "unfinished seed cuts its group's curve to its last step); 'final' is the last such "
        "step, 'best' the minimum of the seed-mean curve. 'Steps to baseline's final': first "
        "step at which the seed-mean curve is at or below the baseline's final mean (same "
        "task). Difference of the final valid ppl over seeds, with Welch's 95% interval and "
        "two-sided p (adan_repro.summarize).",
        "",
    ]
    lines += [
        f"- {r['task']}: " + verdict(r["_final"], r["optimizer"], r["baseline"], "lower")
        for r in valid
        if "_final" in r
    ]
    return lines


def _reach_section(reach: list[dict]) -> list[str]:
    lines = [
        "",
        "## Steps to reach the baseline's final valid perplexity, per seed",
        "",
        "The Adan paper's claim: Adan reaches Adam's result in about half the steps.",
        "",
    ]
    if not reach:
        return [*lines, "No task has both the baseline and another optimizer.", ""]
    lines += [
        "| task | optimizer | target (baseline's final, task) | first step at or below, per "
        "seed | mean | 95% t-interval over seeds | mean / baseline's steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in reach:
        per_seed = ", ".join(
            f"seed{run.seed}: {step:,}" if step is not None else f"seed{run.seed}: not reached"
            for run, step in r["seeds"]
        )
        n = len(r["seeds"])
        mean = f"{r['mean']:,.0f}" if r["mean"] is not None else "—"
        if r["ci"] is not None:
            ci = f"[{r['ci'][0]:,.0f}, {r['ci'][1]:,.0f}] (n = {n})"
        elif r["mean"] is not None:
            ci = f"none (n = {n})"
        else:
            ci = "none (not every seed reached it)"
        fraction = f"{r['fraction']:.2f}" if r["fraction"] is not None else "—"
        lines.append(
            f"| {r['task']} | {r['optimizer']} | {r['target']:.2f} ({r['baseline']} at "
            f"{r['baseline_step']:,}, {r['baseline_task']}) | {per_seed} | {mean} | {ci} | "
            f"{fraction} |"
        )
    lines += [
        "",
        "Each seed's first evaluation step with valid ppl at or below the target, the "
        "baseline's final seed-mean valid ppl. Mean and a two-sided 95% Student-t interval "
        "over seeds (scipy.stats.t, n − 1 degrees of freedom), given only when every seed "
        "reached the target (and the interval only for n ≥ 2); the step is only known to the "
        "evaluation interval. The paper's 50k/100k tasks have no Adam run of their own: their "
        f"target is the {BASELINE_TASK} baseline's, the paper's comparison.",
        "",
    ]
    return lines


def _protocol_section(runs: list[Run], protocols: list[dict]) -> list[str]:
    lines = ["## Test perplexity under both evaluation protocols", ""]
    lines += [f"- **{name}**: {text}." for name, text in PROTOCOL_TEXT.items()]
    lines += [
        "",
        "The paper's numbers are the **paper** protocol's. Both evaluate the model of the best "
        "valid step (done.json), finished runs only; the settings columns are done.json's.",
        "",
    ]
    if not protocols:
        lines += ["No run has finished yet.", ""]
    else:
        lines += [
            "| task | optimizer | protocol | settings | seeds | test ppl | valid ppl | "
            "best-valid step | test − baseline [95% CI] | Welch p | baseline task |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in protocols:
            diff, p = _diff_text(r.get("test_diff"))
            lines.append(
                f"| {r['task']} | {r['optimizer']} | {r['protocol']} | "
                f"{'; '.join(r['settings'])} | {r['n_seeds']} | {_pm(r['test'])} | "
                f"{_pm(r['valid'])} | {', '.join(f'{s:,}' for s in r['best_steps'])} | {diff} | "
                f"{p} | {r.get('baseline_task', '')} |"
            )
        lines += [
            "",
            "Mean ± population std over seeds. Difference of the mean test ppl from the "
            "baseline's, 95% interval and two-sided p from Welch's t-test (scipy), seeds "
            "independent. Lower is better.",
            "",
        ]
        lines += [
            f"- {r['task']}"
            + (f" vs {r['baseline_task']}" if r["baseline_task"] != r["task"] else "")
            + f", {r['protocol']} protocol, test: "
            + verdict(r["test_diff"], r["optimizer"], r["baseline"], "lower")
            for r in protocols
            if "test_diff" in r
        ]
    late = [r for r in runs if not r.finished]
    if late:
        lines += [
            "",
            "Not finished (left out of this section): "
            + ", ".join(f"{r.tag} (step {r.last_step:,}/{r.max_step:,})" for r in late)
            + ".",
        ]
    return [*lines, ""]


def _paper_section(paper: list[dict]) -> list[str]:
    if not paper:
        return []
    lines = [
        "## Against the paper's logs",
        "",
        "The paper's numbers are one run each (seed 1111), from the released logs "
        "(`adan_txl/paper_logs.md`); ours under the paper protocol.",
        "",
        "| task | optimizer | paper run | seeds | our test ppl | logged test ppl | ours − "
        "logged | our valid ppl (step) | logged valid ppl | ours − logged |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in paper:
        test = float(r["test"].mean())
        if r["valid"] is not None:
            v = float(r["valid"].mean())
            valid = f"{_pm(r['valid'])} ({r['valid_step']:,}) | {r['logged_valid']:.3f} | "
            valid += f"{v - r['logged_valid']:+.2f}"
        elif r["logged_valid"] is not None:
            valid = f"no eval at {r['valid_step']:,} | {r['logged_valid']:.3f} | "
        else:
            valid = " | | "
        lines.append(
            f"| {r['task']} | {r['optimizer']} | {r['run']} | {len(r['test'])} | "
            f"{_pm(r['test'])} | {r['logged_test']:.3f} | {test - r['logged_test']:+.2f} | "
            f"{valid} |"
        )
    claims = [r for r in paper if "vs_adam" in r]
    if claims:
        lines += [
            "",
            f"| paper run − {PAPER_ADAM_RUN} | ours (test ppl) | paper's |",
            "|---|---|---|",
        ]
        lines += [
            f"| {r['run']} − {PAPER_ADAM_RUN} | {r['vs_adam']:+.2f} | {r['logged_vs_adam']:+.3f} |"
            for r in claims
        ]
        lines += ["", "Section 3 has these differences with their Welch intervals."]
    return [*lines, ""]


def _speed_section(speed: list[dict]) -> list[str]:
    lines = [
        "## Training speed in these runs",
        "",
        "| task | optimizer | median train tokens/s | eval windows | seeds |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['task']} | {r['optimizer']} | {r['median']:,.0f} | {r['windows']} | {r['n_seeds']} |"
        for r in speed
    ]
    lines += [
        "",
        "Wall-clock rates of whole eval windows (all processes' tokens), as the runs met them: "
        "other jobs and machines included, so not a fair race; `python -m adan_txl.throughput` "
        "measures the optimizers side by side.",
        "",
    ]
    return lines


def _count(x) -> str:
    return f"{x:,}" if isinstance(x, int) else "?"  # configs of older runs may lack the key


def _run_notes(runs: list[Run]) -> list[str]:
    seen: dict[str, list[int]] = {}
    for r in runs:
        st, c, kw = r.config["settings"], r.config, r.config.get("optimizer_kwargs", {})
        line = (
            f"{r.task} / {r.optimizer}: preset {c.get('preset')}"
            + (f", paper run {c['run']}" if c.get("run") else "")
            + f"; {st['n_layer']} layers, d_model {st['d_model']}, {st['n_head']} heads of "
            f"{st['d_head']}, d_inner {st['d_inner']}, vocabulary {_count(c.get('vocab'))}; "
            f"segments {st['tgt_len']} + memory {st['mem_len']}, batch {st['batch_size']}, "
            f"{st['precision']}; {st['max_step']:,} steps, warm-up "
            f"{_count(c.get('warmup_step'))}, eval every {st['eval_interval']:,}; "
            + ", ".join(f"{k} {kw[k]}" for k in ("lr", "betas", "eps", "weight_decay") if k in kw)
        )
        seen.setdefault(line, []).append(r.seed)
    return [f"{line}; seeds {sorted(s)}" for line, s in seen.items()]


def _runs_section(runs: list[Run]) -> list[str]:
    lines = ["## Runs", ""]
    lines += [f"- {n}" for n in _run_notes(runs)]
    late = [r for r in runs if not r.finished]
    if late:
        lines.append(
            "- Unfinished: "
            + ", ".join(f"{r.tag} at step {r.last_step:,}/{r.max_step:,}" for r in late)
        )
    lines += [
        "- std is the population std over seeds; the plots show the seed mean and a "
        f"{PLOT_CONFIDENCE:.0%} t-interval band over seeds; dashed/dotted lines are the paper's "
        "logged valid curves (one run each) where the task is one of the paper's.",
    ]
    lines += [f"- [{t}_valid.png]({t}_valid.png)" for t in sorted({r.task for r in runs})]
    return lines


def markdown(runs, valid, reach, protocols, paper, speed, title: str) -> str:
    lines = [f"# {title}", ""]
    lines += _valid_section(runs, valid)
    lines += _reach_section(reach)
    lines += _protocol_section(runs, protocols)
    lines += _paper_section(paper)
    lines += _speed_section(speed)
    lines += _runs_section(runs)
    return "\n".join(lines).rstrip() + "\n"


def _plot_curves(runs: list[Run]) -> dict:
    """Valid curves keyed for the legend: an optimizer with unfinished seeds says so."""
    out: dict = {}
    for (task, opt), group in groups(runs).items():
        late = sum(not r.finished for r in group)
        name = f"{opt}, {late} unfinished" if late else opt
        out[(task, name)] = curves(group)[(task, opt)]
    return out


# ---- entry -----------------------------------------------------------------------------
def write(
    out: Path,
    baseline: str = "adam",
    title: str = "Transformer-XL: Adam vs Adan",
    wanted: Collection[tuple[str, str]] | None = None,
) -> list[dict]:
    """Write the summary files of the grid in ``out`` (see the module docstring) and return
    the rows of summary.csv. ``wanted``: only these (task, optimizer) pairs (None: all)."""
    out = Path(out)
    runs = load_runs(out)
    if wanted is not None:
        runs = [r for r in runs if (r.task, r.optimizer) in wanted]
    if not runs:
        raise ValueError(
            f"no evaluated runs under {out}/runs (none with config.json and an eval.csv row"
            + (" among the wanted tasks and optimizers" if wanted is not None else "")
            + "): nothing to summarize"
        )
    logs = load_paper_logs()
    valid = summarize(curves(runs), baseline, "lower")
    reach = reach_table(runs, valid, baseline)
    protocols = protocol_table(runs, baseline)
    paper = paper_table(runs, logs)
    speed = speed_table(runs)
    rows = csv_rows(runs, valid, reach, protocols, paper, speed)
    text = markdown(runs, valid, reach, protocols, paper, speed, title)
    curve_rows = [
        [r.task, r.optimizer, r.seed, *[row[k] for k in EVAL_HEADER], int(r.finished)]
        for r in runs
        for row in r.rows
    ]
    plotted = _plot_curves(runs)
    with Batch() as batch:
        for task in sorted({r.task for r in runs}):
            refs = references(task, logs)
            batch.add(
                out / f"{task}_valid.png",
                lambda p, task=task, refs=refs: draw_task(
                    task, plotted, p, PLOT_CONFIDENCE, refs, "valid perplexity", "step", "log"
                ),
            )
        cells = [[_cell(k, r[k]) for k in SUMMARY_HEADER] for r in rows]
        batch.add(out / "summary.csv", csv_writer(SUMMARY_HEADER, cells))
        batch.add(out / "curves.csv", csv_writer(CURVES_HEADER, curve_rows))
        batch.add(out / "summary.md", text_writer(text))
    return rows
