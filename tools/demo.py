"""Quick Adam-vs-Adan comparison on synthetic data (the project's main job; nothing to download).

A small MLP student learns to imitate a fixed random "teacher" MLP (regression, MSE) from data
generated with a fixed seed. Every optimizer starts from the same initial weights and sees the same
mini-batches. The optimizers are stepped side by side in one loop (alternating which goes first),
so the step-time comparison shares the same machine conditions.

Examples:
    python tools/demo.py                         # print the tables only
    python tools/demo.py --out results/demo      # also write summary.md, summary.csv, loss.png
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from adan_core.optim_factory import available_optimizers, create_optimizer

# Default learning rates: the best final validation loss of a small grid on seed 0 (3000 steps),
# adam {3e-3, 1e-2, 3e-2} and adan {1e-2, 2e-2, 3e-2, 6e-2}, e.g.
# `python tools/demo.py --lrs 3e-3 1e-2`. Other seeds or sizes may prefer other values.
DEFAULT_LR = {"adam": 1e-2, "adamw": 1e-2, "adan": 2e-2, "adanw": 2e-2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--opts",
        nargs="+",
        default=["adam", "adan"],
        metavar="NAME",
        help=f"optimizers to compare, by registry name ({', '.join(available_optimizers())})",
    )
    p.add_argument(
        "--lrs",
        nargs="+",
        type=float,
        default=None,
        metavar="LR",
        help="learning rate per optimizer, same order as --opts; %(default)s picks "
        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()),
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        help="weight decay for every optimizer (biases and norm weights are never decayed)",
    )
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps per optimizer")
    p.add_argument("--batch-size", type=int, default=128, help="mini-batch size")
    p.add_argument("--width", type=int, default=128, help="hidden width of the student MLP")
    p.add_argument(
        "--train-size", type=int, default=32768, help="number of synthetic training examples"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for data, initial weights, batches")
    p.add_argument(
        "--checkpoints",
        type=int,
        default=6,
        help="number of evenly spaced steps (plus step 0) at which validation loss is reported",
    )
    p.add_argument(
        "--log-every", type=int, default=500, help="print a progress line every N steps (0: off)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 1 keeps timings stable on a shared machine",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for summary.md, summary.csv and loss.png (default: write nothing)",
    )
    args = p.parse_args(argv)
    unknown = [o for o in args.opts if o not in available_optimizers()]
    if unknown:
        p.error(f"unknown optimizer(s) {unknown}; choose from {available_optimizers()}")
    if len(set(args.opts)) != len(args.opts):
        p.error(f"--opts must not repeat a name, got {args.opts}")
    if args.lrs is None:
        args.lrs = [DEFAULT_LR.get(o, 1e-3) for o in args.opts]
    if len(args.lrs) != len(args.opts):
        p.error(f"--lrs needs one value per optimizer in --opts ({len(args.opts)}), got {args.lrs}")
    for name in ("steps", "batch_size", "width", "train_size", "checkpoints"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return args


def make_mlp(d_in: int, width: int, d_out: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(d_in, width),
        nn.GELU(),
        nn.LayerNorm(width),
        nn.Linear(width, width),
        nn.GELU(),
        nn.Linear(width, d_out),
    )


def make_data(seed: int, n_train: int, d_in: int = 32, d_out: int = 4):
    """Inputs ~ N(0, I); targets = random teacher MLP(x) + small noise; 25% extra for validation."""
    g = torch.Generator().manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(d_in, 64), nn.Tanh(), nn.Linear(64, d_out))
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1.5 / math.sqrt(p.shape[-1])))
        n = n_train + n_train // 4
        x = torch.randn(n, d_in, generator=g)
        y = teacher(x) + 0.05 * torch.randn(n, d_out, generator=g)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    x, y, xv, yv = make_data(args.seed, args.train_size)
    base = make_mlp(x.shape[1], args.width, y.shape[1])
    models = [copy.deepcopy(base) for _ in args.opts]
    optims = [
        create_optimizer(m, opt=o, lr=lr, weight_decay=args.weight_decay)
        for m, o, lr in zip(models, args.opts, args.lrs)
    ]
    loss_fn = nn.MSELoss()
    checkpoints = sorted(
        {round(i * args.steps / args.checkpoints) for i in range(args.checkpoints + 1)}
    )
    val = {o: {} for o in args.opts}
    step_times = {o: [] for o in args.opts}
    train_loss = {o: [] for o in args.opts}
    batch_gen = torch.Generator().manual_seed(args.seed + 1)
    order = list(range(len(args.opts)))

    def evaluate(step: int) -> None:
        with torch.no_grad():
            for o, m in zip(args.opts, models):
                val[o][step] = loss_fn(m(xv), yv).item()

    t_start = time.perf_counter()
    evaluate(0)
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, x.shape[0], (args.batch_size,), generator=batch_gen)
        xb, yb = x[idx], y[idx]
        order.reverse()  # alternate who goes first so neither gets a systematically warmer cache
        for i in order:
            o, m, opt = args.opts[i], models[i], optims[i]
            loss = loss_fn(m(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t0 = time.perf_counter()
            opt.step()
            step_times[o].append(time.perf_counter() - t0)
            train_loss[o].append(loss.item())
        if step in checkpoints:
            evaluate(step)
        if args.log_every and step % args.log_every == 0:
            losses = "  ".join(
                f"{o} {statistics.fmean(train_loss[o][-50:]):.4f}" for o in args.opts
            )
            elapsed = time.perf_counter() - t_start
            print(f"[demo] step {step}/{args.steps}  train loss (last 50) {losses}  {elapsed:.0f}s")
            sys.stdout.flush()
    return {"checkpoints": checkpoints, "val": val, "step_times": step_times, "train": train_loss}


def summary_rows(args: argparse.Namespace, res: dict) -> list[dict]:
    rows = []
    for o, lr in zip(args.opts, args.lrs):
        for s in res["checkpoints"]:
            rows.append({"optimizer": o, "lr": lr, "step": s, "val_loss": res["val"][o][s]})
    return rows


def format_tables(args: argparse.Namespace, res: dict) -> str:
    opts, cps = args.opts, res["checkpoints"]
    head = [f"{o} (lr {lr:g})" for o, lr in zip(opts, args.lrs)]
    lines = ["Validation MSE at checkpoints (lower is better)", ""]
    lines.append("| step | " + " | ".join(head) + " |")
    lines.append("|---:|" + "---:|" * len(opts))
    for s in cps:
        lines.append(f"| {s} | " + " | ".join(f"{res['val'][o][s]:.5f}" for o in opts) + " |")
    best = min(opts, key=lambda o: res["val"][o][cps[-1]])
    final = ", ".join(f"{o} {res['val'][o][cps[-1]]:.5f}" for o in opts)
    lines += ["", f"Final validation MSE after {cps[-1]} steps: {final} (lowest: {best})", ""]
    med = {o: statistics.median(res["step_times"][o]) * 1e6 for o in opts}
    ref = opts[0]
    lines.append(
        f"Optimizer step time, median over {args.steps} steps, measured side by side "
        f"({torch.get_num_threads()} thread(s), torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}):"
    )
    lines.append("")
    lines.append(f"| optimizer | median step (us) | ratio to {ref} |")
    lines.append("|---|---:|---:|")
    for o in opts:
        lines.append(f"| {o} | {med[o]:.1f} | {med[o] / med[ref]:.2f} |")
    n_params = sum(p.numel() for p in make_mlp(32, args.width, 4).parameters())
    lines.append("")
    lines.append(
        f"Model: MLP 32-{args.width}-{args.width}-4 ({n_params} parameters), batch "
        f"{args.batch_size}, {args.train_size} synthetic examples, seed {args.seed}, "
        f"weight decay {args.weight_decay:g}. One seed, learning rates from a small grid: a quick "
        "comparison, not a benchmark."
    )
    return "\n".join(lines) + "\n"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file next to ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_outputs(out: Path, args: argparse.Namespace, res: dict, tables: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cmd = "python tools/demo.py " + " ".join(sys.argv[1:])
    md = f"# Adam vs Adan demo\n\nCommand: `{cmd.strip()}`\n\n{tables}\n![loss](loss.png)\n"
    atomic_write(out / "summary.md", md.encode())

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["optimizer", "lr", "step", "val_loss"])
    writer.writeheader()
    writer.writerows(summary_rows(args, res))
    atomic_write(out / "summary.csv", buf.getvalue().encode())

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    window = max(1, args.steps // 100)
    for o, lr in zip(args.opts, args.lrs):
        tr = torch.tensor(res["train"][o])
        smooth = tr.unfold(0, window, window).mean(1) if len(tr) >= window else tr
        ax.plot(
            [(i + 1) * window for i in range(len(smooth))],
            smooth.tolist(),
            alpha=0.5,
            label=f"{o} train (lr {lr:g})",
        )
        steps = res["checkpoints"]
        ax.plot(steps, [res["val"][o][s] for s in steps], "o-", label=f"{o} validation")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE")
    ax.set_title("Synthetic teacher-student regression")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    atomic_write(out / "loss.png", png.getvalue())
    print(f"[demo] wrote {out}/summary.md, summary.csv, loss.png")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"[demo] comparing {', '.join(args.opts)} for {args.steps} steps each "
        f"(seed {args.seed}, {args.threads} thread(s))"
    )
    res = train(args)
    tables = format_tables(args, res)
    print()
    print(tables)
    if args.out is not None:
        write_outputs(args.out, args, res, tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
