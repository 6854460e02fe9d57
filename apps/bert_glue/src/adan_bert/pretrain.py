"""One MLM pretraining run on the Hugging Face ``Trainer``: settings -> data -> model ->
optimizer (through the Trainer's ``optimizer_cls_and_kwargs``) -> train -> ``final/``.

The run folder (:mod:`adan_repro.rundir`)::

    config.json        the resolved settings (a different command on the same folder is refused)
    eval.csv           step, valid_loss (the fixed-mask validation MLM loss), train_loss, lr, tokens
    trainer/           the Trainer's own checkpoints (checkpoint-<step>/, newest two)
    checkpoint.json    points at the newest complete one; the same command resumes from it
    final/             the pretrained model and its tokenizer, for fine-tuning
    done.json          written last

Multi-GPU and multi-node: start it with ``torchrun``; the Trainer runs DDP, and the batch of the
recipe is kept by gradient accumulation (``batch = micro_batch x world size x accumulation``).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from adan_repro import provenance, rundir
from adan_repro.progress import elapsed

from adan_core.optim_factory import describe, implementation, trainer_optimizer_cls_and_kwargs

from . import data
from .cli import add_recipe_overrides, add_running_args, recipe_overrides
from .model import fairseq_parameter_count, roberta_config
from .presets import PRETRAIN_RECIPES, PRETRAIN_SCALES, PretrainSettings, pretrain_settings
from .trainer_io import (
    EpochToDataset,
    RunRecorder,
    latest_trainer_checkpoint,
    quiet,
    unwrapped,
    world_size,
)

PROVENANCE_PACKAGES = ("transformers", "tokenizers", "accelerate", "adan-core", "adan-repro")
EVAL_COLUMNS = ("step", "valid_loss", "train_loss", "lr", "tokens")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m adan_bert.pretrain",
        description="MLM pretraining of fairseq's RoBERTa with the paper's Adam or Adan recipe, "
        "on the Hugging Face Trainer. Resumes by itself when the same command runs again.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--recipe",
        "--opt",
        dest="recipe",
        default="adan",
        choices=sorted(PRETRAIN_RECIPES),
        help="the paper's run to follow",
    )
    p.add_argument(
        "--scale",
        "--preset",
        dest="scale",
        default="paper",
        choices=sorted(PRETRAIN_SCALES),
        help="model size and budget (presets.PRETRAIN_SCALES): paper = RoBERTa-base, "
        "256x512 tokens, 1M updates",
    )
    p.add_argument(
        "--corpus",
        type=Path,
        required=True,
        help="plain text, one document per line (BookCorpus + Wikipedia for the paper)",
    )
    p.add_argument("--out", type=Path, required=True, help="the run folder")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"tokenized corpora (default ${data.ENV_CACHE} or ~/.cache/adan_bert)",
    )
    p.add_argument(
        "--bpe-dir",
        type=Path,
        default=os.environ.get("GPT2_BPE_DIR"),
        help="GPT-2 encoder.json, vocab.bpe and fairseq's dict.txt, for "
        "--tokenizer gpt2 (default $GPT2_BPE_DIR; unset: downloaded)",
    )
    g = p.add_argument_group("overrides of the scale (default: the scale's value)")
    g.add_argument("--model", help="model size: roberta-base, small, tiny, micro")
    g.add_argument("--tokenizer", choices=["gpt2", "trained"])
    g.add_argument("--vocab-size", type=int, help="of a trained tokenizer")
    g.add_argument("--seq-len", type=int, help="tokens per block, <s> included")
    g.add_argument("--batch", type=int, help="sequences per update over all devices")
    g.add_argument("--max-steps", type=int)
    g.add_argument("--warmup", type=int)
    g.add_argument("--eval-every", type=int)
    g.add_argument("--save-every", type=int)
    o = add_recipe_overrides(p, "overrides of the optimizer recipe")
    o.add_argument(
        "--decay-all",
        action="store_true",
        help="decay biases and LayerNorm weights too, as fairseq (the paper) did",
    )
    r = add_running_args(p, "build the data, model and optimizer, print them; train nothing")
    r.add_argument(
        "--micro-batch",
        type=int,
        help="sequences per device per forward pass; accumulation makes up the batch "
        "(default: the largest divisor of the per-device batch up to 32)",
    )
    return p


def settings_from(args: argparse.Namespace) -> PretrainSettings:
    return pretrain_settings(
        args.recipe,
        args.scale,
        model=args.model,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        seq_len=args.seq_len,
        batch=args.batch,
        max_steps=args.max_steps,
        warmup=args.warmup,
        eval_every=args.eval_every,
        save_every=args.save_every,
        **recipe_overrides(args),
        decay_all=args.decay_all or None,
        seed=args.seed,
    )


def micro_batch_for(batch: int, world: int, requested: int | None) -> int:
    """``requested``, or the largest divisor of the per-device batch that is at most 32."""
    if requested is not None:
        return requested
    per_device = max(1, batch // max(1, world))
    return max(d for d in range(1, min(32, per_device) + 1) if per_device % d == 0)


def accumulation(batch: int, micro_batch: int, world: int) -> int:
    """Gradient accumulation steps that make ``batch`` from ``micro_batch`` on ``world`` ranks."""
    per_pass = micro_batch * world
    if micro_batch < 1 or batch % per_pass:
        raise ValueError(
            f"batch {batch} is not a multiple of micro batch {micro_batch} x {world} "
            f"device(s): choose --micro-batch so that it divides {batch // max(world, 1)}"
        )
    return batch // per_pass


def optimizer_hook(s: PretrainSettings):
    """``optimizer_cls_and_kwargs`` for the Trainer, from the recipe. Clipping is the Trainer's
    (``max_grad_norm``), as it was fairseq's ``clip_norm``, not Adan's internal one."""
    o = s.opt
    return trainer_optimizer_cls_and_kwargs(
        opt=o.opt,
        lr=o.lr,
        betas=o.betas,
        eps=o.eps,
        weight_decay=o.weight_decay,
        bias_decay=True if s.decay_all else None,
    )


def masked_lm_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """The Trainer's ``compute_loss_func``: cross-entropy summed over the masked tokens and
    divided by the masked tokens of the whole update (all micro-batches and processes, which
    the Trainer counts as ``num_items_in_batch``), as fairseq's ``masked_lm`` criterion
    normalises. transformers' own ``RobertaForMaskedLM`` loss is a per-micro-batch mean that
    ignores ``num_items_in_batch`` although the Trainer assumes otherwise, which multiplies the
    gradient by the accumulation steps and by the number of processes (transformers 5.x)."""
    logits = outputs["logits"]
    total = torch.nn.functional.cross_entropy(
        logits.view(-1, logits.shape[-1]).float(), labels.view(-1), ignore_index=-100,
        reduction="sum",
    )  # fmt: skip
    if num_items_in_batch is None:
        num_items_in_batch = (labels != -100).sum().clamp(min=1)
    return total / num_items_in_batch


def training_arguments(s: PretrainSettings, run_dir: Path, args: argparse.Namespace):
    from transformers import TrainingArguments

    world = world_size()
    micro = micro_batch_for(s.batch, world, args.micro_batch)
    return TrainingArguments(
        output_dir=str(run_dir / "trainer"),
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=micro,
        gradient_accumulation_steps=accumulation(s.batch, micro, world),
        max_steps=s.max_steps,
        learning_rate=s.opt.lr,
        lr_scheduler_type="linear",  # fairseq polynomial_decay, power 1, to 0
        warmup_steps=s.warmup,
        weight_decay=s.opt.weight_decay,
        max_grad_norm=s.opt.max_grad_norm,
        eval_strategy="steps",
        eval_steps=s.eval_every,
        save_strategy="steps",
        save_steps=s.save_every,
        save_total_limit=2,  # the newest stays complete while the next one is written
        logging_steps=max(1, min(args.log_interval, s.eval_every)),
        seed=s.seed,
        bf16=args.bf16,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        ddp_find_unused_parameters=False,
        prediction_loss_only=True,  # never gather vocab-sized logits in evaluation
    )


def pretrain(
    args: argparse.Namespace, log: Callable[[str], None] = print, on_trained: Callable | None = None
) -> str:
    """Run, resume or skip the run; returns "finished", "skipped" or "dry-run".
    ``on_trained(trainer)`` is called after training (the tests look at its optimizer)."""
    from transformers import RobertaForMaskedLM, Trainer, set_seed

    s = settings_from(args)
    run_dir = rundir.prepare_dir(args.out)
    if rundir.is_done(run_dir):
        log(f"[pretrain] {run_dir} is finished (done.json); nothing to do")
        return "skipped"
    if args.threads:
        torch.set_num_threads(args.threads)
    targs = training_arguments(s, run_dir, args)
    with targs.main_process_first(local=False, desc="corpus preparation"):
        prepared = data.prepare(
            args.corpus,
            s.tokenizer,
            s.vocab_size,
            s.seq_len,
            s.valid_fraction,
            args.cache_dir,
            args.bpe_dir,
            log,
        )
    tokenizer = prepared.tokenizer()
    config = {
        "task": "pretrain",
        "optimizer": s.recipe,
        "seed": s.seed,
        "settings": s.to_json(),
        "corpus_folder": prepared.folder.name,
    }
    set_seed(s.seed)
    model = RobertaForMaskedLM(
        roberta_config(s.model, len(tokenizer), s.dropout, s.attention_dropout)
    )
    n_params = sum(p.numel() for p in model.parameters())
    masker = data.masker_for(tokenizer, s.masking)
    train = data.MaskedBlocks(prepared.train, masker, seed=s.seed)
    valid = data.MaskedBlocks(prepared.valid, masker, seed=0, fixed=True)
    log(
        f"[pretrain] {s.recipe} at scale {s.scale}: model {s.model} ({n_params:,} parameters; "
        f"fairseq's count {fairseq_parameter_count(s.model, len(tokenizer)):,}), "
        f"{len(prepared.train):,} train / {len(valid):,} valid blocks of <= {s.seq_len} tokens, "
        f"batch {s.batch} = {targs.per_device_train_batch_size} x {world_size()} device(s) x "
        f"{targs.gradient_accumulation_steps} accumulation, {s.max_steps:,} updates"
    )
    if len(prepared.train) < s.batch:
        raise ValueError(
            f"the corpus makes {len(prepared.train)} training blocks, fewer than one batch "
            f"({s.batch}): use a larger corpus or a smaller --batch"
        )
    hook = optimizer_hook(s)
    if args.dry_run:
        cls = getattr(hook[0], "optimizer_class", hook[0])  # a DecayEveryParameter factory
        log(f"[pretrain] optimizer: {describe(cls, hook[1])}")
        return "dry-run"
    rundir.check_or_write_config(run_dir, config)
    recorder = RunRecorder(
        run_dir,
        EVAL_COLUMNS,
        row=_eval_row(s),
        log=log,
        log_interval=args.log_interval,
        tag="pretrain",
        int_columns=("step", "tokens"),
    )
    trainer = Trainer(
        model=model,
        args=targs,
        train_dataset=train,
        eval_dataset=valid,
        data_collator=data.PadCollator(tokenizer.pad_token_id),
        optimizer_cls_and_kwargs=hook,
        compute_loss_func=masked_lm_loss,
        callbacks=[recorder, EpochToDataset(train)],
    )
    quiet(trainer)
    resume = latest_trainer_checkpoint(run_dir)
    start = time.time()
    if resume is None:  # the untrained model's loss, step 0 of every curve
        trainer.evaluate()
    else:
        log(f"[pretrain] resuming from {resume}")
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if on_trained is not None:
        on_trained(trainer)
    if trainer.is_world_process_zero():
        current = provenance.collect(
            Path(__file__).parent, PROVENANCE_PACKAGES, implementation(unwrapped(trainer.optimizer))
        )
        provenance.record(run_dir, current, 0)

        def fill(d: Path) -> None:
            trainer.model.save_pretrained(str(d))
            tokenizer.save_pretrained(str(d))

        rundir.commit_final(run_dir, fill)
        rows = rundir.read_eval(run_dir / rundir.EVAL)
        rundir.write_done(
            run_dir,
            {
                "steps": s.max_steps,
                "final_valid_loss": rows[-1]["valid_loss"],
                "parameters": n_params,
                "seconds": time.time() - start,
            },
        )
        rundir.remove_checkpoints(run_dir)
        shutil.rmtree(run_dir / "trainer", ignore_errors=True)  # final/ holds the model
        log(
            f"[pretrain] done in {elapsed(time.time() - start)}: valid MLM loss "
            f"{float(rows[-1]['valid_loss']):.4f} at step {rows[-1]['step']}; model in "
            f"{run_dir / rundir.FINAL}"
        )
    return "finished"


def _eval_row(s: PretrainSettings):
    tokens_per_step = s.batch * s.seq_len  # an upper bound: the last block of a run may be short

    def row(step: int, metrics: dict, history: list[dict]) -> dict:
        train = [h["loss"] for h in history if "loss" in h and h["step"] <= step]
        lrs = [h["learning_rate"] for h in history if "learning_rate" in h and h["step"] <= step]
        return {
            "step": step,
            "valid_loss": metrics["eval_loss"],
            "train_loss": train[-1] if train else math.nan,
            "lr": lrs[-1] if lrs else 0.0,
            "tokens": step * tokens_per_step,
        }

    return row


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pretrain(args, log=lambda m: print(m, flush=True))
    except (ValueError, FileNotFoundError, rundir.RunConflictError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
