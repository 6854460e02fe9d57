"""Bad input gets a message that names the problem and the fix."""

from __future__ import annotations

import warnings

import pytest
import torch

import adan_core._triton_adan as triton_adan
from adan_core import Adan


def _param():
    return torch.nn.Parameter(torch.randn(3))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr=-1e-3), r"Invalid lr=-0.001"),
        (dict(lr=torch.tensor([1e-3, 2e-3])), r"Invalid lr: a tensor lr must have one element"),
        (dict(betas=(0.98, 0.92)), r"Invalid betas=.*three betas"),
        (dict(betas=(0.98, 1.0, 0.99)), r"Invalid betas\[1\]=1.0: each beta must be in \[0, 1\)"),
        (dict(betas=(-0.1, 0.92, 0.99)), r"Invalid betas\[0\]=-0.1"),
        (dict(eps=-1e-8), r"Invalid eps=-1e-08"),
        (dict(weight_decay=-0.1), r"Invalid weight_decay=-0.1"),
        (dict(max_grad_norm=-1.0), r"Invalid max_grad_norm=-1.0"),
        (dict(max_grad_norm=float("nan")), r"Invalid max_grad_norm=nan"),
        (dict(foreach=True, fused=True), r"foreach=True and fused=True cannot both be set"),
    ],
)
def test_invalid_hyperparameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Adan([_param()], **kwargs)


def test_invalid_value_in_a_later_group_is_named():
    with pytest.raises(ValueError, match=r"Invalid betas\[2\]=1.5"):
        Adan([{"params": [_param()]}, {"params": [_param()], "betas": (0.9, 0.9, 1.5)}])


def test_groups_with_different_max_grad_norm_are_refused():
    with pytest.raises(ValueError, match="max_grad_norm is optimizer-wide"):
        Adan(
            [{"params": [_param()]}, {"params": [_param()], "max_grad_norm": 2.0}],
            max_grad_norm=1.0,
        )


def test_paper_convention_betas_warn():
    with pytest.warns(UserWarning, match="paper's convention"):
        Adan([_param()], betas=(0.02, 0.08, 0.01))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Adan([_param()], betas=(0.98, 0.92, 0.999))


def test_sparse_gradients_are_refused():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    opt = Adan(emb.parameters())
    with pytest.raises(RuntimeError, match="sparse gradients.*sparse=False"):
        opt.step()


def test_complex_parameters_are_refused():
    p = torch.nn.Parameter(torch.randn(3, dtype=torch.complex64))
    p.grad = torch.randn(3, dtype=torch.complex64)
    with pytest.raises(TypeError, match="complex parameters.*view_as_real"):
        Adan([p]).step()


def test_differentiable_is_refused():
    with pytest.raises(NotImplementedError, match=r"differentiable=True\) is not supported"):
        Adan([_param()], differentiable=True)


def test_fused_without_a_backend_says_why_and_what_to_do(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not triton_adan.interpreter_enabled()
    with pytest.raises(
        RuntimeError,
        match=r"fused=True\) cannot run: .*CUDA.*TRITON_INTERPRET=1.*"
        r"fused=None \(automatic\) or foreach=True",
    ):
        Adan([_param()], fused=True)


def test_fused_with_fp64_params_is_refused():
    with pytest.raises(RuntimeError, match="fp32/bf16/fp16 params, got torch.float64"):
        Adan([torch.nn.Parameter(torch.randn(3, dtype=torch.float64))], fused=True)


def test_empty_parameter_list_is_a_clear_error():
    with pytest.raises(ValueError, match="empty parameter list"):
        Adan([])


def test_unknown_implementation_name_in_functional_api():
    from adan_core.functional import adan

    t = [torch.zeros(2)]
    with pytest.raises(ValueError, match="unknown Adan implementation 'cuda'"):
        adan(
            t,
            t,
            t,
            t,
            t,
            t,
            [torch.zeros(())],
            lr=0.1,
            betas=(0.9, 0.9, 0.9),
            eps=1e-8,
            weight_decay=0.0,
            no_prox=False,
            impl="cuda",
        )
