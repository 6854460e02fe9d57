"""Fused multi-tensor Adan in Triton: one pass over memory, 44 B/param in fp32.

One launch covers the tensors of one bucket (one device, and one dtype per role: params P, grads G,
states S for exp_avg / exp_avg_sq / exp_avg_diff, previous gradient N). The host builds two small
tables, cached while the tensors keep their addresses:

* ``ptrs[T, 7]``: addresses of p, grad, exp_avg, exp_avg_sq, exp_avg_diff, neg_pre_grad and the
  per-parameter step (fp32 on the device);
* ``blocks[B, 3]``: for each program, the tensor index, the first element it covers, and whether
  the block is "fast": full (no tail) and in a tensor whose six data pointers are 16-byte aligned.
  Fast blocks load and store without masks and with alignment hints, so they compile to 128-bit
  accesses; tails and tensors at odd storage offsets (views) take the masked scalar path.

Each program reads p, g, m, n, d and the previous gradient once, and writes p, m, n, d and the
previous gradient once; the grad is never written. Bytes moved per parameter per step are
``reads = P + G + 3S + N`` and ``writes = P + 3S + N`` (element sizes; fp16 counts as bf16):

    P    | G    | S    | N    | B/param/step
    fp32 | fp32 | fp32 | fp32 | 44
    fp32 | bf16 | fp32 | bf16 | 38   (fp32 master weights, bf16 grads)
    fp32 | fp32 | bf16 | bf16 | 28   (bf16 state kept for fp32 params)
    fp32 | fp32 | bf16 | fp32 | 32
    bf16 | bf16 | bf16 | bf16 | 22
    bf16 | bf16 | fp32 | bf16 | 34   (fp32 state kept after model.to(torch.bfloat16))
    bf16 | bf16 | fp32 | fp32 | 38   (Adan(state_dtype=torch.float32) on bf16/fp16 params)

plus 4 B of step per tensor and 24 B of block table per 1024 elements.

The step rule: the kernel reads each parameter's step and updates with ``t = step + 1``; the host
adds one to the steps only after the launch, and leaves them unchanged when ``found_inf`` is set.
Every specialisation a call needs is compiled before the first launch, and nothing the caller
owns is written before then, so a compile error leaves every tensor (steps included) unchanged.

Scalars that may change without recompiling (lr as a tensor, clip factor, AMP scale and
found_inf) are read through pointers, so the launch needs no host sync and can be captured in a
CUDA graph. With ``TRITON_INTERPRET=1`` the same kernel runs on CPU tensors, which is how CI tests
it; :func:`ptx_for` compiles it offline for a CUDA target to inspect the generated PTX.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._grouping import bucketize
from ._layout import dense_same_layout
from .functional import AdanHyper

BLOCK = 1024
MAX_TENSORS_PER_LAUNCH = 4096  # bounds the size of the host-built tables
ALIGN_BYTES = 16  # one 128-bit access; torch allocations are at least this aligned
MIN_CUDA_CAPABILITY = (7, 0)  # the oldest NVIDIA architecture Triton generates code for

_TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}
SUPPORTED_DTYPES = tuple(_TL_DTYPES)
ROLES = ("param", "grad", "exp_avg", "neg_pre_grad")  # the roles P, G, S, N of a bucket key


@triton.jit
def _load_f32(ptrs, mask, MASKED: tl.constexpr):
    if MASKED:
        x = tl.load(ptrs, mask=mask, other=0.0)
    else:
        x = tl.load(ptrs)
    return x.to(tl.float32)


@triton.jit
def _store(ptrs, mask, x, MASKED: tl.constexpr):
    if MASKED:
        tl.store(ptrs, x.to(ptrs.dtype.element_ty), mask=mask)
    else:
        tl.store(ptrs, x.to(ptrs.dtype.element_ty))


@triton.jit
def _adan_block(
    p_ptrs,
    g_ptrs,
    m_ptrs,
    n_ptrs,
    d_ptrs,
    neg_ptrs,
    mask,
    g_scale,
    keep_prev,
    lr,
    wd,
    b1,
    b2,
    b3,
    eps,
    bc1,
    bc2,
    inv_sqrt_bc3,
    NO_PROX: tl.constexpr,
    MASKED: tl.constexpr,
):
    """One block of the update in fp32, each result rounded once into its role's dtype."""
    g = _load_f32(g_ptrs, mask, MASKED) * g_scale
    neg = _load_f32(neg_ptrs, mask, MASKED)
    m = _load_f32(m_ptrs, mask, MASKED)
    n = _load_f32(n_ptrs, mask, MASKED)
    d = _load_f32(d_ptrs, mask, MASKED)
    p = _load_f32(p_ptrs, mask, MASKED)

    delta = (g + neg) * keep_prev
    m = b1 * m + (1.0 - b1) * g
    d = b2 * d + (1.0 - b2) * delta
    nest = g + b2 * delta
    n = b3 * n + (1.0 - b3) * nest * nest
    den = tl.sqrt(n) * inv_sqrt_bc3 + eps
    u = (m / bc1 + b2 * d / bc2) / den
    if NO_PROX:
        p = p * (1.0 - lr * wd) - lr * u
    else:
        p = (p - lr * u) / (1.0 + lr * wd)

    _store(p_ptrs, mask, p, MASKED)
    _store(m_ptrs, mask, m, MASKED)
    _store(n_ptrs, mask, n, MASKED)
    _store(d_ptrs, mask, d, MASKED)
    _store(neg_ptrs, mask, -g, MASKED)


@triton.jit
def _aligned(ptr, offs, BLOCK: tl.constexpr):
    # The host sends a block down the fast path only if all six data pointers are 16-byte aligned
    # and the block is full. Triton cannot see that through the pointer table, so it is told; the
    # hint goes on this addition, which only the fast path uses.
    return tl.max_contiguous(tl.multiple_of(ptr + offs, 16), BLOCK)


@triton.jit
def _adan_kernel(
    ptrs,
    numels,
    blocks,
    lr_ptr,
    lr_val,
    log2_b1,
    log2_b2,
    log2_b3,
    b1,
    b2,
    b3,
    eps,
    wd,
    gmul_ptr,
    found_inf_ptr,
    P_DTYPE: tl.constexpr,
    G_DTYPE: tl.constexpr,
    S_DTYPE: tl.constexpr,
    N_DTYPE: tl.constexpr,
    LR_IS_PTR: tl.constexpr,
    HAS_GMUL: tl.constexpr,
    HAS_FOUND_INF: tl.constexpr,
    NO_PROX: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    if HAS_FOUND_INF:
        if tl.load(found_inf_ptr) != 0:
            return
    pid = tl.program_id(0).to(tl.int64)
    tix = tl.load(blocks + 3 * pid)
    start = tl.load(blocks + 3 * pid + 1)
    fast = tl.load(blocks + 3 * pid + 2)
    row = ptrs + 7 * tix
    p_ptr = tl.load(row).to(tl.pointer_type(P_DTYPE))
    g_ptr = tl.load(row + 1).to(tl.pointer_type(G_DTYPE))
    m_ptr = tl.load(row + 2).to(tl.pointer_type(S_DTYPE))
    n_ptr = tl.load(row + 3).to(tl.pointer_type(S_DTYPE))
    d_ptr = tl.load(row + 4).to(tl.pointer_type(S_DTYPE))
    neg_ptr = tl.load(row + 5).to(tl.pointer_type(N_DTYPE))
    # This update is step t = step + 1; the host increments the stored step after the launch.
    t = tl.load(tl.load(row + 6).to(tl.pointer_type(tl.float32))) + 1.0
    numel = tl.load(numels + tix)

    if LR_IS_PTR:
        lr = tl.load(lr_ptr).to(tl.float32)
    else:
        lr = lr_val
    g_scale = 1.0
    if HAS_GMUL:
        g_scale = tl.load(gmul_ptr).to(tl.float32)
    if MAXIMIZE:
        g_scale = -g_scale
    bc1 = 1.0 - tl.exp2(t * log2_b1)
    bc2 = 1.0 - tl.exp2(t * log2_b2)
    inv_sqrt_bc3 = 1.0 / tl.sqrt(1.0 - tl.exp2(t * log2_b3))
    keep_prev = tl.where(t == 1.0, 0.0, 1.0)

    offs = start + tl.arange(0, BLOCK)
    if fast != 0:
        _adan_block(
            _aligned(p_ptr, offs, BLOCK),
            _aligned(g_ptr, offs, BLOCK),
            _aligned(m_ptr, offs, BLOCK),
            _aligned(n_ptr, offs, BLOCK),
            _aligned(d_ptr, offs, BLOCK),
            _aligned(neg_ptr, offs, BLOCK),
            None,
            g_scale,
            keep_prev,
            lr,
            wd,
            b1,
            b2,
            b3,
            eps,
            bc1,
            bc2,
            inv_sqrt_bc3,
            NO_PROX,
            False,
        )
    else:
        _adan_block(
            p_ptr + offs,
            g_ptr + offs,
            m_ptr + offs,
            n_ptr + offs,
            d_ptr + offs,
            neg_ptr + offs,
            offs < numel,
            g_scale,
            keep_prev,
            lr,
            wd,
            b1,
            b2,
            b3,
            eps,
            bc1,
            bc2,
            inv_sqrt_bc3,
            NO_PROX,
            True,
        )


# --- readiness ---------------------------------------------------------------------------------


def interpreter_enabled() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def unavailable_reason(device: torch.device) -> str | None:
    """Why the fused kernel cannot run on ``device``, or None if it can.

    CUDA devices need compute capability 7.0 or newer (what Triton generates code for); CPU
    tensors run only under the interpreter, for tests.
    """
    if device.type == "cuda":
        return _cuda_unavailable_reason(device)
    if device.type == "cpu" and interpreter_enabled():
        return None
    return (
        f"the fused Triton kernel runs on CUDA devices (or on CPU with TRITON_INTERPRET=1, for "
        f"testing); these tensors are on {device.type!r}"
    )


def _cuda_unavailable_reason(device: torch.device) -> str | None:
    try:
        major, minor = torch.cuda.get_device_capability(device)
    except Exception as err:  # no driver, bad index, CPU-only torch build...
        return f"cannot query CUDA device {device} ({type(err).__name__}: {err})"
    if (major, minor) < MIN_CUDA_CAPABILITY:
        need = ".".join(map(str, MIN_CUDA_CAPABILITY))
        return f"{device} has compute capability {major}.{minor}; Triton needs {need} or newer"
    return None


_probe_cache: dict[tuple, str | None] = {}


def compile_failure(
    device: torch.device,
    dtypes: tuple[torch.dtype, torch.dtype, torch.dtype, torch.dtype],
    *,
    lr_is_tensor: bool = False,
    has_grad_mul: bool = False,
    has_found_inf: bool = False,
    no_prox: bool = False,
    maximize: bool = False,
) -> str | None:
    """Compile (and run once, on tiny private tensors) the kernel specialisation a bucket needs.

    Args:
        device: the bucket's device.
        dtypes: (P, G, S, N): param, grad, state (exp_avg, exp_avg_sq, exp_avg_diff) and
            neg_pre_grad dtypes.
        lr_is_tensor, has_grad_mul, has_found_inf, no_prox, maximize: the flags that select a
            specialisation (lr a tensor; a grad_mul tensor; a found_inf tensor; the group's
            no_prox and maximize).

    Returns:
        None if the kernel is ready, else the first line of the error ("TypeName: message").
        Cached per (device, dtypes, flags): the probe runs once per process and key. Call it
        outside CUDA-graph capture (e.g. in the eager warm-up step); during capture an uncached
        key is only compiled, not run.
    """
    device = _canonical(torch.device(device))
    flags = tuple(map(bool, (lr_is_tensor, has_grad_mul, has_found_inf, no_prox, maximize)))
    key = (device, tuple(dtypes), *flags)
    if key not in _probe_cache:
        try:
            _probe(device, tuple(dtypes), *flags)
            _probe_cache[key] = None
        except Exception as err:
            _probe_cache[key] = _first_line(err)
    return _probe_cache[key]


def _canonical(device: torch.device) -> torch.device:
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _first_line(err: Exception) -> str:
    # Triton's CompilationError puts the source excerpt first and the message in error_message.
    text = getattr(err, "error_message", None) or str(err) or repr(err)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:500]


def _probe(device, dtypes, lr_is_tensor, has_grad_mul, has_found_inf, no_prox, maximize) -> None:
    if len(dtypes) != 4:
        raise TypeError(f"dtypes must be (param, grad, state, neg_pre_grad), got {dtypes}")
    p_dtype, g_dtype, s_dtype, n_dtype = dtypes
    numel = BLOCK + 1  # one fast block and one tail
    p = torch.zeros(numel, dtype=p_dtype, device=device)
    g = torch.ones(numel, dtype=g_dtype, device=device)
    states = [torch.zeros(numel, dtype=s_dtype, device=device) for _ in range(3)]
    neg = torch.zeros(numel, dtype=n_dtype, device=device)
    step = torch.zeros((), dtype=torch.float32, device=device)

    def scalar(flag, value):
        return torch.tensor(value, dtype=torch.float32, device=device) if flag else None

    lr = scalar(lr_is_tensor, 1e-3)
    hp = AdanHyper(1e-3 if lr is None else lr, (0.98, 0.92, 0.99), 1e-8, 0.0, no_prox, maximize)
    lists = ([p], [g], *([s] for s in states), [neg], [step])
    plans = _plan(*lists, hp, scalar(has_grad_mul, 1.0), scalar(has_found_inf, 0.0))
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    _run(plans, launch=not capturing)
    if device.type == "cuda" and not capturing:
        torch.cuda.synchronize(device)  # an asynchronous fault shows up here, not in training


def ptx_for(
    dtypes: tuple[torch.dtype, torch.dtype, torch.dtype, torch.dtype],
    *,
    capability: int = 90,
    warp_size: int = 32,
    **flags: bool,
) -> str:
    """PTX of the kernel compiled offline for ``sm_<capability>`` (no GPU needed).

    Needs ``TRITON_INTERPRET`` unset in this process (the interpreter replaces ``triton.jit``).
    ``flags`` are :func:`compile_failure`'s flags (lr_is_tensor, has_grad_mul, ...).
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    constexprs = _constexprs(dtypes, **flags)
    pointers = {
        "ptrs": "*i64",
        "numels": "*i64",
        "blocks": "*i64",
        "lr_ptr": "*fp32",
        "gmul_ptr": "*fp32",
        "found_inf_ptr": "*fp32",
    }
    names = _adan_kernel.arg_names
    signature = {n: "constexpr" if n in constexprs else pointers.get(n, "fp32") for n in names}
    # Launches specialise 16-byte aligned pointer arguments; mirror that for the table pointers.
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in pointers}
    src = ASTSource(_adan_kernel, signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", capability, warp_size))
    return compiled.asm["ptx"]


# --- host side ----------------------------------------------------------------------------------

_table_cache: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}
_TABLE_CACHE_SIZE = 64


def _tables(rows: list[tuple[int, ...]], numels: list[int], device: torch.device):
    """The (ptrs, numels, blocks) tables of one launch, cached by addresses and sizes."""
    key = (device, tuple(rows), tuple(numels))
    hit = _table_cache.get(key)
    if hit is not None:
        return hit
    numel_t = torch.tensor(numels, dtype=torch.int64)
    counts = (numel_t + BLOCK - 1) // BLOCK
    full = numel_t // BLOCK
    aligned = torch.tensor([all(a % ALIGN_BYTES == 0 for a in row[:6]) for row in rows])
    tensor_ids = torch.repeat_interleave(torch.arange(len(numels)), counts)
    first_block = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    local = torch.arange(len(tensor_ids)) - first_block
    fast = (aligned[tensor_ids] & (local < full[tensor_ids])).to(torch.int64)
    blocks = torch.stack([tensor_ids, local * BLOCK, fast], 1).contiguous()
    ptrs = torch.tensor(rows, dtype=torch.int64)
    out = tuple(x.to(device, non_blocking=True) for x in (ptrs, numel_t, blocks))
    if len(_table_cache) >= _TABLE_CACHE_SIZE:
        _table_cache.pop(next(iter(_table_cache)))
    _table_cache[key] = out
    return out


def _scalar_on(t: Tensor | None, device: torch.device, name: str) -> Tensor | None:
    """A scalar the kernel reads through a pointer, as fp32 on the params' device.

    torch's fused AdamW moves found_inf and the grad scale the same way. One dtype (fp32) keeps
    the launch on the specialisation :func:`compile_failure` probed (a pointer's dtype is part of
    Triton's signature); a scalar already fp32 on the device is used as is, with no copy.
    """
    if t is None:
        return None
    if t.numel() != 1:
        raise ValueError(f"{name} must be a 0-d tensor, got shape {tuple(t.shape)}")
    if t.device == device and t.dtype == torch.float32:
        return t
    # non_blocking only towards CUDA: a non-blocking copy to the host may not be done when read.
    return t.to(device, torch.float32, non_blocking=device.type == "cuda")


_dummies: dict[torch.device, Tensor] = {}


def _dummy(device: torch.device) -> Tensor:
    """A private aligned pointer for absent scalars (never read: its constexpr flag is off)."""
    if device not in _dummies:
        _dummies[device] = torch.zeros((), dtype=torch.float32, device=device)
    return _dummies[device]


def _bucket_key(i: int, tensors: tuple[Tensor, ...]) -> tuple:
    """(device, P, G, S, N) of parameter ``i``, or a clear error if its tensors disagree."""
    p, g, m, n, d, neg, step = tensors
    names = ("grad", "exp_avg", "exp_avg_sq", "exp_avg_diff", "neg_pre_grad")
    for name, t in zip(names, tensors[1:6]):
        if t.device != p.device:
            raise ValueError(
                f"fused Adan: parameter {i}'s {name} is on {t.device}, its param on {p.device}; "
                f"all of a parameter's tensors must be on one device"
            )
        if t.numel() != p.numel():
            raise ValueError(
                f"fused Adan: parameter {i}'s {name} has {t.numel()} elements, its param "
                f"{p.numel()}"
            )
    if step.device != p.device:
        raise ValueError(
            f"state_steps must be on the params' device ({p.device}); got {step.device}"
        )
    if step.dtype != torch.float32 or step.numel() != 1:
        raise TypeError(
            f"state_steps must be float32 0-d tensors (parameter {i}: {step.dtype}, shape "
            f"{tuple(step.shape)})"
        )
    if not m.dtype == n.dtype == d.dtype:
        raise TypeError(
            f"fused Adan needs one state dtype per parameter; parameter {i} has exp_avg "
            f"{m.dtype}, exp_avg_sq {n.dtype}, exp_avg_diff {d.dtype}"
        )
    dtypes = (p.dtype, g.dtype, m.dtype, neg.dtype)
    for role, dt in zip(ROLES, dtypes):
        if dt not in _TL_DTYPES:
            raise TypeError(
                f"fused Adan supports {[str(x) for x in SUPPORTED_DTYPES]} tensors; parameter "
                f"{i}'s {role} is {dt} (param/grad/exp_avg/neg_pre_grad dtypes: "
                f"{', '.join(map(str, dtypes))}); use foreach=True for it"
            )
    return (p.device, *dtypes)


def _constexprs(
    dtypes: Sequence[torch.dtype],
    *,
    lr_is_tensor: bool = False,
    has_grad_mul: bool = False,
    has_found_inf: bool = False,
    no_prox: bool = False,
    maximize: bool = False,
) -> dict:
    """The compile-time arguments of one specialisation."""
    p_dtype, g_dtype, s_dtype, n_dtype = (_TL_DTYPES[dt] for dt in dtypes)
    return dict(
        P_DTYPE=p_dtype,
        G_DTYPE=g_dtype,
        S_DTYPE=s_dtype,
        N_DTYPE=n_dtype,
        LR_IS_PTR=lr_is_tensor,
        HAS_GMUL=has_grad_mul,
        HAS_FOUND_INF=has_found_inf,
        NO_PROX=no_prox,
        MAXIMIZE=maximize,
        BLOCK=BLOCK,
    )


@dataclass
class _Launch:
    """Everything one kernel launch needs, prepared before anything is written."""

    device: torch.device
    grid: tuple[int]
    args: tuple
    constexprs: dict
    steps: list[Tensor]
    found_inf: Tensor | None
    write_back: list[tuple[tuple[Tensor, ...], tuple[Tensor, ...]]] = field(default_factory=list)
    # dense copies the kernel only reads (a strided grad): the table holds their raw addresses,
    # so the plan must keep them alive until the launch
    read_only: list[Tensor] = field(default_factory=list)


def fused_adan(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    exp_avg_diffs: Sequence[Tensor],
    neg_pre_grads: Sequence[Tensor],
    state_steps: Sequence[Tensor],
    hp: AdanHyper,
    grad_mul: Tensor | None,
    found_inf: Tensor | None,
) -> None:
    """Run the fused kernel over one param group: a launch per (device, P, G, S, N) and chunk.

    Validates everything and compiles every specialisation first; only then launches, and adds
    one to each launched parameter's step after its launch (none when ``found_inf`` is nonzero).
    ``grad_mul``, ``found_inf`` and a tensor ``hp.lr`` are moved to the params' device if needed;
    ``state_steps`` must already be there (they are the caller's state).
    """
    lists = (params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads, state_steps)
    _run(_plan(*lists, hp, grad_mul, found_inf), launch=True)


def _plan(params, grads, ms, ns, ds, negs, steps, hp, grad_mul, found_inf) -> list[_Launch]:
    """Group, validate and prepare every launch of a call; reads but never writes."""
    lists = (params, grads, ms, ns, ds, negs, steps)
    buckets = bucketize(lists, lambda i: _bucket_key(i, tuple(seq[i] for seq in lists)))
    plans = []
    for (device, *dtypes), bucket in buckets.items():
        lr = _scalar_on(hp.lr, device, "lr") if isinstance(hp.lr, Tensor) else hp.lr
        mul = _scalar_on(grad_mul, device, "grad_mul")
        inf = _scalar_on(found_inf, device, "found_inf")
        flags = dict(
            lr_is_tensor=isinstance(lr, Tensor),
            has_grad_mul=mul is not None,
            has_found_inf=inf is not None,
            no_prox=hp.no_prox,
            maximize=hp.maximize,
        )
        constexprs = _constexprs(dtypes, **flags)
        for start in range(0, len(bucket[0]), MAX_TENSORS_PER_LAUNCH):
            tensors = [seq[start : start + MAX_TENSORS_PER_LAUNCH] for seq in bucket]
            plans.append(_plan_launch(device, tensors, constexprs, hp, lr, mul, inf))
    return plans


def _plan_launch(device, tensors, constexprs, hp, lr, mul, inf) -> _Launch:
    """One launch's tables and arguments (dense copies stand in for odd layouts)."""
    plan = _Launch(device, (0,), (), constexprs, tensors[6], inf)
    rows, numels = [], []
    for p, g, m, n, d, neg, step in zip(*tensors):
        if p.numel() == 0:
            continue
        if not dense_same_layout(m, p, g, n, d, neg):
            # Rare layouts (strided views, states saved with other strides): run on dense copies,
            # copied back after the launch.
            originals = (p, m, n, d, neg)
            p, g, m, n, d, neg = (t.contiguous() for t in (p, g, m, n, d, neg))
            plan.write_back.append((originals, (p, m, n, d, neg)))
            plan.read_only.append(g)
        rows.append(tuple(t.data_ptr() for t in (p, g, m, n, d, neg, step)))
        numels.append(p.numel())
    if not rows:
        return plan
    ptrs, numel_t, blocks = _tables(rows, numels, device)
    dummy = _dummy(device)
    lr_is_ptr = isinstance(lr, Tensor)
    plan.grid = (blocks.shape[0],)
    plan.args = (
        ptrs,
        numel_t,
        blocks,
        lr if lr_is_ptr else dummy,
        0.0 if lr_is_ptr else float(lr),
        *(math.log2(b) if b > 0 else -math.inf for b in (hp.b1, hp.b2, hp.b3)),
        hp.b1,
        hp.b2,
        hp.b3,
        hp.eps,
        hp.weight_decay,
        mul if mul is not None else dummy,
        inf if inf is not None else dummy,
    )
    return plan


def _device_context(device: torch.device):
    # Triton launches on the current CUDA device; make it the tensors' one.
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


_compiled: set[tuple] = set()


def _compile_ahead(plan: _Launch) -> None:
    """Compile the plan's specialisation without launching (no-op under the interpreter)."""
    if interpreter_enabled():
        return
    key = (plan.device, tuple(plan.constexprs.items()))
    tensors = [a for a in plan.args if isinstance(a, Tensor)]
    key += tuple((a.dtype, a.data_ptr() % ALIGN_BYTES == 0) for a in tensors)
    if key in _compiled:
        return
    with _device_context(plan.device):
        _adan_kernel.warmup(*plan.args, grid=plan.grid, **plan.constexprs)
    _compiled.add(key)


def _run(plans: list[_Launch], launch: bool) -> None:
    """Compile every plan, then launch each and count its steps (``launch=False``: compile only)."""
    for plan in plans:
        if plan.args:
            _compile_ahead(plan)
    if not launch:
        return
    for plan in plans:
        if plan.args:
            with _device_context(plan.device):
                _adan_kernel[plan.grid](*plan.args, **plan.constexprs)
        for originals, dense in plan.write_back:
            torch._foreach_copy_(list(originals), list(dense))
        if plan.found_inf is None:
            torch._foreach_add_(plan.steps, 1.0)
        else:  # +1 unless the step was skipped, read on the device (no sync)
            torch._foreach_add_(plan.steps, (plan.found_inf == 0).to(torch.float32))
