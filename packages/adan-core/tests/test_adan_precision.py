"""Low precision and AMP: fp32 math on bf16/fp16 storage, the GradScaler contract, fp16 norms."""

from __future__ import annotations

import pytest
import torch
from conftest import PATH_FLAGS, path_params
from reference_adan import ReferenceAdan, hp

from adan_core import Adan

ULP = {torch.float32: 2e-6, torch.bfloat16: 1e-2, torch.float16: 1.5e-3}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("path", path_params())
def test_low_precision_params_follow_the_reference(path, dtype):
    """Over 10 steps, each step equals the fp64 math applied to the stored values, rounded once."""
    gen = torch.Generator().manual_seed(5)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in (31, (4, 9))]
    opt = Adan(params, lr=1e-2, weight_decay=0.02, max_grad_norm=3.0, **PATH_FLAGS[path])
    for _ in range(10):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(dtype)
        ref = ReferenceAdan(
            [p.detach() for p in params], [([0, 1], hp(lr=1e-2, wd=0.02))], max_grad_norm=3.0
        )
        for i, p in enumerate(params):  # the reference restarts from the stored state
            st = opt.state.get(p)
            if st:
                ref.m[i], ref.n[i] = st["exp_avg"].double(), st["exp_avg_sq"].double()
                ref.d[i], ref.prev[i] = st["exp_avg_diff"].double(), -st["neg_pre_grad"].double()
                ref.t[i] = int(st["step"])
        opt.step()
        ref.step([p.grad for p in params])
        for i, p in enumerate(params):
            assert p.dtype == dtype and opt.state[p]["exp_avg"].dtype == dtype
            torch.testing.assert_close(p.detach().double(), ref.p[i], rtol=ULP[dtype], atol=1e-3)
            torch.testing.assert_close(
                opt.state[p]["exp_avg"].double(), ref.m[i], rtol=ULP[dtype], atol=1e-4
            )


def _scaled_setup(path, dtype, max_grad_norm):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Linear(7, 3)).to(dtype)
    opt = Adan(model.parameters(), lr=1e-2, max_grad_norm=max_grad_norm, **PATH_FLAGS[path])
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    return model, opt, scaler


def _backward(model, scaler, seed):
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(seed)).to(
        next(model.parameters()).dtype
    )
    scaler.scale(model(x).float().square().mean()).backward()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("path", path_params())
def test_grad_scaler_skips_inf_step_without_touching_state(path, dtype):
    model, opt, scaler = _scaled_setup(path, dtype, max_grad_norm=1.0)
    _backward(model, scaler, seed=0)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad()
    params = [p.detach().clone() for p in model.parameters()]
    states = {k: {n: t.clone() for n, t in v.items()} for k, v in enumerate(opt.state.values())}
    _backward(model, scaler, seed=1)
    next(model.parameters()).grad[0, 0] = float("inf")
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0**9  # the scaler saw the inf
    for before, p in zip(params, model.parameters()):
        assert torch.equal(before, p.detach())
    for k, st in enumerate(opt.state.values()):
        for name, t in st.items():
            assert torch.equal(states[k][name], t), f"{name} changed on a skipped step"
        assert float(st["step"]) == 1.0


@pytest.mark.parametrize("path", path_params())
def test_grad_scaler_step_equals_unscaled_step(path):
    """Scaled gradients are unscaled inside the update, and the clip norm is the unscaled one."""
    model, opt, scaler = _scaled_setup(path, torch.float32, max_grad_norm=0.05)
    ref_model, ref_opt, _ = _scaled_setup("foreach", torch.float32, max_grad_norm=0.05)
    for seed in range(3):
        _backward(model, scaler, seed)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        x = torch.randn(8, 5, generator=torch.Generator().manual_seed(seed))
        ref_model(x).square().mean().backward()
        ref_opt.step()
        ref_opt.zero_grad()
    for a, b in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", path_params())
def test_fp16_gradients_above_255_do_not_overflow_the_norm(path):
    """Pitfall #14: squares of fp16 values above 255.9 overflow unless accumulated in fp32.

    One step only: later steps differ from fp32 because tiny second moments underflow in fp16
    *storage*, which is the documented cost of fp16 state, not what this test is about."""
    p16 = torch.nn.Parameter(torch.zeros(4, dtype=torch.float16))
    p32 = torch.nn.Parameter(torch.zeros(4, dtype=torch.float32))
    grad = torch.tensor([300.0, -2.0, 0.5, 1000.0])
    opt16 = Adan([p16], lr=0.1, max_grad_norm=1.0, **PATH_FLAGS[path])
    opt32 = Adan([p32], lr=0.1, max_grad_norm=1.0, foreach=True)
    p16.grad, p32.grad = grad.half(), grad.clone()
    opt16.step()
    opt32.step()
    assert torch.isfinite(p16).all()
    torch.testing.assert_close(p16.detach().float(), p32.detach(), rtol=2e-3, atol=2e-3)
    clipped = -opt16.state[p16]["neg_pre_grad"].float()
    torch.testing.assert_close(clipped, -opt32.state[p32]["neg_pre_grad"], rtol=2e-3, atol=1e-6)
    torch.testing.assert_close(clipped.norm(), torch.tensor(1.0), rtol=2e-3, atol=0)
