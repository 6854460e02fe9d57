"""Experimental Adan + Win/Win2 acceleration (WIN.md §7, our composition) on every path."""

from __future__ import annotations

import io

import pytest
import torch
from conftest import PATH_FLAGS, path_params
from reference_adan import ReferenceAdan, hp

from adan_core import Adan

# WIN.md §7 self-consistency values: problem of ADAN.md §8, lr 0.1, wd 0.1, gammas (2, 8).
SECTION7 = {
    "none": dict(
        p1=[0.8910891098, -1.8811881190, 0.3960396058],
        p3=[0.6785368749, -1.6478084080, 0.1930624659],
    ),
    "win": dict(
        p1=[0.8550259011, -1.8418464366, 0.3616156342],
        p3=[0.6293572081, -1.5926339676, 0.1460140616],
        x3=[0.6797113949, -1.6481568959, 0.1941173792],
    ),
    "win2": dict(
        p1=[0.8217749610, -1.8055726835, 0.3298761007],
        p3=[0.6038555101, -1.5631491267, 0.1215486778],
        x3=[0.6808784309, -1.6484835201, 0.1951604108],
        y3=[0.6307572974, -1.5930227885, 0.1472644353],
    ),
}


@pytest.mark.parametrize("mode", list(SECTION7))
@pytest.mark.parametrize("path", path_params())
def test_section7_values(path, mode):
    dtypes = [torch.float32] + ([torch.float64] if path in ("single", "foreach") else [])
    for dtype in dtypes:
        tol = 1e-9 if dtype == torch.float64 else 1e-6
        p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=dtype))
        opt = Adan([p], lr=0.1, weight_decay=0.1, acceleration_mode=mode, **PATH_FLAGS[path])
        a = torch.tensor([1.0, 2.0, 0.5], dtype=dtype)
        b = torch.tensor([0.1, -0.2, 0.3], dtype=dtype)
        for step in range(3):
            p.grad = a * p.detach() + b
            opt.step()
            if step == 0:
                want = torch.tensor(SECTION7[mode]["p1"], dtype=torch.float64)
                torch.testing.assert_close(p.detach().double(), want, rtol=0, atol=tol)
        got = {"p3": p, "x3": opt.state[p].get("x"), "y3": opt.state[p].get("y")}
        for key, value in SECTION7[mode].items():
            if key != "p1":
                want = torch.tensor(value, dtype=torch.float64)
                torch.testing.assert_close(got[key].detach().double(), want, rtol=0, atol=tol)


@pytest.mark.parametrize("clip", [0.0, 0.7], ids=["noclip", "clip"])
@pytest.mark.parametrize("mode", ["win", "win2"])
@pytest.mark.parametrize("path", path_params())
def test_win_modes_follow_reference_for_20_steps_with_two_groups(path, mode, clip):
    gen = torch.Generator().manual_seed(11)
    shapes = [(5, 4), (9,), (3, 3), (2,)]
    init = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    params = [torch.nn.Parameter(t.float()) for t in init]
    h0, h1 = hp(lr=2e-2, wd=0.05), hp(lr=5e-3, betas=(0.9, 0.85, 0.995), wd=0.0)
    groups = [
        dict(params=params[:2], lr=h0["lr"], betas=h0["betas"], weight_decay=h0["wd"]),
        dict(params=params[2:], lr=h1["lr"], betas=h1["betas"], weight_decay=h1["wd"]),
    ]
    opt = Adan(groups, max_grad_norm=clip, acceleration_mode=mode, **PATH_FLAGS[path])
    ref = ReferenceAdan(init, [([0, 1], h0), ([2, 3], h1)], max_grad_norm=clip, mode=mode)
    for _ in range(20):
        grads = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
        for p, g in zip(params, grads):
            p.grad = g.float()
        opt.step()
        ref.step([p.grad for p in params])
        for i, p in enumerate(params):
            torch.testing.assert_close(p.detach().double(), ref.p[i], rtol=1e-5, atol=2e-6)
            torch.testing.assert_close(opt.state[p]["x"].double(), ref.x[i], rtol=1e-5, atol=2e-6)
            ref.p[i] = p.detach().double().clone()
            ref.x[i] = opt.state[p]["x"].double().clone()
            if mode == "win2":
                ref.y[i] = opt.state[p]["y"].double().clone()


def test_restart_keeps_the_win_sequences():
    p = torch.nn.Parameter(torch.randn(4))
    opt = Adan([p], lr=0.1, acceleration_mode="win2")
    for _ in range(2):
        p.grad = torch.randn(4)
        opt.step()
    x, y = opt.state[p]["x"].clone(), opt.state[p]["y"].clone()
    opt.restart()
    assert torch.equal(opt.state[p]["x"], x) and torch.equal(opt.state[p]["y"], y)
    assert float(opt.state[p]["step"]) == 0 and not opt.state[p]["exp_avg"].any()


def test_win2_resume_is_identical():
    def run(split):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        opt = Adan(model.parameters(), lr=1e-2, weight_decay=0.02, acceleration_mode="win2")
        for i in range(6):
            if i == split:
                buf = io.BytesIO()
                torch.save((model.state_dict(), opt.state_dict()), buf)
                buf.seek(0)
                msd, osd = torch.load(buf)
                model = torch.nn.Linear(4, 3)
                model.load_state_dict(msd)
                opt = Adan(model.parameters(), lr=1e-2, weight_decay=0.02, acceleration_mode="win2")
                opt.load_state_dict(osd)
            x = torch.randn(8, 4, generator=torch.Generator().manual_seed(i))
            model(x).square().mean().backward()
            opt.step()
            opt.zero_grad()
        return [t.detach() for t in model.parameters()]

    for a, b in zip(run(split=-1), run(split=3)):
        assert torch.equal(a, b)


def test_mode_change_on_loaded_checkpoint_fails_clearly():
    p = torch.nn.Parameter(torch.randn(3))
    opt = Adan([p], acceleration_mode="win")
    p.grad = torch.randn(3)
    opt.step()
    other = Adan([p], acceleration_mode="win2")
    with pytest.raises(
        ValueError, match="saved with acceleration_mode='win' but the optimizer uses 'win2'"
    ):
        other.load_state_dict(opt.state_dict())


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(acceleration_mode="Win"), ValueError, "must be one of 'win', 'win2' or 'none'"),
        (dict(acceleration_mode="win", no_prox=True), ValueError, "needs no_prox=False"),
        (dict(acceleration_mode="win", reckless_steps=(0.0, 8.0)), ValueError, "gamma1"),
        (dict(acceleration_mode="win2", reckless_steps=(2.0,)), ValueError, "a pair"),
    ],
)
def test_bad_win_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Adan([torch.nn.Parameter(torch.randn(2))], **kwargs)


def test_win_modes_refuse_low_precision_params():
    p = torch.nn.Parameter(torch.randn(3, dtype=torch.bfloat16))
    p.grad = torch.randn(3, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="needs fp32 or fp64 params, got torch.bfloat16"):
        Adan([p], acceleration_mode="win").step()


def test_swap_helpers_reach_adan_win_modes():
    import argparse

    from adan_core import add_optimizer_args, create_optimizer

    model = torch.nn.Linear(3, 2)
    assert create_optimizer(model, opt="adan_win2").param_groups[0]["acceleration_mode"] == "win2"
    parser = argparse.ArgumentParser()
    add_optimizer_args(parser)
    args = parser.parse_args(
        ["--opt", "adan", "--acceleration-mode", "win", "--reckless-steps", "3", "9"]
    )
    group = create_optimizer(model, args).param_groups[0]
    assert group["acceleration_mode"] == "win" and group["reckless_steps"] == (3.0, 9.0)
