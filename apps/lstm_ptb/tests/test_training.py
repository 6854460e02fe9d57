"""Real short runs on the generated corpus: learning, the per-batch lr, resume, protocols."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from adan_lstm.train import Trainer, build_parser, main, protocols, setup, train
from adan_repro import rundir
from adan_repro.rundir import RunConflictError
from adan_repro.testing import kill_after_first_checkpoint
from conftest import TINY

TIMING = ("train_tokens_per_s", "train_s", "eval_s")


def args_for(corpus_dir, out, *extra):
    return build_parser().parse_args(["--data", str(corpus_dir), "--out", str(out), *TINY, *extra])


def numbers(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.mark.parametrize("opt", ["adam", "adan"])
def test_short_training_lowers_the_loss(corpus_dir, tmp_path, opt):
    args = args_for(corpus_dir, tmp_path / opt, "--opt", opt, "--lr", "0.01", "--epochs", "6",
                    "--when", "6")  # fmt: skip
    assert train(args, log=print).status == "finished"
    rows = rundir.read_eval(tmp_path / opt / rundir.EVAL)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    # 40 words, 3 likely successors each: chance is ppl 40, the chain allows about 3.
    assert rows[-1]["valid_ppl"] < 0.8 * rows[0]["valid_ppl"]
    assert all(b["valid_ppl"] < a["valid_ppl"] for a, b in zip(rows, rows[1:]))
    assert rows[-1]["train_ppl"] < 0.8 * rows[0]["train_ppl"]
    done = (tmp_path / opt / rundir.DONE).read_text()
    assert '"paper"' in done and '"clean"' in done
    assert (tmp_path / opt / "final" / "model.pt").exists()
    assert not list((tmp_path / opt).glob("ckpt-*"))


def test_the_optimizer_gets_the_length_scaled_lr_every_step(corpus_dir, tmp_path):
    args = args_for(corpus_dir, tmp_path, "--opt", "adam", "--lr", "0.002", "--epochs", "4",
                    "--when", "1", "3")  # fmt: skip
    settings, trainer, _ = setup(args, log=lambda m: None)
    seen: list[float] = []
    trainer.optimizer.register_step_pre_hook(
        lambda opt, a, k: seen.append(opt.param_groups[0]["lr"])
    )
    rng = np.random.RandomState(0)
    per_epoch = []
    for epoch in (1, 2, 3, 4):
        seen.clear()
        trainer.train_epoch(epoch, rng)
        per_epoch.append(np.array(seen))
    for lrs, factor in zip(per_epoch, (1, 0.1, 0.1, 0.01)):
        lengths = lrs / (0.002 * factor) * 70  # lr = base * factor * seq_len / 70
        assert np.allclose(lengths, np.round(lengths)) and lengths.min() >= 5
        assert len(set(np.round(lengths))) > 3  # variable BPTT: several lengths per epoch
        assert 50 < np.mean(lengths) < 75  # mostly ~70, sometimes ~35
    assert trainer.optimizer.param_groups[0]["lr"] != 0.002  # it is rewritten per batch


def test_resume_after_stop_matches_an_uninterrupted_run(corpus_dir, tmp_path):
    for opt in ("adam", "adan"):
        straight = tmp_path / f"{opt}_straight"
        train(args_for(corpus_dir, straight, "--opt", opt, "--epochs", "3"), log=print)
        split = tmp_path / f"{opt}_split"
        first = train(args_for(corpus_dir, split, "--opt", opt, "--epochs", "3",
                               "--stop-after-epochs", "1"), log=print)  # fmt: skip
        assert first.status == "stopped" and rundir.latest_checkpoint(split).step == 1
        again = train(args_for(corpus_dir, split, "--opt", opt, "--epochs", "3"), log=print)
        assert again.status == "finished"
        a = rundir.read_eval(straight / rundir.EVAL)
        b = rundir.read_eval(split / rundir.EVAL)
        assert numbers(a) == numbers(b)  # exactly, not approximately
        ma = torch.load(straight / "final" / "model.pt")
        mb = torch.load(split / "final" / "model.pt")
        assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_resume_after_a_kill_matches_an_uninterrupted_run(corpus_dir, tmp_path):
    cmd = [sys.executable, "-m", "adan_lstm.train", "--data", str(corpus_dir), *TINY,
           "--opt", "adan", "--epochs", "6"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight = tmp_path / "straight"
    subprocess.run([*cmd, "--out", str(straight)], check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    stopped_at = kill_after_first_checkpoint([*cmd, "--out", str(killed)], killed, env)
    out = subprocess.run([*cmd, "--out", str(killed)], check=True, env=env, capture_output=True,
                         text=True)  # fmt: skip
    assert f"resuming after epoch {stopped_at}" in out.stdout
    a, b = (rundir.read_eval(d / rundir.EVAL) for d in (straight, killed))
    assert len(a) == 6 and numbers(a) == numbers(b)


def test_changed_settings_do_not_mix_into_a_run(corpus_dir, tmp_path, capsys):
    train(args_for(corpus_dir, tmp_path, "--opt", "adam", "--epochs", "3",
                   "--stop-after-epochs", "1"), log=print)  # fmt: skip
    with pytest.raises(RunConflictError, match=r"different settings \(optimizer_kwargs"):
        train(args_for(corpus_dir, tmp_path, "--opt", "adam", "--lr", "0.5", "--epochs", "3"))
    assert main(["--data", str(corpus_dir), "--out", str(tmp_path), *TINY, "--opt", "adam",
                 "--epochs", "4"]) == 2  # fmt: skip
    assert "different settings" in capsys.readouterr().err


def test_finished_run_is_skipped(corpus_dir, tmp_path):
    args = args_for(corpus_dir, tmp_path, "--opt", "adam", "--epochs", "1")
    assert train(args).status == "finished"
    before = (tmp_path / rundir.EVAL).read_text()
    assert train(args).status == "skipped"
    assert (tmp_path / rundir.EVAL).read_text() == before


def test_both_protocols_on_a_hand_made_table():
    rows = [
        {"step": 1, "valid_ppl": 120.0, "test_ppl": 115.0},
        {"step": 2, "valid_ppl": 100.0, "test_ppl": 99.0},  # best valid
        {"step": 3, "valid_ppl": 101.0, "test_ppl": 96.0},  # best test
        {"step": 4, "valid_ppl": 100.0, "test_ppl": 96.0},  # ties: the earliest wins
    ]
    p = protocols(rows)
    assert p["paper"] == {"epoch": 3, "selected_on": "test_ppl", "test_ppl": 96.0}
    assert p["clean"] == {"epoch": 2, "selected_on": "valid_ppl", "test_ppl": 99.0}


def test_missing_data_and_bad_preset_exit_with_a_message(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist; pass --data DIR" in capsys.readouterr().err
    assert main(["--data", str(tmp_path), "--preset", "huge", "--out", str(tmp_path / "o")]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err


def test_dry_run_prints_parameters_and_trains_nothing(corpus_dir, tmp_path, capsys):
    assert main(["--data", str(corpus_dir), *TINY, "--dry-run", "--nlayers", "2"]) == 0
    out = capsys.readouterr().out
    assert "parameters:" in out and "(2 layers)" in out and "settings:" in out
    assert not list(tmp_path.glob("**/eval.csv"))


def test_trainer_tracks_tokens(corpus_dir, tmp_path):
    settings, trainer, _ = setup(args_for(corpus_dir, tmp_path, "--opt", "adam"), lambda m: None)
    assert isinstance(trainer, Trainer)
    ppl, tokens, seconds = trainer.train_epoch(1, np.random.RandomState(1))
    n = trainer.train_data.size(0)
    assert tokens == (n - 1) * settings.batch_size or tokens >= (n - 2) * settings.batch_size
    assert ppl > 1 and seconds > 0
