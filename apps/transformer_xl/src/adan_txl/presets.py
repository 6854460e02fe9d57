"""The settings of one run as a validated dataclass, the paper's presets and the budgets.

Two kinds of preset:

- a **scale** (``--preset``): the model, the segment lengths, the batch and the step budget.
  ``wt103-base`` is the paper's (kimiyoung/transformer-xl's ``run_wt103_base.sh`` as the Adan
  runs used it); ``ptb-scaled`` is a small model with a complete warm-up + cosine schedule for
  the offline comparison on Penn Treebank; ``quick`` is the pipeline check of minutes.
- a **run** (``--run``): one row of the paper's table, i.e. the optimizer, its lr, warm-up and
  number of steps (``adam-200k``, ``adan-50k``, ``adan-100k``, ``adan-200k``).

Without ``--run``, :data:`OPTIMIZER_PRESETS` give each optimizer the paper's hyper-parameters and
its warm-up as the same fraction of the scale's steps (Adan: 3,000 of 200,000).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from .model import ModelConfig, Window


class SettingsError(ValueError):
    """A setting or preset that cannot run; the message names it and the fix."""


# The paper's adaptive softmax boundaries, for its 267,735-word vocabulary (data.py scales them).
WT103_CUTOFFS = (20000, 40000, 200000)
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TXLSettings:
    """Everything one run computes, except the optimizer's hyper-parameters and the seed."""

    # model (cutoffs None: the paper's, scaled to the corpus vocabulary by data.py)
    n_layer: int = 16
    n_head: int = 10
    d_model: int = 410
    d_head: int = 41
    d_inner: int = 2100
    dropout: float = 0.1
    dropatt: float = 0.0
    div_val: int = 1
    adaptive: bool = True
    # segments: training and the paper's evaluation (train.py's eval_tgt_len = tgt_len)
    tgt_len: int = 150
    mem_len: int = 150
    eval_tgt_len: int = 150
    # the standard Transformer-XL evaluation (its eval.py)
    std_tgt_len: int = 64
    std_mem_len: int = 640
    std_clamp_len: int = 400
    # batch: the global batch in streams of tgt_len tokens, whatever the number of devices
    batch_size: int = 60
    eval_batch_size: int = 10
    # schedule
    max_step: int = 200_000
    warmup_step: int | None = None  # None: the optimizer preset's fraction of max_step
    eval_interval: int = 4000
    clip: float = 0.25  # global gradient norm, outside the optimizer
    lr_schedule_compat: bool = False  # True: the original's first step at the full lr
    precision: str = "fp32"
    train_tokens: int | None = None  # train on the first N tokens only (quick budget)
    eval_tokens: int | None = None  # evaluate on the first N tokens of valid/test only

    def __post_init__(self) -> None:
        checks = [
            (self.tgt_len >= 1, f"tgt_len must be at least 1, got {self.tgt_len}"),
            (
                self.mem_len >= 1,
                f"mem_len must be at least 1 (Transformer-XL without memory is not this "
                f"model), got {self.mem_len}",
            ),  # fmt: skip
            (self.eval_tgt_len >= 1, f"eval_tgt_len must be at least 1, got {self.eval_tgt_len}"),
            (
                self.std_tgt_len >= 1 and self.std_mem_len >= 1,
                "std_tgt_len and std_mem_len must be at least 1",
            ),  # fmt: skip
            (min(self.batch_size, self.eval_batch_size) >= 1, "batch sizes must be positive"),
            (self.max_step >= 1, f"max_step must be at least 1, got {self.max_step}"),
            (
                self.warmup_step is None or 0 <= self.warmup_step < self.max_step,
                f"warmup_step must be in 0..max_step-1 ({self.max_step - 1}), got "
                f"{self.warmup_step}",
            ),  # fmt: skip
            (self.eval_interval >= 1, f"eval_interval must be >= 1, got {self.eval_interval}"),
            (self.clip >= 0, f"clip must be >= 0 (0 disables), got {self.clip}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
            (
                self.train_tokens is None or self.train_tokens >= 2 * self.batch_size,
                f"train_tokens must hold at least two rows of {self.batch_size} streams",
            ),  # fmt: skip
            (
                self.eval_tokens is None or self.eval_tokens >= 2 * self.eval_batch_size,
                "eval_tokens must hold at least two rows of the eval batch",
            ),  # fmt: skip
            (0 <= self.dropout < 1 and 0 <= self.dropatt < 1, "dropouts must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise SettingsError(message)

    def model_config(self, n_token: int, cutoffs: tuple[int, ...]) -> ModelConfig:
        """The architecture for a vocabulary of ``n_token`` words (cutoffs from data.py)."""
        return ModelConfig(
            n_token=n_token,
            n_layer=self.n_layer,
            n_head=self.n_head,
            d_model=self.d_model,
            d_head=self.d_head,
            d_inner=self.d_inner,
            dropout=self.dropout,
            dropatt=self.dropatt,
            cutoffs=tuple(cutoffs) if self.adaptive else (),
            div_val=self.div_val,
        )

    @property
    def train_window(self) -> Window:
        return Window(mem_len=self.mem_len)

    @property
    def standard_window(self) -> Window:
        return Window(self.std_mem_len, self.std_clamp_len, same_length=True)

    def to_dict(self) -> dict:
        return asdict(self)


def lr_at(step: int, base_lr: float, warmup: int, max_step: int, compat: bool = False) -> float:
    """The lr of optimizer step ``step`` (1-based): linear warm-up, then cosine decay to 0 at
    ``max_step``, evaluated at the absolute step (not restarted after the warm-up).

    The original sets the lr *after* each step, so its step ``s`` runs at the value computed
    for ``s - 1``, and its first step at the full lr, before any warm-up (the scheduler's
    initial value). ``compat=True`` reproduces that; by default the warm-up starts at
    ``base_lr / warmup`` and the cosine part is the original's.
    """
    done = step - 1  # steps taken before this one: the original's train_step
    if compat:
        if done == 0:
            return base_lr
        if done < warmup:
            return base_lr * done / warmup
    elif step <= warmup:
        return base_lr * step / warmup
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * done / max_step))


SCALES: dict[str, dict] = {
    # The paper: Transformer-XL base on WikiText-103 (151,107,538 parameters), 200k steps.
    "wt103-base": {},
    # A small Transformer-XL for Penn Treebank on CPU: the base model's shape at about half
    # width and a quarter of its depth, segments of 70 and a complete schedule of 2,000 steps
    # (2.8 M tokens, three passes over PTB).
    "ptb-scaled": {
        "n_layer": 4,
        "n_head": 4,
        "d_model": 200,
        "d_head": 50,
        "d_inner": 800,
        "tgt_len": 70,
        "mem_len": 70,
        "eval_tgt_len": 70,
        "batch_size": 20,
        "max_step": 2000,
        "eval_interval": 100,
    },
    # The pipeline in minutes: two 96-wide layers, 1,200 steps (0.9 of a pass over PTB).
    "quick": {
        "n_layer": 2,
        "n_head": 4,
        "d_model": 96,
        "d_head": 24,
        "d_inner": 384,
        "tgt_len": 35,
        "mem_len": 35,
        "eval_tgt_len": 35,
        "std_tgt_len": 32,
        "std_mem_len": 140,
        "std_clamp_len": 100,
        "batch_size": 20,
        "max_step": 1200,
        "eval_interval": 150,
        "eval_tokens": 30_000,
    },
}


def scale_settings(name: str, **overrides) -> TXLSettings:
    """The named scale with ``overrides`` (None values ignored)."""
    if name not in SCALES:
        raise SettingsError(f"unknown preset {name!r}; choose one of {', '.join(SCALES)}")
    values = {**SCALES[name], **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return replace(TXLSettings(), **values)
    except TypeError as exc:
        raise SettingsError(f"preset {name!r}: {exc}") from None


@dataclass(frozen=True)
class OptimizerPreset:
    """The paper's hyper-parameters for one optimizer; warm-up as a fraction of the steps."""

    lr: float
    weight_decay: float
    betas: tuple[float, ...]
    warmup_fraction: float
    eps: float = 1e-8
    extra: dict = field(default_factory=dict)


OPTIMIZER_PRESETS: dict[str, OptimizerPreset] = {
    # train.py: torch.optim.Adam(model.parameters(), lr): no weight decay (its --wd is unused).
    "adam": OptimizerPreset(2.5e-4, 0.0, (0.9, 0.999), 0.0),
    # The 100k/200k runs' log: Adan(lr 1e-3, betas (0.9, 0.9, 0.999), weight_decay 0.02),
    # proximal decay on every parameter, 3,000 warm-up steps of 200,000.
    "adan": OptimizerPreset(1e-3, 0.02, (0.9, 0.9, 0.999), 3000 / 200_000),
}


@dataclass(frozen=True)
class RunPreset:
    """One run of the paper's table: optimizer, lr, warm-up, steps, and its logged result."""

    opt: str
    lr: float
    warmup_step: int
    max_step: int
    test_ppl: float  # train.py's end-of-training test perplexity in the released log
    valid_ppl: float | None  # its last logged valid perplexity


RUNS: dict[str, RunPreset] = {
    "adam-200k": RunPreset("adam", 2.5e-4, 0, 200_000, 24.241, 23.396),
    "adan-50k": RunPreset("adan", 1.5e-3, 5000, 50_000, 26.217, None),
    "adan-100k": RunPreset("adan", 1e-3, 3000, 100_000, 24.264, 23.503),
    "adan-200k": RunPreset("adan", 1e-3, 3000, 200_000, 23.511, 22.725),
}


def warmup_for(opt: str, settings: TXLSettings) -> int:
    """The warm-up of ``opt`` at this scale: the setting's if given, else the optimizer
    preset's fraction of ``max_step`` (0 for optimizers without a preset)."""
    if settings.warmup_step is not None:
        return settings.warmup_step
    preset = OPTIMIZER_PRESETS.get(opt)
    return round(preset.warmup_fraction * settings.max_step) if preset else 0


def task_label(preset: str, run: str | None, max_step: int | None = None) -> str:
    """The grid's name for a run's scale and budget: ``ptb-scaled``, or ``wt103-base-100k``
    for a paper run (run folders and summaries use it alike). Runs of one task share a step
    budget, so their curves can be compared step by step."""
    if run is not None:
        return f"{preset}-{run.split('-', 1)[1]}"
    if max_step is not None and max_step != SCALES.get(preset, {}).get("max_step", 200_000):
        return f"{preset}-{max_step // 1000}k" if max_step % 1000 == 0 else f"{preset}-{max_step}"
    return preset
