"""Quirks of the original Win code, fixed on purpose (WIN.md §6), and torch.optim conventions."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from test_win_reference import ReferenceWin

from adan_core.win import Adam_Win, AdamW_Win, LAMB_Win, Lamb_Win, SGD_Win
from adan_core.win_core import win_reckless_update_

CLASSES = {"adamw": AdamW_Win, "adam": Adam_Win, "lamb": LAMB_Win, "sgd": SGD_Win}
MODES = ("none", "win", "win2")
ALL = [(k, m) for k in CLASSES for m in MODES]


def make(kind, params, **kw):
    if kind == "sgd":
        kw.setdefault("lr", 0.05)
    return CLASSES[kind](params, **kw)


def tiny_model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1)).to(
        dtype
    )


def train(model, opt, steps, seed=1):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        data = torch.randn(8, 4, generator=gen, dtype=next(model.parameters()).dtype)
        opt.zero_grad()
        model(data).sin().sum().backward()
        opt.step()


# ------------------------------------------------------------------ 1. the default mode works
@pytest.mark.parametrize("kind", list(CLASSES))
def test_default_mode_is_win_and_steps(kind):
    model = tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    opt = make(kind, model.parameters())
    assert opt.defaults["acceleration_mode"] == "win"
    train(model, opt, 2)
    assert all("x" in opt.state[p] and "y" not in opt.state[p] for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_lamb_alias():
    assert Lamb_Win is LAMB_Win


# --------------------------------------------------------------------- 2./3. bad arguments
@pytest.mark.parametrize("kind", list(CLASSES))
@pytest.mark.parametrize("mode", ["WIN", "win3", "Win2", None, "", 1])
def test_bad_mode_raises_at_construction(kind, mode):
    with pytest.raises(ValueError, match="acceleration_mode"):
        make(kind, tiny_model().parameters(), acceleration_mode=mode)


def test_bad_mode_in_a_group_and_after_construction():
    model = tiny_model()
    with pytest.raises(ValueError, match="acceleration_mode"):
        AdamW_Win([{"params": model.parameters(), "acceleration_mode": "win3"}])
    opt = AdamW_Win(model.parameters())
    opt.param_groups[0]["acceleration_mode"] = "WIN"
    model(torch.randn(2, 4)).sum().backward()
    with pytest.raises(ValueError, match="'WIN'"):
        opt.step()


@pytest.mark.parametrize("kind", list(CLASSES))
@pytest.mark.parametrize(
    "steps", [(0.0, 8.0), (2.0, 0.0), (-1.0, 8.0), (2.0, -3.0), (float("nan"), 8.0), (2.0,), "ab"]
)
def test_bad_reckless_steps_raise(kind, steps):
    with pytest.raises(ValueError, match="reckless_steps|gamma"):
        make(kind, tiny_model().parameters(), reckless_steps=steps)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr=-1.0), "lr"),
        (dict(lr=torch.tensor(0.1)), "lr"),
        (dict(eps=-1e-8), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(betas=(0.9, 1.0)), "betas"),
        (dict(betas=(0.9,)), "betas"),
        (dict(max_grad_norm=-1.0), "max_grad_norm"),
        (dict(foreach="yes"), "foreach"),
        (dict(fused=True), "fused"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        AdamW_Win(tiny_model().parameters(), **kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(momentum=-0.1), "momentum"),
        (dict(nesterov=True, momentum=0.0), "nesterov"),
        (dict(nesterov=True, dampening=0.1), "nesterov"),
        (dict(nesterov=False, dampening=1.5), "dampening"),
    ],
)
def test_bad_sgd_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SGD_Win(tiny_model().parameters(), lr=0.1, **kwargs)


def test_max_grad_norm_is_optimizer_wide():
    model = tiny_model()
    with pytest.raises(ValueError, match="optimizer-wide"):
        AdamW_Win(
            [{"params": [model[0].weight], "max_grad_norm": 1.0}, {"params": [model[2].weight]}]
        )


# ------------------------------------------------------------------------ 2. lr = 0 is valid
@pytest.mark.parametrize("kind,mode", [(k, m) for k in CLASSES for m in ("win", "win2")])
def test_lr_zero_pulls_reckless_toward_conservative(kind, mode):
    model = tiny_model()
    opt = make(kind, model.parameters(), acceleration_mode=mode, reckless_steps=(2.0, 8.0))
    train(model, opt, 3)  # x and p now differ
    snap = {
        p: {k: v.clone() for k, v in opt.state[p].items() if k in ("x", "y")} for p in opt.state
    }
    p_before = {p: p.detach().clone() for p in model.parameters()}
    for group in opt.param_groups:
        group["lr"] = 0.0
    train(model, opt, 1, seed=5)
    g1, g2 = 2.0, 8.0
    for p in model.parameters():
        x = snap[p]["x"]
        torch.testing.assert_close(opt.state[p]["x"], x, rtol=0, atol=0)  # x unchanged
        if mode == "win":
            want = (p_before[p] + g1 * x) / (1 + g1)
        else:
            y = (snap[p]["y"] + g1 * x) / (1 + g1)
            torch.testing.assert_close(opt.state[p]["y"], y)
            want = (p_before[p] + g2 * x + (g2 / g1) * y) / (1 + g2 + g2 / g1)
        torch.testing.assert_close(p.detach(), want)


@pytest.mark.parametrize("kind,mode", ALL)
def test_schedule_through_lr_zero_does_not_crash(kind, mode):
    model = tiny_model()
    opt = make(kind, model.parameters(), acceleration_mode=mode)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: abs(1 - k / 2))  # 1, .5, 0, .5, 1
    for _ in range(5):
        train(model, opt, 1)
        sched.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ------------------------------------------------------------ 2. max_grad_norm = 0 / None
@pytest.mark.parametrize("kind,mode", ALL)
@pytest.mark.parametrize("off", [0.0, None])
def test_max_grad_norm_zero_or_none_means_no_clipping(kind, mode, off):
    """Equal, bit for bit, to a threshold so large the factor is exactly 1."""
    runs = []
    for c in (off, 1e30):
        model = tiny_model()
        opt = make(kind, model.parameters(), acceleration_mode=mode, max_grad_norm=c)
        train(model, opt, 4)
        runs.append([p.detach() for p in model.parameters()])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_lamb_max_grad_norm_zero_trains_like_unclipped_reference():
    """The original zeroes every gradient for C = 0; here C = 0 follows the unclipped math."""
    p0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    p = torch.nn.Parameter(p0.clone())
    opt = LAMB_Win([p], lr=1e-2, weight_decay=0.01, max_grad_norm=0.0)
    ref = ReferenceWin("lamb", [{"params": [p0]}], lr=1e-2, weight_decay=0.01, max_grad_norm=0.0)
    for _ in range(3):
        grad = torch.tensor([30.0, -40.0, 50.0], dtype=torch.float64) * p.detach()
        p.grad = grad
        opt.step()
        ref.step([[grad]])
    torch.testing.assert_close(p.detach(), ref.params()[0], rtol=1e-12, atol=1e-12)
    # not the original's "decay only" collapse: p moved much more than a 0.9867 rescale
    assert float((p.detach() - 0.9867 * p0).abs().max()) > 0.02


# ------------------------------------------------------ 2. clipping eps: constructor, not last
@pytest.mark.parametrize("kind", ["adamw", "adam", "sgd"])
def test_clip_eps_is_the_constructor_eps(kind):
    torch.manual_seed(3)
    w = [torch.randn(3, dtype=torch.float64) * 0.1, torch.randn(2, dtype=torch.float64) * 0.1]
    grads = [torch.randn(3, dtype=torch.float64) * 0.2, torch.randn(2, dtype=torch.float64) * 0.2]
    # a large group eps makes the original's "last group's eps" visibly change the clip factor
    specs = [{"eps": 1e-8}, {"eps": 0.5}]
    finals = []
    for order in ((0, 1), (1, 0)):
        params = [torch.nn.Parameter(w[i].clone()) for i in order]
        opt = make(
            kind,
            [{"params": [params[j]], **specs[i]} for j, i in enumerate(order)],
            max_grad_norm=0.1,
            eps=1e-8,
        )
        for _ in range(3):
            for j, i in enumerate(order):
                params[j].grad = grads[i].clone()
            opt.step()
        finals.append({i: params[j].detach().clone() for j, i in enumerate(order)})
    for i in (0, 1):
        torch.testing.assert_close(finals[0][i], finals[1][i], rtol=0, atol=0)
    ref = ReferenceWin(
        kind,
        [{"params": [w[0]], **specs[0]}, {"params": [w[1]], **specs[1]}],
        max_grad_norm=0.1,
        eps=1e-8,
        **({"lr": 0.05} if kind == "sgd" else {}),
    )
    for _ in range(3):
        ref.step([[grads[0]], [grads[1]]])
    for i in (0, 1):
        torch.testing.assert_close(finals[0][i], ref.params()[i], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ 2. no host sync
@pytest.mark.parametrize("kind,mode", ALL)
@pytest.mark.parametrize("foreach", [False, True])
def test_no_host_sync_on_meta_device(kind, mode, foreach):
    """Meta tensors have no data: any .item(), float(t), bool(t) or .tolist() in step() raises."""
    params = [torch.nn.Parameter(torch.empty(3, 4, device="meta")) for _ in range(2)]
    opt = make(
        kind, params, acceleration_mode=mode, max_grad_norm=1.0, weight_decay=0.1, foreach=foreach
    )
    for _ in range(2):
        for p in params:
            p.grad = torch.empty(3, 4, device="meta")
        opt.step()
    assert all(opt.state[p]["step"] == 2 for p in params)


@pytest.mark.parametrize("kind,mode", ALL)
def test_no_host_sync_on_cuda(kind, mode):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA: checks step() under torch.cuda.set_sync_debug_mode('error')")
    params = [torch.nn.Parameter(torch.randn(64, device="cuda")) for _ in range(3)]
    opt = make(kind, params, acceleration_mode=mode, max_grad_norm=0.5, weight_decay=0.1)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()  # state creation may allocate; the steady-state step must not sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        opt.step()
    finally:
        torch.cuda.set_sync_debug_mode(0)


# -------------------------------------------------------------- 2. p.grad left as given
@pytest.mark.parametrize("kind,mode", ALL)
@pytest.mark.parametrize("clip", [0.0, 0.01])
@pytest.mark.parametrize("foreach", [False, True])
def test_grad_is_untouched(kind, mode, clip, foreach):
    model = tiny_model()
    opt = make(
        kind,
        model.parameters(),
        acceleration_mode=mode,
        max_grad_norm=clip,
        weight_decay=0.1,
        foreach=foreach,
    )
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(8, 4)).pow(2).sum().backward()
        raw = [p.grad.clone() for p in model.parameters()]
        opt.step()
        for p, g in zip(model.parameters(), raw):
            assert torch.equal(p.grad, g)


# ------------------------------------------------------------- precision and warnings
@pytest.mark.parametrize("kind", ["adamw", "sgd", "lamb"])
def test_fp16_grad_of_300_with_clipping(kind):
    """The norm is accumulated in fp32: 300**2 overflows fp16, which would zero every grad."""
    grad = [300.0, 100.0, -100.0, 200.0]  # large enough for fp16 Adam moments after clipping
    moved = {}
    for dtype in (torch.float16, torch.float32):
        p = torch.nn.Parameter(torch.full((4,), 0.5, dtype=dtype))
        opt = make(kind, [p], max_grad_norm=1.0, weight_decay=0.0, acceleration_mode="none")
        p.grad = torch.tensor(grad, dtype=dtype)
        opt.step()
        moved[dtype] = (p.detach().float() - 0.5).tolist()
    assert all(abs(m) > 1e-4 for m in moved[torch.float16])  # not zeroed
    assert moved[torch.float16] == pytest.approx(moved[torch.float32], rel=2e-2, abs=1e-4)


@pytest.mark.parametrize("kind,mode", ALL)
def test_no_warnings_in_normal_use(kind, mode):
    model = tiny_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt = make(kind, model.parameters(), acceleration_mode=mode, max_grad_norm=1.0)
        train(model, opt, 2)


# ----------------------------------------------------------- state: late params, empties
@pytest.mark.parametrize("kind", list(CLASSES))
def test_late_param_counts_its_own_steps(kind):
    """Per-parameter step counters for all four (the original LAMB counts per group)."""
    a = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    fresh = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    kw = dict(weight_decay=0.1, max_grad_norm=0.0)  # a global norm would couple a and b
    opt = make(kind, [{"params": [a]}, {"params": [b]}], **kw)
    opt_fresh = make(kind, [fresh], **kw)
    for k in range(3):
        a.grad = a.detach() * 0.5 + 0.1
        b.grad = None if k < 2 else b.detach() * 0.5 + 0.1
        opt.step()
    fresh.grad = fresh.detach() * 0.5 + 0.1
    opt_fresh.step()
    assert opt.state[a]["step"] == 3 and opt.state[b]["step"] == 1
    assert torch.equal(b.detach(), fresh.detach())  # b's first step is a true first step


@pytest.mark.parametrize("kind", list(CLASSES))
def test_empty_and_gradless_groups(kind):
    p = torch.nn.Parameter(torch.ones(3))
    opt = make(kind, [{"params": [p]}, {"params": []}])
    opt.step()  # no grads at all
    assert len(opt.state) == 0
    p.grad = torch.ones(3)
    opt.step()
    assert opt.state[p]["step"] == 1


# ------------------------------------------------------------------ checkpoints / resume
@pytest.mark.parametrize("kind,mode", ALL)
def test_resume_from_state_dict_is_bitwise_identical(kind, mode):
    kw = dict(acceleration_mode=mode, max_grad_norm=1.0, weight_decay=0.05)
    full = tiny_model()
    opt_full = make(kind, full.parameters(), **kw)
    train(full, opt_full, 6, seed=1)
    train(full, opt_full, 6, seed=2)

    first = tiny_model()
    opt_first = make(kind, first.parameters(), **kw)
    train(first, opt_first, 6, seed=1)
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt_first.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    resumed = tiny_model(seed=99)
    resumed.load_state_dict(ckpt["model"])
    opt_resumed = make(kind, resumed.parameters(), **kw)
    opt_resumed.load_state_dict(ckpt["opt"])
    train(resumed, opt_resumed, 6, seed=2)
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", list(CLASSES))
@pytest.mark.parametrize(
    "saved,wanted", [("win", "win2"), ("win2", "win"), ("win", "none"), ("win2", "none")]
)
def test_loading_a_checkpoint_of_another_mode_raises(kind, saved, wanted):
    model = tiny_model()
    opt = make(kind, model.parameters(), acceleration_mode=saved)
    train(model, opt, 2)
    sd = opt.state_dict()
    other = make(kind, tiny_model().parameters(), acceleration_mode=wanted)
    with pytest.raises(ValueError, match=f"'{saved}'.*'{wanted}'"):
        other.load_state_dict(copy.deepcopy(sd))


@pytest.mark.parametrize("kind", list(CLASSES))
@pytest.mark.parametrize("wanted", ["win", "win2"])
def test_none_checkpoint_into_win_warns_and_starts_from_p(kind, wanted):
    model = tiny_model()
    opt = make(kind, model.parameters(), acceleration_mode="none")
    train(model, opt, 2)
    other_model = copy.deepcopy(model)
    other = make(kind, other_model.parameters(), acceleration_mode=wanted)
    with pytest.warns(UserWarning, match="without Win state"):
        other.load_state_dict(opt.state_dict())
    assert other.param_groups[0]["acceleration_mode"] == wanted
    p = next(other_model.parameters())
    p0 = p.detach().clone()
    with pytest.warns(UserWarning, match="creating Win buffers"):
        train(other_model, other, 1)
    assert other.state[p]["step"] == 3  # the base optimizer's state carried over
    assert "x" in other.state[p] and ("y" in other.state[p]) == (wanted == "win2")
    assert not torch.equal(p.detach(), p0)


def test_torch_adamw_checkpoint_loads_into_adamw_win():
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train(model, opt, 3)
    win = AdamW_Win(model.parameters(), lr=1e-2)
    with pytest.warns(UserWarning, match="without Win state"):
        win.load_state_dict(opt.state_dict())
    p = next(model.parameters())
    assert win.state[p]["step"] == 3 and isinstance(win.state[p]["step"], int)
    with pytest.warns(UserWarning, match="creating Win buffers"):
        train(model, win, 1)
    assert win.state[p]["step"] == 4


# --------------------------------------------------------------- the pure Win core function
@pytest.mark.parametrize("mode", ["win", "win2"])
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("lr", [0.0, 0.3])
def test_win_reckless_update_function(mode, foreach, lr):
    torch.manual_seed(0)
    shapes = [(3, 2), (4,)]
    p = [torch.randn(s, dtype=torch.float64) for s in shapes]
    x = [torch.randn(s, dtype=torch.float64) for s in shapes]
    y = [torch.randn(s, dtype=torch.float64) for s in shapes]
    u = [torch.randn(s, dtype=torch.float64) for s in shapes]
    want_p, want_x, want_y = [t.clone() for t in p], [t.clone() for t in x], [t.clone() for t in y]
    for i in range(len(shapes)):
        group = {"lr": lr, "reckless_steps": (1.5, 6.0), "acceleration_mode": mode}
        st = {"x": want_x[i], "y": want_y[i]}
        ReferenceWin._core(group, want_p[i], st, u[i], 0.2)
        want_x[i], want_y[i] = st["x"], st["y"]
    u_before = [t.clone() for t in u]
    win_reckless_update_(
        p,
        x,
        y if mode == "win2" else None,
        u,
        lr=lr,
        weight_decay=0.2,
        reckless_steps=(1.5, 6.0),
        mode=mode,
        foreach=foreach,
    )
    for got, want in zip(p + x, want_p + want_x):
        torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-14)
    if mode == "win2":
        for got, want in zip(y, want_y):
            torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-14)
    assert all(torch.equal(a, b) for a, b in zip(u, u_before))


# ------------------------------------------------------------------------- optim_factory
@pytest.mark.parametrize("name,cls", [(f"{k}_win", c) for k, c in CLASSES.items()])
def test_registered_in_optim_factory(name, cls):
    factory = pytest.importorskip("adan_core.optim_factory")
    import argparse

    parser = argparse.ArgumentParser()
    factory.add_optimizer_args(parser)
    args = parser.parse_args(
        ["--opt", name, "--lr", "0.01", "--acceleration-mode", "win2", "--reckless-steps", "1", "4"]
    )
    opt = factory.create_optimizer(tiny_model(), args)
    assert type(opt) is cls
    assert all(g["acceleration_mode"] == "win2" for g in opt.param_groups)
    assert all(g["reckless_steps"] == (1.0, 4.0) for g in opt.param_groups)
