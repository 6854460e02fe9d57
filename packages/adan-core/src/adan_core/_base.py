"""What Adan and the Win optimizers share: optimizer-wide clipping (with AMP unscaling), the rule
that its threshold is one value for all groups, and the refusal of sparse gradients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .clip import clip_factor, global_grad_norm

__all__ = ["ClippedOptimizer"]


class ClippedOptimizer(Optimizer):
    """Base of every optimizer here: one global-norm clip factor, fed into the update.

    The threshold is ``max_grad_norm`` (equal in every group) and the clipping eps is the
    constructor's ``eps`` (never a group's). The factor stays on the device and is kept in the
    gradients' precision: fp64 when any gradient is fp64, else fp32.
    """

    #: False for clippers without eps (LAMB: min(1, C/G)).
    _clip_uses_eps: bool = True
    #: True when each rank owns a disjoint shard of the parameters (ZeRO): the norm is all-reduced.
    sharded: bool = False

    def _check_group_max_grad_norm(self, value: float) -> None:
        """A new group must keep the optimizer-wide threshold."""
        if self.param_groups and value != self.param_groups[0]["max_grad_norm"]:
            raise ValueError(
                "max_grad_norm is optimizer-wide (one global norm over all groups): pass it to "
                f"the constructor only, not per group (got {value!r} for a new group, "
                f"{self.param_groups[0]['max_grad_norm']!r} before)"
            )

    def _max_grad_norm(self) -> float:
        values = {group["max_grad_norm"] for group in self.param_groups}
        if len(values) > 1:
            raise ValueError(
                "max_grad_norm must be the same in every param group (it clips one global norm); "
                f"got {sorted(values)}"
            )
        return float(values.pop())

    def _grad_multiplier(
        self, grads: Sequence[Tensor], grad_scale: Tensor | None = None
    ) -> Tensor | None:
        """Clip factor divided by the AMP scale as a 0-d device tensor (None when both are
        absent). ``grads`` are every gradient of the step, possibly still scaled by
        ``grad_scale``."""
        max_norm = self._max_grad_norm()
        precise = any(g.dtype == torch.float64 for g in grads)
        dtype = torch.float64 if precise else torch.float32
        mul = None
        if max_norm > 0:
            norm = global_grad_norm(grads, sharded=self.sharded)
            if grad_scale is not None:
                norm = norm / grad_scale.to(norm.device, norm.dtype)
            eps = self.defaults["eps"] if self._clip_uses_eps else 0.0
            mul = clip_factor(norm, max_norm, eps)
        if grad_scale is not None:
            inv = grad_scale.double().reciprocal().to(dtype)
            mul = inv if mul is None else mul * inv.to(mul.device, mul.dtype)
        return mul


def check_dense_grad(optimizer: Any, p: Tensor) -> None:
    """Refuse a sparse gradient with the fix."""
    if p.grad is not None and p.grad.is_sparse:
        raise RuntimeError(
            f"{type(optimizer).__name__} does not support sparse gradients; use a dense embedding "
            "(nn.Embedding(sparse=False)) or torch.optim.SparseAdam for that parameter"
        )
