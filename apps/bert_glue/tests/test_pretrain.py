"""Real short pretraining runs on the Trainer: the loss falls with both recipes, the optimizer
is adan-core's, a killed run resumes where the uninterrupted one would be, bad settings fail."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from adan_bert import pretrain as P
from adan_bert.model import fairseq_parameter_count, roberta_config
from adan_repro import rundir
from adan_repro.testing import kill_after_first_checkpoint
from conftest import MICRO, write_corpus


def _args(tmp_path, *extra):
    corpus = tmp_path / "corpus" / "ptb.train.txt"
    if not corpus.exists():
        write_corpus(tmp_path / "corpus")
    return [
        "--corpus", str(corpus), "--cache-dir", str(tmp_path / "cache"), *MICRO, *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("recipe", ["adam", "adan"])
def test_short_run_lowers_the_mlm_loss_with_the_recipes_optimizer(tmp_path, recipe):
    seen = {}

    def inspect(trainer):
        opt = P.unwrapped(trainer.optimizer)
        seen["type"] = type(opt)
        seen["groups"] = [(g["lr"], g["weight_decay"], len(g["params"])) for g in opt.param_groups]
        seen["state"] = [opt.state[p] for g in opt.param_groups for p in g["params"]]
        seen["betas"] = opt.param_groups[0]["betas"]

    out = tmp_path / "run"
    args = P.build_parser().parse_args(_args(tmp_path, "--recipe", recipe, "--out", str(out)))
    assert P.pretrain(args, log=lambda m: None, on_trained=inspect) == "finished"
    rows = rundir.read_eval(out / rundir.EVAL)
    assert rows[0]["step"] == 0 and rows[-1]["step"] == 30
    # Adan's recipe has 10x Adam's lr: in 30 updates it falls much further
    assert rows[-1]["valid_loss"] < rows[0]["valid_loss"] - {"adam": 0.05, "adan": 0.3}[recipe]
    from adan_core import Adan

    want = {"adam": torch.optim.AdamW, "adan": Adan}[recipe]
    assert seen["type"] is want
    assert seen["betas"] == {"adam": (0.9, 0.98), "adan": (0.98, 0.92, 0.99)}[recipe]
    # the Trainer's grouping: biases and LayerNorm without decay
    decays = sorted(wd for _, wd, _ in seen["groups"])
    assert decays == [0.0, {"adam": 0.01, "adan": 0.02}[recipe]]
    keys = {"adam": "exp_avg_sq", "adan": "exp_avg_diff"}[recipe]
    assert all(keys in s for s in seen["state"]), "the optimizer state is empty"
    assert (out / "final" / "model.safetensors").exists() and rundir.is_done(out)
    assert not (out / "trainer").exists()
    # a finished run is skipped
    assert P.pretrain(args, log=lambda m: None) == "skipped"


def test_decay_all_puts_every_parameter_in_one_decayed_group(tmp_path):
    seen = {}

    def inspect(trainer):
        opt = P.unwrapped(trainer.optimizer)
        seen["groups"] = [(g["weight_decay"], len(g["params"])) for g in opt.param_groups]
        seen["n"] = len(list(trainer.model.parameters()))

    args = P.build_parser().parse_args(
        _args(tmp_path, "--out", str(tmp_path / "run"), "--decay-all", "--max-steps", "2",
              "--warmup", "0", "--eval-every", "2")
    )  # fmt: skip
    P.pretrain(args, log=lambda m: None, on_trained=inspect)
    assert seen["groups"] == [(0.02, seen["n"])]


def test_killed_run_resumes_exactly(tmp_path):
    cmd = [sys.executable, "-m", "adan_bert.pretrain", *_args(tmp_path), "--max-steps", "40"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    subprocess.run([*cmd, "--out", str(whole)], check=True, capture_output=True)
    step = kill_after_first_checkpoint([*cmd, "--out", str(cut)], cut)
    assert 0 < step < 40
    done = subprocess.run([*cmd, "--out", str(cut)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"resuming from {cut}" in done.stdout
    assert (cut / rundir.EVAL).read_text() == (whole / rundir.EVAL).read_text()


def _loss_at(out, step, column):
    return next(r[column] for r in rundir.read_eval(out / rundir.EVAL) if r["step"] == step)


def test_accumulation_and_processes_keep_the_loss_scale(tmp_path):
    """The Trainer scales the loss by accumulation steps and processes when it believes the
    model normalises by the update's token count; ours does (masked_lm_loss). With the bug the
    logged losses of these runs were 4x and 2x the single-batch run's."""
    base = [*_args(tmp_path), "--max-steps", "10", "--eval-every", "10", "--warmup", "0"]
    runs = {"one": ["--micro-batch", "8"], "accumulated": ["--micro-batch", "2"]}
    for name, extra in runs.items():
        cmd = [sys.executable, "-m", "adan_bert.pretrain", *base, *extra]
        subprocess.run([*cmd, "--out", str(tmp_path / name)], check=True, capture_output=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                "2", "-m", "adan_bert.pretrain", *base, "--micro-batch", "4"]  # fmt: skip
    subprocess.run([*torchrun, "--out", str(tmp_path / "ddp")], check=True, capture_output=True)
    ref = _loss_at(tmp_path / "one", 10, "train_loss")
    for name in ("accumulated", "ddp"):
        assert _loss_at(tmp_path / name, 10, "train_loss") == pytest.approx(ref, rel=0.05), name
        assert _loss_at(tmp_path / name, 0, "valid_loss") == pytest.approx(
            _loss_at(tmp_path / "one", 0, "valid_loss"), rel=0.02
        )
    assert (tmp_path / "ddp" / "final" / "model.safetensors").exists()


def test_masked_lm_loss_divides_by_the_updates_masked_tokens():
    logits = torch.randn(2, 5, 11)
    labels = torch.full((2, 5), -100)
    labels[0, 1], labels[1, 3], labels[1, 4] = 3, 7, 2
    mean = torch.nn.functional.cross_entropy(logits.view(-1, 11), labels.view(-1))
    assert P.masked_lm_loss({"logits": logits}, labels) == pytest.approx(mean.item())
    # a micro-batch holding 3 of the update's 6 masked tokens contributes half its mean
    half = P.masked_lm_loss({"logits": logits}, labels, num_items_in_batch=torch.tensor(6))
    assert half == pytest.approx(mean.item() / 2)


def test_roberta_base_matches_fairseqs_parameter_count():
    from transformers import RobertaForMaskedLM

    with torch.device("meta"):
        model = RobertaForMaskedLM(roberta_config("roberta-base", 50265))
    n = sum(p.numel() for p in model.parameters())
    assert n == 124_697_433  # transformers' roberta-base MLM checkpoint
    assert n - fairseq_parameter_count("roberta-base", 50265) == 768  # its one token type row


def test_bad_settings_are_clear(tmp_path, capsys):
    assert P.main(_args(tmp_path, "--out", str(tmp_path / "r"), "--seq-len", "100")) == 2
    assert "exceeds model 'micro'" in capsys.readouterr().err
    assert P.main(_args(tmp_path, "--out", str(tmp_path / "r"), "--micro-batch", "3")) == 2
    assert "not a multiple of micro batch 3" in capsys.readouterr().err
    with pytest.raises(ValueError, match="needs 3 betas"):
        from adan_core.optim_factory import trainer_optimizer_cls_and_kwargs

        trainer_optimizer_cls_and_kwargs(opt="adan", betas=(0.9, 0.98))


def test_accumulation_makes_the_batch():
    assert P.accumulation(256, 32, 8) == 1
    assert P.accumulation(256, 8, 2) == 16
    assert P.micro_batch_for(256, 8, None) == 32
    assert P.micro_batch_for(24, 1, None) == 24
    assert P.micro_batch_for(40, 1, None) == 20
