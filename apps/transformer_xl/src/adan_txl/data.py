"""Word-level corpora for Transformer-XL: find, download, build the vocabulary, encode, batch.

Where the corpus comes from, first match wins (:func:`resolve_data_dir`):

1. ``--data DIR``: a folder with ``wiki.{train,valid,test}.tokens`` (WikiText-103 as
   Transformer-XL's ``getdata.sh`` lays it out), ``ptb.{train,valid,test}.txt`` or plain
   ``{train,valid,test}.txt``;
2. the ``TXL_DATA`` environment variable;
3. ``<cache>/wikitext-103`` (``<cache>`` is ``$ADAN_TXL_CACHE`` or ``~/.cache/adan_txl``),
   downloading and MD5-checking WikiText-103 there first if it is missing.

The vocabulary follows kimiyoung/transformer-xl's ``Vocab``: ``<eos>`` is id 0, then every word
by count (most frequent first, ties in order of first appearance). WikiText-103 counts the
training split only and keeps case; PTB-style folders count all three splits, lower-cased.

:func:`load_corpus` encodes each split once into ``.npy`` files in a cache folder keyed by the
source files and afterwards only memory-maps them, so the DDP processes of one machine share one
copy of the corpus through the OS page cache. :class:`OrderedStream` batches a split like the
original's ``LMOrderedIterator`` (B contiguous streams, segments of ``tgt_len`` tokens) as views
of that memory map; only the segment being used is copied.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import zipfile
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from adan_repro.atomic import Batch, write_atomic, write_json_atomic
from adan_repro.download import DownloadError, fetch, md5sum

try:  # POSIX only; without it concurrent builds still end correct, they just duplicate work
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

SPLITS = ("train", "valid", "test")
ENV_DIR = "TXL_DATA"
ENV_CACHE = "ADAN_TXL_CACHE"
EOS = "<eos>"
# The archive Transformer-XL's getdata.sh fetches; the MD5 is the one torchtext publishes for it.
WT103_URL = "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip"
WT103_MD5 = "9ddaacaf6af0710eda8c456decff7832"
WT103_ZIP_DIR = "wikitext-103"
# Symbols of the WikiText-103 vocabulary (with <eos>) and the original's adaptive-softmax cutoffs.
WT103_N_TOKEN = 267_735
WT103_CUTOFFS = (20_000, 40_000, 200_000)
# Bumped whenever the encoded layout changes, so old cache folders are never misread.
CACHE_FORMAT = 1
PROGRESS_S = 10.0

_NAMES = {
    "wt103": ("wiki.{}.tokens",),
    "ptb": ("ptb.{}.txt", "{}.txt"),
}


class DataError(ValueError):
    """The corpus cannot be used as given; the message says what to do."""


# ----------------------------------------------------------------------------- locating files


def _kind_of(path: Path) -> str:
    return "wt103" if path.name.endswith(".tokens") else "ptb"


def split_file(folder: Path, split: str) -> Path | None:
    """The file of ``split`` in ``folder``: ``wiki.<split>.tokens``, ``ptb.<split>.txt`` or
    ``<split>.txt``, the first that exists; ``None`` if there is none."""
    for names in _NAMES.values():
        for name in names:
            path = Path(folder) / name.format(split)
            if path.is_file():
                return path
    return None


def _expected_names() -> str:
    return (
        "wiki.train.tokens, wiki.valid.tokens and wiki.test.tokens (WikiText-103), or "
        "ptb.train.txt, ptb.valid.txt and ptb.test.txt (or train.txt, valid.txt, test.txt)"
    )


def _split_files(folder: Path, origin: str | None = None) -> dict[str, Path]:
    """The three split files of ``folder``, or a DataError naming what is missing."""
    folder = Path(folder)
    where = f" (from {origin})" if origin else ""
    if not folder.is_dir():
        raise DataError(
            f"corpus folder {str(folder)!r}{where} does not exist; pass --data DIR with "
            f"{_expected_names()}"
        )
    paths = {s: split_file(folder, s) for s in SPLITS}
    missing = [s for s, p in paths.items() if p is None]
    if missing:
        raise DataError(
            f"{folder}{where} has no file for the {', '.join(missing)} split; a corpus folder "
            f"holds {_expected_names()}"
        )
    return paths  # type: ignore[return-value]


def corpus_kind(folder: Path) -> str:
    """``"wt103"`` for ``wiki.*.tokens`` files, ``"ptb"`` for ``ptb.*.txt`` / ``*.txt``."""
    paths = _split_files(folder)
    kinds = {_kind_of(p) for p in paths.values()}
    if len(kinds) > 1:
        # The two kinds build their vocabularies differently, so a mixture has no right answer.
        names = ", ".join(p.name for p in paths.values())
        raise DataError(
            f"{folder} mixes WikiText-103 and PTB-style file names ({names}); use one naming "
            "scheme for all three splits"
        )
    return kinds.pop()


def cache_root() -> Path:
    """``$ADAN_TXL_CACHE``, or ``~/.cache/adan_txl``."""
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "adan_txl")


# ------------------------------------------------------------------------------- downloading


def _offline_error(url: str, reason: object) -> DataError:
    return DataError(
        f"cannot download {url} ({reason}). Without network access, download "
        "wikitext-103-v1.zip on another machine, unzip it and pass --data DIR with the "
        "wikitext-103 folder holding wiki.train.tokens, wiki.valid.tokens and wiki.test.tokens "
        f"(or set ${ENV_DIR} to it)"
    )


def _fetch(url: str, dest: Path) -> str:
    """Stream ``url`` into ``dest`` with progress lines; return its MD5 (hashed while
    writing, which spares a second read of 181 MB)."""
    try:
        return fetch(url, dest, log=lambda m: print(m, flush=True), progress_s=PROGRESS_S / 2)
    except DownloadError as exc:
        raise _offline_error(url, exc.reason) from None


def download_wt103(cache: Path, url: str = WT103_URL, md5: str = WT103_MD5) -> Path:
    """Download the WikiText-103 zip from ``url`` and put ``wiki.{train,valid,test}.tokens``
    into the folder ``cache``; return it.

    The zip goes to a temp file that is removed in every case; its MD5 must equal ``md5`` before
    anything is extracted, and the three files are renamed into place only once all of them
    have been written, so a failed or corrupt download leaves nothing behind.
    """
    cache = Path(cache)
    created = not cache.exists()
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".wikitext-103.", suffix=".zip.part", dir=cache)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        print(f"[data] downloading {url} (about 181 MB) -> {cache}", flush=True)
        got = _fetch(url, tmp)
        if got != md5:
            raise DataError(
                f"{url} has MD5 {got}, expected {md5}: the download is corrupt or not "
                "wikitext-103-v1.zip. Nothing was kept; retry, or unzip a good copy and pass "
                "--data DIR"
            )
        _extract_wt103(tmp, cache, url)
        print(f"[data] WikiText-103 is in {cache}", flush=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):  # only if still empty: never remove others' files
                cache.rmdir()
        raise
    tmp.unlink(missing_ok=True)
    return cache


def _extract_wt103(zip_path: Path, cache: Path, url: str) -> None:
    try:
        with zipfile.ZipFile(zip_path) as zf, Batch() as batch:
            names = set(zf.namelist())
            for split in SPLITS:
                member = f"{WT103_ZIP_DIR}/wiki.{split}.tokens"
                if member not in names:
                    raise DataError(
                        f"{url} has no {member}; it is not wikitext-103-v1.zip (the word-level "
                        "archive, not the raw one). Pass --data DIR with the extracted files"
                    )

                def copy(tmp: Path, member: str = member) -> None:
                    with zf.open(member) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)

                batch.add(cache / f"wiki.{split}.tokens", copy)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{url} is not a valid zip file ({exc}); pass --data DIR") from None


def resolve_data_dir(data: Path | None, allow_download: bool = True) -> Path:
    """The corpus folder to use (see the module docstring); errors name the fix."""
    if data is not None:
        _split_files(Path(data), "--data")
        return Path(data)
    if os.environ.get(ENV_DIR):
        folder = Path(os.environ[ENV_DIR])
        _split_files(folder, f"${ENV_DIR}")
        return folder
    folder = cache_root() / WT103_ZIP_DIR
    if all((folder / f"wiki.{s}.tokens").is_file() for s in SPLITS):
        return folder
    if not allow_download:
        raise DataError(
            f"WikiText-103 is not in the cache {folder}; pass --data DIR with "
            f"{_expected_names()} (or set ${ENV_DIR}), or allow the download"
        )
    return download_wt103(folder)


# -------------------------------------------------------------------------------- vocabulary


class Vocab:
    """Symbols in id order; ``symbols[0]`` is ``<eos>``."""

    def __init__(self, symbols: Iterable[str]) -> None:
        self.symbols: list[str] = list(symbols)
        self._ids = {s: i for i, s in enumerate(self.symbols)}
        if len(self._ids) != len(self.symbols):
            raise DataError("the vocabulary lists a symbol twice; rebuild it from the corpus")

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, word: str) -> bool:
        return word in self._ids

    def index(self, word: str) -> int:
        """The id of ``word``; a DataError if it is not in the vocabulary."""
        try:
            return self._ids[word]
        except KeyError:
            raise DataError(f"{word!r} is not in the vocabulary of {len(self)} symbols") from None

    @property
    def ids(self) -> dict[str, int]:
        """The word -> id mapping (read it, do not change it)."""
        return self._ids

    def save(self, path: Path) -> None:
        """One symbol per line, written atomically. Symbols come from ``str.split()``, so none
        contains a line break."""
        text = "".join(s + "\n" for s in self.symbols)
        write_atomic(Path(path), lambda p: p.write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, path: Path) -> Vocab:
        """The inverse of :meth:`save`."""
        text = Path(path).read_text(encoding="utf-8")
        return cls(text.split("\n")[:-1] if text else [])


def _lines(path: Path, lower: bool, what: str) -> Iterator[list[str]]:
    """Each line of ``path`` as the original tokenizes it (strip, maybe lower, split), without
    the ``<eos>``; prints a progress line every :data:`PROGRESS_S` seconds on big files."""
    last = start = time.monotonic()
    # Text mode with universal newlines, like the original's open(path, 'r', encoding='utf-8'),
    # so the line boundaries (and hence the <eos> positions) are the same.
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            yield (line.lower() if lower else line).split()
            if n % 4096 == 0 and time.monotonic() - last >= PROGRESS_S:
                last = time.monotonic()
                print(f"[data]   {what} {path.name}: {n:,} lines, {last - start:.0f} s", flush=True)


def count_words(paths: Iterable[Path], lower: bool) -> collections.Counter[str]:
    """Word counts over ``paths`` with one ``<eos>`` per line (empty lines included)."""
    counter: collections.Counter[str] = collections.Counter()
    for path in paths:
        n_lines = 0
        for words in _lines(Path(path), lower, "counting"):
            counter.update(words)
            n_lines += 1
        counter[EOS] += n_lines
    return counter


def vocab_from_counts(counter: collections.Counter[str]) -> Vocab:
    """``<eos>`` first, then ``counter.most_common()`` (ties keep first-seen order)."""
    symbols = [EOS]
    symbols.extend(w for w, _ in counter.most_common() if w != EOS)
    return Vocab(symbols)


def _vocab_spec(paths: dict[str, Path], kind: str) -> tuple[list[Path], bool]:
    """Which files the vocabulary counts and whether they are lower-cased (the original's
    per-dataset choice: wt103 counts train only with case kept, ptb all splits lower-cased)."""
    if kind == "wt103":
        return [paths["train"]], False
    return [paths[s] for s in SPLITS], True


def build_vocab(folder: Path) -> Vocab:
    """The vocabulary of the corpus in ``folder`` (reads the files; no cache)."""
    paths = _split_files(Path(folder))
    files, lower = _vocab_spec(paths, corpus_kind(folder))
    return vocab_from_counts(count_words(files, lower))


def adaptive_cutoffs(n_token: int) -> list[int]:
    """WikiText-103's adaptive-softmax cutoffs (20000, 40000, 200000 of 267,735 symbols) scaled
    to ``n_token`` symbols: rounded, then nudged so they stay strictly increasing in
    ``1..n_token-1`` (small vocabularies would otherwise round two cutoffs together)."""
    k = len(WT103_CUTOFFS)
    if n_token < k + 1:
        raise DataError(
            f"a vocabulary of {n_token} symbols is too small for {k} adaptive-softmax cutoffs; "
            f"it needs at least {k + 1} (or use a plain softmax)"
        )
    # Integer round-half-up, so WT103's own size gives exactly the original cutoffs.
    cut = [(2 * c * n_token + WT103_N_TOKEN) // (2 * WT103_N_TOKEN) for c in WT103_CUTOFFS]
    for i in range(k):
        cut[i] = max(cut[i], cut[i - 1] + 1 if i else 1)
    for i in reversed(range(k)):
        cut[i] = min(cut[i], n_token - (k - i), cut[i + 1] - 1 if i < k - 1 else n_token)
    return cut


# ---------------------------------------------------------------------------------- encoding


def _flush(buf: array, f) -> int:
    # The file is little-endian int32 whatever the C int of this platform (a no-op view on x86).
    np.frombuffer(buf, dtype=np.intc).astype("<i4", copy=False).tofile(f)
    return len(buf)


def encode_file(path: Path, vocab: Vocab, lower: bool, out: Path) -> int:
    """Write the ids of ``path`` (one ``<eos>`` after every line) to ``out`` as a 1-D int32
    ``.npy``; return the number of tokens. An unknown word is a DataError naming it."""
    ids = vocab.ids
    eos = ids[EOS]
    raw = out.with_name(out.name + ".raw")
    buf = array("i")
    n = 0
    try:
        # Stream to a raw file first: the .npy header needs the length, and holding 103 M ids
        # in memory just to learn it would cost 400 MB.
        with open(raw, "wb") as f:
            for line_no, words in enumerate(_lines(path, lower, "encoding"), 1):
                try:
                    buf.extend(map(ids.__getitem__, words))  # lookups run in C, no Python loop
                except KeyError as exc:
                    raise DataError(
                        f"{path}, line {line_no}: {exc.args[0]!r} is not in the vocabulary of "
                        f"{len(vocab)} symbols. WikiText-103 and PTB map rare words to <unk> "
                        "already; map unknown words to <unk> (and count them in the training "
                        "split) or use the standard files"
                    ) from None
                buf.append(eos)
                if len(buf) >= 1 << 20:
                    n += _flush(buf, f)
                    buf = array("i")
            n += _flush(buf, f)
        with open(out, "wb") as dst, open(raw, "rb") as src:
            header = {"descr": "<i4", "fortran_order": False, "shape": (n,)}
            np.lib.format.write_array_header_1_0(dst, header)
            shutil.copyfileobj(src, dst, 1 << 22)
    finally:
        raw.unlink(missing_ok=True)
    return n


def _identity(paths: dict[str, Path], kind: str) -> dict:
    # The cache key is built from path, size and mtime, not from an MD5: an MD5 of WikiText-103
    # reads 540 MB on every start of every DDP process, while a stat is free, and a rewritten
    # file gets a new mtime. (An edit that keeps both size and mtime would be missed; tools
    # that do that on purpose are rare.) The MD5s are still computed, once, at build time.
    sources = {}
    for split, p in paths.items():
        st = p.stat()
        sources[split] = {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return {"format": CACHE_FORMAT, "kind": kind, "sources": sources}


def _key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


_thread_lock = threading.Lock()


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """Exclusive lock between processes (flock; freed by the OS if the holder is killed) and
    threads, so the ranks of one machine wait for one build instead of each encoding."""
    with _thread_lock, open(path, "a") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield


@dataclass
class Corpus:
    """The three splits as read-only int32 memory maps, their vocabulary and source MD5s."""

    folder: Path
    kind: str
    vocab: Vocab
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    md5: dict[str, str] = field(default_factory=dict)
    cache_dir: Path | None = None

    @property
    def n_token(self) -> int:
        return len(self.vocab)

    def split(self, name: str) -> np.ndarray:
        """``train``, ``valid`` or ``test`` by name."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)


def _complete(folder: Path) -> bool:
    files = ["meta.json", "vocab.txt", *(f"{s}.npy" for s in SPLITS)]
    return all((folder / name).is_file() for name in files)


def _build(paths: dict[str, Path], kind: str, identity: dict, tmp: Path) -> None:
    """Everything of one cache folder, inside ``tmp``; ``meta.json`` last."""
    files, lower = _vocab_spec(paths, kind)
    t0 = time.monotonic()
    names = ", ".join(p.name for p in files)
    print(f"[data] building the {kind} vocabulary from {names}", flush=True)
    vocab = vocab_from_counts(count_words(files, lower))
    vocab.save(tmp / "vocab.txt")
    n_tokens = {}
    for split in SPLITS:
        print(f"[data] encoding {paths[split]} ({len(vocab):,} symbols)", flush=True)
        n_tokens[split] = encode_file(paths[split], vocab, lower, tmp / f"{split}.npy")
    md5 = {s: md5sum(p) for s, p in paths.items()}
    if _identity(paths, kind) != identity:
        raise DataError(
            f"the files of {paths['train'].parent} changed while they were being encoded; "
            "run again once they are no longer being written"
        )
    meta = {**identity, "md5": md5, "n_token": len(vocab), "tokens": n_tokens}
    write_json_atomic(tmp / "meta.json", meta)
    took = time.monotonic() - t0
    print(f"[data] encoded {sum(n_tokens.values()):,} tokens in {took:.0f} s", flush=True)


def _install(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` folder onto ``final`` in one step. If another process got
    there first its folder holds the same result, so ours is dropped."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not _complete(final):
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def load_corpus(folder: Path, cache: Path | None = None) -> Corpus:
    """The corpus in ``folder``, encoded once into ``cache`` (default
    ``<cache_root>/encoded``) and memory-mapped read-only from there.

    Layout: ``<cache>/<key>/{vocab.txt,train.npy,valid.npy,test.npy,meta.json}``, where the key
    hashes the source files' paths, sizes and mtimes (a changed file gets a new folder). The
    folder is built under a temp name and renamed into place, so a killed build leaves no
    half-written folder and racing processes end with the same one.
    """
    folder = Path(folder)
    paths = _split_files(folder)
    kind = corpus_kind(folder)
    identity = _identity(paths, kind)
    root = Path(cache) if cache is not None else cache_root() / "encoded"
    root.mkdir(parents=True, exist_ok=True)
    final = root / _key(identity)
    if not _complete(final):
        with _build_lock(root / f".{final.name}.lock"):
            if not _complete(final):  # someone else may have built it while we waited
                if final.exists():  # left by hand-deletion of files: not ours to trust
                    shutil.rmtree(final)
                if fcntl is not None:
                    # Holding the lock, any temp folder of this key is a killed build's.
                    for stale in root.glob(f".{final.name}.*.tmp"):
                        shutil.rmtree(stale, ignore_errors=True)
                tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
                # mkdtemp makes 0700; the cache may be shared by users, so use the umask's.
                mask = os.umask(0)
                os.umask(mask)
                os.chmod(tmp, 0o777 & ~mask)
                try:
                    _build(paths, kind, identity, tmp)
                    _install(tmp, final)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    return _open(final, folder, kind)


def _open(final: Path, folder: Path, kind: str) -> Corpus:
    meta = json.loads((final / "meta.json").read_text())
    arrays = {}
    for split in SPLITS:
        x = np.load(final / f"{split}.npy", mmap_mode="r")
        if x.dtype != np.int32 or x.ndim != 1 or len(x) != meta["tokens"][split]:
            raise DataError(
                f"{final / f'{split}.npy'} is not the array this cache folder describes; delete "
                f"{final} and load again"
            )
        arrays[split] = x
    vocab = Vocab.load(final / "vocab.txt")
    if len(vocab) != meta["n_token"]:
        raise DataError(f"{final / 'vocab.txt'} is damaged; delete {final} and load again")
    return Corpus(folder, kind, vocab, **arrays, md5=dict(meta["md5"]), cache_dir=final)


# ---------------------------------------------------------------------------------- batching


def micro_columns(
    batch_size: int, world_size: int, rank: int, accum_steps: int, micro: int
) -> tuple[int, int]:
    """Columns ``[start, stop)`` of the global batch for accumulation step ``micro`` of
    ``rank``: the batch cut into ``world_size * accum_steps`` contiguous parts whose sizes
    differ by at most one (60 streams on 8 GPUs: four parts of 7 and four of 8), so every
    column is used by exactly one rank and micro-batch. The training loss weighs each part by
    its size, which keeps the update the whole batch's."""
    if world_size < 1 or accum_steps < 1 or batch_size < 1:
        raise DataError(
            f"batch size {batch_size}, world size {world_size} and accumulation steps "
            f"{accum_steps} must all be at least 1"
        )
    if not 0 <= rank < world_size or not 0 <= micro < accum_steps:
        raise DataError(
            f"rank {rank} / micro-batch {micro} out of range for world size {world_size} and "
            f"{accum_steps} accumulation steps"
        )
    parts = world_size * accum_steps
    if parts > batch_size:
        raise DataError(
            f"batch size {batch_size} does not split into {world_size} processes x "
            f"{accum_steps} accumulation steps: some would get no stream; use at most "
            f"{batch_size} processes x accumulation steps"
        )
    part = rank * accum_steps + micro
    return part * batch_size // parts, (part + 1) * batch_size // parts


class OrderedStream:
    """A split as ``batch_size`` contiguous token streams, in segments (``LMOrderedIterator``).

    The tokens are cut to ``n_step = len(tokens) // batch_size`` per stream; stream ``b`` is
    ``tokens[b * n_step:(b + 1) * n_step]`` and ``x`` is the ``(n_step, batch_size)`` view of
    them (no copy: with a memory-mapped split, nothing is read until a segment is asked for).
    """

    def __init__(self, tokens: np.ndarray, batch_size: int) -> None:
        if tokens.ndim != 1:
            raise DataError(f"tokens must be 1-D, got shape {tokens.shape}")
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size}")
        n_step = len(tokens) // batch_size
        if n_step < 2:
            raise DataError(
                f"{len(tokens)} tokens cannot make {batch_size} streams of at least 2 tokens "
                "(an input and its next-word target); use a smaller batch size or more text"
            )
        self.x: np.ndarray = tokens[: n_step * batch_size].reshape(batch_size, n_step).T
        self.n_step = n_step

    @classmethod
    def _of_view(cls, x: np.ndarray) -> OrderedStream:
        self = cls.__new__(cls)
        self.x, self.n_step = x, x.shape[0]
        return self

    @property
    def batch_size(self) -> int:
        """The number of streams (columns) of this stream set."""
        return self.x.shape[1]

    def columns(self, start: int, stop: int) -> OrderedStream:
        """The streams ``[start, stop)`` of this one (a view), e.g. from :func:`micro_columns`."""
        if not 0 <= start < stop <= self.batch_size:
            raise DataError(
                f"columns [{start}, {stop}) are not a non-empty range of the {self.batch_size} "
                "streams"
            )
        return OrderedStream._of_view(self.x[:, start:stop])

    def num_segments(self, tgt_len: int) -> int:
        """Segments per pass: the original steps ``i`` over ``range(0, n_step - 1, tgt_len)``."""
        if tgt_len < 1:
            raise DataError(f"tgt_len must be at least 1, got {tgt_len}")
        return len(range(0, self.n_step - 1, tgt_len))

    def segment(
        self, k: int, tgt_len: int, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Segment ``k`` as int64 ``(data, target)``, each ``(seq_len, batch_size)``:
        ``data = x[i:i + seq_len]``, ``target = x[i + 1:i + 1 + seq_len]``, ``i = k * tgt_len``,
        ``seq_len = min(tgt_len, n_step - 1 - i)``. Only these rows are copied (once; data and
        target are views of one tensor)."""
        n = self.num_segments(tgt_len)
        if not 0 <= k < n:
            raise DataError(f"segment {k} out of range: this stream has {n} of {tgt_len} tokens")
        i = k * tgt_len
        seq_len = min(tgt_len, self.n_step - 1 - i)
        rows = torch.from_numpy(np.ascontiguousarray(self.x[i : i + seq_len + 1], dtype=np.int64))
        if device is not None:
            rows = rows.to(device)
        return rows[:-1], rows[1:]

    def iter_segments(
        self, tgt_len: int, start: int = 0, device: torch.device | str | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`segment` ``k`` for ``k = start, start + 1, ...`` to the end of the pass
        (``start`` lets a resumed run continue mid-epoch)."""
        for k in range(start, self.num_segments(tgt_len)):
            yield self.segment(k, tgt_len, device)
