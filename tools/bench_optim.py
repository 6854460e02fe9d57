#!/usr/bin/env python
"""Optimizer-step benchmark: Adan's implementations against torch Adam/AdamW, side by side.

For every model size, each optimizer gets its own copy of the parameters; all of them share one
set of fixed random gradients (set once; no optimizer here writes ``p.grad``). After a warm-up
(the compiled CPU path compiles on its first step), the optimizers are timed in interleaved
rounds: every round times every optimizer once, in a rotating order, so that load from other
processes on a shared machine hits all of them alike. Medians are reported.

Columns of the printed markdown table:

* ``median ms``: median time of one ``optimizer.step()`` (``time.perf_counter`` on CPU; CUDA
  events around the step, then a synchronize, on GPU). Small models time a batch of steps per
  sample (the same count for every optimizer of a size) so the timer's granularity does not matter.
* ``x AdamW fused``: median time divided by torch ``AdamW(fused=True)``'s, measured in the same run.
* ``GB/s``: *useful* bytes of the one-pass model divided by the median time. The model counts each
  element access once: Adan reads p, g, m, d, n, prev and writes p, m, d, n, prev (44 B/param in
  fp32; ADAN.md §9: reads P+G+3S+R, writes P+3S+R); Adam/AdamW read p, g, m, v and write p, m, v
  (28 B/param in fp32). Foreach and single-tensor paths move more bytes than that; they are still
  credited with the same model bytes, so their GB/s shows how far they fall short of one pass.
* ``% copy``: GB/s as a percentage of a device-to-device ``dst.copy_(src)`` of a large buffer
  (read + write bytes counted), measured on the same device in the same run.
* ``state MiB``: sum of ``nbytes`` of every tensor in ``optimizer.state`` (exact, any device).
* ``peak MiB``: CUDA: ``torch.cuda.max_memory_allocated`` during one steady-state step of that
  optimizer alone (its parameters, the shared gradients and its state alive, plus the step's
  temporaries). CPU: params + grads + state bytes plus the measured temporaries.
* ``temp MiB``: CPU only: peak bytes of the tensors one steady-state step allocates (counted at
  the dispatcher by ``tools/memtrack.py``: torch keeps no CPU allocator statistics).

Examples::

    python tools/bench_optim.py --sizes ppo --reps 3 --warmup 1     # seconds: quick check
    nice -n 5 python tools/bench_optim.py --sizes ppo,1m,10m,30m --out results.md
    python tools/bench_optim.py --device cuda --sizes ppo,1m --cuda-graph
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packages" / "adan-core" / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from memtrack import peak_temporary_bytes  # noqa: E402

from adan_core import Adan  # noqa: E402

MIB = 1 << 20

# ----------------------------------------------------------------------------- model sizes


def _ppo_shapes() -> list[tuple[int, ...]]:
    """SB3's default MlpPolicy for HalfCheetah (obs 17, act 6): separate [64, 64] actor and critic
    networks, the action and value heads, and the state-independent log_std: 13 tensors."""
    obs, act, h = 17, 6, 64
    net = [(h, obs), (h,), (h, h), (h,)]
    return net + net + [(act, h), (act,), (1, h), (1,), (act,)]


def _transformer_mix(width: int, n_weights: int) -> list[tuple[int, ...]]:
    """``n_weights`` square weights plus 1.5x as many bias/norm vectors, like a transformer."""
    return [(width, width)] * n_weights + [(width,)] * (3 * n_weights // 2)


SIZES: dict[str, tuple[str, Callable[[], list[tuple[int, ...]]]]] = {
    "ppo": ("SB3 MlpPolicy, HalfCheetah (obs 17, act 6, pi/vf [64,64])", _ppo_shapes),
    "1m": ("16 x (256,256) + 24 x (256,)", lambda: _transformer_mix(256, 16)),
    "10m": ("24 x (640,640) + 36 x (640,)", lambda: _transformer_mix(640, 24)),
    "30m": ("28 x (1024,1024) + 42 x (1024,)", lambda: _transformer_mix(1024, 28)),
    "100m": ("24 x (2048,2048) + 36 x (2048,)", lambda: _transformer_mix(2048, 24)),
    "1b": ("60 x (4096,4096) + 90 x (4096,)", lambda: _transformer_mix(4096, 60)),
}
# Repetitions (timed rounds) when --reps is not given: fewer for the slow, big sizes.
DEFAULT_REPS = {"ppo": 300, "1m": 100, "10m": 40, "30m": 25, "100m": 9, "1b": 5}

# ----------------------------------------------------------------------------- optimizers

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _official_adan() -> tuple[type | None, str]:
    """The sail-sg ``adan`` package's class, or None and the reason it cannot be used."""
    try:
        from adan import Adan as OfficialAdan  # sail-sg/Adan, `pip install adan` from its repo
    except ImportError as err:
        return None, f"`from adan import Adan` failed ({err}); install sail-sg/Adan to include it"
    return OfficialAdan, ""


@dataclass
class OptSpec:
    """One optimizer configuration: how to build it and which bytes model applies."""

    name: str
    label: str
    family: str  # "adan" or "adam": selects the bytes model
    build: Callable[[list[torch.Tensor], bool], torch.optim.Optimizer]  # (params, capturable)


def _adan(**kw) -> Callable[[list[torch.Tensor], bool], torch.optim.Optimizer]:
    return lambda ps, cap: Adan(ps, lr=1e-3, weight_decay=0.02, capturable=cap, **kw)


def _torch(cls: type, **kw) -> Callable[[list[torch.Tensor], bool], torch.optim.Optimizer]:
    return lambda ps, cap: cls(ps, lr=1e-3, weight_decay=0.01, capturable=cap, **kw)


def _official(ps: list[torch.Tensor], cap: bool) -> torch.optim.Optimizer:
    cls, reason = _official_adan()
    if cls is None:
        raise RuntimeError(reason)
    if cap:
        raise RuntimeError("the official Adan has no capturable mode")
    return cls(ps, lr=1e-3, weight_decay=0.02, foreach=True)


OPTIMIZERS: dict[str, OptSpec] = {
    s.name: s
    for s in [
        OptSpec("adan", "adan_core.Adan (default)", "adan", _adan()),
        OptSpec("adan-fused", "adan_core.Adan fused=True (Triton)", "adan", _adan(fused=True)),
        OptSpec("adan-foreach", "adan_core.Adan foreach=True", "adan", _adan(foreach=True)),
        OptSpec("adan-single", "adan_core.Adan foreach=False", "adan", _adan(foreach=False)),
        OptSpec("official-adan", "official adan.Adan (foreach)", "adan", _official),
        OptSpec(
            "adamw-fused", "torch AdamW fused=True", "adam", _torch(torch.optim.AdamW, fused=True)
        ),
        OptSpec(
            "adamw-foreach",
            "torch AdamW foreach=True",
            "adam",
            _torch(torch.optim.AdamW, foreach=True),
        ),
        OptSpec(
            "adam-foreach",
            "torch Adam foreach=True",
            "adam",
            _torch(torch.optim.Adam, foreach=True),
        ),
    ]
}
DEFAULT_OPTIMIZERS = [
    "adan",
    "adan-foreach",
    "adan-single",
    "official-adan",
    "adamw-fused",
    "adamw-foreach",
    "adam-foreach",
]


def model_bytes_per_param(family: str, dtype: torch.dtype) -> int:
    """Useful bytes per parameter per step of a one-pass kernel (state dtype = param dtype)."""
    e = torch.empty((), dtype=dtype).element_size()
    if family == "adan":  # reads p, g, m, d, n, prev; writes p, m, d, n, prev
        return (1 + 1 + 3 + 1) * e + (1 + 3 + 1) * e
    return (1 + 1 + 2) * e + (1 + 2) * e  # Adam: reads p, g, m, v; writes p, m, v


# ----------------------------------------------------------------------------- timing


def _log(msg: str) -> None:
    print(f"[bench_optim {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Timer:
    """Times a callable: perf_counter on CPU, CUDA events (then a synchronize) on GPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn: Callable[[], None], repeat: int = 1) -> float:
        """Seconds for ``repeat`` calls of ``fn``."""
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(repeat):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        return time.perf_counter() - t0


class CopyProbe:
    """``dst.copy_(src)`` of a large buffer on one device; bytes moved = read + write."""

    def __init__(self, device: torch.device, nbytes: int) -> None:
        self.src = torch.rand(nbytes // 4, device=device)
        self.dst = torch.empty_like(self.src)
        self.dst.copy_(self.src)  # touch every page before timing
        self.bytes = 2 * self.src.nbytes
        self.gbs: list[float] = []

    def __call__(self) -> None:
        self.dst.copy_(self.src)


@dataclass
class Contender:
    spec: OptSpec
    params: list[torch.Tensor]
    opt: torch.optim.Optimizer
    step: Callable[[], None]
    mode: str  # "eager" or "cuda graph"
    times: list[float] = field(default_factory=list)
    peak_bytes: int | None = None


def _state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(v.nbytes for st in opt.state.values() for v in st.values() if torch.is_tensor(v))


def _make_params(
    shapes: Sequence[tuple[int, ...]], grads: list[torch.Tensor], seed: int
) -> list[torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    params = []
    for shape, g in zip(shapes, grads):
        p = torch.nn.Parameter(
            (torch.randn(shape, generator=gen) * 0.02).to(device=g.device, dtype=g.dtype)
        )
        p.grad = g
        params.append(p)
    return params


def _capture(opt: torch.optim.Optimizer) -> Callable[[], None]:
    """Capture one step in a CUDA graph (after warm-up steps on a side stream)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    return graph.replay


def _build(
    spec: OptSpec,
    shapes: Sequence[tuple[int, ...]],
    grads: list[torch.Tensor],
    cuda_graph: bool,
    warmup: int,
) -> Contender:
    params = _make_params(shapes, grads, seed=1)
    if cuda_graph:
        try:
            opt = spec.build(params, True)
            return Contender(spec, params, opt, _capture(opt), "cuda graph")
        except Exception as err:  # noqa: BLE001 - report and fall back to eager timing
            _log(f"  {spec.name}: CUDA graph capture failed ({type(err).__name__}: {err}); eager")
            params = _make_params(shapes, grads, seed=1)
    opt = spec.build(params, False)
    for _ in range(warmup):
        opt.step()
    return Contender(spec, params, opt, opt.step, "eager")


def _peak_cuda(spec: OptSpec, shapes, grads, cuda_graph: bool, warmup: int) -> int:
    """max_memory_allocated over one steady-state step of this optimizer alone, counting its
    parameters, the shared gradients, its state and the step's temporaries."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    c = _build(spec, shapes, grads, cuda_graph, max(warmup, 1))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    c.step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before + sum(g.nbytes for g in grads)
    del c
    return peak


def _cpu_temporaries(c: Contender) -> int | None:
    """Peak temporaries of one step, or None where the counting mode cannot run: a
    ``torch.compile``d kernel refuses to run under a Python dispatch mode."""
    try:
        return peak_temporary_bytes(c.step)
    except RuntimeError as err:
        _log(f"  {c.spec.name}: temporaries not measurable ({str(err).splitlines()[0][:80]})")
        return None


# ----------------------------------------------------------------------------- one size


def bench_size(
    size: str,
    names: list[str],
    device: torch.device,
    dtype: torch.dtype,
    reps: int,
    warmup: int,
    cuda_graph: bool,
    timer: Timer,
    copy_bytes: int,
) -> dict:
    description, shape_fn = SIZES[size]
    shapes = shape_fn()
    numel = sum(math.prod(s) for s in shapes)
    _log(f"size {size}: {numel:,} params in {len(shapes)} tensors ({description}), {reps} rounds")
    gen = torch.Generator(device="cpu").manual_seed(0)
    grads = [torch.randn(s, generator=gen).to(device=device, dtype=dtype) for s in shapes]

    contenders: list[Contender] = []
    skipped: dict[str, str] = {}
    for name in names:
        spec = OPTIMIZERS[name]
        t0 = time.perf_counter()
        try:
            contenders.append(_build(spec, shapes, grads, cuda_graph, warmup))
        except Exception as err:  # noqa: BLE001 - an unavailable path is reported, not fatal
            skipped[name] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
            _log(f"  {name}: skipped ({skipped[name]})")
            continue
        timer.sync()
        _log(f"  {name}: built and warmed up in {time.perf_counter() - t0:.1f} s")

    # Batch steps per sample so that one sample lasts about 2 ms (small models).
    inner = 1
    if contenders:
        fastest = min(timer(c.step) for c in contenders)
        inner = max(1, min(1000, round(2e-3 / max(fastest, 1e-7))))
    # The copy probe takes its turn in every round, so it sees the same machine load.
    probe = CopyProbe(device, copy_bytes)
    turns: list[Contender | None] = [*contenders, None]
    t_start = time.perf_counter()
    for r in range(reps):
        for k in range(len(turns)):  # rotate the order each round
            c = turns[(k + r) % len(turns)]
            if c is None:
                probe.gbs.append(probe.bytes / timer(probe) / 1e9)
            else:
                c.times.append(timer(c.step, inner) / inner)
        if time.perf_counter() - t_start > 10 and (r + 1) % max(1, reps // 10) == 0:
            _log(f"  round {r + 1}/{reps}")

    copy_gbs = probe.gbs
    del probe, turns
    param_bytes = sum(g.nbytes for g in grads)
    rows = []
    for c in contenders:
        state_bytes = _state_bytes(c.opt)
        # the counting mode slows the step, so it runs once, after the timed rounds
        temp_bytes = _cpu_temporaries(c) if device.type == "cpu" else None
        rows.append(
            {
                "optimizer": c.spec.name,
                "label": c.spec.label,
                "mode": c.mode,
                "times_s": c.times,
                "state_bytes": state_bytes,
                # CPU: params + grads + state + measured temporaries; CUDA: replaced below.
                "peak_bytes": 2 * param_bytes + state_bytes + (temp_bytes or 0),
                "temp_bytes": temp_bytes,
                "peak_measured": False,
                "model_bytes_per_param": model_bytes_per_param(c.spec.family, dtype),
            }
        )
    if device.type == "cuda":
        modes = [(c.spec, c.mode == "cuda graph") for c in contenders]
        del contenders[:], c  # free every copy so that each peak is measured alone
        for row, (spec, graphed) in zip(rows, modes):
            row["peak_bytes"] = _peak_cuda(spec, shapes, grads, graphed, warmup)
            row["peak_measured"] = True
    return {
        "size": size,
        "description": description,
        "numel": numel,
        "tensors": len(shapes),
        "reps": reps,
        "steps_per_sample": inner,
        "copy_gbs_samples": copy_gbs,
        "copy_gbs": statistics.median(copy_gbs),
        "rows": rows,
        "skipped": skipped,
    }


# ----------------------------------------------------------------------------- report


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def summarize(size_result: dict) -> None:
    """Add medians, ratios, GB/s and % of copy bandwidth to each row (in place)."""
    rows = size_result["rows"]
    base = next((r for r in rows if r["optimizer"] == "adamw-fused"), None)
    for r in rows:
        q1, med, q3 = _quartiles(r["times_s"])
        r.update(median_s=med, p25_s=q1, p75_s=q3)
        r["gb_per_s"] = r["model_bytes_per_param"] * size_result["numel"] / med / 1e9
        r["pct_copy"] = 100 * r["gb_per_s"] / size_result["copy_gbs"]
    for r in rows:
        r["x_adamw_fused"] = r["median_s"] / base["median_s"] if base else None


def paired_ratio(size_result: dict, a: str, b: str) -> tuple[float, float] | None:
    """(ratio of medians, median of per-round ratios) of optimizer a's time over b's."""
    rows = {r["optimizer"]: r for r in size_result["rows"]}
    if a not in rows or b not in rows:
        return None
    ta, tb = rows[a]["times_s"], rows[b]["times_s"]
    per_round = statistics.median(x / y for x, y in zip(ta, tb))
    return rows[a]["median_s"] / rows[b]["median_s"], per_round


# (size, optimizer, baseline, limit, device type): performance targets of the project.
TARGETS = [
    ("30m", "adan", "adamw-fused", 1.8, "cpu"),
    ("ppo", "adan", "adam-foreach", 1.5, "cpu"),
]


def target_lines(results: list[dict], device: torch.device, dtype: str) -> list[str]:
    if dtype != "fp32":
        return [f"- the targets are defined for fp32; this run used {dtype}"]
    lines = []
    by_size = {r["size"]: r for r in results}
    for size, a, b, limit, dev in TARGETS:
        if dev != device.type:
            continue
        ratio = paired_ratio(by_size[size], a, b) if size in by_size else None
        if ratio is None:
            lines.append(f"- {size}: `{a}` <= {limit}x `{b}`: not measured in this run")
            continue
        of_medians, per_round = ratio
        verdict = (
            "MET" if of_medians <= limit else f"MISSED by {100 * (of_medians / limit - 1):.0f}%"
        )
        lines.append(
            f"- {size}: `{a}` <= {limit}x `{b}` ({dev}): **{verdict}**, {of_medians:.2f}x "
            f"(ratio of medians; median of per-round ratios {per_round:.2f}x)"
        )
    return lines or [f"- no targets are defined for device type {device.type!r}"]


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def render(meta: dict, results: list[dict]) -> str:
    cuda = meta["device"].startswith("cuda")
    out = [
        "## Optimizer step benchmark",
        "",
        f"- command: `{meta['command']}`",
        f"- machine: {meta['machine']}",
        f"- torch {meta['torch']}, Python {meta['python']}, {meta['threads']} torch threads",
        f"- date: {meta['date']}",
        f"- device: {meta['device']}, dtype {meta['dtype']}, "
        f"timing: {'CUDA events' if cuda else 'time.perf_counter'}, medians over interleaved "
        "rounds",
        f"- load average (1 min) at start / end: {meta['load_start']} / {meta['load_end']}",
        f"- copy bandwidth: `dst.copy_(src)` of a {meta['copy_mib']} MiB buffer (read + write "
        "bytes counted), timed once in every round of every size, median per size",
        "- GB/s = useful bytes of the one-pass model (Adan "
        f"{model_bytes_per_param('adan', DTYPES[meta['dtype']])} B/param, Adam/AdamW "
        f"{model_bytes_per_param('adam', DTYPES[meta['dtype']])} B/param) / median step time; "
        "foreach and single-tensor paths move more bytes than they are credited with",
        "- state MiB = sum of optimizer state tensor bytes; peak MiB = "
        + (
            "torch.cuda.max_memory_allocated during one steady-state step of that optimizer "
            "alone (params + grads + state + step temporaries)"
            if cuda
            else "params + grads + state + temp MiB; temp MiB = peak bytes of the tensors one "
            "steady-state step allocates (tools/memtrack.py, counted at the dispatcher)"
        ),
    ]
    if meta.get("official_skipped"):
        out.append(f"- official Adan skipped: {meta['official_skipped']}")
    for res in results:
        out += [
            "",
            f"### {res['size']}: {res['numel']:,} params in {res['tensors']} tensors",
            "",
            f"{res['description']}; {res['reps']} rounds, {res['steps_per_sample']} step(s) "
            f"per sample; copy bandwidth in these rounds: {res['copy_gbs']:.1f} GB/s.",
            "",
            "| optimizer | mode | median ms | p25-p75 ms | x AdamW fused | GB/s | % copy "
            "| state MiB | peak MiB | temp MiB |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in res["rows"]:
            out.append(
                f"| {r['label']} | {r['mode']} | {1e3 * r['median_s']:.3f} "
                f"| {1e3 * r['p25_s']:.3f}-{1e3 * r['p75_s']:.3f} "
                f"| {_fmt(r['x_adamw_fused'], '.2f')} | {r['gb_per_s']:.1f} "
                f"| {r['pct_copy']:.0f} | {r['state_bytes'] / MIB:.1f} "
                f"| {r['peak_bytes'] / MIB:.1f} "
                f"| {_fmt(r['temp_bytes'] and r['temp_bytes'] / MIB, '.1f')} |"
            )
        for name, why in res["skipped"].items():
            out.append(f"\nSkipped `{name}`: {why}")
    out += [
        "",
        "### Targets",
        "",
        *target_lines(results, torch.device(meta["device"]), meta["dtype"]),
        "",
    ]
    return "\n".join(out)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _loadavg() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "n/a"


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (host: {platform.processor() or 'unknown'})"
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            model = names[0]
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    ap.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="device to benchmark on, e.g. cpu, cuda, cuda:1 (default: cuda if available, else "
        "cpu)",
    )
    ap.add_argument(
        "--sizes",
        default="ppo,1m,10m,30m",
        help="comma-separated model sizes, from: "
        + "; ".join(f"{k} = {v[0]}" for k, v in SIZES.items())
        + " (default: ppo,1m,10m,30m)",
    )
    ap.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="fp32",
        help="dtype of parameters, gradients and optimizer state (default: fp32)",
    )
    ap.add_argument(
        "--optimizers",
        default=",".join(DEFAULT_OPTIMIZERS),
        help="comma-separated optimizers, from: "
        + ", ".join(f"{k} ({v.label})" for k, v in OPTIMIZERS.items())
        + ". Paths that cannot run here (official-adan not installed, adan-fused without CUDA) "
        "are skipped with the reason printed. Drop adan-single for big sizes: it is slow. "
        "(default: %(default)s)",
    )
    ap.add_argument(
        "--reps",
        type=int,
        default=None,
        help="timed rounds per size; each round times every optimizer once (default: per size, "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_REPS.items())
        + ")",
    )
    ap.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="untimed steps per optimizer before timing; the first step of the default CPU Adan "
        "compiles its kernel (default: 3)",
    )
    ap.add_argument(
        "--cuda-graph",
        action="store_true",
        help="CUDA only: capture each optimizer's step in a CUDA graph (capturable=True) and time "
        "graph replays; removes launch overhead, which dominates small models. Optimizers that "
        "cannot be captured are timed eagerly, with the reason printed",
    )
    ap.add_argument(
        "--copy-mib",
        type=int,
        default=None,
        help="size of the buffer for the copy-bandwidth measurement (default: 256 on CPU, 1024 "
        "on CUDA; large enough to exceed the caches)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (torch.set_num_threads); default: torch's default, which is "
        "the number of cores",
    )
    ap.add_argument("--out", type=Path, help="also write the markdown report to this file (atomic)")
    ap.add_argument("--json", type=Path, help="write all raw samples and results as JSON (atomic)")
    args = ap.parse_args(argv)

    args.sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in args.sizes if s not in SIZES]
    if bad or not args.sizes:
        ap.error(f"unknown size(s) {bad}; choose from {', '.join(SIZES)}")
    args.optimizers = [o.strip().lower() for o in args.optimizers.split(",") if o.strip()]
    bad = [o for o in args.optimizers if o not in OPTIMIZERS]
    if bad or not args.optimizers:
        ap.error(f"unknown optimizer(s) {bad}; choose from {', '.join(OPTIMIZERS)}")
    if args.reps is not None and args.reps < 1:
        ap.error(f"--reps must be >= 1, got {args.reps}")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads must be >= 1, got {args.threads}")
    if args.warmup < 0:
        ap.error(f"--warmup must be >= 0, got {args.warmup}")
    try:
        args.device = torch.device(args.device)
    except RuntimeError as err:
        ap.error(f"invalid --device {args.device!r}: {err}")
    if args.device.type not in ("cpu", "cuda"):
        ap.error(f"--device must be cpu or cuda[:N], got {args.device}")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda requested but torch.cuda.is_available() is False; use --device cpu")
    if args.cuda_graph and args.device.type != "cuda":
        ap.error("--cuda-graph needs --device cuda")
    if args.copy_mib is None:
        args.copy_mib = 1024 if args.device.type == "cuda" else 256
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device, dtype = args.device, DTYPES[args.dtype]
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    timer = Timer(device)
    if "official-adan" in args.optimizers:
        _, why = _official_adan()
        if why:
            _log(f"official-adan: skipped: {why}")

    load_start = _loadavg()
    results = []
    for size in args.sizes:
        reps = args.reps if args.reps is not None else DEFAULT_REPS[size]
        results.append(
            bench_size(
                size,
                args.optimizers,
                device,
                dtype,
                reps,
                args.warmup,
                args.cuda_graph,
                timer,
                args.copy_mib * MIB,
            )
        )
    for res in results:
        summarize(res)

    command = " ".join(
        ["python", os.path.relpath(__file__)]
        + [json.dumps(a) if " " in a else a for a in sys.argv[1:]]
    )
    meta = {
        "command": command if argv is None else "bench_optim.main(" + repr(argv) + ")",
        "machine": _machine(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "device": str(device),
        "dtype": args.dtype,
        "copy_mib": args.copy_mib,
        "load_start": load_start,
        "load_end": _loadavg(),
        "official_skipped": _official_adan()[1] if "official-adan" in args.optimizers else "",
    }
    report = render(meta, results)
    print(report)
    if args.out:
        _write_atomic(args.out, report)
        _log(f"wrote {args.out}")
    if args.json:
        payload = {"meta": meta, "sizes": results}
        _write_atomic(args.json, json.dumps(payload, indent=1) + "\n")
        _log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
