"""Optimizer for SB3's ``policy_kwargs`` from adan-core's swap helpers."""

from __future__ import annotations

import argparse
import inspect
from typing import Any

from adan_core.optim_factory import get_optimizer_spec, optimizer_class_and_kwargs

from .settings import PAPER_EPS


def sb3_optimizer(args: argparse.Namespace) -> tuple[type, dict[str, Any], str]:
    """``(optimizer_class, optimizer_kwargs, name)`` for the optimizer selected by ``--opt``.

    ``lr`` is not in the kwargs: SB3 passes it (and rewrites ``param_group['lr']`` before every
    update from its schedule). ``eps`` is set to the paper's 1e-8 when the optimizer takes it and
    the user did not choose one: SB3 gives Adam eps=1e-5 when no kwargs are passed, and an
    explicit value also lands in config.json.
    """
    spec = get_optimizer_spec(args.opt)
    overrides: dict[str, Any] = {}
    accepted, _ = spec.signature_defaults()
    if getattr(args, "opt_eps", None) is None and "eps" in accepted:
        overrides["eps"] = PAPER_EPS
    cls, kwargs = optimizer_class_and_kwargs(args, **overrides)
    return cls, kwargs, spec.name


def describe(cls: type, kwargs: dict[str, Any], with_defaults: bool = True) -> dict[str, Any]:
    """JSON-able record of the optimizer and its options (with its defaults, unless told not)."""
    full: dict[str, Any] = {}
    try:
        for name, p in inspect.signature(cls).parameters.items():
            if with_defaults and p.default is not inspect.Parameter.empty and name != "lr":
                full[name] = p.default
    except (TypeError, ValueError):
        pass
    full.update(kwargs)
    clean = {k: (list(v) if isinstance(v, tuple) else v) for k, v in full.items()}
    clean = {
        k: v for k, v in clean.items() if isinstance(v, (int, float, bool, str, list, type(None)))
    }
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "kwargs": clean}


def implementation(optimizer: Any) -> str:
    """Which code path steps ``optimizer``, for the run's provenance record.

    For adan-core's Adan this is the implementation adan-core's own chooser picks for the
    optimizer's parameters here (``cpu_fused``, ``fused``, ``foreach`` or ``single``); for other
    optimizers, the class and its ``foreach``/``fused`` flags.
    """
    name = f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
    try:
        from adan_core.adan import Adan
        from adan_core.functional import choose_impl
    except ImportError:
        Adan = None
    if Adan is not None and isinstance(optimizer, Adan):
        chosen = set()
        try:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    state = optimizer.state_dtype or p.dtype
                    dtypes = (p.dtype, p.dtype, state, state, state, state)
                    impl, _ = choose_impl(
                        p.device,
                        dtypes,
                        fused=group["fused"],
                        foreach=group["foreach"],
                        capturable=group["capturable"],
                    )
                    chosen.add(impl)
        except Exception as exc:  # noqa: BLE001 - a record, not a reason to stop the run
            return f"{name}: unknown ({type(exc).__name__}: {exc})"
        return f"{name}: {', '.join(sorted(chosen))}"
    flags = ", ".join(
        f"{k}={optimizer.defaults[k]}" for k in ("foreach", "fused") if k in optimizer.defaults
    )
    return f"{name} ({flags})" if flags else name
