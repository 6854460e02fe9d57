"""The same pretraining on both backends, side by side: validation-loss curves in one plot.

    python -m adan_bert.compare_backends --out DIR \\
        --run transformers adam RUN_DIR --run fairseq adam RUN_DIR ...

Each ``--run BACKEND RECIPE RUN_DIR`` names a finished pretraining run folder (its
``eval.csv``, losses in nats on both backends); several runs of one backend and recipe are its
seeds. Writes ``DIR/backends.png`` (recipe by colour, backend by line style),
``DIR/backends.csv`` (every point) and ``DIR/backends.md`` (final
losses, each backend's Adan - Adam gap, and the backends' difference per recipe).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from adan_repro import rundir
from adan_repro.atomic import write_atomic, write_csv_atomic, write_text_atomic

STYLES = {"transformers": "-", "fairseq": "--"}
COLOURS = {"adam": "tab:blue", "adan": "tab:red"}


Curves = dict[tuple[str, str], list[list[tuple[int, float]]]]


def load(runs: Sequence[tuple[str, str, str]]) -> Curves:
    """``{(backend, recipe): [[(step, valid_loss), ...] per run]}`` from finished run folders
    (several runs of one backend and recipe are its seeds)."""
    curves: Curves = {}
    for backend, recipe, folder in runs:
        run = Path(folder)
        if not rundir.is_done(run):
            raise ValueError(f"{run} is not a finished run (no done.json): finish it first")
        rows = rundir.read_eval(run / rundir.EVAL)
        points = [(int(r["step"]), float(r["valid_loss"])) for r in rows]
        curves.setdefault((backend, recipe), []).append(points)
    return curves


def _final(runs: list[list[tuple[int, float]]]) -> tuple[float, str]:
    """The mean final loss over runs, and the cell text (mean, then each run's value)."""
    values = [r[-1][1] for r in runs]
    mean = sum(values) / len(values)
    each = ", ".join(f"{v:.4f}" for v in values)
    return mean, f"{mean:.4f}" + (f" ({each})" if len(values) > 1 else "")


def table(curves: Curves) -> list[str]:
    """Markdown: each backend's final loss per recipe (mean over its runs, each run in
    brackets), its Adan - Adam gap, and the fairseq - transformers difference per recipe."""
    backends = sorted({b for b, _ in curves}, key=lambda b: list(STYLES).index(b))
    recipes = sorted({r for _, r in curves})
    both = {"adam", "adan"} <= set(recipes)
    steps = sorted({runs[0][-1][0] for runs in curves.values()})
    lines = [
        f"Final validation MLM loss (nats) at update {', '.join(map(str, steps))}; "
        "several runs of a cell are its seeds.",
        "",
        "| backend | " + " | ".join(recipes) + (" | adan - adam |" if both else " |"),
        "|---" * (len(recipes) + 1 + both) + "|",
    ]
    means = {k: _final(v)[0] for k, v in curves.items()}
    for b in backends:
        cells = [_final(curves[(b, r)])[1] if (b, r) in curves else "-" for r in recipes]
        if both and {(b, "adam"), (b, "adan")} <= set(means):
            cells.append(f"{means[(b, 'adan')] - means[(b, 'adam')]:+.4f}")
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    if {"transformers", "fairseq"} <= set(backends):
        diffs = [
            f"{r} {means[('fairseq', r)] - means[('transformers', r)]:+.4f}"
            for r in recipes
            if {("fairseq", r), ("transformers", r)} <= set(means)
        ]
        lines += ["", "fairseq - transformers, mean final loss: " + ", ".join(diffs) + " nats."]
    return lines


def plot(curves: Curves, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (backend, recipe), runs in sorted(curves.items()):
        for i, points in enumerate(runs):
            steps, losses = zip(*points)
            label = f"{recipe}, {backend}" + (f" ({len(runs)} seeds)" if len(runs) > 1 else "")
            ax.plot(
                steps,
                losses,
                STYLES.get(backend, ":"),
                color=COLOURS.get(recipe),
                label=label if i == 0 else None,
                marker="." if i == 0 else None,
                alpha=1.0 if i == 0 else 0.6,
            )
    ax.set_xlabel("update")
    ax.set_ylabel("validation MLM loss (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m adan_bert.compare_backends",
        description="Plot and tabulate pretraining runs of both backends (same data, recipe).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--run",
        nargs=3,
        action="append",
        required=True,
        metavar=("BACKEND", "RECIPE", "RUN_DIR"),
        help="a finished pretraining run",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--title", default="MLM pretraining: transformers vs fairseq backend")
    args = p.parse_args(argv)
    try:
        curves = load(args.run)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    plot(curves, args.out / "backends.png", args.title)
    rows = [
        (b, r, i + 1, s, v)
        for (b, r), runs in sorted(curves.items())
        for i, pts in enumerate(runs)
        for s, v in pts
    ]
    header = ("backend", "recipe", "run", "step", "valid_loss")
    write_csv_atomic(args.out / "backends.csv", header, rows)
    text = "\n".join(table(curves)) + "\n"
    write_text_atomic(args.out / "backends.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
