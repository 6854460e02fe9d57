"""The grid end to end on the generated corpus: runs, resume/skip, shards, summary, errors."""

from __future__ import annotations

import pytest
from adan_lstm import grid
from adan_repro import rundir

SMALL = "--emsize 16 --nhid 24 --epochs 2 --log-interval 1000"


def grid_args(corpus_dir, out, *extra):
    return ["--data", str(corpus_dir), "--layers", "1", "--seeds", "1", "2", "--preset", "quick",
            "--threads", "1", "--out", str(out), "--train-args", SMALL, *extra]  # fmt: skip


def test_grid_runs_resumes_and_summarizes(corpus_dir, tmp_path, capsys):
    out = tmp_path / "g"
    assert grid.main(grid_args(corpus_dir, out, "--jobs", "2")) == 0
    for opt in ("adam", "adan"):
        for seed in (1, 2):
            assert rundir.is_done(out / "runs" / "L1" / opt / f"seed{seed}")
    md = (out / "summary.md").read_text()
    assert "| L1 | adan − adam | paper |" in md and "| L1 | adan − adam | clean |" in md
    assert (out / "L1_test.png").exists() and (out / "curves.csv").exists()
    capsys.readouterr()
    assert grid.main(grid_args(corpus_dir, out)) == 0  # everything finished: only a summary
    assert "4 runs (4 already finished)" in capsys.readouterr().out


def test_shards_split_the_grid_and_summary_waits(corpus_dir, tmp_path, capsys):
    out = tmp_path / "g"
    assert grid.main(grid_args(corpus_dir, out, "--shard", "1/2")) == 0
    done = sorted(p.parent.relative_to(out).as_posix() for p in out.glob("runs/*/*/*/done.json"))
    assert done == ["runs/L1/adam/seed1", "runs/L1/adam/seed2"]  # seed-major, round robin
    assert not (out / "summary.md").exists()
    assert "no summary now" in capsys.readouterr().out
    assert grid.main(grid_args(corpus_dir, out, "--summarize-only")) == 0
    assert "adam" in (out / "summary.md").read_text()


def test_dry_run_lists_runs_and_parameters(corpus_dir, tmp_path, capsys):
    assert grid.main(grid_args(corpus_dir, tmp_path / "g", "--dry-run")) == 0
    out = capsys.readouterr().out
    assert out.count("python -m adan_lstm.train") == 4 and "parameters:" in out
    assert not (tmp_path / "g" / "runs").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--opts", "adam", "nosuchopt"], "nosuchopt"),
        (["--shard", "3/2"], "bad --shard"),
        (["--jobs", "0"], "--jobs must be at least 1"),
    ],
)
def test_bad_grid_input_fails_before_any_run(corpus_dir, tmp_path, capsys, extra, message):
    args = grid_args(corpus_dir, tmp_path / "g")
    args = [a for a in args if a != "quick" and a != "--preset"] + extra
    assert grid.main(args) == 2
    assert message in capsys.readouterr().err
    assert not list((tmp_path / "g").glob("runs/*/*/*/eval.csv"))


def test_missing_data_fails_before_any_run(tmp_path, capsys):
    assert grid.main(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "g")]) == 2
    assert "does not exist; pass --data DIR" in capsys.readouterr().err
