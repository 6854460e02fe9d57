"""What a PPO checkpoint holds; the run folder itself is adan_repro's (:mod:`adan_repro.rundir`).

A run directory holds::

    config.json         what the run computes (checked on resume: a mismatch is an error)
    provenance.json     git commit, versions and optimizer implementation, one entry a session
    optimizer.json      the optimizer's class and every option including defaults
    eval.csv            one row per evaluation (EVAL_HEADER), rewritten atomically after each
    checkpoint.json     pointer to the newest complete checkpoint, replaced atomically
    ckpt-<step>/        model.zip (policy + optimizer state), vecnormalize.pkl, rng.pkl, eval.csv
    final/              model.zip + vecnormalize.pkl of the finished run (for evaluate/render)
    done.json           written last: the run is finished and is never touched again

Folders written before adan-repro existed have the same layout without provenance.json; they
resume and summarise unchanged.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import torch
from adan_repro.rundir import (  # noqa: F401 - the run-folder API, re-exported for the app
    Checkpoint,
    RunConflictError,
    check_or_write_config,
    commit_checkpoint,
    commit_final,
    is_done,
    latest_checkpoint,
    prepare_dir,
    read_eval,
    remove_checkpoints,
    write_done,
    write_eval,
)

EVAL_HEADER = (
    "step",
    "mean_return",
    "std_return",
    "mean_length",
    "episodes",
    "train_fps",
    "wall_s",
)
INT_COLUMNS = ("step", "episodes")


def read_eval_rows(path: Path) -> list[dict]:
    """Rows of a PPO eval.csv (step and episodes as int)."""
    return read_eval(path, INT_COLUMNS)


def write_eval_rows(path: Path, rows: list[dict]) -> None:
    """Replace a PPO eval.csv atomically."""
    write_eval(path, EVAL_HEADER, rows)


def save_checkpoint(run_dir: Path, model, train_env, rows: list[dict]) -> Checkpoint:
    """Write model + optimizer, normalization stats, RNG states and eval rows; then point at it."""
    step = int(model.num_timesteps)

    def fill(d: Path) -> None:
        model.save(d / "model.zip")  # includes policy.optimizer state_dict and num_timesteps
        train_env.save(d / "vecnormalize.pkl")
        rng = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "step": step,
        }
        with open(d / "rng.pkl", "wb") as f:
            pickle.dump(rng, f)
        write_eval_rows(d / "eval.csv", rows)

    return commit_checkpoint(run_dir, step, fill)


def restore_rng(ckpt: Checkpoint) -> None:
    """Set the python, numpy and torch RNGs to their state at the checkpoint."""
    with open(ckpt.path / "rng.pkl", "rb") as f:
        rng = pickle.load(f)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])


def save_final(run_dir: Path, model, train_env) -> Path:
    """Write ``final/`` (model + normalization statistics) so that it is complete or absent."""

    def fill(d: Path) -> None:
        model.save(d / "model.zip")
        train_env.save(d / "vecnormalize.pkl")

    return commit_final(run_dir, fill)
