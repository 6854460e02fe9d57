"""Memory-layout checks shared by the fused paths (no Triton import here)."""

from __future__ import annotations

from torch import Tensor


def is_dtensor(t: Tensor) -> bool:
    """True for a ``torch.distributed.tensor.DTensor`` (FSDP2), without importing distributed."""
    return type(t).__name__ == "DTensor"


def local_tensor(t: Tensor) -> Tensor:
    """This rank's shard of a DTensor (same storage); any other tensor as is."""
    return t.to_local() if is_dtensor(t) else t


def non_overlapping_dense(t: Tensor) -> bool:
    """True if ``t`` covers a gap-free block of memory (contiguous, channels_last, permuted...)."""
    if t.is_contiguous():
        return True
    expected = 1
    dims = sorted(((s, st) for s, st in zip(t.shape, t.stride()) if s != 1), key=lambda x: x[1])
    for size, stride in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def dense_same_layout(ref: Tensor, *others: Tensor) -> bool:
    """True if every tensor is dense with ``ref``'s shape and strides, so element i of the flat
    memory block means the same coordinate in all of them."""
    if not non_overlapping_dense(ref):
        return False
    return all(o.shape == ref.shape and o.stride() == ref.stride() for o in others)


def flat_view(t: Tensor) -> Tensor:
    """1-D view over a dense tensor's memory block (in memory order, not logical order)."""
    return t.detach().as_strided((t.numel(),), (1,))
