"""Regressions from the adan-core hardening review: each test failed on the code before its fix."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import PATH_FLAGS, path_params
from reference_adan import ReferenceAdan, hp
from torch.profiler import ProfilerActivity, profile

import adan_core.functional as functional
from adan_core import Adan

TOOLS = Path(__file__).resolve().parents[3] / "tools"


def _grads(params, gen):
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)


# ------------------------------------------------------------------ state dtype and device
@pytest.mark.parametrize("path", path_params())
def test_state_of_another_dtype_is_cast_not_misread(path):
    """model.to(bf16) after some steps: the state is cast (with a warning), never misread."""
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(5, 3)
    opt = Adan(model.parameters(), lr=1e-2, **PATH_FLAGS[path])
    for _ in range(3):
        _grads(model.parameters(), gen)
        opt.step()
    model.to(torch.bfloat16)
    before = [p.detach().clone() for p in model.parameters()]
    _grads(model.parameters(), gen)
    with pytest.warns(RuntimeWarning, match="casting it to torch.bfloat16"):
        opt.step()
    for p, p0 in zip(model.parameters(), before):
        assert torch.isfinite(p).all()
        assert (p.float() - p0.float()).abs().max() < 0.05  # an lr-sized step, not garbage
        assert {opt.state[p][k].dtype for k in ("exp_avg", "exp_avg_sq", "neg_pre_grad")} == {
            torch.bfloat16
        }


@pytest.mark.parametrize("path", path_params())
def test_fp32_state_for_bf16_params(path):
    """state_dtype=float32: fp32 moments for bf16 params on every path, equal to fp32 math."""
    gen = torch.Generator().manual_seed(1)
    init = [torch.randn(s, generator=gen) for s in [(7, 5), (33,), (70000,)]]
    params = [torch.nn.Parameter(t.bfloat16()) for t in init]
    opt = Adan(params, lr=1e-2, weight_decay=0.1, state_dtype=torch.float32, **PATH_FLAGS[path])
    ref = ReferenceAdan([p.detach() for p in params], [([0, 1, 2], hp(lr=1e-2, wd=0.1))])
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=gen).bfloat16() for p in params]
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        ref.step(grads)
        for i, p in enumerate(params):
            # p is rounded to bf16 once per step; the state is not rounded at all
            torch.testing.assert_close(p.double(), ref.p[i], rtol=8e-3, atol=1e-5)
            ref.p[i] = p.detach().double().clone()
            n = opt.state[p]["exp_avg_sq"].double()
            torch.testing.assert_close(n, ref.n[i], rtol=1e-5, atol=1e-9)
    assert all(opt.state[p][k].dtype == torch.float32 for p in params for k in opt.state[p])


def test_fp32_state_survives_a_checkpoint_round_trip():
    p = torch.nn.Parameter(torch.randn(6).bfloat16())
    opt = Adan([p], state_dtype=torch.float32)
    p.grad = torch.randn(6).bfloat16()
    opt.step()
    saved = {k: v.clone() for k, v in opt.state[p].items()}
    fresh = Adan([p], state_dtype=torch.float32)
    fresh.load_state_dict(opt.state_dict())  # torch alone would cast the state to bf16
    for key, value in saved.items():
        assert fresh.state[p][key].dtype == torch.float32
        assert torch.equal(fresh.state[p][key], value), key


def test_bf16_state_stalls_where_fp32_state_does_not():
    """The measurement behind the state_dtype advice: b3 = 0.999, g = 1 for 3000 steps."""
    finals = {}
    for state_dtype in (None, torch.float32):
        p = torch.nn.Parameter(torch.zeros(4, dtype=torch.bfloat16))
        opt = Adan([p], lr=0.0, betas=(0.98, 0.92, 0.999), foreach=True, state_dtype=state_dtype)
        p.grad = torch.ones(4, dtype=torch.bfloat16)
        for _ in range(3000):
            opt.step()
        finals[state_dtype] = float(opt.state[p]["exp_avg_sq"][0])
    exact = 1 - 0.999**3000  # 0.9503
    assert abs(finals[torch.float32] - exact) < 1e-3
    assert finals[None] < 0.5 * exact  # bf16 rounding swallows the (1-b3)*g^2 increments


def test_state_dtype_is_validated():
    with pytest.raises(ValueError, match="state_dtype must be None .* or torch.float32"):
        Adan([torch.nn.Parameter(torch.zeros(2))], state_dtype=torch.float16)


# ---------------------------------------------------------------------------- precision
@pytest.mark.parametrize("path", path_params("single", "foreach"))
def test_fp64_clip_factor_and_unscaling_stay_in_fp64(path):
    """fp64 params beside fp32 ones, clipping and a non-power-of-two AMP scale: the fp64 params
    follow the fp64 reference to 1e-12 (an fp32 factor drifts by ~1e-9 in 30 steps)."""
    gen = torch.Generator().manual_seed(2)
    p64 = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64)) for s in (9, 4)]
    p32 = [torch.nn.Parameter(torch.randn(5, generator=gen))]
    opt = Adan([{"params": p64}, {"params": p32}], lr=1e-2, max_grad_norm=0.5, **PATH_FLAGS[path])
    everything = p64 + p32
    ref = ReferenceAdan([p.detach() for p in everything], [([0, 1, 2], hp(lr=1e-2))], 0.5)
    scale = 3.0
    for _ in range(30):
        grads = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in everything]
        for p, g in zip(everything, grads):
            p.grad = (g * scale).to(p.dtype)
        opt.grad_scale, opt.found_inf = torch.tensor(scale), torch.tensor(0.0)
        opt.step()
        ref.step([p.grad.double() for p in everything], grad_divisor=scale)
        ref.p[2] = p32[0].detach().double().clone()
    for i, p in enumerate(p64):
        torch.testing.assert_close(p.detach(), ref.p[i], rtol=1e-12, atol=0)


# ------------------------------------------------------------------------- dispatch
def test_kernel_that_cannot_compile_falls_back_once_and_changes_nothing_first(monkeypatch):
    """A compiled kernel that fails its probe: one warning, then foreach, with correct numbers."""
    import adan_core._cpu_fused as cpu_fused

    monkeypatch.setattr(cpu_fused, "ready", lambda keys: False)
    seen = []
    monkeypatch.setattr(functional, "_foreach_adan", _spy(functional._foreach_adan, seen))
    monkeypatch.setitem(functional._KERNELS, "foreach", functional._foreach_adan)
    gen = torch.Generator().manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(4, generator=gen))]
    opt = Adan(params, lr=1e-2)
    ref = ReferenceAdan([p.detach() for p in params], [([0], hp(lr=1e-2))])
    for _ in range(3):
        grads = [torch.randn(4, generator=gen)]
        params[0].grad = grads[0]
        opt.step()
        ref.step(grads)
    assert len(seen) == 3
    torch.testing.assert_close(params[0].double(), ref.p[0], rtol=2e-6, atol=1e-7)


def _spy(fn, seen):
    def wrapper(*args, **kwargs):
        seen.append(fn.__name__)
        return fn(*args, **kwargs)

    wrapper.__name__ = fn.__name__
    return wrapper


def test_functional_api_refuses_unknown_implementation_before_touching_anything():
    p, g = torch.zeros(3), torch.ones(3)
    step = torch.zeros(())
    with pytest.raises(ValueError, match="unknown Adan implementation 'gpu'"):
        functional.adan(
            [p], [g], [p.clone()], [p.clone()], [p.clone()], [p.clone()], [step],
            lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, no_prox=False,
            impl="gpu",
        )  # fmt: skip
    assert float(step) == 0


# -------------------------------------------------------------------- foreach speed/memory
def _top_level_aten_ops(opt, params) -> int:
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    opt.step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        opt.step()
    return sum(
        1
        for e in prof.events()
        if e.name.startswith("aten::")
        and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
    )


def test_foreach_with_device_steps_uses_list_ops_not_per_parameter_ops():
    """A tensor lr keeps steps and coefficients as tensors (the CUDA/capturable route): the
    number of ops per step must not grow with the number of parameters (it was ~13 each)."""
    params = [torch.nn.Parameter(torch.randn(8, 8)) for _ in range(100)]
    ours = _top_level_aten_ops(Adan(params, foreach=True, lr=torch.tensor(1e-3)), params)
    torch_adamw = _top_level_aten_ops(torch.optim.AdamW(params, foreach=True), params)
    assert ours <= 1.5 * torch_adamw, (ours, torch_adamw)


def test_foreach_with_tensor_lr_matches_the_reference_with_a_late_parameter():
    gen = torch.Generator().manual_seed(4)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in [(3, 4), (5,)]]
    lr = torch.tensor(1e-2)
    opt = Adan(params, lr=lr, weight_decay=0.1, foreach=True)
    ref = ReferenceAdan([p.detach() for p in params], [([0, 1], hp(lr=1e-2, wd=0.1))])
    for step in range(6):
        grads = [torch.randn(p.shape, generator=gen) for p in params]
        if step < 2:
            grads[1] = None  # the second parameter starts late: its own first step
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        ref.step(grads)
        for i, p in enumerate(params):
            torch.testing.assert_close(p.double(), ref.p[i], rtol=2e-5, atol=2e-6)


def _load_memtrack():
    spec = importlib.util.spec_from_file_location("memtrack", TOOLS / "memtrack.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["memtrack"] = module
    spec.loader.exec_module(module)
    return module


def test_foreach_bf16_temporaries_stay_within_twice_torch_adamw():
    """10M bf16 params: the fp32 working copies are made chunk by chunk (it was 267 MiB against
    torch AdamW foreach's 19 MiB)."""
    memtrack = _load_memtrack()
    params = [torch.nn.Parameter(torch.randn(1000, 1000, dtype=torch.bfloat16)) for _ in range(10)]
    for p in params:
        p.grad = torch.randn_like(p)
    peaks = {}
    for name, opt in (
        ("adan", Adan(params, foreach=True)),
        ("adamw", torch.optim.AdamW(params, foreach=True)),
    ):
        opt.step()
        peaks[name] = memtrack.peak_temporary_bytes(opt.step)
    assert peaks["adan"] <= 2 * peaks["adamw"], peaks


def test_chunking_changes_no_bit(monkeypatch):
    """Chunk boundaries inside tensors (a tiny CHUNK_NUMEL) give bit-identical results."""

    def run(chunk):
        monkeypatch.setattr(functional, "CHUNK_NUMEL", chunk)
        gen = torch.Generator().manual_seed(5)
        params = [torch.nn.Parameter(torch.randn(s, generator=gen).half()) for s in [(7, 5), (3,)]]
        params.append(torch.nn.Parameter(torch.randn(6, 4, generator=gen).bfloat16().t()))
        opt = Adan(params, lr=1e-2, max_grad_norm=1.0, foreach=True)
        for _ in range(3):
            _grads(params, gen)
            opt.step()
        return [p.detach().clone() for p in params]

    for a, b in zip(run(1 << 20), run(4)):
        assert torch.equal(a, b)


def test_chunk_plan_bounds_every_chunk():
    numels = [10, 3, 25, 0, 7]
    chunks = list(functional._chunk_plan(numels, [True, True, True, True, False], 8))
    sizes = [
        sum(numels[i] if part is None else part.stop - part.start for i, part in chunk)
        for chunk in chunks
    ]
    assert max(sizes) <= 8 or any(i == 4 for i, _ in chunks[sizes.index(max(sizes))])
    covered = dict.fromkeys(range(5), 0)
    for chunk in chunks:
        for i, part in chunk:
            covered[i] += numels[i] if part is None else part.stop - part.start
    assert covered == dict(enumerate(numels))


# ---------------------------------------------------------------------------- Win and AMP
@pytest.mark.parametrize("mode", ["win", "win2"])
def test_win_mode_skips_a_found_inf_step_entirely(mode):
    p = torch.nn.Parameter(torch.randn(5))
    opt = Adan([p], lr=1e-2, acceleration_mode=mode)
    p.grad = torch.randn(5)
    opt.step()
    before = {k: v.clone() for k, v in opt.state[p].items()}
    p0 = p.detach().clone()
    p.grad = torch.randn(5)
    opt.grad_scale, opt.found_inf = torch.tensor(2.0), torch.tensor(1.0)
    opt.step()
    assert torch.equal(p, p0)
    for key, value in before.items():
        assert torch.equal(opt.state[p][key], value), key


def test_bias_corrections_use_the_step_counted_after_the_update():
    """After k steps the state says k, and the (k+1)-th update uses t = k + 1."""
    p = torch.nn.Parameter(torch.tensor([1.0]))
    opt = Adan([p], lr=0.1, foreach=True)
    p.grad = torch.tensor([2.0])
    opt.step()
    assert float(opt.state[p]["step"]) == 1
    assert math.isclose(float(p), 0.9, rel_tol=1e-6)  # a full first step: t = 1


def test_cuda_bucket_whose_kernel_fails_to_compile_falls_back_to_foreach(monkeypatch):
    """The automatic choice on CUDA (decided without touching a tensor): a kernel that does not
    compile there means foreach, with a note saying why; a ready kernel means fused."""
    import adan_core._triton_adan as triton_adan

    cuda = torch.device("cuda", 0)
    dtypes = (torch.float32,) * 6
    monkeypatch.setattr(triton_adan, "unavailable_reason", lambda device: None)
    monkeypatch.setattr(triton_adan, "compile_failure", lambda *a, **k: "CompilationError: boom")
    impl, note = functional.choose_impl(cuda, dtypes, fused=None, foreach=None, capturable=False)
    assert impl == "foreach" and "CompilationError: boom" in note
    monkeypatch.setattr(triton_adan, "compile_failure", lambda *a, **k: None)
    assert functional.choose_impl(cuda, dtypes, fused=None, foreach=None, capturable=False) == (
        "fused",
        None,
    )
