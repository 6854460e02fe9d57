"""The SB3 PPO model a preset describes (networks, initialisation, loss and rollout settings)."""

from __future__ import annotations

from typing import Any, Callable, Union

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv

from .settings import PPOSettings


def build_ppo(
    env: VecEnv,
    s: PPOSettings,
    learning_rate: Union[float, Callable[[float], float]],  # noqa: UP007 - runtime on 3.9
    optimizer_class: type[torch.optim.Optimizer],
    optimizer_kwargs: dict[str, Any],
    *,
    seed: int,
    device: str = "cpu",
    tensorboard_log: str | None = None,
) -> PPO:
    """PPO as in Tianshou's MuJoCo example (see the README's preset table): separate tanh MLPs,
    orthogonal init with the value head re-initialised at ``s.value_head_gain``, no value clip."""
    model = PPO(
        "MlpPolicy",
        env,
        learning_rate=learning_rate,
        n_steps=s.n_steps,
        batch_size=s.batch_size,
        n_epochs=s.n_epochs,
        gamma=s.gamma,
        gae_lambda=s.gae_lambda,
        clip_range=s.clip_range,
        clip_range_vf=None,
        normalize_advantage=s.normalize_advantage,
        ent_coef=s.ent_coef,
        vf_coef=s.vf_coef,
        max_grad_norm=s.max_grad_norm,
        policy_kwargs=dict(
            net_arch=dict(pi=list(s.hidden), vf=list(s.hidden)),
            activation_fn=torch.nn.Tanh,
            log_std_init=s.log_std_init,
            ortho_init=True,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        ),
        seed=seed,
        device=device,
        verbose=0,
        tensorboard_log=tensorboard_log,
    )
    keep_temp_dir_clean(model)
    head = model.policy.value_net
    torch.nn.init.orthogonal_(head.weight, gain=s.value_head_gain)
    torch.nn.init.zeros_(head.bias)
    return model


def keep_temp_dir_clean(model: PPO) -> None:
    """Give a model without TensorBoard logging a logger with no outputs.

    Without a logger of its own, every ``learn()`` makes SB3 create an empty ``SB3-<time>``
    folder in the system temp dir; our metrics go to the run folder instead."""
    if model.tensorboard_log is None:
        model.set_logger(Logger(folder=None, output_formats=[]))
