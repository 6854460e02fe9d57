#!/usr/bin/env python
"""Step cost of the Win optimizers relative to their base optimizers, side by side in one run.

For each model size the optimizers are timed in interleaved rounds (every round times every
optimizer once, in a rotating order) so that load from other processes hits all of them alike.
Only ``optimizer.step()`` is timed, with fixed random gradients. Prints a markdown table of median
step times and the ratio to the row's baseline.

    nice -n 10 python tools/bench_win.py              # PPO-size and ~10M-parameter models
    python tools/bench_win.py --models ppo --rounds 5  # quick look
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packages" / "adan-core" / "src"))
from adan_core.win import Adam_Win, AdamW_Win, LAMB_Win, SGD_Win  # noqa: E402


def ppo_model() -> nn.Module:
    """SB3 MlpPolicy default: separate 64-64 tanh actor and critic for a small control task."""
    obs, act = 8, 4
    return nn.ModuleDict(
        {
            "pi": nn.Sequential(nn.Linear(obs, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh()),
            "vf": nn.Sequential(nn.Linear(obs, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh()),
            "action": nn.Linear(64, act),
            "value": nn.Linear(64, 1),
        }
    )


def ten_m_model() -> nn.Module:
    """About 9.6M parameters in 4 transformer-sized blocks (weights and biases)."""
    d = 448
    blocks = []
    for _ in range(4):
        blocks += [nn.Linear(d, 3 * d), nn.Linear(d, d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)]
        blocks += [nn.LayerNorm(d), nn.LayerNorm(d)]
    return nn.Sequential(*blocks)


MODELS: dict[str, Callable[[], nn.Module]] = {"ppo": ppo_model, "10m": ten_m_model}


# (family, label, factory, is_baseline). Baselines: torch foreach optimizers, and for LAMB (no
# torch LAMB) our own LAMB_Win(acceleration_mode="none").
def _win(cls, mode="win", foreach=True, **kw):
    return lambda ps: cls(ps, acceleration_mode=mode, foreach=foreach, **kw)


def _torch(cls, **kw):
    return lambda ps: cls(ps, foreach=True, **kw)


SGD_KW = dict(lr=0.1, momentum=0.9, nesterov=True)
CANDIDATES = [
    ("AdamW", "torch.optim.AdamW foreach", _torch(torch.optim.AdamW), True),
    ("AdamW", "AdamW_Win win foreach", _win(AdamW_Win), False),
    ("AdamW", "AdamW_Win win2 foreach", _win(AdamW_Win, "win2"), False),
    ("AdamW", "AdamW_Win win for-loop", _win(AdamW_Win, foreach=False), False),
    ("AdamW", "AdamW_Win none foreach", _win(AdamW_Win, "none"), False),
    ("Adam", "torch.optim.Adam foreach", _torch(torch.optim.Adam), True),
    ("Adam", "Adam_Win win foreach", _win(Adam_Win), False),
    ("Adam", "Adam_Win win2 foreach", _win(Adam_Win, "win2"), False),
    ("LAMB", "LAMB_Win none foreach (plain LAMB)", _win(LAMB_Win, "none"), True),
    ("LAMB", "LAMB_Win win foreach", _win(LAMB_Win), False),
    ("LAMB", "LAMB_Win win2 foreach", _win(LAMB_Win, "win2"), False),
    ("LAMB", "LAMB_Win win for-loop", _win(LAMB_Win, foreach=False), False),
    ("SGD", "torch.optim.SGD nesterov foreach", _torch(torch.optim.SGD, **SGD_KW), True),
    ("SGD", "SGD_Win win foreach", _win(SGD_Win, lr=0.1), False),
    ("SGD", "SGD_Win win2 foreach", _win(SGD_Win, "win2", lr=0.1), False),
    ("SGD", "SGD_Win win for-loop", _win(SGD_Win, foreach=False, lr=0.1), False),
]


def bench_model(name: str, rounds: int, steps: int, warmup: int) -> list[tuple]:
    torch.manual_seed(0)
    setups = []
    for family, label, factory, is_base in CANDIDATES:
        model = MODELS[name]()
        params = list(model.parameters())
        for p in params:
            p.grad = torch.randn_like(p) * 1e-2
        opt = factory(params)
        for _ in range(warmup):
            opt.step()
        setups.append((family, label, is_base, opt, []))
    n_params = sum(p.numel() for p in params)
    for r in range(rounds):
        shift = r % len(setups)
        for *_, opt, times in setups[shift:] + setups[:shift]:
            t0 = time.perf_counter()
            for _ in range(steps):
                opt.step()
            times.append((time.perf_counter() - t0) / steps)
    rows = []
    base = {}
    for family, label, is_base, _, times in setups:
        med = statistics.median(times)
        if is_base:
            base[family] = med
        rows.append((name, n_params, family, label, med, med / base[family]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ppo,10m", help="comma list of: ppo, 10m")
    parser.add_argument("--rounds", type=int, default=21, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=0, help="steps per round (0: per model)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per optimizer")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        steps = args.steps or {"ppo": 20, "10m": 1}[name]
        rows += bench_model(name.strip(), args.rounds, steps, args.warmup)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}; "
        f"median of {args.rounds} interleaved rounds\n"
    )
    print("| model | params | optimizer | median step (ms) | vs base |")
    print("|---|---:|---|---:|---:|")
    for name, n, _, label, med, ratio in rows:
        print(f"| {name} | {n:,} | {label} | {med * 1e3:.3f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
