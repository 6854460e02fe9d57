"""The torch.optim contract, checked for every optimizer class, every Adan path and every Win mode.

Each test runs on one *configuration* (a class, an implementation path and an acceleration mode)
and checks what any ``torch.optim.Optimizer`` promises its callers: it descends, honours param
groups and lr schedulers, handles non-contiguous parameters and gradients, evaluates closures,
checkpoints deterministically, skips parameters without a gradient and copes with ``zero_grad``.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from conftest import HAS_TRITON, PATH_FLAGS

from adan_core import Adam_Win, AdamW_Win, Adan, LAMB_Win, SGD_Win

MODES = ("none", "win", "win2")


@dataclass(frozen=True)
class Config:
    """One optimizer configuration. ``sgd`` marks the non-adaptive optimizer, whose lr must be
    chosen for the problem's curvature (the adaptive ones take steps of about lr per coordinate).
    """

    name: str
    cls: type
    kwargs: dict[str, Any] = field(default_factory=dict)
    sgd: bool = False

    def make(self, params, lr, **overrides):
        return self.cls(params, lr=lr, **{**self.kwargs, **overrides})


def _configs() -> list[Config]:
    out = [
        Config(f"Adan-{path}-{mode}", Adan, dict(PATH_FLAGS[path], acceleration_mode=mode))
        for path in PATH_FLAGS
        for mode in MODES
    ]
    for cls in (AdamW_Win, Adam_Win, LAMB_Win, SGD_Win):
        for mode in MODES:
            for foreach in (False, True):
                kwargs = dict(acceleration_mode=mode, foreach=foreach, weight_decay=0.0)
                name = f"{cls.__name__}-{'foreach' if foreach else 'single'}-{mode}"
                out.append(Config(name, cls, kwargs, sgd=cls is SGD_Win))
    return out


CONFIGS = _configs()


def _config_params():
    marks = pytest.mark.skip(reason="triton is not installed: fused path not testable")
    return [
        pytest.param(c, id=c.name, marks=[marks] if "fused" in c.kwargs and not HAS_TRITON else [])
        for c in CONFIGS
    ]


config_param = pytest.mark.parametrize("config", _config_params())


# ---------------------------------------------------------------------------------- problems
class LeastSquares:
    """0.5 * ||A w + b0 - y||^2 / rows, with A scaled so the Hessian A^T A / rows is near I."""

    def __init__(self, seed: int = 0, rows: int = 32, cols: int = 4):
        gen = torch.Generator().manual_seed(seed)
        self.A = torch.randn(rows, cols, generator=gen)
        self.y = (
            self.A @ torch.randn(cols, generator=gen) + 0.5 + 0.1 * torch.randn(rows, generator=gen)
        )
        design = torch.cat([self.A, torch.ones(rows, 1)], 1).double()
        best = torch.linalg.lstsq(design, self.y.double().unsqueeze(1)).solution.squeeze(1)
        self.optimum = float(self._loss(best[:-1].float(), best[-1:].float()))
        self.weight = torch.nn.Parameter(torch.zeros(cols))
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def _loss(self, weight, bias):
        return 0.5 * (self.A @ weight + bias - self.y).square().mean()

    def loss(self):
        return self._loss(self.weight, self.bias)

    def excess(self) -> float:
        with torch.no_grad():
            return float(self.loss()) - self.optimum

    def params(self):
        return [self.weight, self.bias]


def _lsq_lr(config: Config) -> float:
    return 0.1 if config.sgd else 0.05


def _train(opt, problem, steps, after_step=None):
    for _ in range(steps):
        opt.zero_grad()
        loss = problem.loss()
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step(loss.detach())


def rosenbrock(p):
    x, y = p[0], p[1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _random_grads(params, gen):
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)


def assert_same_state_dict(a, b, where="state_dict"):
    """Structural equality: same keys, same python values, tensors equal bit for bit."""
    assert type(a) is type(b) or (isinstance(a, (int, float)) and isinstance(b, (int, float))), (
        f"{where}: {type(a).__name__} != {type(b).__name__}"
    )
    if isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys differ: {set(a) ^ set(b)}"
        for key in a:
            assert_same_state_dict(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state_dict(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape, a.device) == (b.dtype, b.shape, b.device), where
        assert torch.equal(a, b), f"{where}: tensors differ"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# ------------------------------------------------------------------------------------ descent
@config_param
def test_descends_on_least_squares(config):
    problem = LeastSquares()
    opt = config.make(problem.params(), lr=_lsq_lr(config))
    start = problem.excess()
    _train(opt, problem, steps=50)
    assert problem.excess() < 0.15 * start, f"excess loss {problem.excess():.3g} from {start:.3g}"


@config_param
def test_param_groups_use_their_own_hyperparameters(config):
    """Two groups with different lr both descend; a third group with lr=0 and no grads is kept."""
    problem = LeastSquares(seed=1)
    frozen = torch.nn.Parameter(torch.randn(3))
    frozen_before = frozen.detach().clone()
    lr = _lsq_lr(config)
    groups = [
        dict(params=[problem.weight], lr=lr),
        dict(params=[problem.bias], lr=2 * lr),
        dict(params=[frozen], lr=0.0),
    ]
    opt = config.make(groups, lr=123.0)  # the constructor lr is overridden by every group
    assert [g["lr"] for g in opt.param_groups] == [lr, 2 * lr, 0.0]
    start = problem.excess()
    _train(opt, problem, steps=50)
    assert problem.excess() < 0.15 * start
    assert torch.equal(frozen.detach(), frozen_before)
    assert frozen not in opt.state


def _schedulers():
    return {
        "StepLR": lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5),
        "LambdaLR": lambda opt: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda epoch: 1.0 / (1.0 + 0.1 * epoch)
        ),
        # fed a metric that never improves: the lr drops by 0.7 every 5 steps
        "ReduceLROnPlateau": lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=0.7, patience=4
        ),
    }


@pytest.mark.parametrize("scheduler", list(_schedulers()))
@config_param
def test_lr_schedulers_drive_the_step(config, scheduler):
    """The scheduler's lr is the one the step uses: a twin optimizer that is handed the same lr
    values by hand ends bit for bit at the same parameters, and both descend."""
    problem, twin = LeastSquares(seed=2), LeastSquares(seed=2)
    base_lr = _lsq_lr(config)
    groups = [dict(params=[problem.weight]), dict(params=[problem.bias], lr=0.5 * base_lr)]
    opt = config.make(groups, lr=base_lr)
    sched = _schedulers()[scheduler](opt)
    twin_opt = config.make(
        [dict(params=[twin.weight]), dict(params=[twin.bias], lr=0.5 * base_lr)], lr=base_lr
    )
    start = problem.excess()
    used = []

    def after_step(loss):
        if scheduler == "ReduceLROnPlateau":
            sched.step(1.0)
        else:
            sched.step()

    for _ in range(40):
        used.append([g["lr"] for g in opt.param_groups])
        _train(opt, problem, steps=1, after_step=after_step)
    for lrs in used:
        for group, lr in zip(twin_opt.param_groups, lrs):
            group["lr"] = lr
        _train(twin_opt, twin, steps=1)

    constant = LeastSquares(seed=2)  # the same run without the schedule must end elsewhere
    constant_opt = config.make(
        [dict(params=[constant.weight]), dict(params=[constant.bias], lr=0.5 * base_lr)],
        lr=base_lr,
    )
    _train(constant_opt, constant, steps=len(used))
    assert not torch.equal(constant.weight.detach(), problem.weight.detach()), "lr was ignored"

    assert used[-1][0] < 0.5 * base_lr, f"the schedule did not lower the lr: {used[-1]}"
    assert len({lrs[0] for lrs in used}) > 2
    assert problem.excess() < 0.3 * start
    for a, b in zip(problem.params(), twin.params()):
        assert torch.equal(a.detach(), b.detach())


# ----------------------------------------------------------------------- layouts and closures
def _layouts():
    """name -> (make a param tensor over a buffer, the part of the buffer that is not the param)."""

    def transposed():
        base = torch.randn(6, 4)
        return base, base.t(), None

    def strided_slice():
        base = torch.randn(5, 8)
        return base, base[:, ::2], base[:, 1::2]

    def storage_offset():
        base = torch.randn(23)
        return base, base[3:20], torch.cat([base[:3], base[20:]])

    def channels_last():
        base = torch.randn(2, 3, 2, 2).contiguous(memory_format=torch.channels_last)
        return base, base, None

    return {
        "transposed": transposed,
        "strided_slice": strided_slice,
        "storage_offset": storage_offset,
        "channels_last": channels_last,
    }


def _rest_of(base, view):
    """A copy of the elements of ``base`` outside ``view`` (both share one storage)."""
    mask = torch.ones(base.untyped_storage().nbytes() // base.element_size(), dtype=torch.bool)
    flat = torch.empty(0, dtype=base.dtype).set_(base.untyped_storage())
    marker = torch.empty(0, dtype=torch.bool).set_(mask.untyped_storage())
    marker.as_strided(view.shape, view.stride(), view.storage_offset()).fill_(False)
    return flat[mask].clone()


@pytest.mark.parametrize("layout", list(_layouts()))
@config_param
def test_non_contiguous_params_match_contiguous_ones(config, layout):
    """A view (transposed, strided, offset, channels_last) as the parameter gives the same result
    as a contiguous copy, and the buffer outside the view is never written."""
    torch.manual_seed(3)
    base, view, _ = _layouts()[layout]()
    param = torch.nn.Parameter(view)
    assert param.data_ptr() == view.data_ptr()
    dense = torch.nn.Parameter(view.detach().clone(memory_format=torch.contiguous_format))
    outside = _rest_of(base, view)
    opt = config.make([param], lr=0.05, weight_decay=0.01)
    ref = config.make([dense], lr=0.05, weight_decay=0.01)
    gen = torch.Generator().manual_seed(4)
    for _ in range(4):
        grad = torch.randn(dense.shape, generator=gen)
        dense.grad = grad.clone()
        param.grad = torch.empty_like(param).copy_(grad)  # the param's own layout, as autograd
        opt.step()
        ref.step()
    torch.testing.assert_close(param.detach(), dense.detach(), rtol=2e-6, atol=1e-7)
    assert torch.equal(_rest_of(base, view), outside), "bytes outside the view were written"


@config_param
def test_non_contiguous_grads_match_contiguous_ones(config):
    torch.manual_seed(5)
    a = torch.nn.Parameter(torch.randn(4, 6))
    b = torch.nn.Parameter(a.detach().clone())
    opt = config.make([a], lr=0.05)
    ref = config.make([b], lr=0.05)
    gen = torch.Generator().manual_seed(6)
    for step in range(4):
        grad = torch.randn(6, 4, generator=gen).t()  # transposed: not contiguous
        if step == 2:
            grad = torch.randn(4, 12, generator=gen)[:, ::2]  # strided slice
        assert not grad.is_contiguous()
        raw = grad.clone()
        a.grad = grad
        b.grad = grad.contiguous()
        opt.step()
        ref.step()
        assert torch.equal(a.grad, raw), "the step wrote into p.grad"
    torch.testing.assert_close(a.detach(), b.detach(), rtol=2e-6, atol=1e-7)


@config_param
def test_step_evaluates_the_closure_and_returns_its_loss(config):
    problem = LeastSquares(seed=4)
    opt = config.make(problem.params(), lr=_lsq_lr(config))
    calls = []

    def closure():
        assert torch.is_grad_enabled(), "the closure must run with grad enabled"
        opt.zero_grad()
        loss = problem.loss()
        loss.backward()
        calls.append(loss.detach())
        return loss

    start = problem.excess()
    for k in range(1, 51):
        before = [p.detach().clone() for p in problem.params()]
        out = opt.step(closure)
        assert len(calls) == k, "the closure must be evaluated exactly once per step"
        assert out is not None and torch.equal(out.detach(), calls[-1])
        assert any(not torch.equal(b, p) for b, p in zip(before, problem.params()))
    assert problem.excess() < 0.15 * start
    assert opt.step() is None  # no closure: no loss


# --------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("via", ["in_memory", "torch_save"])
@config_param
def test_state_dict_round_trip_is_exact(config, via):
    """Run k steps, save, load into a fresh optimizer over copies of the params, continue both:
    the runs stay identical and the loaded optimizer saves exactly what it loaded."""
    torch.manual_seed(7)
    params = [torch.nn.Parameter(torch.randn(s)) for s in ((3, 4), (5,), (1,))]
    late = torch.nn.Parameter(torch.randn(2))  # no grad before the save: no state yet
    extra = dict(weight_decay=0.02) if config.cls is not SGD_Win else dict(weight_decay=1e-3)
    groups = [dict(params=params[:2]), dict(params=[params[2], late], lr=0.03)]
    opt = config.make(groups, lr=0.01, **extra)
    gen = torch.Generator().manual_seed(8)
    for _ in range(3):
        _random_grads(params, gen)
        opt.step()
    saved = opt.state_dict()
    if via == "torch_save":
        buffer = io.BytesIO()
        torch.save(saved, buffer)
        buffer.seek(0)
        to_load = torch.load(buffer, weights_only=True)
    else:
        to_load = copy.deepcopy(saved)
    snapshot = copy.deepcopy(saved)

    params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
    late2 = torch.nn.Parameter(late.detach().clone())
    groups2 = [dict(params=params2[:2]), dict(params=[params2[2], late2], lr=0.03)]
    opt2 = config.make(groups2, lr=0.01, **extra)
    opt2.load_state_dict(to_load)
    assert_same_state_dict(opt2.state_dict(), snapshot, "loaded.state_dict()")
    assert_same_state_dict(opt.state_dict(), snapshot, "original.state_dict()")

    for step in range(3):
        grads = [torch.randn(p.shape, generator=gen) for p in [*params, late]]
        for p, q, g in zip([*params, late], [*params2, late2], grads):
            if p is late and step == 0:
                continue  # the late param joins one step after the load
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        opt2.step()
        for p, q in zip([*params, late], [*params2, late2]):
            assert torch.equal(p.detach(), q.detach()), f"runs diverged at step {step + 1}"
    assert_same_state_dict(opt2.state_dict(), opt.state_dict(), "after continuing")
    # the round trip is stable: a reload, and a deep copy of the loaded optimizer, save the same
    opt3 = config.make(copy.deepcopy(groups2), lr=0.01, **extra)
    opt3.load_state_dict(opt2.state_dict())
    assert_same_state_dict(opt3.state_dict(), opt2.state_dict(), "reloaded.state_dict()")
    assert_same_state_dict(copy.deepcopy(opt2).state_dict(), opt2.state_dict(), "deepcopy")


WIN_CLASSES = [AdamW_Win, Adam_Win, LAMB_Win, SGD_Win]


@pytest.mark.parametrize("cls", WIN_CLASSES, ids=lambda c: c.__name__)
def test_win_checkpoint_lacking_newer_keys_gets_the_defaults(cls):
    """A checkpoint written before a hyperparameter existed still loads: the group gains the
    constructor's value for every key it lacks (and nothing torch-internal)."""
    p = torch.nn.Parameter(torch.randn(3))
    opt = cls([p], lr=0.01)
    p.grad = torch.randn(3)
    opt.step()
    saved = opt.state_dict()
    for key in ("reckless_steps", "foreach", "max_grad_norm"):
        del saved["param_groups"][0][key]
    fresh = cls([torch.nn.Parameter(p.detach().clone())], lr=0.01)
    fresh.load_state_dict(saved)
    assert_same_state_dict(fresh.state_dict(), opt.state_dict(), "old checkpoint loaded")


# ----------------------------------------------------------------------------------- Rosenbrock
@config_param
def test_rosenbrock_makes_clear_progress(config):
    p = torch.nn.Parameter(torch.tensor([1.5, 1.5]))
    opt = config.make([p], lr=2e-4 if config.sgd else 0.02)
    start = float(rosenbrock(p.detach()))
    for _ in range(200):
        opt.zero_grad()
        rosenbrock(p).backward()
        opt.step()
    end = float(rosenbrock(p.detach()))
    assert torch.isfinite(p).all()
    assert end < 0.01 * start, f"Rosenbrock {start:.3g} -> {end:.3g} at {p.detach().tolist()}"
    assert abs(float(p[0]) - 1) < 0.5, "x did not move towards the minimum at x = 1"


# ------------------------------------------------------------------------- gradients absent
def _state_of(opt, params):
    return {i: copy.deepcopy(opt.state[p]) for i, p in enumerate(params) if p in opt.state}


@config_param
def test_zero_grad_set_to_none_and_zero_filled(config):
    torch.manual_seed(9)
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    opt = config.make(params, lr=0.05)
    gen = torch.Generator().manual_seed(10)
    _random_grads(params, gen)
    opt.step()

    opt.zero_grad()  # set_to_none=True is the default
    assert all(p.grad is None for p in params)
    before, state = [p.detach().clone() for p in params], _state_of(opt, params)
    assert opt.step() is None
    for b, p in zip(before, params):
        assert torch.equal(b, p.detach()), "a step without grads moved a parameter"
    assert_same_state_dict(_state_of(opt, params), state, "state after a step without grads")

    _random_grads(params, gen)
    opt.zero_grad(set_to_none=False)
    for p in params:
        assert p.grad is not None and p.grad.shape == p.shape and not p.grad.any()
    opt.step()  # zero grads are real grads: the step counts
    for p in params:
        assert int(opt.state[p]["step"]) == 2


@config_param
def test_params_without_grad_are_untouched(config):
    torch.manual_seed(11)
    used = torch.nn.Parameter(torch.randn(5))
    never = torch.nn.Parameter(torch.randn(3))
    late = torch.nn.Parameter(torch.randn(2, 2))
    opt = config.make([used, never, late], lr=0.05)
    never_before, late_before = never.detach().clone(), late.detach().clone()
    gen = torch.Generator().manual_seed(12)
    for step in range(5):
        used.grad = torch.randn(5, generator=gen)
        if step >= 3:
            late.grad = torch.randn(2, 2, generator=gen)
        opt.step()
        assert torch.equal(never.detach(), never_before)
        assert never not in opt.state or not opt.state[never]
        if step < 3:
            assert torch.equal(late.detach(), late_before)
            assert late not in opt.state or not opt.state[late]
    assert not torch.equal(late.detach(), late_before)
    assert int(opt.state[late]["step"]) == 2 and int(opt.state[used]["step"]) == 5
