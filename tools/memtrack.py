"""Peak bytes of the tensors an operation allocates, on any device (CPU included).

torch has no CPU allocator statistics, so this counts at the dispatcher: every aten op output that
owns a storage no input owned is an allocation, alive until its Python tensor is collected. Views
and in-place results allocate nothing. Temporaries made and freed inside one aten kernel are not
seen; the foreach kernels here return their temporaries, so what an optimizer step keeps alive
between ops is counted.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakTemporaries(TorchDispatchMode):
    """``with PeakTemporaries() as m: fn()`` then ``m.peak`` (bytes) and ``m.live`` (bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_flatten((args, kwargs or {}))[0]
            if isinstance(t, torch.Tensor)
        }
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr in inputs or ptr in self._seen or storage.nbytes() == 0:
                continue
            self._seen.add(ptr)
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(t, self._free, ptr, storage.nbytes())
        return out

    def _free(self, ptr: int, nbytes: int) -> None:
        self._seen.discard(ptr)
        self.live -= nbytes


def peak_temporary_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes allocated by ``fn`` above what existed before it (its temporaries)."""
    with PeakTemporaries() as tracker:
        fn()
    return tracker.peak
