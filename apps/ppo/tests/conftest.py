"""Shared helpers: tiny but real PPO runs (Hopper-v5, 4 envs x 64 steps per rollout)."""

from __future__ import annotations

import os
import warnings

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
warnings.filterwarnings("ignore", message=".*precision lowered.*")

TINY = [
    "--env", "Hopper-v5", "--n-envs", "4", "--n-steps", "64", "--batch-size", "64",
    "--eval-episodes", "2", "--log-interval", "1000",
]  # fmt: skip


@pytest.fixture
def tiny_args():
    """Parse train CLI args for a tiny run: ``tiny_args(out, opt, steps, eval_every, *extra)``."""
    from adan_ppo.train import build_parser

    def make(out, opt="adam", steps=1024, eval_every=512, *extra):
        argv = [*TINY, "--out", str(out), "--opt", opt, "--steps", str(steps),
                "--eval-every", str(eval_every), "--seed", "3", *extra]  # fmt: skip
        return build_parser().parse_args(argv)

    return make


@pytest.fixture
def system_tmp(tmp_path, monkeypatch):
    """An empty folder standing in for the system temp dir, to see what training leaves there."""
    import tempfile

    folder = tmp_path / "system-tmp"
    folder.mkdir()
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder
