"""Every implementation path against the independent float64 reference, step by step."""

from __future__ import annotations

import pytest
import torch
from conftest import PATH_FLAGS, path_params
from reference_adan import ReferenceAdan, hp

from adan_core import Adan

STEPS = 20
SHAPES = [(7, 5), (13,), (3, 4, 5), (1,), (33,)]


def _tolerance(dtype):
    return dict(rtol=0, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-6)


def _run_case(
    path,
    *,
    groups_hp,
    assign,
    max_grad_norm=0.0,
    grad_scale=1.0,
    missing=None,
    dtype=torch.float32,
    maximize=False,
    seed=0,
    shapes=SHAPES,
):
    """Train ``len(shapes)`` params for STEPS steps on fresh random grads; compare every step.

    assign: list of group index per param; missing: {param index: steps without a grad}.
    """
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    params = [torch.nn.Parameter(t.to(dtype)) for t in init]
    groups = []
    for gi, h in enumerate(groups_hp):
        member = [params[i] for i, a in enumerate(assign) if a == gi]
        groups.append(
            dict(
                params=member,
                lr=h["lr"],
                betas=h["betas"],
                eps=h["eps"],
                weight_decay=h["wd"],
                no_prox=h["no_prox"],
            )
        )
    opt = Adan(groups, max_grad_norm=max_grad_norm, maximize=maximize, **PATH_FLAGS[path])
    ref = ReferenceAdan(
        [p.detach() for p in params],
        [([i for i, a in enumerate(assign) if a == gi], h) for gi, h in enumerate(groups_hp)],
        max_grad_norm=max_grad_norm,
        maximize=maximize,
    )
    for step in range(STEPS):
        grads = []
        for i, p in enumerate(params):
            if step in (missing or {}).get(i, ()):
                p.grad = None
                grads.append(None)
                continue
            g = torch.randn(p.shape, generator=gen, dtype=torch.float64) * grad_scale
            p.grad = g.to(dtype)
            grads.append(p.grad.detach().clone())
        raw = [None if p.grad is None else p.grad.clone() for p in params]
        opt.step()
        ref.step(grads)
        for i, p in enumerate(params):
            # the fp32 reference sees the rounded params each step: compare, then resync
            torch.testing.assert_close(
                p.detach().double(),
                ref.p[i],
                **_tolerance(dtype),
                msg=f"param {i} differs at step {step + 1} on {path}",
            )
            if dtype != torch.float64:
                ref.p[i] = p.detach().double().clone()
            if raw[i] is not None:
                assert torch.equal(p.grad, raw[i]), f"{path} modified p.grad"
    return opt, params, ref


CASES = {
    "defaults": dict(groups_hp=[hp(lr=1e-2)], assign=[0] * 5),
    "proximal_decay": dict(groups_hp=[hp(lr=1e-2, wd=0.3)], assign=[0] * 5),
    "no_prox_decay": dict(groups_hp=[hp(lr=1e-2, wd=0.3, no_prox=True)], assign=[0] * 5),
    "clipping": dict(groups_hp=[hp(lr=1e-2)], assign=[0] * 5, max_grad_norm=0.5),
    "two_groups": dict(
        groups_hp=[hp(lr=1e-2, wd=0.1), hp(lr=3e-3, betas=(0.9, 0.8, 0.999), wd=0.0, no_prox=True)],
        assign=[0, 1, 0, 1, 1],
        max_grad_norm=1.5,
    ),
    # the clip eps is the constructor's (1e-8), not a group's: with norms near 1e-3 a group eps of
    # 0.5 in the clip factor would change every step
    "clip_eps_is_the_constructors": dict(
        groups_hp=[hp(lr=1e-2, eps=1e-3), hp(lr=1e-2, eps=0.5)],
        assign=[0, 1, 1, 0, 1],
        max_grad_norm=1e-3,
        grad_scale=1e-3,
    ),
    "params_without_grads": dict(
        groups_hp=[hp(lr=1e-2, wd=0.05)], assign=[0] * 5, missing={1: {0, 1, 2}, 3: {5, 9}}
    ),
    "tiny_gradients": dict(groups_hp=[hp(lr=1e-2)], assign=[0] * 5, grad_scale=1e-6),
    "maximize": dict(
        groups_hp=[hp(lr=1e-2, wd=0.1)], assign=[0] * 5, maximize=True, max_grad_norm=2.0
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("path", path_params())
def test_matches_float64_reference(path, case, chosen_impl):
    _run_case(path, **CASES[case])
    assert set(chosen_impl) == {path}


@pytest.mark.parametrize("case", ["defaults", "two_groups", "params_without_grads"])
@pytest.mark.parametrize("path", path_params("single", "foreach"))
def test_fp64_paths_are_exact(path, case):
    _run_case(path, dtype=torch.float64, **CASES[case])


@pytest.mark.parametrize("path", path_params())
def test_empty_group_and_gradless_group(path):
    used = torch.nn.Parameter(torch.randn(4))
    idle = torch.nn.Parameter(torch.randn(3))
    opt = Adan(
        [{"params": []}, {"params": [idle]}, {"params": [used]}],
        lr=0.1,
        max_grad_norm=1.0,
        **PATH_FLAGS[path],
    )
    opt.step()  # no grads at all: nothing happens
    assert len(opt.state) == 0
    used.grad = torch.ones(4)
    before = idle.detach().clone()
    opt.step()
    assert idle not in opt.state and torch.equal(idle.detach(), before)
    assert used in opt.state


# ADAN.md §8: the official implementation's numbers (float64), 10 decimals.
P0 = [1.0, -2.0, 0.5]
A, B = [1.0, 2.0, 0.5], [0.1, -0.2, 0.3]
OFFICIAL = {
    "wd0": (
        {},
        [
            [0.9000000009, -1.9000000002, 0.4000000018],
            [0.8006468213, -1.8002112802, 0.3006468232],
            [0.7017664462, -1.7005537510, 0.2017664491],
        ],
    ),
    "prox": (
        dict(weight_decay=0.1),
        [
            [0.8910891098, -1.8811881190, 0.3960396058],
            [0.7840077920, -1.7638302944, 0.2937969306],
            [0.6785368749, -1.6478084080, 0.1930624659],
        ],
    ),
    "no_prox": (
        dict(weight_decay=0.1, no_prox=True),
        [
            [0.8900000009, -1.8800000002, 0.3950000018],
            [0.7818731590, -1.7614851947, 0.2917583570],
            [0.6753956001, -1.6443345632, 0.1900609399],
        ],
    ),
    "clip": (
        dict(max_grad_norm=0.5),
        [
            [0.9000000080, -1.9000000021, 0.4000000159],
            [0.8001735808, -1.7999937574, 0.3001735970],
            [0.7004883505, -1.6999840564, 0.2004883751],
        ],
    ),
}
OFFICIAL_STATE = {
    "wd0": dict(
        exp_avg=[0.0587417364, -0.2350820512, 0.0293708683],
        exp_avg_sq=[0.0265701281, 0.4478652554, 0.0066425320],
        exp_avg_diff=[-0.0153082543, 0.0306861952, -0.0076541271],
        neg_pre_grad=[-0.9006468213, 3.8004225605, -0.4503234116],
    ),
    "prox": dict(
        exp_avg=[0.0582343024, -0.2328893860, 0.0292635574],
        exp_avg_sq=[0.0258867029, 0.4349675592, 0.0065702521],
        exp_avg_diff=[-0.0165823469, 0.0362663608, -0.0079154495],
        neg_pre_grad=[-0.8840077920, 3.7276605888, -0.4468984653],
    ),
    "no_prox": dict(
        exp_avg=[0.0581702632, -0.2327490078, 0.0292329836],
        exp_avg_sq=[0.0258013102, 0.4341511055, 0.0065495610],
        exp_avg_diff=[-0.0167461473, 0.0366263689, -0.0079936657],
        neg_pre_grad=[-0.8818731590, 3.7229703893, -0.4458791785],
    ),
    "clip": dict(
        exp_avg=[0.0070634668, -0.0283219409, 0.0035317334],
        exp_avg_sq=[0.0004058943, 0.0069193663, 0.0001014736],
        exp_avg_diff=[-0.0008604410, -0.0002679113, -0.0004302204],
        neg_pre_grad=[-0.1144966379, 0.4833354410, -0.0572483200],
    ),
}


def official_problem(path, kwargs, dtype):
    p = torch.nn.Parameter(torch.tensor(P0, dtype=dtype))
    opt = Adan([p], lr=0.1, **kwargs, **PATH_FLAGS[path])
    a, b = torch.tensor(A, dtype=dtype), torch.tensor(B, dtype=dtype)
    history = []
    for _ in range(3):
        p.grad = a * p.detach() + b
        raw = p.grad.clone()
        opt.step()
        assert torch.equal(p.grad, raw)
        history.append(p.detach().double().clone())
    return opt, p, history


@pytest.mark.parametrize("case", list(OFFICIAL))
@pytest.mark.parametrize("path", path_params())
def test_official_reference_values(path, case):
    kwargs, expected = OFFICIAL[case]
    dtypes = [torch.float32] + ([torch.float64] if path in ("single", "foreach") else [])
    for dtype in dtypes:
        opt, p, history = official_problem(path, kwargs, dtype)
        tol = 1e-9 if dtype == torch.float64 else 1e-6
        for step, (got, want) in enumerate(zip(history, expected), start=1):
            torch.testing.assert_close(
                got,
                torch.tensor(want, dtype=torch.float64),
                rtol=0,
                atol=tol,
                msg=f"{path}/{dtype} step {step}",
            )
        state = opt.state[p]
        for key, want in OFFICIAL_STATE[case].items():
            torch.testing.assert_close(
                state[key].double(),
                torch.tensor(want, dtype=torch.float64),
                rtol=0,
                atol=tol * 5,
                msg=f"{path}/{dtype} {key}",
            )
        assert (state["exp_avg_sq"] >= 0).all()


def test_prox_and_no_prox_really_differ():
    """Guards pitfall #11: a flag that silently does nothing would still pass loose tolerances."""
    _, _, prox = official_problem("foreach", dict(weight_decay=0.1), torch.float64)
    _, _, adamw = official_problem("foreach", dict(weight_decay=0.1, no_prox=True), torch.float64)
    assert (prox[0] - adamw[0]).abs().max() > 1e-4
