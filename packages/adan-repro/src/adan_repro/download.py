"""Downloads with checksums, for the apps' data modules.

:func:`fetch` streams a URL into a file, hashing while it writes (a large archive is read
once) and printing a progress line every few seconds; :func:`md5sum` hashes a file on disk.
A failed transfer raises :class:`DownloadError` with the reason, which each app turns into its
own message (what to download by hand and which flag takes it).
"""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

BLOCK = 1 << 20


class DownloadError(OSError):
    """The URL could not be read; ``reason`` says why (offline, refused, not found)."""

    def __init__(self, url: str, reason: object):
        super().__init__(f"cannot download {url} ({reason})")
        self.url, self.reason = url, reason


def md5sum(path: Path) -> str:
    """Hex MD5 of a file, read in 1 MiB blocks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(
    url: str,
    dest: Path,
    log: Callable[[str], None] = print,
    progress_s: float = 5.0,
    timeout: float = 60.0,
) -> str:
    """Stream ``url`` into ``dest`` and return the MD5 of what was written. Writes ``dest``
    directly: call it on a temporary path (e.g. inside ``adan_repro.atomic.write_atomic``) and
    check the checksum before the file takes its real name."""
    h = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(dest, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0)
            done, last = 0, time.monotonic()
            for block in iter(lambda: r.read(BLOCK), b""):
                f.write(block)
                h.update(block)
                done += len(block)
                if time.monotonic() - last >= progress_s:
                    last = time.monotonic()
                    of = f" of {total / 1e6:.0f} MB ({100 * done / total:.0f}%)" if total else ""
                    log(f"[data]   {done / 1e6:.0f} MB{of}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DownloadError(url, getattr(exc, "reason", exc)) from None
    return h.hexdigest()
