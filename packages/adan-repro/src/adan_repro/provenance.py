"""What produced a run: source commit, software versions and the optimizer implementation.

Recorded in ``provenance.json`` of the run folder, one entry per session. Nothing here imports
torch or the app: versions are read from the installed package metadata, and the app hands in
what only it can know (the optimizer implementation that actually ran, its source folder).
A resume on different software is allowed, because the results stay comparable in most cases,
but it is never silent: :func:`record` returns a warning naming every difference.
"""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from .atomic import write_json_atomic

FILE = "provenance.json"
# Fields that describe the software; a change in one of them on resume is worth a warning.
COMPARED = ("git_commit", "git_dirty", "python", "packages", "optimizer_implementation")


def package_version(name: str) -> str | None:
    """Installed version of distribution ``name`` (None if it is not installed)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_state(path: Path) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout holding ``path``; ``(None, None)`` outside one."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(path), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit.strip(), (None if status is None else bool(status.strip()))


def collect(
    source: Path | None,
    packages: Iterable[str] = (),
    optimizer_implementation: str | None = None,
    extra: dict | None = None,
) -> dict:
    """The provenance of this process.

    Args:
        source: a path inside the app's git checkout (for the commit and dirty flag).
        packages: distributions whose versions matter; torch is always included.
        optimizer_implementation: which code path ran the optimizer, e.g. ``"adan: cpu_fused"``.
        extra: anything else the app wants on record (kept, not compared).
    """
    commit, dirty = git_state(Path(source)) if source is not None else (None, None)
    names = ["torch", *[p for p in packages if p != "torch"]]
    record = {
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {n: package_version(n) for n in names},
        "optimizer_implementation": optimizer_implementation,
    }
    if extra:
        record["extra"] = extra
    return record


def differences(old: dict, new: dict) -> list[str]:
    """Human-readable ``field: old -> new`` for every compared field that changed."""
    changes = []
    for key in COMPARED:
        a, b = old.get(key), new.get(key)
        if key == "packages":
            a, b = a or {}, b or {}
            for name in sorted(set(a) | set(b)):
                if a.get(name) != b.get(name):
                    changes.append(f"{name} {a.get(name)} -> {b.get(name)}")
        elif a != b:
            changes.append(f"{key} {a} -> {b}")
    return changes


def read(run_dir: Path) -> list[dict]:
    """The sessions recorded in a run folder (empty for a run from before provenance)."""
    path = Path(run_dir) / FILE
    return json.loads(path.read_text())["sessions"] if path.exists() else []


def record(run_dir: Path, current: dict, step: int) -> str | None:
    """Append this session (starting at ``step``) to ``provenance.json``.

    Returns a warning naming what differs from the previous session, or None when nothing does
    (or when this is the first session, or the run predates provenance records).
    """
    sessions = read(run_dir)
    warning = None
    if sessions:
        changes = differences(sessions[-1], current)
        if changes:
            warning = (
                f"resuming at step {step} on different software than step "
                f"{sessions[-1].get('start_step')}: {'; '.join(changes)}. The run continues; "
                "the difference is kept in provenance.json"
            )
    elif step > 0:
        warning = f"resuming at step {step} a run with no provenance record; recording this session"
    sessions.append({**current, "start_step": step})
    write_json_atomic(Path(run_dir) / FILE, {"sessions": sessions})
    return warning
