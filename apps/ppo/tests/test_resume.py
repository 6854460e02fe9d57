"""Interrupted runs resume from their checkpoint; finished runs are never redone or changed."""

from __future__ import annotations

import csv
import json
import pickle
import re

import pytest
import torch
from adan_ppo import runstate
from adan_ppo.train import _Run, settings_from_args, train
from stable_baselines3.common.save_util import load_from_zip_file


def _steps(path):
    with open(path, newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def _assert_same_state(got, want):
    """Equal optimizer state_dicts: same keys, tensors equal element for element."""
    assert got["param_groups"] == want["param_groups"]
    assert sorted(got["state"]) == sorted(want["state"]) and got["state"]
    for index, state in want["state"].items():
        assert sorted(got["state"][index]) == sorted(state)
        for key, value in state.items():
            if torch.is_tensor(value):
                assert torch.equal(got["state"][index][key], value), (index, key)
            else:
                assert got["state"][index][key] == value, (index, key)


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("opt", ["adan"])
def test_interrupted_run_resumes_without_redoing_work(tmp_path, tiny_args, opt, system_tmp):
    """Stop at 1024 of 2048 steps, then resume: same end state, no repeated work."""
    out = tmp_path / "run"
    lines: list[str] = []
    first = train(tiny_args(out, opt, 2048, 512, "--stop-after-steps", "1024"), log=lines.append)
    # Step 0 has no training throughput yet: the line says so instead of printing nan.
    assert "train n/a steps/s" in lines[0] and not any(re.search(r"\bnan\b", x) for x in lines)
    assert first.status == "stopped" and first.steps == 1024
    ckpt = runstate.latest_checkpoint(out)
    assert ckpt is not None and ckpt.step == 1024
    assert _steps(out / "eval.csv") == [0, 512, 1024]
    rows_before = _read(out / "eval.csv")

    # The resumed model carries the checkpointed optimizer state, step and RNG, not fresh ones.
    _, saved, _ = load_from_zip_file(ckpt.path / "model.zip", device="cpu")
    saved_state = saved["policy.optimizer"]
    args = tiny_args(out, opt, 2048, 512)
    run = _Run(args, settings_from_args(args)[0], out, log=lambda m: None)
    run.build()
    try:
        with open(ckpt.path / "rng.pkl", "rb") as f:
            assert torch.equal(torch.get_rng_state(), pickle.load(f)["torch"])
        assert run.model.num_timesteps == ckpt.step == 1024
        restored = run.model.policy.optimizer.state_dict()
        _assert_same_state(restored, saved_state)
        # 4 rollouts of 256 steps x 10 epochs x 4 minibatches of 64: 160 optimizer steps so far.
        steps = {float(s["step"]) for s in restored["state"].values()}
        assert steps == {160.0} and len(restored["state"]) == len(
            list(run.model.policy.parameters())
        )
    finally:
        run.close()

    # Resuming on other software continues, with a warning naming the difference.
    record = json.loads((out / "provenance.json").read_text())
    record["sessions"][-1]["packages"]["stable-baselines3"] = "0.0.1"
    (out / "provenance.json").write_text(json.dumps(record))

    # A crash after an evaluation but before its checkpoint leaves an extra row: dropped.
    with open(out / "eval.csv", "a", newline="") as f:
        csv.writer(f).writerow([1536, 999999.0, 0, 1, 2, 1.0, 1.0])

    second = train(args, log=lines.append)
    assert not any(re.search(r"\bnan\b", x) for x in lines)
    warning = next(x for x in lines if "warning: resuming at step 1024 on different software" in x)
    assert "stable-baselines3 0.0.1 -> " in warning
    sessions = json.loads((out / "provenance.json").read_text())["sessions"]
    assert [x["start_step"] for x in sessions] == [0, 1024]
    assert sessions[-1]["optimizer_implementation"].startswith("adan_core.adan.Adan: ")
    assert second.status == "finished" and second.steps == 2048
    assert second.steps_this_session == 1024  # only the missing half was trained
    assert second.evals_this_session == 2  # steps 1536 and 2048; 0..1024 not re-evaluated
    rows = _read(out / "eval.csv")
    assert [int(r["step"]) for r in rows] == [0, 512, 1024, 1536, 2048]
    assert rows[:3] == rows_before
    assert all(float(r["mean_return"]) != 999999.0 for r in rows)
    assert not list(system_tmp.glob("SB3-*")), "the resumed model wrote SB3 log folders"

    # Finished: a third call changes nothing.
    mtime = (out / "eval.csv").stat().st_mtime_ns
    third = train(args, log=print)
    assert third.status == "skipped" and third.steps_this_session == 0
    assert (out / "eval.csv").stat().st_mtime_ns == mtime


def test_different_settings_in_same_directory_are_refused(tmp_path, tiny_args):
    out = tmp_path / "run"
    train(tiny_args(out, "adam", 512, 512), log=lambda m: None)
    before = (out / "eval.csv").read_bytes()
    with pytest.raises(runstate.RunConflictError, match="different settings"):
        train(tiny_args(out, "adam", 1024, 512), log=lambda m: None)
    with pytest.raises(runstate.RunConflictError, match="optimizer"):
        train(tiny_args(out, "adan", 512, 512), log=lambda m: None)
    assert (out / "eval.csv").read_bytes() == before


def test_killed_process_resumes_from_its_last_checkpoint(tmp_path):
    """SIGKILL a real training process after its first checkpoints, then finish the run."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import TINY

    out = tmp_path / "run"
    argv = [sys.executable, "-m", "adan_ppo.train", *TINY, "--out", str(out), "--opt", "adan",
            "--steps", "16384", "--eval-every", "1024", "--seed", "5"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pointer = out / "checkpoint.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if pointer.exists() and json.loads(pointer.read_text())["step"] >= 2048:
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.fail(f"training ended before it could be killed: {proc.stderr.read()[-2000:]}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(pointer.read_text())["step"]
    assert 2048 <= killed_at < 16384 and not (out / "done.json").exists()
    # Run folders from before provenance records existed resume too (with a note).
    (out / "provenance.json").unlink()

    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming from checkpoint at step {killed_at}" in done.stdout
    assert "a run with no provenance record" in done.stdout
    steps = _steps(out / "eval.csv")
    assert steps == list(range(0, 16384 + 1, 1024))
    assert json.loads((out / "done.json").read_text())["steps"] == 16384
