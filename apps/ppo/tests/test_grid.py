"""The orchestrator end to end on a tiny budget: runs, summary, plot, and skip on re-run."""

from __future__ import annotations

import csv

from adan_ppo import grid


def test_grid_runs_summarizes_and_skips_finished_runs(tmp_path, capsys):
    argv = ["--envs", "Hopper-v5", "--opts", "adam", "adan", "--seeds", "1", "--steps", "512",
            "--eval-every", "256", "--eval-episodes", "2", "--jobs", "2", "--out", str(tmp_path),
            "--train-args", "--n-envs 2 --n-steps 128", "--log-interval", "5"]  # fmt: skip
    assert grid.main(argv) == 0
    out = capsys.readouterr().out
    assert "2/2 runs done (2 trained" in out
    with open(tmp_path / "summary.csv", newline="") as f:
        rows = {r["optimizer"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"adam", "adan"} and rows["adan"]["final_step"] == "512"
    assert (tmp_path / "Hopper-v5.png").exists() and (tmp_path / "summary.md").exists()
    evals = tmp_path / "runs" / "Hopper-v5" / "adan" / "seed1" / "eval.csv"
    mtime = evals.stat().st_mtime_ns

    assert grid.main(argv) == 0
    assert "2/2 runs done (0 trained, 2 already finished" in capsys.readouterr().out
    assert evals.stat().st_mtime_ns == mtime


def test_shards_share_one_folder_and_the_last_one_summarizes(tmp_path, capsys):
    argv = ["--envs", "Hopper-v5", "--opts", "adam", "adan", "--seeds", "1", "--steps", "256",
            "--eval-every", "256", "--eval-episodes", "1", "--jobs", "1", "--out", str(tmp_path),
            "--train-args", "--n-envs 2 --n-steps 128", "--log-interval", "5"]  # fmt: skip
    assert grid.main([*argv, "--shard", "2/2"]) == 0
    out = capsys.readouterr().out
    assert "1 runs (shard 2/2 of 2 runs)" in out and "no summary now" in out
    assert not (tmp_path / "summary.md").exists()
    done = sorted(p.parent.parent.name for p in tmp_path.glob("runs/*/*/seed1/done.json"))
    assert done == ["adan"]  # round robin: the second run of the plan

    assert grid.main([*argv, "--shard", "1/2"]) == 0
    assert "1/1 runs done (1 trained" in capsys.readouterr().out
    with open(tmp_path / "summary.csv", newline="") as f:
        assert {r["optimizer"] for r in csv.DictReader(f)} == {"adam", "adan"}
    assert grid.main([*argv, "--shard", "3/2"]) == 2
    assert "bad --shard '3/2'" in capsys.readouterr().err
