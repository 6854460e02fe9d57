"""Shared machinery of the Win optimizers: validation, global clipping, state and checkpoints.

Subclasses implement ``_init_param_state`` (the base optimizer's buffers) and ``_update`` (one
step for one param group on one (device, dtype) bucket, given already clipped gradients).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import ClippedOptimizer, check_dense_grad
from ._grouping import bucketize, device_dtype_key
from .win_core import check_acceleration_mode, check_reckless_steps, win_state_names

__all__ = ["WinOptimizerBase"]


def _default_foreach(params: list[Tensor]) -> bool:
    """torch.optim's rule for ``foreach=None``: foreach on CUDA-like devices, for-loop elsewhere."""
    try:
        from torch.optim.optimizer import _default_to_fused_or_foreach

        return _default_to_fused_or_foreach(params, differentiable=False, use_fused=False)[1]
    except ImportError:  # private helper moved: fall back to the documented rule
        return all(p.device.type == "cuda" for p in params)


def _check_nonnegative(name: str, value: Any) -> None:
    if isinstance(value, Tensor):
        raise TypeError(f"{name} must be a Python float, got a Tensor; pass float({name}) instead")
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _check_betas(betas: Any, count: int = 2) -> None:
    try:
        values = [float(b) for b in betas]
    except (TypeError, ValueError):
        raise ValueError(
            f"betas must be a tuple of {count} numbers in [0, 1), got {betas!r}"
        ) from None
    if len(values) != count or not all(0.0 <= b < 1.0 for b in values):
        raise ValueError(f"betas must be a tuple of {count} numbers in [0, 1), got {betas!r}")


def check_max_grad_norm(max_grad_norm: Any) -> float:
    """None or 0 means no clipping (returned as 0.0); a negative or non-finite value is an error."""
    if max_grad_norm is None:
        return 0.0
    if isinstance(max_grad_norm, Tensor) or not isinstance(max_grad_norm, (int, float)):
        raise TypeError(
            f"max_grad_norm must be a float or None, got {type(max_grad_norm).__name__}"
        )
    if not math.isfinite(max_grad_norm) or max_grad_norm < 0:
        raise ValueError(
            f"max_grad_norm must be >= 0 (0 or None disables clipping), got {max_grad_norm!r}"
        )
    return float(max_grad_norm)


class WinOptimizerBase(ClippedOptimizer):
    """Base class: subclasses implement ``_init_param_state`` and ``_update``.

    Clipping is optimizer-wide: the threshold ``C`` and the clipping eps are the constructor's
    ``max_grad_norm`` and ``eps`` (never a group's), the norm runs over every grad of every group in
    fp32 (fp64 for fp64 grads) and the factor stays on the device. ``p.grad`` is never modified.
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        defaults["max_grad_norm"] = check_max_grad_norm(defaults.get("max_grad_norm"))
        self._validate_group(defaults)
        fused = defaults.pop("fused", None)
        if fused:
            raise ValueError(
                f"{type(self).__name__} has no fused kernel (fused=True); use foreach=True or "
                "leave foreach=None. See the 'Win family' section of the adan-core README for why."
            )
        super().__init__(params, defaults)

    # ----------------------------------------------------------------- validation and groups
    def _validate_group(self, group: dict[str, Any]) -> None:
        """Check every hyperparameter of a group (or of the defaults); raise with the fix."""
        _check_nonnegative("lr", group["lr"])
        _check_nonnegative("eps", group["eps"])
        _check_nonnegative("weight_decay", group["weight_decay"])
        group["acceleration_mode"] = check_acceleration_mode(group["acceleration_mode"])
        group["reckless_steps"] = check_reckless_steps(group["reckless_steps"])
        if "betas" in group:
            _check_betas(group["betas"])
        if group.get("foreach") not in (None, True, False):
            raise ValueError(f"foreach must be None, True or False, got {group['foreach']!r}")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        self._validate_group(group)
        if check_max_grad_norm(group["max_grad_norm"]) != self.defaults["max_grad_norm"]:
            bad = group["max_grad_norm"]
            self.param_groups.pop()
            raise ValueError(
                "max_grad_norm is optimizer-wide (one global norm over all groups): pass it to the "
                f"constructor only, not per group (group has {bad!r}, constructor "
                f"{self.defaults['max_grad_norm']!r})"
            )

    # Keys that torch.optim.Optimizer.__setstate__ adds to ``defaults`` for its own use. They are
    # not hyperparameters of these optimizers, so copying them into the groups would make a loaded
    # optimizer's state_dict() differ from the checkpoint it was loaded from.
    _TORCH_ONLY_DEFAULTS = frozenset({"differentiable"})

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # older checkpoints may lack newer hyperparameters
            for key, value in self.defaults.items():
                if key not in self._TORCH_ONLY_DEFAULTS:
                    group.setdefault(key, value)
        for param_state in self.state.values():
            step = param_state.get("step")
            if isinstance(step, Tensor):  # a torch.optim checkpoint: its steps are CPU tensors
                param_state["step"] = int(step.item())

    # ------------------------------------------------------------------------- checkpoints
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a checkpoint; refuse one saved under a different ``acceleration_mode``.

        Switching "win" <-> "win2" or "win"/"win2" -> "none" changes what ``p`` means (y vs z) and
        which buffers exist, so it raises. A checkpoint of mode "none" (or of a plain
        torch.optim optimizer, which has no mode) may be loaded into a Win optimizer: ``x`` (and
        ``y``) are then initialised from the current parameters at the next step, the same rule as
        the first step, with a warning.
        """
        saved_groups = state_dict.get("param_groups", [])
        if len(saved_groups) == len(self.param_groups):
            new_groups = []
            for index, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
                saved_mode = saved.get("acceleration_mode", "none")
                mode = group["acceleration_mode"]
                if saved_mode != mode:
                    if saved_mode != "none":
                        raise ValueError(
                            f"param group {index}: the checkpoint was saved with "
                            f"acceleration_mode={saved_mode!r} but this {type(self).__name__} uses "
                            f"acceleration_mode={mode!r}. The Win state differs between modes; "
                            "construct the optimizer with "
                            f"acceleration_mode={saved_mode!r} to resume this checkpoint."
                        )
                    warnings.warn(
                        f"param group {index}: loading a checkpoint without Win state into "
                        f"acceleration_mode={mode!r}; the Win buffers start from the current "
                        "parameters at the next step",
                        stacklevel=2,
                    )
                saved = dict(saved)
                saved["acceleration_mode"] = mode
                new_groups.append(saved)
            state_dict = dict(state_dict)
            state_dict["param_groups"] = new_groups
        super().load_state_dict(state_dict)

    # ------------------------------------------------------------------------------- hooks
    def _init_param_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _update(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        foreach: bool,
        grads_are_private: bool,
    ) -> None:
        """One step for params sharing device and dtype. ``grads_are_private`` says whether
        ``grads`` are copies the update may overwrite (True after clipping) or the user's
        ``p.grad`` tensors, which must stay untouched."""
        raise NotImplementedError

    # -------------------------------------------------------------------------------- step
    def _prepare_state(self, group: dict[str, Any], p: Tensor) -> dict[str, Any]:
        """Create the state on the first step; reconcile the Win buffers with the group's mode."""
        state = self.state[p]
        wanted = win_state_names(group["acceleration_mode"])
        if not state:
            state["step"] = 0
            self._init_param_state(group, p, state)
            for name in wanted:  # x0 = y0 = p0, taken before the update
                state[name] = p.detach().clone(memory_format=torch.preserve_format)
            return state
        missing = [name for name in wanted if name not in state]
        if missing:
            warnings.warn(
                f"{type(self).__name__}: creating Win buffers {missing} from the current "
                f"parameters (acceleration_mode={group['acceleration_mode']!r} on state that "
                "lacks them)",
                stacklevel=3,
            )
            for name in missing:
                state[name] = p.detach().clone(memory_format=torch.preserve_format)
        for name in ("x", "y"):
            if name not in wanted:
                state.pop(name, None)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one optimization step; ``closure`` re-evaluates the model, returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        work = []
        all_grads: list[Tensor] = []
        for group in self.param_groups:
            check_acceleration_mode(group["acceleration_mode"])  # catches edits after construction
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                check_dense_grad(self, p)
            grads = [p.grad for p in params]
            all_grads.extend(grads)
            work.append((group, params, grads))

        multiplier = self._grad_multiplier(all_grads) if all_grads else None
        for group, params, grads in work:
            if not params:
                continue
            states = [self._prepare_state(group, p) for p in params]
            foreach = group["foreach"]
            if foreach is None:
                foreach = _default_foreach(params)
            buckets = bucketize([params, grads, states], device_dtype_key(params))
            for b_params, b_grads, b_states in buckets.values():
                private = False
                if multiplier is not None:
                    factor = multiplier.to(b_params[0].device, non_blocking=True)
                    if foreach:
                        b_grads = list(torch._foreach_mul(b_grads, factor))
                    else:
                        b_grads = [g * factor for g in b_grads]
                    private = True
                self._update(group, b_params, b_grads, b_states, foreach, private)
        return loss
