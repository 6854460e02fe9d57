"""Train SB3 PPO on one MuJoCo task with any optimizer registered in adan-core.

Example::

    python -m adan_ppo.train --env HalfCheetah-v5 --opt adan --seed 1 --out runs/hc_adan_s1

The run evaluates every ``--eval-every`` steps (``--eval-episodes`` episodes, observation
statistics frozen), writes ``eval.csv`` and a checkpoint each time, and resumes from the last
checkpoint when started again with the same arguments. See :mod:`adan_ppo.runstate`.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from adan_repro import provenance
from adan_repro.atomic import write_json_atomic
from adan_repro.progress import measured_rate, rate
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

from adan_core.optim_factory import describe, implementation

from . import runstate
from .envs import check_env_id, make_eval_env, make_train_env, sync_obs_stats
from .model import build_ppo, keep_temp_dir_clean
from .optim import sb3_optimizer
from .settings import PAPER_LR, PRESETS, PPOSettings, round_to_rollouts


class LinearDecay:
    """Tianshou's LambdaLR factor 1 - k/K for the k-th update (k = 0..K-1), as an SB3 schedule.

    SB3 calls the schedule with ``progress_remaining = 1 - steps_done/total`` *after* collecting
    the rollout, i.e. 1 - (k+1)/K for update k; adding one rollout's share restores 1 - k/K.
    """

    def __init__(self, lr: float, rollout_share: float):
        self.lr = lr
        self.rollout_share = rollout_share

    def __call__(self, progress_remaining: float) -> float:
        return self.lr * min(1.0, progress_remaining + self.rollout_share)


class Constant:
    def __init__(self, value: float):
        self.value = value

    def __call__(self, progress_remaining: float) -> float:
        return self.value


# Distributions whose versions go into provenance.json (torch is always included).
PROVENANCE_PACKAGES = (
    "adan-core",
    "adan-ppo",
    "adan-repro",
    "stable-baselines3",
    "gymnasium",
    "mujoco",
    "numpy",
)


@dataclass
class RunResult:
    status: str  # "finished", "skipped" (already finished) or "stopped" (stop_after_steps)
    steps: int  # env steps reached
    steps_this_session: int
    evals_this_session: int
    run_dir: Path


def _eval_seed(run_seed: int, eval_index: int) -> int:
    # Fresh, reproducible seeds per evaluation, disjoint from the training envs' seeds.
    return (run_seed * 1_000_003 + 7_919 * (eval_index + 1)) % (2**31 - 1)


def evaluate(
    model: PPO, train_env: VecNormalize, eval_env: VecNormalize, settings: PPOSettings, seed: int
) -> tuple[float, float, float, int]:
    """Mean/std return and mean length over ``eval_episodes`` episodes with frozen obs stats."""
    sync_obs_stats(train_env, eval_env)
    eval_env.seed(seed)
    returns, lengths = evaluate_policy(
        model,
        eval_env,
        n_eval_episodes=settings.eval_episodes,
        deterministic=settings.eval_deterministic,
        return_episode_rewards=True,
        warn=False,
    )
    return float(np.mean(returns)), float(np.std(returns)), float(np.mean(lengths)), len(returns)


class EvalCheckpointCallback(BaseCallback):
    """Evaluate + checkpoint at rollout boundaries; periodic progress lines; optional stop.

    Rollout start is the point where the previous update has finished, so the evaluated policy
    has learned from every step counted in ``num_timesteps`` (as after a Tianshou epoch).
    """

    def __init__(self, run: _Run):
        super().__init__()
        self.run = run
        self.stop = False

    def _on_rollout_start(self) -> None:
        run = self.run
        step = self.model.num_timesteps
        if step % run.settings.eval_every == 0 and not run.has_eval(step):
            run.evaluate_and_checkpoint(step)
        if run.stop_after is not None and step - run.start_step >= run.stop_after:
            if run.last_checkpoint_step != step:
                run.checkpoint()
            self.stop = True

    def _on_rollout_end(self) -> None:
        self.run.maybe_log_progress(self.model)

    def _on_step(self) -> bool:
        return not self.stop


class _Run:
    """State of one training session of one run."""

    def __init__(self, args: argparse.Namespace, settings: PPOSettings, run_dir: Path, log=print):
        self.args = args
        self.settings = settings
        self.run_dir = run_dir
        self.log = log
        self.tag = args.tag or f"{args.env}/{args.opt}/seed{args.seed}"
        self.stop_after = args.stop_after_steps
        self.rows: list[dict] = []
        self.evals_this_session = 0
        self.last_checkpoint_step = -1
        self.t_start = time.time()
        self.t_mark = time.time()  # training throughput excludes evaluation time
        self.step_mark = 0
        self.t_last_log = time.time()
        self.wall_before = 0.0  # wall time of earlier sessions, from eval.csv

    def has_eval(self, step: int) -> bool:
        return any(r["step"] == step for r in self.rows)

    def wall(self) -> float:
        return self.wall_before + time.time() - self.t_start

    def evaluate_and_checkpoint(self, step: int) -> None:
        now = time.time()
        # nan in the CSV when nothing was trained since the last mark (step 0, a resume); the
        # log line says n/a instead.
        fps = measured_rate(step - self.step_mark, now - self.t_mark)
        fps_text = rate(step - self.step_mark, now - self.t_mark)
        index = step // self.settings.eval_every
        mean, std, length, n = evaluate(
            self.model,
            self.train_env,
            self.eval_env,
            self.settings,
            _eval_seed(self.args.seed, index),
        )
        self.rows.append(
            {
                "step": step,
                "mean_return": round(mean, 4),
                "std_return": round(std, 4),
                "mean_length": round(length, 2),
                "episodes": n,
                "train_fps": round(fps, 1),
                "wall_s": round(self.wall(), 1),
            }
        )
        self.evals_this_session += 1
        runstate.write_eval_rows(self.run_dir / "eval.csv", self.rows)
        total = self.settings.total_steps
        self.log(
            f"[{self.tag}] step {step}/{total} ({100 * step / total:.0f}%) eval return "
            f"{mean:.1f} +- {std:.1f} over {n} episodes | train {fps_text} | "
            f"{self.wall():.0f}s"
        )
        if step < total:
            self.checkpoint()
        self.t_mark, self.step_mark = time.time(), step

    def checkpoint(self) -> None:
        runstate.save_checkpoint(self.run_dir, self.model, self.train_env, self.rows)
        self.last_checkpoint_step = self.model.num_timesteps

    def maybe_log_progress(self, model: PPO) -> None:
        if time.time() - self.t_last_log < self.args.log_interval:
            return
        self.t_last_log = time.time()
        step = model.num_timesteps
        fps = rate(step - self.step_mark, time.time() - self.t_mark)
        recent = [ep["r"] for ep in model.ep_info_buffer] if model.ep_info_buffer else []
        train_ret = f"{np.mean(recent):.1f}" if recent else "n/a"
        self.log(
            f"[{self.tag}] step {step}/{self.settings.total_steps} | train {fps}"
            f" | recent training-episode return {train_ret} | {self.wall():.0f}s"
        )

    def build(self) -> None:
        args, s = self.args, self.settings
        cls, kwargs, self.opt_name = sb3_optimizer(args)
        self.train_env = make_train_env(args.env, s)
        self.eval_env = make_eval_env(args.env, s)
        ckpt = runstate.latest_checkpoint(self.run_dir)
        self.resumed_from = ckpt
        if ckpt is not None:
            self.train_env = VecNormalize.load(
                str(ckpt.path / "vecnormalize.pkl"), self.train_env.venv
            )
            self.train_env.training = True
            self.model = PPO.load(ckpt.path / "model.zip", env=self.train_env, device=args.device)
            keep_temp_dir_clean(self.model)
            runstate.restore_rng(ckpt)  # load() re-seeded everything from the initial seed
            # The envs restart from fresh episodes; seeds depend on the step so that a resumed
            # run is reproducible from its checkpoint.
            self.train_env.seed(args.seed * 7_919 + ckpt.step // s.rollout_size)
            self.rows = runstate.read_eval_rows(ckpt.path / "eval.csv")
            runstate.write_eval_rows(self.run_dir / "eval.csv", self.rows)
            self.wall_before = self.rows[-1]["wall_s"] if self.rows else 0.0
            self.last_checkpoint_step = ckpt.step
            self.log(
                f"[{self.tag}] resuming from checkpoint at step {ckpt.step} "
                f"({len(self.rows)} evaluations kept)"
            )
        else:
            lr = args.lr
            schedule = (
                LinearDecay(lr, s.rollout_size / s.total_steps) if s.lr_decay else Constant(lr)
            )
            self.model = build_ppo(
                self.train_env,
                s,
                schedule,
                cls,
                kwargs,
                seed=args.seed,
                device=args.device,
                tensorboard_log=str(self.run_dir / "tb") if args.tensorboard else None,
            )
        self.start_step = int(self.model.num_timesteps)
        self.step_mark = self.start_step
        opt = self.model.policy.optimizer
        if not isinstance(opt, cls):
            raise RuntimeError(f"expected optimizer {cls.__name__}, model has {type(opt).__name__}")

    def record_provenance(self) -> None:
        """Add this session to provenance.json; warn when the software changed since the last."""
        current = provenance.collect(
            Path(__file__).parent,
            PROVENANCE_PACKAGES,
            implementation(self.model.policy.optimizer),
        )
        warning = provenance.record(self.run_dir, current, self.start_step)
        if warning:
            self.log(f"[{self.tag}] warning: {warning}")

    def close(self) -> None:
        self.train_env.close()
        self.eval_env.close()


def run_config(args: argparse.Namespace, settings: PPOSettings) -> dict:
    """What decides the run's results; recorded in config.json and checked on resume.

    Only the optimizer options this app passes are part of it, so that an adan-core release
    that adds a keyword with a default does not make finished runs look different.
    """
    cls, kwargs, name = sb3_optimizer(args)
    return {
        "env": args.env,
        "seed": args.seed,
        "optimizer": name,
        "optimizer_class": f"{cls.__module__}.{cls.__qualname__}",
        "optimizer_kwargs": describe(cls, kwargs, with_defaults=False)["kwargs"],
        "lr": args.lr,
        "settings": settings.as_dict(),
        "preset": args.preset,
    }


def build_parser() -> argparse.ArgumentParser:
    from adan_core.optim_factory import add_optimizer_args

    p = argparse.ArgumentParser(
        prog="python -m adan_ppo.train",
        description="Train SB3 PPO on a gymnasium MuJoCo task with an adan-core optimizer. "
        "Evaluates and checkpoints every --eval-every steps; re-running the same command "
        "resumes an interrupted run and skips a finished one.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--env", required=True, help="gymnasium env id, e.g. HalfCheetah-v5")
    p.add_argument("--seed", type=int, default=1, help="random seed of the run")
    p.add_argument(
        "--out", required=True, type=Path, help="run directory (eval.csv, checkpoints, final model)"
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="paper",
        help="hyper-parameter preset; 'paper' mirrors Tianshou's PPO defaults "
        "(see apps/ppo/README.md). Flags below override single settings",
    )
    g = p.add_argument_group("overrides of the preset (default: the preset's value)")
    g.add_argument(
        "--steps", type=int, help="total env steps (rounded up to whole rollouts); paper: 3,072,000"
    )
    g.add_argument("--n-envs", type=int, help="parallel training envs; paper: 64")
    g.add_argument("--n-steps", type=int, help="steps per env per rollout; paper: 32")
    g.add_argument("--n-epochs", type=int, help="passes over each rollout; paper: 10")
    g.add_argument("--batch-size", type=int, help="minibatch size; paper: 64")
    g.add_argument(
        "--eval-every",
        type=int,
        help="env steps between evaluations (rounded up to whole rollouts); paper: 30,720",
    )
    g.add_argument("--eval-episodes", type=int, help="episodes per evaluation; paper: 10")
    g.add_argument(
        "--eval-stochastic",
        action="store_true",
        help="sample actions during evaluation (Tianshou's default) instead of "
        "using the mean action",
    )
    g.add_argument("--no-lr-decay", action="store_true", help="constant learning rate")
    r = p.add_argument_group("runtime (does not change results)")
    r.add_argument("--device", default="cpu", help="torch device for the policy")
    r.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is fastest for these small nets and lets "
        "several runs share the cores)",
    )
    r.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log SB3's training metrics to RUN_DIR/tb (needs tensorboard)",
    )
    r.add_argument(
        "--log-interval", type=float, default=60.0, help="seconds between progress lines"
    )
    r.add_argument(
        "--stop-after-steps",
        type=int,
        help="end this session after about this many env steps, leaving a "
        "checkpoint to resume from (for time-boxed sessions)",
    )
    r.add_argument("--tag", help="prefix of log lines (default ENV/OPT/seedN)")
    add_optimizer_args(p, default_opt="adan")
    p.set_defaults(lr=PAPER_LR)
    return p


def settings_from_args(args: argparse.Namespace) -> tuple[PPOSettings, list[str]]:
    s = PRESETS[args.preset].replace(
        total_steps=args.steps,
        n_envs=args.n_envs,
        n_steps=args.n_steps,
        n_epochs=args.n_epochs,
        batch_size=args.batch_size,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        eval_deterministic=False if args.eval_stochastic else None,
        lr_decay=False if args.no_lr_decay else None,
    )
    s, notes = round_to_rollouts(s)
    s.validate()
    return s, notes


def train(args: argparse.Namespace, log=print) -> RunResult:
    """Run (or resume, or skip) the training run described by parsed CLI ``args``."""
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if args.lr is None or args.lr <= 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")
    settings, notes = settings_from_args(args)
    check_env_id(args.env)
    config = run_config(args, settings)  # validates the optimizer options too
    run_dir = runstate.prepare_dir(args.out)
    runstate.check_or_write_config(run_dir, config)
    if not (run_dir / "optimizer.json").exists():  # informational: every option incl. defaults
        cls, kwargs, _ = sb3_optimizer(args)
        write_json_atomic(run_dir / "optimizer.json", describe(cls, kwargs))
    if runstate.is_done(run_dir):
        rows = runstate.read_eval_rows(run_dir / "eval.csv")
        step = rows[-1]["step"] if rows else settings.total_steps
        log(f"[{args.tag or args.out}] already finished ({step} steps), skipped")
        return RunResult("skipped", step, 0, 0, run_dir)
    for note in notes:
        log(f"[{args.tag or args.out}] note: {note}")

    torch.set_num_threads(args.threads)
    run = _Run(args, settings, run_dir, log)
    run.build()
    try:
        run.record_provenance()
        remaining = settings.total_steps - run.model.num_timesteps
        callback = EvalCheckpointCallback(run)
        if remaining > 0:
            run.model.learn(
                remaining,
                callback=callback,
                reset_num_timesteps=run.resumed_from is None,
                tb_log_name="ppo",
            )
        if callback.stop:
            log(
                f"[{run.tag}] stopped at step {run.last_checkpoint_step} as asked; re-run the "
                "same command to resume"
            )
            return RunResult(
                "stopped",
                run.last_checkpoint_step,
                run.last_checkpoint_step - run.start_step,
                run.evals_this_session,
                run_dir,
            )
        step = int(run.model.num_timesteps)
        if not run.has_eval(step):
            run.evaluate_and_checkpoint(step)
        runstate.save_final(run_dir, run.model, run.train_env)
        final = run.rows[-1]
        runstate.write_done(
            run_dir,
            {
                "steps": step,
                "final_mean_return": final["mean_return"],
                "evaluations": len(run.rows),
                "wall_s": final["wall_s"],
            },
        )
        runstate.remove_checkpoints(run_dir)
        log(f"[{run.tag}] finished: {step} steps, final eval return {final['mean_return']:.1f}")
        return RunResult("finished", step, step - run.start_step, run.evals_this_session, run_dir)
    finally:
        run.close()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        train(args, log=lambda msg: print(msg, flush=True))
    except (ValueError, runstate.RunConflictError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
