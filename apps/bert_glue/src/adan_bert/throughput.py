"""Pretraining speed: tokens per second with the Adam and the Adan recipe, side by side.

Both recipes train the same model on the same random blocks through the same ``Trainer`` path
as :mod:`adan_bert.pretrain` (the Trainer's optimizer hook, its clipping, masking included), in
alternating rounds (adam, adan, adam, adan, ...) so that a machine's drift hits both alike.
Each round times ``--steps`` updates after ``--warmup-steps`` untimed ones. Speed does not
depend on the text, so no corpus is needed.

    python -m adan_bert.throughput --model tiny --seq-len 128 --batch 32 --out results/throughput
    python -m adan_bert.throughput --model roberta-base --seq-len 512 --batch 32 --bf16   # a GPU
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from adan_repro.atomic import write_json_atomic, write_text_atomic
from transformers import TrainerCallback

from . import data
from .model import roberta_config
from .presets import MODEL_SIZES, PRETRAIN_RECIPES, Masking, pretrain_settings
from .pretrain import optimizer_hook


class _Clock(TrainerCallback):
    def __init__(self, skip: int) -> None:
        self.skip, self.start, self.end = skip, None, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.skip:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start = time.perf_counter()
        if state.global_step == state.max_steps:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.end = time.perf_counter()


def measure(recipe: str, args: argparse.Namespace) -> float:
    """Tokens per second of one round of ``recipe``."""
    from transformers import RobertaForMaskedLM, Trainer, TrainingArguments

    steps = args.warmup_steps + args.steps
    s = pretrain_settings(recipe, "paper", model=args.model, seq_len=args.seq_len,
                          batch=args.batch, max_steps=steps, warmup=0)  # fmt: skip
    vocab = args.vocab_size
    rng = np.random.default_rng(0)
    n_blocks = s.batch * (s.max_steps + 1)
    tokens = rng.integers(5, vocab - 1, size=n_blocks * (s.seq_len - 1)).astype(np.int32)
    starts = np.arange(0, len(tokens), s.seq_len - 1)
    blocks = data.BlockDataset(tokens, np.stack([starts, starts + s.seq_len - 1], 1), bos=0)
    masker = data.Masker(Masking(), vocab, mask_id=vocab - 1, special_ids=(0, 1, 2, 3, vocab - 1))
    model = RobertaForMaskedLM(roberta_config(s.model, vocab))
    clock = _Clock(args.warmup_steps)
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=args.micro_batch or s.batch,
            gradient_accumulation_steps=s.batch // (args.micro_batch or s.batch),
            max_steps=s.max_steps, learning_rate=s.opt.lr, weight_decay=s.opt.weight_decay,
            max_grad_norm=s.opt.max_grad_norm, save_strategy="no", eval_strategy="no",
            report_to="none", disable_tqdm=True, bf16=args.bf16, logging_steps=10**9,
            use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, seed=1,
        )  # fmt: skip
        trainer = Trainer(model=model, args=targs, optimizer_cls_and_kwargs=optimizer_hook(s),
                          train_dataset=data.MaskedBlocks(blocks, masker, seed=1),
                          data_collator=data.PadCollator(1), callbacks=[clock])  # fmt: skip
        from .trainer_io import quiet

        quiet(trainer)
        trainer.train()
    return args.steps * s.batch * s.seq_len / (clock.end - clock.start)


def flops_per_token(model_size: str, vocab: int, seq_len: int) -> float:
    """Training FLOPs per token (forward and backward of one block, as
    ``torch.utils.flop_counter`` counts matrix products), for the cost estimate."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import RobertaForMaskedLM

    model = RobertaForMaskedLM(roberta_config(model_size, vocab))
    ids = torch.randint(5, vocab - 1, (1, seq_len))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    return counter.get_total_flops() / seq_len


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m adan_bert.throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model", default="tiny", choices=sorted(MODEL_SIZES), help="model size")
    p.add_argument("--vocab-size", type=int, default=8192,
                   help="embedding rows (50265 for the paper's GPT-2 BPE)")  # fmt: skip
    p.add_argument("--seq-len", type=int, default=128, help="tokens per block")
    p.add_argument("--batch", type=int, default=32, help="sequences per update")
    p.add_argument("--micro-batch", type=int, help="per forward pass (default: the batch)")
    p.add_argument("--steps", type=int, default=20, help="timed updates per round")
    p.add_argument("--warmup-steps", type=int, default=3, help="untimed updates per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per recipe")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--out", type=Path, help="folder for throughput.json and throughput.md")
    p.add_argument(
        "--count-flops",
        action="store_true",
        help="print the training FLOPs per token of --model at --seq-len; stop",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.count_flops:
        f = flops_per_token(args.model, args.vocab_size, args.seq_len)
        print(f"[throughput] {args.model}, vocab {args.vocab_size}, blocks of {args.seq_len}: "
              f"{f / 1e6:.1f} MFLOP per training token (the LM head on every position, as "
              "transformers computes it)")  # fmt: skip
        return 0
    rates: dict[str, list[float]] = {r: [] for r in PRETRAIN_RECIPES}
    for i in range(args.rounds):
        for recipe in PRETRAIN_RECIPES:
            rates[recipe].append(measure(recipe, args))
            print(f"[throughput] round {i + 1}: {recipe} {rates[recipe][-1]:,.0f} tokens/s",
                  flush=True)  # fmt: skip
    cpu = f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else cpu
    result = {
        "command": "python -m adan_bert.throughput " + " ".join(argv or sys.argv[1:]),
        "device": device, "torch": torch.__version__,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "tokens_per_s": {r: {"median": float(np.median(v)), "all": v} for r, v in rates.items()},
    }  # fmt: skip
    ratio = result["tokens_per_s"]["adan"]["median"] / result["tokens_per_s"]["adam"]["median"]
    result["adan_over_adam"] = ratio
    lines = [
        f"Pretraining throughput, model `{args.model}` (vocab {args.vocab_size}), "
        f"{args.batch} x {args.seq_len} tokens per update, on {device}, torch {torch.__version__}.",
        "",
        "| recipe | tokens/s (median of rounds) | rounds |",
        "|---|---|---|",
        *(f"| {r} | {np.median(v):,.0f} | {', '.join(f'{x:,.0f}' for x in v)} |"
          for r, v in rates.items()),
        "",
        f"Adan / Adam: {ratio:.3f}. Command: `{result['command']}`",
    ]  # fmt: skip
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.out / "throughput.json", result)
        write_text_atomic(args.out / "throughput.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
