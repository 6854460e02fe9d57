"""Layout of one run directory, its checkpoints and its completion marker.

A run directory holds::

    config.json         what the run computes (checked on resume: a mismatch is an error)
    eval.csv            one row per evaluation, rewritten atomically after each one
    checkpoint.json     pointer to the newest complete checkpoint, replaced atomically
    ckpt-<step>/        model.zip (policy + optimizer state), vecnormalize.pkl, rng.pkl, eval.csv
    final/              model.zip + vecnormalize.pkl of the finished run (for evaluate/render)
    done.json           written last: the run is finished and is never touched again

A checkpoint directory is complete before the pointer names it, so a crash at any moment leaves
either the previous checkpoint or the new one.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .atomic import write_csv_atomic, write_json_atomic

EVAL_HEADER = (
    "step",
    "mean_return",
    "std_return",
    "mean_length",
    "episodes",
    "train_fps",
    "wall_s",
)


class RunConflictError(RuntimeError):
    """The directory holds a run with different settings; it is never overwritten."""


@dataclass
class Checkpoint:
    step: int
    path: Path


def prepare_dir(path: Path) -> Path:
    """Create ``path`` (and parents) or raise ValueError saying why it cannot be used."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output path {str(path)!r} exists and is not a directory; choose another")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"cannot create output directory {str(path)!r}: {exc.strerror}; choose a writable path"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"output directory {str(path)!r} is not writable; choose another")
    return path


def check_or_write_config(run_dir: Path, config: dict) -> None:
    """Record ``config`` for a new run, or check it equals the one already recorded."""
    path = run_dir / "config.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != config:
            diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            details = ", ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in diff)
            raise RunConflictError(
                f"{run_dir} already holds a run with different settings ({details}). Nothing "
                "was changed; use another output directory, or delete that run to start over."
            )
    else:
        write_json_atomic(path, config)


def is_done(run_dir: Path) -> bool:
    return (Path(run_dir) / "done.json").exists()


def read_eval_rows(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        return [
            {k: (int(v) if k in ("step", "episodes") else float(v)) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def write_eval_rows(path: Path, rows: list[dict]) -> None:
    write_csv_atomic(path, EVAL_HEADER, ([r[k] for k in EVAL_HEADER] for r in rows))


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    pointer = Path(run_dir) / "checkpoint.json"
    if not pointer.exists():
        return None
    info = json.loads(pointer.read_text())
    return Checkpoint(step=int(info["step"]), path=Path(run_dir) / info["dir"])


def save_checkpoint(run_dir: Path, model, train_env, rows: list[dict]) -> Checkpoint:
    """Write model + optimizer, normalization stats, RNG states and eval rows; then point at it."""
    step = int(model.num_timesteps)
    name = f"ckpt-{step:012d}"
    final = Path(run_dir) / name
    tmp = Path(run_dir) / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save(tmp / "model.zip")  # includes policy.optimizer state_dict and num_timesteps
    train_env.save(tmp / "vecnormalize.pkl")
    rng = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "step": step,
    }
    with open(tmp / "rng.pkl", "wb") as f:
        pickle.dump(rng, f)
    write_eval_rows(tmp / "eval.csv", rows)
    shutil.rmtree(final, ignore_errors=True)  # a stale copy from a crash between rename and pointer
    os.replace(tmp, final)
    previous = latest_checkpoint(run_dir)
    write_json_atomic(Path(run_dir) / "checkpoint.json", {"dir": name, "step": step})
    if previous is not None and previous.path != final:
        shutil.rmtree(previous.path, ignore_errors=True)
    return Checkpoint(step, final)


def restore_rng(ckpt: Checkpoint) -> None:
    with open(ckpt.path / "rng.pkl", "rb") as f:
        rng = pickle.load(f)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])


def save_final(run_dir: Path, model, train_env) -> Path:
    """Write ``final/`` via a temp directory and rename, so it is complete or absent."""
    final = Path(run_dir) / "final"
    tmp = Path(run_dir) / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save(tmp / "model.zip")
    train_env.save(tmp / "vecnormalize.pkl")
    shutil.rmtree(final, ignore_errors=True)  # only reachable when done.json is absent
    os.replace(tmp, final)
    return final


def remove_checkpoints(run_dir: Path) -> None:
    """After done.json: the final model replaces the checkpoints."""
    (Path(run_dir) / "checkpoint.json").unlink(missing_ok=True)
    for p in Path(run_dir).glob("ckpt-*"):
        shutil.rmtree(p, ignore_errors=True)
