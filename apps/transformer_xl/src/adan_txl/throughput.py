"""Training throughput with each optimizer, side by side in one process.

Examples::

    python -m adan_txl.throughput --preset ptb-scaled --threads 2 --out results/throughput
    python -m adan_txl.throughput --preset wt103-base --precision fp32 bf16   # on a GPU

A step is the run's own (:meth:`adan_txl.train.Trainer.train_step`: forward over a segment of
every stream with memory, backward, clipping at 0.25, the scheduled lr, the optimizer step), on
synthetic tokens drawn from a Zipf law over the preset's vocabulary, so that the adaptive
softmax's clusters see about the share of tokens a real corpus gives them (uniform ids would
send almost every token to the largest, slowest tail). Each optimizer has its own copy of the
model; they take turns (``--steps`` steps each per round, ``--rounds`` rounds), so a machine
that gets slower or faster during the run affects them alike. Reported per optimizer and
precision: median tokens/s of the whole step, the median optimizer-step time and its share.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from adan_repro.atomic import Batch, csv_writer, text_writer
from adan_repro.rundir import prepare_dir

from adan_core.optim_factory import implementation

from .data import WT103_N_TOKEN
from .presets import SettingsError
from .train import Dist, Trainer, settings_from_args
from .train import build_parser as train_parser

HEADER = ("preset", "precision", "optimizer", "implementation", "device", "threads",
          "tokens_per_step", "tokens_per_s", "step_ms", "optimizer_ms", "optimizer_share",
          "step_vs_first")  # fmt: skip
VOCAB = {"wt103-base": WT103_N_TOKEN, "ptb-scaled": 10_000, "quick": 10_000}


@dataclass
class SyntheticCorpus:
    """What :class:`Trainer` reads from a corpus, with Zipf-distributed word ids."""

    vocab: range
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    md5: dict


def zipf_tokens(n_token: int, count: int, seed: int = 0) -> np.ndarray:
    """``count`` ids in ``[0, n_token)`` with P(id r) proportional to 1 / (r + 1)."""
    p = 1.0 / np.arange(1, n_token + 1)
    return np.random.default_rng(seed).choice(n_token, size=count, p=p / p.sum()).astype(np.int32)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m adan_txl.throughput",
        description="Training tokens/s of Transformer-XL with each optimizer, measured in turns.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--preset", default="ptb-scaled", help="model, segment and batch preset")
    p.add_argument("--opts", nargs="+", default=["adam", "adan"])
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=("fp32", "bf16"))
    p.add_argument("--vocab", type=int, help="vocabulary size (default: the preset's corpus')")
    p.add_argument("--batch-size", type=int, help="override the preset's streams per step")
    p.add_argument("--steps", type=int, default=5, help="steps per optimizer per round")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per optimizer first")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, help="write throughput.csv and throughput.md here")
    p.add_argument(
        "--count-flops",
        action="store_true",
        help="instead: count the floating-point operations of one training step (forward and "
        "backward, torch.utils.flop_counter) and print them per token",
    )
    return p


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trainer(args, opt: str, precision: str, corpus, device) -> Trainer:
    argv = ["--preset", args.preset, "--opt", opt, "--precision", precision, "--seed", "0"]
    if args.batch_size:
        argv += ["--batch-size", str(args.batch_size)]
    targs = train_parser().parse_args(argv)
    settings = settings_from_args(targs)
    return Trainer(targs, settings, corpus, Dist(device=device), log=lambda m: None)


def measure(args: argparse.Namespace, log=print) -> list[dict]:
    """Run the turns for each precision; one row per (precision, optimizer)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n_token = args.vocab or VOCAB.get(args.preset, 10_000)
    rows = []
    for precision in args.precision:
        s = settings_from_args(train_parser().parse_args(["--preset", args.preset]))
        tokens = zipf_tokens(n_token, (args.batch_size or s.batch_size) * (s.tgt_len + 1) * 4)
        corpus = SyntheticCorpus(range(n_token), tokens, tokens[:1000], tokens[:1000], {})
        trainers = {opt: _trainer(args, opt, precision, corpus, device) for opt in args.opts}
        first = next(iter(trainers.values()))
        per_step = first.s.batch_size * first.s.tgt_len
        log(f"[throughput] {args.preset} {precision}: {sum(p.numel() for p in first.params):,} "
            f"parameters, {device}, {torch.get_num_threads()} threads, {per_step:,} tokens per "
            "step")  # fmt: skip
        opt_times: dict[str, list[float]] = {o: [] for o in trainers}
        for name, t in trainers.items():  # the pre/post hooks time the optimizer step alone
            start = {}

            def pre(opt, a, k, start=start):
                _sync(device)
                start["t"] = time.perf_counter()

            def post(opt, a, k, start=start, name=name, opt_times=opt_times):
                _sync(device)
                opt_times[name].append(time.perf_counter() - start["t"])

            t.optimizer.register_step_pre_hook(pre)
            t.optimizer.register_step_post_hook(post)

        def step(t: Trainer) -> float:
            if t.segment >= t.segments_per_epoch - 1:
                t.segment = 0  # stay inside the synthetic text
            _sync(device)
            t0 = time.perf_counter()
            t.train_step()
            _sync(device)
            return time.perf_counter() - t0

        for t in trainers.values():
            for _ in range(args.warmup):
                step(t)
        for v in opt_times.values():
            v.clear()
        times: dict[str, list[float]] = {o: [] for o in trainers}
        for r in range(args.rounds):
            for name, t in trainers.items():
                times[name] += [step(t) for _ in range(args.steps)]
            log(f"[throughput] round {r + 1}/{args.rounds}: " + ", ".join(
                f"{n} {per_step / statistics.median(v):.0f} tokens/s" for n, v in times.items()
            ))  # fmt: skip
        base = None
        for name, t in trainers.items():
            total, opt_s = statistics.median(times[name]), statistics.median(opt_times[name])
            base = base or total
            rows.append({"preset": args.preset, "precision": precision, "optimizer": name,
                         "implementation": implementation(t.optimizer), "device": str(device),
                         "threads": torch.get_num_threads(), "tokens_per_step": per_step,
                         "tokens_per_s": per_step / total, "step_ms": 1e3 * total,
                         "optimizer_ms": 1e3 * opt_s, "optimizer_share": opt_s / total,
                         "step_vs_first": total / base})  # fmt: skip
        del trainers
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def count_flops(args: argparse.Namespace, log=print) -> dict:
    """FLOPs of one training step (matrix products, forward and backward, as
    ``torch.utils.flop_counter`` counts them) per token, on the same synthetic tokens."""
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(args.device)
    n_token = args.vocab or VOCAB.get(args.preset, 10_000)
    s = settings_from_args(train_parser().parse_args(["--preset", args.preset]))
    batch = args.batch_size or s.batch_size
    tokens = zipf_tokens(n_token, batch * (s.tgt_len + 1) * 4)
    corpus = SyntheticCorpus(range(n_token), tokens, tokens[:1000], tokens[:1000], {})
    t = _trainer(args, args.opts[0], "fp32", corpus, device)
    t.train_step()  # the second step has a full memory, as every step after the first
    counter = FlopCounterMode(display=False)
    with counter:
        t.train_step()
    per_token = counter.get_total_flops() / (batch * s.tgt_len)
    log(f"[throughput] {args.preset}: {per_token / 1e6:.1f} MFLOP per training token "
        f"(batch {batch} x {s.tgt_len}, memory {s.mem_len})")  # fmt: skip
    return {"preset": args.preset, "flops_per_token": per_token}


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return "CPU"


def markdown(rows: list[dict], device: str) -> str:
    lines = [f"Device: {device_name(device)}, torch {torch.__version__}.", "",
             "| preset | precision | optimizer | implementation | tokens/s | step (ms) | "
             "optimizer step (ms) | share of step | step time vs first |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['precision']} | {r['optimizer']} | {r['implementation']} | "
            f"{r['tokens_per_s']:.0f} | {r['step_ms']:.1f} | {r['optimizer_ms']:.2f} | "
            f"{100 * r['optimizer_share']:.1f}% | {r['step_vs_first']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.count_flops:
            count_flops(args)
            return 0
        rows = measure(args)
    except (SettingsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = markdown(rows, args.device)
    print(text)
    if args.out:
        cells = [[r[k] if isinstance(r[k], str) else f"{r[k]:.6g}" for k in HEADER] for r in rows]
        prepare_dir(args.out)
        with Batch() as batch:
            batch.add(args.out / "throughput.csv", csv_writer(HEADER, cells))
            batch.add(args.out / "throughput.md", text_writer(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
