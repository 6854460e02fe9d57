"""Reload a trained run (model + observation statistics) to evaluate it or render episodes.

Examples::

    python -m adan_ppo.evaluate results/ppo/runs/HalfCheetah-v5/adan/seed1 --episodes 10
    MUJOCO_GL=egl python -m adan_ppo.evaluate RUN_DIR --render cheetah.gif --episodes 1

Uses ``RUN_DIR/final`` when the run finished, otherwise its latest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecNormalize

from . import runstate
from .envs import make_eval_env
from .settings import PPOSettings


def locate_model(run_dir: Path) -> tuple[Path, str]:
    """Directory with model.zip + vecnormalize.pkl, and a label saying which one it is."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ValueError(
            f"{run_dir} is not a run directory (no config.json); pass the --out "
            "directory of adan_ppo.train, e.g. OUT/runs/<task>/<opt>/seed<N>"
        )
    if (run_dir / "final" / "model.zip").exists():
        return run_dir / "final", "final model"
    ckpt = runstate.latest_checkpoint(run_dir)
    if ckpt is None:
        raise ValueError(f"{run_dir} has neither a final model nor a checkpoint yet")
    return ckpt.path, f"checkpoint at step {ckpt.step}"


def load(run_dir: Path, n_envs: int = 1, render_mode: str | None = None):
    """``(model, eval_env, config)`` with the training statistics loaded and frozen."""
    config = json.loads((Path(run_dir) / "config.json").read_text())
    settings = PPOSettings.from_dict(config["settings"])
    where, label = locate_model(run_dir)
    env = make_eval_env(config["env"], settings, n_envs=n_envs, render_mode=render_mode)
    env = VecNormalize.load(str(where / "vecnormalize.pkl"), env.venv)
    env.training, env.norm_reward = False, False  # frozen statistics, raw returns
    model = PPO.load(where / "model.zip", device="cpu")
    print(f"loaded {config['env']} / {config['optimizer']} / seed {config['seed']}: {label}")
    return model, env, config


def run_episodes(
    model, env, episodes: int, deterministic: bool, seed: int, frames: list | None = None
) -> list[float]:
    """Play ``episodes`` episodes one after another; collect frames if a list is given."""
    returns = []
    env.seed(seed)
    obs = env.reset()
    total = 0.0
    while len(returns) < episodes:
        if frames is not None:
            frames.append(env.venv.envs[0].render())
        action, _ = model.predict(obs, deterministic=deterministic)
        obs, reward, done, infos = env.step(action)
        total += float(reward[0])
        if done[0]:
            returns.append(total)
            total = 0.0
    return returns


def save_gif(frames: list, path: Path, fps: int = 30) -> None:
    from PIL import Image

    images = [Image.fromarray(np.asarray(f)) for f in frames if f is not None]
    if not images:
        raise RuntimeError("the environment returned no frames; check MUJOCO_GL (egl or osmesa)")
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m adan_ppo.evaluate",
        description="Evaluate or render a trained run with its frozen observation statistics.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run_dir", type=Path, help="run directory written by adan_ppo.train")
    p.add_argument("--episodes", type=int, default=10, help="episodes to play")
    p.add_argument("--stochastic", action="store_true", help="sample actions (default: mean)")
    p.add_argument("--seed", type=int, default=12345, help="seed of the evaluation episodes")
    p.add_argument(
        "--render",
        type=Path,
        metavar="GIF",
        help="write the episodes as an animated GIF (headless: MUJOCO_GL=egl)",
    )
    p.add_argument("--fps", type=int, default=30, help="frames per second of the GIF")
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error("--episodes must be at least 1")
    try:
        model, env, _ = load(args.run_dir, render_mode="rgb_array" if args.render else None)
        frames = [] if args.render else None
        returns = run_episodes(model, env, args.episodes, not args.stochastic, args.seed, frames)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"return over {len(returns)} episodes: {np.mean(returns):.1f} +- {np.std(returns):.1f}"
        f" (min {np.min(returns):.1f}, max {np.max(returns):.1f})"
    )
    if args.render:
        save_gif(frames, args.render, args.fps)
        print(f"wrote {len(frames)} frames to {args.render}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
