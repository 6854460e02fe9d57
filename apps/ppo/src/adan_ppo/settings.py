"""PPO hyper-parameters and the ``paper`` preset (Tianshou v0.4.9 PPO defaults mapped to SB3)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class PPOSettings:
    """Everything that decides what a PPO run computes (apart from task, optimizer and seed).

    Defaults are the ``paper`` preset: Tianshou's PPO defaults, which the Adan paper kept.
    """

    n_envs: int = 64  # Tianshou training-num
    n_steps: int = 32  # per env: 64 x 32 = 2048 env steps per collect (step-per-collect)
    n_epochs: int = 10  # repeat-per-collect
    batch_size: int = 64
    lr_decay: bool = True  # linear to 0 over the run, one factor per update (LambdaLR)
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    vf_coef: float = 0.25
    ent_coef: float = 0.0
    max_grad_norm: float = 0.5
    normalize_advantage: bool = False  # Tianshou norm-adv 0
    hidden: tuple[int, ...] = (64, 64)  # separate actor and critic MLPs, tanh
    log_std_init: float = -0.5
    value_head_gain: float = (
        2**0.5
    )  # Tianshou: orthogonal sqrt(2) for every Linear incl. critic head
    norm_obs: bool = True
    norm_reward: bool = True
    rescale_actions: bool = True  # Tianshou action_scaling: policy acts in [-1, 1]
    total_steps: int = 3_072_000  # 100 epochs x 30,720 steps
    eval_every: int = 30_720
    eval_episodes: int = 10
    eval_deterministic: bool = True

    @property
    def rollout_size(self) -> int:
        """Env steps per PPO update (collect)."""
        return self.n_envs * self.n_steps

    def replace(self, **changes) -> PPOSettings:
        """Copy with some fields changed; ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent setting and how to fix it."""
        positive = ("n_envs", "n_steps", "n_epochs", "batch_size", "total_steps", "eval_every")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.eval_episodes < 1:
            raise ValueError(f"eval_episodes must be at least 1, got {self.eval_episodes}")
        if self.rollout_size % self.batch_size:
            raise ValueError(
                f"batch size {self.batch_size} does not divide the rollout of n_envs x n_steps = "
                f"{self.rollout_size} env steps; pick a batch size that divides it (SB3 would "
                "otherwise train on a truncated last minibatch)"
            )
        if self.total_steps % self.rollout_size or self.eval_every % self.rollout_size:
            raise ValueError(
                "total_steps and eval_every must be multiples of the rollout size "
                f"{self.rollout_size}; use round_to_rollouts()"
            )

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PPOSettings:
        d = dict(d)
        d["hidden"] = tuple(d["hidden"])
        return cls(**d)


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    return -(-value // multiple) * multiple


def round_to_rollouts(settings: PPOSettings) -> tuple[PPOSettings, list[str]]:
    """Round total_steps and eval_every up to whole rollouts; return notes on what changed.

    SB3 only stops or evaluates between rollouts, so e.g. "every 30,000 steps" with 2,048-step
    rollouts means every 30,720 steps, which is exactly Tianshou's epoch.
    """
    notes = []
    changes = {}
    for name in ("total_steps", "eval_every"):
        value = getattr(settings, name)
        rounded = round_up(value, settings.rollout_size)
        if rounded != value:
            notes.append(
                f"{name} {value} rounded up to {rounded} (whole rollouts of "
                f"{settings.rollout_size} env steps)"
            )
            changes[name] = rounded
    return dataclasses.replace(settings, **changes), notes


PRESETS: dict[str, PPOSettings] = {
    "paper": PPOSettings(),
}

# Optimizer settings of the paper (EXPERIMENTS.md 1.1/1.2): lr 3e-4 with eps 1e-8 for both,
# default betas, no weight decay. SB3 would silently use eps 1e-5 for Adam without this.
PAPER_LR = 3e-4
PAPER_EPS = 1e-8
