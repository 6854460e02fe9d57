"""State: first-step rule, restart, checkpoint round trips and the official checkpoint layouts."""

from __future__ import annotations

import io

import pytest
import torch
from conftest import PATH_FLAGS, path_params

from adan_core import Adan

A = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
B = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
P3_WD0 = torch.tensor([0.7017664462, -1.7005537510, 0.2017664491], dtype=torch.float64)


def _set_grad(p):
    p.grad = A.to(p.dtype) * p.detach() + B.to(p.dtype)


@pytest.mark.parametrize("path", path_params())
def test_first_step_has_zero_difference_and_sign_like_update(path):
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = Adan([p], lr=0.1, **PATH_FLAGS[path])
    _set_grad(p)
    g = p.grad.clone()
    opt.step()
    st = opt.state[p]
    assert torch.equal(st["exp_avg_diff"], torch.zeros(3))
    assert torch.equal(st["neg_pre_grad"], -g)
    assert float(st["step"]) == 1.0
    # p1 = p0 - lr * g / (|g| + eps): a step of ~lr in every coordinate
    torch.testing.assert_close(p.detach(), torch.tensor([0.9, -1.9, 0.4]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("path", path_params())
def test_restart_matches_official_numbers(path):
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float32))
    opt = Adan([p], lr=0.1, **PATH_FLAGS[path])
    for _ in range(2):
        _set_grad(p)
        opt.step()
    opt.restart()
    st = opt.state[p]
    assert float(st["step"]) == 0 and not st["exp_avg"].any() and not st["exp_avg_sq"].any()
    _set_grad(p)
    opt.step()
    expected = torch.tensor([0.7006468225, -1.7002112805, 0.2006468255], dtype=torch.float64)
    torch.testing.assert_close(p.detach().double(), expected, rtol=0, atol=1e-6)
    assert opt.state_dict()["param_groups"][0]["step"] == 1
    assert opt.restart_opt.__func__ is Adan.restart


def _train(model, opt, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=gen)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.Linear(9, 2))


@pytest.mark.parametrize("path", path_params())
def test_resume_from_state_dict_gives_identical_trajectory(path):
    kwargs = dict(lr=3e-3, weight_decay=0.02, max_grad_norm=0.5, **PATH_FLAGS[path])
    straight = _model()
    opt = Adan(straight.parameters(), **kwargs)
    _train(straight, opt, 4, seed=1)
    _train(straight, opt, 4, seed=2)

    first = _model()
    opt1 = Adan(first.parameters(), **kwargs)
    _train(first, opt1, 4, seed=1)
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt1.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)
    resumed = _model()
    resumed.load_state_dict(ckpt["model"])
    opt2 = Adan(resumed.parameters(), **kwargs)
    opt2.load_state_dict(ckpt["opt"])
    _train(resumed, opt2, 4, seed=2)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(opt.state.values(), opt2.state.values()):
        for key in ("exp_avg", "exp_avg_sq", "exp_avg_diff", "neg_pre_grad", "step"):
            assert torch.equal(a[key], b[key]), key


# ADAN.md §8 checkpoint fixture: official layout after 2 steps of the wd = 0 problem.
P2 = [0.8006468213494521, -1.8002112802339745, 0.30064682323319786]
OFFICIAL_STATE_2 = dict(
    exp_avg=[0.04156000001818186, -0.16232000000952396, 0.020780000018181838],
    exp_avg_sq=[0.02022364003169748, 0.3202545600697786, 0.005055910015848732],
    exp_avg_diff=[-0.007999999927272721, 0.015999999961904755, -0.003999999927272729],
    neg_pre_grad=[-1.000000000909091, 4.000000000476191, -0.5000000009090909],
)


def _official_state_dict(layout="current", fused=False):
    state = {k: torch.tensor(v, dtype=torch.float64) for k, v in OFFICIAL_STATE_2.items()}
    group = dict(
        lr=0.1,
        betas=(0.98, 0.92, 0.99),
        eps=1e-8,
        weight_decay=0.0,
        max_grad_norm=0.0,
        no_prox=False,
        foreach=True,
        fused=fused,
        step=2,
        params=[0],
    )
    if layout == "2022":
        state["pre_grad"] = -state.pop("neg_pre_grad")
        del group["foreach"], group["fused"]
    return {"state": {0: state}, "param_groups": [group]}


@pytest.mark.parametrize("layout", ["current", "2022"])
@pytest.mark.parametrize("path", path_params("single", "foreach"))
def test_official_checkpoint_continues_exactly(layout, path):
    p = torch.nn.Parameter(torch.tensor(P2, dtype=torch.float64))
    opt = Adan([p], **PATH_FLAGS[path])
    opt.load_state_dict(_official_state_dict(layout))
    group = opt.param_groups[0]
    assert group["lr"] == 0.1 and group["no_prox"] is False and "capturable" in group
    assert float(opt.state[p]["step"]) == 2
    opt.param_groups[0].update(PATH_FLAGS[path])
    _set_grad(p)
    opt.step()
    torch.testing.assert_close(p.detach(), P3_WD0, rtol=0, atol=1e-9)


def test_checkpoint_saved_with_fused_runs_where_no_fused_backend_exists(chosen_impl):
    p = torch.nn.Parameter(torch.tensor(P2, dtype=torch.float32))
    opt = Adan([p])
    opt.load_state_dict(_official_state_dict(fused=True))
    # the live optimizer's implementation flags win over the checkpoint's
    assert opt.param_groups[0]["fused"] is None and opt.param_groups[0]["foreach"] is None
    _set_grad(p)
    opt.step()
    assert chosen_impl == ["cpu_fused"]
    torch.testing.assert_close(p.detach().double(), P3_WD0, rtol=0, atol=2e-6)


@pytest.mark.parametrize("path", path_params())
def test_official_foreach_flag_does_not_pin_the_implementation(path, chosen_impl):
    """Official checkpoints say foreach=True; the implementation stays this optimizer's choice."""
    p = torch.nn.Parameter(torch.tensor(P2, dtype=torch.float32))
    opt = Adan([p], **PATH_FLAGS[path])
    opt.load_state_dict(_official_state_dict())
    for key in ("foreach", "fused", "capturable"):
        assert opt.param_groups[0][key] == opt.defaults[key]
    _set_grad(p)
    opt.step()
    assert chosen_impl == [path]


def test_fused_flag_restored_where_it_cannot_run_warns_and_falls_back(monkeypatch, chosen_impl):
    """A fused=True that cannot run (here: its kernel is reported unavailable) falls back."""
    import adan_core.functional as functional

    p = torch.nn.Parameter(torch.tensor(P2, dtype=torch.float32))
    opt = Adan([p], fused=True)
    opt.load_state_dict(_official_state_dict())
    monkeypatch.setattr(functional, "fused_unavailable", lambda device: "no GPU here (test)")
    _set_grad(p)
    with pytest.warns(RuntimeWarning, match="cannot run here: no GPU here"):
        opt.step()
    assert chosen_impl == ["cpu_fused"]
    torch.testing.assert_close(p.detach().double(), P3_WD0, rtol=0, atol=2e-6)


def _timm_2022_state_dict():
    """timm's 2022 Adan after the same 2 steps: official 2022 names, but n stored under
    'exp_avg_diff' and d under 'exp_avg_sq', a positive pre_grad, no max_grad_norm."""
    sd = _official_state_dict("2022")
    st = sd["state"][0]
    st["exp_avg_sq"], st["exp_avg_diff"] = st["exp_avg_diff"], st["exp_avg_sq"]
    del sd["param_groups"][0]["max_grad_norm"]
    return sd


def test_timm_2022_checkpoint_is_refused_by_name():
    p = torch.nn.Parameter(torch.tensor(P2, dtype=torch.float64))
    opt = Adan([p])
    with pytest.raises(ValueError, match="timm's 2022 Adan"):
        opt.load_state_dict(_timm_2022_state_dict())
    assert not opt.state  # nothing was loaded


def test_timm_2022_checkpoint_is_refused_by_content_even_with_max_grad_norm():
    sd = _timm_2022_state_dict()
    sd["param_groups"][0]["max_grad_norm"] = 0.0
    opt = Adan([torch.nn.Parameter(torch.tensor(P2, dtype=torch.float64))])
    with pytest.raises(ValueError, match="negative values in exp_avg_sq"):
        opt.load_state_dict(sd)


def test_our_checkpoint_has_the_official_group_step():
    p = torch.nn.Parameter(torch.randn(3))
    opt = Adan([p])
    for _ in range(3):
        p.grad = torch.randn(3)
        opt.step()
    sd = opt.state_dict()
    assert sd["param_groups"][0]["step"] == 3
    assert set(sd["state"][0]) == {"exp_avg", "exp_avg_sq", "exp_avg_diff", "neg_pre_grad", "step"}


@pytest.mark.parametrize(
    "key,source", [("previous_grad", "kozistr"), ("prev_grad", "optimi"), ("m", "lucidrains")]
)
def test_foreign_layouts_are_refused(key, source):
    p = torch.nn.Parameter(torch.randn(3))
    opt = Adan([p])
    sd = _official_state_dict()
    sd["state"][0][key] = torch.zeros(3)
    with pytest.raises(ValueError, match=source):
        opt.load_state_dict(sd)


@pytest.mark.parametrize("path", path_params())
def test_late_parameter_gets_its_own_bias_correction(path):
    """Documented choice: per-parameter steps. A parameter whose first gradient arrives at step 3
    takes a full first step (about lr per coordinate), not the official under-corrected one."""
    early = torch.nn.Parameter(torch.ones(4))
    late = torch.nn.Parameter(torch.ones(4))
    opt = Adan([early, late], lr=0.1, **PATH_FLAGS[path])
    for step in range(3):
        early.grad = torch.full((4,), 0.5)
        late.grad = torch.full((4,), 2.0) if step == 2 else None
        opt.step()
    assert float(opt.state[early]["step"]) == 3 and float(opt.state[late]["step"]) == 1
    torch.testing.assert_close(late.detach(), torch.full((4,), 0.9), rtol=0, atol=1e-6)


def test_deepcopy_and_pickle_keep_checkpoint_hooks_and_sharded():
    import copy
    import pickle

    p = torch.nn.Parameter(torch.randn(3))
    opt = Adan([p], sharded=True)
    p.grad = torch.randn(3)
    opt.step()
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert clone.sharded is True
        assert clone.state_dict()["param_groups"][0]["step"] == 1  # the post hook still runs
        q = torch.nn.Parameter(torch.tensor(P2, dtype=torch.float32))
        fresh = copy.deepcopy(Adan([q]))
        fresh.load_state_dict(_official_state_dict("2022"))  # the migration hook still runs
        copied_param = fresh.param_groups[0]["params"][0]  # deepcopy copies the param too
        assert "neg_pre_grad" in fresh.state[copied_param]
