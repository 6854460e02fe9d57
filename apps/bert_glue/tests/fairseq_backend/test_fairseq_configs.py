"""The paper's fairseq YAML configs (adan_bert/fairseq_configs): each one composes as
fairseq-hydra-train would and builds task, RoBERTa-base, criterion, optimizer and scheduler
with presets.py's numbers; they are what the generator makes; the default and paper variants
differ only where they should; bad optimizer options fail with the option's name."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "fairseq",
    reason="fairseq is not installed: the fairseq config tests run in the tox env bert-fairseq "
    "(tox -e bert-fairseq); the plain bert env has no fairseq",
)

import torch  # noqa: E402
from adan_bert import fairseq_dryrun, fairseq_yaml  # noqa: E402
from adan_bert.fairseq_dryrun import dry_run, write_dry_run_dictionaries  # noqa: E402
from adan_bert.presets import (  # noqa: E402
    HALVED_EPOCHS,
    MODEL_SIZES,
    PRETRAIN_RECIPES,
    PRETRAIN_SCALES,
    glue_recipe,
)
from omegaconf import OmegaConf  # noqa: E402

from adan_core import Adan  # noqa: E402

PACKAGE_DIR = fairseq_yaml.PACKAGE_DIR
COMMITTED = sorted(p.relative_to(PACKAGE_DIR).as_posix() for p in PACKAGE_DIR.rglob("*.yaml"))
N_TYPES = 100  # a 100-token dictionary: RoBERTa-base without its 50k-row embedding
BASE = MODEL_SIZES["roberta-base"]


@pytest.fixture(scope="module")
def dicts(tmp_path_factory) -> Path:
    return write_dry_run_dictionaries(tmp_path_factory.mktemp("fairseq_dicts"), N_TYPES)


@pytest.fixture
def fast_init(monkeypatch):
    """Skip the random fill of RoBERTa-base's 86M weights (about 2 s a build on one core, of
    2.5 s): the dry run builds the same modules and shapes, with uninitialised values. The
    ``test_real_build`` test runs without it."""
    monkeypatch.setattr(torch.Tensor, "normal_", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.Tensor, "uniform_", lambda self, *a, **k: self)


def _expected(rel: str):
    """(recipe name, is pretraining, OptRecipe, batch per GPU, warm-up, max_update, schedule,
    task) for a config's relative path."""
    parts = rel[: -len(".yaml")].split("/")
    if parts[0] == "pretraining":
        scale = PRETRAIN_SCALES["paper"]
        recipe = parts[1]
        opt = PRETRAIN_RECIPES[recipe]
        return recipe, True, opt, scale.batch // 8, scale.warmup, scale.max_steps, "linear", None
    task, recipe = parts[-1].rsplit("-", 1)
    r = glue_recipe(task, recipe, paper_quirks=parts[1:2] == ["paper"])
    return recipe, False, r.opt, r.batch, r.warmup, r.max_steps, r.schedule, task


def test_the_package_has_every_config():
    assert COMMITTED == sorted(fairseq_yaml.expected_files()), (
        "committed configs differ from the generator's list: run "
        "`python -m adan_bert.fairseq_yaml --write`"
    )
    assert len(COMMITTED) == 2 + 2 * 8 + 2 * 7


@pytest.mark.parametrize("rel", COMMITTED)
def test_config_dry_runs(rel, dicts, fast_init):
    recipe, pretraining, opt, batch, warmup, max_update, schedule, task = _expected(rel)
    report = dry_run(PACKAGE_DIR / rel, dicts)

    model = report["model"]
    assert model["class"] == "fairseq.models.roberta.model.RobertaModel"
    assert (model["layers"], model["embed_dim"]) == (BASE.layers, BASE.hidden) == (12, 768)
    assert (model["attention_heads"], model["ffn_embed_dim"]) == (BASE.heads, BASE.ffn)
    assert model["max_positions"] == BASE.max_positions
    assert (model["dropout"], model["attention_dropout"]) == (0.1, 0.1)
    assert model["trainable_parameters"] == model["parameters"] > 85_000_000

    if pretraining:
        assert report["task"]["name"] == "masked_lm"
        assert report["task"]["dictionary_size"] == N_TYPES + 4 + 1  # specials, <mask>
        assert model["classification_heads"] == {}
        assert report["optimization"]["distributed_world_size"] == 8
    else:
        assert report["task"]["name"] == "sentence_prediction"
        assert report["task"]["dictionary_size"] == N_TYPES + 4 + 1  # <mask> too, as RoBERTa
        n_classes = {"STS-B": 1, "MNLI": 3}.get(task, 2)
        assert model["classification_heads"] == {"sentence_classification_head": n_classes}
        assert report["optimization"]["max_epoch"] == 10

    o = report["optimizer"]
    s = o["settings"]  # param_groups[0] as built
    if recipe == "adan":
        assert o["torch_class"] == f"{Adan.__module__}.{Adan.__qualname__}"
        assert o["name"] == "adan"
        assert (s["no_prox"], s["max_grad_norm"]) == (False, 0.0)  # clipping is fairseq's
    else:
        assert o["class"] == "fairseq.optim.adam.FairseqAdam"
        assert o["torch_class"].startswith("fairseq.optim.")  # Adam on CPU, FusedAdam on CUDA
    assert s["lr"] == opt.lr
    assert tuple(s["betas"]) == opt.betas
    assert (s["eps"], s["weight_decay"]) == (opt.eps, opt.weight_decay)
    assert o["clip_norm"] == opt.max_grad_norm

    sched = report["lr_scheduler"]
    cls = {"linear": "PolynomialDecayLRSchedule", "cosine": "CosineLRSchedule"}[schedule]
    assert sched["class"].rsplit(".", 1)[1] == cls
    assert sched["warmup_updates"] == warmup
    lrs = sched["lr_at_update"]
    assert lrs[str(0)] == 0.0
    assert lrs[str(warmup)] == pytest.approx(opt.lr)
    assert lrs[str(max_update - 1)] < 0.01 * opt.lr

    run = report["optimization"]
    assert (run["lr"], run["max_update"], run["batch_size"]) == ([opt.lr], max_update, batch)
    assert report["fp16"] and report["notes"]  # built as fp32 on CPU, and says so


def test_compose_is_fairseq_hydra_train(tmp_path):
    """What the dry run composes is what ``fairseq-hydra-train --cfg job`` prints (hydra's
    composed config, before fairseq runs anything)."""
    config = PACKAGE_DIR / "finetuning" / "paper" / "QNLI-adan.yaml"
    overrides = ["task.data=/data/QNLI-bin", "optimization.lr=[3e-05]", "+optimizer.no_prox=true"]
    script = Path(sys.executable).with_name("fairseq-hydra-train")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "fairseq_cli.hydra_train"]
    done = subprocess.run(
        [*cmd, "--config-dir", str(config.parent), "--config-name", config.stem, "--cfg", "job"]
        + overrides,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = OmegaConf.to_container(OmegaConf.create(done.stdout))
    composed = OmegaConf.to_container(fairseq_dryrun.compose(config, overrides))
    assert composed == printed
    assert composed["optimizer"]["no_prox"] is True
    assert composed["optimization"]["lr"] == [3e-05]


def test_real_build(dicts):
    """No shortcut: the weights are initialised as fairseq-hydra-train would."""
    report = dry_run(PACKAGE_DIR / "finetuning/STS-B-adan.yaml", dicts)
    assert report["model"]["layers"] == 12
    assert report["lr_scheduler"]["class"].endswith("CosineLRSchedule")


def test_check_passes_on_the_package():
    assert fairseq_yaml.stale_files() == []
    done = subprocess.run(
        [sys.executable, "-m", "adan_bert.fairseq_yaml", "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout


def test_check_names_stale_files(tmp_path, capsys):
    assert fairseq_yaml.main(["--write", str(tmp_path)]) == 0
    assert fairseq_yaml.main(["--check", str(tmp_path)]) == 0
    capsys.readouterr()

    edited = tmp_path / "finetuning" / "SST-2-adan.yaml"
    text = edited.read_text()
    assert "  lr: [4e-05]\n" in text
    edited.write_text(text.replace("  lr: [4e-05]\n", "  lr: [5e-05]\n"))
    (tmp_path / "pretraining" / "adam.yaml").unlink()
    leftover = tmp_path / "finetuning" / "WNLI-adan.yaml"
    leftover.write_text(f"# {fairseq_yaml.MARKER}\n")
    (tmp_path / "finetuning" / "mine.yaml").write_text("# not generated\n")  # left alone

    assert fairseq_yaml.main(["--check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "finetuning/SST-2-adan.yaml (differs)" in err
    assert "pretraining/adam.yaml (missing)" in err
    assert "finetuning/WNLI-adan.yaml (not generated any more)" in err
    assert "mine.yaml" not in err and "CoLA" not in err

    assert fairseq_yaml.main(["--write", str(tmp_path)]) == 0
    assert fairseq_yaml.main(["--check", str(tmp_path)]) == 0
    assert not leftover.exists() and (tmp_path / "finetuning" / "mine.yaml").exists()


def _body(path: Path) -> str:
    """A config without its leading comment header."""
    lines = path.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    return "".join(lines[start:])


@pytest.mark.parametrize("task", fairseq_yaml.PAPER_TASKS)
@pytest.mark.parametrize("recipe", fairseq_yaml.RECIPES)
def test_default_and_paper_variants(task, recipe):
    default = PACKAGE_DIR / "finetuning" / f"{task}-{recipe}.yaml"
    paper = PACKAGE_DIR / "finetuning" / "paper" / f"{task}-{recipe}.yaml"
    if recipe == "adan" and task in HALVED_EPOCHS:
        d, p = OmegaConf.load(default), OmegaConf.load(paper)
        assert d.optimization.max_update == 2 * p.optimization.max_update
        assert d.lr_scheduler.warmup_updates == 2 * p.lr_scheduler.warmup_updates
        assert p.optimization.max_update == glue_recipe(task, recipe, paper_quirks=True).max_steps
        for c in (d, p):
            del c.optimization["max_update"], c.lr_scheduler["warmup_updates"]
        assert d == p
        assert "doubled" in default.read_text() and "Kept as the paper ran it" in paper.read_text()
    else:
        assert _body(default) == _body(paper)
    if task == "CoLA":
        assert "1,042 of 1,043" in paper.read_text()


def test_floats_round_trip_exactly():
    text = (PACKAGE_DIR / "finetuning" / "CoLA-adam.yaml").read_text()
    assert re.search(r"^  lr: \[1e-05\]$", text, re.M)
    assert re.search(r"^  adam_eps: 1e-06$", text, re.M)
    cfg = OmegaConf.load(PACKAGE_DIR / "pretraining" / "adan.yaml")
    assert cfg.optimizer.adan_eps == 1e-08 and cfg.optimization.lr == [1e-3]
    assert cfg.optimizer.adan_betas == "(0.98, 0.92, 0.99)"


@pytest.mark.parametrize(
    "override, option",
    [
        ("optimizer.adan_betas='(0.9, 2)'", "adan_betas"),
        ("+optimizer.adan_impl=bogus", "adan_impl"),  # '+': the YAML leaves it at its default
    ],
)
def test_bad_optimizer_option(override, option, dicts, fast_init):
    with pytest.raises(ValueError, match=rf"optimizer\.{option}="):
        dry_run(PACKAGE_DIR / "finetuning" / "RTE-adan.yaml", dicts, [override])


def test_clear_errors(tmp_path, dicts):
    with pytest.raises(FileNotFoundError, match=r"config .*nope\.yaml not found.*--write"):
        dry_run(tmp_path / "nope.yaml", dicts)
    config = PACKAGE_DIR / "finetuning" / "RTE-adam.yaml"
    with pytest.raises(FileNotFoundError, match="data folder .* does not exist"):
        dry_run(config, tmp_path / "no-data")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"input0/dict\.txt, label/dict\.txt.*write_dry"):
        dry_run(config, tmp_path / "empty")


def test_cli_prints_the_report(capsys, fast_init):
    config = PACKAGE_DIR / "pretraining" / "adam.yaml"
    assert fairseq_dryrun.main([str(config), "--dict-types", "50", "optimization.lr=[2e-4]"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["task"]["dictionary_size"] == 50 + 5
    assert report["optimizer"]["settings"]["lr"] == 2e-4
    assert fairseq_dryrun.main([str(config), "--data", "/nonexistent/data"]) == 1
    assert "does not exist" in capsys.readouterr().err
