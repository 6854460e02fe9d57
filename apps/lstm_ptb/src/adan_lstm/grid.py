"""The PTB reproduction grid: {1, 2, 3} layers x optimizers x seeds on adan_repro's runner.

Each run lives in ``OUT/runs/<task>/<optimizer>/seed<N>`` (task ``L1``, ``L2``, ``L3``, with
``-compat`` appended under ``--weight-drop-compat``) and resumes from its last epoch: re-running
the same command finishes an interrupted grid. ``--shard K/N`` runs one of N disjoint slices
(see :mod:`adan_repro.grid`), so a Slurm job array can share one output folder; the summary is
written once every run is finished (or at any time with ``--summarize-only``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from adan_repro import grid as harness
from adan_repro.grid import RunSpec
from adan_repro.rundir import prepare_dir

from . import summary
from .data import ENV_DIR
from .presets import task_label

PAPER_LAYERS = [1, 2, 3]
PAPER_SEEDS = [141, 142, 143]  # the setting ran seed 141 only; two more give a spread
QUICK = {"layers": [1], "seeds": [1, 2], "preset": "quick"}
TITLE = "AWD-LSTM on Penn Treebank: Adam vs Adan"


def run_one(spec: RunSpec, log) -> str:
    """One training run in a grid worker: ``spec.args`` are its ``adan_lstm.train`` args."""
    from .train import build_parser, train

    return train(build_parser().parse_args(list(spec.args)), log=log).status


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m adan_lstm.grid (or bash apps/lstm_ptb/run.sh)",
        description="Train AWD-LSTM on PTB with each optimizer, depth and seed, then plot and "
        "summarize both evaluation protocols. Resumable: re-run the same command to finish.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--data",
        type=Path,
        default=os.environ.get(ENV_DIR),
        help=f"folder with ptb.{{train,valid,test}}.txt (default ${ENV_DIR}; unset: download "
        "into the cache)",
    )
    p.add_argument(
        "--layers",
        type=int,
        nargs="+",
        help=f"LSTM depths (default {PAPER_LAYERS}; --quick: {QUICK['layers']})",
    )
    p.add_argument(
        "--opts",
        nargs="+",
        default=["adam", "adan"],
        help="optimizer names registered in adan_core.optim_factory (presets: adam, adan)",
    )
    p.add_argument(
        "--preset",
        help="model and schedule preset of adan_lstm.presets: paper (default), scaled, quick",
    )
    p.add_argument(
        "--weight-drop-compat",
        action="store_true",
        help="every run reproduces the setting's frozen hidden-to-hidden weights (see README)",
    )
    harness.add_grid_args(
        p,
        out=Path("results/lstm_ptb"),
        seeds_help=f"seeds, e.g. 141-143 (default {PAPER_SEEDS}; --quick: {QUICK['seeds']})",
        jobs=1,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="the pipeline on a small budget (preset quick: 1 layer, 128 wide, 3 epochs on "
        "200k training tokens, seeds 1 2), minutes on 2 cores",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads per run (default: CPU cores / --jobs)",
    )
    p.add_argument("--baseline", default="adam", help="optimizer the summary compares with")
    p.add_argument(
        "--adabelief-curves",
        type=Path,
        default=os.environ.get("ADABELIEF_CURVES"),
        help="AdaBelief's curves.json (drawn as references and compared epoch by epoch); "
        "default $ADABELIEF_CURVES",
    )
    p.add_argument(
        "--train-args",
        default="",
        help='extra arguments for every adan_lstm.train call, e.g. "--epochs 20"',
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the runs and each depth's parameter count and settings; train nothing",
    )
    return p


def resolved(args: argparse.Namespace) -> tuple[list[int], list[int], str]:
    layers = args.layers or (QUICK["layers"] if args.quick else PAPER_LAYERS)
    seeds = (
        harness.parse_seeds(args.seeds)
        if args.seeds
        else (QUICK["seeds"] if args.quick else PAPER_SEEDS)
    )
    preset = args.preset or (QUICK["preset"] if args.quick else "paper")
    return layers, seeds, preset


def plan(args: argparse.Namespace) -> list[RunSpec]:
    """Every run of the grid with its ``adan_lstm.train`` arguments, seed-major."""
    layers, seeds, preset = resolved(args)
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    common = ["--preset", preset, "--log-interval", str(args.log_interval)]
    common += ["--threads", str(threads)]
    if args.data is not None:
        common += ["--data", str(args.data)]
    if args.weight_drop_compat:
        common.append("--weight-drop-compat")
    common += shlex.split(args.train_args)
    by_label = {task_label(n, args.weight_drop_compat): n for n in layers}

    def train_args(task: str, opt: str, seed: int, run_dir: Path) -> list[str]:
        return ["--nlayers", str(by_label[task]), "--opt", opt, "--seed", str(seed),
                "--out", str(run_dir), "--tag", f"{task}/{opt}/seed{seed}", *common]  # fmt: skip

    return harness.plan(args.out, list(by_label), args.opts, seeds, args=train_args)


def validate(runs: list[RunSpec], log=None) -> None:
    """Fail fast, before any pool starts: every run's flags, preset and optimizer options, and
    (once) the data folder. With ``log``, also print each depth's parameter count."""
    from .train import build_parser, dry_run

    parser = build_parser()
    parser.exit_on_error = False
    seen = set()
    for run in runs:
        try:
            targs = parser.parse_args(list(run.args))
        except (argparse.ArgumentError, SystemExit) as exc:
            raise ValueError(f"invalid run arguments {shlex.join(run.args)}: {exc}") from None
        key = (targs.nlayers, targs.opt)
        if key not in seen:
            seen.add(key)
            dry_run(targs, log if log is not None else (lambda msg: None))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    try:
        from adan_core.optim_factory import get_optimizer_spec

        args.opts = [get_optimizer_spec(o).name for o in args.opts]
        harness.parse_shard(args.shard)  # a bad --shard fails before any run
        if args.jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
        prepare_dir(args.out)
        runs = plan(args)
        if args.dry_run:
            for r in runs:
                log(f"[grid] {r.tag}: python -m adan_lstm.train {shlex.join(r.args)}")
            validate(runs, log)
            return 0
        if not args.summarize_only:
            validate(runs)
    except (ValueError, ImportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def summarize_grid() -> None:
        wanted = None if args.summarize_only else {(r.task, r.optimizer) for r in runs}
        summary.write(args.out, args.baseline, TITLE, args.adabelief_curves, wanted)

    return harness.run_then_summarize(runs, run_one, args, summarize_grid, log)


if __name__ == "__main__":
    sys.exit(main())
