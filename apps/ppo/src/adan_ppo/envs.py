"""Gymnasium MuJoCo environments wrapped the way the paper preset needs them."""

from __future__ import annotations

import warnings
from typing import Callable

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from .settings import PPOSettings

MUJOCO_V5 = (
    "Ant-v5",
    "HalfCheetah-v5",
    "Hopper-v5",
    "Humanoid-v5",
    "HumanoidStandup-v5",
    "InvertedDoublePendulum-v5",
    "InvertedPendulum-v5",
    "Pusher-v5",
    "Reacher-v5",
    "Swimmer-v5",
    "Walker2d-v5",
)


def _mujoco_warning(message: str) -> None:
    # gymnasium's v5 XML models use the 'settotalmass' attribute that MuJoCo >= 3.x deprecates;
    # MuJoCo's default handler prints it and appends it to MUJOCO_LOG.TXT in the working
    # directory for every env created. Drop that one; pass every other warning on.
    if "settotalmass" not in message:
        warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)


mujoco.set_mju_user_warning(_mujoco_warning)


def check_env_id(env_id: str) -> None:
    """Raise ValueError with the known MuJoCo ids if ``env_id`` is not a continuous-action env."""
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as exc:
        raise ValueError(
            f"unknown environment id {env_id!r} ({exc}). Use a gymnasium id such as "
            f"{', '.join(MUJOCO_V5)}"
        ) from None
    try:
        env = gym.make(spec)
    except Exception as exc:  # e.g. mujoco not installed
        raise ValueError(
            f"environment {env_id!r} cannot be created ({type(exc).__name__}: {exc}); for MuJoCo "
            'tasks install gymnasium[mujoco] (pip install "gymnasium[mujoco]")'
        ) from exc
    try:
        if not isinstance(env.action_space, spaces.Box):
            raise ValueError(
                f"environment {env_id!r} has action space {env.action_space}; this app needs a "
                "continuous (Box) action space, e.g. a MuJoCo task such as HalfCheetah-v5"
            )
    finally:
        env.close()


def _env_factory(env_id: str, rescale_actions: bool, render_mode: str | None = None) -> Callable:
    def make() -> gym.Env:
        env = gym.make(env_id, render_mode=render_mode)
        if rescale_actions:
            # Tianshou's action_scaling: the Gaussian policy acts in [-1, 1]; the env sees
            # the action mapped linearly onto its own bounds (Humanoid's are +-0.4).
            env = gym.wrappers.RescaleAction(
                env, min_action=np.float32(-1.0), max_action=np.float32(1.0)
            )
        return Monitor(env)  # true (unnormalized) episode returns for logs and evaluation

    return make


def make_train_env(env_id: str, settings: PPOSettings) -> VecNormalize:
    """``n_envs`` copies in one process, with running observation/reward normalization."""
    venv = DummyVecEnv([_env_factory(env_id, settings.rescale_actions)] * settings.n_envs)
    return VecNormalize(
        venv, norm_obs=settings.norm_obs, norm_reward=settings.norm_reward, gamma=settings.gamma
    )


def make_eval_env(
    env_id: str, settings: PPOSettings, n_envs: int | None = None, render_mode: str | None = None
) -> VecNormalize:
    """Evaluation envs: observation statistics frozen (``training=False``), raw rewards.

    Copy the training statistics in with :func:`sync_obs_stats` before each evaluation.
    """
    n = n_envs or min(settings.eval_episodes, 10)
    venv = DummyVecEnv([_env_factory(env_id, settings.rescale_actions, render_mode)] * n)
    return VecNormalize(
        venv, training=False, norm_obs=settings.norm_obs, norm_reward=False, gamma=settings.gamma
    )


def sync_obs_stats(train_env: VecNormalize, eval_env: VecNormalize) -> None:
    """Give the eval env a frozen copy of the training env's observation statistics."""
    eval_env.obs_rms = train_env.obs_rms.copy()
    eval_env.clip_obs = train_env.clip_obs
    eval_env.epsilon = train_env.epsilon
