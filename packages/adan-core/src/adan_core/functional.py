"""Adan's update as functions over lists of tensors: one math, several implementations.

All implementations compute ADAN.md §4 in the code beta convention, per parameter ``i`` at its
own step ``t_i`` (incremented by each implementation)::

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

Math runs in fp32 for fp16/bf16 tensors (fp64 for fp64); results are rounded once into storage.
``p.grad`` is never written.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor

__all__ = ["adan", "AdanHyper"]

Scalar = Union[float, Tensor]  # noqa: UP007 - a runtime alias must work on Python 3.9
_LOW_PRECISION = (torch.float16, torch.bfloat16)
FUSED_DTYPES = (torch.float32, *_LOW_PRECISION)  # what the fused kernels take (fp32 math inside)


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


def _step_value(step: Tensor) -> float | Tensor:
    """A CPU step read as a float in eager mode (free, and exact fp64 bias corrections follow).
    A step on an accelerator, or any step while compiling, stays a tensor: no host sync."""
    if step.device.type == "cpu" and not torch.compiler.is_compiling():
        return step.item()
    return step


def _opmath(ts: Sequence[Tensor]) -> list[Tensor]:
    return [t.float() if t.dtype in _LOW_PRECISION else t for t in ts]


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
    for p, grad, m_s, n_s, d_s, neg_s, step in zip(
        params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads, state_steps
    ):
        step += 1
        t = _step_value(step)
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        sqrt_bc3 = (1 - b3**t) ** 0.5
        g = grad.float() if grad.dtype in _LOW_PRECISION else grad.clone()
        if grad_mul is not None:
            g.mul_(grad_mul.to(g.device))
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
    """``torch._foreach_*`` path, grouped by (device, dtype); no host sync if steps are on device.

    Param-sized temporaries: the denominator, and the scaled gradient when clipping, maximize or a
    low-precision dtype needs one. The previous-gradient buffer doubles as scratch for delta and the
    Nesterov gradient, so nothing else is allocated.
    """
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, (p, g) in enumerate(zip(params, grads)):
        buckets[(p.device, p.dtype, g.dtype)].append(i)
    lists = (params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads, state_steps)
    for idx in buckets.values():
        _foreach_adan_bucket(*([seq[i] for i in idx] for seq in lists), hp, grad_mul)


def _foreach_adan_bucket(params, grads, m, n, d, neg, steps, hp: AdanHyper, grad_mul) -> None:
    b1, b2, b3, lr, wd = hp.b1, hp.b2, hp.b3, hp.lr, hp.weight_decay
    device = params[0].device
    torch._foreach_add_(steps, 1)
    on_host = steps[0].device.type == "cpu" and not isinstance(lr, Tensor)
    on_host = on_host and not torch.compiler.is_compiling()

    low = params[0].dtype in _LOW_PRECISION or grads[0].dtype in _LOW_PRECISION
    stored = (params, m, n, d, neg)
    p_w, m_w, n_w, d_w, neg_w = (_opmath(x) for x in stored) if low else stored
    g = _opmath(grads) if low else list(grads)
    if grad_mul is not None or hp.maximize:
        mul = grad_mul.to(device) if grad_mul is not None else None
        if mul is not None and hp.maximize:
            mul = -mul
        if g[0] is grads[0]:  # never scale the caller's gradients in place
            g = torch._foreach_mul(g, mul) if mul is not None else torch._foreach_neg(g)
        else:
            torch._foreach_mul_(g, mul) if mul is not None else torch._foreach_neg_(g)

    # neg_w becomes delta = g_t - g_{t-1}, zeroed on a parameter's first step.
    torch._foreach_add_(neg_w, g)
    if on_host:
        t = [s.item() for s in steps]
        for i, step in enumerate(t):
            if step == 1:
                neg_w[i].zero_()
        bc1 = [1 - b1**x for x in t]
        bc2 = [1 - b2**x for x in t]
        inv_sqrt_bc3 = [1 / math.sqrt(1 - b3**x) for x in t]
    else:
        keep = [(s != 1).to(neg_w[0].dtype) for s in steps]
        torch._foreach_mul_(neg_w, keep)
        bc1 = [1 - torch.pow(b1, s) for s in steps]
        bc2 = [1 - torch.pow(b2, s) for s in steps]
        inv_sqrt_bc3 = [torch.rsqrt(1 - torch.pow(b3, s)) for s in steps]

    torch._foreach_lerp_(m_w, g, 1 - b1)
    torch._foreach_lerp_(d_w, neg_w, 1 - b2)
    torch._foreach_mul_(neg_w, b2)
    torch._foreach_add_(neg_w, g)  # neg_w is now the Nesterov gradient g + b2*delta
    torch._foreach_mul_(n_w, b3)
    torch._foreach_addcmul_(n_w, neg_w, neg_w, value=1 - b3)

    den = torch._foreach_sqrt(n_w)
    torch._foreach_mul_(den, inv_sqrt_bc3)
    torch._foreach_add_(den, hp.eps)

    if hp.no_prox and wd != 0:
        torch._foreach_mul_(p_w, 1 - lr * wd)
    if on_host:
        torch._foreach_addcdiv_(p_w, m_w, den, [-lr / x for x in bc1])
        torch._foreach_addcdiv_(p_w, d_w, den, [-lr * b2 / x for x in bc2])
    else:
        for state, bc, coef in ((m_w, bc1, 1.0), (d_w, bc2, b2)):
            ratio = torch._foreach_div(state, den)
            torch._foreach_mul_(ratio, [coef * lr / x for x in bc])
            torch._foreach_sub_(p_w, ratio)
            del ratio
    if not hp.no_prox and wd != 0:
        torch._foreach_div_(p_w, 1 + lr * wd)

    torch._foreach_copy_(neg_w, g)
    torch._foreach_neg_(neg_w)
    if low:
        for dst, src in zip(stored, (p_w, m_w, n_w, d_w, neg_w)):
            torch._foreach_copy_(dst, src)


_IMPLS = {"single": _single_tensor_adan, "foreach": _foreach_adan}


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
    impl: str = "foreach",
    cache: dict | None = None,
) -> None:
    """Functional Adan (like ``torch.optim.adamw.adamw``): update the tensors in place.

    Args:
        params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads: per-parameter tensors
            (official state names). ``grads`` are read only.
        state_steps: per-parameter 0-d float tensors, incremented here.
        lr, betas, eps, weight_decay, no_prox, maximize: as in :class:`adan_core.Adan`.
        grad_mul: optional 0-d tensor multiplying every gradient (clip factor divided by AMP scale).
        found_inf: optional 0-d tensor; nonzero skips the update. Only the fused implementation
            reads it on the device; other implementations check it on the host.
        impl: ``"single"``, ``"foreach"``, ``"fused"`` (Triton) or ``"cpu_fused"`` (compiled CPU;
            call ``adan_core._cpu_fused.ready`` first).
        cache: ``"cpu_fused"`` only: a dict kept between steps (per param group) so small
            tensors' states stay packed; without it each step packs them afresh.
    """
    if found_inf is not None and impl not in ("fused",) and bool(found_inf.item()):
        return
    hp = AdanHyper(lr, betas, eps, weight_decay, no_prox, maximize)
    if impl == "fused":
        from ._triton_adan import fused_adan

        fused_adan(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            exp_avg_diffs,
            neg_pre_grads,
            state_steps,
            hp,
            grad_mul,
            found_inf,
        )
        return
    if impl == "cpu_fused":
        from ._cpu_fused import cpu_fused_adan

        cpu_fused_adan(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            exp_avg_diffs,
            neg_pre_grads,
            state_steps,
            hp,
            grad_mul,
            cache=cache,
        )
        return
    try:
        fn = _IMPLS[impl]
    except KeyError:
        raise ValueError(
            f"unknown Adan implementation {impl!r}; choose one of "
            f"{sorted([*_IMPLS, 'fused', 'cpu_fused'])}"
        ) from None
    fn(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        exp_avg_diffs,
        neg_pre_grads,
        state_steps,
        hp,
        grad_mul,
    )
