"""The PPO reproduction grid: its tasks, defaults and run arguments, on adan_repro's runner.

Each run lives in ``OUT/runs/<task>/<optimizer>/seed<N>`` and is resumable (see
:mod:`adan_ppo.runstate`): finished runs are skipped, interrupted ones continue from their last
checkpoint. Re-running the same command after an interruption completes the grid. ``--shard
K/N`` runs one of N disjoint slices (see :mod:`adan_repro.grid`), so a Slurm job array can
share one output folder; the summary is written once every run of the grid is finished.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from adan_repro import grid as harness
from adan_repro.grid import RunSpec, parse_seeds  # noqa: F401 - parse_seeds: part of the CLI API

from . import summarize
from .runstate import prepare_dir

PAPER_ENVS = ["Ant-v5", "HalfCheetah-v5", "Walker2d-v5", "Humanoid-v5"]
# --quick: the same pipeline on a budget that runs in minutes on 2 CPU cores.
QUICK = {
    "envs": ["HalfCheetah-v5", "Hopper-v5"],
    "seeds": [1, 2],
    "steps": 102_400,
    "eval_every": 10_240,
    "eval_episodes": 5,
}
TITLE = "PPO on MuJoCo: Adam vs Adan (SB3, gymnasium v5)"


def run_one(spec: RunSpec, log) -> str:
    """One training run in a grid worker: ``spec.args`` are its ``adan_ppo.train`` arguments."""
    from .train import build_parser, train

    return train(build_parser().parse_args(list(spec.args)), log=log).status


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m adan_ppo.grid (or bash apps/ppo/run.sh)",
        description="Run PPO with each optimizer on each task and seed, then plot and summarize. "
        "Resumable: re-run the same command to finish an interrupted grid.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--envs",
        nargs="+",
        help=f"gymnasium task ids (default {PAPER_ENVS}; --quick: {QUICK['envs']})",
    )
    p.add_argument(
        "--opts",
        nargs="+",
        default=["adam", "adan"],
        help="optimizer names registered in adan_core.optim_factory",
    )
    p.add_argument(
        "--steps",
        type=int,
        help="env steps per run (default: preset, 3,072,000 "
        f"for paper; --quick: {QUICK['steps']:,})",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        help=f"env steps between evaluations (default 30,720; --quick: {QUICK['eval_every']:,})",
    )
    p.add_argument(
        "--eval-episodes",
        type=int,
        help=f"episodes per evaluation (default 10; --quick: {QUICK['eval_episodes']})",
    )
    p.add_argument("--preset", default="paper", help="hyper-parameter preset of adan_ppo.train")
    harness.add_grid_args(
        p,
        out=Path("results/ppo"),
        seeds_help="seeds, e.g. 1-10 or 1 2 3 (default 1-10; --quick: 1 2)",
        jobs=os.cpu_count() or 1,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small budget (2 tasks x 2 seeds x 102,400 steps), minutes on 2 cores",
    )
    p.add_argument("--baseline", default="adam", help="optimizer the summary compares with")
    p.add_argument(
        "--tianshou-dir",
        type=Path,
        default=os.environ.get("TIANSHOU_BENCHMARK_DIR"),
        help="Tianshou benchmark folder (<Env>-v3/result.json) to draw as a reference "
        "curve; default $TIANSHOU_BENCHMARK_DIR",
    )
    p.add_argument(
        "--train-args",
        default="",
        help='extra arguments for every adan_ppo.train call, e.g. "--opt-betas 0.98 0.92 0.99"',
    )
    return p


def plan(args: argparse.Namespace) -> list[RunSpec]:
    """Every run of the grid with its ``adan_ppo.train`` arguments, seed-major."""
    envs = args.envs or (QUICK["envs"] if args.quick else PAPER_ENVS)
    seeds = (
        parse_seeds(args.seeds)
        if args.seeds
        else (QUICK["seeds"] if args.quick else list(range(1, 11)))
    )
    steps = args.steps or (QUICK["steps"] if args.quick else None)
    eval_every = args.eval_every or (QUICK["eval_every"] if args.quick else None)
    episodes = args.eval_episodes or (QUICK["eval_episodes"] if args.quick else None)
    common = ["--preset", args.preset, "--log-interval", str(args.log_interval)]
    for flag, value in (
        ("--steps", steps),
        ("--eval-every", eval_every),
        ("--eval-episodes", episodes),
    ):
        if value is not None:
            common += [flag, str(value)]
    common += shlex.split(args.train_args)

    def train_args(env: str, opt: str, seed: int, run_dir: Path) -> list[str]:
        return ["--env", env, "--opt", opt, "--seed", str(seed), "--out", str(run_dir),
                "--tag", f"{env}/{opt}/seed{seed}", *common]  # fmt: skip

    return harness.plan(args.out, envs, args.opts, seeds, args=train_args)


def validate(args: argparse.Namespace, runs: list[RunSpec]) -> None:
    """Fail fast, before any pool starts, on a bad env id, optimizer name or flag."""
    from .envs import check_env_id
    from .optim import sb3_optimizer
    from .train import build_parser, settings_from_args

    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    seen_envs, seen_opts = set(), set()
    parser = build_parser()
    parser.exit_on_error = False
    for run in runs:
        try:
            targs = parser.parse_args(list(run.args))
        except (argparse.ArgumentError, SystemExit) as exc:
            raise ValueError(f"invalid run arguments {shlex.join(run.args)}: {exc}") from None
        if targs.env not in seen_envs:
            check_env_id(targs.env)
            seen_envs.add(targs.env)
        if targs.opt not in seen_opts:
            sb3_optimizer(targs)
            seen_opts.add(targs.opt)
        settings_from_args(targs)


def protocol_notes(out: Path) -> list[str]:
    """One line per distinct run protocol found in ``out/runs`` (budget, evaluation, optimizer)."""
    seen: dict[str, list[str]] = {}
    for path in sorted(Path(out).glob("runs/*/*/seed*/config.json")):
        c = json.loads(path.read_text())
        st = c["settings"]
        line = (
            f"{c['optimizer']}: {st['total_steps']:,} steps per run, lr {c['lr']:g} "
            f"{'linearly decayed to 0' if st['lr_decay'] else 'constant'}"
            + (
                f", options {json.dumps(c['optimizer_kwargs'], sort_keys=True)}"
                if "optimizer_kwargs" in c
                else ""
            )
            + f"; evaluation every "
            f"{st['eval_every']:,} steps on {st['eval_episodes']} "
            f"{'deterministic' if st['eval_deterministic'] else 'stochastic'} episodes"
        )
        seen.setdefault(line, []).append(c["env"])
    return [f"{line} ({', '.join(sorted(set(envs)))})" for line, envs in seen.items()]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    try:
        if args.opts:
            from adan_core.optim_factory import get_optimizer_spec

            args.opts = [get_optimizer_spec(o).name for o in args.opts]
        harness.parse_shard(args.shard)  # a bad --shard fails before any run
        prepare_dir(args.out)
        runs = plan(args)
        if not args.summarize_only:
            validate(args, runs)
    except (ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def summarize_grid() -> None:
        curves = summarize.load_grid_curves(args.out)
        wanted = {(r.task, r.optimizer) for r in runs}
        curves = {k: v for k, v in curves.items() if k in wanted or args.summarize_only}
        summarize.run(curves, args.out, args.baseline, 0.75, TITLE, args.tianshou_dir,
                      notes=protocol_notes(args.out))  # fmt: skip

    return harness.run_then_summarize(
        runs, run_one, args, summarize_grid, log, files="summary.md, summary.csv, <task>.png"
    )


if __name__ == "__main__":
    sys.exit(main())
