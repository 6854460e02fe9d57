"""torch.compile of a whole training step that uses Adan."""

from __future__ import annotations

import torch
import torch._dynamo

from adan_core import Adan


def _make():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = Adan(model.parameters(), lr=torch.tensor(0.01), weight_decay=0.02, max_grad_norm=0.5)
    return model, opt


def _train_step(model, opt, x):
    loss = model(x).square().mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss


def test_compiled_training_step_matches_eager_and_lr_changes_do_not_recompile():
    torch._dynamo.reset()
    compiled_model, compiled_opt = _make()
    eager_model, eager_opt = _make()
    step = torch.compile(_train_step)
    graphs_before_lr_change = None
    for i in range(5):
        x = torch.randn(32, 6, generator=torch.Generator().manual_seed(i))
        step(compiled_model, compiled_opt, x)
        _train_step(eager_model, eager_opt, x)
        if i == 2:
            graphs_before_lr_change = torch._dynamo.utils.counters["stats"]["unique_graphs"]
            for opt in (compiled_opt, eager_opt):
                opt.param_groups[0]["lr"].fill_(0.004)
    assert graphs_before_lr_change >= 2  # the optimizer step was captured, not run eagerly
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs_before_lr_change
    for a, b in zip(compiled_model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    st = compiled_opt.state[next(compiled_model.parameters())]
    assert float(st["step"]) == 5


def test_capturable_foreach_step_never_reads_a_value_on_the_host():
    """On meta tensors any .item()/float()/bool() raises, so two clean steps prove no host sync
    (the same property that lets a CUDA graph capture the step)."""
    params = [
        torch.nn.Parameter(torch.empty(5, 3, device="meta")),
        torch.nn.Parameter(torch.empty(7, device="meta")),
    ]
    for p in params:
        p.grad = torch.empty_like(p)
    opt = Adan(
        params,
        lr=torch.tensor(0.01, device="meta"),
        weight_decay=0.1,
        max_grad_norm=1.0,
        capturable=True,
        foreach=True,
    )
    opt.step()
    opt.step()
    assert opt.state[params[0]]["step"].device.type == "meta"
