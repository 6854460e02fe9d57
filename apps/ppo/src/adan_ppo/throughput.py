"""Training throughput (env steps/s) per optimizer, measured side by side in one process.

Runs the ``paper`` preset without evaluation, alternating optimizers for ``--repeats`` rounds so
that load from other processes hits all of them alike, and splits the wall time into rollout
collection, PPO update and, inside the update, ``optimizer.step``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from .envs import check_env_id, make_train_env
from .model import build_ppo
from .optim import sb3_optimizer
from .settings import PAPER_LR, PRESETS


def _timed(obj, name: str, totals: dict, key: str) -> None:
    """Wrap ``obj.name`` so that its wall time accumulates in ``totals[key]``."""
    inner = getattr(obj, name)

    def wrapper(*a, **kw):
        t = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            totals[key] += time.perf_counter() - t
            totals[key + "_calls"] += 1

    setattr(obj, name, wrapper)


def parse_variant(text: str) -> tuple[str, dict]:
    """``"adan:foreach=True,fused=False"`` -> ``("adan", {"foreach": True, "fused": False})``."""
    name, _, rest = text.partition(":")
    extra = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"bad optimizer option {item!r} in {text!r}; use key=value")
        extra[key] = {"True": True, "False": False, "None": None}.get(value, value)
        if isinstance(extra[key], str):
            extra[key] = float(value)
    return name, extra


def measure(env_id: str, opt: str, steps: int, seed: int) -> dict:
    """Warm up one update (compiles where the optimizer compiles), then time ``steps`` steps."""
    from adan_core.optim_factory import add_optimizer_args

    name, extra = parse_variant(opt)
    parser = argparse.ArgumentParser()
    add_optimizer_args(parser)
    args = parser.parse_args(["--opt", name, "--lr", str(PAPER_LR)])
    cls, kwargs, _ = sb3_optimizer(args)
    kwargs.update(extra)
    s = PRESETS["paper"]
    env = make_train_env(env_id, s)
    model = build_ppo(env, s, PAPER_LR, cls, kwargs, seed=seed)
    t0 = time.perf_counter()
    model.learn(s.rollout_size)  # warm-up: first rollout and update, incl. any compilation
    warmup = time.perf_counter() - t0
    totals = dict.fromkeys(
        ("collect", "collect_calls", "update", "update_calls", "opt_step", "opt_step_calls"), 0.0
    )
    _timed(model, "collect_rollouts", totals, "collect")
    _timed(model, "train", totals, "update")
    _timed(model.policy.optimizer, "step", totals, "opt_step")
    t0 = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    wall = time.perf_counter() - t0
    timed_steps = int(model.num_timesteps) - s.rollout_size
    env.close()
    return {
        "opt": opt,
        "steps": timed_steps,
        "warmup_s": warmup,
        "wall_s": wall,
        "steps_per_s": timed_steps / wall,
        "collect_s": totals["collect"],
        "update_s": totals["update"],
        "opt_step_s": totals["opt_step"],
        "opt_steps": int(totals["opt_step_calls"]),
        "opt_step_us": 1e6 * totals["opt_step"] / max(totals["opt_step_calls"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m adan_ppo.throughput",
        description="Env steps/s of PPO (paper preset) per optimizer, measured side by side.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--env", default="HalfCheetah-v5", help="gymnasium task id")
    p.add_argument(
        "--opts",
        nargs="+",
        default=["adam", "adan"],
        help="optimizers to compare; NAME:key=value,... passes extra optimizer options, e.g. "
        "adan:foreach=True. The first is the baseline of the printed ratios",
    )
    p.add_argument("--steps", type=int, default=61_440, help="env steps per measurement")
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds per optimizer")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, help="write the measurements here as JSON")
    args = p.parse_args(argv)
    try:
        check_env_id(args.env)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    results = []
    for r in range(args.repeats):
        for opt in args.opts:
            m = measure(args.env, opt, args.steps, seed=r + 1)
            results.append(m)
            print(
                f"round {r + 1} {opt}: {m['steps_per_s']:7.0f} steps/s | warm-up "
                f"{m['warmup_s']:.1f}s | collect "
                f"{m['collect_s']:.1f}s, update {m['update_s']:.1f}s (optimizer.step "
                f"{m['opt_step_s']:.1f}s, {m['opt_step_us']:.0f} us/call)",
                flush=True,
            )
    print(
        f"\n{args.env}, {args.steps} steps x {args.repeats} rounds, torch threads "
        f"{args.threads}; medians:"
    )
    med = {}
    for opt in args.opts:
        mine = [m for m in results if m["opt"] == opt]
        med[opt] = {
            k: statistics.median(m[k] for m in mine)
            for k in (
                "steps_per_s",
                "warmup_s",
                "collect_s",
                "update_s",
                "opt_step_s",
                "opt_step_us",
            )
        }
        print(
            f"  {opt:>6}: {med[opt]['steps_per_s']:7.0f} steps/s, update "
            f"{med[opt]['update_s']:.1f}s, optimizer.step {med[opt]['opt_step_us']:.0f} us/call"
        )
    base = args.opts[0]
    for opt in args.opts[1:]:
        ratio = med[opt]["steps_per_s"] / med[base]["steps_per_s"]
        change = (
            f"{(ratio - 1) * 100:.1f}% faster" if ratio >= 1 else f"{(1 - ratio) * 100:.1f}% slower"
        )
        print(f"  {opt}/{base} throughput ratio: {ratio:.3f} ({change})")
    if args.out:
        args.out.write_text(json.dumps({"runs": results, "medians": med}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
