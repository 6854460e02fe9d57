"""adan-core: the Adan optimizer (reference, foreach, fused Triton and compiled CPU paths), the Win
family, and the helpers every app uses to swap optimizers."""

from .adan import Adan
from .clip import clip_factor, global_grad_norm
from .functional import adan

__all__ = ["Adan", "adan", "clip_factor", "global_grad_norm"]
__version__ = "0.1.0"
