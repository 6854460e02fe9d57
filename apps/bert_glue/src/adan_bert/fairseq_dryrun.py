"""Dry run of a fairseq YAML config: compose it as ``fairseq-hydra-train`` would, build the
task, model, criterion, optimizer and lr scheduler, and report what was built. No training, and
no data read beyond the dictionaries.

``python -m adan_bert.fairseq_dryrun CONFIG [--data DIR] [OVERRIDE ...]`` prints the report as
JSON. Without ``--data`` it builds against a throwaway dictionary of ``--dict-types`` entries
(:func:`write_dry_run_dictionaries`); a real data folder (fairseq-preprocess output) gives the
real vocabulary size.

How the config is composed, step by step as fairseq's ``fairseq_cli/hydra_train.py`` does it
(fairseq 0.12, hydra-core 1.x):

1. ``fairseq.dataclass.initialize.hydra_init(name)`` puts fairseq's ``FairseqConfig`` into
   hydra's ConfigStore under the config's own name (and each top-level section by its name);
2. hydra's search path is the one ``@hydra.main(config_path="../fairseq/config")`` builds,
   with the config's folder prepended as ``--config-dir`` does; the config is composed with
   the overrides in hydra's 1.1 compatibility mode (fairseq's ``hydra.main`` passes no
   ``version_base``), so the YAML is checked against the ConfigStore node of the same name,
   i.e. against ``FairseqConfig``'s fields;
3. the ``hydra`` node is dropped, ``add_defaults`` merges the registered dataclasses of the
   chosen task/model/criterion/optimizer/scheduler, and the config is resolved into a plain
   struct ``DictConfig`` under ``omegaconf_no_object_check`` (``_hydra_main``);
4. ``fairseq_cli.train.main``'s first steps: ``utils.import_user_module(cfg.common)`` (the
   plugin that registers ``--optimizer adan``) and ``add_defaults`` again, which now finds the
   plugin's optimizer dataclass.

``task.data`` is set to ``data`` and ``common.user_dir`` to ``user_dir`` (default: the
plugin's folder, ``adan_bert.fairseq_adan.USER_DIR``) before step 3, as their command-line
overrides would be;
``checkpoint.restore_file`` (``???`` in the fine-tuning configs) is left unset and unused.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from .fairseq_adan import USER_DIR as PLUGIN_DIR

CONFIGS_DIR = Path(__file__).resolve().parent / "fairseq_configs"
FP16_NOTE = (
    "fp16 config: fairseq-hydra-train wraps this optimizer in FP16Optimizer (fp32 master "
    "weights, flat by default, which needs CUDA: torch.cuda.current_device()); the dry run "
    "builds the plain fp32 optimizer the wrapper would step, with the same settings"
)


def _qualname(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


# --------------------------------------------------------------------------------------------
# Dictionaries.


def write_dry_run_dictionaries(dest: Path, n_types: int, n_labels: int = 3) -> Path:
    """Make ``dest`` a stand-in fairseq data folder for dry runs and return it.

    Writes the dictionaries fairseq's tasks read at setup, in fairseq's ``token count`` format:
    ``dest/dict.txt`` (``masked_lm``), ``dest/input0/dict.txt`` and ``dest/label/dict.txt``
    (``sentence_prediction``; the label one only matters for classification), ``n_types``
    tokens and ``n_labels`` labels. fairseq adds its four specials (and ``masked_lm`` its
    ``<mask>``) on top. No data: good for building, not for training.
    """
    if n_types < 1 or n_labels < 1:
        raise ValueError(f"need at least one type and one label, got {n_types}, {n_labels}")
    dest = Path(dest)
    tokens = "".join(f"tok{i} {n_types - i}\n" for i in range(n_types))
    labels = "".join(f"{i} 1\n" for i in range(n_labels))
    for rel, text in (
        ("dict.txt", tokens),
        ("input0/dict.txt", tokens),
        ("label/dict.txt", labels),
    ):
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return dest


def _needed_dictionaries(cfg: Any) -> list[str]:
    name = cfg.task._name
    if name == "masked_lm":
        return ["dict.txt"]
    if name == "sentence_prediction":
        return ["input0/dict.txt"] + ([] if cfg.task.regression_target else ["label/dict.txt"])
    return []  # other tasks: fairseq says what it misses


# --------------------------------------------------------------------------------------------
# Composition.


@contextlib.contextmanager
def _hydra_state() -> Iterator[None]:
    """Leave hydra's global state (GlobalHydra, version base) as it was."""
    from hydra import version
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    base = version.VersionBase.instance().getbase()
    try:
        GlobalHydra.instance().clear()
        yield
    finally:
        GlobalHydra.instance().clear()
        restore_gh_from_backup(backup)
        version.VersionBase.instance().version_base = base


def compose(config: Path, overrides: Sequence[str] = ()) -> Any:
    """``config`` composed with ``overrides`` as ``fairseq-hydra-train --config-dir
    config.parent --config-name config.stem OVERRIDES`` composes it (steps 1-2 of the module
    docstring); returns hydra's DictConfig without its ``hydra`` node."""
    from fairseq.dataclass.initialize import hydra_init
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.types import RunMode
    from omegaconf import open_dict

    config = Path(config).resolve()
    hydra_train = importlib.util.find_spec("fairseq_cli.hydra_train").origin
    name = config.stem
    hydra_init(name)
    with _hydra_state(), warnings.catch_warnings():
        # what fairseq-hydra-train also prints: hydra 1.1 compatibility, schema matching
        warnings.filterwarnings("ignore", message=r"(?s).*(version_base|ConfigStore schema)")
        version.setbase("1.1")  # what hydra.main without version_base selects
        search_path = create_automatic_config_search_path(
            hydra_train, None, os.path.join("..", "fairseq", "config")
        )
        search_path.prepend(  # as --config-dir
            provider="command-line",
            path=f"file://{config.parent}",
            anchor=SearchPathQuery(provider="schema"),
        )
        hydra = Hydra.create_main_hydra2(task_name="hydra_train", config_search_path=search_path)
        cfg = hydra.compose_config(
            config_name=name,
            overrides=list(overrides),
            run_mode=RunMode.RUN,
            from_shell=False,
            with_log_configuration=False,
        )
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def _finalize(cfg: Any) -> Any:
    """Step 3: what ``_hydra_main`` does to the composed config before training."""
    from fairseq.dataclass.initialize import add_defaults
    from fairseq.dataclass.utils import omegaconf_no_object_check
    from omegaconf import OmegaConf

    add_defaults(cfg)
    with omegaconf_no_object_check():
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    OmegaConf.set_struct(cfg, True)
    return cfg


def _import_plugin(cfg: Any) -> None:
    """Step 4's ``import_user_module``; fairseq puts the plugin's parent folder first on
    sys.path to import it, which is undone here (the module stays imported)."""
    from fairseq import utils

    before = list(sys.path)
    try:
        utils.import_user_module(cfg.common)
    finally:
        sys.path[:] = before


# --------------------------------------------------------------------------------------------
# The dry run.


def load_config(
    config: Path,
    data: Path,
    overrides: Sequence[str] = (),
    user_dir: Path | None = None,
) -> Any:
    """The final config ``fairseq_cli.train.main`` would build from, with ``task.data`` =
    ``data`` and ``common.user_dir`` = ``user_dir`` (default: the package's plugin; a
    ``common.user_dir=`` override wins over the default)."""
    from fairseq.dataclass.initialize import add_defaults
    from omegaconf import open_dict

    config = Path(config)
    if config.suffix not in (".yaml", ".yml") or not config.is_file():
        raise FileNotFoundError(
            f"fairseq config {config} not found (or not a .yaml file): pass a YAML config file; "
            f"the package's are under {CONFIGS_DIR} (`python -m adan_bert.fairseq_yaml --write` "
            "regenerates them)"
        )
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(
            f"data folder {data} does not exist: pass a fairseq-preprocess output folder, or "
            "make a stand-in with adan_bert.fairseq_dryrun.write_dry_run_dictionaries(DIR, "
            "n_types) (the CLI does when --data is left out)"
        )
    cfg = compose(config, overrides)
    with open_dict(cfg):
        cfg.task.data = str(data.resolve())
        if user_dir is not None or cfg.common.get("user_dir") is None:
            cfg.common.user_dir = str(Path(user_dir or PLUGIN_DIR).resolve())
    cfg = _finalize(cfg)
    _import_plugin(cfg)
    add_defaults(cfg)
    return cfg


def dry_run(
    config: Path,
    data: Path,
    overrides: Sequence[str] = (),
    user_dir: Path | None = None,
) -> dict:
    """Build everything ``fairseq-hydra-train`` builds from ``config`` before it reads data.

    Composes the YAML with ``overrides`` as fairseq-hydra-train does (module docstring), then,
    as ``fairseq_cli.train.main`` and its ``Trainer`` do: ``tasks.setup_task`` (reads the
    dictionaries under ``data``), ``task.build_model``, ``task.build_criterion``,
    ``fairseq.optim.build_optimizer`` on the model's and criterion's parameters that require
    grad, and ``lr_scheduler.build_lr_scheduler`` followed by ``step_update(0)``.

    On fp16 configs the Trainer would wrap the optimizer in fairseq's FP16Optimizer, whose flat
    fp32 master copy calls ``torch.cuda.current_device()``; on CPU the dry run builds the plain
    optimizer instead (the one the wrapper steps, same config), and says so in ``notes``.

    Returns a JSON-able dict: the task, model (class, shape, parameter counts), criterion,
    optimizer (fairseq wrapper and torch class, its ``param_groups[0]`` settings as built,
    before the scheduler sets the warm-up lr), scheduler (class; the lr it sets after updates
    0, warm-up and max_update - 1) and run length.

    An option the optimizer refuses (e.g. ``optimizer.adan_betas='(0.9, 2)'``) raises its
    ``ValueError``; as with fairseq-hydra-train, an option the YAML does not set needs hydra's
    ``+`` (``+optimizer.adan_impl=single``).
    """
    from fairseq import optim, tasks
    from fairseq.optim import lr_scheduler
    from omegaconf import OmegaConf

    cfg = load_config(config, data, overrides, user_dir)
    data = Path(cfg.task.data)
    missing = [d for d in _needed_dictionaries(cfg) if not (data / d).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{data} has no {', '.join(missing)}: a {cfg.task._name} dry run reads the "
            "dictionaries of a fairseq-preprocess output folder. Pass that folder, or make a "
            "stand-in with adan_bert.fairseq_dryrun.write_dry_run_dictionaries(DIR, n_types) "
            "(the CLI does when --data is left out)"
        )

    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    params = [p for p in chain(model.parameters(), criterion.parameters()) if p.requires_grad]
    optimizer = optim.build_optimizer(cfg.optimizer, params)
    settings = {k: _jsonable(v) for k, v in optimizer.param_groups[0].items() if k != "params"}
    scheduler = lr_scheduler.build_lr_scheduler(cfg.lr_scheduler, optimizer)
    max_update = int(cfg.optimization.max_update)
    warmup = cfg.lr_scheduler.get("warmup_updates")
    probes = sorted({0, *([warmup] if warmup else []), *([max_update - 1] if max_update else [])})
    lr_at = {}
    for n in probes:  # the Trainer's step_update(n) after update n
        lr_at[str(n)] = float(scheduler.step_update(n))
    scheduler.step_update(0)  # as the Trainer leaves it

    encoder = getattr(getattr(model, "encoder", None), "sentence_encoder", None)
    args = getattr(model, "args", None)
    heads = getattr(model, "classification_heads", {}) or {}
    notes = [FP16_NOTE] if cfg.common.fp16 or cfg.common.bf16 else []
    return {
        "config": str(Path(config).resolve()),
        "overrides": list(overrides),
        "task": {
            "name": cfg.task._name,
            "class": _qualname(task),
            "data": str(data),
            "dictionary_size": len(task.source_dictionary),
        },
        "model": {
            "name": cfg.model._name,
            "class": _qualname(model),
            "layers": len(encoder.layers) if encoder is not None else None,
            "embed_dim": getattr(args, "encoder_embed_dim", None),
            "ffn_embed_dim": getattr(args, "encoder_ffn_embed_dim", None),
            "attention_heads": getattr(args, "encoder_attention_heads", None),
            "max_positions": getattr(args, "max_positions", None),
            "dropout": getattr(args, "dropout", None),
            "attention_dropout": getattr(args, "attention_dropout", None),
            "classification_heads": {
                name: head.out_proj.out_features for name, head in heads.items()
            },
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in params),
        },
        "criterion": {"name": cfg.criterion._name, "class": _qualname(criterion)},
        "optimizer": {
            "name": cfg.optimizer._name,
            "class": _qualname(optimizer),
            "torch_class": _qualname(optimizer.optimizer),
            "settings": settings,
            "config": _jsonable(OmegaConf.to_container(cfg.optimizer, resolve=True)),
            "clip_norm": float(cfg.optimization.clip_norm),
        },
        "lr_scheduler": {
            "name": cfg.lr_scheduler._name,
            "class": _qualname(scheduler),
            "warmup_updates": warmup,
            "lr_at_update": lr_at,
        },
        "optimization": {
            "lr": list(cfg.optimization.lr),
            "max_update": max_update,
            "max_epoch": int(cfg.optimization.max_epoch),
            "update_freq": list(cfg.optimization.update_freq),
            "batch_size": cfg.dataset.batch_size,
            "distributed_world_size": cfg.distributed_training.distributed_world_size,
        },
        "fp16": bool(cfg.common.fp16),
        "notes": notes,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adan_bert.fairseq_dryrun",
        description="Compose a fairseq YAML config as fairseq-hydra-train would and build its "
        "task, model, criterion, optimizer and lr scheduler, without training; prints JSON.",
    )
    parser.add_argument("config", type=Path, help="the YAML config file")
    parser.add_argument(
        "--data",
        type=Path,
        help="fairseq data folder (only its dictionaries are read); default: a throwaway one "
        "of --dict-types tokens",
    )
    parser.add_argument(
        "--dict-types", type=int, default=1000, help="tokens in the throwaway dictionary"
    )
    parser.add_argument("--user-dir", type=Path, help=f"fairseq plugin (default: {PLUGIN_DIR})")
    parser.add_argument("overrides", nargs="*", help="hydra overrides, e.g. optimization.lr=[2e-5]")
    args = parser.parse_intermixed_args(argv)  # overrides before or after the options
    try:
        with tempfile.TemporaryDirectory(prefix="fairseq-dryrun-") as tmp:
            data = args.data or write_dry_run_dictionaries(Path(tmp), args.dict_types)
            report = dry_run(args.config, data, args.overrides, args.user_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.data is None:
        report["task"]["data"] = f"(throwaway dictionary of {args.dict_types} types)"
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
