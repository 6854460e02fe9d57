"""The layout of one run folder, the same for every app.

A run folder holds::

    config.json         what the run computes; checked on resume (a mismatch is an error)
    provenance.json     what produced it: git commit, versions, optimizer implementation
                        (one entry per session; see :mod:`adan_repro.provenance`)
    eval.csv            one row per evaluation: a ``step`` column and the app's named metrics,
                        rewritten atomically after each evaluation
    checkpoint.json     pointer to the newest complete checkpoint, replaced atomically
    ckpt-<step>/        the checkpoint itself; what goes inside is the app's business
    final/              the finished run's artefacts (the app's business too)
    done.json           written last: the run is finished and is never touched again
    run.log             the run's log lines when it ran under the grid runner

A checkpoint directory is complete before the pointer names it, so a crash at any moment leaves
either the previous checkpoint or the new one.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import write_csv_atomic, write_json_atomic

CONFIG = "config.json"
EVAL = "eval.csv"
POINTER = "checkpoint.json"
DONE = "done.json"
FINAL = "final"
LOG = "run.log"


class RunConflictError(RuntimeError):
    """The folder holds a run with different settings; it is never overwritten."""


@dataclass
class Checkpoint:
    """The newest complete checkpoint of a run: its step and its directory."""

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


def config_differences(old: dict, new: dict) -> list[str]:
    """Sorted top-level keys whose values differ (a missing key counts as different)."""
    missing = object()
    return sorted(k for k in set(old) | set(new) if old.get(k, missing) != new.get(k, missing))


def check_or_write_config(run_dir: Path, config: dict) -> None:
    """Record ``config`` for a new run, or check it equals the one already recorded.

    Raises RunConflictError naming every differing key, before anything is written.
    """
    path = Path(run_dir) / CONFIG
    if path.exists():
        old = json.loads(path.read_text())
        diff = config_differences(old, config)
        if diff:
            details = ", ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in diff)
            raise RunConflictError(
                f"{run_dir} already holds a run with different settings ({details}). Nothing "
                "was changed; use another output directory, or delete that run to start over."
            )
    else:
        write_json_atomic(path, config)


def read_config(run_dir: Path) -> dict:
    """The recorded ``config.json`` of a run."""
    return json.loads((Path(run_dir) / CONFIG).read_text())


def is_done(run_dir: Path) -> bool:
    """Whether the run finished (``done.json`` exists)."""
    return (Path(run_dir) / DONE).exists()


def write_done(run_dir: Path, info: dict) -> None:
    """Mark the run finished; call this after every other file of the run is in place."""
    write_json_atomic(Path(run_dir) / DONE, info)


def read_eval(path: Path, int_columns: Sequence[str] = ("step",)) -> list[dict]:
    """Rows of an evaluation CSV (empty if absent); ``int_columns`` as int, the rest float."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        return [
            {k: (int(v) if k in int_columns else float(v)) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def write_eval(path: Path, header: Sequence[str], rows: Iterable[dict]) -> None:
    """Replace an evaluation CSV: ``header`` starts with ``step``; each row has every column."""
    if not header or header[0] != "step":
        raise ValueError(f"an evaluation CSV starts with a 'step' column, got {list(header)}")
    table = []
    for row in rows:
        missing = [k for k in header if k not in row]
        if missing:
            raise ValueError(f"evaluation row at step {row.get('step')} lacks {missing}")
        table.append([row[k] for k in header])
    write_csv_atomic(path, header, table)


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The checkpoint ``checkpoint.json`` points to, or None."""
    pointer = Path(run_dir) / POINTER
    if not pointer.exists():
        return None
    info = json.loads(pointer.read_text())
    return Checkpoint(step=int(info["step"]), path=Path(run_dir) / info["dir"])


def _fill_dir(target: Path, fill: Callable[[Path], Any]) -> None:
    """Fill a temp directory beside ``target``, then rename it onto ``target``."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)  # a stale copy from a crash before the pointer
    os.replace(tmp, target)


def commit_checkpoint(run_dir: Path, step: int, fill: Callable[[Path], Any]) -> Checkpoint:
    """Write a checkpoint with ``fill(directory)``, point at it, then drop the previous one."""
    name = f"ckpt-{int(step):012d}"
    final = Path(run_dir) / name
    _fill_dir(final, fill)
    previous = latest_checkpoint(run_dir)
    write_json_atomic(Path(run_dir) / POINTER, {"dir": name, "step": int(step)})
    if previous is not None and previous.path != final:
        shutil.rmtree(previous.path, ignore_errors=True)
    return Checkpoint(int(step), final)


def commit_final(run_dir: Path, fill: Callable[[Path], Any]) -> Path:
    """Write ``final/`` with ``fill(directory)`` so that it is complete or absent."""
    final = Path(run_dir) / FINAL
    _fill_dir(final, fill)
    return final


def remove_checkpoints(run_dir: Path) -> None:
    """After ``done.json``: the final artefacts replace the checkpoints."""
    (Path(run_dir) / POINTER).unlink(missing_ok=True)
    for p in Path(run_dir).glob("ckpt-*"):
        shutil.rmtree(p, ignore_errors=True)
