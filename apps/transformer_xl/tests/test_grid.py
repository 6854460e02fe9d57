"""The grid: the paper's runs and the scaled comparison as run lists, torchrun commands, and a
tiny grid end to end (runs, resume-skip, summary)."""

from __future__ import annotations

import shlex

import pytest
from adan_repro import rundir
from adan_txl import grid
from conftest import TINY


def plan_of(*argv):
    args = grid.build_parser().parse_args(list(argv))
    args.opts_given = "--opts" in argv
    return grid.plan(args)


def test_the_paper_grid_is_its_four_runs(tmp_path):
    runs = plan_of("--out", str(tmp_path))
    assert [(r.task, r.optimizer, r.seed) for r in runs] == [
        ("wt103-base-200k", "adam", 1111),
        ("wt103-base-50k", "adan", 1111),
        ("wt103-base-100k", "adan", 1111),
        ("wt103-base-200k", "adan", 1111),
    ]
    assert [r.args[:2] for r in runs] == [("--run", n) for n in grid.PAPER_RUNS]
    assert all(r.run_dir == tmp_path / "runs" / r.task / r.optimizer / "seed1111" for r in runs)


def test_scaled_and_quick_grids_cross_optimizers_and_seeds(tmp_path):
    runs = plan_of("--out", str(tmp_path), "--preset", "ptb-scaled", "--seeds", "1-3")
    assert {(r.task, r.optimizer, r.seed) for r in runs} == {
        ("ptb-scaled", o, s) for o in ("adam", "adan") for s in (1, 2, 3)
    }
    quick = plan_of("--out", str(tmp_path), "--quick")
    assert {(r.task, r.seed) for r in quick} == {("quick", 1), ("quick", 2)}
    assert all("--threads" in r.args for r in quick)


def test_runs_of_the_paper_only_with_its_preset(tmp_path):
    with pytest.raises(ValueError, match="--runs"):
        plan_of("--out", str(tmp_path), "--preset", "quick", "--runs", "adan-50k")


def test_several_gpus_per_run_start_torchrun(tmp_path):
    runs = plan_of("--out", str(tmp_path), "--runs", "adan-100k", "--nproc-per-node", "4")
    (run,) = runs
    assert run.command[:4] == ("torchrun", "--standalone", "--nproc_per_node=4", "-m")
    assert run.command[4] == "adan_txl.train" and "--threads" not in run.command
    assert list(run.command[5:]) == list(run.args)


def test_dry_run_prints_the_runs_and_the_model(tmp_path, capsys):
    assert grid.main(["--out", str(tmp_path), "--runs", "adam-200k", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "wt103-base-200k/adam/seed1111: python -m adan_txl.train --run adam-200k" in out
    assert "parameters: 151,107,538" in out


def test_bad_shard_and_optimizer_fail_before_any_run(tmp_path, capsys):
    assert grid.main(["--out", str(tmp_path), "--shard", "3/2"]) == 2
    assert "bad --shard" in capsys.readouterr().err
    assert grid.main(["--out", str(tmp_path), "--opts", "nope"]) == 2
    assert "unknown optimizer 'nope'" in capsys.readouterr().err


def test_a_tiny_grid_runs_resumes_and_summarizes(corpus_dir, tmp_path, capsys):
    train_args = shlex.join([a for a in TINY if a not in ("--preset", "quick")]
                            + ["--max-step", "20", "--eval-interval", "10"])  # fmt: skip
    argv = ["--quick", "--data", str(corpus_dir), "--out", str(tmp_path / "g"), "--seeds", "1",
            "--jobs", "1", "--train-args", train_args]  # fmt: skip
    assert grid.main(argv) == 0
    out = tmp_path / "g"
    for opt in ("adam", "adan"):
        assert rundir.is_done(out / "runs" / "quick" / opt / "seed1")
    for name in ("summary.md", "summary.csv", "curves.csv", "quick_valid.png"):
        assert (out / name).is_file()
    assert "Test perplexity under both evaluation protocols" in (out / "summary.md").read_text()
    capsys.readouterr()
    assert grid.main(argv) == 0  # again: every run is finished and skipped
    assert "2 already finished" in capsys.readouterr().out
