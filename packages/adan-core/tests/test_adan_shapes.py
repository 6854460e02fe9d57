"""Shapes and layouts that break naive kernels: tails, offsets, strides, tensor counts, dtypes."""

from __future__ import annotations

import pytest
import torch
from conftest import PATH_FLAGS, path_params
from reference_adan import ReferenceAdan, hp

import adan_core._cpu_fused as cpu_fused
from adan_core import Adan

STEPS = 4
TOL = dict(rtol=2e-5, atol=2e-6)


def _check_against_reference(params, path, steps=STEPS, lr=1e-2, wd=0.02, **extra):
    gen = torch.Generator().manual_seed(1)
    opt = Adan(params, lr=lr, weight_decay=wd, **PATH_FLAGS[path], **extra)
    ref = ReferenceAdan(
        [p.detach() for p in params], [(list(range(len(params))), hp(lr=lr, wd=wd))]
    )
    for _ in range(steps):
        grads = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
        for p, g in zip(params, grads):
            p.grad = g.to(p.dtype)
        opt.step()
        ref.step([p.grad for p in params])
        for i, p in enumerate(params):
            torch.testing.assert_close(p.detach().double(), ref.p[i], **TOL)
            ref.p[i] = p.detach().double().clone()
    return opt


SIZES = [0, 1, 3, 4, 5, 1023, 1024, 1025, 4095, 4096, 4097, 5120, 65537]


@pytest.mark.parametrize("path", path_params("fused", "cpu_fused", "foreach"))
def test_every_element_of_odd_sizes_is_updated(path):
    params = [torch.nn.Parameter(torch.randn(n)) for n in SIZES]
    _check_against_reference(params, path, steps=2)


@pytest.mark.parametrize("path", path_params("fused", "cpu_fused", "foreach", "single"))
def test_slice_with_storage_offset_leaves_neighbours_untouched(path):
    buf = torch.randn(5000)
    guard = buf.clone()
    p = torch.nn.Parameter(buf[7:4104])  # odd offset, odd length, shares buf's memory
    assert p.storage_offset() == 7
    _check_against_reference([p], path)
    assert torch.equal(buf[:7], guard[:7]) and torch.equal(buf[4104:], guard[4104:])
    assert p.data_ptr() == buf.data_ptr() + 7 * 4  # updated in place, not replaced


@pytest.mark.parametrize("path", path_params("fused", "cpu_fused", "foreach", "single"))
def test_non_contiguous_and_channels_last(path):
    base = torch.randn(40, 30)
    strided = torch.nn.Parameter(base[:, ::3])  # not dense
    transposed = torch.nn.Parameter(torch.randn(70, 300).t())  # dense, permuted, > SMALL_NUMEL
    conv = torch.nn.Parameter(torch.randn(8, 3, 5, 5).to(memory_format=torch.channels_last))
    big_conv = torch.nn.Parameter(torch.randn(64, 32, 6, 6).to(memory_format=torch.channels_last))
    params = [strided, transposed, conv, big_conv]
    _check_against_reference(params, path)
    assert conv.is_contiguous(memory_format=torch.channels_last)


def test_more_tensors_than_one_launch(monkeypatch):
    import adan_core._triton_adan as tk

    monkeypatch.setattr(tk, "MAX_TENSORS_PER_LAUNCH", 3)
    calls = []
    kernel = tk._adan_kernel

    class Spy:
        def __getitem__(self, grid):
            calls.append(grid)
            return kernel[grid]

    monkeypatch.setattr(tk, "_adan_kernel", Spy())
    params = [torch.nn.Parameter(torch.randn(n)) for n in (5, 1100, 1, 7, 2049, 3, 9)]
    _check_against_reference(params, "fused", steps=2)
    assert len(calls) == 2 * 3  # ceil(7 / 3) launches per step


@pytest.mark.parametrize("path", path_params("fused", "cpu_fused", "foreach", "single"))
def test_mixed_dtypes_in_one_group(path):
    """Each dtype is grouped, never reinterpreted (pitfall #3): each matches its own reference."""
    gen = torch.Generator().manual_seed(3)
    dtypes = [torch.float32, torch.bfloat16, torch.float16, torch.float32, torch.bfloat16]
    params = [torch.nn.Parameter(torch.randn(97, generator=gen).to(dt)) for dt in dtypes]
    opt = Adan(params, lr=1e-2, **PATH_FLAGS[path])
    ref = ReferenceAdan([p.detach() for p in params], [(list(range(5)), hp(lr=1e-2))])
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)
        opt.step()
        ref.step([p.grad for p in params])
        for i, p in enumerate(params):
            # one rounding of the result into storage: within half an ulp of the dtype, plus slack
            ulp = {torch.float32: 2e-6, torch.bfloat16: 1e-2, torch.float16: 1.5e-3}[p.dtype]
            torch.testing.assert_close(p.detach().double(), ref.p[i], rtol=ulp, atol=ulp)
            ref.p[i] = p.detach().double().clone()
            for key, ref_state in (("exp_avg", ref.m), ("exp_avg_diff", ref.d)):
                torch.testing.assert_close(
                    opt.state[p][key].double(), ref_state[i], rtol=ulp, atol=ulp * 0.1
                )
                ref_state[i] = opt.state[p][key].double().clone()
            for key, ref_state in (("exp_avg_sq", ref.n),):
                torch.testing.assert_close(
                    opt.state[p][key].double(), ref_state[i], rtol=ulp * 2, atol=1e-6
                )
                ref_state[i] = opt.state[p][key].double().clone()


def test_cpu_large_tensor_path_and_packs(monkeypatch, chosen_impl):
    """Exercise both halves of the compiled CPU path on small data by lowering the threshold."""
    monkeypatch.setattr(cpu_fused, "SMALL_NUMEL", 50)
    params = [torch.nn.Parameter(torch.randn(n)) for n in (10, 60, 3, 200, 49, 50)]
    opt = _check_against_reference(params, "cpu_fused", steps=3)
    assert set(chosen_impl) == {"cpu_fused"}
    # the small tensors' states now live in one flat buffer per state
    small = [p for p in params if p.numel() < 50]
    ptrs = [opt.state[p]["exp_avg"].data_ptr() for p in small]
    flat = opt.state[small[0]]["exp_avg"].untyped_storage().data_ptr()
    assert all(opt.state[p]["exp_avg"].untyped_storage().data_ptr() == flat for p in small)
    assert sorted(ptrs) == ptrs


def test_small_pack_falls_back_to_the_parallel_kernel_if_the_serial_one_fails(monkeypatch):
    def broken(*tensors):
        raise RuntimeError("simulated compiler failure")

    monkeypatch.setattr(cpu_fused, "_serial_failed", False)
    monkeypatch.setitem(cpu_fused._compiled, False, broken)
    params = [torch.nn.Parameter(torch.randn(n)) for n in (10, 3, 7)]
    _check_against_reference(params, "cpu_fused", steps=2)
    assert cpu_fused._serial_failed
