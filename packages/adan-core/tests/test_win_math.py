"""The Win optimizers against the float64 reference of WIN.md, §8's fixed values and torch.optim."""

from __future__ import annotations

import copy

import pytest
import torch
from test_win_reference import SECTION8, ReferenceWin, section8_grad

from adan_core.win import Adam_Win, AdamW_Win, LAMB_Win, SGD_Win

CLASSES = {"adamw": AdamW_Win, "adam": Adam_Win, "lamb": LAMB_Win, "sgd": SGD_Win}
MODES = ("none", "win", "win2")
STEPS = 24


# ------------------------------------------------------------------------------ WIN.md §8
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("case", list(SECTION8), ids=lambda c: f"{c[0]}-{c[1]}-{dict(c[2])}")
def test_section8_reference_values(case, foreach):
    kind, mode, extra = case
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    opt = CLASSES[kind](
        [p], lr=0.1, weight_decay=0.1, acceleration_mode=mode, foreach=foreach, **dict(extra)
    )
    got = {}
    for k in range(3):
        p.grad = section8_grad(p)
        opt.step()
        if k == 0:
            got["p1"] = p.tolist()
    got["p3"] = p.tolist()
    state = opt.state[p]
    got["x3"] = state.get("x", torch.zeros(3)).tolist()
    got["y3"] = state.get("y", torch.zeros(3)).tolist()
    for name, want in SECTION8[case].items():
        assert got[name] == pytest.approx(want, abs=1e-10), name


# ------------------------------------------------------- 24 steps against the reference
SHAPES = [[(4, 3), (3,)], [(2, 5), (5,), (1,)]]


def make_groups(kind: str, mode: str, opts: dict) -> list[dict]:
    """Two param groups with different lr, weight decay, eps and reckless steps."""
    gen = torch.Generator().manual_seed(7)
    params = [
        [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes] for shapes in SHAPES
    ]
    lr0 = 0.05 if kind == "sgd" else 0.01
    return [
        dict(params=params[0], lr=lr0, weight_decay=0.05, **opts),
        dict(
            params=params[1],
            lr=lr0 * 2,
            weight_decay=0.0 if kind != "lamb" else 0.02,
            eps=1e-5,
            reckless_steps=(1.5, 5.0),
            **opts,
        ),
    ]


def loss_grads(params: list[torch.Tensor], step: int) -> list[torch.Tensor]:
    """Gradients of a non-quadratic loss that changes with the step: sum(cos(p)*w + p^4/4 * s)."""
    out = []
    for i, p in enumerate(params):
        w = 1.0 + 0.3 * i
        out.append(-torch.sin(p) * w + 0.2 * p**3 + 0.05 * (step % 3) - 0.02 * i)
    return out


def run_production(cls, groups, steps, *, foreach, dtype=torch.float64, **constructor):
    groups = copy.deepcopy(groups)
    params = []
    for g in groups:
        g["params"] = [torch.nn.Parameter(p.clone().to(dtype)) for p in g["params"]]
        params.extend(g["params"])
    opt = cls(groups, foreach=foreach, **constructor)
    for k in range(steps):
        for p, g in zip(params, loss_grads([p.detach() for p in params], k)):
            p.grad = g.clone()
        opt.step()
    return opt, params


def run_reference(kind, groups, steps, **constructor):
    ref = ReferenceWin(kind, copy.deepcopy(groups), **constructor)
    sizes = [len(g["params"]) for g in groups]
    for k in range(steps):
        grads = loss_grads(ref.params(), k)
        ref.step([grads[: sizes[0]], grads[sizes[0] :]])
    return ref


def clip_threshold(kind: str) -> float:
    """Inside the range of global norms these runs see, so clipping is active on some steps only."""
    return 2.0 if kind == "sgd" else 4.0


def lr_for(kind: str) -> dict:
    return {"lr": 0.05} if kind == "sgd" else {}


OPTION_VARIANTS = {
    "adamw": [{}, {"amsgrad": True}],
    "adam": [{}, {"amsgrad": True}],
    "lamb": [
        {},
        {"trust_clip": True, "grad_averaging": False},
        {"always_adapt": True, "bias_correction": False},
    ],
    "sgd": [{}, {"nesterov": False, "dampening": 0.3}, {"nesterov": False, "momentum": 0.0}],
}
CASES = [
    (kind, mode, clip, opts)
    for kind in CLASSES
    for mode in MODES
    for clip in (False, True)
    for opts in (OPTION_VARIANTS[kind] if not clip else OPTION_VARIANTS[kind][:1])
]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "kind,mode,clip,opts", CASES, ids=lambda v: str(v) if not isinstance(v, dict) else str(v)
)
def test_matches_reference(kind, mode, clip, opts, foreach):
    max_norm = clip_threshold(kind) if clip else 0.0
    constructor = dict(acceleration_mode=mode, max_grad_norm=max_norm, **lr_for(kind))
    groups = make_groups(kind, mode, opts)
    opt, params = run_production(CLASSES[kind], groups, STEPS, foreach=foreach, **constructor)
    ref = run_reference(kind, groups, STEPS, **constructor)
    for got, want in zip(params, ref.params()):
        torch.testing.assert_close(got.detach(), want, rtol=1e-10, atol=1e-12)
    flat_states = [opt.state[p] for p in params]
    for (gi, pj), st in ref.state.items():
        got = flat_states[sum(len(g["params"]) for g in groups[:gi]) + pj]
        if mode != "none":
            torch.testing.assert_close(got["x"], st["x"], rtol=1e-10, atol=1e-12)
        if mode == "win2":
            torch.testing.assert_close(got["y"], st["y"], rtol=1e-10, atol=1e-12)
        assert ("y" in got) == (mode == "win2") and ("x" in got) == (mode != "none")


def test_clipping_is_active_in_reference_cases():
    """The clipped cases above are only meaningful if the factor is < 1 on some steps."""
    for kind in CLASSES:
        ref = ReferenceWin(
            kind, make_groups(kind, "win", {}), max_grad_norm=clip_threshold(kind), **lr_for(kind)
        )
        factors = []
        sizes = [len(g["params"]) for g in ref.groups]
        for k in range(STEPS):
            grads = loss_grads(ref.params(), k)
            factors.append(ref._clip_factor(grads))
            ref.step([grads[: sizes[0]], grads[sizes[0] :]])
        assert min(factors) < 0.95 and max(factors) == 1.0, (kind, factors)


@pytest.mark.parametrize("kind", list(CLASSES))
@pytest.mark.parametrize("mode", MODES)
def test_foreach_and_loop_paths_agree_fp32(kind, mode):
    groups = make_groups(kind, mode, {})
    kw = dict(acceleration_mode=mode, max_grad_norm=1.0, dtype=torch.float32, **lr_for(kind))
    _, loop = run_production(CLASSES[kind], groups, 10, foreach=False, **kw)
    _, fe = run_production(CLASSES[kind], groups, 10, foreach=True, **kw)
    for a, b in zip(loop, fe):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------- equal to torch.optim
def _torch_pair(make_torch, make_win, steps=20, dtype=torch.float32):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    model = model.to(dtype)
    twin = copy.deepcopy(model)
    opt_t, opt_w = make_torch(model.parameters()), make_win(twin.parameters())
    data = torch.randn(16, 6, dtype=dtype)
    for _ in range(steps):
        for m, opt in ((model, opt_t), (twin, opt_w)):
            opt.zero_grad()
            m(data).pow(2).mean().backward()
            opt.step()
    return list(model.parameters()), list(twin.parameters())


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_adamw_none_equals_torch_adamw_bitwise(foreach, amsgrad):
    kw = dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, amsgrad=amsgrad)
    ref, win = _torch_pair(
        lambda ps: torch.optim.AdamW(ps, foreach=foreach, **kw),
        lambda ps: AdamW_Win(ps, acceleration_mode="none", foreach=foreach, **kw),
    )
    for a, b in zip(ref, win):
        assert torch.equal(a, b)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_sgd_none_equals_torch_sgd_nesterov_bitwise(foreach, weight_decay):
    kw = dict(lr=0.05, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    ref, win = _torch_pair(
        lambda ps: torch.optim.SGD(ps, foreach=foreach, **kw),
        lambda ps: SGD_Win(ps, acceleration_mode="none", foreach=foreach, **kw),
    )
    for a, b in zip(ref, win):
        assert torch.equal(a, b)


def test_adam_win_none_is_kingma_ba_not_torch_adam():
    """Documented: eps before bias correction, so mode 'none' differs from torch.optim.Adam."""
    kw = dict(lr=0.1, eps=1e-3)
    ref, win = _torch_pair(
        lambda ps: torch.optim.Adam(ps, **kw),
        lambda ps: Adam_Win(ps, acceleration_mode="none", **kw),
        steps=5,
        dtype=torch.float64,
    )
    gap = max(float((a - b).detach().abs().max()) for a, b in zip(ref, win))
    assert gap > 1e-5


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("foreach", [False, True])
def test_lamb_trust_clip_caps_ratio_above_one(mode, foreach):
    """Large weights make ||p||/||u|| > 1, so trust_clip must change the step (WIN.md §2.3 (6))."""
    finals = {}
    for trust_clip in (False, True):
        p0 = torch.linspace(-8.0, 8.0, 6, dtype=torch.float64)
        p = torch.nn.Parameter(p0.clone())
        kw = dict(lr=0.01, weight_decay=0.01, trust_clip=trust_clip, acceleration_mode=mode)
        opt = LAMB_Win([p], foreach=foreach, **kw)
        ref = ReferenceWin("lamb", [{"params": [p0]}], **kw)
        for k in range(5):
            grad = torch.cos(p.detach()) + 0.1 * k
            p.grad = grad
            opt.step()
            ref.step([[grad]])
        torch.testing.assert_close(p.detach(), ref.params()[0], rtol=1e-10, atol=1e-12)
        finals[trust_clip] = p.detach().clone()
    assert float((finals[True] - finals[False]).abs().max()) > 1e-3
