"""Training throughput with each optimizer, side by side in one process.

Example::

    python -m adan_lstm.throughput --nlayers 1 --opts adam adan --rounds 5 --out tp.csv

One training step is the setting's: forward on a 70 x 20 block, cross entropy plus AR/TAR,
backward, global-norm clipping at 0.25, optimizer step. The optimizers take turns (``--steps``
steps each per round, ``--rounds`` rounds) on the same model and the same batches, so a machine
that gets slower or faster during the run affects them alike. Reported per optimizer: median
tokens/s of the whole step, the median optimizer-step time and its share of the whole step,
and each optimizer's step time relative to the first one's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from adan_repro.atomic import csv_writer, write_atomic

from adan_core.optim_factory import create_optimizer, implementation

from .model import count_parameters, detach_hidden
from .presets import preset_settings
from .train import build_model, objective, optimizer_overrides
from .train import build_parser as train_parser

HEADER = ("optimizer", "implementation", "tokens_per_s", "step_ms", "optimizer_ms",
          "optimizer_share", "step_vs_first", "eval_tokens_per_s_b1",
          "eval_tokens_per_s_b10")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m adan_lstm.throughput",
        description="Training tokens/s of AWD-LSTM with each optimizer, measured in turns.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--nlayers", type=int, default=1)
    p.add_argument("--preset", default="paper", help="model size preset")
    p.add_argument("--opts", nargs="+", default=["adam", "adan"])
    p.add_argument("--vocab", type=int, default=10_000, help="vocabulary size (PTB: 10,000)")
    p.add_argument("--steps", type=int, default=10, help="steps per optimizer per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per optimizer first")
    p.add_argument(
        "--eval-tokens",
        type=int,
        default=2800,
        help="tokens per evaluation-speed measurement (batch 1, as the test set; batch 10)",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, help="also write the table as CSV here")
    return p


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args: argparse.Namespace, log=print) -> list[dict]:
    """Run the turns and return one row per optimizer (columns of ``HEADER``)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    s = preset_settings(args.preset, args.nlayers)
    torch.manual_seed(0)
    model = build_model(s, args.vocab).to(device)
    model.train()
    optimizers = {}
    for opt in args.opts:
        targs = train_parser().parse_args(["--opt", opt, "--nlayers", str(s.nlayers)])
        optimizers[opt] = create_optimizer(model, targs, **optimizer_overrides(targs, s.nlayers))
    params = list(model.parameters())
    x = torch.randint(0, args.vocab, (s.bptt + 1, s.batch_size), device=device)
    tokens = s.bptt * s.batch_size
    log(f"[throughput] {count_parameters(model):,} parameters, {s.nlayers} layer(s), "
        f"{args.device}, {torch.get_num_threads()} threads, {tokens} tokens per step")  # fmt: skip
    hidden = model.init_hidden(s.batch_size)

    def step(optimizer) -> tuple[float, float]:
        nonlocal hidden
        _sync(device)
        t0 = time.perf_counter()
        hidden = detach_hidden(hidden)
        optimizer.zero_grad()
        logits, hidden, raw, dropped = model(x[:-1], hidden)
        loss, _ = objective(s, logits, x[1:], raw, dropped)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, s.clip)
        _sync(device)
        t1 = time.perf_counter()
        optimizer.step()
        _sync(device)
        t2 = time.perf_counter()
        return t2 - t0, t2 - t1

    for opt in optimizers.values():  # compile (Adan's CPU kernel) and warm the caches
        for _ in range(args.warmup):
            step(opt)
    times: dict[str, list[tuple[float, float]]] = {o: [] for o in optimizers}
    for r in range(args.rounds):
        for name, opt in optimizers.items():
            times[name] += [step(opt) for _ in range(args.steps)]
        log(f"[throughput] round {r + 1}/{args.rounds}: " + ", ".join(
            f"{n} {tokens / statistics.median(t for t, _ in v):.0f} tokens/s"
            for n, v in times.items()))  # fmt: skip
    evals = {b: eval_rate(model, args.vocab, b, args.eval_tokens, s.bptt, device) for b in (1, 10)}
    log(f"[throughput] evaluation: {evals[1]:.0f} tokens/s at batch 1, {evals[10]:.0f} at 10")
    rows, first = [], None
    for name, v in times.items():
        total = statistics.median(t for t, _ in v)
        opt_s = statistics.median(o for _, o in v)
        first = first or total
        rows.append({"optimizer": name, "implementation": implementation(optimizers[name]),
                     "tokens_per_s": tokens / total, "step_ms": 1e3 * total,
                     "optimizer_ms": 1e3 * opt_s, "optimizer_share": opt_s / total,
                     "step_vs_first": total / first, "eval_tokens_per_s_b1": evals[1],
                     "eval_tokens_per_s_b10": evals[10]})  # fmt: skip
    return rows


@torch.no_grad()
def eval_rate(model, vocab: int, batch_size: int, tokens: int, bptt: int, device) -> float:
    """Evaluation tokens/s (dropout off, state carried over bptt-long chunks)."""
    model.eval()
    steps = max(2, tokens // batch_size)
    x = torch.randint(0, vocab, (steps, batch_size), device=device)
    hidden = model.init_hidden(batch_size)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(0, steps - 1, bptt):
        logits, hidden, _, _ = model(x[i : i + bptt], hidden)
    _sync(device)
    model.train()
    return steps * batch_size / (time.perf_counter() - t0)


def markdown(rows: list[dict]) -> str:
    lines = ["| optimizer | implementation | tokens/s | step (ms) | optimizer step (ms) | "
             "share of step | step time vs first |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['optimizer']} | {r['implementation']} | {r['tokens_per_s']:.0f} | "
            f"{r['step_ms']:.1f} | {r['optimizer_ms']:.2f} | {100 * r['optimizer_share']:.1f}% "
            f"| {r['step_vs_first']:.3f} |"
        )
    if rows:
        lines.append(
            f"\nEvaluation (no optimizer): {rows[0]['eval_tokens_per_s_b1']:.0f} tokens/s at "
            f"batch 1 (the test set), {rows[0]['eval_tokens_per_s_b10']:.0f} at batch 10."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows = measure(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown(rows))
    if args.out:
        cells = [[r[k] if isinstance(r[k], str) else f"{r[k]:.6g}" for k in HEADER] for r in rows]
        write_atomic(args.out, csv_writer(HEADER, cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
