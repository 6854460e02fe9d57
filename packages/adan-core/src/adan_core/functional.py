"""Adan's update as functions over lists of tensors: one math, several implementations.

All implementations compute ADAN.md §4 in the code beta convention, per parameter ``i`` at its
own step ``t_i = state_step_i + 1``::

    g     = grad_mul * grad                      (grad_mul: clip factor / AMP scale, 1 if absent)
    delta = g + neg_pre_grad, or 0 when t == 1
    m     = b1*m + (1-b1)*g
    d     = b2*d + (1-b2)*delta
    n     = b3*n + (1-b3)*(g + b2*delta)**2
    den   = sqrt(n)/sqrt(1-b3**t) + eps
    u     = m/((1-b1**t)*den) + b2*d/((1-b2**t)*den)
    p     = (p - lr*u)/(1 + lr*wd)               (proximal, default)
    p     = p*(1 - lr*wd) - lr*u                  (no_prox=True)
    neg_pre_grad = -g

Math runs in fp32 for fp16/bf16 tensors (fp64 for fp64); results are rounded once into storage,
whatever dtype each state tensor has (the param's, or fp32 for ``Adan(state_dtype=torch.float32)``).
``p.grad`` is never written.

:func:`adan` is the single dispatcher: it splits the lists into homogeneous buckets (one device,
one dtype per role) and chooses an implementation per bucket with :func:`choose_impl`. Every
implementation leaves all tensors, step counts included, untouched until its update is certain
to run, and counts the steps last.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Union

import torch
from torch import Tensor

from ._grouping import bucketize, role_dtypes_key
from ._layout import dense_same_layout, flat_view

__all__ = ["adan", "AdanHyper", "choose_impl", "IMPLEMENTATIONS"]

Scalar = Union[float, Tensor]  # noqa: UP007 - a runtime alias must work on Python 3.9
_LOW_PRECISION = (torch.float16, torch.bfloat16)
FUSED_DTYPES = (torch.float32, *_LOW_PRECISION)  # what the fused kernels take (fp32 math inside)
IMPLEMENTATIONS = ("single", "foreach", "fused", "cpu_fused")

# The foreach path upcasts fp16/bf16 tensors to fp32 working copies. Doing that for a whole bucket
# at once needs about 28 B of temporaries per parameter, so it runs in chunks of at most this many
# elements (large tensors are split into flat slices): at most ~28 MiB of temporaries per step.
CHUNK_NUMEL = 1 << 20


class AdanHyper:
    """Hyperparameters of one param group, shared by every implementation."""

    __slots__ = ("lr", "b1", "b2", "b3", "eps", "weight_decay", "no_prox", "maximize")

    def __init__(
        self,
        lr: Scalar,
        betas: tuple[float, float, float],
        eps: float,
        weight_decay: float,
        no_prox: bool,
        maximize: bool = False,
    ) -> None:
        self.lr = lr
        self.b1, self.b2, self.b3 = (float(b) for b in betas)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.no_prox = bool(no_prox)
        self.maximize = bool(maximize)


def _host_steps(steps: Sequence[Tensor], lr: Scalar) -> bool:
    """True when steps (and lr) can be read on the host for free: CPU steps, eager mode. A step on
    an accelerator, or any step while compiling, stays a tensor: no host sync."""
    return (
        steps[0].device.type == "cpu"
        and not isinstance(lr, Tensor)
        and not torch.compiler.is_compiling()
    )


def _opmath(ts: Sequence[Tensor]) -> list[Tensor]:
    return [t.float() if t.dtype in _LOW_PRECISION else t for t in ts]


# --------------------------------------------------------------------------------- single tensor
def _single_tensor_adan(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    exp_avg_diffs: Sequence[Tensor],
    neg_pre_grads: Sequence[Tensor],
    state_steps: Sequence[Tensor],
    hp: AdanHyper,
    grad_mul: Tensor | None,
) -> None:
    """The plain per-tensor loop: easiest to read, used for debugging and as the fp64 path."""
    b1, b2, b3, lr, wd = hp.b1, hp.b2, hp.b3, hp.lr, hp.weight_decay
    host = _host_steps(state_steps, 0.0) if state_steps else True
    for p, grad, m_s, n_s, d_s, neg_s, step in zip(
        params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads, state_steps
    ):
        t = step.item() + 1 if host else step + 1
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        sqrt_bc3 = (1 - b3**t) ** 0.5
        g = grad.float() if grad.dtype in _LOW_PRECISION else grad.clone()
        if grad_mul is not None:
            g.mul_(grad_mul)
        if hp.maximize:
            g.neg_()
        m, n, d, neg = _opmath((m_s, n_s, d_s, neg_s))
        delta = (g + neg) * (t != 1)
        m = m.mul(b1).add_(g, alpha=1 - b1)
        d = d.mul(b2).add_(delta, alpha=1 - b2)
        nest = g + b2 * delta
        n = n.mul(b3).addcmul_(nest, nest, value=1 - b3)
        den = n.sqrt() / sqrt_bc3 + hp.eps
        u = m / (bc1 * den) + b2 * d / (bc2 * den)
        pf = p.float() if p.dtype in _LOW_PRECISION else p.clone()
        if hp.no_prox:
            pf = pf * (1 - lr * wd) - lr * u
        else:
            pf = (pf - lr * u) / (1 + lr * wd)
        p.copy_(pf)
        m_s.copy_(m)
        n_s.copy_(n)
        d_s.copy_(d)
        neg_s.copy_(-g)
        step += 1


# --------------------------------------------------------------------------------------- foreach
class _Coefficients:
    """Per-parameter scalars of one step: host floats, or 0-d device tensors (no host sync).

    ``keep`` is 0 on a parameter's first step (delta = 0), else 1; the update adds
    ``coef_m * m/den + coef_d * d/den`` to p, with ``coef_m = -lr/bc1``, ``coef_d = -lr*b2/bc2``.
    """

    def __init__(self, steps: Sequence[Tensor], hp: AdanHyper, host: bool, dtype: torch.dtype):
        lr, b1, b2, b3 = hp.lr, hp.b1, hp.b2, hp.b3
        if host:
            t = [s.item() + 1 for s in steps]
            self.keep = [0.0 if x == 1 else 1.0 for x in t]
            self.inv_sqrt_bc3 = [1 / math.sqrt(1 - b3**x) for x in t]
            self.coef_m = [-lr / (1 - b1**x) for x in t]
            self.coef_d = [-lr * b2 / (1 - b2**x) for x in t]
            return
        # Foreach ops over the step list: a fixed number of ops per bucket, not per parameter.
        t = torch._foreach_add(list(steps), 1)
        if dtype == torch.float64:  # exact bias corrections for fp64 tensors
            t = [x.double() for x in t]
        self.keep = torch._foreach_sub(t, 1.0)
        torch._foreach_clamp_max_(self.keep, 1.0)  # t - 1 clamped to 1: 0 only at t == 1
        self.inv_sqrt_bc3 = _one_minus_pow(b3, t)
        torch._foreach_rsqrt_(self.inv_sqrt_bc3)
        neg_lr = -lr if isinstance(lr, Tensor) else -float(lr)
        self.coef_m = _one_minus_pow(b1, t)
        torch._foreach_reciprocal_(self.coef_m)
        torch._foreach_mul_(self.coef_m, neg_lr)
        self.coef_d = _one_minus_pow(b2, t)
        torch._foreach_reciprocal_(self.coef_d)
        torch._foreach_mul_(self.coef_d, neg_lr * b2)

    def take(self, index: Sequence[int]) -> _Coefficients:
        """The coefficients of the given parameters (one entry per chunk piece)."""
        out = object.__new__(_Coefficients)
        for name in ("keep", "inv_sqrt_bc3", "coef_m", "coef_d"):
            values = getattr(self, name)
            setattr(out, name, [values[i] for i in index])
        return out


def _one_minus_pow(base: float, t: list[Tensor]) -> list[Tensor]:
    out = torch._foreach_pow(base, t)
    torch._foreach_neg_(out)
    torch._foreach_add_(out, 1.0)
    return out


def _chunk_plan(
    numels: Sequence[int], splittable: Sequence[bool], limit: int | None
) -> Iterator[list[tuple[int, slice | None]]]:
    """Consecutive pieces ``(tensor index, flat slice or None for the whole tensor)`` grouped
    into chunks of at most ``limit`` elements (a tensor that cannot be split counts whole)."""
    chunk: list[tuple[int, slice | None]] = []
    size = 0
    for i, numel in enumerate(numels):
        if numel == 0:
            continue
        if limit is None or not splittable[i] or size + numel <= limit:
            if limit is not None and size and size + numel > limit:
                yield chunk
                chunk, size = [], 0
            chunk.append((i, None))
            size += numel
            continue
        start = 0
        while start < numel:
            take = min(numel - start, limit - size)
            chunk.append((i, slice(start, start + take)))
            size, start = size + take, start + take
            if size >= limit:
                yield chunk
                chunk, size = [], 0
    if chunk:
        yield chunk


def _foreach_adan(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    exp_avg_diffs: Sequence[Tensor],
    neg_pre_grads: Sequence[Tensor],
    state_steps: Sequence[Tensor],
    hp: AdanHyper,
    grad_mul: Tensor | None,
) -> None:
    """``torch._foreach_*`` path over one bucket; no host sync when steps are on the device.

    Param-sized temporaries: the denominator, and the scaled gradient when clipping, maximize or a
    low-precision dtype needs one; fp16/bf16 buckets add fp32 working copies, so they run in
    chunks of :data:`CHUNK_NUMEL` elements. The previous-gradient buffer doubles as scratch.
    """
    tensors = (params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads)
    low = any(seq[0].dtype in _LOW_PRECISION for seq in tensors)
    work_dtype = torch.float64 if params[0].dtype == torch.float64 else torch.float32
    host = _host_steps(state_steps, hp.lr)
    coefs = _Coefficients(state_steps, hp, host, work_dtype)
    mul = grad_mul
    if hp.maximize:
        mul = -mul if mul is not None else None
    # Only low-precision buckets are chunked, so only they need to know what can be split.
    splittable = [
        low and dense_same_layout(*(seq[i] for seq in tensors)) for i in range(len(params))
    ]
    for chunk in _chunk_plan([p.numel() for p in params], splittable, CHUNK_NUMEL if low else None):
        index = [i for i, _ in chunk]
        views = [
            [seq[i] if part is None else flat_view(seq[i])[part] for i, part in chunk]
            for seq in tensors
        ]
        _foreach_chunk(*views, coefs.take(index), hp, mul, host)
    torch._foreach_add_(list(state_steps), 1)


def _foreach_chunk(params, grads, m, n, d, neg, co: _Coefficients, hp: AdanHyper, mul, host):
    b1, b2, b3, lr, wd = hp.b1, hp.b2, hp.b3, hp.lr, hp.weight_decay
    stored = (params, m, n, d, neg)
    p_w, m_w, n_w, d_w, neg_w = (_opmath(x) for x in stored)
    g = _opmath(grads)
    if mul is not None or hp.maximize:
        if g[0] is grads[0]:  # never scale the caller's gradients in place
            g = torch._foreach_mul(g, mul) if mul is not None else torch._foreach_neg(g)
        else:
            torch._foreach_mul_(g, mul) if mul is not None else torch._foreach_neg_(g)

    # neg_w becomes delta = g_t - g_{t-1}, zeroed on a parameter's first step.
    torch._foreach_add_(neg_w, g)
    if host:
        for x, keep in zip(neg_w, co.keep):
            if not keep:
                x.zero_()
    else:
        torch._foreach_mul_(neg_w, co.keep)
    torch._foreach_lerp_(m_w, g, 1 - b1)
    torch._foreach_lerp_(d_w, neg_w, 1 - b2)
    torch._foreach_mul_(neg_w, b2)
    torch._foreach_add_(neg_w, g)  # neg_w is now the Nesterov gradient g + b2*delta
    torch._foreach_mul_(n_w, b3)
    torch._foreach_addcmul_(n_w, neg_w, neg_w, value=1 - b3)

    den = torch._foreach_sqrt(n_w)
    torch._foreach_mul_(den, co.inv_sqrt_bc3)
    torch._foreach_add_(den, hp.eps)

    if hp.no_prox and wd != 0:
        torch._foreach_mul_(p_w, 1 - lr * wd)
    if host:
        torch._foreach_addcdiv_(p_w, m_w, den, co.coef_m)
        torch._foreach_addcdiv_(p_w, d_w, den, co.coef_d)
    else:  # per-parameter tensor coefficients: combine the numerator in the free scratch buffer
        torch._foreach_copy_(neg_w, m_w)
        torch._foreach_mul_(neg_w, co.coef_m)
        torch._foreach_addcmul_(neg_w, d_w, co.coef_d)
        torch._foreach_div_(neg_w, den)
        torch._foreach_add_(p_w, neg_w)
    del den
    if not hp.no_prox and wd != 0:
        torch._foreach_div_(p_w, 1 + lr * wd)

    torch._foreach_copy_(neg_w, g)
    torch._foreach_neg_(neg_w)
    for dst, src in zip(stored, (p_w, m_w, n_w, d_w, neg_w)):
        if src[0] is not dst[0]:  # a low-precision role: round the fp32 result once
            torch._foreach_copy_(dst, src)


# -------------------------------------------------------------------------------------- dispatch
def fused_unavailable(device: torch.device) -> str | None:
    """Why the Triton kernel cannot run on ``device`` at all (no Triton, CPU without the
    interpreter, a GPU Triton does not serve), or None."""
    try:
        from . import _triton_adan
    except ImportError as err:
        return f"Triton is not importable ({err}); install it with `pip install adan-core[triton]`"
    return _triton_adan.unavailable_reason(device)


def _fused_problem(
    device: torch.device, dtypes: tuple[torch.dtype, ...], kernel_flags: dict
) -> str | None:
    """Why the Triton kernel cannot run this bucket, or None if it can (compiled and ready)."""
    reason = fused_unavailable(device)
    if reason is None:
        from . import _triton_adan

        p, g, m, _, _, neg = dtypes
        reason = _triton_adan.compile_failure(device, (p, g, m, neg), **kernel_flags)
    return reason


def choose_impl(
    device: torch.device,
    dtypes: tuple[torch.dtype, ...],
    *,
    fused: bool | None,
    foreach: bool | None,
    capturable: bool,
    kernel_flags: dict | None = None,
) -> tuple[str, str | None]:
    """The implementation for one bucket, decided from what can actually run here.

    ``dtypes`` are the bucket's (param, grad, exp_avg, exp_avg_sq, exp_avg_diff, neg_pre_grad)
    dtypes. Returns ``(implementation, note)``; the note, when not None, says why a requested or
    expected implementation could not run (the caller warns once). Nothing is touched here: the
    compiled kernels are probed on private tensors. ``kernel_flags`` name the fused kernel's
    specialisation (see ``_triton_adan.compile_failure``).
    """
    kernel_flags = kernel_flags or {}
    if torch.compiler.is_compiling():
        return "foreach", None  # Dynamo traces the foreach math and fuses it itself
    fusable = all(dt in FUSED_DTYPES for dt in dtypes) and len(set(dtypes[2:5])) == 1
    note = None
    if fused:
        reason = (
            _fused_problem(device, dtypes, kernel_flags) if fusable else f"dtypes {_names(dtypes)}"
        )
        if reason is None:
            return "fused", None
        note = (
            f"fused=True (possibly restored from a checkpoint) cannot run here: {reason}. "
            "Falling back to the best available implementation."
        )
    if foreach is False:
        return "single", note
    if foreach:
        return "foreach", note
    if fusable and device.type == "cuda":
        reason = _fused_problem(device, dtypes, kernel_flags)
        if reason is None:
            return "fused", note
        return "foreach", note or f"the fused kernel cannot run ({reason}); using foreach"
    if fusable and device.type == "cpu" and not capturable:
        from . import _cpu_fused

        if _cpu_fused.ready({(dtypes[0], dtypes[1], dtypes[2], dtypes[5])}):
            return "cpu_fused", note
    return "foreach", note


def _names(dtypes: Sequence[torch.dtype]) -> str:
    return "/".join(str(d).replace("torch.", "") for d in dtypes)


_KERNELS: dict[str, Callable[..., None]] = {
    "single": _single_tensor_adan,
    "foreach": _foreach_adan,
}


def adan(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    exp_avg_diffs: Sequence[Tensor],
    neg_pre_grads: Sequence[Tensor],
    state_steps: Sequence[Tensor],
    *,
    lr: Scalar,
    betas: tuple[float, float, float],
    eps: float,
    weight_decay: float,
    no_prox: bool,
    maximize: bool = False,
    grad_mul: Tensor | None = None,
    found_inf: Tensor | None = None,
    foreach: bool | None = None,
    fused: bool | None = None,
    capturable: bool = False,
    impl: str | None = None,
    cache: dict | None = None,
    warn: Callable[[str], None] | None = None,
) -> None:
    """Functional Adan (like ``torch.optim.adamw.adamw``): update the tensors in place.

    Args:
        params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads: per-parameter tensors
            (official state names). ``grads`` are read only. Each state may have its own dtype
            (the param's, or fp32).
        state_steps: per-parameter 0-d float tensors (steps taken so far), incremented here. The
            fused kernel needs them on the params' device.
        lr, betas, eps, weight_decay, no_prox, maximize: as in :class:`adan_core.Adan`.
        grad_mul: optional 0-d tensor multiplying every gradient (clip factor divided by AMP scale).
        found_inf: optional 0-d tensor; nonzero skips the update, step counts included. The fused
            kernel reads it on the device; if any bucket runs another implementation it is read
            once on the host.
        foreach, fused, capturable: the implementation flags of :class:`adan_core.Adan`; the
            choice is made per (device, dtypes) bucket by :func:`choose_impl`.
        impl: force one of :data:`IMPLEMENTATIONS` for every bucket (no fallback).
        cache: ``"cpu_fused"`` only: a dict kept between steps (per param group) so small
            tensors' states stay packed; without it each step packs them afresh.
        warn: called with the reason when an implementation falls back (default: a
            ``RuntimeWarning``).
    """
    if impl is not None and impl not in IMPLEMENTATIONS:
        raise ValueError(
            f"unknown Adan implementation {impl!r}; choose one of {sorted(IMPLEMENTATIONS)}"
        )
    if not params:
        return
    hp = AdanHyper(lr, betas, eps, weight_decay, no_prox, maximize)
    lists = (params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads, state_steps)
    buckets = bucketize(lists, role_dtypes_key(*lists[:6]))
    kernel_flags = dict(
        lr_is_tensor=isinstance(lr, Tensor),
        has_grad_mul=grad_mul is not None,
        has_found_inf=found_inf is not None,
        no_prox=no_prox,
        maximize=maximize,
    )
    plan = []
    for (device, *dtypes), bucket in buckets.items():
        chosen = impl
        if chosen is None:
            chosen, note = choose_impl(
                device,
                tuple(dtypes),
                fused=fused,
                foreach=foreach,
                capturable=capturable,
                kernel_flags=kernel_flags,
            )
            if note is not None:
                (warn or _warn)(note)
        plan.append((device, chosen, bucket))

    if found_inf is not None and any(chosen != "fused" for _, chosen, _ in plan):
        if bool(found_inf.item()):  # one host read for the whole step
            return
        found_inf = None
    for device, chosen, bucket in plan:
        _run(chosen, bucket, hp, device, grad_mul, found_inf, cache)


def _run(impl, bucket, hp: AdanHyper, device, grad_mul, found_inf, cache) -> None:
    """Run one bucket, with the scalar tensors moved to its device (no host sync)."""
    mul = grad_mul.to(device, non_blocking=True) if grad_mul is not None else None
    if isinstance(hp.lr, Tensor) and impl in ("fused", "foreach"):
        hp = AdanHyper(
            hp.lr.to(device, non_blocking=True),
            (hp.b1, hp.b2, hp.b3),
            hp.eps,
            hp.weight_decay,
            hp.no_prox,
            hp.maximize,
        )
    if impl == "fused":
        from ._triton_adan import fused_adan

        inf = found_inf.to(device, non_blocking=True) if found_inf is not None else None
        fused_adan(*bucket, hp, mul, inf)
    elif impl == "cpu_fused":
        from ._cpu_fused import cpu_fused_adan

        cpu_fused_adan(*bucket, hp, mul, cache=cache)
    else:
        _KERNELS[impl](*bucket, hp, mul)


def _warn(message: str) -> None:
    warnings.warn(f"adan_core.Adan: {message}", RuntimeWarning, stacklevel=4)
