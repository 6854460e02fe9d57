"""One GLUE fine-tuning run on the Hugging Face ``Trainer``, from any pretrained checkpoint, with
the paper's Adam or Adan recipe for the task, scored under both protocols.

- **paper**: the Adan paper's evaluation. fairseq kept the checkpoint best on *dev* (accuracy
  for every classification task, CoLA included; the lowest dev loss for STS-B) and its
  ``acc_test.py`` scored that checkpoint on the same dev set (and skipped CoLA's first dev
  example, see :func:`adan_bert.metrics.paper_scoring`).
- **clean**: the checkpoint is chosen on a held-out part of train (``heldout_fraction``, the
  same examples for every run) by the task's own metric, and dev is read once, at that
  checkpoint, scored on every example.

Both come from the same run (training on train minus the held-out part), so they differ only
in how the checkpoint is chosen and scored. ``eval.csv`` has every evaluation; ``done.json``
has both protocols' picks.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from adan_repro import provenance, rundir
from adan_repro.progress import elapsed
from adan_repro.selection import select

from adan_core.optim_factory import implementation, trainer_optimizer_cls_and_kwargs

from . import glue, metrics
from .cli import add_recipe_overrides, add_running_args, recipe_overrides
from .model import load_pretrained
from .presets import (
    FINETUNE_SCALES,
    GLUE_RECIPES,
    FinetuneRecipe,
    glue_recipe,
    heldout_fraction,
    scaled,
)
from .trainer_io import RunRecorder, latest_trainer_checkpoint, quiet, unwrapped, world_size

PROVENANCE_PACKAGES = ("transformers", "tokenizers", "accelerate", "adan-core", "adan-repro")
STSB_SCALE = 5.0  # fairseq's GLUE preparation trains STS-B on score / 5; scores are x 5 again


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m adan_bert.finetune",
        description="Fine-tune a pretrained checkpoint on one GLUE task with the paper's Adam "
        "or Adan recipe; both evaluation protocols. Resumes by itself when run again.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--task", required=True, help=f"GLUE task: {', '.join(GLUE_RECIPES)}")
    p.add_argument(
        "--recipe",
        "--opt",
        dest="recipe",
        default="adan",
        choices=["adam", "adan"],
        help="the paper's fine-tuning recipe for the task",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="pretrained model: a pretraining run's final/ folder, or a Hugging Face "
        "model name (e.g. roberta-base) for users online",
    )
    p.add_argument("--tokenizer", help="tokenizer folder or name (default: the checkpoint's)")
    p.add_argument(
        "--glue-dir",
        required=True,
        help="folder holding CoLA/, SST-2/, ... (GLUE's TSV layout), or 'hub'",
    )
    p.add_argument("--out", type=Path, required=True, help="the run folder")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--scale",
        "--preset",
        dest="scale",
        default="paper",
        choices=sorted(FINETUNE_SCALES),
        help="share of the recipe's updates, longest input, evaluations per run",
    )
    p.add_argument(
        "--paper-quirks",
        action="store_true",
        help="keep the configs' halved epochs for Adan on MNLI, QNLI and QQP",
    )
    p.add_argument(
        "--heldout-fraction",
        type=float,
        help="share of train held out for the clean protocol (default: the scale's)",
    )
    o = add_recipe_overrides(p, "overrides of the recipe")
    o.add_argument("--max-steps", type=int, help="updates (warm-up keeps its share)")
    r = add_running_args(p, "load data, model and optimizer and print the settings; train nothing")
    r.add_argument(
        "--label",
        help="the run's task name in config.json and summaries (default: "
        "the task; the grid uses TASK.pre-OPT-SEED)",
    )
    r.add_argument(
        "--note",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra facts recorded in config.json (e.g. pretrain_optimizer=adan)",
    )
    r.add_argument("--micro-batch", type=int, help="per device (default: the recipe's batch)")
    r.add_argument(
        "--fp16", action="store_true", help="fp16 with dynamic loss scaling, as the paper (GPU)"
    )
    return p


def notes(items: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{"k": "v"}``; ValueError for an item without '='."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--note takes KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def recipe_from(args: argparse.Namespace, task: glue.GlueTask) -> FinetuneRecipe:
    import dataclasses

    r = scaled(glue_recipe(task.name, args.recipe, args.paper_quirks), FINETUNE_SCALES[args.scale])
    changes = {k: v for k, v in recipe_overrides(args).items() if v is not None}
    opt = dataclasses.replace(r.opt, **changes)
    r = dataclasses.replace(r, opt=opt)
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise ValueError(f"--max-steps must be at least 1, got {args.max_steps}")
        share = r.warmup / r.max_steps
        r = dataclasses.replace(
            r,
            max_steps=args.max_steps,
            warmup=min(round(share * args.max_steps), args.max_steps - 1),
        )
    return r


class Encoded(torch.utils.data.Dataset):
    """Tokenized examples: ``<s> A </s>`` or ``<s> A </s></s> B </s>``, truncated."""

    def __init__(self, ex: glue.Examples, tokenizer, max_len: int) -> None:
        enc = tokenizer(ex.text_a, ex.text_b, truncation=True, max_length=max_len)
        self.input_ids = enc["input_ids"]
        labels = ex.labels / STSB_SCALE if ex.task.is_regression else ex.labels
        self.labels = labels.tolist()

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}


def scorer(task: glue.GlueTask) -> Callable:
    """``compute_metrics`` for the Trainer: the task's metrics and the paper's scoring of its
    primary metric (``paper_<metric>``), on predictions in file order."""

    def compute(pred) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        labels = np.asarray(pred.label_ids)
        if task.is_regression:
            logits, labels = np.asarray(logits).reshape(-1) * STSB_SCALE, labels * STSB_SCALE
        out = metrics.compute(task, logits, labels)
        out[f"paper_{task.primary}"] = metrics.paper_scoring(task, logits, labels)[task.primary]
        return out

    return compute


def eval_columns(task: glue.GlueTask) -> list[str]:
    names = ["loss", *task.metrics]  # every classification task's metrics include accuracy
    dev = [f"dev_{m}" for m in names] + [f"dev_paper_{task.primary}"]
    return ["step", "epoch", *dev, *(f"heldout_{m}" for m in names)]


def _row_maker(columns: list[str], with_heldout: bool):
    def row(step: int, m: dict, history: list[dict]) -> dict:
        out = {"step": step, "epoch": m.get("epoch", math.nan)}
        for c in columns[2:]:
            key = f"eval_{c}"
            if c.startswith("heldout_") and not with_heldout:
                out[c] = math.nan
            else:
                out[c] = m[key]  # KeyError until both eval sets of this step are in
        return out

    return row


def protocols(rows: list[dict], task: glue.GlueTask, with_heldout: bool) -> dict:
    """Both protocols' picks from the run's evaluations (see the module docstring)."""
    paper_on = "dev_loss" if task.paper_select == "loss" else f"dev_{task.paper_select}"
    paper = select(
        rows,
        paper_on,
        f"dev_paper_{task.primary}",
        "lower" if task.paper_select == "loss" else "higher",
    )
    out = {
        "paper": {
            "step": paper.step,
            "selected_on": paper_on,
            "selected_value": paper.selected_value,
            "dev": paper.value,
        }
    }
    if with_heldout:
        clean = select(rows, f"heldout_{task.primary}", f"dev_{task.primary}", "higher")
        out["clean"] = {
            "step": clean.step,
            "selected_on": f"heldout_{task.primary}",
            "selected_value": clean.selected_value,
            "dev": clean.value,
        }
    out["last"] = {"step": rows[-1]["step"], "dev": rows[-1][f"dev_{task.primary}"]}
    out["metric"] = task.primary
    return out


def run_config(
    args: argparse.Namespace, task: glue.GlueTask, r: FinetuneRecipe, fraction: float, **extra
) -> dict:
    """What a fine-tuning run computes, as its ``config.json`` records it (both backends):
    the task, recipe and seed, the recipe's numbers, the held-out share, ``extra`` facts of
    the backend and the ``--note`` items."""
    o = r.opt
    return {
        "task": args.label or task.name,
        "glue_task": task.name,
        "optimizer": args.recipe,
        "seed": args.seed,
        "checkpoint": str(args.checkpoint),
        "scale": args.scale,
        "recipe": {
            "opt": o.opt,
            "lr": o.lr,
            "betas": list(o.betas),
            "eps": o.eps,
            "weight_decay": o.weight_decay,
            "max_grad_norm": o.max_grad_norm,
            "batch": r.batch,
            "schedule": r.schedule,
            "warmup": r.warmup,
            "max_steps": r.max_steps,
        },
        "heldout_fraction": fraction,
        **extra,
        "paper_quirks": bool(args.paper_quirks),
        **notes(args.note),
    }


def finetune(
    args: argparse.Namespace, log: Callable[[str], None] = print, on_trained: Callable | None = None
) -> str:
    """Run, resume or skip the run; returns "finished", "skipped" or "dry-run".
    ``on_trained(trainer)`` is called after training (the tests look at its optimizer)."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    task = glue.get_task(args.task)
    scale = FINETUNE_SCALES[args.scale]
    r = recipe_from(args, task)
    run_dir = rundir.prepare_dir(args.out)
    if rundir.is_done(run_dir):
        log(f"[finetune] {run_dir} is finished (done.json); nothing to do")
        return "skipped"
    if args.threads:
        torch.set_num_threads(args.threads)
    train_all = glue.load(args.glue_dir, task, "train")
    dev = glue.load(args.glue_dir, task, "dev")
    fraction = (
        heldout_fraction(scale, len(train_all))
        if args.heldout_fraction is None
        else args.heldout_fraction
    )
    train_idx, held_idx = glue.heldout_split(len(train_all), fraction, seed=0)
    with_heldout = len(held_idx) > 0
    set_seed(args.seed)
    model, tokenizer = load_pretrained(args.checkpoint, task.num_labels, args.tokenizer)
    # transformers' RoBERTa heads return a per-micro-batch mean and ignore the Trainer's
    # num_items_in_batch; said so, the Trainer divides by the accumulation steps and averages
    # processes as usual (otherwise it scales the gradient by both, transformers 5.x).
    model.accepts_loss_kwargs = False
    max_len = min(scale.max_seq_len, model.config.max_position_embeddings - 2)
    train = Encoded(train_all.subset(train_idx), tokenizer, max_len)
    evals = {"dev": Encoded(dev, tokenizer, max_len)}
    if with_heldout:
        evals["heldout"] = Encoded(train_all.subset(held_idx), tokenizer, max_len)
    micro = args.micro_batch or r.batch
    world = world_size()
    if r.batch % (micro * world):
        raise ValueError(f"batch {r.batch} is not a multiple of --micro-batch {micro} x {world}")
    every = max(1, r.max_steps // scale.evals_per_run)
    config = run_config(args, task, r, fraction, max_seq_len=max_len, eval_every=every)
    o = r.opt
    log(
        f"[finetune] {task.name} with the {args.recipe} recipe from {args.checkpoint}: "
        f"{len(train):,} train / {len(evals.get('heldout', [])):,} held-out / {len(dev):,} dev "
        f"examples; {r.max_steps:,} updates of {r.batch} ({r.warmup} warm-up, {r.schedule}), "
        f"{o.opt} lr {o.lr:g} betas {o.betas} eps {o.eps:g} wd {o.weight_decay:g} clip "
        f"{o.max_grad_norm:g}; evaluation every {every} updates"
    )
    hook = trainer_optimizer_cls_and_kwargs(
        opt=o.opt, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay
    )
    if args.dry_run:
        return "dry-run"
    rundir.check_or_write_config(run_dir, config)
    targs = TrainingArguments(
        output_dir=str(run_dir / "trainer"),
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=max(micro, 32),
        gradient_accumulation_steps=r.batch // (micro * world),
        max_steps=r.max_steps,
        learning_rate=o.lr,
        lr_scheduler_type=r.schedule,
        warmup_steps=r.warmup,
        weight_decay=o.weight_decay,
        max_grad_norm=o.max_grad_norm,
        eval_strategy="steps",
        eval_steps=every,
        save_strategy="steps",
        save_steps=every,
        save_total_limit=2,
        logging_steps=max(1, min(args.log_interval, every)),
        seed=args.seed,
        bf16=args.bf16,
        fp16=args.fp16,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    columns = eval_columns(task)
    recorder = RunRecorder(
        run_dir,
        columns,
        _row_maker(columns, with_heldout),
        log,
        args.log_interval,
        tag=f"finetune {task.name}",
    )
    trainer = Trainer(
        model=model,
        args=targs,
        train_dataset=train,
        eval_dataset=evals,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=scorer(task),
        optimizer_cls_and_kwargs=hook,
        callbacks=[recorder],
    )
    quiet(trainer)
    resume = latest_trainer_checkpoint(run_dir)
    if resume is not None:
        log(f"[finetune] resuming from {resume}")
    start = time.time()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if on_trained is not None:
        on_trained(trainer)
    if trainer.is_world_process_zero():
        current = provenance.collect(
            Path(__file__).parent, PROVENANCE_PACKAGES, implementation(unwrapped(trainer.optimizer))
        )
        provenance.record(run_dir, current, 0)
        rows = rundir.read_eval(run_dir / rundir.EVAL)
        result = protocols(rows, task, with_heldout)
        rundir.write_done(run_dir, {**result, "seconds": time.time() - start})
        rundir.remove_checkpoints(run_dir)
        shutil.rmtree(run_dir / "trainer", ignore_errors=True)
        clean = f", clean {result['clean']['dev']:.4f}" if with_heldout else ""
        log(
            f"[finetune] {task.name} done in {elapsed(time.time() - start)}: dev "
            f"{task.primary} paper protocol {result['paper']['dev']:.4f}{clean}"
        )
    return "finished"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        finetune(args, log=lambda m: print(m, flush=True))
    except (ValueError, FileNotFoundError, RuntimeError, rundir.RunConflictError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
