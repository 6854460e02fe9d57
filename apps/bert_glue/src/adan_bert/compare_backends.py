"""The same pretraining on both backends, side by side: validation-loss curves in one plot.

    python -m adan_bert.compare_backends --out DIR \\
        --run transformers adam RUN_DIR --run fairseq adam RUN_DIR ...

Each ``--run BACKEND RECIPE RUN_DIR`` names a finished pretraining run folder (its
``eval.csv``, losses in nats on both backends). Writes ``DIR/backends.png`` (recipe by colour,
backend by line style), ``DIR/backends.csv`` (every point) and ``DIR/backends.md`` (final
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


def load(runs: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """``{(backend, recipe): [(step, valid_loss), ...]}`` from finished run folders."""
    curves = {}
    for backend, recipe, folder in runs:
        run = Path(folder)
        if not rundir.is_done(run):
            raise ValueError(f"{run} is not a finished run (no done.json): finish it first")
        rows = rundir.read_eval(run / rundir.EVAL)
        curves[(backend, recipe)] = [(int(r["step"]), float(r["valid_loss"])) for r in rows]
    return curves


def table(curves: dict[tuple[str, str], list[tuple[int, float]]]) -> list[str]:
    """Markdown: the final loss of each run, the Adan - Adam gap per backend, and the
    fairseq - transformers difference per recipe."""
    final = {k: v[-1] for k, v in curves.items()}
    backends = sorted({b for b, _ in curves}, key=list(STYLES).index)
    recipes = sorted({r for _, r in curves})
    lines = [
        "| backend | "
        + " | ".join(f"{r} final valid loss (step)" for r in recipes)
        + (" | adan - adam |" if {"adam", "adan"} <= set(recipes) else " |"),
        "|---" * (len(recipes) + 1 + ({"adam", "adan"} <= set(recipes))) + "|",
    ]
    for b in backends:
        cells = [
            f"{final[(b, r)][1]:.4f} ({final[(b, r)][0]})" if (b, r) in final else "-"
            for r in recipes
        ]
        if {"adam", "adan"} <= set(recipes) and {(b, "adam"), (b, "adan")} <= set(final):
            cells.append(f"{final[(b, 'adan')][1] - final[(b, 'adam')][1]:+.4f}")
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    if {"transformers", "fairseq"} <= set(backends):
        diffs = [
            f"{r}: {final[('fairseq', r)][1] - final[('transformers', r)][1]:+.4f}"
            for r in recipes
            if {("fairseq", r), ("transformers", r)} <= set(final)
        ]
        lines += ["", "fairseq - transformers final valid loss: " + ", ".join(diffs) + " (nats)"]
    return lines


def plot(curves: dict[tuple[str, str], list[tuple[int, float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (backend, recipe), points in sorted(curves.items()):
        steps, losses = zip(*points)
        ax.plot(
            steps,
            losses,
            STYLES.get(backend, ":"),
            color=COLOURS.get(recipe),
            label=f"{recipe}, {backend}",
            marker=".",
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
    rows = [(b, r, s, v) for (b, r), pts in sorted(curves.items()) for s, v in pts]
    write_csv_atomic(args.out / "backends.csv", ("backend", "recipe", "step", "valid_loss"), rows)
    text = "\n".join(table(curves)) + "\n"
    write_text_atomic(args.out / "backends.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
