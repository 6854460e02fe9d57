"""The flags pretraining and fine-tuning share: overrides of a recipe's optimizer settings and
how a run runs. One place, so both commands spell and document them alike."""

from __future__ import annotations

import argparse


def add_recipe_overrides(p: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """``--lr``, ``--weight-decay``, ``--opt-betas``, ``--opt-eps``, ``--max-grad-norm``; unset,
    each keeps the recipe's value. Returns the group for a command's own overrides."""
    g = p.add_argument_group(title)
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--weight-decay", type=float, help="decoupled weight decay")
    g.add_argument(
        "--opt-betas",
        type=float,
        nargs="+",
        help="Adam: b1 b2; Adan: b1 b2 b3 (code convention, e.g. 0.98 0.92 0.99)",
    )
    g.add_argument("--opt-eps", type=float, help="the optimizer's eps")
    g.add_argument(
        "--max-grad-norm",
        type=float,
        help="global gradient clipping, the Trainer's (fairseq clip_norm); 0 = off",
    )
    return g


def recipe_overrides(args: argparse.Namespace) -> dict:
    """The overrides given on the command line, by OptRecipe field name (None: not given)."""
    return {
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "betas": tuple(args.opt_betas) if args.opt_betas else None,
        "eps": args.opt_eps,
        "max_grad_norm": args.max_grad_norm,
    }


def add_running_args(p: argparse.ArgumentParser, dry_run_help: str) -> argparse._ArgumentGroup:
    """``--bf16``, ``--threads``, ``--log-interval``, ``--dry-run``; returns the group."""
    g = p.add_argument_group("running")
    g.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    g.add_argument("--threads", type=int, help="torch CPU threads")
    g.add_argument("--log-interval", type=int, default=50, help="steps between progress lines")
    g.add_argument("--dry-run", action="store_true", help=dry_run_help)
    return g
