"""The Transformer-XL data pipeline on tiny generated corpora: vocabulary rules, the encoded
cache, memory maps, ordered batching, DDP column splits, errors and the (offline) download."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from adan_txl import data
from adan_txl.data import (
    EOS,
    DataError,
    OrderedStream,
    Vocab,
    adaptive_cutoffs,
    build_vocab,
    download_wt103,
    load_corpus,
    micro_columns,
    resolve_data_dir,
    split_file,
)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    # Never read the user's $TXL_DATA or write into ~/.cache from a test.
    monkeypatch.delenv(data.ENV_DIR, raising=False)
    monkeypatch.setenv(data.ENV_CACHE, str(tmp_path / "cache-root"))


def write_corpus(folder: Path, texts: dict[str, str], names: str = "wiki.{}.tokens") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in texts.items():
        (folder / names.format(split)).write_text(text, encoding="utf-8")
    return folder


def reference_ids(text: str, vocab: Vocab, lower: bool) -> list[int]:
    """Direct tokenization of ``text`` for comparison: strip, maybe lower, split, <eos>."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        out += [vocab.index(w) for w in (line.lower() if lower else line).split()]
        out.append(vocab.index(EOS))
    return out


WT = {
    "train": " b a c \n\n a b The the \n",
    "valid": " a a a c \n",
    "test": " The \n",
}


@pytest.fixture
def counting(monkeypatch):
    """Counts calls of ``encode_file`` (one per split and build)."""
    calls: list[str] = []
    real = data.encode_file

    def wrapped(path, *args, **kwargs):
        calls.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(data, "encode_file", wrapped)
    return calls


# -------------------------------------------------------------------------------- vocabulary


def test_vocab_is_eos_first_then_by_count_with_ties_in_first_seen_order(tmp_path):
    d = write_corpus(tmp_path / "c", WT)
    # train counts: a 2, b 2, c 1, The 1, the 1, <eos> 3 (the empty line counts one <eos>).
    # b is seen before a, so it wins the tie; case is kept for WikiText-103.
    assert build_vocab(d).symbols == [EOS, "b", "a", "c", "The", "the"]


def test_wt103_counts_only_the_training_split(tmp_path):
    d = write_corpus(tmp_path / "c", {**WT, "valid": " c c c c c c \n", "test": " c c c \n"})
    assert build_vocab(d).symbols == [EOS, "b", "a", "c", "The", "the"]


def test_ptb_counts_all_splits_lower_cased(tmp_path):
    texts = {"train": " b a C \n a b \n", "valid": " c c \n", "test": " c \n"}
    d = write_corpus(tmp_path / "c", texts, "ptb.{}.txt")
    assert build_vocab(d).symbols == [EOS, "c", "b", "a"]
    # The plain {split}.txt names are PTB-style too.
    d2 = write_corpus(tmp_path / "c2", texts, "{}.txt")
    assert split_file(d2, "valid") == d2 / "valid.txt"
    c = load_corpus(d2)
    assert c.kind == "ptb" and c.vocab.symbols == [EOS, "c", "b", "a"]
    assert c.train.tolist() == reference_ids(texts["train"], c.vocab, lower=True)


def test_encoding_matches_direct_tokenization(tmp_path):
    d = write_corpus(tmp_path / "c", WT)
    c = load_corpus(d)
    assert c.kind == "wt103"
    for split in data.SPLITS:
        assert getattr(c, split).tolist() == reference_ids(WT[split], c.vocab, lower=False)
    assert c.train.tolist()[4] == 0  # the empty line is a lone <eos>


def test_unknown_word_is_an_error_naming_word_and_file(tmp_path):
    d = write_corpus(tmp_path / "c", {**WT, "test": " a \n The zebra \n"})
    with pytest.raises(DataError, match=r"wiki\.test\.tokens, line 2: 'zebra' is not in the vocab"):
        load_corpus(d)
    # Case matters for WikiText-103: "A" is not "a".
    d2 = write_corpus(tmp_path / "c2", {**WT, "valid": " A \n"})
    with pytest.raises(DataError, match="'A'"):
        load_corpus(d2)


def test_vocab_save_load_and_index(tmp_path):
    v = Vocab([EOS, "x", "y\u00e9"])
    v.save(tmp_path / "v.txt")
    w = Vocab.load(tmp_path / "v.txt")
    assert w.symbols == v.symbols and len(w) == 3 and w.index("y\u00e9") == 2
    with pytest.raises(DataError, match="'nope' is not in the vocabulary"):
        w.index("nope")
    with pytest.raises(DataError, match="twice"):
        Vocab([EOS, "x", "x"])


def test_adaptive_cutoffs():
    assert adaptive_cutoffs(267_735) == [20_000, 40_000, 200_000]
    assert adaptive_cutoffs(10_000) == [747, 1494, 7470]
    for n in [*range(4, 300), 1000, 33_278, 793_471]:
        c = adaptive_cutoffs(n)
        assert len(c) == 3 and 1 <= c[0] < c[1] < c[2] <= n - 1, (n, c)
    assert adaptive_cutoffs(4) == [1, 2, 3]
    with pytest.raises(DataError, match="too small"):
        adaptive_cutoffs(3)


# ------------------------------------------------------------------------------------- cache


def test_second_load_only_maps_and_a_changed_file_re_encodes(tmp_path, counting):
    d = write_corpus(tmp_path / "c", WT)
    cache = tmp_path / "enc"
    first = load_corpus(d, cache)
    assert counting == ["wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"]
    second = load_corpus(d, cache)
    assert len(counting) == 3  # nothing encoded again
    assert second.cache_dir == first.cache_dir
    assert second.train.tolist() == first.train.tolist()

    (d / "wiki.test.tokens").write_text(" c c a \n")  # new size
    third = load_corpus(d, cache)
    assert len(counting) == 6 and third.cache_dir != first.cache_dir
    assert third.test.tolist() == reference_ids(" c c a \n", third.vocab, lower=False)

    st = (d / "wiki.valid.tokens").stat()  # same size, new mtime
    os.utime(d / "wiki.valid.tokens", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    load_corpus(d, cache)
    assert len(counting) == 9


def test_default_cache_is_under_env_cache(tmp_path):
    c = load_corpus(write_corpus(tmp_path / "c", WT))
    assert c.cache_dir.parent == tmp_path / "cache-root" / "encoded"


def test_arrays_are_read_only_memory_maps_and_md5s_are_recorded(tmp_path):
    d = write_corpus(tmp_path / "c", WT)
    c = load_corpus(d)
    for split in data.SPLITS:
        x = getattr(c, split)
        assert isinstance(x, np.memmap) and x.dtype == np.int32 and x.ndim == 1
        assert not x.flags.writeable
        want = hashlib.md5((d / f"wiki.{split}.tokens").read_bytes()).hexdigest()
        assert c.md5[split] == want
    assert c.n_token == len(c.vocab) == 6
    # Also from the cache, without re-reading the sources.
    assert load_corpus(d).md5 == c.md5


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    d = write_corpus(tmp_path / "c", WT)
    cache = tmp_path / "enc"
    real = data.encode_file

    def dies_on_valid(path, vocab, lower, out):
        if "valid" in Path(path).name:
            out.write_bytes(b"half")
            raise KeyboardInterrupt
        return real(path, vocab, lower, out)

    monkeypatch.setattr(data, "encode_file", dies_on_valid)
    with pytest.raises(KeyboardInterrupt):
        load_corpus(d, cache)
    assert [p for p in cache.iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.setattr(data, "encode_file", real)
    assert load_corpus(d, cache).valid.tolist() == reference_ids(WT["valid"], build_vocab(d), False)


def test_killed_build_temp_folder_is_cleaned_by_the_next_build(tmp_path):
    d = write_corpus(tmp_path / "c", WT)
    cache = tmp_path / "enc"
    key = load_corpus(d, cache).cache_dir.name
    shutil.rmtree(cache / key)
    (cache / f".{key}.abc.tmp").mkdir()  # what a SIGKILLed build leaves
    (cache / f".{key}.abc.tmp" / "train.npy").write_bytes(b"partial")
    load_corpus(d, cache)
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == [key]


def test_racing_build_keeps_the_winners_folder(tmp_path, monkeypatch):
    d = write_corpus(tmp_path / "c", WT)
    cache = tmp_path / "enc"
    # Another "process" finishes its build while ours is encoding. Locking is switched off (as
    # where flock is missing) so the two really overlap instead of taking turns.
    monkeypatch.setattr(data, "_build_lock", lambda path: contextlib.nullcontext())
    monkeypatch.setattr(data, "fcntl", None)
    real = data.encode_file
    raced = []

    def racer(path, *args):
        if not raced:
            raced.append(True)
            monkeypatch.setattr(data, "encode_file", real)
            winner.append(load_corpus(d, cache))
            monkeypatch.setattr(data, "encode_file", racer)
        return real(path, *args)

    winner: list = []
    monkeypatch.setattr(data, "encode_file", racer)
    ours = load_corpus(d, cache)
    assert ours.cache_dir == winner[0].cache_dir
    assert ours.train.tolist() == winner[0].train.tolist()
    assert [p.name for p in cache.iterdir()] == [ours.cache_dir.name]  # no temp folder left


def test_concurrent_loads_encode_once(tmp_path, counting):
    d = write_corpus(tmp_path / "c", WT)
    cache = tmp_path / "enc"
    results: list = []
    threads = [
        threading.Thread(target=lambda: results.append(load_corpus(d, cache))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(counting) == 3
    assert len({r.cache_dir for r in results}) == 1


# ---------------------------------------------------------------------------------- batching


def test_stream_is_a_view_and_segments_match_direct_slicing(tmp_path):
    lines = (" ".join(f"w{(i * 7 + j) % 13}" for j in range(i % 5)) for i in range(60))
    text = "".join(f" {line} \n" for line in lines)  # includes empty lines
    c = load_corpus(write_corpus(tmp_path / "c", {"train": text, "valid": text, "test": text}))
    toks = c.train.tolist()
    B, tgt = 3, 7
    s = OrderedStream(c.train, B)
    n_step = len(toks) // B
    assert s.n_step == n_step and s.x.shape == (n_step, B) and s.batch_size == B
    assert np.shares_memory(s.x, c.train)
    n_seg = s.num_segments(tgt)
    starts = list(range(0, n_step - 1, tgt))
    assert n_seg == len(starts)
    for k, i in enumerate(starts):
        x, y = s.segment(k, tgt)
        seq_len = min(tgt, n_step - 1 - i)
        assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (seq_len, B)
        for b in range(B):
            stream = toks[b * n_step : (b + 1) * n_step]
            assert x[:, b].tolist() == stream[i : i + seq_len]
            assert y[:, b].tolist() == stream[i + 1 : i + 1 + seq_len]
    assert (n_step - 1) % tgt != 0, "the test should cover a short last segment"
    pairs = list(s.iter_segments(tgt, start=n_seg - 1))
    assert len(pairs) == 1 and torch.equal(pairs[0][0], s.segment(n_seg - 1, tgt)[0])
    with pytest.raises(DataError, match="out of range"):
        s.segment(n_seg, tgt)


def test_matches_the_original_batchify_layout():
    # The original: data.narrow(0, 0, n_step * B).view(B, -1).t(), segments every tgt_len.
    tokens = np.arange(103, dtype=np.int32)
    B, tgt = 4, 6
    s = OrderedStream(tokens, B)
    ref = torch.from_numpy(tokens.astype(np.int64))[: (103 // B) * B].view(B, -1).t()
    got_x = torch.cat([s.segment(k, tgt)[0] for k in range(s.num_segments(tgt))])
    got_y = torch.cat([s.segment(k, tgt)[1] for k in range(s.num_segments(tgt))])
    assert torch.equal(got_x, ref[:-1]) and torch.equal(got_y, ref[1:])


@pytest.mark.parametrize(
    ("B", "W", "A"), [(12, 1, 1), (12, 2, 3), (12, 4, 1), (8, 2, 4), (60, 8, 1), (10, 3, 2)]
)
def test_micro_columns_partition_the_batch(B, W, A):
    tokens = np.arange(B * 10, dtype=np.int32)
    s = OrderedStream(tokens, B)
    full_x, full_y = s.segment(1, 4)
    seen: list[int] = []
    parts_x, parts_y = [], []
    for rank in range(W):
        for micro in range(A):
            start, stop = micro_columns(B, W, rank, A, micro)
            assert stop - start in (B // (W * A), -(-B // (W * A)))  # sizes differ by <= 1
            seen += range(start, stop)
            part = s.columns(start, stop)
            assert np.shares_memory(part.x, tokens) and part.batch_size == stop - start
            x, y = part.segment(1, 4)
            parts_x.append(x)
            parts_y.append(y)
    assert sorted(seen) == list(range(B)) and len(seen) == B
    assert torch.equal(torch.cat(parts_x, 1), full_x) and torch.equal(torch.cat(parts_y, 1), full_y)


def test_micro_columns_errors_say_what_to_choose():
    with pytest.raises(DataError, match=r"batch size 6 .* 4 processes x 2 .* at most 6"):
        micro_columns(6, 4, 0, 2, 0)
    with pytest.raises(DataError, match="out of range"):
        micro_columns(16, 2, 2, 1, 0)
    with pytest.raises(DataError, match="out of range"):
        micro_columns(16, 2, 0, 2, 2)
    with pytest.raises(DataError, match="at least 1"):
        micro_columns(16, 0, 0, 1, 0)


def test_micro_columns_split_60_streams_over_8_processes():
    sizes = [micro_columns(60, 8, r, 1, 0) for r in range(8)]
    assert [b - a for a, b in sizes] == [7, 8, 7, 8, 7, 8, 7, 8]
    assert sizes[0][0] == 0 and sizes[-1][1] == 60
    assert all(sizes[i][1] == sizes[i + 1][0] for i in range(7))


def test_stream_errors():
    with pytest.raises(DataError, match="cannot make 4 streams"):
        OrderedStream(np.arange(7, dtype=np.int32), 4)
    s = OrderedStream(np.arange(40, dtype=np.int32), 4)
    with pytest.raises(DataError, match="columns"):
        s.columns(2, 2)
    with pytest.raises(DataError, match="columns"):
        s.columns(0, 5)
    with pytest.raises(DataError, match="tgt_len"):
        s.num_segments(0)


# ------------------------------------------------------------------------- finding the data


def test_missing_folder_and_missing_split_name_the_expected_files(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"does not exist; pass --data DIR with wiki\.train"):
        resolve_data_dir(tmp_path / "nope")
    d = write_corpus(tmp_path / "c", WT)
    (d / "wiki.valid.tokens").unlink()
    with pytest.raises(DataError, match=r"no file for the valid split.*ptb\.train\.txt"):
        resolve_data_dir(d)
    with pytest.raises(DataError, match="valid split"):
        load_corpus(d)
    monkeypatch.setenv(data.ENV_DIR, str(tmp_path / "gone"))
    with pytest.raises(DataError, match=r"from \$TXL_DATA"):
        resolve_data_dir(None)


def test_mixed_naming_is_an_error(tmp_path):
    d = write_corpus(tmp_path / "c", {"train": " a \n"})
    write_corpus(d, {"valid": " a \n", "test": " a \n"}, "ptb.{}.txt")
    with pytest.raises(DataError, match="mixes WikiText-103 and PTB-style"):
        load_corpus(d)


def test_resolve_prefers_data_then_env_then_cache(tmp_path, monkeypatch):
    a = write_corpus(tmp_path / "a", WT)
    b = write_corpus(tmp_path / "b", WT)
    monkeypatch.setenv(data.ENV_DIR, str(b))
    assert resolve_data_dir(a) == a
    assert resolve_data_dir(None) == b
    monkeypatch.delenv(data.ENV_DIR)
    with pytest.raises(DataError, match="not in the cache.*--data DIR"):
        resolve_data_dir(None, allow_download=False)
    cached = write_corpus(tmp_path / "cache-root" / "wikitext-103", WT)
    assert resolve_data_dir(None, allow_download=False) == cached


# ------------------------------------------------------------------------------ the download


def make_zip(path: Path, texts: dict[str, str], top: str = "wikitext-103") -> tuple[str, str]:
    with zipfile.ZipFile(path, "w") as zf:
        for split, text in texts.items():
            zf.writestr(f"{top}/wiki.{split}.tokens", text)
    return path.as_uri(), hashlib.md5(path.read_bytes()).hexdigest()


def test_download_with_the_right_md5_extracts_and_loads(tmp_path, monkeypatch):
    url, md5 = make_zip(tmp_path / "wt.zip", WT)
    real = data.download_wt103
    monkeypatch.setattr(data, "download_wt103", lambda cache: real(cache, url=url, md5=md5))
    folder = resolve_data_dir(None)  # nothing cached yet: downloads
    assert folder == tmp_path / "cache-root" / "wikitext-103"
    assert sorted(p.name for p in folder.iterdir()) == [
        "wiki.test.tokens",
        "wiki.train.tokens",
        "wiki.valid.tokens",
    ]
    assert (folder / "wiki.train.tokens").read_text() == WT["train"]
    monkeypatch.setattr(data, "download_wt103", None)  # a second resolve must not download
    assert resolve_data_dir(None) == folder
    c = load_corpus(folder)
    assert c.kind == "wt103" and c.vocab.symbols == [EOS, "b", "a", "c", "The", "the"]


def test_download_with_a_wrong_md5_keeps_nothing(tmp_path):
    url, md5 = make_zip(tmp_path / "wt.zip", WT)
    cache = tmp_path / "dl"
    with pytest.raises(DataError, match=r"has MD5 .*expected 0{32}.*Nothing was kept"):
        download_wt103(cache, url=url, md5="0" * 32)
    assert not cache.exists() or list(cache.iterdir()) == []
    # An existing folder keeps what it had, and gets nothing new.
    cache.mkdir(exist_ok=True)
    (cache / "notes.txt").write_text("mine")
    with pytest.raises(DataError):
        download_wt103(cache, url=url, md5="0" * 32)
    assert [p.name for p in cache.iterdir()] == ["notes.txt"]


def test_download_of_a_zip_without_the_files_keeps_nothing(tmp_path):
    url, md5 = make_zip(tmp_path / "raw.zip", WT, top="wikitext-103-raw")
    cache = tmp_path / "dl"
    with pytest.raises(DataError, match="has no wikitext-103/wiki.train.tokens"):
        download_wt103(cache, url=url, md5=md5)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_offline_download_says_to_pass_data(tmp_path):
    cache = tmp_path / "dl"
    with pytest.raises(DataError, match=r"cannot download .*--data DIR.*\$TXL_DATA"):
        download_wt103(cache, url="http://127.0.0.1:9/x.zip")
    assert not cache.exists() or list(cache.iterdir()) == []
    with pytest.raises(DataError, match="--data DIR"):
        download_wt103(cache, url=(tmp_path / "missing.zip").as_uri())
