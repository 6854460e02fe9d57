"""Fast CPU Adan: a ``torch.compile``d one-pass loop (Inductor C++ with SIMD and OpenMP).

* Large tensors (``>= SMALL_NUMEL`` elements, dense, states in the same layout) get one call each
  of a compiled elementwise function over flat views: 44 B/param in fp32, like the GPU kernel.
* Small tensors, where a call's fixed cost would dominate, are packed: their four state tensors
  are re-pointed (``Tensor.set_``) into flat buffers owned by a pack, so a step is one gather of
  p and g, one compiled call, one scatter of p.
* Anything else (a strided param, states in another layout) runs the same kernel on contiguous
  copies.

Every role keeps its own dtype: params P, grads G, the three moments S and ``neg_pre_grad`` N
(e.g. bf16 params with fp32 state). Math is fp32; each result is rounded once into its storage.

Hyperparameters and bias corrections enter through a small tensor of coefficients, so changing
lr (as SB3 and schedulers do every update) never recompiles. The per-parameter steps are CPU
tensors, so reading them on the host is free. Nothing is written before the update is sure to
run: the kernels are compiled (:func:`ready`) first, the step is read as ``t = step + 1``, and
the steps are incremented only after every tensor has been updated.
"""

from __future__ import annotations

import logging
import math
import types
import warnings
import weakref
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from ._layout import dense_same_layout, flat_view
from .functional import FUSED_DTYPES, AdanHyper

_log = logging.getLogger(__name__)

SMALL_NUMEL = 1 << 16  # below this many elements a tensor is packed
SERIAL_NUMEL = 1 << 17  # below this many elements a pack runs on one thread

# (param, grad, state, neg_pre_grad) dtypes: what a compiled specialisation depends on
DtypeKey = tuple[torch.dtype, torch.dtype, torch.dtype, torch.dtype]

# Inductor picks the OpenMP parallel depth from the size hint of the *first* compile. That is
# ready()'s 8-element probe, so by default the "parallel" kernel was generated without any
# OpenMP region and ran on one thread (2x slower at 30M params on 2 cores). dynamic_threads
# always emits the parallel region and lets the OpenMP runtime pick the thread count.
_PARALLEL_OPTIONS = {"cpp.dynamic_threads": True}
_SERIAL_OPTIONS = {"cpp.threads": 1}

_compile_failed: str | None = None
_serial_failed = False
_notice_given = False
_compiled: dict[bool, object] = {}
_probed: set[DtypeKey] = set()
_checked_keys: set[DtypeKey] = set()


def _flat_update(p, g, m, n, d, neg, coef):
    """One Adan step over 1-D tensors. coef: [gmul, b1, b2, b3, a1, a2, inv_sqrt_bc3, eps, keep,
    lr, pre, post] (see _coefficients). ``.float()`` is free for fp32 inputs (no copy)."""
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


def _own_copy(fn, tag: str):
    """``fn`` with a code object of its own. Dynamo keeps compiled code per code object, at most
    ``recompile_limit`` (8) entries, and a new dtype combination is a new entry; one copy per
    dtype key keeps any number of keys (and their size-0/1 specialisations) under the limit."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{tag}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__)


class _PerDtype:
    """A compiled kernel that dispatches on the (P, G, S, N) dtypes of its arguments."""

    def __init__(self, fn, options: dict) -> None:
        self.fn, self.options = fn, options
        self.by_key: dict[DtypeKey, object] = {}

    def __call__(self, p, g, m, n, d, neg, coef) -> None:
        key = (p.dtype, g.dtype, m.dtype, neg.dtype)
        compiled = self.by_key.get(key)
        if compiled is None:
            tag = "_".join(str(dt).removeprefix("torch.") for dt in key)
            compiled = self.by_key[key] = torch.compile(
                _own_copy(self.fn, tag), dynamic=True, fullgraph=True, options=self.options
            )
        compiled(p, g, m, n, d, neg, coef)


def _kernel(parallel: bool = True):
    fn = _compiled.get(parallel)
    if fn is None:
        target, options = (
            (_flat_update, _PARALLEL_OPTIONS)
            if parallel
            else (_flat_update_serial, _SERIAL_OPTIONS)
        )
        fn = _compiled[parallel] = _PerDtype(target, options)
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


# --- readiness --------------------------------------------------------------------------------


def _announce_compile() -> None:
    """One INFO line per process: the first compile takes seconds and would otherwise look like
    a hang at the first optimizer step."""
    global _notice_given
    if not _notice_given:
        _notice_given = True
        _log.info(
            "adan_core: compiling the fast CPU Adan kernel with torch.compile. This happens once "
            "per process (about 10-20 s the first time on a machine; torch caches the result on "
            "disk, so later runs start faster)."
        )


def _probe(key: DtypeKey) -> None:
    """Compile both kernels for ``key`` on private 8-element tensors."""
    p_dt, g_dt, s_dt, n_dt = key
    tensors = [torch.zeros(8, dtype=dt) for dt in (p_dt, g_dt, s_dt, s_dt, s_dt, n_dt)]
    coef = _coefficients(AdanHyper(0.0, (0.9, 0.9, 0.9), 1e-8, 0.0, False), 1, 1.0)
    _kernel()(*tensors, coef)
    _run_small(*tensors, coef)


def ready(dtype_keys: Iterable[DtypeKey]) -> bool:
    """Compile the kernels for each ``(P, G, S, N)`` dtype key (params, grads, exp_avg/
    exp_avg_sq/exp_avg_diff, neg_pre_grad) on a tiny probe, before any real tensor is touched.

    Returns False (after one warning) when compiling is impossible here; the caller then uses the
    foreach path.
    """
    global _compile_failed
    if _compile_failed is not None:
        return False
    for key in set(dtype_keys) - _probed:
        _announce_compile()
        try:
            _probe(key)
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
        _probed.add(key)
    return True


def _dtype_key(p: Tensor, g: Tensor, m: Tensor, n: Tensor, d: Tensor, neg: Tensor) -> DtypeKey:
    """The (P, G, S, N) key of one parameter; TypeError if the kernel cannot take it."""
    key = (p.dtype, g.dtype, m.dtype, neg.dtype)
    if key in _checked_keys and n.dtype == m.dtype and d.dtype == m.dtype:
        return key
    if not (n.dtype == m.dtype == d.dtype):
        raise TypeError(
            "adan_core: exp_avg, exp_avg_sq and exp_avg_diff of one parameter must share a dtype, "
            f"got {m.dtype}, {n.dtype}, {d.dtype}"
        )
    roles = dict(param=p.dtype, grad=g.dtype, state=m.dtype, neg_pre_grad=neg.dtype)
    bad = {role: dt for role, dt in roles.items() if dt not in FUSED_DTYPES}
    if bad:
        raise TypeError(
            f"adan_core: the compiled CPU path takes float32/bfloat16/float16 only, got {bad}; "
            "use foreach=True for other dtypes"
        )
    _checked_keys.add(key)
    return key


# --- small tensors: packs ---------------------------------------------------------------------


def _contiguous_strides(shape) -> tuple[int, ...]:
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(strides))


def _repoint(tensors: Sequence[Tensor], sizes: Sequence[int], pad: int) -> Tensor:
    """Concatenate ``tensors`` (one dtype) and ``pad`` zeros into a new flat buffer, and make
    each tensor a view of it."""
    pieces = [t.detach().reshape(-1) for t in tensors]
    flat = torch.cat([*pieces, pieces[0].new_zeros(pad)])
    offset = 0
    for t, size in zip(tensors, sizes):
        t.set_(flat.untyped_storage(), offset, t.shape, _contiguous_strides(t.shape))
        offset += size
    return flat


class _SmallPack:
    """Flat buffers holding the states of many small tensors; the states are views into them.

    The pack refers to its state tensors weakly: a pack whose states the optimizer dropped
    (``load_state_dict`` makes new ones) is recognised as dead and evicted.
    """

    def __init__(
        self, params: Sequence[Tensor], grads: Sequence[Tensor], states: list[list[Tensor]]
    ):
        self.sizes = [p.numel() for p in params]
        total = sum(self.sizes)
        # Dynamo specialises sizes 0 and 1: a pack of one scalar would recompile (seconds,
        # mid-training). Zero padding updates to zero and costs nothing.
        pad = 2 - total if total < 2 else 0
        self.p_flat = torch.zeros(total + pad, dtype=params[0].dtype)
        self.g_flat = torch.zeros(total + pad, dtype=grads[0].dtype)
        self.state_flats = [_repoint(tensors, self.sizes, pad) for tensors in states]
        self.p_views = [
            v.view(p.shape) for v, p in zip(self.p_flat[:total].split(self.sizes), params)
        ]
        self.g_views = [
            v.view(p.shape) for v, p in zip(self.g_flat[:total].split(self.sizes), params)
        ]
        self.refs = [[weakref.ref(t) for t in tensors] for tensors in states]
        self.ids = frozenset(id(t) for tensors in states for t in tensors)

    def holds(self, states: list[list[Tensor]]) -> bool:
        """True while the optimizer still uses the very tensors this pack re-pointed. Only
        ``Tensor.set_`` or ``.data =`` could re-point them again; the optimizer does neither
        (``load_state_dict`` makes new tensors, ``restart`` zeroes in place), and a newer pack
        that takes one of them evicts this one."""
        return len(states[0]) == len(self.refs[0]) and all(
            r() is t for mine, theirs in zip(self.refs, states) for r, t in zip(mine, theirs)
        )

    def dead(self) -> bool:
        return any(r() is None for refs in self.refs for r in refs)

    def release(self, keep: frozenset[int]) -> None:
        """Give the members not in ``keep`` (another pack's) a buffer of their own, so that
        nothing keeps this pack's buffers alive once it is evicted."""
        for refs in self.refs:
            for r in refs:
                t = r()
                if t is not None and id(t) not in keep:
                    t.set_(t.detach().clone())

    def step(self, params: Sequence[Tensor], grads: Sequence[Tensor], coef: Tensor) -> None:
        torch._foreach_copy_(self.g_views, list(grads))
        torch._foreach_copy_(self.p_views, list(params))
        tensors = (self.p_flat, self.g_flat, *self.state_flats, coef)
        if self.p_flat.numel() < SERIAL_NUMEL:
            _run_small(*tensors)
        else:
            _kernel()(*tensors)
        torch._foreach_copy_(list(params), self.p_views)


def _cache_pack(cache: dict, key: tuple, pack: _SmallPack) -> None:
    """Store ``pack``, evicting every pack it took members from and every dead pack (so the
    cache and the buffers it keeps alive stay bounded however membership changes)."""
    for old_key, old in list(cache.items()):
        if old.dead() or not old.ids.isdisjoint(pack.ids):
            del cache[old_key]
            old.release(pack.ids)
    cache[key] = pack


def _step_pack(sel: list[list[Tensor]], dtypes: DtypeKey, coef: Tensor, cache: dict | None) -> None:
    params, grads, m, n, d, neg = sel
    states = [m, n, d, neg]
    # Keyed by what the pack depends on: the dtypes and the identity of the state tensors, the
    # optimizer's own long-lived objects (params may be fresh local views each step, as
    # DTensor.to_local() gives under FSDP2). Sub-packs of one group (different step counts)
    # therefore never evict each other.
    key = (dtypes, tuple(id(t) for t in m))
    pack = cache.get(key) if cache is not None else None
    if pack is None or not pack.holds(states):
        pack = _SmallPack(params, grads, states)
        if cache is not None:
            _cache_pack(cache, key, pack)
    pack.step(params, grads, coef)


# --- other layouts ----------------------------------------------------------------------------


def _step_copied(tensors: Sequence[Tensor], coef: Tensor) -> None:
    """A tensor the flat kernel cannot take in place (strided, or states in another layout):
    update contiguous copies, then write p and the states back."""
    work = [t.detach().contiguous() for t in tensors]
    _kernel()(*(w.view(-1) for w in work), coef)
    for k, (dst, src) in enumerate(zip(tensors, work)):
        if k != 1 and src.data_ptr() != dst.data_ptr():  # k == 1: the grad, read only
            dst.copy_(src)


# --- entry point ------------------------------------------------------------------------------


def _flat(t: Tensor) -> Tensor:
    """1-D view of a dense tensor's memory block. Detached: a param's requires_grad would
    otherwise fail a Dynamo guard of the probe-compiled code (a recompile at the first step)."""
    return t.detach().view(-1) if t.is_contiguous() else flat_view(t)


@torch.no_grad()  # writes params in place; also lets views skip detach()
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
    """Update CPU tensors in place (fp32/bf16/fp16 in any (P, G, S, N) combination; the three
    moments of one parameter share one dtype) and then add one to each step.

    Each (dtypes, step) subset is updated apart. ``cache`` (owned by the optimizer, per param
    group) keeps the small-tensor packs between steps; without it each step packs afresh.
    Raises TypeError for dtypes the kernel cannot take, and RuntimeError if it cannot be
    compiled here (call :func:`ready` first); in both cases nothing has been changed.
    """
    lists = (params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads)
    keys = [_dtype_key(*ts) for ts in zip(*lists)]
    if not ready(set(keys)):
        raise RuntimeError(f"adan_core: the compiled CPU kernel is unavailable: {_compile_failed}")
    lr = hp.lr.item() if isinstance(hp.lr, Tensor) else float(hp.lr)
    hp = AdanHyper(lr, (hp.b1, hp.b2, hp.b3), hp.eps, hp.weight_decay, hp.no_prox, hp.maximize)
    gmul = 1.0 if grad_mul is None else grad_mul.item()
    if hp.maximize:
        gmul = -gmul

    coefs: dict[float, Tensor] = {}

    def coef_for(t: float) -> Tensor:
        if t not in coefs:
            coefs[t] = _coefficients(hp, t, gmul)
        return coefs[t]

    small: dict[tuple, list[int]] = {}
    large: list[int] = []
    copied: list[int] = []
    times = [step.item() + 1 for step in state_steps]  # this update's t; steps change at the end
    for i, (p, g, m, n, d, neg) in enumerate(zip(*lists)):
        if p.numel() < SMALL_NUMEL:
            small.setdefault((keys[i], times[i]), []).append(i)
        elif dense_same_layout(m, p, g, n, d, neg):
            large.append(i)
        else:
            copied.append(i)
    for i in large:
        _kernel()(*(_flat(seq[i]) for seq in lists), coef_for(times[i]))
    for (dtypes, t), idx in small.items():
        _step_pack([[seq[i] for i in idx] for seq in lists], dtypes, coef_for(t), cache)
    for i in copied:
        _step_copied([seq[i] for seq in lists], coef_for(times[i]))
    torch._foreach_add_(list(state_steps), 1)
