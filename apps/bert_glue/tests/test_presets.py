"""The recipes as the paper's configs give them, the quirk fix, scaling, and validation."""

from __future__ import annotations

import pytest
from adan_bert import presets as S


def test_pretraining_recipes_are_the_papers():
    adam, adan = S.PRETRAIN_RECIPES["adam"], S.PRETRAIN_RECIPES["adan"]
    assert (adam.opt, adam.lr, adam.betas, adam.eps, adam.weight_decay, adam.max_grad_norm) == (
        "adamw", 1e-4, (0.9, 0.98), 1e-6, 0.01, 0.0)  # fmt: skip
    assert (adan.opt, adan.lr, adan.betas, adan.eps, adan.weight_decay, adan.max_grad_norm) == (
        "adan", 1e-3, (0.98, 0.92, 0.99), 1e-8, 0.02, 5.0)  # fmt: skip
    paper = S.PRETRAIN_SCALES["paper"]
    assert (paper.batch * paper.seq_len, paper.max_steps, paper.warmup) == (256 * 512, 10**6, 10**4)


def test_every_scale_keeps_the_warmup_share_of_the_run():
    for name, scale in S.PRETRAIN_SCALES.items():
        if name != "micro":
            assert scale.warmup / scale.max_steps == pytest.approx(0.01, abs=0.001), name


def test_halved_epochs_quirk_is_fixed_by_default_and_kept_on_request():
    paper = S.glue_recipe("MNLI", "adan", paper_quirks=True)
    fixed = S.glue_recipe("MNLI", "adan")
    adam = S.glue_recipe("MNLI", "adam")
    assert paper.max_steps == adam.max_steps == 123873 and paper.batch == 16
    # the same epochs as Adam's recipe: batch 16 needs twice the updates of batch 32
    assert fixed.max_steps * fixed.batch == adam.max_steps * adam.batch
    assert fixed.warmup == 2 * paper.warmup
    assert S.glue_recipe("CoLA", "adan") == S.glue_recipe("CoLA", "adan", paper_quirks=True)


def test_scaled_recipe():
    r = S.glue_recipe("SST-2", "adan")
    s = S.scaled(r, S.FINETUNE_SCALES["reduced"])
    assert s.max_steps == 250  # 5 % of 20935 is 1047, capped
    assert s.warmup == round(1256 * 250 / 20935)
    assert s.opt.lr == pytest.approx(25 * r.opt.lr)
    assert s.opt.betas == r.opt.betas and s.batch == r.batch
    small = S.scaled(S.glue_recipe("RTE", "adam"), S.FINETUNE_SCALES["reduced"])
    assert small.max_steps == round(2036 * 0.05)
    assert S.scaled(r, S.FINETUNE_SCALES["paper"]) == r


def test_heldout_fraction_is_capped_in_examples():
    reduced = S.FINETUNE_SCALES["reduced"]
    assert S.heldout_fraction(reduced, 2490) == 0.1
    assert S.heldout_fraction(reduced, 67349) == pytest.approx(1000 / 67349)


def test_settings_validation_and_overrides():
    s = S.pretrain_settings("adan", "reduced", lr=2e-3, betas=[0.9, 0.9, 0.9], max_steps=100)
    assert s.opt.lr == 2e-3 and s.opt.betas == (0.9, 0.9, 0.9) and s.max_steps == 100
    assert s.opt.weight_decay == 0.02  # the rest of the recipe stays
    with pytest.raises(ValueError, match="unknown recipe"):
        S.pretrain_settings("sgd")
    with pytest.raises(ValueError, match="warmup"):
        S.pretrain_settings("adan", "micro", warmup=30)
    with pytest.raises(ValueError, match="no fine-tuning recipe"):
        S.glue_recipe("WNLI", "adan")
    with pytest.raises(ValueError, match="must not exceed 1"):
        S.Masking(leave_unmasked=0.6, random_token=0.5)
