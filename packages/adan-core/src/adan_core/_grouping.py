"""The one place where parallel tensor lists are split into homogeneous buckets.

Every kernel in this package wants tensors that share a device and dtypes (a foreach op, a Triton
launch, a compiled CPU call). Optimizers hold parallel lists (params, grads, states...), so a
bucket is the same positions taken from each list, in their original order.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from torch import Tensor

__all__ = ["bucketize", "device_dtype_key", "role_dtypes_key"]

T = TypeVar("T")


def bucketize(
    lists: Sequence[Sequence[T]], key: Callable[[int], Hashable]
) -> dict[Hashable, list[list[T]]]:
    """Split parallel ``lists`` into buckets of equal ``key(i)``, keeping first-seen order.

    Returns ``{key: [list0_part, list1_part, ...]}`` where each part holds the elements of one
    input list whose positions share the key.
    """
    positions: dict[Hashable, list[int]] = {}
    for i in range(len(lists[0])):
        positions.setdefault(key(i), []).append(i)
    return {k: [[seq[i] for i in idx] for seq in lists] for k, idx in positions.items()}


def device_dtype_key(tensors: Sequence[Tensor]) -> Callable[[int], Hashable]:
    """Key of position i: (device, dtype) of ``tensors[i]``."""
    return lambda i: (tensors[i].device, tensors[i].dtype)


def role_dtypes_key(*roles: Sequence[Tensor]) -> Callable[[int], Hashable]:
    """Key of position i: the first role's device, then the dtype of every role at i."""
    first = roles[0]
    return lambda i: (first[i].device, *(r[i].dtype for r in roles))
