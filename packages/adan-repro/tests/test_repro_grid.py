"""The grid runner on small fake runs: resume after a kill, skip, failure, shards, progress."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import fake_run
import pytest
from adan_repro import grid, rundir

SCRIPT = str(Path(fake_run.__file__))


def _commands(out, tasks=("A", "B"), opts=("adam", "adan"), seeds=(1, 2), extra=None):
    """Fake runs as commands; ``extra[(task, opt, seed)]`` adds flags to one run."""
    extra = extra or {}

    def command(task, opt, seed, run_dir):
        return [sys.executable, SCRIPT, str(run_dir), "--steps", "3",
                *extra.get((task, opt, seed), [])]  # fmt: skip

    return grid.plan(out, tasks, opts, seeds, command=command)


def _starts(run: grid.RunSpec) -> int:
    path = run.run_dir / "starts.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _steps(run: grid.RunSpec) -> list[int]:
    return [r["step"] for r in rundir.read_eval(run.run_dir / rundir.EVAL)]


def test_killed_run_resumes_failed_run_is_reported_and_finished_runs_are_skipped(tmp_path):
    extra = {("A", "adan", 1): ["--die-at", "2"], ("B", "adam", 2): ["--fail"]}
    runs = _commands(tmp_path, extra=extra)
    lines: list[str] = []
    report = grid.run_grid(runs, jobs=2, log_interval=30, log=lines.append)
    by_tag = {r.tag: r for r in runs}
    killed, broken = by_tag["A/adan/seed1"], by_tag["B/adam/seed2"]

    assert report.counts["failed"] == 2  # the SIGKILLed one and the broken one
    assert {t for t, _, _ in report.failed} == {killed.tag, broken.tag}
    for tag, _, log in report.failed:
        assert log == by_tag[tag].run_dir / "run.log" and log.exists()
        assert any(f"FAILED {tag}" in line and str(log) in line for line in lines)
    assert "broken on purpose" in broken.log_path.read_text()
    assert report.counts["finished"] == 6 and all(
        rundir.is_done(r.run_dir) for r in runs if r not in (killed, broken)
    )
    assert rundir.latest_checkpoint(killed.run_dir).step == 2 and _steps(killed) == [0, 1, 2]
    final = "8/8 runs done (6 trained, 0 already finished, 2 failed), 0 left"
    assert any(final in x for x in lines)
    partial = r"\[grid\] [1-7]/8 runs done .* [1-7] left, \d+s elapsed"
    assert any(re.search(partial, x) for x in lines)
    assert not any(re.search(r"\bnan\b", line) for line in lines)

    # Second call, the broken run fixed: the six finished runs are not started again, the
    # killed run resumes from its checkpoint.
    broken_fixed = [
        grid.RunSpec(r.task, r.optimizer, r.seed, r.run_dir, r.command[:-1]) if r is broken else r
        for r in runs
    ]
    lines.clear()
    report = grid.run_grid(broken_fixed, jobs=2, log_interval=30, log=lines.append)
    assert report.counts == {"finished": 2, "stopped": 0, "skipped": 6, "failed": 0}
    assert "resuming from checkpoint at step 2" in killed.log_path.read_text()
    assert _steps(killed) == [0, 1, 2, 3] and rundir.is_done(killed.run_dir)
    assert all(_starts(r) == 1 for r in runs if r not in (killed, broken))
    assert _starts(killed) == 2 and _starts(broken) == 2 and rundir.is_done(broken.run_dir)
    assert any("8/8 runs done (2 trained, 6 already finished, 0 failed)" in x for x in lines)


def test_function_target_runs_in_worker_processes(tmp_path):
    runs = grid.plan(tmp_path, ["A"], ["adam", "adan"], [1, 2], args=lambda *a: ["--steps", "2"])
    report = grid.run_grid(runs, target=fake_run.target, jobs=2, log_interval=30, log=print)
    assert report.counts["finished"] == 4 and not report.failed
    assert all(_steps(r) == [0, 1, 2] for r in runs)
    assert "step 2/2" in runs[0].log_path.read_text()


@pytest.mark.parametrize("n", [1, 3, 5, 12])
def test_shards_run_every_run_exactly_once(tmp_path, n):
    runs = _commands(tmp_path, tasks=("A", "B"), opts=("adam", "adan", "sgd"), seeds=(1, 2))
    slices = [grid.shard(runs, k, n) for k in range(1, n + 1)]
    assert sorted(r.tag for s in slices for r in s) == sorted(r.tag for r in runs)
    if n == 3:  # running them (once per shard, as separate machines would) starts each once
        for s in slices:
            grid.run_grid(s, jobs=2, log_interval=30, log=lambda m: None)
        assert [_starts(r) for r in runs] == [1] * len(runs)
        assert grid.all_done(runs)


def test_shard_and_seed_parsing():
    assert grid.parse_shard(None) == (1, 1) and grid.parse_shard("3/8") == (3, 8)
    for bad in ("0/3", "4/3", "x", "1/2/3"):
        with pytest.raises(ValueError, match="--shard"):
            grid.parse_shard(bad)
    assert grid.parse_seeds(["1-3", "7"]) == [1, 2, 3, 7]
    with pytest.raises(ValueError, match="bad seed list item '3-1'"):
        grid.parse_seeds(["3-1"])


def test_bad_jobs_and_missing_command():
    run = grid.RunSpec("A", "adam", 1, Path("/nonexistent"))
    with pytest.raises(ValueError, match="--jobs"):
        grid.run_grid([run], jobs=0)
    with pytest.raises(ValueError, match="neither a command nor a target"):
        grid.run_grid([run])


def test_a_shard_allows_the_summary_only_when_the_whole_grid_is_done(tmp_path):
    runs = _commands(tmp_path, tasks=("A",), opts=("adam", "adan"), seeds=(1,))
    lines: list[str] = []
    report, complete = grid.run_my_shard(runs, None, "1/2", 1, 30, tmp_path, lines.append)
    assert report.counts["finished"] == 1 and not complete
    assert any("no summary now" in line and "--summarize-only" in line for line in lines)
    report, complete = grid.run_my_shard(runs, None, "2/2", 1, 30, tmp_path, lines.append)
    assert report.counts["finished"] == 1 and complete  # the last shard completes the grid
    _, complete = grid.run_my_shard(runs, None, None, 1, 30, tmp_path, lines.append)
    assert complete and _starts(runs[0]) == 1  # the whole grid: finished runs are skipped


def _grid_args(out, shard=None, summarize_only=False):
    import argparse

    return argparse.Namespace(out=out, shard=shard, jobs=1, log_interval=30,
                              summarize_only=summarize_only)  # fmt: skip


def test_run_then_summarize_summarizes_once_the_grid_is_complete(tmp_path):
    runs = _commands(tmp_path, tasks=("A",), opts=("adam", "adan"), seeds=(1,))
    calls, lines = [], []

    def summarize():
        calls.append(1)
        (tmp_path / "summary.md").write_text("# the summary\n")

    status = grid.run_then_summarize(runs, None, _grid_args(tmp_path, "1/2"), summarize,
                                     lines.append)  # fmt: skip
    assert status == 0 and calls == []  # half the grid: no summary yet
    status = grid.run_then_summarize(runs, None, _grid_args(tmp_path, "2/2"), summarize,
                                     lines.append)  # fmt: skip
    assert status == 0 and calls == [1] and "# the summary\n" in lines


def test_run_then_summarize_reports_failures_and_summary_errors(tmp_path, capsys):
    runs = _commands(tmp_path, tasks=("A",), opts=("adam",), seeds=(1,),
                     extra={("A", "adam", 1): ["--fail"]})  # fmt: skip
    lines = []

    def summarize():  # the runs that finished are summarized; the failure still counts
        (tmp_path / "summary.md").write_text("partial\n")

    assert grid.run_then_summarize(runs, None, _grid_args(tmp_path), summarize, lines.append) == 1
    assert "partial\n" in lines and any("1 runs failed: A/adam/seed1" in x for x in lines)

    def broken():
        raise ValueError("nothing to summarize")

    args = _grid_args(tmp_path, summarize_only=True)
    assert grid.run_then_summarize(runs, None, args, broken, lines.append) == 1
    assert "nothing to summarize" in capsys.readouterr().err
