"""The reproduction grid on adan_repro's runner: the paper's four runs, or a scaled comparison.

- ``--preset wt103-base`` (the default): the paper's table, ``--runs adam-200k adan-50k
  adan-100k adan-200k`` (see :data:`adan_txl.presets.RUNS`), one seed (the original's 1111).
  Tasks are the step budgets (``wt103-base-200k`` holds Adam's and Adan's 200k runs).
- ``--preset ptb-scaled`` or ``quick`` (``--quick``): every optimizer of ``--opts`` at the
  scale's step budget, with the paper's hyper-parameters and lr ratio, several seeds.

Each run lives in ``OUT/runs/<task>/<optimizer>/seed<N>`` and resumes from its last checkpoint:
re-running the same command finishes an interrupted grid. ``--shard K/N`` runs one of N
disjoint slices (a Slurm job array sharing one output folder); ``--nproc-per-node N`` starts
each run under ``torchrun`` on N GPUs. The summary is written once every run is finished (or at
any time with ``--summarize-only``).
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

from .data import ENV_DIR
from .presets import RUNS, SCALES, task_label

PAPER_RUNS = ["adam-200k", "adan-50k", "adan-100k", "adan-200k"]
PAPER_SEEDS = [1111]  # the original's seed; its runs are one seed each
SCALED_SEEDS = [1111, 1112]
QUICK = {"preset": "quick", "seeds": [1, 2], "jobs": 2}
TITLE = "Transformer-XL: Adam vs Adan"


def run_one(spec: RunSpec, log) -> str:
    """One training run in a grid worker: ``spec.args`` are its ``adan_txl.train`` args."""
    from .train import build_parser, train

    return train(build_parser().parse_args(list(spec.args)), log=log).status


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m adan_txl.grid (or bash apps/transformer_xl/run.sh)",
        description="Train Transformer-XL with each optimizer (or each of the paper's runs) and "
        "seed, then plot and summarize. Resumable: re-run the same command to finish.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--data",
        type=Path,
        default=os.environ.get(ENV_DIR),
        help=f"corpus folder (wiki.*.tokens, ptb.*.txt or *.txt; default ${ENV_DIR}; unset: "
        "download WikiText-103 into the cache)",
    )
    p.add_argument(
        "--preset",
        help=f"scale of adan_txl.presets: {', '.join(SCALES)} (default wt103-base; --quick: quick)",
    )
    p.add_argument(
        "--runs",
        nargs="+",
        choices=sorted(RUNS),
        help=f"with wt103-base: the paper's runs to train (default {' '.join(PAPER_RUNS)})",
    )
    p.add_argument(
        "--opts",
        nargs="+",
        default=["adam", "adan"],
        help="with the other presets: optimizers registered in adan_core.optim_factory "
        "(paper hyper-parameters: adam, adan)",
    )
    harness.add_grid_args(
        p,
        out=Path("results/transformer_xl"),
        seeds_help=f"seeds, e.g. 1111-1113 (default {PAPER_SEEDS} for wt103-base, "
        f"{SCALED_SEEDS} for ptb-scaled, {QUICK['seeds']} with --quick)",
        jobs=0,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="the pipeline on a small budget: preset quick (2 layers, 96 wide, 1,200 steps on "
        "PTB), Adam and Adan, seeds 1 2, 2 at a time: minutes on 2 cores",
    )
    p.add_argument("--threads", type=int, help="torch threads per run (default: cores / --jobs)")
    p.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        help="GPUs per run: > 1 starts each run as `torchrun --nproc_per_node N -m "
        "adan_txl.train ...` (one node; for several nodes run adan_txl.train under your own "
        "torchrun/srun line with the same arguments)",
    )
    p.add_argument("--baseline", default="adam", help="optimizer the summary compares with")
    p.add_argument(
        "--train-args",
        default="",
        help='extra arguments for every adan_txl.train call, e.g. "--precision bf16"',
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the runs and the model's parameter count and settings; train nothing",
    )
    return p


def resolved(args: argparse.Namespace) -> tuple[str, list[int], int]:
    """(preset, seeds, jobs) after --quick and the defaults."""
    preset = args.preset or (QUICK["preset"] if args.quick else "wt103-base")
    if args.seeds:
        seeds = harness.parse_seeds(args.seeds)
    elif args.quick:
        seeds = QUICK["seeds"]
    else:
        seeds = PAPER_SEEDS if preset == "wt103-base" else SCALED_SEEDS
    jobs = args.jobs or (min(QUICK["jobs"], os.cpu_count() or 1) if args.quick else 1)
    return preset, seeds, jobs


def plan(args: argparse.Namespace) -> list[RunSpec]:
    """Every run of the grid with its ``adan_txl.train`` arguments, seed-major."""
    preset, seeds, jobs = resolved(args)
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, jobs))
    common = ["--preset", preset, "--log-interval", str(args.log_interval)]
    if args.nproc_per_node <= 1:
        common += ["--threads", str(threads)]
    if args.data is not None:
        common += ["--data", str(args.data)]
    common += shlex.split(args.train_args)
    if preset == "wt103-base" and not args.opts_given:
        pairs = [
            (task_label(preset, r), RUNS[r].opt, ["--run", r]) for r in args.runs or PAPER_RUNS
        ]
    else:
        if args.runs:
            raise ValueError("--runs names the paper's runs: use it with --preset wt103-base only")
        pairs = [(task_label(preset, None), opt, ["--opt", opt]) for opt in args.opts]
    runs = []
    for seed in seeds:
        for task, opt, which in pairs:
            d = harness.run_path(args.out, task, opt, seed)
            targs = [*which, "--seed", str(seed), "--out", str(d),
                     "--tag", f"{task}/{opt}/seed{seed}", *common]  # fmt: skip
            command = ()
            if args.nproc_per_node > 1:
                command = ("torchrun", "--standalone", f"--nproc_per_node={args.nproc_per_node}",
                           "-m", "adan_txl.train", *targs)  # fmt: skip
            runs.append(RunSpec(task, opt, int(seed), d, command, tuple(targs)))
    return runs


def validate(runs: list[RunSpec], log=None) -> None:
    """Fail fast, before any pool starts: every run's flags, preset and optimizer options.
    With ``log``, also print the model's parameter count and settings once per task."""
    from .train import build_parser, dry_run, start_processes

    parser = build_parser()
    parser.exit_on_error = False
    seen = set()
    procs = start_processes("cpu")
    for run in runs:
        try:
            targs = parser.parse_args(list(run.args))
        except (argparse.ArgumentError, SystemExit) as exc:
            raise ValueError(f"invalid run arguments {shlex.join(run.args)}: {exc}") from None
        key = (run.task, run.optimizer)
        if key not in seen and log is not None:
            seen.add(key)
            log(f"[grid] {run.tag}:")
            dry_run(targs, procs, lambda msg: log(f"    {msg}"))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.opts_given = any(a == "--opts" or a.startswith("--opts=") for a in (argv or sys.argv[1:]))
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    try:
        from adan_core.optim_factory import get_optimizer_spec

        args.opts = [get_optimizer_spec(o).name for o in args.opts]
        harness.parse_shard(args.shard)  # a bad --shard fails before any run
        if args.jobs < 0:
            raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
        prepare_dir(args.out)
        runs = plan(args)
        _, _, jobs = resolved(args)
        if args.dry_run:
            for r in runs:
                log(f"[grid] {r.tag}: python -m adan_txl.train {shlex.join(r.args)}")
            validate(runs, log)
            return 0
        if not args.summarize_only:
            validate(runs)
    except (ValueError, ImportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def summarize() -> None:
        from . import summary

        wanted = None if args.summarize_only else {(r.task, r.optimizer) for r in runs}
        summary.write(args.out, args.baseline, TITLE, wanted)

    target = None if args.nproc_per_node > 1 else run_one  # torchrun runs get their command
    return harness.run_then_summarize(runs, target, args, summarize, log, jobs=jobs)


if __name__ == "__main__":
    sys.exit(main())
