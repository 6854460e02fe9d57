"""The grid's summary: both evaluation protocols per depth and optimizer, the difference from
the baseline with Welch's confidence interval, valid/test curves with AdaBelief's published
curves as references, and an epoch-by-epoch comparison with those curves.

Files (written together, atomically): ``summary.md``, ``summary.csv`` (one row per task,
optimizer and protocol), ``curves.csv`` (every epoch of every run) and ``<task>_valid.png``,
``<task>_test.png``.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

import numpy as np
from adan_repro import rundir
from adan_repro.atomic import Batch, csv_writer, text_writer
from adan_repro.plot import Reference, draw_task
from adan_repro.stats import welch
from adan_repro.summarize import verdict

from .presets import task_label
from .train import EVAL_HEADER, PROTOCOLS, protocols

PLOT_CONFIDENCE = 0.75
CI_LEVEL = 0.95
PROTOCOL_TEXT = {
    "paper": "the epoch with the best **test** perplexity, and that test perplexity (AdaBelief's "
    "main.py; the paper's numbers)",
    "clean": "the epoch with the best **validation** perplexity, and its test perplexity",
}
SUMMARY_HEADER = (
    "task", "optimizer", "protocol", "n_seeds", "epochs", "mean_test_ppl", "std_test_ppl",
    "mean_epoch", "baseline", "diff", "diff_ci_low", "diff_ci_high", "p",
)  # fmt: skip
CURVES_HEADER = ("task", "optimizer", "seed", *EVAL_HEADER)
COMPARED_EPOCHS = 10  # epochs shown in the published-curve comparison


def task_of(config: dict) -> str:
    """The grid's task name of a recorded run (see :func:`adan_lstm.presets.task_label`)."""
    st = config["settings"]
    return task_label(st["nlayers"], bool(st.get("weight_drop_compat")))


def load_runs(out: Path) -> list[dict]:
    """Every run under ``out/runs`` with at least one evaluated epoch."""
    runs = []
    for eval_csv in sorted(Path(out).glob(f"runs/*/*/seed*/{rundir.EVAL}")):
        d = eval_csv.parent
        if not (d / rundir.CONFIG).exists():
            continue
        config = rundir.read_config(d)
        rows = rundir.read_eval(eval_csv)
        if rows:
            runs.append(
                {
                    "task": task_of(config),
                    "optimizer": config["optimizer"],
                    "seed": int(config["seed"]),
                    "config": config,
                    "rows": rows,
                    "done": rundir.is_done(d),
                }  # fmt: skip
            )
    return runs


def load_adabelief(path: Path | None) -> dict[str, dict]:
    """AdaBelief's curves.json (keyed ``<optimizer>_L<layers>``), or {} without a path."""
    if path is None:
        return {}
    path = Path(path)
    if path.is_dir():
        path = path / "curves.json"
    if not path.is_file():
        raise ValueError(f"AdaBelief curves {str(path)!r} not found; pass the curves.json path")
    return json.loads(path.read_text())


def _references(task: str, published: dict, last_epoch: int) -> list[Reference]:
    """AdaBelief's adam and adabelief test curves for the task's depth, over our epochs."""
    n = task.split("-")[0][1:]
    refs = []
    for opt in ("adam", "adabelief"):
        entry = published.get(f"{opt}_L{n}")
        if entry:
            test = entry["test_ppl_per_epoch"][:last_epoch]
            label = f"AdaBelief's {opt}, test (seed 141, 200-epoch schedule)"
            refs.append(Reference(np.arange(1, len(test) + 1), np.array(test), label))
    return refs


def _groups(runs: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["task"], r["optimizer"]), []).append(r)
    return dict(sorted(groups.items()))


def _common_rows(group: list[dict]) -> list[list[dict]]:
    """Each seed's rows cut to the epochs every seed of the group has."""
    n = min(len(r["rows"]) for r in group)
    return [r["rows"][:n] for r in group]


def protocol_rows(runs: list[dict], baseline: str) -> list[dict]:
    """One row per (task, optimizer, protocol) with the columns of ``SUMMARY_HEADER``."""
    groups = _groups(runs)
    values: dict[tuple[str, str, str], np.ndarray] = {}
    table = []
    for (task, opt), group in groups.items():
        per_seed = [protocols(rows) for rows in _common_rows(group)]
        epochs = len(_common_rows(group)[0])
        for name in PROTOCOLS:
            v = np.array([p[name]["test_ppl"] for p in per_seed])
            e = np.array([p[name]["epoch"] for p in per_seed])
            values[(task, opt, name)] = v
            table.append(
                {"task": task, "optimizer": opt, "protocol": name, "n_seeds": len(v),
                 "epochs": epochs, "mean_test_ppl": float(v.mean()),
                 "std_test_ppl": float(v.std()), "mean_epoch": float(e.mean()),
                 "baseline": "", "diff": "", "diff_ci_low": "", "diff_ci_high": "", "p": ""}
            )  # fmt: skip
    for row in table:
        base = values.get((row["task"], baseline, row["protocol"]))
        if base is None or row["optimizer"] == baseline:
            continue
        d = welch(values[(row["task"], row["optimizer"], row["protocol"])], base, CI_LEVEL)
        row.update(baseline=baseline, diff=d.diff, _d=d)
        if d.testable:
            row.update(diff_ci_low=d.ci_low, diff_ci_high=d.ci_high, p=d.p)
    return table


def curves(runs: list[dict], metric: str) -> dict:
    """adan_repro curves (``(task, optimizer) -> {seed: [(epoch, value)]}``) of ``metric``."""
    out: dict = {}
    for r in runs:
        pts = [(int(row["step"]), float(row[metric])) for row in r["rows"]]
        out.setdefault((r["task"], r["optimizer"]), {})[r["seed"]] = pts
    return out


def _csv_cell(key: str, x):
    """A summary.csv cell: p-values to 4 significant digits, other floats to 2 decimals."""
    if not isinstance(x, float):
        return x
    return f"{x:.4g}" if key == "p" else f"{x:.2f}"


def _layers(n: int) -> str:
    return f"{n} layer" + ("s" if n != 1 else "")


def _settings_notes(runs: list[dict]) -> list[str]:
    seen: dict[str, set] = {}
    for r in runs:
        st, c = r["config"]["settings"], r["config"]
        line = (
            f"{c['optimizer']} ({r['task']}): preset {c['preset']}, {_layers(st['nlayers'])}, "
            f"emsize {st['emsize']}, nhid {st['nhid']}, {st['epochs']} epochs, lr / 10 after "
            f"epochs {st['when']}, "
            + (f"first {st['train_tokens']:,} training tokens, " if st["train_tokens"] else "")
            + ("frozen raw W_hh (--weight-drop-compat), " if st["weight_drop_compat"] else "")
            + "optimizer "
            + ", ".join(
                f"{k} {c['optimizer_kwargs'][k]}"
                for k in ("lr", "betas", "eps", "weight_decay")
                if k in c["optimizer_kwargs"]
            )
        )
        seen.setdefault(line, set()).add(r["seed"])
    return [f"{line}; seeds {sorted(seeds)}" for line, seeds in seen.items()]


def _published_section(runs: list[dict], published: dict) -> list[str]:
    lines = []
    for (task, opt), group in _groups(runs).items():
        entry = published.get(f"{opt}_L{task.split('-')[0][1:]}")
        if not entry or any(r["config"]["preset"] != "paper" for r in group):
            continue  # only the setting's own model and schedule compare epoch by epoch
        rows = _common_rows(group)
        n = min(len(rows[0]), COMPARED_EPOCHS, len(entry["test_ppl_per_epoch"]))
        seeds = sorted(r["seed"] for r in group)
        lines += [
            f"### {task} {opt} (seeds {seeds}) against AdaBelief's published {opt} curve",
            "",
            "Our runs train the raw hidden-to-hidden weights, which the published code froze: "
            "not like for like; the `-compat` runs are."
            if not task.endswith("-compat")
            else "Both with the setting's frozen raw hidden-to-hidden weights: like for like.",
            "",
            "| epoch | our test ppl | published test ppl | gap | our train ppl | published "
            "train ppl |",
            "|---|---|---|---|---|---|",
        ]
        for i in range(n):
            ours = float(np.mean([r[i]["test_ppl"] for r in rows]))
            train = float(np.mean([r[i]["train_ppl"] for r in rows]))
            pub, pub_train = entry["test_ppl_per_epoch"][i], entry["train_ppl_per_epoch"][i]
            lines.append(
                f"| {i + 1} | {ours:.2f} | {pub:.2f} | {100 * (ours - pub) / pub:+.1f}% | "
                f"{train:.2f} | {pub_train:.2f} |"
            )
        lines += [
            "",
            "Published train ppl is main.py's last 200-batch window of the epoch; ours is the "
            "whole epoch's average (both with dropout on, without the AR/TAR terms).",
            "",
        ]
    return lines


def markdown(runs: list[dict], table: list[dict], title: str, published: dict) -> str:
    lines = [f"# {title}", "", "## Test perplexity under both protocols", ""]
    lines += [f"- **{name}**: {text}." for name, text in PROTOCOL_TEXT.items()]
    lines += [
        "",
        "| task | optimizer | protocol | seeds | epochs | test ppl (mean ± std) | selected "
        "epoch (mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['task']} | {r['optimizer']} | {r['protocol']} | {r['n_seeds']} | "
            f"{r['epochs']} | {r['mean_test_ppl']:.2f} ± {r['std_test_ppl']:.2f} | "
            f"{r['mean_epoch']:.1f} |"
        )
    unfinished = [r for r in runs if not r["done"]]
    if unfinished:
        lines += [
            "",
            "Not finished yet (the protocols are over the epochs so far): "
            + ", ".join(
                f"{r['task']}/{r['optimizer']}/seed{r['seed']} "
                f"({len(r['rows'])}/{r['config']['settings']['epochs']} epochs)"
                for r in unfinished
            )
            + ".",
        ]
    compared = [r for r in table if "_d" in r]
    if compared:
        lines += [
            "",
            "## Difference from the baseline",
            "",
            "| task | optimizer − baseline | protocol | difference | 95% CI | Welch p | seeds |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in compared:
            d = r["_d"]
            ci = f"[{d.ci_low:+.2f}, {d.ci_high:+.2f}]" if d.testable else ""
            p = f"{d.p:.3g}" if d.testable else ""
            lines.append(
                f"| {r['task']} | {r['optimizer']} − {r['baseline']} | {r['protocol']} | "
                f"{d.diff:+.2f} | {ci} | {p} | {d.n_a} vs {d.n_b} |"
            )
        lines += [
            "",
            "Lower is better. Difference of the mean test perplexity over seeds; 95% interval "
            "and two-sided p from Welch's unequal-variance t-test (scipy), seeds independent.",
            "",
        ]
        lines += [
            f"- {r['task']}, {r['protocol']} protocol: " + verdict(r["_d"], r["optimizer"],
                                                                  r["baseline"], "lower")
            for r in compared
        ]  # fmt: skip
    if published:
        section = _published_section(runs, published)
        if section:
            lines += ["", "## Against AdaBelief's published curves", "", *section]
    lines += ["", "## Training speed in these runs", "",
              "| task | optimizer | median tokens/s over epochs and seeds | epochs |",
              "|---|---|---|---|"]  # fmt: skip
    for (task, opt), group in _groups(runs).items():
        speeds = [row["train_tokens_per_s"] for r in group for row in r["rows"]]
        lines.append(f"| {task} | {opt} | {float(np.median(speeds)):.0f} | {len(speeds)} |")
    lines += ["", "Wall-clock rates of whole epochs, as the runs met them (other jobs on the "
              "machine included); `adan_lstm.throughput` measures the optimizers side by side.",
              "", "## Runs", ""]  # fmt: skip
    lines += [f"- {n}" for n in _settings_notes(runs)]
    lines += ["- std is over seeds (population std); the plots show the seed mean and a "
              f"{PLOT_CONFIDENCE:.0%} t-interval band."]  # fmt: skip
    for task in sorted({r["task"] for r in runs}):
        lines.append(f"- [{task}_valid.png]({task}_valid.png), [{task}_test.png]({task}_test.png)")
    return "\n".join(lines).rstrip() + "\n"


def write(
    out: Path,
    baseline: str = "adam",
    title: str = "AWD-LSTM on Penn Treebank",
    adabelief_curves: Path | None = None,
    wanted: Collection[tuple[str, str]] | None = None,
) -> list[dict]:
    """Write the summary files of the grid in ``out``; return the protocol table."""
    runs = load_runs(out)
    if wanted is not None:
        runs = [r for r in runs if (r["task"], r["optimizer"]) in wanted]
    if not runs:
        raise ValueError(f"no evaluated runs under {out}/runs: nothing to summarize")
    published = load_adabelief(adabelief_curves)
    table = protocol_rows(runs, baseline)
    text = markdown(runs, table, title, published)
    curve_rows = [
        [r["task"], r["optimizer"], r["seed"], *[row[k] for k in EVAL_HEADER]]
        for r in sorted(runs, key=lambda r: (r["task"], r["optimizer"], r["seed"]))
        for row in r["rows"]
    ]
    tasks = sorted({r["task"] for r in runs})
    with Batch() as batch:
        for task in tasks:
            last = max(len(r["rows"]) for r in runs if r["task"] == task)
            for metric, refs in (("valid", []), ("test", _references(task, published, last))):
                c = curves(runs, f"{metric}_ppl")
                batch.add(
                    Path(out) / f"{task}_{metric}.png",
                    lambda p, task=task, c=c, refs=refs, metric=metric: draw_task(
                        task, c, p, PLOT_CONFIDENCE, refs, f"{metric} perplexity", "epoch", "log"
                    ),
                )
        cells = [[_csv_cell(k, r[k]) for k in SUMMARY_HEADER] for r in table]
        batch.add(Path(out) / "summary.csv", csv_writer(SUMMARY_HEADER, cells))
        batch.add(Path(out) / "curves.csv", csv_writer(CURVES_HEADER, curve_rows))
        batch.add(Path(out) / "summary.md", text_writer(text))
    return table
