"""Global-norm gradient clipping that never syncs the host.

The clip factor ``c = min(1, C / (G + eps))`` is returned as a 0-d fp32 tensor on the device of the
first gradient, so kernels can read it through a pointer and a step stays CUDA-graph capturable.

``G`` is the L2 norm over *every* gradient handed in (all groups), accumulated in fp32 (fp64 for
fp64 grads) so fp16 gradients above 255.9 do not overflow to inf. Gradients on several devices are
reduced per device and summed on the first one.

Distributed: DTensor gradients (FSDP2) always count with their global norm (local sums of squares
reduced over the mesh dims they are sharded on, one collective per mesh and placement). Plain
gradients are taken as complete unless ``sharded=True``, which all-reduces their sum of squares over
the default process group, for optimizers that own a disjoint shard of the parameters
(``ZeroRedundancyOptimizer``). DDP needs neither: its gradients are already averaged everywhere.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor

from ._grouping import bucketize, device_dtype_key
from ._layout import is_dtensor, local_tensor

__all__ = ["global_grad_norm", "clip_factor"]


def _local_sum_of_squares(grads: Sequence[Tensor], out_device: torch.device) -> Tensor:
    """Sum of g**2 over plain tensors, per (device, dtype) bucket, accumulated in fp32, or in fp64
    for every bucket as soon as one gradient is fp64 (so the fp32 part loses nothing either)."""
    buckets = bucketize([grads], device_dtype_key(grads))
    precise = any(dtype == torch.float64 for _, dtype in buckets)
    acc_dtype = torch.float64 if precise else torch.float32
    total = torch.zeros((), dtype=acc_dtype, device=out_device)
    for (bucket,) in buckets.values():
        norms = torch._foreach_norm(bucket, 2, dtype=acc_dtype)
        sq = torch.stack(norms).square().sum()
        total = total + sq.to(device=out_device)
    return total


def _dtensor_sum_of_squares(grads: Sequence[Tensor], device: torch.device) -> Tensor:
    """Global sum of g**2 over DTensor gradients (FSDP2), on ``device``.

    Grads are grouped by mesh and placements; each group's local sums of squares are added up and
    reduced with one collective: summed over the mesh dims the tensor is sharded on, not over the
    dims it is replicated on (so replicas are not counted twice). Placements other than
    Shard/Replicate (e.g. Partial grads) take the slower per-tensor DTensor norm.
    """
    try:
        from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
    except ImportError:  # torch < 2.5
        from torch.distributed._tensor import DTensor, Replicate, Shard
        from torch.distributed._tensor.placement_types import Partial

    groups: dict[tuple, list[Tensor]] = defaultdict(list)
    total = torch.zeros((), device=device)
    for g in grads:
        if all(isinstance(p, (Shard, Replicate)) for p in g.placements):
            reduce_as = tuple(
                Partial("sum") if isinstance(p, Shard) else Replicate() for p in g.placements
            )
            groups[(g.device_mesh, reduce_as)].append(g.to_local())
        else:
            n = torch.linalg.vector_norm(g, 2, dtype=torch.float32)
            total = total + n.full_tensor().to(device=device, dtype=total.dtype).square()
    for (mesh, reduce_as), local_grads in groups.items():
        local_sq = _local_sum_of_squares(local_grads, local_grads[0].device)
        summed = DTensor.from_local(local_sq, mesh, reduce_as, run_check=False).full_tensor()
        total = total.to(summed.dtype) + summed.to(device)
    return total


def _collective_device() -> torch.device:
    """Device the default process group reduces on (for a rank that has no gradient)."""
    import torch.distributed as dist

    if "nccl" in str(dist.get_backend()) and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def global_grad_norm(grads: Sequence[Tensor], *, sharded: bool = False) -> Tensor:
    """L2 norm over all ``grads`` as a 0-d tensor on the first grad's device, without a host sync.

    Args:
        grads: gradients of every parameter that takes part in the step (dense tensors or DTensors).
            DTensor gradients (FSDP2) always count with their global norm.
        sharded: True when this rank holds a disjoint shard of the (non-DTensor) parameters
            (ZeRO-style), so their sum of squares is all-reduced across the default process group.
            Every rank must then call this on every step, also with an empty ``grads`` (a rank
            whose parameters got no gradient contributes 0).
    """
    if sharded:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "sharded=True needs an initialised torch.distributed process group; "
                "call torch.distributed.init_process_group() first or pass sharded=False"
            )
    elif not grads:
        raise ValueError("global_grad_norm needs at least one gradient")
    dtensors = [g for g in grads if is_dtensor(g)]
    plain = [g for g in grads if not is_dtensor(g)]
    if grads:
        device = local_tensor(grads[0]).device
    else:
        device = _collective_device()
    sum_sq = _local_sum_of_squares(plain, device) if plain else torch.zeros((), device=device)
    if sharded:
        # Only the plain grads are rank-local shards; DTensor norms below are already global.
        # Ranks must agree on the dtype of the collective: reduce in fp64, then keep ours.
        local_dtype = sum_sq.dtype
        sum_sq = sum_sq.to(torch.float64)
        dist.all_reduce(sum_sq)
        sum_sq = sum_sq.to(local_dtype)
    if dtensors:
        dt_sq = _dtensor_sum_of_squares(dtensors, device)
        sum_sq = sum_sq.to(torch.promote_types(sum_sq.dtype, dt_sq.dtype)) + dt_sq
    return sum_sq.sqrt()


def clip_factor(norm: Tensor, max_norm: float, eps: float) -> Tensor:
    """``min(1, max_norm / (norm + eps))`` as a device tensor (no ``.item()``), in the norm's
    precision (fp32, or fp64 for fp64 gradients)."""
    return torch.clamp(max_norm / (norm + eps), max=1.0)
