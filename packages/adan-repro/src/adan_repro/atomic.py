"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

:func:`write_atomic` replaces one file. :class:`Batch` stages several files (a summary's table,
CSV and plots) and renames them into place only once every one of them has been written, so an
error half-way leaves none of the new files behind.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_beside(path: Path) -> Path:
    # Same directory as the target, so the final os.replace is a rename on one file system.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
    return Path(tmp)


def _fill(tmp: Path, write: Callable[[Path], None]) -> None:
    write(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)``, then rename the temp file onto ``path`` (same directory)."""
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        _fill(tmp, write)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def text_writer(text: str) -> Callable[[Path], None]:
    """A ``write`` callable for :func:`write_atomic` that writes ``text``."""
    return lambda p: p.write_text(text)


def json_text(obj: Any) -> str:
    """The JSON form every run file uses: indented, sorted keys, final newline."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def csv_writer(header: Sequence[str], rows: Iterable[Sequence]) -> Callable[[Path], None]:
    """A ``write`` callable that writes ``header`` and ``rows`` as CSV."""

    def write(p: Path) -> None:
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)

    return write


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically."""
    write_atomic(path, text_writer(text))


def write_json_atomic(path: Path, obj: Any) -> None:
    """Replace ``path`` with ``obj`` as JSON atomically."""
    write_text_atomic(path, json_text(obj))


def write_csv_atomic(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Replace ``path`` with a CSV of ``header`` and ``rows`` atomically."""
    write_atomic(path, csv_writer(header, rows))


class Batch:
    """Stage several files and put them all in place at the end, or none on an error.

    Use as a context manager; ``add(path, write)`` writes the content to a temp file at once.
    On a clean exit every temp file is renamed onto its target; on an exception all are removed.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []

    def add(self, path: Path, write: Callable[[Path], None]) -> None:
        path = Path(path)
        tmp = _temp_beside(path)
        self._staged.append((tmp, path))
        _fill(tmp, write)

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            for tmp, path in self._staged:
                os.replace(tmp, path)
        else:
            for tmp, _ in self._staged:
                tmp.unlink(missing_ok=True)
        self._staged.clear()
