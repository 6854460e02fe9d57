"""The Adan optimizer: one math (``functional.py``), chosen implementation per step."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import ClippedOptimizer, check_dense_grad
from ._checkpoints import (
    GROUP_FLAG_DEFAULTS,
    STATE_KEYS,
    after_load,
    migrate_checkpoint,
    write_group_steps,
)
from ._grouping import bucketize, device_dtype_key
from ._layout import is_dtensor, local_tensor
from .clip import global_grad_norm
from .functional import _LOW_PRECISION, FUSED_DTYPES, adan, fused_unavailable
from .win_core import (
    check_acceleration_mode,
    check_reckless_steps,
    win_reckless_lines_,
    win_state_names,
)

__all__ = ["Adan"]


class Adan(ClippedOptimizer):
    r"""Adan: Adaptive Nesterov Momentum (Xie et al., TPAMI 2024), a drop-in for the official class.

    Per step, with gradient :math:`g_t` (after clipping) and :math:`\Delta_t = g_t - g_{t-1}`
    (:math:`\Delta_1 = 0`)::

        m = b1*m + (1-b1)*g                 d = b2*d + (1-b2)*Δ
        n = b3*n + (1-b3)*(g + b2*Δ)**2
        u = (m/(1-b1**t) + b2*d/(1-b2**t)) / (sqrt(n/(1-b3**t)) + eps)
        p = (p - lr*u) / (1 + lr*wd)        (proximal decay, default)
        p = p*(1 - lr*wd) - lr*u            (no_prox=True, AdamW-style decay)

    **Betas use the code convention**, as the official repository and timm do: ``betas=(0.98, 0.92,
    0.99)`` are the paper's ``β = (0.02, 0.08, 0.01)`` written as ``1 - β``. Passing paper-style
    values (all below 0.5) emits a warning. Adan usually wants a larger lr than Adam (the authors
    used 5-10x for vision, 2-4x for LLM fine-tuning) and weight decay around 0.02.

    Args:
        params: iterable of parameters or param-group dicts.
        lr: step size (float or 0-d tensor; a tensor lr avoids recompiles under ``torch.compile``).
        betas: ``(b1, b2, b3)`` EMA factors of the gradient, the gradient difference and the squared
            Nesterov gradient, each in [0, 1).
        eps: added to the bias-corrected ``sqrt(n)`` (as ``torch.optim.AdamW`` does), and to the
            global norm in the clip factor ``min(1, max_grad_norm / (norm + eps))``. The clip eps
            is the constructor's, never a param group's.
        weight_decay: decay factor, multiplied by lr (so it follows the lr schedule).
        max_grad_norm: global-norm clipping threshold over all groups (and all ranks, see
            ``sharded``); 0 disables clipping. Computed on the device without a host sync, and fed
            into the update: ``p.grad`` is never modified.
        no_prox: False for the paper's proximal decay, True for AdamW-style decay.
        foreach: use the ``torch._foreach_*`` implementation (None: choose automatically).
        fused: True to require the fused Triton kernel (CUDA, or CPU with ``TRITON_INTERPRET=1``);
            None chooses it automatically on CUDA. On CPU the default is a compiled one-pass
            kernel (``torch.compile``), falling back to foreach if no C++ compiler is present.
        capturable: keep steps on the parameters' device so the step can be captured in a CUDA
            graph (the fused kernel is always capturable).
        differentiable: not supported (raises).
        maximize: maximize the objective instead of minimizing it.
        sharded: True when each rank's optimizer owns a disjoint shard of the parameters
            (``ZeroRedundancyOptimizer``); the clipping norm is then all-reduced across the
            default process group. DTensor (FSDP2) parameters are detected automatically.
        acceleration_mode: ``"none"`` (plain Adan, default), or **experimental** Win acceleration
            ``"win"`` / ``"win2"`` (WIN.md §7; our composition, not the authors'): Adan's
            proximal step moves a conservative copy ``x`` of each parameter, and the parameter
            itself follows the reckless sequence(s). Needs fp32/fp64 params and ``no_prox=False``;
            keeps one (win) or two (win2) extra param-sized buffers.
        reckless_steps: ``(gamma1, gamma2)`` of the Win modes, both > 0.
        state_dtype: None (default, as the official code) keeps each state in its parameter's
            dtype; ``torch.float32`` keeps fp32 state for bf16/fp16 params (fp32/fp64 params are
            unaffected). bf16 state stalls for slow EMAs: with ``b3=0.999`` and g = 1,
            ``exp_avg_sq`` stops near 0.25 instead of reaching 0.95 after 3000 steps, so steps come
            out about twice too large. fp32 state costs 8 more bytes per param of memory.

    State per parameter (official names, so official checkpoints load): ``exp_avg``,
    ``exp_avg_sq``, ``exp_avg_diff``, ``neg_pre_grad`` and ``step`` (a 0-d fp32 tensor). Unlike the
    official group-wide step, each parameter counts its own steps, so a parameter whose first
    gradient arrives late gets the correct bias correction. ``state_dict()`` also writes the
    group ``step`` the official class expects.
    """

    _step_supports_amp_scaling = True  # GradScaler passes grad_scale/found_inf; see step()

    def __init__(
        self,
        params: Iterable[Tensor | dict[str, Any]],
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        max_grad_norm: float = 0.0,
        no_prox: bool = False,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        maximize: bool = False,
        sharded: bool = False,
        acceleration_mode: str = "none",
        reckless_steps: tuple[float, float] = (2.0, 8.0),
        state_dtype: torch.dtype | None = None,
    ) -> None:
        if state_dtype not in (None, torch.float32):
            raise ValueError(
                f"state_dtype must be None (the param dtype) or torch.float32, got {state_dtype!r}"
            )
        if differentiable:
            raise NotImplementedError(
                "Adan(differentiable=True) is not supported; use differentiable=False"
            )
        if foreach and fused:
            raise ValueError("foreach=True and fused=True cannot both be set; choose one")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            max_grad_norm=max_grad_norm,
            no_prox=no_prox,
            foreach=foreach,
            fused=fused,
            capturable=capturable,
            differentiable=differentiable,
            maximize=maximize,
            acceleration_mode=acceleration_mode,
            reckless_steps=tuple(reckless_steps),
        )
        self.sharded = sharded
        self.state_dtype = state_dtype
        self._packs: dict = {}
        self._warned: set[str] = set()
        super().__init__(params, defaults)
        if fused:
            for group in self.param_groups:
                for p in group["params"]:
                    reason = fused_unavailable(local_tensor(p).device)
                    if reason is None and p.dtype not in FUSED_DTYPES:
                        reason = f"fused Adan supports fp32/bf16/fp16 params, got {p.dtype}"
                    if reason is not None:
                        raise RuntimeError(
                            f"Adan(fused=True) cannot run: {reason}. Use fused=None (automatic) "
                            "or foreach=True."
                        )
        self._register_hooks()

    def _register_hooks(self) -> None:
        """Checkpoint hooks. Re-registered after unpickling/deepcopy, which drop all hooks."""
        self._adan_hooks = True
        self.register_state_dict_post_hook(write_group_steps)
        self.register_load_state_dict_pre_hook(migrate_checkpoint)
        self.register_load_state_dict_post_hook(after_load)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["sharded"] = self.sharded
        state["state_dtype"] = self.state_dtype
        return state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Validate every hyperparameter of the group (the constructor's defaults included)."""
        merged = {**self.defaults, **param_group}
        _validate(merged)
        self._check_group_max_grad_norm(merged["max_grad_norm"])
        super().add_param_group(param_group)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("sharded", False)
        self.__dict__.setdefault("state_dtype", None)
        self.__dict__.setdefault("_packs", {})
        self.__dict__.setdefault("_warned", set())
        if not self.__dict__.get("_adan_hooks"):
            self._register_hooks()
        for group in self.param_groups:
            for key, value in GROUP_FLAG_DEFAULTS.items():
                group.setdefault(key, value)
            group["betas"] = tuple(group["betas"])
            for p in group["params"]:
                st = self.state.get(p)
                if st and "step" in st and not torch.is_tensor(st["step"]):
                    st["step"] = torch.tensor(float(st["step"]), dtype=torch.float32)

    @torch.no_grad()
    def restart(self) -> None:
        """Restart as in the paper's Algorithm 1: zero m, n, d and the step counts.

        The next step is then a first step again (delta = 0, full bias correction), which equals the
        paper's re-initialisation ``m = g, v = 0, n = g**2`` at the current point. Call it from the
        training loop whenever your restart condition holds. Win modes keep ``x`` (and ``y``).
        """
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p)
                if not st:
                    continue
                for key in ("exp_avg", "exp_avg_sq", "exp_avg_diff"):
                    st[key].zero_()
                st["step"].zero_()

    restart_opt = restart  # the official name

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        exp_avg_diffs: list[Tensor],
        neg_pre_grads: list[Tensor],
        state_steps: list[Tensor],
    ) -> bool:
        """Create missing state lazily, bring existing state to the dtype and device it must have,
        and fill the lists (torch.optim's convention, which torch.compile relies on: it runs this
        method eagerly while tracing ``step``)."""
        lists = (params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads, state_steps)
        mode = group["acceleration_mode"]
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad
            check_dense_grad(self, p)
            if torch.is_complex(p):
                raise TypeError(
                    "Adan does not support complex parameters; optimize torch.view_as_real(p) "
                    "as a real parameter instead"
                )
            if mode != "none" and p.dtype not in (torch.float32, torch.float64):
                raise TypeError(
                    f"acceleration_mode={mode!r} needs fp32 or fp64 params, got {p.dtype}; keep "
                    "fp32 master weights (e.g. torch.autocast) for Win modes"
                )
            state = self.state[p]
            wanted = self._wanted_state(group, p, grad)
            if "exp_avg" not in state:
                for key, (dtype, _) in wanted.items():
                    if key == "step":
                        state[key] = torch.zeros((), dtype=dtype, device=wanted[key][1])
                    elif key in ("x", "y"):  # Win: x0 = y0 = p0, taken before the update
                        state[key] = p.detach().clone(memory_format=torch.preserve_format)
                    else:
                        state[key] = torch.zeros_like(
                            p, dtype=dtype, memory_format=torch.preserve_format
                        )
            else:
                self._reconcile_state(p, state, wanted)
            for out, key in zip(lists, ("p", "grad", *STATE_KEYS, "step")):
                out.append(p if key == "p" else grad if key == "grad" else state[key])
        return False  # no complex params: they are refused above

    def _wanted_state(
        self, group: dict[str, Any], p: Tensor, grad: Tensor
    ) -> dict[str, tuple[Any, torch.device]]:
        """What each state entry must be: ``{key: (dtype, device)}``; for ``step``, the device
        twice (a 0-d fp32 tensor on the params' device when a kernel reads it there)."""
        device = local_tensor(p).device
        fp32 = self.state_dtype == torch.float32
        moments = torch.float32 if fp32 and p.dtype in _LOW_PRECISION else p.dtype
        prev = torch.float32 if fp32 and grad.dtype in _LOW_PRECISION else grad.dtype
        on_device = group["capturable"] or group["fused"] or device.type != "cpu"
        step_device = device if on_device else torch.device("cpu")
        wanted: dict[str, tuple[Any, torch.device]] = {
            "exp_avg": (moments, device),
            "exp_avg_sq": (moments, device),
            "exp_avg_diff": (moments, device),
            "neg_pre_grad": (prev, device),
            "step": (torch.float32, step_device),
        }
        for key in win_state_names(group["acceleration_mode"]):
            wanted[key] = (p.dtype, device)
        return wanted

    def _reconcile_state(
        self, p: Tensor, state: dict[str, Any], wanted: dict[str, tuple[Any, torch.device]]
    ) -> None:
        """Cast state that no longer matches its parameter (``model.to(torch.bfloat16)`` after
        some steps, a checkpoint from another device...) instead of letting a kernel misread it."""
        for key, (dtype, device) in wanted.items():
            t = state.get(key)
            if key == "step":
                if t.device != device or t.dtype != dtype:  # a restored CPU step, say
                    state[key] = t.to(device=device, dtype=dtype)
                continue
            if t is None:  # a Win buffer missing from a plain checkpoint: start from p, as step 1
                state[key] = p.detach().clone(memory_format=torch.preserve_format)
                continue
            if t.dtype == dtype and local_tensor(t).device == device:
                continue
            self._warn_once(
                f"state {key!r} of a {p.dtype} parameter was {t.dtype} on "
                f"{local_tensor(t).device} (did the model change dtype or device after some "
                f"steps?); casting it to {dtype} on {device}. Pass state_dtype=torch.float32 to "
                "keep fp32 state for bf16/fp16 params."
            )
            state[key] = t.to(device=device, dtype=dtype)

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(f"adan_core.Adan: {message}", RuntimeWarning, stacklevel=4)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one optimization step. ``closure`` re-evaluates the model and returns the loss.

        Under ``torch.amp.GradScaler``, the scaler sets ``grad_scale`` and ``found_inf`` on the
        optimizer: gradients are unscaled inside the update, the clipping norm is the unscaled
        one, and an inf/NaN gradient skips the step without touching any state or step count.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        per_group = []
        for group in self.param_groups:
            lists: list[list[Tensor]] = [[] for _ in range(7)]
            self._init_group(group, *lists)
            per_group.append(lists)
        all_grads = [g for lists in per_group for g in lists[1]]
        if not all_grads:
            if self.sharded and self._max_grad_norm() > 0:
                global_grad_norm([], sharded=True)  # join the other ranks' all-reduce
            return loss

        found_inf: Tensor | None = getattr(self, "found_inf", None)
        grad_mul = self._grad_multiplier(all_grads, getattr(self, "grad_scale", None))
        for group, lists in zip(self.param_groups, per_group):
            if not lists[0]:
                continue
            if is_dtensor(lists[0][0]):  # FSDP2: the update is elementwise on local shards
                lists = [[local_tensor(t) for t in seq] for seq in lists[:6]] + [lists[6]]
            if group["acceleration_mode"] == "none":
                self._adan_update(group, lists, grad_mul, found_inf)
            else:
                self._win_update(group, lists, grad_mul, found_inf)
        return loss

    def _adan_update(
        self,
        group: dict[str, Any],
        lists: list[list[Tensor]],
        grad_mul: Tensor | None,
        found_inf: Tensor | None,
    ) -> None:
        """One Adan step of a group's tensors; ``functional.adan`` chooses the implementation."""
        adan(
            *lists,
            lr=group["lr"],
            betas=group["betas"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            no_prox=group["no_prox"],
            maximize=group["maximize"],
            grad_mul=grad_mul,
            found_inf=found_inf,
            foreach=group["foreach"],
            fused=group["fused"],
            capturable=group["capturable"],
            cache=self._packs.setdefault(id(group), {}),
            warn=self._warn_once,
        )

    def _win_update(
        self,
        group: dict[str, Any],
        lists: list[list[Tensor]],
        grad_mul: Tensor | None,
        found_inf: Tensor | None,
    ) -> None:
        """Experimental Adan + Win (WIN.md §7): Adan's proximal step moves the conservative
        sequence x with the gradient taken at p; then p (and y) follow the reckless lines.

        The Adan kernels return the new x rather than the direction, so lr*u is recovered as
        ``x_old - (1 + lr*wd) * x_new``; this is why the Win modes need fp32/fp64 params.
        """
        if found_inf is not None and bool(found_inf.item()):
            return  # AMP skipped this step (the experimental path syncs here)
        mode = group["acceleration_mode"]
        with_grad = [p for p in group["params"] if p.grad is not None]
        xs = [local_tensor(self.state[p]["x"]) for p in with_grad]
        ys = [local_tensor(self.state[p]["y"]) for p in with_grad] if mode == "win2" else xs
        lr = float(group["lr"])
        wd = group["weight_decay"]
        lr_u = [x.clone() for x in xs]
        self._adan_update(group, [xs, *lists[1:]], grad_mul, found_inf=None)
        torch._foreach_add_(lr_u, xs, alpha=-(1.0 + lr * wd))
        seqs = [lists[0], xs, ys, lr_u]
        for p_b, x_b, y_b, u_b in bucketize(seqs, device_dtype_key(lists[0])).values():
            win_reckless_lines_(
                p_b,
                x_b,
                y_b if mode == "win2" else None,
                u_b,
                lr=lr,
                update_scale=1.0,
                weight_decay=wd,
                reckless_steps=group["reckless_steps"],
                mode=mode,
            )


def _validate(hp: dict[str, Any]) -> None:
    lr = hp["lr"]
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError(f"Invalid lr: a tensor lr must have one element, got shape {lr.shape}")
        # a device lr is not read back: that would be a host sync
        lr_value = float(lr.detach()) if lr.device.type == "cpu" else 0.0
    else:
        lr_value = float(lr)
    if not lr_value >= 0.0:
        raise ValueError(f"Invalid lr={lr}: the learning rate must be >= 0")
    betas = hp["betas"]
    if len(betas) != 3:
        raise ValueError(
            f"Invalid betas={betas}: Adan takes three betas (b1, b2, b3), e.g. (0.98, 0.92, 0.99)"
        )
    for i, b in enumerate(betas):
        if not 0.0 <= b < 1.0:
            raise ValueError(
                f"Invalid betas[{i}]={b}: each beta must be in [0, 1) (code convention, "
                "e.g. (0.98, 0.92, 0.99))"
            )
    if all(b < 0.5 for b in betas):
        warnings.warn(
            f"Adan betas={tuple(betas)} look like the paper's convention (β = 1 - beta). This "
            "class uses the code convention: the paper's (0.02, 0.08, 0.01) is (0.98, 0.92, 0.99).",
            UserWarning,
            stacklevel=5,  # _validate < add_param_group < Optimizer.__init__ < Adan.__init__ < user
        )
    mode = check_acceleration_mode(hp.get("acceleration_mode", "none"))
    check_reckless_steps(hp.get("reckless_steps", (2.0, 8.0)))
    if mode != "none" and hp["no_prox"]:
        raise ValueError(
            f"acceleration_mode={mode!r} needs no_prox=False: Win's sequences are proximal steps "
            "and AdamW-style decay has no Win counterpart"
        )
    for name in ("eps", "weight_decay", "max_grad_norm"):
        value = hp[name]
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0.0):
            raise ValueError(f"Invalid {name}={value!r}: must be a finite number >= 0")
