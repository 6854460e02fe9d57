"""Real short runs on the generated corpus: learning, the schedule, exact resume, protocols,
several processes, errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from adan_repro import rundir
from adan_repro.rundir import RunConflictError
from adan_repro.testing import kill_after_first_checkpoint
from adan_txl.presets import SettingsError, lr_at, scale_settings
from adan_txl.train import build_parser, main, setup, start_processes, train
from conftest import TINY

TIMING = ("train_tokens_per_s", "train_s", "eval_s")


def args_for(corpus_dir, out, *extra):
    return build_parser().parse_args(["--data", str(corpus_dir), "--out", str(out), *TINY, *extra])


def numbers(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def final_weights(run_dir):
    return torch.load(run_dir / "final" / "model.pt", weights_only=True)["model"]


@pytest.mark.parametrize("opt", ["adam", "adan"])
def test_short_training_lowers_the_loss(corpus_dir, tmp_path, opt):
    lr = {"adam": "0.01", "adan": "0.04"}[opt]  # the paper's 1:4 ratio, scaled up for speed
    args = args_for(corpus_dir, tmp_path / opt, "--opt", opt, "--lr", lr, "--max-step", "300",
                    "--eval-interval", "20")  # fmt: skip
    assert train(args, log=print).status == "finished"
    rows = rundir.read_eval(tmp_path / opt / rundir.EVAL)
    assert [r["step"] for r in rows] == list(range(20, 301, 20))
    assert rows[-1]["valid_ppl"] < 0.6 * rows[0]["valid_ppl"]
    assert rows[-1]["valid_ppl"] < 12  # chance is ~40, the chain allows ~3
    done = json.loads((tmp_path / opt / rundir.DONE).read_text())
    assert set(done["protocols"]) == {"paper", "standard"}
    paper, standard = done["protocols"]["paper"], done["protocols"]["standard"]
    assert (paper["tgt_len"], paper["mem_len"], paper["same_length"]) == (8, 8, False)
    assert (standard["same_length"], standard["clamp_len"]) == (True, 100)
    best = min(rows, key=lambda r: r["valid_ppl"])
    assert done["best_step"] == best["step"]
    assert math.isclose(paper["valid_ppl"], best["valid_ppl"], rel_tol=1e-9)  # the best model
    assert (tmp_path / opt / "final" / "model.pt").exists()
    assert not list((tmp_path / opt).glob("ckpt-*"))


def test_the_optimizer_gets_the_scheduled_lr_every_step(corpus_dir, tmp_path):
    args = args_for(corpus_dir, tmp_path, "--opt", "adan", "--lr", "0.01", "--max-step", "40",
                    "--warmup-step", "10")  # fmt: skip
    _, trainer, _ = setup(args, start_processes("cpu"), log=lambda m: None)
    seen: list[float] = []
    trainer.optimizer.register_step_pre_hook(
        lambda opt, a, k: seen.append(opt.param_groups[0]["lr"])
    )
    for _ in range(40):
        trainer.train_step()
    expected = [lr_at(s, 0.01, 10, 40) for s in range(1, 41)]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert seen[0] == pytest.approx(0.001) and seen[9] == pytest.approx(0.01)
    assert seen[-1] < 1e-4  # cosine to 0 at the last step


def test_schedule_matches_the_original_and_its_compat_mode():
    # Default: the warm-up starts at lr / warmup; compat: the original's first step at full lr.
    assert lr_at(1, 1.0, 100, 1000) == pytest.approx(0.01)
    assert lr_at(1, 1.0, 100, 1000, compat=True) == 1.0
    assert lr_at(2, 1.0, 100, 1000, compat=True) == pytest.approx(0.01)
    assert lr_at(100, 1.0, 100, 1000) == pytest.approx(1.0)
    # After the warm-up both follow the cosine at the absolute step (not restarted).
    for s in (101, 500, 1000):
        cos = 0.5 * (1 + math.cos(math.pi * (s - 1) / 1000))
        assert lr_at(s, 1.0, 100, 1000) == pytest.approx(cos)
        assert lr_at(s, 1.0, 100, 1000, compat=True) == pytest.approx(cos)
    # Without warm-up (the Adam run): the cosine from the first step.
    assert lr_at(1, 2.5e-4, 0, 200_000) == pytest.approx(2.5e-4)


def test_resume_after_stop_matches_an_uninterrupted_run(corpus_dir, tmp_path):
    for opt in ("adam", "adan"):
        common = ("--opt", opt, "--max-step", "60", "--eval-interval", "20")
        straight = tmp_path / f"{opt}_straight"
        train(args_for(corpus_dir, straight, *common), log=print)
        split = tmp_path / f"{opt}_split"
        first = train(args_for(corpus_dir, split, *common, "--stop-after-steps", "20"), log=print)
        assert first.status == "stopped" and rundir.latest_checkpoint(split).step == 20
        again = train(args_for(corpus_dir, split, *common), log=print)
        assert again.status == "finished"
        a, b = (rundir.read_eval(d / rundir.EVAL) for d in (straight, split))
        assert numbers(a) == numbers(b)  # exactly: memories, dropout RNG and data position
        wa, wb = final_weights(straight), final_weights(split)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_after_a_kill_matches_an_uninterrupted_run(corpus_dir, tmp_path):
    cmd = [sys.executable, "-m", "adan_txl.train", "--data", str(corpus_dir), *TINY,
           "--opt", "adan", "--max-step", "400", "--eval-interval", "40"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight = tmp_path / "straight"
    subprocess.run([*cmd, "--out", str(straight)], check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    stopped_at = kill_after_first_checkpoint([*cmd, "--out", str(killed)], killed, env)
    out = subprocess.run([*cmd, "--out", str(killed)], check=True, env=env, capture_output=True,
                         text=True)  # fmt: skip
    assert f"resuming after step {stopped_at}" in out.stdout
    a, b = (rundir.read_eval(d / rundir.EVAL) for d in (straight, killed))
    assert len(a) == 10 and numbers(a) == numbers(b)
    wa, wb = final_weights(straight), final_weights(killed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_accumulation_in_one_process_matches_the_whole_batch(corpus_dir, tmp_path):
    common = ("--opt", "adan", "--max-step", "12", "--eval-interval", "6", "--dropout", "0")
    whole, accum = tmp_path / "whole", tmp_path / "accum"
    train(args_for(corpus_dir, whole, *common), log=print)
    # 4 streams in 3 micro-batches of 1, 1 and 2: each weighted by its size.
    train(args_for(corpus_dir, accum, *common, "--accum-steps", "3"), log=print)
    wa, wb = final_weights(whole), final_weights(accum)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5
    # Not trivially equal: the weights moved.
    args = args_for(corpus_dir, tmp_path / "x", *common)
    _, trainer, _ = setup(args, start_processes("cpu"), log=lambda m: None)
    init = trainer.model.state_dict()
    assert max((init[k] - wa[k]).abs().max().item() for k in wa) > 1e-3


def test_two_processes_with_accumulation_match_one_process(corpus_dir, tmp_path):
    """torchrun with 2 gloo processes x 2 micro-batches (1 stream each) vs 1 process x 4."""
    common = [*TINY, "--data", str(corpus_dir), "--opt", "adan", "--max-step", "12",
              "--eval-interval", "6", "--dropout", "0"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    one = tmp_path / "one"
    subprocess.run([sys.executable, "-m", "adan_txl.train", *common, "--out", str(one)],
                   check=True, env=env, capture_output=True)  # fmt: skip
    two = tmp_path / "two"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    out = subprocess.run([*launcher, "-m", "adan_txl.train", *common, "--out", str(two),
                          "--accum-steps", "2"], env=env, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 process(es) x 2 micro-batch(es) of 1 streams" in out.stdout
    wa, wb = final_weights(one), final_weights(two)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5
    a, b = (rundir.read_eval(d / rundir.EVAL) for d in (one, two))
    assert [r["valid_ppl"] for r in a] == pytest.approx([r["valid_ppl"] for r in b], rel=1e-5)
    assert [r["train_loss"] for r in a] == pytest.approx([r["train_loss"] for r in b], rel=1e-5)


def test_bf16_autocast_trains(corpus_dir, tmp_path):
    args = args_for(corpus_dir, tmp_path, "--opt", "adan", "--lr", "0.02", "--max-step", "60",
                    "--eval-interval", "30", "--precision", "bf16")  # fmt: skip
    train(args, log=print)
    rows = rundir.read_eval(tmp_path / rundir.EVAL)
    assert rows[-1]["valid_ppl"] < rows[0]["valid_ppl"] and math.isfinite(rows[-1]["valid_ppl"])
    assert json.loads((tmp_path / rundir.CONFIG).read_text())["settings"]["precision"] == "bf16"


def test_changed_settings_do_not_mix_into_a_run(corpus_dir, tmp_path, capsys):
    common = ("--max-step", "20", "--eval-interval", "10")
    train(args_for(corpus_dir, tmp_path, *common, "--stop-after-steps", "10"), log=print)
    with pytest.raises(RunConflictError):
        train(args_for(corpus_dir, tmp_path, *common, "--lr", "0.123"), log=print)


def test_finished_run_is_skipped(corpus_dir, tmp_path):
    common = ("--max-step", "10", "--eval-interval", "10")
    assert train(args_for(corpus_dir, tmp_path, *common), log=print).status == "finished"
    assert train(args_for(corpus_dir, tmp_path, *common), log=print).status == "skipped"


def test_resume_with_another_process_layout_is_refused(corpus_dir, tmp_path):
    common = ("--max-step", "20", "--eval-interval", "10")
    train(args_for(corpus_dir, tmp_path, *common, "--stop-after-steps", "10"), log=print)
    with pytest.raises(SettingsError, match="accum-steps"):
        train(args_for(corpus_dir, tmp_path, *common, "--accum-steps", "2"), log=print)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tgt-len", "0"], "tgt_len must be at least 1"),
        (["--mem-len", "0"], "mem_len must be at least 1"),
        (["--accum-steps", "5"], "does not split into"),  # 5 micro-batches of 4 streams
        (["--preset", "nope"], "unknown preset"),
        (["--warmup-step", "500", "--max-step", "100"], "warmup_step"),
    ],
)
def test_bad_settings_exit_with_a_message(corpus_dir, tmp_path, capsys, flags, message):
    argv = ["--data", str(corpus_dir), "--out", str(tmp_path / "r"), *TINY, *flags]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_data_folder_exits_with_a_message(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "--data" in err


def test_dry_run_builds_the_paper_model_without_data(capsys):
    assert main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "parameters: 151,107,538 (41,066,400 non-embedding)" in out
    assert "vocabulary 267,735 (no data read)" in out and "[20000, 40000, 200000]" in out


def test_the_paper_runs_set_the_optimizer_and_schedule(capsys):
    assert main(["--dry-run", "--run", "adan-50k", "--vocab-size", "1000", "--n-layer", "1"]) == 0
    out = capsys.readouterr().out
    assert "optimizer: adan" in out and "'lr': 0.0015" in out and "warm-up 5000 steps" in out
    assert "'max_step': 50000" in out and "'betas': [0.9, 0.9, 0.999]" in out
    assert main(["--dry-run", "--run", "adam-200k", "--vocab-size", "1000", "--n-layer", "1"]) == 0
    out = capsys.readouterr().out
    assert "optimizer: adam" in out and "'lr': 0.00025" in out and "warm-up 0 steps" in out
    assert "'weight_decay': 0.0" in out


def test_scaled_presets_are_valid():
    for name in ("wt103-base", "ptb-scaled", "quick"):
        s = scale_settings(name)
        assert s.max_step % s.eval_interval == 0


CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (the training loop on cuda)"
)


def on_cuda(argv):
    i = argv.index("--device")
    return [*argv[:i], "--device", "cuda", *argv[i + 2 :]]


@CUDA
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_training_lowers_the_loss_and_resumes(corpus_dir, tmp_path, precision):
    common = ["--data", str(corpus_dir), *on_cuda(TINY), "--opt", "adan", "--lr", "0.04",
              "--max-step", "200", "--eval-interval", "50", "--precision", precision]  # fmt: skip
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(build_parser().parse_args([*common, "--out", str(straight)]), log=print)
    rows = rundir.read_eval(straight / rundir.EVAL)
    assert rows[-1]["valid_ppl"] < 0.7 * rows[0]["valid_ppl"]
    first = train(build_parser().parse_args([*common, "--out", str(split),
                                             "--stop-after-steps", "50"]), log=print)  # fmt: skip
    assert first.status == "stopped"
    train(build_parser().parse_args([*common, "--out", str(split)]), log=print)
    b = rundir.read_eval(split / rundir.EVAL)
    # CUDA kernels (embedding backward, index_copy) are not bitwise deterministic: close, not equal.
    assert [r["valid_ppl"] for r in b] == pytest.approx([r["valid_ppl"] for r in rows], rel=2e-2)
