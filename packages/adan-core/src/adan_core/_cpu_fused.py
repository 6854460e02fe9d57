"""Fast CPU Adan: a ``torch.compile``d one-pass loop (Inductor C++ with SIMD and OpenMP).

* Large tensors (``>= SMALL_NUMEL`` elements, dense, states in the same layout) get one call each
  of a compiled elementwise function over flat views: 44 B/param in fp32, like the GPU kernel.
* Small tensors, where a call's fixed cost would dominate, are packed: their four state tensors
  are re-pointed (``Tensor.set_``) into flat buffers owned by a pack, so a step is one gather of
  p and g, one compiled call, one scatter of p.

Hyperparameters and bias corrections enter through a small tensor of coefficients, so changing
lr (as SB3 and schedulers do every update) never recompiles. The per-parameter steps are CPU
tensors, so reading them on the host is free.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from ._layout import dense_same_layout, flat_view
from .functional import AdanHyper, _single_tensor_adan

SMALL_NUMEL = 1 << 16

_compile_failed: str | None = None


def _flat_update(p, g, m, n, d, neg, coef):
    """One Adan step over 1-D tensors. coef: [gmul, b1, b2, b3, a1, a2, inv_sqrt_bc3, eps, keep,
    lr, pre, post] (see _coefficients)."""
    gmul, b1, b2, b3 = coef[0], coef[1], coef[2], coef[3]
    a1, a2, inv_sqrt_bc3, eps = coef[4], coef[5], coef[6], coef[7]
    keep, lr, pre, post = coef[8], coef[9], coef[10], coef[11]
    gf = g.float() * gmul
    delta = (gf + neg.float()) * keep
    mf = m.float() * b1 + (1 - b1) * gf
    df = d.float() * b2 + (1 - b2) * delta
    nest = gf + b2 * delta
    nf = n.float() * b3 + (1 - b3) * nest * nest
    u = (mf * a1 + df * a2) / (nf.sqrt() * inv_sqrt_bc3 + eps)
    pf = (p.float() * pre - lr * u) * post
    p.copy_(pf)
    m.copy_(mf)
    n.copy_(nf)
    d.copy_(df)
    neg.copy_(-gf)


def _flat_update_serial(p, g, m, n, d, neg, coef):
    """The same update compiled without OpenMP, for packs too small to split across threads
    (a parallel region's fork/join then costs more than the work, badly so on a busy machine).
    A separate function so that its compiled code is cached apart from the parallel one."""
    _flat_update(p, g, m, n, d, neg, coef)


SERIAL_NUMEL = 1 << 17  # below this many elements a pack runs on one thread
_compiled: dict[bool, object] = {}
_serial_failed = False


def _kernel(parallel: bool = True):
    fn = _compiled.get(parallel)
    if fn is None:
        target, options = (
            (_flat_update, None) if parallel else (_flat_update_serial, {"cpp.threads": 1})
        )
        fn = _compiled[parallel] = torch.compile(
            target, dynamic=True, fullgraph=True, options=options
        )
    return fn


def _run_small(*tensors: Tensor) -> None:
    """Run the serial kernel; if it cannot be compiled (the parallel one could), use that."""
    global _serial_failed
    if not _serial_failed:
        try:
            _kernel(parallel=False)(*tensors)
            return
        except Exception:  # noqa: BLE001 - compilation happens before any tensor is written
            _serial_failed = True
    _kernel()(*tensors)


def _coefficients(hp: AdanHyper, t: float, gmul: float) -> Tensor:
    lr, wd = float(hp.lr), hp.weight_decay
    pre, post = (1 - lr * wd, 1.0) if hp.no_prox else (1.0, 1 / (1 + lr * wd))
    return torch.tensor(
        [
            gmul,
            hp.b1,
            hp.b2,
            hp.b3,
            1 / (1 - hp.b1**t),
            hp.b2 / (1 - hp.b2**t),
            1 / math.sqrt(1 - hp.b3**t),
            hp.eps,
            0.0 if t == 1 else 1.0,
            lr,
            pre,
            post,
        ],
        dtype=torch.float32,
    )


class _SmallPack:
    """Flat buffers holding the states of many small tensors; the states are views into them."""

    def __init__(
        self, params: Sequence[Tensor], grads: Sequence[Tensor], states: list[list[Tensor]]
    ):
        self.sizes = [p.numel() for p in params]
        total = sum(self.sizes)
        self.p_flat = torch.empty(total, dtype=params[0].dtype)
        self.g_flat = torch.empty(total, dtype=grads[0].dtype)
        self.state_flats = []
        for k, tensors in enumerate(states):
            dtype = grads[0].dtype if k == 3 else params[0].dtype
            flat = torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors])
            offset = 0
            for t, size in zip(tensors, self.sizes):
                t.set_(flat.untyped_storage(), offset, t.shape, _contiguous_strides(t.shape))
                offset += size
            self.state_flats.append(flat)
        self.p_views = [v.view(p.shape) for v, p in zip(self.p_flat.split(self.sizes), params)]
        self.g_views = [v.view(p.shape) for v, p in zip(self.g_flat.split(self.sizes), params)]
        self.states = [list(tensors) for tensors in states]  # strong refs: identity stays valid

    def holds(self, states: list[list[Tensor]]) -> bool:
        """True while the optimizer still uses the very tensors this pack re-pointed. Only
        ``Tensor.set_`` or ``.data =`` could re-point them again; the optimizer does neither
        (``load_state_dict`` makes new tensors, ``restart`` zeroes in place)."""
        return len(states[0]) == len(self.states[0]) and all(
            a is b for mine, theirs in zip(self.states, states) for a, b in zip(mine, theirs)
        )

    def step(self, params, grads, coef: Tensor) -> None:
        torch._foreach_copy_(self.g_views, list(grads))
        torch._foreach_copy_(self.p_views, [p.detach() for p in params])
        tensors = (self.p_flat, self.g_flat, *self.state_flats, coef)
        if self.p_flat.numel() < SERIAL_NUMEL:
            _run_small(*tensors)
        else:
            _kernel()(*tensors)
        torch._foreach_copy_([p.detach() for p in params], self.p_views)


def _contiguous_strides(shape) -> tuple[int, ...]:
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(strides))


def ready(dtype_pairs: set[tuple[torch.dtype, torch.dtype]]) -> bool:
    """Compile the kernel for each (param dtype, grad dtype) on a tiny probe, before any real
    tensor is touched. Returns False (after one warning) when compiling is impossible here."""
    global _compile_failed
    if _compile_failed is not None:
        return False
    for p_dtype, g_dtype in dtype_pairs - _probed:
        try:
            ts = [torch.zeros(8, dtype=g_dtype if k in (1, 5) else p_dtype) for k in range(6)]
            _kernel()(*ts, _coefficients(AdanHyper(0.0, (0.9, 0.9, 0.9), 1e-8, 0.0, False), 1, 1.0))
        except Exception as err:  # noqa: BLE001 - any compiler failure means "use foreach"
            _compile_failed = (
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            )
            warnings.warn(
                f"adan_core: compiling the fast CPU kernel failed ({_compile_failed}); using the "
                "foreach path instead. Install a C++ compiler (e.g. g++) for the fast CPU path.",
                RuntimeWarning,
                stacklevel=3,
            )
            return False
        _probed.add((p_dtype, g_dtype))
    return True


_probed: set[tuple[torch.dtype, torch.dtype]] = set()


def cpu_fused_adan(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    exp_avg_diffs: Sequence[Tensor],
    neg_pre_grads: Sequence[Tensor],
    state_steps: Sequence[Tensor],
    hp: AdanHyper,
    grad_mul: Tensor | None,
    cache: dict | None = None,
) -> None:
    """Update one param group of CPU tensors (fp32/bf16/fp16; call :func:`ready` first).

    ``cache`` (owned by the optimizer) keeps the small-tensor packs between steps; without it each
    step builds a fresh pack. Tensors in rare layouts take the single-tensor path.
    """
    lr = hp.lr.item() if isinstance(hp.lr, Tensor) else float(hp.lr)
    hp = AdanHyper(lr, (hp.b1, hp.b2, hp.b3), hp.eps, hp.weight_decay, hp.no_prox, hp.maximize)
    gmul = 1.0 if grad_mul is None else grad_mul.item()
    if hp.maximize:
        gmul = -gmul
    lists = (params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads, state_steps)
    torch._foreach_add_(list(state_steps), 1)
    small: dict[tuple, list[int]] = {}
    slow: list[int] = []
    coefs: dict[float, Tensor] = {}
    for i, (p, g, m, n, d, neg, step) in enumerate(zip(*lists)):
        t = step.item()
        if p.numel() < SMALL_NUMEL:
            small.setdefault((p.dtype, g.dtype, t), []).append(i)
        elif dense_same_layout(m, p, g, n, d, neg):
            if t not in coefs:
                coefs[t] = _coefficients(hp, t, gmul)
            _kernel()(*(flat_view(x) for x in (p, g, m, n, d, neg)), coefs[t])
        else:
            slow.append(i)
    for (_, _, t), idx in small.items():
        _step_pack([[seq[i] for i in idx] for seq in lists], hp, t, gmul, cache)
    if slow:
        sel = [[seq[i] for i in slow] for seq in lists]
        torch._foreach_sub_(sel[6], 1)  # the single-tensor path increments its own steps
        _single_tensor_adan(*sel, hp, grad_mul)


def _step_pack(sel: list[list[Tensor]], hp: AdanHyper, t: float, gmul: float, cache) -> None:
    params, grads, m, n, d, neg, _ = sel
    states = [m, n, d, neg]
    # One pack per (group, dtypes): the optimizer passes a per-group cache. Validity is checked on
    # the state tensors, the optimizer's own long-lived objects (params may be fresh local views
    # each step, as DTensor.to_local() gives under FSDP2).
    key = (params[0].dtype, grads[0].dtype)
    pack = cache.get(key) if cache is not None else None
    if pack is None or not pack.holds(states):
        pack = _SmallPack(params, grads, states)
        if cache is not None:
            cache[key] = pack
    pack.step(params, grads, _coefficients(hp, t, gmul))
