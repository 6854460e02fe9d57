"""Adan checkpoints: the official layouts in, foreign ones refused by name, ours readable by the
official class (ADAN.md §3). Registered as ``state_dict``/``load_state_dict`` hooks by ``Adan``."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer

from ._layout import local_tensor
from .functional import _LOW_PRECISION

__all__ = [
    "GROUP_FLAG_DEFAULTS",
    "STATE_KEYS",
    "after_load",
    "migrate_checkpoint",
    "write_group_steps",
]

# Group flags of ours that older checkpoints lack; filled with these defaults on load.
GROUP_FLAG_DEFAULTS: dict[str, Any] = {
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
# The implementation flags belong to the running optimizer, never to a checkpoint: official
# checkpoints store foreach=True, which would otherwise pin every later run to the foreach path.
_IMPLEMENTATION_FLAGS = ("foreach", "fused", "capturable")
STATE_KEYS = ("exp_avg", "exp_avg_sq", "exp_avg_diff", "neg_pre_grad")
# Per-parameter state layouts written by other Adan implementations that cannot be loaded as is.
_FOREIGN_LAYOUTS = {
    "previous_grad": "pytorch-optimizer (kozistr)",
    "prev_grad": "optimi or lucidrains/Adan-pytorch",
    "kahan_comp": "optimi",
    "m": "lucidrains/Adan-pytorch",
}


def after_load(optimizer: Optimizer) -> None:
    """Drop the CPU path's packs (loading replaced the state tensors), and undo torch's cast of
    every state to the param dtype where ``state_dtype`` asks for fp32 state."""
    optimizer._packs.clear()
    saved = optimizer.__dict__.pop("_loaded_state", None)
    if saved is None or optimizer.state_dtype is None:
        return
    state, saved_groups = saved
    ids = [i for g in saved_groups for i in g["params"]]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for index, p in zip(ids, params):
        if index not in state or p.dtype not in _LOW_PRECISION:
            continue
        for key in STATE_KEYS:
            original = state[index][key]
            optimizer.state[p][key] = original.to(
                device=local_tensor(p).device, dtype=torch.float32
            )


def write_group_steps(optimizer: Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """Add the official group-level int ``step`` so the official class can load our checkpoints."""
    for group in state_dict["param_groups"]:
        steps = [
            state_dict["state"][i]["step"] for i in group["params"] if i in state_dict["state"]
        ]
        group["step"] = int(max(float(s) for s in steps)) if steps else 0
    return state_dict


def _refuse_foreign(idx: Any, st: dict[str, Any], group: dict[str, Any]) -> None:
    """Raise for a state whose keys or contents mean something else than the official layout."""
    foreign = [k for k in st if k in _FOREIGN_LAYOUTS]
    if foreign:
        raise ValueError(
            f"this checkpoint's state uses the key {foreign[0]!r} of "
            f"{_FOREIGN_LAYOUTS[foreign[0]]}, whose Adan state has a different meaning; it "
            "cannot be loaded into adan_core.Adan. Convert it or restart the optimizer."
        )
    # timm's 2022 Adan used the official 2022 names but stored d under 'exp_avg_sq' and n under
    # 'exp_avg_diff'; its groups have no max_grad_norm (the official ones always do). A negative
    # 'exp_avg_sq' (an EMA of squares) betrays the swap whatever the group says.
    swapped = "exp_avg_sq" in st and bool((st["exp_avg_sq"] < 0).any())
    if swapped or ("pre_grad" in st and "max_grad_norm" not in group):
        raise ValueError(
            f"the state of parameter {idx} looks like timm's 2022 Adan (keys 'pre_grad', "
            "'exp_avg_sq', 'exp_avg_diff' with exp_avg_sq and exp_avg_diff swapped"
            + (", negative values in exp_avg_sq" if swapped else ", no max_grad_norm in its group")
            + "); loading it would mix up the second moment and the gradient-difference EMA. "
            "Restart the optimizer, or swap the two entries and set neg_pre_grad = -pre_grad."
        )


def migrate_checkpoint(optimizer: Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """Accept the official layouts (current and the 2022 ``pre_grad`` one), reject foreign ones,
    and keep the live optimizer's implementation flags."""
    state = {k: dict(v) for k, v in state_dict["state"].items()}
    groups = [dict(g) for g in state_dict["param_groups"]]
    group_of = {i: g for g in groups for i in g["params"]}
    for idx, st in state.items():
        _refuse_foreign(idx, st, group_of.get(idx, {}))
        if "pre_grad" in st and "neg_pre_grad" not in st:
            st["neg_pre_grad"] = -st.pop("pre_grad")
        if "step" not in st:
            step = group_of.get(idx, {}).get("step", 0)
            st["step"] = torch.tensor(float(step), dtype=torch.float32)
        missing = set(STATE_KEYS) - st.keys()
        if missing:
            raise ValueError(
                f"checkpoint state for parameter {idx} lacks {sorted(missing)}; it is not an Adan "
                "state_dict in the official layout"
            )
    for g in groups:
        for key, value in GROUP_FLAG_DEFAULTS.items():
            g.setdefault(key, value)
    for current, saved in zip(optimizer.param_groups, groups):
        if current.get("acceleration_mode", "none") != saved["acceleration_mode"]:
            raise ValueError(
                f"this checkpoint was saved with acceleration_mode={saved['acceleration_mode']!r} "
                f"but the optimizer uses {current.get('acceleration_mode', 'none')!r}; the state "
                "differs (x/y buffers), so construct the optimizer with the checkpoint's mode"
            )
        for key in _IMPLEMENTATION_FLAGS:
            saved[key] = current[key]
    optimizer._loaded_state = (state, groups)
    return {**state_dict, "state": state, "param_groups": groups}
