"""The Win / Win2 reckless-sequence update, shared by every Win optimizer (WIN.md §1).

Given a base optimizer's update direction ``u`` (Adam's ``m_hat / denom``, SGD's Nesterov momentum,
LAMB's trust-scaled step, Adan's direction ...), one Win step moves the conservative sequence ``x``
and the reckless sequence(s) by proximal steps with step sizes ``lr``, ``gamma1*lr`` and
``gamma2*lr``. The model parameter ``p`` always holds the most reckless sequence (``y`` in "win",
``z`` in "win2"), so the next gradient is taken at ``p``.

Every coefficient is written in ``gamma1``, ``gamma2`` and ``gamma2/gamma1`` rather than as ratios
of learning rates, so ``lr = 0`` is valid (the official code divides ``lr_y / lr_x`` and crashes
there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "WIN_MODES",
    "check_acceleration_mode",
    "check_reckless_steps",
    "win_state_names",
    "win_reckless_update_",
    "win_reckless_lines_",
]

WIN_MODES = ("win", "win2", "none")


def check_acceleration_mode(mode: object) -> str:
    """Return ``mode`` if it is exactly "win", "win2" or "none"; raise ``ValueError`` otherwise."""
    if not isinstance(mode, str) or mode not in WIN_MODES:
        raise ValueError(
            f"acceleration_mode must be one of 'win', 'win2' or 'none' (lower case), got {mode!r}; "
            "use 'win' for the default Win acceleration"
        )
    return mode


def check_reckless_steps(reckless_steps: object) -> tuple[float, float]:
    """Validate ``(gamma1, gamma2)``: two finite numbers > 0. Returns them as floats."""
    try:
        gamma1, gamma2 = (float(v) for v in reckless_steps)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(
            "reckless_steps must be a pair of positive numbers (gamma1, gamma2), got "
            f"{reckless_steps!r}; the default is (2.0, 8.0)"
        ) from None
    for name, gamma in (
        ("gamma1 = reckless_steps[0]", gamma1),
        ("gamma2 = reckless_steps[1]", gamma2),
    ):
        if not (math.isfinite(gamma) and gamma > 0.0):
            raise ValueError(
                f"{name} must be a finite number > 0, got {gamma!r} "
                f"(reckless_steps={tuple(reckless_steps)!r}); a zero step freezes or breaks the "
                "reckless sequence, use the default (2.0, 8.0)"
            )
    return gamma1, gamma2


def win_state_names(mode: str) -> tuple[str, ...]:
    """Names of the extra per-parameter buffers a mode keeps: () / ("x",) / ("x", "y")."""
    return {"none": (), "win": ("x",), "win2": ("x", "y")}[check_acceleration_mode(mode)]


def win_reckless_update_(
    params: Sequence[Tensor],
    xs: Sequence[Tensor],
    ys: Sequence[Tensor] | None,
    updates: Sequence[Tensor],
    *,
    lr: float,
    weight_decay: float,
    reckless_steps: tuple[float, float],
    mode: str,
    foreach: bool = True,
) -> None:
    """One Win/Win2 step of the conservative and reckless sequences, in place (WIN.md §1).

    With eta = ``lr``, lam = ``weight_decay`` (the proximal decay lambda_p: the real weight decay
    for AdamW/SGD/Adan-style decoupled decay, 0 when the decay is already inside ``u``) and
    (g1, g2) = ``reckless_steps``::

        x <- (x - eta*u) / (1 + eta*lam)
        win : p <- (p + g1*x - g1*eta*u) / (1 + g1 + g1*eta*lam)                       (p is y)
        win2: y <- (y + g1*x - g1*eta*u) / (1 + g1 + g1*eta*lam)
              p <- (p + g2*x + (g2/g1)*y - g2*eta*u) / (1 + g2 + g2/g1 + g2*eta*lam)    (p is z)

    where each line uses the freshly updated values of the lines above it.

    Args:
        params: model parameters (the reckless sequence), updated in place.
        xs: conservative sequence ``x``, one tensor per param (same shape, dtype, device), in place.
        ys: Win2's middle sequence ``y`` (in place), or None for mode "win".
        updates: the base optimizer's direction ``u`` per param, *not* multiplied by lr. Read only.
        lr: the current learning rate (>= 0; 0 is valid and pulls p toward x).
        weight_decay: lambda_p of the proximal denominators (>= 0).
        reckless_steps: (gamma1, gamma2), both > 0; gamma2 is used only by "win2".
        mode: "win" or "win2" ("none" is a no-op by design: the caller applies its own step).
        foreach: use ``torch._foreach_*`` kernels (all tensors must share device and dtype).
    """
    if mode == "none":
        return
    check_acceleration_mode(mode)
    gamma1, gamma2 = reckless_steps
    lr = float(lr)
    params, xs, updates = list(params), list(xs), list(updates)
    if mode == "win2":
        if ys is None:
            raise ValueError("mode 'win2' needs the y buffers (ys), got None")
        ys = list(ys)
    if not params:
        return

    x_den = 1.0 + lr * weight_decay
    if foreach:
        torch._foreach_add_(xs, updates, alpha=-lr)
        if x_den != 1.0:  # skip a full pass when there is no decay (or lr = 0); /1 is exact
            torch._foreach_div_(xs, x_den)
    else:
        for x, u in zip(xs, updates):
            x.add_(u, alpha=-lr)
            if x_den != 1.0:
                x.div_(x_den)
    win_reckless_lines_(
        params,
        xs,
        ys,
        updates,
        lr=lr,
        update_scale=lr,
        weight_decay=weight_decay,
        reckless_steps=reckless_steps,
        mode=mode,
        foreach=foreach,
    )


def win_reckless_lines_(
    params: Sequence[Tensor],
    xs: Sequence[Tensor],
    ys: Sequence[Tensor] | None,
    updates: Sequence[Tensor],
    *,
    lr: float,
    update_scale: float,
    weight_decay: float,
    reckless_steps: tuple[float, float],
    mode: str,
    foreach: bool = True,
) -> None:
    """The reckless lines of a Win step, given the already updated conservative sequence ``xs``.

    ``update_scale * updates`` must equal ``lr * u``: pass ``u`` with ``update_scale=lr``, or a
    direction already multiplied by lr with ``update_scale=1`` (as Adan's Win mode does, since its
    fused kernels return the new ``x`` rather than ``u``). ``lr`` enters only the decay terms.
    """
    gamma1, gamma2 = reckless_steps
    y_den = 1.0 + gamma1 + gamma1 * lr * weight_decay
    ratio = gamma2 / gamma1
    z_den = 1.0 + gamma2 + ratio + gamma2 * lr * weight_decay
    # mode "win": p plays y; mode "win2": ys play y and p plays z.
    y_seq = params if mode == "win" else ys

    if foreach:
        torch._foreach_add_(y_seq, xs, alpha=gamma1)
        torch._foreach_add_(y_seq, updates, alpha=-gamma1 * update_scale)
        torch._foreach_div_(y_seq, y_den)
        if mode == "win2":
            torch._foreach_add_(params, xs, alpha=gamma2)
            torch._foreach_add_(params, ys, alpha=ratio)
            torch._foreach_add_(params, updates, alpha=-gamma2 * update_scale)
            torch._foreach_div_(params, z_den)
        return

    for i, (p, x, u) in enumerate(zip(params, xs, updates)):
        y = y_seq[i]
        y.add_(x, alpha=gamma1).add_(u, alpha=-gamma1 * update_scale).div_(y_den)
        if mode == "win2":
            p.add_(x, alpha=gamma2).add_(y, alpha=ratio)
            p.add_(u, alpha=-gamma2 * update_scale).div_(z_den)
