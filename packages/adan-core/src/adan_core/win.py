"""Win / Win2 accelerated AdamW, Adam, LAMB and SGD (WIN.md; Zhou et al., ICLR 2023 / JMLR 2024).

Every optimizer computes its base direction ``u`` and then, in modes "win" / "win2", moves a
conservative sequence ``x`` and one or two reckless sequences with proximal steps
(:func:`adan_core.win_core.win_reckless_update_`). The model parameter holds the most reckless
sequence, and gradients are taken there. Mode "none" is the plain base optimizer.

Differences from the authors' code (sail-sg/win), each deliberate and tested:

* ``acceleration_mode`` defaults to "win" and must be exactly "win", "win2" or "none".
* ``lr = 0`` is valid (coefficients use gamma1, gamma2 and gamma2/gamma1, never lr ratios).
* ``reckless_steps`` must be two numbers > 0.
* ``max_grad_norm`` 0 or None means "no clipping" in every optimizer, LAMB included.
* Clipping: one optimizer-wide threshold, eps = the constructor's eps (not the last group's),
  fp32/fp64 norm accumulation, factor kept on the device (no host sync).
* ``p.grad`` is never modified (the original clips it in place and adds L2 terms to it).
* Step counters are per parameter for all four optimizers (the original LAMB counts per group).
* Arguments after ``lr`` are keyword-only, so a positional call written for another signature fails
  loudly instead of silently misassigning.
* No fused kernel: see the "Win family" section of the package README for the measurement.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .win_base import WinOptimizerBase, _check_nonnegative
from .win_core import win_reckless_update_

__all__ = ["AdamW_Win", "Adam_Win", "LAMB_Win", "Lamb_Win", "SGD_Win"]


# ---------------------------------------------------------------------------- shared kernels
def _adam_moments(
    ms: list[Tensor],
    vs: list[Tensor],
    grads: list[Tensor],
    beta1: float,
    beta2: float,
    foreach: bool,
) -> None:
    """m <- lerp(m, g, 1-beta1); v <- beta2*v + (1-beta2)*g*g (torch.optim.Adam's op order)."""
    if foreach:
        torch._foreach_lerp_(ms, grads, 1 - beta1)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, grads, grads, 1 - beta2)
    else:
        for m, v, g in zip(ms, vs, grads):
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)


def _amsgrad_max(vmaxs: list[Tensor], vs: list[Tensor], foreach: bool) -> None:
    if foreach:
        torch._foreach_maximum_(vmaxs, vs)
    else:
        for vmax, v in zip(vmaxs, vs):
            torch.maximum(vmax, v, out=vmax)


def _scaled_direction(
    ms: list[Tensor], vs: list[Tensor], scales: list[float], offsets: list[float], foreach: bool
) -> list[Tensor]:
    """u_i = m_i / (sqrt(v_i) * scales_i + offsets_i), as new tensors."""
    if foreach:
        denom = torch._foreach_sqrt(vs)
        torch._foreach_mul_(denom, scales)
        torch._foreach_add_(denom, offsets)
        return list(torch._foreach_div(ms, denom))
    return [m / v.sqrt().mul_(s).add_(o) for m, v, s, o in zip(ms, vs, scales, offsets)]


def _add_decay(
    grads: list[Tensor], params: list[Tensor], weight_decay: float, foreach: bool, in_place: bool
) -> list[Tensor]:
    """g + weight_decay * p, in place only on private (already copied) gradients."""
    if foreach:
        if in_place:
            torch._foreach_add_(grads, params, alpha=weight_decay)
            return grads
        return list(torch._foreach_add(grads, params, alpha=weight_decay))
    if in_place:
        return [g.add_(p, alpha=weight_decay) for g, p in zip(grads, params)]
    return [g.add(p, alpha=weight_decay) for g, p in zip(grads, params)]


def _win_step(
    group: dict[str, Any], params, states, updates, weight_decay: float, foreach: bool
) -> None:
    mode = group["acceleration_mode"]
    win_reckless_update_(
        params,
        [s["x"] for s in states],
        [s["y"] for s in states] if mode == "win2" else None,
        updates,
        lr=group["lr"],
        weight_decay=weight_decay,
        reckless_steps=group["reckless_steps"],
        mode=mode,
        foreach=foreach,
    )


def _adam_step_moments(group, params, grads, states, foreach):
    """Count the step, update m and v (v's running max with amsgrad) and return
    ``(bc1, sqrt(bc2), ms, vs)`` per parameter, for AdamW_Win and Adam_Win."""
    beta1, beta2 = group["betas"]
    for s in states:
        s["step"] += 1
    bc1 = [1 - beta1 ** s["step"] for s in states]
    bc2_sqrt = [(1 - beta2 ** s["step"]) ** 0.5 for s in states]
    ms = [s["exp_avg"] for s in states]
    vs = [s["exp_avg_sq"] for s in states]
    _adam_moments(ms, vs, grads, beta1, beta2, foreach)
    if group["amsgrad"]:
        for s, p in zip(states, params):
            s.setdefault("max_exp_avg_sq", _zeros_like(p))
        vmaxs = [s["max_exp_avg_sq"] for s in states]
        _amsgrad_max(vmaxs, vs, foreach)
        vs = vmaxs
    return bc1, bc2_sqrt, ms, vs


def _zeros_like(p: Tensor) -> Tensor:
    return torch.zeros_like(p, memory_format=torch.preserve_format)


# ---------------------------------------------------------------------------------- AdamW_Win
class AdamW_Win(WinOptimizerBase):  # noqa: N801 - the name users know from the paper's code
    r"""AdamW with Win / Win2 acceleration.

    Direction ``u = m_hat / (sqrt(v_hat) + eps)`` with eps added *after* bias correction (as in
    torch AdamW). Weight decay:

    * modes "win"/"win2": proximal, ``x <- (x - lr*u) / (1 + lr*wd)`` and likewise for the reckless
      sequences (the "weight-decay-integrated" form);
    * mode "none": multiplicative ``p <- p*(1 - lr*wd)``, bit-identical to ``torch.optim.AdamW``.

    Kept from the original on purpose: the decay form depends on the mode, so as gamma -> 0 Win does
    not reduce exactly to AdamW.

    Args:
        params: iterable of parameters or param-group dicts.
        lr: learning rate (>= 0; 0 is valid).
        betas: (beta1, beta2) for the first and second moments.
        eps: denominator term; also the eps of the clip factor ``min(1, C/(G + eps))``.
        weight_decay: decoupled weight decay lambda.
        amsgrad: use the running maximum of v.
        max_grad_norm: global-norm clipping threshold C over all groups; 0 or None disables it.
        reckless_steps: (gamma1, gamma2) > 0, reckless step sizes relative to lr.
        acceleration_mode: "win", "win2" or "none".
        foreach: None (torch.optim's automatic choice), True or False.
        fused: only None/False; there is no fused Win kernel.

    State per parameter: ``step`` (int), ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` (amsgrad),
    ``x`` (win, win2) and ``y`` (win2).

    Example::

        opt = AdamW_Win(model.parameters(), lr=1e-3, weight_decay=0.05, acceleration_mode="win")
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        max_grad_norm: float | None = 0.0,
        reckless_steps: tuple[float, float] = (2.0, 8.0),
        acceleration_mode: str = "win",
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            max_grad_norm=max_grad_norm,
            reckless_steps=reckless_steps,
            acceleration_mode=acceleration_mode,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _init_param_state(self, group, p, state) -> None:
        state["exp_avg"] = _zeros_like(p)
        state["exp_avg_sq"] = _zeros_like(p)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = _zeros_like(p)

    def _update(self, group, params, grads, states, foreach, grads_are_private) -> None:
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        bc1, bc2_sqrt, ms, vs = _adam_step_moments(group, params, grads, states, foreach)
        mode = group["acceleration_mode"]

        if mode == "none" and wd != 0:  # torch.optim.AdamW: multiplicative decay before the step
            if foreach:
                torch._foreach_mul_(params, 1 - lr * wd)
            else:
                for p in params:
                    p.mul_(1 - lr * wd)

        if mode == "none":  # the exact op sequence of torch.optim.AdamW (single / multi tensor)
            if foreach:
                denom = torch._foreach_sqrt(vs)
                torch._foreach_div_(denom, bc2_sqrt)
                torch._foreach_add_(denom, eps)
                torch._foreach_addcdiv_(params, ms, denom, [(lr / b) * -1 for b in bc1])
            else:
                for p, m, v, b1, b2s in zip(params, ms, vs, bc1, bc2_sqrt):
                    p.addcdiv_(m, (v.sqrt() / b2s).add_(eps), value=-(lr / b1))
            return
        # u = (m / (sqrt(v)/sqrt(bc2) + eps)) / bc1, with bc1 folded into the denominator
        updates = _scaled_direction(
            ms, vs, [b1 / b2s for b1, b2s in zip(bc1, bc2_sqrt)], [eps * b1 for b1 in bc1], foreach
        )
        _win_step(group, params, states, updates, wd, foreach)


# ----------------------------------------------------------------------------------- Adam_Win
class Adam_Win(WinOptimizerBase):  # noqa: N801
    r"""Adam (L2-regularised, Kingma-Ba eps placement) with Win / Win2 acceleration.

    The L2 term is added to the (clipped) gradient, ``g <- g + wd*p`` with ``p`` the reckless
    iterate, so it is not clipped; ``p.grad`` itself is not changed. The proximal Win core runs with
    zero decay because the decay already sits in ``u``.

    Kept from the original on purpose: ``denom = sqrt(v) + eps`` with eps added *before* the bias
    correction, ``u = (m/denom) * sqrt(bc2)/bc1``. Mode "none" is therefore the classic Kingma-Ba
    form, which is *not* ``torch.optim.Adam`` (torch adds eps after correcting v).

    Args: as :class:`AdamW_Win`, with ``weight_decay`` (default 0) an L2 coefficient.

    Example::

        opt = Adam_Win(model.parameters(), lr=1e-3, weight_decay=1e-5, acceleration_mode="win2")
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        max_grad_norm: float | None = 0.0,
        reckless_steps: tuple[float, float] = (2.0, 8.0),
        acceleration_mode: str = "win",
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            max_grad_norm=max_grad_norm,
            reckless_steps=reckless_steps,
            acceleration_mode=acceleration_mode,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)

    _init_param_state = AdamW_Win._init_param_state

    def _update(self, group, params, grads, states, foreach, grads_are_private) -> None:
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        if wd != 0:
            grads = _add_decay(grads, params, wd, foreach, in_place=grads_are_private)
        bc1, bc2_sqrt, ms, vs = _adam_step_moments(group, params, grads, states, foreach)
        # u = (m / (sqrt(v) + eps)) * sqrt(bc2)/bc1, with the correction folded into the denominator
        ks = [b1 / b2s for b1, b2s in zip(bc1, bc2_sqrt)]
        updates = _scaled_direction(ms, vs, ks, [eps * k for k in ks], foreach)
        if group["acceleration_mode"] == "none":
            if foreach:
                torch._foreach_add_(params, updates, alpha=-lr)
            else:
                for p, u in zip(params, updates):
                    p.add_(u, alpha=-lr)
            return
        _win_step(group, params, states, updates, 0.0, foreach)


# ----------------------------------------------------------------------------------- LAMB_Win
class LAMB_Win(WinOptimizerBase):  # noqa: N801
    r"""LAMB (the timm / NVIDIA "NvLamb" variant) with Win / Win2 acceleration.

    ``u = m_hat / (sqrt(v_hat) + eps) + wd*p``, then the per-tensor trust ratio
    ``||p|| / ||u||`` (1 when either norm is 0; capped at 1 with ``trust_clip``) when ``wd != 0`` or
    ``always_adapt``. The decay term and both norms use the reckless iterate ``p``, never ``x``; the
    Win core runs with zero decay since the decay is already in ``u``.

    Clipping divides the gradients by ``G/C`` when the global norm ``G`` exceeds ``C`` (no eps),
    as in the original, but ``max_grad_norm`` 0 or None now means "no clipping" (the original
    zeroes every gradient for 0).

    Args:
        params, lr, betas, weight_decay, reckless_steps, acceleration_mode, foreach, fused: as
            :class:`AdamW_Win` (eps defaults to 1e-6, weight_decay to 0.01).
        max_grad_norm: clipping threshold (default 1.0 as in the original; 0/None disables).
        bias_correction: use Adam bias corrections (per-parameter step counter).
        grad_averaging: m <- beta1*m + (1-beta1)*g if True, else beta1*m + g.
        trust_clip: cap the trust ratio at 1.
        always_adapt: apply the trust ratio even when weight_decay is 0.

    ``Lamb_Win`` is an alias (the original class name).

    Example::

        opt = LAMB_Win(model.parameters(), lr=5e-3, weight_decay=0.02, acceleration_mode="win")
    """

    _clip_uses_eps = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        bias_correction: bool = True,
        grad_averaging: bool = True,
        max_grad_norm: float | None = 1.0,
        trust_clip: bool = False,
        always_adapt: bool = False,
        reckless_steps: tuple[float, float] = (2.0, 8.0),
        acceleration_mode: str = "win",
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            bias_correction=bias_correction,
            grad_averaging=grad_averaging,
            max_grad_norm=max_grad_norm,
            trust_clip=trust_clip,
            always_adapt=always_adapt,
            reckless_steps=reckless_steps,
            acceleration_mode=acceleration_mode,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _init_param_state(self, group, p, state) -> None:
        state["exp_avg"] = _zeros_like(p)
        state["exp_avg_sq"] = _zeros_like(p)

    def _update(self, group, params, grads, states, foreach, grads_are_private) -> None:
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        for s in states:
            s["step"] += 1
        if group["bias_correction"]:
            bc1 = [1 - beta1 ** s["step"] for s in states]
            bc2_sqrt = [(1 - beta2 ** s["step"]) ** 0.5 for s in states]
        else:
            bc1 = bc2_sqrt = [1.0] * len(states)
        beta3 = 1 - beta1 if group["grad_averaging"] else 1.0
        ms = [s["exp_avg"] for s in states]
        vs = [s["exp_avg_sq"] for s in states]
        if foreach:
            torch._foreach_mul_(ms, beta1)
            torch._foreach_add_(ms, grads, alpha=beta3)
            torch._foreach_mul_(vs, beta2)
            torch._foreach_addcmul_(vs, grads, grads, 1 - beta2)
        else:
            for m, v, g in zip(ms, vs, grads):
                m.mul_(beta1).add_(g, alpha=beta3)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        # u = (m/bc1) / (sqrt(v)/sqrt(bc2) + eps), with bc1 folded into the denominator
        updates = _scaled_direction(
            ms, vs, [b1 / b2s for b1, b2s in zip(bc1, bc2_sqrt)], [eps * b1 for b1 in bc1], foreach
        )
        if wd != 0:
            updates = _add_decay(updates, params, wd, foreach, in_place=True)
        if wd != 0 or group["always_adapt"]:
            self._apply_trust_ratio(params, updates, group["trust_clip"], foreach)
        if group["acceleration_mode"] == "none":
            if foreach:
                torch._foreach_add_(params, updates, alpha=-lr)
            else:
                for p, u in zip(params, updates):
                    p.add_(u, alpha=-lr)
            return
        _win_step(group, params, states, updates, 0.0, foreach)

    @staticmethod
    def _apply_trust_ratio(
        params: list[Tensor], updates: list[Tensor], trust_clip: bool, foreach: bool
    ) -> None:
        """u <- r*u with r = ||p||/||u|| (1 if either is 0), computed on the device (no sync)."""
        acc = torch.float64 if params[0].dtype == torch.float64 else torch.float32
        if foreach:
            w_norm = torch.stack(torch._foreach_norm(params, 2, dtype=acc))
            u_norm = torch.stack(torch._foreach_norm(updates, 2, dtype=acc))
        else:
            w_norm = torch.stack([torch.linalg.vector_norm(p, dtype=acc) for p in params])
            u_norm = torch.stack([torch.linalg.vector_norm(u, dtype=acc) for u in updates])
        ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
        if trust_clip:
            ratio = ratio.clamp(max=1.0)
        ratios = list(ratio.unbind())
        if foreach:
            torch._foreach_mul_(updates, ratios)
        else:
            for u, r in zip(updates, ratios):
                u.mul_(r)


Lamb_Win = LAMB_Win


# ------------------------------------------------------------------------------------ SGD_Win
class SGD_Win(WinOptimizerBase):  # noqa: N801
    r"""SGD with (Nesterov) momentum and Win / Win2 acceleration.

    Modes "win"/"win2": ``b <- g`` on the first step, else ``b <- mu*b + (1-dampening)*g``;
    ``u = g + mu*b`` (nesterov) or ``u = b``; weight decay is proximal inside the Win core (no L2
    term in the gradient). Mode "none" is exactly ``torch.optim.SGD`` (L2 decay added to the
    gradient, then momentum), without touching ``p.grad``.

    Args:
        params: iterable of parameters or param-group dicts.
        lr: learning rate (required, >= 0).
        momentum: mu >= 0 (default 0.9).
        dampening: in [0, 1]; must be 0 with nesterov (as in torch.optim.SGD).
        weight_decay: lambda (proximal in win modes, L2 in "none").
        nesterov: Nesterov momentum (default True; needs momentum > 0).
        eps: used only by the clip factor ``min(1, C/(G + eps))``.
        max_grad_norm, reckless_steps, acceleration_mode, foreach, fused: as :class:`AdamW_Win`.

    State per parameter: ``step`` (int), ``momentum_buffer`` (when momentum > 0), ``x``, ``y``.

    Example::

        opt = SGD_Win(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        *,
        momentum: float = 0.9,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = True,
        eps: float = 1e-8,
        max_grad_norm: float | None = 0.0,
        reckless_steps: tuple[float, float] = (2.0, 8.0),
        acceleration_mode: str = "win",
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            eps=eps,
            max_grad_norm=max_grad_norm,
            reckless_steps=reckless_steps,
            acceleration_mode=acceleration_mode,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        _check_nonnegative("momentum", group["momentum"])
        _check_nonnegative("dampening", group["dampening"])
        if group["dampening"] > 1:
            raise ValueError(f"dampening must be in [0, 1], got {group['dampening']!r}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                "nesterov=True needs momentum > 0 and dampening = 0 (as in torch.optim.SGD); "
                f"got momentum={group['momentum']!r}, dampening={group['dampening']!r}. "
                "Pass nesterov=False for plain or dampened momentum."
            )

    def _init_param_state(self, group, p, state) -> None:
        pass  # the momentum buffer is the first (decayed) gradient, created in _update

    def _update(self, group, params, grads, states, foreach, grads_are_private) -> None:
        lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
        mode = group["acceleration_mode"]
        for s in states:
            s["step"] += 1
        if mode == "none" and wd != 0:  # torch.optim.SGD: L2 term in the gradient
            grads = _add_decay(grads, params, wd, foreach, in_place=grads_are_private)
            grads_are_private = True
        updates = grads
        if mu != 0:
            fresh = [s.get("momentum_buffer") is None for s in states]
            if foreach and not any(fresh):
                bufs = [s["momentum_buffer"] for s in states]
                torch._foreach_mul_(bufs, mu)
                torch._foreach_add_(bufs, grads, alpha=1 - group["dampening"])
            else:
                bufs = []
                for s, g, new in zip(states, grads, fresh):
                    if new:  # first step: b = g, no dampening (as torch)
                        s["momentum_buffer"] = g.detach().clone()
                    else:
                        s["momentum_buffer"].mul_(mu).add_(g, alpha=1 - group["dampening"])
                    bufs.append(s["momentum_buffer"])
            if group["nesterov"]:
                if foreach:
                    if grads_are_private:
                        torch._foreach_add_(grads, bufs, alpha=mu)
                        updates = grads
                    else:
                        updates = list(torch._foreach_add(grads, bufs, alpha=mu))
                else:
                    updates = [
                        g.add_(b, alpha=mu) if grads_are_private else g.add(b, alpha=mu)
                        for g, b in zip(grads, bufs)
                    ]
            else:
                updates = bufs
        if mode == "none":
            if foreach:
                torch._foreach_add_(params, updates, alpha=-lr)
            else:
                for p, u in zip(params, updates):
                    p.add_(u, alpha=-lr)
            return
        _win_step(group, params, states, updates, wd, foreach)
