"""Swap optimizers by name: a registry, shared CLI flags and a parameter-group builder.

Using Adan in an existing training script takes two steps::

    add_optimizer_args(parser)                       # 1. --opt, --lr, --weight-decay, ...
    optimizer = create_optimizer(model, args)        # 2. instead of torch.optim.AdamW(...)

Conventions:
- A value of ``None`` (the CLI default of every flag) means "use the optimizer's own default".
- Any other value the chosen optimizer does not accept is an error, never silently dropped.
- Betas follow the *code* convention (Adan: ``0.98 0.92 0.99``), not the paper's
  (``0.02 0.08 0.01``).
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import torch
from torch import nn

__all__ = [
    "OptimizerSpec",
    "register_optimizer",
    "register_optimizer_arg",
    "get_optimizer_spec",
    "available_optimizers",
    "add_optimizer_args",
    "create_optimizer",
    "param_groups_weight_decay",
    "optimizer_class_and_kwargs",
    "trainer_optimizer_cls_and_kwargs",
    "DecayEveryParameter",
]

# A factory is an optimizer class (or callable) taking ``(params, **kwargs)``, or a lazy
# "module:attribute" string, so that registering never imports a heavy or not-yet-built module.
Factory = Union[Callable[..., torch.optim.Optimizer], str]

# Options handled here rather than passed to the optimizer.
_FACTORY_OPTIONS = ("opt", "bias_decay", "no_weight_decay")


@dataclass
class OptimizerSpec:
    """One registry entry.

    Attributes:
        name: registry key (lower case), e.g. ``"adan"``.
        factory: optimizer class/callable, or a lazy ``"module:attribute"`` path.
        help: one-line description shown in ``--help`` and in error messages.
        fixed_kwargs: keyword arguments always passed (``adanw`` fixes ``no_prox=True``).
        num_betas: expected length of ``betas``; ``None`` infers it from the factory's default.
    """

    name: str
    factory: Factory
    help: str = ""
    fixed_kwargs: dict[str, Any] = field(default_factory=dict)
    num_betas: int | None = None

    def resolve(self) -> Callable[..., torch.optim.Optimizer]:
        """The optimizer class/callable, importing it on first use for lazy entries."""
        if isinstance(self.factory, str):
            module_name, _, attr = self.factory.partition(":")
            try:
                obj: Any = importlib.import_module(module_name)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except (ImportError, AttributeError) as exc:
                raise ImportError(
                    f"optimizer {self.name!r} is registered as {self.factory!r}, which could not "
                    f"be imported ({exc}); check that the providing package is installed"
                ) from exc
            self.factory = obj
        return self.factory

    def signature_defaults(self) -> tuple[dict[str, Any], bool]:
        """Keyword parameters of the factory with defaults, and whether it takes ``**kwargs``."""
        sig = inspect.signature(self.resolve())
        params: dict[str, Any] = {}
        var_kw = False
        for i, (pname, p) in enumerate(sig.parameters.items()):
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                var_kw = True
            elif p.kind is not inspect.Parameter.VAR_POSITIONAL and i > 0:  # skip ``params``
                params[pname] = p.default
        return params, var_kw

    def expected_num_betas(self) -> int | None:
        """Length ``betas`` must have, from ``num_betas`` or the factory's default betas."""
        if self.num_betas is not None:
            return self.num_betas
        default = self.signature_defaults()[0].get("betas", inspect.Parameter.empty)
        if isinstance(default, (tuple, list)):
            return len(default)
        return None

    def display_name(self) -> str:
        f = self.resolve()
        return f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', repr(f))}"


_REGISTRY: dict[str, OptimizerSpec] = {}


def register_optimizer(
    name: str,
    factory: Factory,
    *,
    help: str,
    fixed_kwargs: Mapping[str, Any] | None = None,
    num_betas: int | None = None,
    overwrite: bool = False,
) -> OptimizerSpec:
    """Make ``factory`` available as ``--opt NAME`` / ``create_optimizer(..., opt=NAME)``.

    Args:
        name: case-insensitive name, e.g. ``"adamw_win"``.
        factory: optimizer class or callable ``(params, **kwargs) -> Optimizer``, or a lazy
            ``"package.module:ClassName"`` string imported on first use.
        help: one line for ``--help``; say what makes this optimizer different.
        fixed_kwargs: keywords always passed, e.g. ``{"no_prox": True}``. A user value that
            contradicts one is an error.
        num_betas: expected ``len(betas)`` if it cannot be read from the factory's default.
        overwrite: replace an existing entry instead of raising.

    Returns:
        The new registry entry.
    """
    key = name.strip().lower()
    if not key:
        raise ValueError("optimizer name must be a non-empty string")
    if key in _REGISTRY and not overwrite:
        raise ValueError(
            f"optimizer {key!r} is already registered; pass overwrite=True to replace it"
        )
    spec = OptimizerSpec(key, factory, help, dict(fixed_kwargs or {}), num_betas)
    _REGISTRY[key] = spec
    return spec


def available_optimizers() -> list[str]:
    """Registered optimizer names, sorted."""
    return sorted(_REGISTRY)


def get_optimizer_spec(name: str) -> OptimizerSpec:
    """Registry entry for ``name`` (case-insensitive); ValueError listing known names if absent."""
    key = str(name).strip().lower()
    try:
        return _REGISTRY[key]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {name!r}; known optimizers: {', '.join(available_optimizers())}. "
            "Use register_optimizer() to add one."
        ) from None


# --------------------------------------------------------------------------------------------
# Command-line flags. Each flag maps an argparse ``dest`` to an optimizer keyword, so extra
# optimizer families can add theirs with one register_optimizer_arg() call.


@dataclass(frozen=True)
class _OptimizerArg:
    flag: str
    dest: str
    kwarg: str
    argparse_kwargs: dict[str, Any]


_CLI_ARGS: list[_OptimizerArg] = []


def register_optimizer_arg(
    flag: str, *, kwarg: str | None = None, help: str, **argparse_kwargs: Any
) -> None:
    """Add a flag to :func:`add_optimizer_args` that is forwarded to the optimizer as ``kwarg``.

    The flag's default is forced to ``None`` ("optimizer default"), so it reaches the optimizer
    only when the user sets it, and an optimizer that does not accept it fails loudly.

    Args:
        flag: e.g. ``"--reckless-steps"``.
        kwarg: optimizer keyword; defaults to the flag's argparse dest (``reckless_steps``).
        help: help text.
        **argparse_kwargs: passed to ``parser.add_argument`` (``type``, ``nargs``, ``choices``...).
    """
    if not flag.startswith("--"):
        raise ValueError(f"optimizer flags must be long options starting with '--', got {flag!r}")
    dest = argparse_kwargs.pop("dest", flag[2:].replace("-", "_"))
    if any(a.flag == flag or a.dest == dest for a in _CLI_ARGS):
        raise ValueError(f"optimizer flag {flag!r} (dest {dest!r}) is already registered")
    argparse_kwargs.pop("default", None)
    _CLI_ARGS.append(_OptimizerArg(flag, dest, kwarg or dest, {"help": help, **argparse_kwargs}))


def _opt_name(value: str) -> str:
    """argparse ``type`` for ``--opt``: validates against the registry at parse time."""
    try:
        return get_optimizer_spec(value).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_optimizer_args(
    parser: argparse.ArgumentParser, *, default_opt: str = "adan"
) -> argparse._ArgumentGroup:
    """Add the shared optimizer flags to ``parser`` and return their argument group.

    Every flag except ``--opt`` defaults to ``None``, meaning "the optimizer's own default"; an
    app that wants its own default lr calls ``parser.set_defaults(lr=...)``.

    Args:
        parser: the application's parser.
        default_opt: value of ``--opt`` when not given.
    """
    names = ", ".join(
        f"{n} ({_REGISTRY[n].help})" if _REGISTRY[n].help else n for n in available_optimizers()
    )
    group = parser.add_argument_group(
        "optimizer",
        "Optimizer selection (adan_core.optim_factory). Unset flags use the optimizer's default.",
    )
    group.add_argument(
        "--opt",
        type=_opt_name,
        default=default_opt,
        metavar="NAME",
        help=f"optimizer to train with (default: {default_opt}). Choices: {names}.",
    )
    for a in _CLI_ARGS:
        group.add_argument(a.flag, dest=a.dest, default=None, **a.argparse_kwargs)
    return group


register_optimizer_arg(
    "--lr",
    type=float,
    metavar="LR",
    help="learning rate (default: optimizer default, 1e-3 for adam/adan). Adan usually wants a "
    "larger lr than Adam/AdamW: the Adan authors report 5-10x in most of their experiments "
    "and 2-4x for LLM fine-tuning, so tune it rather than copying the Adam value.",
)
register_optimizer_arg(
    "--weight-decay",
    type=float,
    metavar="WD",
    help="weight decay lambda (default: optimizer default; 0 for adam/adan, 0.01 for adamw). "
    "The Adan authors commonly use 0.02. adan applies it as proximal decay, adanw/adamw as "
    "decoupled decay, adam as L2 added to the gradient.",
)
register_optimizer_arg(
    "--opt-betas",
    kwarg="betas",
    type=float,
    nargs="+",
    metavar="BETA",
    help="momentum coefficients in the CODE convention: two for Adam (e.g. 0.9 0.999), three "
    "for Adan (default 0.98 0.92 0.99). The Adan paper writes 1 minus these (0.02 0.08 0.01); "
    "passing the paper values here silently trains with nearly no momentum averaging.",
)
register_optimizer_arg(
    "--opt-eps",
    kwarg="eps",
    type=float,
    metavar="EPS",
    help="epsilon added to the denominator for numerical stability (default: optimizer "
    "default, 1e-8).",
)
register_optimizer_arg(
    "--max-grad-norm",
    type=float,
    metavar="C",
    help="clip the global gradient norm to C inside the optimizer step, 0 disables (Adan "
    "family only; for torch optimizers call torch.nn.utils.clip_grad_norm_ instead).",
)
register_optimizer_arg(
    "--no-prox",
    action="store_true",
    help="Adan only: use AdamW-style decoupled weight decay instead of the proximal decay of "
    "the paper's Algorithm 1 (same as --opt adanw).",
)
register_optimizer_arg(
    "--bias-decay",
    action="store_true",
    help="also apply weight decay to biases and normalization weights (all 1-D parameters). By "
    "default they go in a group with weight_decay=0, as in timm/MAE.",
)


# --------------------------------------------------------------------------------------------
# Parameter groups.

_NORM_TYPES: tuple[type, ...] = tuple(
    t
    for t in (
        nn.modules.batchnorm._NormBase,  # BatchNorm*d, SyncBatchNorm, InstanceNorm*d
        nn.LayerNorm,
        nn.GroupNorm,
        getattr(nn, "RMSNorm", None),
        nn.LocalResponseNorm,
    )
    if isinstance(t, type)
)


def _no_decay_names(model: nn.Module, extra: Iterable[str] | None) -> set[str]:
    """Names or glob patterns excluded from decay: ``extra`` plus ``model.no_weight_decay()``."""
    names = set(extra or ())
    hook = getattr(model, "no_weight_decay", None)
    if callable(hook):
        names |= set(hook())
    return names


def param_groups_weight_decay(
    model: nn.Module,
    weight_decay: float,
    no_weight_decay: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into a decayed and a non-decayed group.

    Not decayed: every parameter with at most one dimension (biases, norm scales), every
    parameter owned directly by a normalization layer (also multi-dimensional LayerNorm
    shapes), and every name matching ``no_weight_decay`` or ``model.no_weight_decay()`` (exact
    names or ``fnmatch`` patterns such as ``"*.pos_embed"``). Frozen parameters are skipped.

    Args:
        model: the module to optimize.
        weight_decay: decay of the decayed group.
        no_weight_decay: extra parameter names/patterns to exclude from decay.

    Returns:
        Non-empty param groups: ``{"params": [...], "weight_decay": 0.0}`` for the excluded
        parameters and ``{"params": [...], "weight_decay": weight_decay}`` for the rest.
    """
    skip = _no_decay_names(model, no_weight_decay)
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, _NORM_TYPES) for p in m.parameters(False)
    }
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        excluded = (
            p.ndim <= 1
            or id(p) in norm_params
            or name in skip
            or any(fnmatch.fnmatchcase(name, pat) for pat in skip)
        )
        (no_decay if excluded else decay).append(p)
    groups = [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]
    return [g for g in groups if g["params"]]


# --------------------------------------------------------------------------------------------
# Building optimizers.


def _gather_options(args: argparse.Namespace | None, overrides: Mapping[str, Any]) -> dict:
    """Merge Namespace flags (mapped to optimizer keywords) with keyword overrides."""
    opts: dict[str, Any] = {}
    if args is not None:
        opts["opt"] = getattr(args, "opt", None)
        for a in _CLI_ARGS:
            opts[a.kwarg] = getattr(args, a.dest, None)
        opts["no_weight_decay"] = getattr(args, "no_weight_decay", None)
    opts.update(overrides)
    return opts


def _resolve(
    args: argparse.Namespace | None, overrides: Mapping[str, Any]
) -> tuple[OptimizerSpec, dict[str, Any], dict[str, Any]]:
    """Validated ``(spec, optimizer kwargs, factory options)``; None values are dropped."""
    opts = _gather_options(args, overrides)
    spec = get_optimizer_spec(opts.pop("opt", None) or "adan")
    factory_opts = {k: opts.pop(k, None) for k in _FACTORY_OPTIONS if k != "opt"}
    kwargs = {k: v for k, v in opts.items() if v is not None}
    if "params" in kwargs:
        raise ValueError("pass parameters as the first argument, not as params=")

    accepted, var_kw = spec.signature_defaults()
    cli = {a.kwarg: a.flag for a in _CLI_ARGS}
    for key in kwargs:
        if not var_kw and key not in accepted:
            flag = f" (flag {cli[key]})" if key in cli else ""
            raise ValueError(
                f"optimizer {spec.name!r} ({spec.display_name()}) does not accept option "
                f"{key!r}{flag}; remove it or pick an optimizer that supports it. Accepted "
                f"options: {', '.join(sorted(accepted))}"
            )
    for key, fixed in spec.fixed_kwargs.items():
        if key in kwargs and kwargs[key] != fixed:
            raise ValueError(
                f"optimizer {spec.name!r} always uses {key}={fixed!r}, got {key}={kwargs[key]!r}; "
                "drop the option or pick another optimizer"
            )
        kwargs[key] = fixed

    if "betas" in kwargs:
        kwargs["betas"] = _check_betas(spec, kwargs["betas"])
    # Effective decay, including a non-zero optimizer default (AdamW: 0.01), drives grouping.
    wd_default = accepted.get("weight_decay", 0.0)
    if wd_default is inspect.Parameter.empty:
        wd_default = 0.0
    factory_opts["weight_decay"] = kwargs.get("weight_decay", wd_default)
    return spec, kwargs, factory_opts


def _check_betas(spec: OptimizerSpec, betas: Any) -> tuple[float, ...]:
    try:
        betas = tuple(float(b) for b in betas)
    except TypeError:
        raise ValueError(f"betas must be a sequence of floats, got {betas!r}") from None
    want = spec.expected_num_betas()
    if want is not None and len(betas) != want:
        raise ValueError(
            f"optimizer {spec.name!r} needs {want} betas, got {len(betas)}: {betas}. "
            + (
                "Adan takes (b1, b2, b3) in the code convention, e.g. --opt-betas 0.98 0.92 0.99"
                if want == 3
                else "Adam-style optimizers take (b1, b2), e.g. --opt-betas 0.9 0.999"
            )
        )
    bad = [b for b in betas if not 0.0 <= b < 1.0]
    if bad:
        raise ValueError(f"each beta must be in [0, 1), got {betas}")
    return betas


def create_optimizer(
    model_or_params: nn.Module | Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    args: argparse.Namespace | None = None,
    **overrides: Any,
) -> torch.optim.Optimizer:
    """Build the optimizer named by ``args.opt`` / ``opt=`` (default ``"adan"``).

    Args:
        model_or_params: an ``nn.Module`` (frozen parameters are skipped and, when weight
            decay > 0 and ``bias_decay`` is false, 1-D/normalization/``no_weight_decay``
            parameters get ``weight_decay=0``), or an iterable of tensors or param-group dicts
            passed to the optimizer unchanged.
        args: a Namespace from a parser set up with :func:`add_optimizer_args` (other attributes
            are ignored), or None.
        **overrides: take precedence over ``args``: ``opt``, ``lr``, ``weight_decay``, ``betas``,
            ``eps``, ``max_grad_norm``, ``no_prox``, ``bias_decay``, ``no_weight_decay`` (names
            or glob patterns) and any other keyword of the optimizer (``foreach=``, ...).
            None means "optimizer default".

    Raises:
        ValueError: unknown optimizer, an option it does not accept, wrong number of betas,
            or no trainable parameters.
    """
    spec, kwargs, fopts = _resolve(args, overrides)
    if isinstance(model_or_params, nn.Module):
        if fopts["weight_decay"] and not fopts["bias_decay"]:
            params: Any = param_groups_weight_decay(
                model_or_params, fopts["weight_decay"], fopts["no_weight_decay"]
            )
        else:
            params = [p for p in model_or_params.parameters() if p.requires_grad]
        if not params:
            raise ValueError(
                f"{type(model_or_params).__name__} has no parameters with requires_grad=True; "
                "unfreeze some parameters before creating the optimizer"
            )
    else:
        if fopts["no_weight_decay"]:
            raise ValueError(
                "no_weight_decay needs parameter names: pass the nn.Module, not its parameters"
            )
        params = model_or_params
    return spec.resolve()(params, **kwargs)


def optimizer_class_and_kwargs(
    args: argparse.Namespace | None = None, *, keep_lr: bool = False, **overrides: Any
) -> tuple[Callable[..., torch.optim.Optimizer], dict[str, Any]]:
    """``(optimizer_class, optimizer_kwargs)`` for Stable-Baselines3's ``policy_kwargs``.

    Example::

        cls, kw = optimizer_class_and_kwargs(args)
        PPO(..., learning_rate=args.lr, policy_kwargs=dict(optimizer_class=cls,
                                                           optimizer_kwargs=kw))

    SB3 calls ``optimizer_class(policy.parameters(), lr=learning_rate, **optimizer_kwargs)``, so
    ``lr`` is left out of the kwargs unless ``keep_lr=True``: give it to SB3 as ``learning_rate``.
    SB3 passes a flat parameter list, so weight decay (if any) applies to every parameter;
    an explicit ``bias_decay=False`` with non-zero decay is therefore rejected.

    Args:
        args: Namespace from :func:`add_optimizer_args`, or None.
        keep_lr: keep ``lr`` in the returned kwargs (for callers that do not pass their own).
        **overrides: same keywords as :func:`create_optimizer`.
    """
    spec, kwargs, fopts = _resolve(args, overrides)
    if fopts["no_weight_decay"]:
        raise ValueError("no_weight_decay cannot be honoured: SB3 passes a flat parameter list")
    if fopts["bias_decay"] is False and fopts["weight_decay"]:
        raise ValueError(
            "bias_decay=False cannot be honoured with SB3 (it passes a flat parameter list); "
            "set bias_decay=True/None or weight_decay=0"
        )
    if not keep_lr:
        kwargs.pop("lr", None)
    return spec.resolve(), kwargs


class DecayEveryParameter:
    """A Hugging Face ``Trainer`` optimizer factory that decays every parameter alike.

    The ``Trainer`` normally groups parameters itself (no decay on biases and LayerNorm) and calls
    ``optimizer_cls(groups, **kwargs)``; given a factory instead (anything that is not an
    ``Optimizer`` subclass) it calls ``factory()(model, **kwargs)`` on the model it has already
    wrapped (FSDP, DeepSpeed), which is how this puts all parameters in one group, as fairseq and
    timm's ``bias_decay`` setting do.
    """

    def __init__(self, optimizer_class: Callable[..., torch.optim.Optimizer]) -> None:
        self.optimizer_class = optimizer_class

    def __call__(self) -> Callable[..., torch.optim.Optimizer]:
        return self._build

    def _build(self, model: nn.Module, **kwargs: Any) -> torch.optim.Optimizer:
        return self.optimizer_class([p for p in model.parameters() if p.requires_grad], **kwargs)


def trainer_optimizer_cls_and_kwargs(
    args: argparse.Namespace | None = None, **overrides: Any
) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The value of the Hugging Face ``Trainer``'s ``optimizer_cls_and_kwargs`` argument.

    Example::

        trainer = Trainer(model, training_args, ...,
                          optimizer_cls_and_kwargs=trainer_optimizer_cls_and_kwargs(opt="adan",
                                                                                     lr=1e-3))

    The ``Trainer`` builds the optimizer after it has wrapped the model (so FSDP and DeepSpeed
    see it first) and calls ``cls(param_groups, **kwargs)``: ``lr`` therefore stays in the
    kwargs (its scheduler scales the optimizer's own lr). By default the ``Trainer`` groups the
    parameters and sets each group's ``weight_decay`` from ``TrainingArguments.weight_decay``
    (0 for biases and LayerNorm), so set that argument to the same value. With
    ``bias_decay=True`` every parameter decays by the given ``weight_decay`` instead (fairseq's
    behaviour), through :class:`DecayEveryParameter`.

    Args:
        args: Namespace from :func:`add_optimizer_args`, or None.
        **overrides: same keywords as :func:`create_optimizer`.
    """
    spec, kwargs, fopts = _resolve(args, overrides)
    if fopts["no_weight_decay"]:
        raise ValueError(
            "no_weight_decay cannot be honoured: the Trainer groups the parameters itself "
            "(override Trainer.get_decay_parameter_names to change its choice)"
        )
    cls = spec.resolve()
    if fopts["bias_decay"]:
        return DecayEveryParameter(cls), kwargs
    return cls, kwargs


# --------------------------------------------------------------------------------------------
# Records of what ran (for a run's config and provenance).


def describe(cls: type, kwargs: dict[str, Any], with_defaults: bool = True) -> dict[str, Any]:
    """JSON-able record of the optimizer and its options (with its defaults, unless told not)."""
    full: dict[str, Any] = {}
    try:
        for name, p in inspect.signature(cls).parameters.items():
            if with_defaults and p.default is not inspect.Parameter.empty and name != "lr":
                full[name] = p.default
    except (TypeError, ValueError):
        pass
    full.update(kwargs)
    clean = {k: (list(v) if isinstance(v, tuple) else v) for k, v in full.items()}
    clean = {
        k: v for k, v in clean.items() if isinstance(v, (int, float, bool, str, list, type(None)))
    }
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "kwargs": clean}


def implementation(optimizer: Any) -> str:
    """Which code path steps ``optimizer``, for the run's provenance record.

    For adan-core's Adan this is the implementation adan-core's own chooser picks for the
    optimizer's parameters here (``cpu_fused``, ``fused``, ``foreach`` or ``single``); for other
    optimizers, the class and its ``foreach``/``fused`` flags.
    """
    name = f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
    from .adan import Adan
    from .functional import choose_impl

    if isinstance(optimizer, Adan):
        chosen = set()
        try:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    state = optimizer.state_dtype or p.dtype
                    dtypes = (p.dtype, p.dtype, state, state, state, state)
                    impl, _ = choose_impl(
                        p.device,
                        dtypes,
                        fused=group["fused"],
                        foreach=group["foreach"],
                        capturable=group["capturable"],
                    )
                    chosen.add(impl)
        except Exception as exc:  # noqa: BLE001 - a record, not a reason to stop the run
            return f"{name}: unknown ({type(exc).__name__}: {exc})"
        return f"{name}: {', '.join(sorted(chosen))}"
    flags = ", ".join(
        f"{k}={optimizer.defaults[k]}" for k in ("foreach", "fused") if k in optimizer.defaults
    )
    return f"{name} ({flags})" if flags else name


# --------------------------------------------------------------------------------------------
# Built-in optimizers. Extra families add one register_optimizer(...) line each below.

register_optimizer("adam", torch.optim.Adam, help="torch.optim.Adam, L2 weight decay")
register_optimizer("adamw", torch.optim.AdamW, help="torch.optim.AdamW, decoupled weight decay")
register_optimizer("adan", "adan_core.adan:Adan", help="Adan with proximal weight decay (paper)")
register_optimizer(
    "adanw",
    "adan_core.adan:Adan",
    help="Adan with AdamW-style decoupled weight decay (no_prox=True)",
    fixed_kwargs={"no_prox": True},
)

register_optimizer(
    "adan_win",
    "adan_core.adan:Adan",
    help="Adan + Win acceleration (experimental, our composition)",
    fixed_kwargs={"acceleration_mode": "win"},
)
register_optimizer(
    "adan_win2",
    "adan_core.adan:Adan",
    help="Adan + Win2 acceleration (experimental, our composition)",
    fixed_kwargs={"acceleration_mode": "win2"},
)

# Win family (adan_core.win): Win / Win2 acceleration of AdamW, Adam, LAMB and SGD.
register_optimizer("adamw_win", "adan_core.win:AdamW_Win", help="AdamW + Win/Win2 acceleration")
register_optimizer("adam_win", "adan_core.win:Adam_Win", help="Adam (L2 decay) + Win/Win2")
register_optimizer("lamb_win", "adan_core.win:LAMB_Win", help="LAMB + Win/Win2 acceleration")
register_optimizer("sgd_win", "adan_core.win:SGD_Win", help="Nesterov SGD + Win/Win2 (lr required)")
register_optimizer_arg(
    "--acceleration-mode",
    choices=("win", "win2", "none"),
    help="Win family: 'win' (their default), 'win2' (two reckless sequences) or 'none' (the plain "
    "base optimizer). Also accepted by adan/adan_win (experimental; Adan's default is 'none').",
)
register_optimizer_arg(
    "--reckless-steps",
    type=float,
    nargs=2,
    metavar=("GAMMA1", "GAMMA2"),
    help="Win family and Adan's Win modes: reckless step sizes relative to lr, both > 0 "
    "(default: 2 8).",
)


def _state_dtype(value: str) -> torch.dtype:
    """argparse ``type`` for ``--opt-state-dtype``."""
    if value != "fp32":
        raise argparse.ArgumentTypeError(
            f"--opt-state-dtype takes 'fp32' (fp32 state for bf16/fp16 params), got {value!r}"
        )
    return torch.float32


register_optimizer_arg(
    "--opt-state-dtype",
    kwarg="state_dtype",
    type=_state_dtype,
    metavar="fp32",
    help="Adan: keep optimizer state in fp32 for bf16/fp16 params (default: the param dtype, as "
    "the official code). bf16 state stalls for slow EMAs such as b3 = 0.999.",
)
