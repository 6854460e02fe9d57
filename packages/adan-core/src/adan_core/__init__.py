"""adan-core: the Adan optimizer (single-tensor, foreach, fused Triton and compiled CPU paths), the
Win family, and the helpers every app uses to swap optimizers.

The functional form lives in :mod:`adan_core.functional` (``adan_core.functional.adan``), as
``torch.optim.adamw.adamw`` does for AdamW.
"""

from .adan import Adan
from .clip import clip_factor, global_grad_norm
from .optim_factory import (
    add_optimizer_args,
    available_optimizers,
    create_optimizer,
    optimizer_class_and_kwargs,
    register_optimizer,
)
from .win import Adam_Win, AdamW_Win, LAMB_Win, SGD_Win

__all__ = [
    "Adan",
    "AdamW_Win",
    "Adam_Win",
    "LAMB_Win",
    "SGD_Win",
    "add_optimizer_args",
    "available_optimizers",
    "clip_factor",
    "create_optimizer",
    "global_grad_norm",
    "optimizer_class_and_kwargs",
    "register_optimizer",
]
__version__ = "0.1.0"
