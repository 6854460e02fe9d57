"""Run folders: config check on resume, eval CSV, checkpoint pointer, provenance, bad paths."""

from __future__ import annotations

import json

import pytest
from adan_repro import progress, provenance, rundir
from adan_repro.atomic import Batch, text_writer, write_json_atomic


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_config_mismatch_names_the_keys_and_writes_nothing(tmp_path):
    config = {"task": "A", "optimizer": "adam", "lr": 1e-3, "seed": 1}
    rundir.check_or_write_config(tmp_path, config)
    rundir.check_or_write_config(tmp_path, dict(config))  # same settings: fine
    before = _snapshot(tmp_path)
    changed = {**config, "lr": 2e-3, "optimizer": "adan", "extra": True}
    with pytest.raises(rundir.RunConflictError) as exc:
        rundir.check_or_write_config(tmp_path, changed)
    msg = str(exc.value)
    assert "extra: None -> True" in msg and "lr: 0.001 -> 0.002" in msg
    assert "optimizer: 'adam' -> 'adan'" in msg and "seed" not in msg
    assert _snapshot(tmp_path) == before


def test_eval_csv_round_trip_and_missing_metric(tmp_path):
    path = tmp_path / "eval.csv"
    rows = [{"step": 0, "loss": 2.5, "ppl": 12.2}, {"step": 10, "loss": 1.5, "ppl": 4.5}]
    rundir.write_eval(path, ("step", "loss", "ppl"), rows)
    assert rundir.read_eval(path) == rows
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"lacks \['ppl'\]"):
        rundir.write_eval(path, ("step", "loss", "ppl"), [{"step": 20, "loss": 1.0}])
    with pytest.raises(ValueError, match="starts with a 'step' column"):
        rundir.write_eval(path, ("loss",), [])
    assert path.read_bytes() == before


def test_checkpoint_pointer_moves_and_old_checkpoint_goes(tmp_path):
    first = rundir.commit_checkpoint(tmp_path, 5, lambda d: (d / "w").write_text("5"))
    second = rundir.commit_checkpoint(tmp_path, 9, lambda d: (d / "w").write_text("9"))
    assert rundir.latest_checkpoint(tmp_path) == second and not first.path.exists()
    assert (second.path / "w").read_text() == "9"

    def broken(d):
        (d / "w").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        rundir.commit_checkpoint(tmp_path, 12, broken)
    assert rundir.latest_checkpoint(tmp_path) == second  # the pointer still names step 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", second.path.name]
    rundir.commit_final(tmp_path, lambda d: (d / "w").write_text("final"))
    rundir.write_done(tmp_path, {"steps": 9})
    rundir.remove_checkpoints(tmp_path)
    assert rundir.is_done(tmp_path) and sorted(p.name for p in tmp_path.iterdir()) == [
        "done.json",
        "final",
    ]


def test_unusable_output_folders_get_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        rundir.prepare_dir(tmp_path / "file")
    with pytest.raises(ValueError, match="cannot create output directory"):
        rundir.prepare_dir(tmp_path / "file" / "sub")
    assert (tmp_path / "file").read_text() == "x"


def test_batch_writes_all_or_nothing(tmp_path):
    (tmp_path / "a.txt").write_text("old a")
    with pytest.raises(RuntimeError):
        with Batch() as batch:
            batch.add(tmp_path / "a.txt", text_writer("new a"))
            batch.add(tmp_path / "b.txt", text_writer("new b"))
            raise RuntimeError("plotting failed")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "old a"
    with Batch() as batch:
        batch.add(tmp_path / "a.txt", text_writer("new a"))
        batch.add(tmp_path / "b.txt", text_writer("new b"))
    assert (tmp_path / "a.txt").read_text() == "new a" and (tmp_path / "b.txt").exists()


def test_provenance_records_sessions_and_warns_on_different_software(tmp_path):
    here = provenance.collect(tmp_path, ["numpy"], "adan: cpu_fused", extra={"host": "x"})
    assert here["packages"]["numpy"] and "torch" in here["packages"]
    assert here["git_commit"] is None and here["python"].count(".") == 2
    assert provenance.record(tmp_path, here, 0) is None  # first session
    assert provenance.record(tmp_path, here, 10) is None  # same software
    other = {**here, "optimizer_implementation": "adan: foreach",
             "packages": {**here["packages"], "numpy": "0.0.1"}}  # fmt: skip
    warning = provenance.record(tmp_path, other, 20)
    assert "resuming at step 20" in warning and "adan: cpu_fused -> adan: foreach" in warning
    assert f"numpy {here['packages']['numpy']} -> 0.0.1" in warning
    sessions = json.loads((tmp_path / "provenance.json").read_text())["sessions"]
    assert [s["start_step"] for s in sessions] == [0, 10, 20]


def test_provenance_of_a_run_from_before_records(tmp_path):
    write_json_atomic(tmp_path / "config.json", {"task": "A"})
    warning = provenance.record(tmp_path, provenance.collect(None), 30)
    assert "no provenance record" in warning and provenance.read(tmp_path)[0]["start_step"] == 30


def test_git_state_in_a_checkout(tmp_path):
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("1")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    commit, dirty = provenance.git_state(tmp_path)
    assert len(commit) == 40 and dirty is False
    (tmp_path / "f").write_text("2")
    assert provenance.git_state(tmp_path) == (commit, True)


def test_progress_pieces_never_say_nan():
    assert progress.rate(0, 0) == "n/a steps/s" and progress.rate(100, 0.0) == "n/a steps/s"
    assert progress.rate(3000, 2.0) == "1500 steps/s"
    assert progress.elapsed(42) == "42s" and progress.elapsed(725) == "12m05s"
    assert progress.elapsed(11_220) == "3h07m"
