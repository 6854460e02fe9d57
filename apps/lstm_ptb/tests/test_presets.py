"""Settings, presets and optimizer presets: values, schedule and clear errors."""

from __future__ import annotations

import pytest
from adan_lstm.presets import (
    LSTMSettings,
    SettingsError,
    optimizer_preset,
    preset_settings,
    scaled_when,
)
from adan_lstm.train import build_parser, optimizer_overrides, settings_from_args


def test_paper_preset_is_the_setting():
    s = preset_settings("paper", 3)
    assert (s.emsize, s.nhid, s.epochs, s.when, s.clip) == (400, 1150, 200, (100, 145), 0.25)
    assert (s.dropout, s.dropouth, s.dropouti, s.dropoute, s.wdrop) == (0.4, 0.25, 0.4, 0.1, 0.5)
    assert (s.alpha, s.beta, s.bptt) == (2.0, 1.0, 70)
    assert (s.batch_size, s.eval_batch_size, s.test_batch_size) == (20, 10, 1)
    assert not s.weight_drop_compat


def test_lr_drops_after_the_when_epochs():
    s = LSTMSettings()
    assert [s.lr_factor(e) for e in (1, 100, 101, 145, 146, 200)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )


def test_scaled_schedules_keep_the_drop_fractions():
    assert scaled_when(200) == (100, 145)
    assert scaled_when(8) == (4, 6)
    assert scaled_when(20) == (10, 14)
    assert preset_settings("scaled", 1).when == (4, 6)
    assert preset_settings("paper", 1, epochs=40).when == (20, 29)  # --epochs rescales drops


def test_optimizer_presets_per_depth():
    adam, adan = optimizer_preset("adam"), optimizer_preset("adan")
    assert [adam.lr_for(n) for n in (1, 2, 3)] == [1e-3, 1e-2, 1e-2]
    assert adam.weight_decay == 1.2e-6 and adam.betas == (0.9, 0.999) and adam.eps == 1e-8
    assert [adan.lr_for(n) for n in (1, 2, 3)] == [1e-2] * 3
    assert adan.weight_decay == 0.02 and adan.betas == (0.98, 0.92, 0.99)


def test_flags_override_presets():
    args = build_parser().parse_args(["--opt", "adan", "--lr", "0.003", "--opt-betas", "0.9",
                                      "0.9", "0.9", "--nlayers", "2"])  # fmt: skip
    kw = optimizer_overrides(args, 2)
    assert kw == {"lr": 0.003, "weight_decay": 0.02, "betas": (0.9, 0.9, 0.9), "eps": 1e-8,
                  "bias_decay": True}  # fmt: skip
    args = build_parser().parse_args(["--preset", "scaled", "--epochs", "10", "--emsize", "50"])
    s = settings_from_args(args)
    assert (s.epochs, s.when, s.emsize) == (10, (5, 7), 50)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"when": (300,)}, r"when \[300\] must be increasing epochs within 1..200"),
        ({"dropouti": 1.5}, r"dropouti must be in \[0, 1\)"),
        ({"bptt": 2}, "bptt must be at least 5"),
        ({"train_tokens": 3}, "train_tokens must hold at least two rows"),
        ({"nlayers": 0}, "nlayers must be at least 1"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(SettingsError, match=message):
        LSTMSettings(**kwargs)


def test_bad_preset_is_a_clear_error():
    with pytest.raises(SettingsError, match=r"unknown preset 'papr'; choose one of paper, scaled"):
        preset_settings("papr", 1)


def test_optimizer_without_preset_needs_an_lr():
    args = build_parser().parse_args(["--opt", "adamw"])
    with pytest.raises(SettingsError, match="no preset for --opt adamw; give --lr"):
        optimizer_overrides(args, 1)
    args = build_parser().parse_args(["--opt", "adamw", "--lr", "0.002"])
    assert optimizer_overrides(args, 1) == {"bias_decay": True}
