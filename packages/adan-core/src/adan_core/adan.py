"""The Adan optimizer: one math (``functional.py``), chosen implementation per step."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import _cpu_fused
from ._layout import is_dtensor, local_tensor
from .clip import clip_factor, global_grad_norm
from .functional import FUSED_DTYPES, adan
from .win_core import check_acceleration_mode, check_reckless_steps, win_reckless_lines_

__all__ = ["Adan"]

_GROUP_FLAG_DEFAULTS: dict[str, Any] = {
    "no_prox": False,
    "max_grad_norm": 0.0,
    "foreach": None,
    "fused": None,
    "capturable": False,
    "differentiable": False,
    "maximize": False,
    "acceleration_mode": "none",
    "reckless_steps": (2.0, 8.0),
}
# Per-parameter state layouts written by other Adan implementations that cannot be loaded as is.
_FOREIGN_LAYOUTS = {
    "previous_grad": "pytorch-optimizer (kozistr)",
    "prev_grad": "optimi or lucidrains/Adan-pytorch",
    "kahan_comp": "optimi",
    "m": "lucidrains/Adan-pytorch",
}


def _fused_unavailable(device: torch.device) -> str | None:
    try:
        from ._triton_adan import unavailable_reason
    except ImportError as err:
        return f"Triton is not importable ({err}); install it with `pip install adan-core[triton]`"
    return unavailable_reason(device)


class Adan(Optimizer):
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
    ) -> None:
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
        self._packs: dict = {}
        self._warned: set[str] = set()
        super().__init__(params, defaults)
        if fused:
            for group in self.param_groups:
                for p in group["params"]:
                    reason = _fused_unavailable(local_tensor(p).device)
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
        self.register_state_dict_post_hook(_write_group_steps)
        self.register_load_state_dict_pre_hook(_migrate_checkpoint)
        # loading replaces the groups and the state tensors: drop the CPU path's packs
        self.register_load_state_dict_post_hook(_clear_packs)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["sharded"] = self.sharded
        return state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Validate every hyperparameter of the group (the constructor's defaults included)."""
        merged = {**self.defaults, **param_group}
        _validate(merged)
        if self.param_groups and merged["max_grad_norm"] != self.param_groups[0]["max_grad_norm"]:
            raise ValueError(
                "max_grad_norm is optimizer-wide (one global norm over all groups); got "
                f"{merged['max_grad_norm']} for a new group but "
                f"{self.param_groups[0]['max_grad_norm']} before. Set it once in the constructor."
            )
        super().add_param_group(param_group)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("sharded", False)
        self.__dict__.setdefault("_packs", {})
        self.__dict__.setdefault("_warned", set())
        if not self.__dict__.get("_adan_hooks"):
            self._register_hooks()
        for group in self.param_groups:
            for key, value in _GROUP_FLAG_DEFAULTS.items():
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
        """Create missing state lazily and fill the lists (torch.optim's convention, which
        torch.compile relies on: it runs this method eagerly while tracing ``step``)."""
        lists = (params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads, state_steps)
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad
            if grad.is_sparse:
                raise RuntimeError(
                    "Adan does not support sparse gradients; use a dense embedding "
                    "(nn.Embedding(sparse=False)) or torch.optim.SparseAdam for that parameter"
                )
            if torch.is_complex(p):
                raise TypeError(
                    "Adan does not support complex parameters; optimize torch.view_as_real(p) "
                    "as a real parameter instead"
                )
            if group["acceleration_mode"] != "none" and p.dtype not in (
                torch.float32,
                torch.float64,
            ):
                raise TypeError(
                    f"acceleration_mode={group['acceleration_mode']!r} needs fp32 or fp64 params, "
                    f"got {p.dtype}; keep fp32 master weights (e.g. torch.autocast) for Win modes"
                )
            state = self.state[p]
            if "exp_avg" not in state:
                device = local_tensor(p).device
                on_device = group["capturable"] or group["fused"] or device.type == "cuda"
                state["step"] = torch.zeros(
                    (), dtype=torch.float32, device=device if on_device else "cpu"
                )
                for key in ("exp_avg", "exp_avg_sq", "exp_avg_diff"):
                    state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["neg_pre_grad"] = torch.zeros_like(
                    p, dtype=grad.dtype, memory_format=torch.preserve_format
                )
            for key in {"none": (), "win": ("x",), "win2": ("x", "y")}[group["acceleration_mode"]]:
                if key not in state:
                    state[key] = p.detach().clone(memory_format=torch.preserve_format)
            for out, t in zip(
                lists,
                (
                    p,
                    grad,
                    state["exp_avg"],
                    state["exp_avg_sq"],
                    state["exp_avg_diff"],
                    state["neg_pre_grad"],
                    state["step"],
                ),
            ):
                out.append(t)
        return False  # no complex params: they are refused above

    def _choose_impl(self, group: dict[str, Any], params: list[Tensor]) -> str:
        """The implementation for this group, decided now from what can actually run here."""
        if torch.compiler.is_compiling():
            return "foreach"  # Dynamo traces the foreach math and fuses it itself
        devices = {p.device for p in params}
        dtypes = {p.dtype for p in params}
        fusable = len(devices) == 1 and dtypes <= set(FUSED_DTYPES)
        device = next(iter(devices))
        if group["fused"]:
            reason = _fused_unavailable(device) if fusable else "mixed devices or fp64 params"
            if reason is None:
                return "fused"
            self._warn_once(
                f"fused={group['fused']} (possibly restored from a checkpoint) cannot run here: "
                f"{reason}. Falling back to the best available implementation."
            )
        if group["foreach"] is False:
            return "single"
        if group["foreach"]:
            return "foreach"
        if fusable and device.type == "cuda" and _fused_unavailable(device) is None:
            return "fused"
        if fusable and device.type == "cpu" and not group["capturable"]:
            return "cpu_fused"
        return "foreach"

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
            if self.sharded and any(g["max_grad_norm"] > 0 for g in self.param_groups):
                global_grad_norm([], sharded=True)  # join the other ranks' all-reduce
            return loss

        grad_scale: Tensor | None = getattr(self, "grad_scale", None)
        found_inf: Tensor | None = getattr(self, "found_inf", None)
        grad_mul = self._grad_multiplier(all_grads, grad_scale)

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
        """One Adan step of a group's tensors with the implementation chosen for them."""
        impl = self._choose_impl(group, lists[0])
        if impl == "cpu_fused":
            pairs = {(p.dtype, g.dtype) for p, g in zip(lists[0], lists[1])}
            if not _cpu_fused.ready(pairs):
                impl = "foreach"
        device = lists[0][0].device
        if impl == "fused":
            lists[6] = self._steps_on(group, device)
        mul = grad_mul.to(device, non_blocking=True) if grad_mul is not None else None
        lr = group["lr"]
        if isinstance(lr, Tensor) and impl in ("fused", "foreach"):
            lr = lr.to(device, non_blocking=True)
        adan(
            *lists,
            lr=lr,
            betas=group["betas"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            no_prox=group["no_prox"],
            maximize=group["maximize"],
            grad_mul=mul,
            found_inf=found_inf,
            impl=impl,
            cache=self._packs.setdefault(id(group), {}) if impl == "cpu_fused" else None,
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
        ys = [local_tensor(self.state[p]["y"]) for p in with_grad] if mode == "win2" else None
        lr = float(group["lr"])
        wd = group["weight_decay"]
        lr_u = [x.clone() for x in xs]
        self._adan_update(group, [xs, *lists[1:]], grad_mul, found_inf=None)
        torch._foreach_add_(lr_u, xs, alpha=-(1.0 + lr * wd))
        buckets: dict[tuple, list[int]] = {}
        for i, p in enumerate(lists[0]):
            buckets.setdefault((p.device, p.dtype), []).append(i)
        for idx in buckets.values():
            win_reckless_lines_(
                [lists[0][i] for i in idx],
                [xs[i] for i in idx],
                [ys[i] for i in idx] if ys is not None else None,
                [lr_u[i] for i in idx],
                lr=lr,
                update_scale=1.0,
                weight_decay=wd,
                reckless_steps=group["reckless_steps"],
                mode=mode,
            )

    def _steps_on(self, group: dict[str, Any], device: torch.device) -> list[Tensor]:
        """Per-parameter steps moved (once) to ``device``, where the fused kernel reads them."""
        steps = []
        for p in group["params"]:
            if p.grad is None:
                continue
            st = self.state[p]
            if st["step"].device != device:
                st["step"] = st["step"].to(device=device, dtype=torch.float32)
            steps.append(st["step"])
        return steps

    def _grad_multiplier(self, grads: list[Tensor], grad_scale: Tensor | None) -> Tensor | None:
        """Clip factor divided by the AMP scale, as a device tensor (None when both are absent)."""
        max_norms = {group["max_grad_norm"] for group in self.param_groups}
        if len(max_norms) > 1:
            raise ValueError(
                f"max_grad_norm must be the same in every param group (it clips one global norm); "
                f"got {sorted(max_norms)}"
            )
        max_norm = max_norms.pop()
        mul = None
        if max_norm > 0:
            norm = global_grad_norm(grads, sharded=self.sharded)
            if grad_scale is not None:
                norm = norm / grad_scale.to(norm.device)
            mul = clip_factor(norm, max_norm, self.defaults["eps"])
        if grad_scale is not None:
            inv = grad_scale.double().reciprocal().float()
            mul = inv if mul is None else mul * inv.to(mul.device)
        return mul


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


def _clear_packs(optimizer: Optimizer) -> None:
    optimizer._packs.clear()


def _write_group_steps(optimizer: Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """Add the official group-level int ``step`` so the official class can load our checkpoints."""
    for group in state_dict["param_groups"]:
        steps = [
            state_dict["state"][i]["step"] for i in group["params"] if i in state_dict["state"]
        ]
        group["step"] = int(max(float(s) for s in steps)) if steps else 0
    return state_dict


def _migrate_checkpoint(optimizer: Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """Accept the official layouts (current and the 2022 ``pre_grad`` one), reject foreign ones."""
    state = {k: dict(v) for k, v in state_dict["state"].items()}
    groups = [dict(g) for g in state_dict["param_groups"]]
    group_step = {i: g.get("step", 0) for g in groups for i in g["params"]}
    for idx, st in state.items():
        foreign = [k for k in st if k in _FOREIGN_LAYOUTS]
        if foreign:
            raise ValueError(
                f"this checkpoint's state uses the key {foreign[0]!r} of "
                f"{_FOREIGN_LAYOUTS[foreign[0]]}, whose Adan state has a different meaning; it "
                "cannot be loaded into adan_core.Adan. Convert it or restart the optimizer."
            )
        if "pre_grad" in st and "neg_pre_grad" not in st:
            st["neg_pre_grad"] = -st.pop("pre_grad")
        if "step" not in st:
            st["step"] = torch.tensor(float(group_step.get(idx, 0)), dtype=torch.float32)
        missing = {"exp_avg", "exp_avg_sq", "exp_avg_diff", "neg_pre_grad"} - st.keys()
        if missing:
            raise ValueError(
                f"checkpoint state for parameter {idx} lacks {sorted(missing)}; it is not an Adan "
                "state_dict in the official layout"
            )
    for g in groups:
        for key, value in _GROUP_FLAG_DEFAULTS.items():
            g.setdefault(key, value)
    for current, saved in zip(optimizer.param_groups, groups):
        if current.get("acceleration_mode", "none") != saved["acceleration_mode"]:
            raise ValueError(
                f"this checkpoint was saved with acceleration_mode={saved['acceleration_mode']!r} "
                f"but the optimizer uses {current.get('acceleration_mode', 'none')!r}; the state "
                "differs (x/y buffers), so construct the optimizer with the checkpoint's mode"
            )
    return {**state_dict, "state": state, "param_groups": groups}
