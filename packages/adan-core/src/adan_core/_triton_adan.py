"""Fused multi-tensor Adan in Triton: one pass, 44 B/param in fp32.

One launch covers every tensor of a (param group, device, dtype) bucket. The host builds two small
tables, cached while the tensors keep their addresses:

* ``ptrs[T, 7]``: addresses of p, grad, exp_avg, exp_avg_sq, exp_avg_diff, neg_pre_grad and the
  per-parameter step (fp32 on the device);
* ``blocks[B, 2]``: for each program, the tensor index and the first element it covers.

Each program reads p, g, m, n, d and the previous gradient once, and writes p, m, n, d and the
previous gradient once. The grad is never written. Scalars that may change without recompiling
(lr as a tensor, clip factor, AMP scale and found_inf) are read through pointers, so the launch
needs no host sync and can be captured in a CUDA graph. With ``TRITON_INTERPRET=1`` the same kernel
runs on CPU tensors, which is how CI tests it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._layout import dense_same_layout
from .functional import AdanHyper

BLOCK = 1024
MAX_TENSORS_PER_LAUNCH = 4096  # bounds the size of the host-built tables

_TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}
SUPPORTED_DTYPES = tuple(_TL_DTYPES)


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
    tix = tl.load(blocks + 2 * pid)
    start = tl.load(blocks + 2 * pid + 1)
    row = ptrs + 7 * tix
    p_ptr = tl.load(row).to(tl.pointer_type(P_DTYPE))
    g_ptr = tl.load(row + 1).to(tl.pointer_type(G_DTYPE))
    m_ptr = tl.load(row + 2).to(tl.pointer_type(P_DTYPE))
    n_ptr = tl.load(row + 3).to(tl.pointer_type(P_DTYPE))
    d_ptr = tl.load(row + 4).to(tl.pointer_type(P_DTYPE))
    neg_ptr = tl.load(row + 5).to(tl.pointer_type(G_DTYPE))
    step = tl.load(tl.load(row + 6).to(tl.pointer_type(tl.float32)))
    numel = tl.load(numels + tix)

    offs = start + tl.arange(0, BLOCK)
    mask = offs < numel

    if LR_IS_PTR:
        lr = tl.load(lr_ptr).to(tl.float32)
    else:
        lr = lr_val
    bc1 = 1.0 - tl.exp2(step * log2_b1)
    bc2 = 1.0 - tl.exp2(step * log2_b2)
    inv_sqrt_bc3 = 1.0 / tl.sqrt(1.0 - tl.exp2(step * log2_b3))
    keep_prev = tl.where(step == 1.0, 0.0, 1.0)

    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_GMUL:
        g = g * tl.load(gmul_ptr).to(tl.float32)
    if MAXIMIZE:
        g = -g
    neg = tl.load(neg_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    m = tl.load(m_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    n = tl.load(n_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    d = tl.load(d_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    p = tl.load(p_ptr + offs, mask=mask, other=0.0).to(tl.float32)

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

    tl.store(p_ptr + offs, p.to(P_DTYPE), mask=mask)
    tl.store(m_ptr + offs, m.to(P_DTYPE), mask=mask)
    tl.store(n_ptr + offs, n.to(P_DTYPE), mask=mask)
    tl.store(d_ptr + offs, d.to(P_DTYPE), mask=mask)
    tl.store(neg_ptr + offs, (-g).to(G_DTYPE), mask=mask)


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def unavailable_reason(device: torch.device) -> str | None:
    """Why the fused kernel cannot run on ``device``, or None if it can."""
    if device.type == "cuda":
        return None
    if device.type == "cpu" and interpreter_enabled():
        return None
    return (
        f"the fused Triton kernel runs on CUDA devices (or on CPU with TRITON_INTERPRET=1, for "
        f"testing); these tensors are on {device.type!r}"
    )


_table_cache: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}
_TABLE_CACHE_SIZE = 64


def _tables(rows: list[tuple[int, ...]], numels: list[int], device: torch.device):
    key = (device, tuple(rows), tuple(numels))
    hit = _table_cache.get(key)
    if hit is not None:
        return hit
    counts = torch.tensor([-(-n // BLOCK) for n in numels], dtype=torch.int64)
    tensor_ids = torch.repeat_interleave(torch.arange(len(numels)), counts)
    first_block = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    starts = (torch.arange(len(tensor_ids)) - first_block) * BLOCK
    blocks = torch.stack([tensor_ids, starts], 1).contiguous()
    ptrs = torch.tensor(rows, dtype=torch.int64)
    numel_t = torch.tensor(numels, dtype=torch.int64)
    out = tuple(x.to(device, non_blocking=True) for x in (ptrs, numel_t, blocks))
    if len(_table_cache) >= _TABLE_CACHE_SIZE:
        _table_cache.pop(next(iter(_table_cache)))
    _table_cache[key] = out
    return out


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
    """Run the fused kernel over one param group: a launch per (device, param dtype, grad dtype)."""
    buckets: dict[tuple, list[int]] = {}
    for i, (p, g) in enumerate(zip(params, grads)):
        buckets.setdefault((p.device, p.dtype, g.dtype), []).append(i)
    for (device, p_dtype, g_dtype), idx in buckets.items():
        if p_dtype not in _TL_DTYPES or g_dtype not in _TL_DTYPES:
            raise TypeError(
                f"fused Adan supports {[str(d) for d in SUPPORTED_DTYPES]} params and grads, got "
                f"{p_dtype}/{g_dtype}; use foreach=True for this group"
            )
        for chunk_start in range(0, len(idx), MAX_TENSORS_PER_LAUNCH):
            chunk = idx[chunk_start : chunk_start + MAX_TENSORS_PER_LAUNCH]
            _launch(
                [params[i] for i in chunk],
                [grads[i] for i in chunk],
                [exp_avgs[i] for i in chunk],
                [exp_avg_sqs[i] for i in chunk],
                [exp_avg_diffs[i] for i in chunk],
                [neg_pre_grads[i] for i in chunk],
                [state_steps[i] for i in chunk],
                device,
                p_dtype,
                g_dtype,
                hp,
                grad_mul,
                found_inf,
            )


def _launch(ps, gs, ms, ns, ds, negs, steps, device, p_dtype, g_dtype, hp, grad_mul, found_inf):
    torch._foreach_add_(steps, 1)
    rows, numels, write_back = [], [], []
    for i, (p, g, m, n, d, neg) in enumerate(zip(ps, gs, ms, ns, ds, negs)):
        if p.numel() == 0:
            continue
        if not dense_same_layout(m, p, g, n, d, neg):
            # Rare layouts (strided views, states saved with other strides): run on dense copies.
            originals = (p, m, n, d, neg)
            p, g, m, n, d, neg = (t.contiguous() for t in (p, g, m, n, d, neg))
            write_back.append((originals, (p, m, n, d, neg)))
        rows.append(
            (
                p.data_ptr(),
                g.data_ptr(),
                m.data_ptr(),
                n.data_ptr(),
                d.data_ptr(),
                neg.data_ptr(),
                steps[i].data_ptr(),
            )
        )
        numels.append(p.numel())
    if rows:
        ptrs, numel_t, blocks = _tables(rows, numels, device)
        lr = hp.lr
        lr_is_ptr = isinstance(lr, Tensor)
        dummy = steps[0]
        grid = (blocks.shape[0],)
        _adan_kernel[grid](
            ptrs,
            numel_t,
            blocks,
            lr if lr_is_ptr else dummy,
            0.0 if lr_is_ptr else float(lr),
            math.log2(hp.b1) if hp.b1 > 0 else -math.inf,
            math.log2(hp.b2) if hp.b2 > 0 else -math.inf,
            math.log2(hp.b3) if hp.b3 > 0 else -math.inf,
            hp.b1,
            hp.b2,
            hp.b3,
            hp.eps,
            hp.weight_decay,
            grad_mul if grad_mul is not None else dummy,
            found_inf if found_inf is not None else dummy,
            P_DTYPE=_TL_DTYPES[p_dtype],
            G_DTYPE=_TL_DTYPES[g_dtype],
            LR_IS_PTR=lr_is_ptr,
            HAS_GMUL=grad_mul is not None,
            HAS_FOUND_INF=found_inf is not None,
            NO_PROX=hp.no_prox,
            MAXIMIZE=hp.maximize,
            BLOCK=BLOCK,
        )
    for originals, dense in write_back:
        torch._foreach_copy_(list(originals), list(dense))
    if found_inf is not None:
        torch._foreach_sub_(steps, found_inf.to(steps[0].dtype))
