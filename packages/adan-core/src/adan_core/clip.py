"""Global-norm gradient clipping that never syncs the host.

The clip factor ``c = min(1, C / (G + eps))`` is returned as a 0-d fp32 tensor on the device of the
first gradient, so kernels can read it through a pointer and a step stays CUDA-graph capturable.

``G`` is the L2 norm over *every* gradient handed in (all groups), accumulated in fp32 (fp64 for fp64
grads) so fp16 gradients above 255.9 do not overflow to inf. Gradients on several devices are reduced
per device and summed on the first one. DTensor gradients (FSDP2) are reduced across their device
mesh, and ``sharded=True`` all-reduces the sum of squares over the default process group for
optimizers that own a disjoint shard of the parameters (``ZeroRedundancyOptimizer``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["global_grad_norm", "clip_factor"]


def _is_dtensor(t: Tensor) -> bool:
    return type(t).__name__ == "DTensor"


def _local_sum_of_squares(grads: Sequence[Tensor], out_device: torch.device) -> Tensor:
    """Sum of g**2 over plain tensors, computed per (device, dtype) with fp32/fp64 accumulation."""
    buckets: dict[tuple[torch.device, torch.dtype], list[Tensor]] = defaultdict(list)
    for g in grads:
        buckets[(g.device, g.dtype)].append(g)
    acc_dtype = torch.float64 if any(dt == torch.float64 for _, dt in buckets) else torch.float32
    total = torch.zeros((), dtype=acc_dtype, device=out_device)
    for (_, dtype), bucket in buckets.items():
        norm_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        norms = torch._foreach_norm(bucket, 2, dtype=norm_dtype)
        sq = torch.stack(norms).square().sum()
        total = total + sq.to(device=out_device, dtype=acc_dtype)
    return total


def global_grad_norm(grads: Sequence[Tensor], *, sharded: bool = False) -> Tensor:
    """L2 norm over all ``grads`` as a 0-d tensor on the first grad's device, without a host sync.

    Args:
        grads: gradients of every parameter that takes part in the step (dense tensors or DTensors).
        sharded: True when this rank holds a disjoint shard of the parameters (ZeRO-style), so the
            sum of squares is all-reduced across the default process group.
    """
    if not grads:
        raise ValueError("global_grad_norm needs at least one gradient")
    dtensors = [g for g in grads if _is_dtensor(g)]
    plain = [g for g in grads if not _is_dtensor(g)]
    first = grads[0]
    device = first.to_local().device if _is_dtensor(first) else first.device
    sum_sq = _local_sum_of_squares(plain, device) if plain else torch.zeros((), device=device)
    if dtensors:
        # DTensor's norm carries a partial placement; full_tensor() reduces over the right mesh dims
        # (shards are summed, replicas are not double counted).
        for g in dtensors:
            n = torch.linalg.vector_norm(g, 2, dtype=torch.float32)
            sum_sq = sum_sq + n.full_tensor().to(device=device, dtype=sum_sq.dtype).square()
    if sharded:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "sharded=True needs an initialised torch.distributed process group; "
                "call torch.distributed.init_process_group() first or pass sharded=False"
            )
        dist.all_reduce(sum_sq)
    return sum_sq.sqrt()


def clip_factor(norm: Tensor, max_norm: float, eps: float) -> Tensor:
    """``min(1, max_norm / (norm + eps))`` as a device tensor (no ``.item()``), in the norm's
    precision (fp32, or fp64 for fp64 gradients)."""
    return torch.clamp(max_norm / (norm + eps), max=1.0)
