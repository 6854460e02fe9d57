"""Where the default CPU Adan step spends its time (the profile quoted in BENCHMARKS.md).

Times, interleaved in rotating order (medians over rounds), on 28 fp32 tensors of 1M elements
(the large tensors of `bench_optim.py --sizes 30m`):

* ``adan``: the compiled kernel exactly as ``adan_core._cpu_fused`` runs it (one call per tensor);
* ``adan-no-omp``: the same function compiled the way it was before ``cpp.dynamic_threads``: first
  on the 8-element probe of ``ready()``, with the FX graph cache off so the result does not depend
  on what the on-disk cache happens to hold (Inductor then emits no OpenMP region at all);
* ``adan-constants``: the same math with every coefficient a literal (no coefficient loads);
* ``same-bytes-copy``: reads the same 6 tensors and writes the same 5 with no math (memory floor);
* ``inductor-adamw``: AdamW's update compiled by Inductor the same way (28 B/param);
* ``aten-adamw``: ``torch._fused_adamw_``, what ``AdamW(fused=True)`` runs (28 B/param).

Then the step's own cost for the 30m layout with the compiled calls replaced by no-ops.

Usage: ``PYTHONPATH=packages/adan-core/src python tools/profile_cpu_kernel.py [--threads N]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from adan_core import _cpu_fused as cf
from adan_core.functional import AdanHyper

HP = AdanHyper(1e-3, (0.98, 0.92, 0.99), 1e-8, 0.02, False)
N, T = 1 << 20, 28


def _adan_constants(p, g, m, n, d, neg):
    gf = g * 1.0
    delta = gf + neg
    mf = m * 0.98 + 0.02 * gf
    df = d * 0.92 + 0.08 * delta
    nest = gf + 0.92 * delta
    nf = n * 0.99 + 0.01 * nest * nest
    u = (mf * 1.3 + df * 1.7) / (nf.sqrt() * 1.1 + 1e-8)
    p.copy_((p - 1e-3 * u) * 0.99998)
    m.copy_(mf)
    n.copy_(nf)
    d.copy_(df)
    neg.copy_(-gf)


def _same_bytes_copy(p, g, m, n, d, neg):
    p.copy_(p + g)
    m.copy_(m + n)
    n.copy_(n + d)
    d.copy_(d + neg)
    neg.copy_(g)


def _adamw(p, g, m, v, coef):
    b1, b2, lr, eps, bc1, bc2 = (coef[k] for k in range(6))
    mf = m * b1 + (1 - b1) * g
    vf = v * b2 + (1 - b2) * g * g
    p.copy_(p * (1 - lr * 0.01) - lr * bc1 * mf / ((vf * bc2).sqrt() + eps))
    m.copy_(mf)
    v.copy_(vf)


def _compiled(fn, probe, **options):
    """Compile ``fn`` like the package does (dynamic shapes) and run it once on ``probe``."""
    options = {"cpp.dynamic_threads": True, **options}
    compiled = torch.compile(fn, dynamic=True, fullgraph=True, options=options)
    compiled(*probe)
    return compiled


def kernel_variants(rounds: int) -> dict[str, float]:
    coef = cf._coefficients(HP, 3, 1.0)
    cf.ready({(torch.float32,) * 4})
    small = [torch.zeros(8) for _ in range(6)]
    no_omp = torch.compile(
        cf._flat_update, dynamic=True, fullgraph=True, options={"fx_graph_cache": False}
    )
    no_omp(*small, coef)
    constants = _compiled(_adan_constants, small)
    copy = _compiled(_same_bytes_copy, small)
    adamw = _compiled(_adamw, small[:4] + [coef])
    a = [[torch.rand(N) for _ in range(6)] for _ in range(T)]
    w = [[torch.rand(N) for _ in range(4)] for _ in range(T)]
    steps = [torch.tensor(1.0) for _ in range(T)]
    runs = {
        "adan": lambda: [cf._kernel()(*s, coef) for s in a],
        "adan-no-omp": lambda: [no_omp(*s, coef) for s in a],
        "adan-constants": lambda: [constants(*s) for s in a],
        "same-bytes-copy": lambda: [copy(*s) for s in a],
        "inductor-adamw": lambda: [adamw(*s, coef) for s in w],
        "aten-adamw": lambda: torch._fused_adamw_(
            *([s[k] for s in w] for k in range(4)),
            [],
            steps,
            lr=1e-3,
            beta1=0.9,
            beta2=0.99,
            weight_decay=0.01,
            eps=1e-8,
            amsgrad=False,
            maximize=False,
        ),
    }
    return _interleaved(runs, rounds)


def _interleaved(runs: dict, rounds: int) -> dict[str, float]:
    for fn in runs.values():
        fn()
    names, times = list(runs), {name: [] for name in runs}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def step_overhead(rounds: int) -> float:
    """ms of one cpu_fused_adan call on the 30m layout, compiled calls replaced by no-ops."""
    sizes = [(1024, 1024)] * 28 + [(1024,)] * 42
    lists = [[torch.randn(s) for s in sizes] for _ in range(6)]
    steps = [torch.tensor(3.0) for _ in sizes]
    cache: dict = {}
    cf.cpu_fused_adan(*lists, steps, HP, None, cache=cache)
    saved = dict(cf._compiled)
    cf._compiled.update({True: lambda *a: None, False: lambda *a: None})
    try:
        return _interleaved(
            {"overhead": lambda: cf.cpu_fused_adan(*lists, steps, HP, None, cache=cache)}, rounds
        )["overhead"]
    finally:
        cf._compiled.update(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--rounds", type=int, default=12, help="timed rounds per variant")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = open("/proc/loadavg").read().split()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, 1-min load {load}")
    ms = kernel_variants(args.rounds)
    base = ms["aten-adamw"]
    for name, value in ms.items():
        print(f"  {name:16s} {value:8.2f} ms  {value / base:5.2f}x aten-adamw")
    print(f"  adan / inductor-adamw: {ms['adan'] / ms['inductor-adamw']:.2f} (bytes ratio 1.57)")
    print(f"  step overhead without the compiled calls: {step_overhead(30):.2f} ms")
    print(f"  1-min load at the end {open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()
