"""The settings of one run as a validated dataclass, the paper's presets and the budgets.

``paper`` is AdaBelief's PTB command (salesforce/awd-lstm-lm defaults plus its flags): see
the mapping table in the app README. ``scaled`` keeps every setting but shrinks the model and
the schedule (the lr drops stay at the same fractions of training). ``quick`` is the pipeline
check on a budget of minutes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

# Where the setting divides the lr by 10, as fractions of its 200 epochs (epochs 100 and 145).
DROP_FRACTIONS = (100 / 200, 145 / 200)


class SettingsError(ValueError):
    """A setting or preset that cannot run; the message names it and the fix."""


@dataclass(frozen=True)
class LSTMSettings:
    """Everything one run computes, except the optimizer and the seed."""

    nlayers: int = 3
    emsize: int = 400
    nhid: int = 1150
    dropout: float = 0.4  # locked dropout on the last layer's output
    dropouth: float = 0.25  # locked dropout between LSTM layers
    dropouti: float = 0.4  # locked dropout on the embeddings
    dropoute: float = 0.1  # embedding word dropout
    wdrop: float = 0.5  # DropConnect on the hidden-to-hidden weights
    weight_drop_compat: bool = False  # True: the setting's frozen raw W_hh (see model.py)
    alpha: float = 2.0  # activation regularization
    beta: float = 1.0  # temporal activation regularization
    bptt: int = 70
    batch_size: int = 20
    eval_batch_size: int = 10
    test_batch_size: int = 1
    epochs: int = 200
    when: tuple[int, ...] = (100, 145)  # lr / 10 after these epochs
    clip: float = 0.25  # global gradient norm, outside the optimizer
    train_tokens: int | None = None  # use only the first N training tokens (quick budget)

    def __post_init__(self) -> None:
        checks = [
            (self.nlayers >= 1, f"nlayers must be at least 1, got {self.nlayers}"),
            (self.emsize >= 1 and self.nhid >= 1, "emsize and nhid must be positive"),
            (self.bptt >= 5, f"bptt must be at least 5 (the shortest sequence), got {self.bptt}"),
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.clip >= 0, f"clip must be >= 0 (0 disables), got {self.clip}"),
            (
                min(self.batch_size, self.eval_batch_size, self.test_batch_size) >= 1,
                "batch sizes must be positive",
            ),  # fmt: skip
            (
                self.train_tokens is None or self.train_tokens >= 2 * self.batch_size,
                f"train_tokens must hold at least two rows of {self.batch_size}",
            ),  # fmt: skip
            (
                all(1 <= w <= self.epochs for w in self.when)
                and list(self.when) == sorted(self.when),
                f"when {list(self.when)} must be increasing epochs within 1..{self.epochs}",
            ),  # fmt: skip
        ]
        for name in ("dropout", "dropouth", "dropouti", "dropoute", "wdrop"):
            p = getattr(self, name)
            checks.append((0.0 <= p < 1.0, f"{name} must be in [0, 1), got {p}"))
        for ok, message in checks:
            if not ok:
                raise SettingsError(message)

    def lr_factor(self, epoch: int) -> float:
        """The lr multiplier during ``epoch`` (1-based): / 10 after each epoch in ``when``."""
        return 0.1 ** sum(w < epoch for w in self.when)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["when"] = list(self.when)
        return d


def task_label(nlayers: int, compat: bool) -> str:
    """The grid's name for a depth and weight-drop mode: ``L2``, or ``L2-compat`` for runs with
    the setting's frozen recurrent weights (run folders and summaries use it alike)."""
    return f"L{nlayers}" + ("-compat" if compat else "")


def scaled_when(epochs: int) -> tuple[int, ...]:
    """The setting's lr drops (after epochs 100 and 145 of 200) for a schedule of ``epochs``."""
    return tuple(sorted({max(1, min(epochs, round(f * epochs))) for f in DROP_FRACTIONS}))


PRESETS: dict[str, dict] = {
    "paper": {},
    # A complete schedule at reduced scale: a 200-wide model, 8 epochs, drops after 4 and 6.
    "scaled": {"emsize": 200, "nhid": 200, "epochs": 8, "when": scaled_when(8)},
    # The pipeline on a budget of minutes: a 128-wide model on the first 200k training tokens.
    "quick": {
        "emsize": 128,
        "nhid": 128,
        "epochs": 3,
        "when": scaled_when(3),
        "train_tokens": 200_000,
    },  # fmt: skip
}


def preset_settings(name: str, nlayers: int, **overrides) -> LSTMSettings:
    """The named preset for ``nlayers`` layers, with ``overrides`` (None values ignored)."""
    if name not in PRESETS:
        raise SettingsError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[name], "nlayers": nlayers}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if overrides.get("epochs") is not None and overrides.get("when") is None:
        values["when"] = scaled_when(values["epochs"])  # the drops follow the new length
    try:
        return replace(LSTMSettings(), **values)
    except TypeError as exc:
        raise SettingsError(f"preset {name!r}: {exc}") from None


@dataclass(frozen=True)
class OptimizerPreset:
    """The setting's optimizer hyper-parameters; ``lr`` per number of layers."""

    lr: dict[int, float]
    weight_decay: float
    betas: tuple[float, ...]
    eps: float = 1e-8
    note: str = ""
    extra: dict = field(default_factory=dict)

    def lr_for(self, nlayers: int) -> float:
        return self.lr.get(nlayers, self.lr[max(self.lr)])


OPTIMIZER_PRESETS: dict[str, OptimizerPreset] = {
    # AdaBelief's runs: torch.optim.Adam(params, lr, weight_decay=wdecay); its eps flag is not
    # passed to Adam, which therefore runs at eps 1e-8.
    "adam": OptimizerPreset({1: 1e-3, 2: 1e-2, 3: 1e-2}, 1.2e-6, (0.9, 0.999)),
    # The Adan paper: lr 0.01, weight decay 0.02, default betas, every depth.
    "adan": OptimizerPreset({1: 1e-2, 2: 1e-2, 3: 1e-2}, 0.02, (0.98, 0.92, 0.99)),
}


def optimizer_preset(opt: str) -> OptimizerPreset | None:
    """The setting's hyper-parameters for ``opt``, or None when the setting has none."""
    return OPTIMIZER_PRESETS.get(opt)
