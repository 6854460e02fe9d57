"""A stand-in for an app's training run, used by the grid tests as a command or a function.

It "trains" ``steps`` steps, evaluating every step (metric ``score = 10 * step``), and keeps a
checkpoint (``state.json`` holding the step) after each evaluation, through adan_repro.rundir.
Every start appends a line to ``starts.txt`` so that tests can count how often a run ran.

    python fake_run.py RUN_DIR --steps 5 [--fail] [--die-at 2]

``--die-at K`` kills the process with SIGKILL right after the checkpoint at step K, once: the
marker ``died`` keeps the next start from dying again.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from adan_repro import rundir

HEADER = ("step", "score")


def run(run_dir: Path, steps: int, fail: bool = False, die_at: int | None = None, log=print) -> str:
    run_dir = rundir.prepare_dir(run_dir)
    task, opt, seed = run_dir.parts[-3], run_dir.parts[-2], int(run_dir.name[4:])
    config = {"task": task, "optimizer": opt, "seed": seed, "steps": steps}
    rundir.check_or_write_config(run_dir, config)
    with open(run_dir / "starts.txt", "a") as f:
        f.write("start\n")
    if rundir.is_done(run_dir):
        return "skipped"
    if fail:
        raise RuntimeError("this run is broken on purpose")
    ckpt = rundir.latest_checkpoint(run_dir)
    step = json.loads((ckpt.path / "state.json").read_text())["step"] if ckpt else -1
    rows = rundir.read_eval(run_dir / rundir.EVAL)
    rows = [r for r in rows if r["step"] <= step]  # rows after the checkpoint are dropped
    if ckpt:
        log(f"resuming from checkpoint at step {step}")
    while step < steps:
        step += 1
        rows.append({"step": step, "score": 10.0 * step})
        rundir.write_eval(run_dir / rundir.EVAL, HEADER, rows)
        rundir.commit_checkpoint(
            run_dir, step, lambda d, s=step: (d / "state.json").write_text(json.dumps({"step": s}))
        )
        log(f"step {step}/{steps}")
        if step == die_at and not (run_dir / "died").exists():
            (run_dir / "died").write_text("")
            os.kill(os.getpid(), signal.SIGKILL)
    final = json.dumps({"step": step})
    rundir.commit_final(run_dir, lambda d: (d / "state.json").write_text(final))
    rundir.write_done(run_dir, {"steps": step})
    rundir.remove_checkpoints(run_dir)
    return "finished"


def target(spec, log) -> str:
    """The grid's function form: ``spec.args`` are this script's CLI arguments."""
    args = build_parser().parse_args([str(spec.run_dir), *spec.args])
    return run(args.run_dir, args.steps, args.fail, args.die_at, log)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--fail", action="store_true")
    p.add_argument("--die-at", type=int)
    return p


if __name__ == "__main__":
    a = build_parser().parse_args()
    try:
        run(a.run_dir, a.steps, a.fail, a.die_at)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
