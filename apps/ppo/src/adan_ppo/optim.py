"""Optimizer for SB3's ``policy_kwargs`` from adan-core's swap helpers."""

from __future__ import annotations

import argparse
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
