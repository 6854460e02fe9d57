"""fairseq's ``--optimizer adan``: adan-core's Adan behind fairseq's optimizer interface.

The config mirrors the Adan paper's fairseq adapter (``adan_betas``, ``adan_eps``,
``weight_decay``), plus what that adapter lacked: ``no_prox`` is forwarded (the paper's copy
dropped it, so its decay was always proximal; proximal stays the default here),
``max_grad_norm`` is Adan's own clipping (fairseq's ``optimization.clip_norm`` is the usual
way, as the paper did), and ``adan_impl`` picks adan-core's implementation.

fairseq wraps this optimizer itself: with ``common.fp16``/``bf16`` its FP16Optimizer keeps fp32
master weights (flat or per parameter) and dynamic loss scaling, and Adan steps those fp32
masters; ``--memory-efficient-fp16`` is refused by fairseq, because Adan's state would then sit
in fp16 (the paper's ``fp16_adan_stats=True`` raised for the same reason).

Nothing here runs at import: :func:`register` adds the optimizer to fairseq's registry (the
``--user-dir`` plugin, :data:`USER_DIR`, calls it) and
:func:`allow_checkpoint_globals` lets torch's safe loader read fairseq checkpoints.
"""

# No `from __future__ import annotations`: fairseq builds its argparse options from the
# config dataclass's field types, which must be real types, not strings.
import ast
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List  # noqa: UP035 - fairseq/omegaconf read these annotations

IMPLEMENTATIONS = {
    # adan_impl -> Adan(foreach=, fused=)
    "auto": {"foreach": None, "fused": None},  # adan-core chooses (fused Triton on CUDA)
    "fused": {"foreach": None, "fused": True},
    "foreach": {"foreach": True, "fused": False},
    "single": {"foreach": False, "fused": False},
}
NAME = "adan"
# fairseq's --user-dir: a folder alone in its parent, since fairseq puts the parent on sys.path
USER_DIR = Path(__file__).resolve().parent / "fairseq_plugin" / "adan_fairseq"
IMPLEMENTATION_MARK = "adan-core implementation:"  # the log line the run folders record


def parse_betas(value: Any) -> tuple[float, float, float]:
    """``adan_betas`` as fairseq writes them: a string ``"(0.98, 0.92, 0.99)"`` or a list.

    Parsed as a literal, never ``eval``-ed; anything but three numbers in [0, 1) is refused with
    the expected form in the message.
    """
    raw = value
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            value = None
    elif not isinstance(value, Sequence):  # an omegaconf ListConfig is a Sequence
        value = None
    ok = (
        value is not None
        and len(value) == 3
        and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in value)
        and all(0.0 <= float(b) < 1.0 for b in value)
    )
    if not ok:
        raise ValueError(
            f"optimizer.adan_betas={raw!r} is not three numbers in [0, 1): write it as "
            "adan_betas: '(0.98, 0.92, 0.99)' (code convention, 1 - the paper's betas)"
        )
    return tuple(float(b) for b in value)


def adan_kwargs(cfg: Any) -> dict[str, Any]:
    """``adan_core.Adan`` keyword arguments from a fairseq ``optimizer`` config, checked."""
    lr = cfg.lr[0] if isinstance(cfg.lr, Collection) else cfg.lr
    impl = str(cfg.adan_impl)
    if impl not in IMPLEMENTATIONS:
        raise ValueError(
            f"optimizer.adan_impl={impl!r} is not one of {sorted(IMPLEMENTATIONS)}: use auto "
            "(adan-core chooses), fused, foreach or single"
        )
    for name in ("adan_eps", "weight_decay", "max_grad_norm"):
        if float(getattr(cfg, name)) < 0:
            raise ValueError(f"optimizer.{name}={getattr(cfg, name)} must be >= 0")
    return {
        "lr": float(lr),
        "betas": parse_betas(cfg.adan_betas),
        "eps": float(cfg.adan_eps),
        "weight_decay": float(cfg.weight_decay),
        "no_prox": bool(cfg.no_prox),
        "max_grad_norm": float(cfg.max_grad_norm),
        **IMPLEMENTATIONS[impl],
    }


def register() -> type:
    """Register ``adan`` in fairseq's optimizer registry (once) and return its class.

    Idempotent, so the plugin may be imported under two names (``--user-dir`` imports its folder
    as a top-level module) without fairseq's duplicate-registration error.
    """
    from fairseq.optim import OPTIMIZER_REGISTRY

    if NAME in OPTIMIZER_REGISTRY:
        return OPTIMIZER_REGISTRY[NAME]
    return _define()


def _define() -> type:
    from fairseq.dataclass import FairseqDataclass
    from fairseq.optim import FairseqOptimizer, register_optimizer
    from omegaconf import II

    from adan_core import Adan
    from adan_core.optim_factory import implementation

    @dataclass
    class FairseqAdanConfig(FairseqDataclass):
        adan_betas: Any = field(
            default="(0.98, 0.92, 0.99)",
            metadata={"help": "Adan's (b1, b2, b3), code convention (1 - the paper's betas)"},
        )
        adan_eps: float = field(default=1e-8, metadata={"help": "epsilon for Adan"})
        weight_decay: float = field(default=0.0, metadata={"help": "weight decay (times lr)"})
        no_prox: bool = field(
            default=False,
            metadata={"help": "AdamW-style decay instead of the paper's proximal decay"},
        )
        max_grad_norm: float = field(
            default=0.0,
            metadata={
                "help": "Adan's own global-norm clipping (0 = off); fairseq's "
                "optimization.clip_norm is the usual way and what the paper used"
            },
        )
        adan_impl: str = field(
            default="auto",
            metadata={"help": "adan-core implementation: auto, fused, foreach or single"},
        )
        lr: List[float] = II("optimization.lr")  # noqa: UP006

    @register_optimizer(NAME, dataclass=FairseqAdanConfig)
    class FairseqAdan(FairseqOptimizer):
        """adan-core's Adan as fairseq's ``adan`` optimizer (see the module docstring)."""

        def __init__(self, cfg: FairseqAdanConfig, params):
            super().__init__(cfg)
            self._optimizer = Adan(params, **self.optimizer_config)
            logging.getLogger(__name__).info(
                "%s %s", IMPLEMENTATION_MARK, implementation(self._optimizer)
            )

        @property
        def optimizer_config(self) -> dict[str, Any]:
            """The settings fairseq re-applies over a loaded checkpoint's param groups."""
            return adan_kwargs(self.cfg)

        @property
        def supports_flat_params(self) -> bool:
            return True  # Adan is elementwise: one flat fp32 master tensor is fine

        @property
        def supports_memory_efficient_fp16(self) -> bool:
            return False  # its state would be fp16; fairseq then says so and stops

    return FairseqAdan


def checkpoint_globals() -> list:
    """What a fairseq 0.12 checkpoint pickles besides tensors, containers and numbers: the
    ``argparse.Namespace`` of its ``args`` entry (``tests/fairseq_backend`` checks a real checkpoint
    needs nothing else)."""
    import argparse

    return [argparse.Namespace]


def allow_checkpoint_globals(extra: Sequence = ()) -> None:
    """Let ``torch.load``'s default safe mode (``weights_only=True``, torch >= 2.6) read
    fairseq checkpoints, by allow-listing exactly the globals they hold; safe loading stays on
    for everything else. fairseq 0.12 calls ``torch.load`` without ``weights_only``."""
    import torch

    torch.serialization.add_safe_globals([*checkpoint_globals(), *extra])
