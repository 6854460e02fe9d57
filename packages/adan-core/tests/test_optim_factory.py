"""Tests for adan_core.optim_factory: registry, CLI flags, parameter groups, option checks."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from adan_core import optim_factory as of


@pytest.fixture
def clean_registry():
    """Restore the registry and CLI flag table after a test that adds entries."""
    registry, cli_args = dict(of._REGISTRY), list(of._CLI_ARGS)
    yield
    of._REGISTRY.clear()
    of._REGISTRY.update(registry)
    of._CLI_ARGS[:] = cli_args


class Net(nn.Module):
    """Linear + LayerNorm + BatchNorm, one frozen layer and a timm-style no_weight_decay()."""

    def __init__(self, skip: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.ln = nn.LayerNorm(8)
        self.bn = nn.BatchNorm1d(8)
        self.fc2 = nn.Linear(8, 3, bias=False)
        self.pos_embed = nn.Parameter(torch.zeros(2, 4))
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)
        self._skip = skip

    def no_weight_decay(self) -> set[str]:
        return set(self._skip)


def ids(params) -> set[int]:
    return {id(p) for p in params}


def group_ids(opt: torch.optim.Optimizer) -> dict[float, set[int]]:
    """Map each group's weight decay to the ids of its parameters."""
    out: dict[float, set[int]] = {}
    for g in opt.param_groups:
        assert g["weight_decay"] not in out, "two groups with the same weight decay"
        out[g["weight_decay"]] = ids(g["params"])
    return out


def parse(argv: list[str], **kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    of.add_optimizer_args(parser, **kw)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- registry


def test_builtin_names_are_listed():
    assert {"adam", "adamw", "adan", "adanw"} <= set(of.available_optimizers())
    assert of.available_optimizers() == sorted(of.available_optimizers())


@pytest.mark.parametrize(
    ("name", "cls"), [("adam", torch.optim.Adam), ("AdamW", torch.optim.AdamW)]
)
def test_torch_names_build_torch_optimizers(name, cls):
    opt = of.create_optimizer(nn.Linear(2, 2), opt=name)
    assert type(opt) is cls


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'") as exc:
        of.create_optimizer(nn.Linear(2, 2), opt="adamm")
    for name in ("adam", "adamw", "adan", "adanw"):
        assert name in str(exc.value)


def test_register_optimizer_is_one_line_and_refuses_duplicates(clean_registry):
    of.register_optimizer("sgd_test", torch.optim.SGD, help="plain SGD")
    assert "sgd_test" in of.available_optimizers()
    opt = of.create_optimizer(nn.Linear(2, 2), opt="sgd_test", lr=0.5, momentum=0.9)
    assert type(opt) is torch.optim.SGD
    assert opt.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ValueError, match="already registered"):
        of.register_optimizer("SGD_test", torch.optim.Adam, help="again")
    of.register_optimizer("sgd_test", torch.optim.Adam, help="again", overwrite=True)
    assert type(of.create_optimizer(nn.Linear(2, 2), opt="sgd_test")) is torch.optim.Adam


def test_lazy_factory_is_imported_on_use(clean_registry):
    of.register_optimizer("lazy_sgd", "torch.optim:SGD", help="lazy")
    assert type(of.create_optimizer(nn.Linear(2, 2), opt="lazy_sgd")) is torch.optim.SGD
    of.register_optimizer("broken", "no_such_module_xyz:Opt", help="missing")
    with pytest.raises(ImportError, match="'broken'.*no_such_module_xyz"):
        of.create_optimizer(nn.Linear(2, 2), opt="broken")


# ----------------------------------------------------------------------------- param groups


def test_no_decay_group_holds_biases_and_norm_weights():
    m = Net()
    opt = of.create_optimizer(m, opt="adamw", weight_decay=0.05)
    groups = group_ids(opt)
    assert set(groups) == {0.0, 0.05}
    no_decay = ids([m.fc1.bias, m.ln.weight, m.ln.bias, m.bn.weight, m.bn.bias])
    assert groups[0.0] == no_decay
    assert groups[0.05] == ids([m.fc1.weight, m.fc2.weight, m.pos_embed])
    frozen = ids(m.frozen.parameters())
    assert not frozen & (groups[0.0] | groups[0.05])


def test_multidimensional_norm_weight_is_not_decayed():
    m = nn.Sequential(nn.Linear(6, 6), nn.Unflatten(1, (2, 3)), nn.LayerNorm((2, 3)))
    opt = of.create_optimizer(m, opt="adamw", weight_decay=0.1)
    assert m[2].weight.ndim == 2
    assert group_ids(opt)[0.0] == ids([m[0].bias, m[2].weight, m[2].bias])


def test_optimizer_default_decay_also_triggers_grouping():
    # AdamW's own default weight_decay is 0.01, so biases must still be excluded.
    m = Net()
    groups = group_ids(of.create_optimizer(m, opt="adamw"))
    assert groups[0.01] == ids([m.fc1.weight, m.fc2.weight, m.pos_embed])
    assert id(m.fc1.bias) in groups[0.0]


def test_bias_decay_puts_everything_trainable_in_one_group():
    m = Net()
    opt = of.create_optimizer(m, opt="adamw", weight_decay=0.05, bias_decay=True)
    assert len(opt.param_groups) == 1
    assert opt.param_groups[0]["weight_decay"] == 0.05
    trainable = ids(p for p in m.parameters() if p.requires_grad)
    assert ids(opt.param_groups[0]["params"]) == trainable


def test_zero_decay_gives_single_group_without_frozen():
    m = Net()
    opt = of.create_optimizer(m, opt="adam")
    assert len(opt.param_groups) == 1
    assert ids(opt.param_groups[0]["params"]) == ids(p for p in m.parameters() if p.requires_grad)


def test_no_weight_decay_names_from_model_and_argument():
    m = Net(skip=("pos_embed",))
    groups = group_ids(of.create_optimizer(m, opt="adamw", weight_decay=0.1))
    assert id(m.pos_embed) in groups[0.0]
    assert groups[0.1] == ids([m.fc1.weight, m.fc2.weight])

    m = Net()
    groups = group_ids(
        of.create_optimizer(m, opt="adamw", weight_decay=0.1, no_weight_decay=["fc2.*"])
    )
    assert groups[0.1] == ids([m.fc1.weight, m.pos_embed])


def test_param_iterables_are_passed_through():
    a, b = nn.Parameter(torch.zeros(3, 3)), nn.Parameter(torch.zeros(3))
    opt = of.create_optimizer([{"params": [a]}, {"params": [b], "lr": 0.5}], opt="adam", lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    with pytest.raises(ValueError, match="no_weight_decay needs parameter names"):
        of.create_optimizer([a], opt="adamw", no_weight_decay=["x"])


def test_model_without_trainable_params_is_a_clear_error():
    m = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters with requires_grad=True"):
        of.create_optimizer(m, opt="adam")


# ----------------------------------------------------------------------------- argparse


def test_argparse_round_trip():
    args = parse(
        "--opt adamw --lr 0.01 --weight-decay 0.1 --opt-betas 0.8 0.9 --opt-eps 1e-6".split()
    )
    assert args.opt == "adamw" and args.opt_betas == [0.8, 0.9]
    opt = of.create_optimizer(nn.Linear(2, 2), args)
    assert type(opt) is torch.optim.AdamW
    g = opt.param_groups[-1]
    assert (g["lr"], g["betas"], g["eps"], g["weight_decay"]) == (0.01, (0.8, 0.9), 1e-6, 0.1)


def test_unset_flags_mean_optimizer_defaults():
    args = parse(["--opt", "adam"])
    assert args.lr is None and args.no_prox is None and args.bias_decay is None
    g = of.create_optimizer(nn.Linear(2, 2), args).param_groups[0]
    assert (g["lr"], g["betas"], g["eps"], g["weight_decay"]) == (1e-3, (0.9, 0.999), 1e-8, 0)


def test_overrides_take_precedence_over_args():
    args = parse(["--opt", "adam", "--lr", "0.01"])
    opt = of.create_optimizer(nn.Linear(2, 2), args, opt="adamw", lr=0.2)
    assert type(opt) is torch.optim.AdamW and opt.param_groups[0]["lr"] == 0.2


def test_bad_opt_name_fails_at_parse_time(capsys):
    with pytest.raises(SystemExit):
        parse(["--opt", "bogus"])
    err = capsys.readouterr().err
    assert "unknown optimizer 'bogus'" in err and "adanw" in err


def test_every_flag_has_help_and_default_is_configurable():
    parser = argparse.ArgumentParser()
    group = of.add_optimizer_args(parser, default_opt="adamw")
    flags = {s for a in group._group_actions for s in a.option_strings}
    expected = {"--opt", "--lr", "--weight-decay", "--opt-betas", "--opt-eps"}
    expected |= {"--max-grad-norm", "--no-prox", "--bias-decay"}
    assert expected <= flags
    assert all(a.help and len(a.help) > 20 for a in group._group_actions)
    assert parser.parse_args([]).opt == "adamw"
    betas_help = next(a.help for a in group._group_actions if "--opt-betas" in a.option_strings)
    assert "0.98 0.92 0.99" in betas_help and "paper" in betas_help


def test_registered_flag_is_forwarded_to_optimizer(clean_registry):
    of.register_optimizer_arg("--momentum-test", kwarg="momentum", type=float, help="momentum")
    of.register_optimizer("sgd_test", torch.optim.SGD, help="plain SGD")
    args = parse(["--opt", "sgd_test", "--lr", "0.1", "--momentum-test", "0.7"])
    assert of.create_optimizer(nn.Linear(2, 2), args).param_groups[0]["momentum"] == 0.7
    # The same flag with an optimizer that lacks the keyword is an error naming the flag.
    args = parse(["--opt", "adam", "--momentum-test", "0.7"])
    with pytest.raises(ValueError, match="'momentum' \\(flag --momentum-test\\)"):
        of.create_optimizer(nn.Linear(2, 2), args)
    with pytest.raises(ValueError, match="already registered"):
        of.register_optimizer_arg("--momentum-test", help="dup")


# ----------------------------------------------------------------------------- validation


def test_wrong_number_of_betas():
    with pytest.raises(ValueError, match="'adam' needs 2 betas, got 3"):
        of.create_optimizer(nn.Linear(2, 2), opt="adam", betas=(0.98, 0.92, 0.99))
    with pytest.raises(ValueError, match="in \\[0, 1\\)"):
        of.create_optimizer(nn.Linear(2, 2), opt="adam", betas=(0.9, 1.0))


def test_option_not_accepted_names_option_and_optimizer():
    with pytest.raises(ValueError, match="'adam'.*does not accept option 'max_grad_norm'"):
        of.create_optimizer(nn.Linear(2, 2), opt="adam", max_grad_norm=1.0)
    args = parse(["--opt", "adamw", "--no-prox"])
    with pytest.raises(ValueError, match="'no_prox' \\(flag --no-prox\\)"):
        of.create_optimizer(nn.Linear(2, 2), args)
    # None means "optimizer default", so it is not an error.
    of.create_optimizer(nn.Linear(2, 2), opt="adam", max_grad_norm=None, no_prox=None)


def test_extra_optimizer_keywords_pass_through():
    opt = of.create_optimizer(nn.Linear(2, 2), opt="adam", amsgrad=True, foreach=False)
    assert opt.param_groups[0]["amsgrad"] is True and opt.param_groups[0]["foreach"] is False


# ----------------------------------------------------------------------------- Stable-Baselines3


def test_sb3_class_and_kwargs():
    args = parse("--opt adamw --lr 0.003 --weight-decay 0.0 --opt-eps 1e-5".split())
    cls, kw = of.optimizer_class_and_kwargs(args)
    assert cls is torch.optim.AdamW and kw == {"weight_decay": 0.0, "eps": 1e-5}
    # The way SB3 calls it: lr comes separately.
    opt = cls(nn.Linear(2, 2).parameters(), lr=3e-4, **kw)
    assert opt.param_groups[0]["eps"] == 1e-5
    assert of.optimizer_class_and_kwargs(args, keep_lr=True)[1]["lr"] == 0.003
    with pytest.raises(ValueError, match="bias_decay=False cannot be honoured"):
        of.optimizer_class_and_kwargs(opt="adamw", weight_decay=0.1, bias_decay=False)


# ----------------------------------------------------------------------------- Adan entries


def test_adan_and_adanw_entries():
    from adan_core.adan import Adan

    m = Net()
    opt = of.create_optimizer(m, opt="adan", lr=0.01, weight_decay=0.02, max_grad_norm=1.0)
    assert type(opt) is Adan
    assert all(g["no_prox"] is False and g["max_grad_norm"] == 1.0 for g in opt.param_groups)
    assert group_ids(opt)[0.0] == ids([m.fc1.bias, m.ln.weight, m.ln.bias, m.bn.weight, m.bn.bias])

    opt = of.create_optimizer(m, opt="adanw")
    assert type(opt) is Adan and all(g["no_prox"] is True for g in opt.param_groups)
    assert of.optimizer_class_and_kwargs(opt="adanw") == (Adan, {"no_prox": True})
    with pytest.raises(ValueError, match="'adanw' always uses no_prox=True"):
        of.create_optimizer(m, opt="adanw", no_prox=False)


def test_adan_needs_three_betas():
    with pytest.raises(ValueError, match="'adan' needs 3 betas, got 2.*0.98 0.92 0.99"):
        of.create_optimizer(nn.Linear(2, 2), args=parse("--opt adan --opt-betas 0.9 0.99".split()))


def test_opt_state_dtype_flag_reaches_adan():
    parser = argparse.ArgumentParser()
    of.add_optimizer_args(parser)
    model = torch.nn.Linear(3, 2).bfloat16()
    opt = of.create_optimizer(
        model, parser.parse_args(["--opt", "adan", "--opt-state-dtype", "fp32"])
    )
    assert opt.state_dtype == torch.float32
    assert of.create_optimizer(model, parser.parse_args(["--opt", "adan"])).state_dtype is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--opt-state-dtype", "bf16"])


def _trainer_builds(cls_or_factory, kwargs, model, weight_decay):
    """What transformers.Trainer.create_optimizer does with ``optimizer_cls_and_kwargs``
    (without importing transformers): groups by name unless handed a factory."""
    if isinstance(cls_or_factory, type) and issubclass(cls_or_factory, torch.optim.Optimizer):
        decay = [p for n, p in model.named_parameters() if "bias" not in n]
        no_decay = [p for n, p in model.named_parameters() if "bias" in n]
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return cls_or_factory(groups, **kwargs)
    return cls_or_factory()(model, **kwargs)


def test_trainer_hook_keeps_lr_and_lets_the_trainer_group():
    model = torch.nn.Linear(3, 2)
    cls, kw = of.trainer_optimizer_cls_and_kwargs(opt="adan", lr=2e-3, weight_decay=0.02)
    from adan_core import Adan

    assert cls is Adan and kw["lr"] == 2e-3
    opt = _trainer_builds(cls, kw, model, 0.02)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.02, 0.0]


def test_trainer_hook_bias_decay_decays_every_parameter_in_one_group():
    model = torch.nn.Linear(3, 2)
    factory, kw = of.trainer_optimizer_cls_and_kwargs(
        opt="adamw", lr=1e-4, weight_decay=0.01, bias_decay=True
    )
    assert isinstance(factory, of.DecayEveryParameter)
    opt = _trainer_builds(factory, kw, model, 0.01)
    assert isinstance(opt, torch.optim.AdamW)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.01
    assert len(opt.param_groups[0]["params"]) == 2
    with pytest.raises(ValueError, match="groups the parameters itself"):
        of.trainer_optimizer_cls_and_kwargs(opt="adan", no_weight_decay=["bias"])
