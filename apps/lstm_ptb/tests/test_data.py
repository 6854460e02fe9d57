"""Finding, downloading (checksums, offline) and reading the corpus, and its clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from adan_lstm import data
from adan_lstm.data import DataError, batchify, download, load_corpus, resolve_data_dir
from conftest import write_corpus


def test_reads_words_with_eos_and_builds_the_vocabulary(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "ptb.train.txt").write_text(" a b c \n b a \n")
    (d / "ptb.valid.txt").write_text(" a c \n")
    (d / "test.txt").write_text(" b \n")  # awd-lstm's name is accepted too
    c = load_corpus(d)
    assert c.vocab == ["a", "b", "c", "<eos>"]
    assert c.train.tolist() == [0, 1, 2, 3, 1, 0, 3]
    assert c.valid.tolist() == [0, 2, 3] and c.test.tolist() == [1, 3]


def test_unknown_words_are_an_error_naming_them(tmp_path):
    d = write_corpus(tmp_path / "c")
    (d / "ptb.test.txt").write_text(" w1 zebra w2 quokka \n")
    with pytest.raises(DataError, match=r"ptb.test.txt has 2 word types.*'quokka', 'zebra'.*<unk>"):
        load_corpus(d)


def test_missing_folder_and_missing_split_are_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_DIR, raising=False)
    with pytest.raises(DataError, match="does not exist; pass --data DIR"):
        resolve_data_dir(tmp_path / "nope")
    d = write_corpus(tmp_path / "c")
    (d / "ptb.valid.txt").unlink()
    with pytest.raises(DataError, match=r"has no ptb.valid.txt"):
        resolve_data_dir(d)


def test_environment_variable_names_the_folder(tmp_path, monkeypatch):
    d = write_corpus(tmp_path / "c")
    monkeypatch.setenv(data.ENV_DIR, str(d))
    assert resolve_data_dir(None) == d


def test_batchify_makes_contiguous_columns():
    b = batchify(torch.arange(10), 3)
    assert b.tolist() == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]  # the tail token 9 is cut
    with pytest.raises(DataError, match="cannot make batches"):
        batchify(torch.arange(3), 2)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_checks_checksums_and_caches(tmp_path, monkeypatch):
    src = write_corpus(tmp_path / "server")
    md5 = {s: _md5(src / f"ptb.{s}.txt") for s in data.SPLITS}
    monkeypatch.setenv(data.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(data.ENV_DIR, raising=False)
    monkeypatch.setattr(data, "BASE_URL", src.as_uri() + "/")
    monkeypatch.setattr(data, "MD5", md5)
    folder = resolve_data_dir(None)
    assert folder == tmp_path / "cache"
    for s in data.SPLITS:
        assert (folder / f"ptb.{s}.txt").read_bytes() == (src / f"ptb.{s}.txt").read_bytes()
    (src / "ptb.train.txt").unlink()  # cached now: no second download
    assert resolve_data_dir(None) == folder


def test_corrupt_download_leaves_nothing(tmp_path):
    src = write_corpus(tmp_path / "server")
    md5 = {s: _md5(src / f"ptb.{s}.txt") for s in data.SPLITS}
    md5["valid"] = "0" * 32
    with pytest.raises(
        DataError, match=r"ptb.valid.txt has MD5 .* expected 0{32}.*Nothing was kept"
    ):
        download(tmp_path / "cache", src.as_uri() + "/", md5)
    assert not (tmp_path / "cache" / "ptb.valid.txt").exists()
    assert not list((tmp_path / "cache").glob(".*tmp"))  # no half-written temp file


def test_offline_download_says_what_to_do(tmp_path):
    # Port 9 on localhost refuses connections: what a machine without network sees.
    with pytest.raises(DataError, match=r"cannot download http://127.0.0.1:9/.*--data DIR"):
        download(tmp_path / "cache", "http://127.0.0.1:9/", data.MD5)
    assert not list((tmp_path / "cache").iterdir())


def test_the_shipped_checksums_match_the_real_files():
    """The MD5s the downloader checks are those of the standard files (where they are here)."""
    real = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "ptb"
    if not real.is_dir():
        pytest.skip(f"real PTB not at {real}: checksum cross-check not run")
    for s in data.SPLITS:
        assert _md5(real / f"ptb.{s}.txt") == data.MD5[s]
