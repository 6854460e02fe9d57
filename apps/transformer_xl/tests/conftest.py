"""A small corpus the tests write, and a model and schedule that train on it in seconds.

The corpus: sentences from a fixed random Markov chain over 40 words (each word has 3 likely
successors), so a language model can learn something quickly: chance is perplexity ~40, the
chain allows about 3.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

WORDS = [f"w{i}" for i in range(39)] + ["<unk>"]


def write_corpus(folder: Path, lines: dict[str, int] | None = None, seed: int = 0) -> Path:
    """ptb.{train,valid,test}.txt in ``folder``; every word of valid/test occurs in train."""
    rng = random.Random(seed)
    succ = {w: rng.sample(WORDS, 3) for w in WORDS}
    lines = lines or {"train": 600, "valid": 40, "test": 40}
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in lines.items():
        out = []
        for _ in range(n):
            w = rng.choice(WORDS)
            sent = [w]
            for _ in range(rng.randint(5, 15)):
                w = rng.choice(succ[w])
                sent.append(w)
            out.append(" " + " ".join(sent) + " ")
        if split == "train":
            out.append(" " + " ".join(WORDS) + " ")  # every word occurs in train
        (folder / f"ptb.{split}.txt").write_text("\n".join(out) + "\n")
    return folder


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test encodes into its own cache and never sees a real $TXL_DATA."""
    monkeypatch.setenv("ADAN_TXL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TXL_DATA", raising=False)


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "ptb")


# A one-layer 16-wide Transformer-XL with 8-token segments and memory: a second per 100 steps.
TINY = ["--preset", "quick", "--n-layer", "1", "--d-model", "16", "--n-head", "2",
        "--d-head", "8", "--d-inner", "32", "--tgt-len", "8", "--mem-len", "8",
        "--batch-size", "4", "--threads", "1", "--log-interval", "1000"]  # fmt: skip
