"""The ``adan`` plugin inside fairseq's optimizer machinery: its update is adan-core's, bare,
under fairseq's clipping and lr setting, and under the fp16/bf16 wrappers (fp32 masters,
dynamic loss scaling, overflow skipping); its checkpoints load under torch's safe loading."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

pytest.importorskip(
    "fairseq",
    reason="fairseq is not installed: these tests run in the tox env bert-fairseq "
    "(tox -e bert-fairseq), see apps/bert_glue/README.md",
)

import torch  # noqa: E402
from adan_bert import fairseq_adan  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import adan_core  # noqa: E402

STEPS = 6


def adan_cfg(**changes) -> OmegaConf:
    cfg = {
        "_name": "adan",
        "adan_betas": "(0.98, 0.92, 0.99)",
        "adan_eps": 1e-8,
        "weight_decay": 0.02,
        "no_prox": False,
        "max_grad_norm": 0.0,
        "adan_impl": "foreach",
        "lr": [1e-3],
    }
    cfg.update(changes)
    return OmegaConf.create(cfg)


def build(params, **changes):
    from fairseq import optim

    fairseq_adan.register()
    return optim.build_optimizer(adan_cfg(**changes), params)


def make_params(dtype=torch.float32, seed=0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 4, 2)]
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in shapes]


def grads(step: int, like) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=g) for p in like]


def reference(params, **kwargs) -> adan_core.Adan:
    clean = {
        "lr": 1e-3,
        "betas": (0.98, 0.92, 0.99),
        "eps": 1e-8,
        "weight_decay": 0.02,
        "foreach": True,
        "fused": False,
    }
    clean.update(kwargs)
    return adan_core.Adan(params, **clean)


@pytest.mark.parametrize(
    "changes, ref_kwargs",
    [
        ({}, {}),
        ({"no_prox": True}, {"no_prox": True}),  # forwarded, unlike the paper's adapter
        ({"max_grad_norm": 0.5}, {"max_grad_norm": 0.5}),
        ({"adan_impl": "single"}, {"foreach": False}),
    ],
)
def test_update_equals_adan_core_with_fairseq_lr_and_clipping(changes, ref_kwargs):
    ours = make_params()
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt = build(ours, **changes)
    assert isinstance(opt.optimizer, adan_core.Adan)
    ref_opt = reference(ref, **ref_kwargs)
    for t in range(1, STEPS + 1):
        lr = 1e-3 * t / STEPS  # fairseq's scheduler sets the lr through set_lr every update
        opt.set_lr(lr)
        for group in ref_opt.param_groups:
            group["lr"] = lr
        for p, g in zip(ours, grads(t, ours)):
            p.grad = g.clone()
        opt.clip_grad_norm(1.0)  # fairseq's clip_norm rescales the grads before the step
        for p, r in zip(ours, ref):
            r.grad = p.grad.clone()
        opt.step()
        ref_opt.step()
        for p, r in zip(ours, ref):
            assert torch.equal(p, r), f"step {t}"
    state = opt.optimizer.state[ours[0]]
    assert set(state) >= {"exp_avg", "exp_avg_sq", "exp_avg_diff", "neg_pre_grad", "step"}
    assert int(state["step"]) == STEPS


def test_clip_norm_really_clips():
    """The comparison above would pass with clipping broken on both sides: check fairseq's
    clip_grad_norm changed the gradients the plugin saw."""
    ours = make_params()
    opt = build(ours)
    for p, g in zip(ours, grads(1, ours)):
        p.grad = 10 * g
    norm = opt.clip_grad_norm(1.0)
    assert norm > 1.0
    assert torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in ours])) == pytest.approx(
        1.0, rel=1e-4
    )


def fp16_config(flat: bool, bf16: bool = False):
    from omegaconf import OmegaConf

    return OmegaConf.create(
        {
            "common": {
                "fp16": not bf16,
                "bf16": bf16,
                "fp16_init_scale": 2.0**10,
                "fp16_scale_window": 3,
                "fp16_scale_tolerance": 0.0,
                "threshold_loss_scale": None,
                "min_loss_scale": 1e-4,
                "fp16_no_flatten_grads": not flat,
                "memory_efficient_fp16": False,
                "memory_efficient_bf16": False,
            },
            "optimizer": adan_cfg(),
            "optimization": {"update_freq": [1]},
            "distributed_training": {"distributed_world_size": 1},
        }
    )


@pytest.mark.parametrize(
    "flat, bf16",
    [(True, False), (False, False), (False, True)],
    ids=["fp16-flat", "fp16-per-param", "bf16"],
)
def test_mixed_precision_wrapper_steps_fp32_masters_like_adan_core(flat, bf16, monkeypatch):
    """fairseq's FP16Optimizer: the loss is scaled, grads are copied to fp32 masters and
    unscaled, Adan steps the masters, the low-precision params get the masters' values."""
    from fairseq.optim.fp16_optimizer import FP16Optimizer

    fairseq_adan.register()
    if flat:  # fairseq keys its flat fp32 master by CUDA device index, None for CPU tensors
        monkeypatch.setattr(torch.cuda, "current_device", lambda: None)
    dtype = torch.bfloat16 if bf16 else torch.float16
    low = make_params(dtype)
    masters = [torch.nn.Parameter(p.detach().float()) for p in low]
    wrapper = FP16Optimizer.build_optimizer(fp16_config(flat, bf16), low)
    assert isinstance(wrapper.optimizer, adan_core.Adan)
    ref_opt = reference(masters)
    target = [torch.randn(p.shape, generator=torch.Generator().manual_seed(9)) for p in low]
    for t in range(1, STEPS + 1):
        wrapper.zero_grad()  # as fairseq's trainer, before each forward: sets the 1/scale
        loss = sum(((p.float() - y) ** 2).sum() for p, y in zip(low, target))
        wrapper.backward(loss)  # scaled by the loss scale under fp16
        scale = wrapper.scaler.loss_scale if wrapper.scaler is not None else 1.0
        for p, m in zip(low, masters):  # what the wrapper does: fp32 copy, then times 1/scale
            m.grad = p.grad.float().mul_(1.0 / scale)
        wrapper.clip_grad_norm(0.0)  # unscales and checks for overflow
        wrapper.step()
        ref_opt.step()
        for p, m in zip(low, masters):
            assert torch.equal(p, m.detach().to(dtype)), f"step {t}"
    assert int(wrapper.optimizer.state[next(iter(wrapper.optimizer.state))]["step"]) == STEPS


def test_fp16_overflow_skips_the_step_and_lowers_the_scale():
    from fairseq.optim.fp16_optimizer import FP16Optimizer

    fairseq_adan.register()
    low = make_params(torch.float16)
    wrapper = FP16Optimizer.build_optimizer(fp16_config(flat=False), low)
    wrapper.zero_grad()
    loss = sum((p.float() ** 2).sum() for p in low)
    wrapper.backward(loss)
    wrapper.clip_grad_norm(0.0)
    wrapper.step()
    wrapper.zero_grad()
    before = [p.detach().clone() for p in low]
    scale = wrapper.scaler.loss_scale
    loss = sum((p.float() ** 2).sum() for p in low)
    wrapper.backward(loss)
    low[0].grad[0, 0] = float("inf")
    with pytest.raises(OverflowError):
        wrapper.clip_grad_norm(0.0)  # fairseq's trainer catches this and skips the update
    assert wrapper.scaler.loss_scale == scale / 2
    assert all(torch.equal(a, b) for a, b in zip(before, low))
    steps = {int(s["step"]) for s in wrapper.optimizer.state.values()}
    assert steps == {1}, "the overflowing update reached Adan"


def test_memory_efficient_fp16_is_refused():
    from fairseq.optim.fp16_optimizer import MemoryEfficientFP16Optimizer

    fairseq_adan.register()
    low = make_params(torch.float16)
    opt = build(low)
    with pytest.raises(ValueError, match="[Uu]nsupported optimizer"):
        MemoryEfficientFP16Optimizer(fp16_config(flat=False), low, opt)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"adan_betas": "(0.9, 2)"}, "adan_betas"),
        ({"adan_betas": "(0.9, 0.9, 1.5)"}, "adan_betas"),
        ({"adan_betas": "__import__('os')"}, "adan_betas"),
        ({"adan_impl": "bogus"}, "adan_impl"),
        ({"weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_bad_options_are_clear_errors(changes, match):
    with pytest.raises(ValueError, match=match):
        build(make_params(), **changes)


def test_register_twice_is_harmless():
    first = fairseq_adan.register()
    assert fairseq_adan.register() is first


def test_state_dict_round_trip_through_fairseq():
    ours = make_params()
    opt = build(ours)
    for t in (1, 2):
        for p, g in zip(ours, grads(t, ours)):
            p.grad = g
        opt.step()
    saved = copy.deepcopy(opt.state_dict())  # loading shares same-device tensors otherwise
    again = make_params()
    for a, b in zip(again, ours):
        a.data.copy_(b.data)
    opt2 = build(again, adan_betas="(0.98, 0.92, 0.99)")
    opt2.load_state_dict(saved, optimizer_overrides={"lr": 5e-4})
    assert opt2.get_lr() == 5e-4
    for p, g in zip(ours, grads(3, ours)):
        p.grad = g
    for p, g in zip(again, grads(3, again)):
        p.grad = g
    opt.set_lr(5e-4)
    opt.step()
    opt2.step()
    assert all(torch.equal(a, b) for a, b in zip(again, ours))


def test_checkpoint_globals_let_safe_loading_read_fairseq_checkpoints(tmp_path):
    """A checkpoint pickling an argparse.Namespace (fairseq-train's ``args``) fails torch's
    default safe load, and loads once the plugin is imported."""
    import argparse

    path = tmp_path / "ckpt.pt"
    torch.save({"args": argparse.Namespace(lr=[1e-3]), "model": {"w": torch.ones(2)}}, path)
    code = "import sys, torch\n{}\ntorch.load(sys.argv[1])\nprint('loaded')"
    bare = subprocess.run(
        [sys.executable, "-c", code.format(""), str(path)], capture_output=True, text=True
    )
    assert bare.returncode != 0 and "Namespace" in bare.stderr
    plugin = subprocess.run(
        [sys.executable, "-c", code.format("import adan_bert.fairseq_plugin"), str(path)],
        capture_output=True,
        text=True,
    )
    assert plugin.returncode == 0, plugin.stderr[-2000:]
    assert "loaded" in plugin.stdout
