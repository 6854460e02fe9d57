"""Checksummed downloads: file:// URLs stand in for the network, which tests never touch."""

from __future__ import annotations

import hashlib

import pytest
from adan_repro.download import DownloadError, fetch, md5sum


def test_md5sum_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 5000  # more than one read block
    (tmp_path / "f").write_bytes(data)
    assert md5sum(tmp_path / "f") == hashlib.md5(data).hexdigest()


def test_fetch_copies_and_hashes(tmp_path):
    data = b"hello\n" * 300_000
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    lines = []
    got = fetch(src.as_uri(), tmp_path / "dst.bin", log=lines.append, progress_s=0.0)
    assert (tmp_path / "dst.bin").read_bytes() == data
    assert got == hashlib.md5(data).hexdigest()
    assert lines and lines[-1].startswith("[data]")  # progress lines


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x.zip", "file:///nonexistent/x.zip"])
def test_unreachable_urls_raise_download_error(tmp_path, url):
    with pytest.raises(DownloadError, match="cannot download") as info:
        fetch(url, tmp_path / "x", timeout=5)
    assert info.value.url == url and info.value.reason
