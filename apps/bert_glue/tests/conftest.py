"""What the tests share: a corpus and GLUE folders they write themselves (never the real data),
one tiny pretrained checkpoint, a tiny GPT-2-style BPE for the fairseq backend's tests
(``tests/fairseq_backend``), and one CPU thread so that two test processes fit 2 cores."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from adan_repro.testing import write_markov_corpus

# A model and budget small enough for seconds on one core (presets "micro").
MICRO = ["--scale", "micro", "--threads", "1", "--log-interval", "1000"]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_corpus(folder: Path, lines: int = 600) -> Path:
    """A corpus of Markov-chain sentences, one document per line."""
    src = write_markov_corpus(folder, {"train": lines}) / "ptb.train.txt"
    return src


def _sentence(rng: random.Random, words: list[str], n: int) -> str:
    return " ".join(rng.choice(words) for _ in range(n))


def write_glue(folder: Path, n_train: int = 48, n_dev: int = 24, seed: int = 0) -> Path:
    """CoLA (no header), SST-2, STS-B and RTE in GLUE's TSV layout, with a learnable signal
    (a class word decides the label), in ``folder``."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(30)]

    def label_text(label: int) -> str:
        return _sentence(rng, words, rng.randint(3, 8)) + (" good" if label else " bad")

    def cola(n):
        rows = []
        for i in range(n):
            y = i % 2
            rows.append(f"src{i}\t{y}\t\t{label_text(y)}")
        return "\n".join(rows) + "\n"

    def sst(n):
        return "sentence\tlabel\n" + "".join(f"{label_text(i % 2)}\t{i % 2}\n" for i in range(n))

    def stsb(n):
        columns = "index genre filename year old_index source1 source2 sentence1 sentence2 score"
        head = columns.replace(" ", "\t") + "\n"
        rows = []
        for i in range(n):
            score = round(5 * (i % 6) / 5, 1)
            a = _sentence(rng, words, 5)
            b = " ".join(a.split()[: 1 + i % 5]) + " " + _sentence(rng, words, 5 - i % 5)
            rows.append(f"{i}\tmain\tx\t2012\t{i}\tnone\tnone\t{a}\t{b}\t{score}\n")
        return head + "".join(rows)

    def rte(n):
        names = ["entailment", "not_entailment"]
        head = "index\tsentence1\tsentence2\tlabel\n"
        return head + "".join(
            f"{i}\t{_sentence(rng, words, 6)}\t{label_text(1 - i % 2)}\t{names[i % 2]}\n"
            for i in range(n)
        )

    for task, make in (("CoLA", cola), ("SST-2", sst), ("STS-B", stsb), ("RTE", rte)):
        d = Path(folder) / task
        d.mkdir(parents=True, exist_ok=True)
        (d / "train.tsv").write_text(make(n_train))
        (d / "dev.tsv").write_text(make(n_dev))
    return Path(folder)


@pytest.fixture
def glue_dir(tmp_path: Path) -> Path:
    return write_glue(tmp_path / "glue")


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory) -> Path:
    """``final/`` of one micro pretraining run (Adan recipe), shared by the fine-tuning tests."""
    from adan_bert.pretrain import build_parser, pretrain

    root = tmp_path_factory.mktemp("pretrained")
    corpus = write_corpus(root / "corpus")
    args = build_parser().parse_args(
        ["--corpus", str(corpus), "--out", str(root / "run"), "--cache-dir", str(root / "cache"),
         "--max-steps", "10", *MICRO]
    )  # fmt: skip
    before = torch.get_num_threads()
    pretrain(args, log=lambda m: None)
    torch.set_num_threads(before)
    return root / "run" / "final"


# --------------------------------------------------------------------------------------------
# The fairseq backend (tests/fairseq_backend; fairseq is imported only when these are used).

N_MERGED_WORDS = 60  # the corpus's most frequent words become single tokens


def write_bpe(folder: Path, texts: list[str]) -> Path:
    """A byte-level BPE in GPT-2's file format (``encoder.json``, ``vocab.bpe``) and a fairseq
    ``dict.txt`` over its ids: the 256 byte symbols, then merges that spell out the most
    frequent words of ``texts`` (with GPT-2's leading-space marker) letter by letter."""
    from fairseq.data.encoders.gpt2_bpe_utils import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    encoder = {s: i for i, s in enumerate(symbols)}
    merges: list[tuple[str, str]] = []
    words = Counter(w for t in texts for w in t.split())
    for word, _ in words.most_common(N_MERGED_WORDS):
        piece = "Ġ" + word
        for k in range(1, len(piece)):
            pair = (piece[:k], piece[k])
            if pair not in merges:
                merges.append(pair)
                encoder.setdefault(piece[: k + 1], len(encoder))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "encoder.json").write_text(json.dumps(encoder))
    (folder / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    (folder / "dict.txt").write_text("".join(f"{i} {1000 - i % 7}\n" for i in encoder.values()))
    return folder


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    """A corpus, GLUE folders and a BPE made from them, shared by every test (read-only)."""
    root = tmp_path_factory.mktemp("fairseq_data")
    corpus = write_corpus(root / "corpus", lines=400)
    glue_dir = write_glue(root / "glue")
    texts = corpus.read_text().splitlines()
    for task in ("CoLA", "SST-2", "STS-B", "RTE"):
        texts += (glue_dir / task / "train.tsv").read_text().replace("\t", " ").splitlines()
    return {"corpus": corpus, "glue": glue_dir, "bpe": write_bpe(root / "bpe", texts)}
