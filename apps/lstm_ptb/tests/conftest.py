"""A small corpus the tests write: sentences from a fixed random Markov chain over 40 words,
so that a language model can learn something in seconds."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

WORDS = [f"w{i}" for i in range(39)] + ["<unk>"]


def write_corpus(folder: Path, lines: dict[str, int] | None = None, seed: int = 0) -> Path:
    """ptb.{train,valid,test}.txt in ``folder``; every word of valid/test occurs in train."""
    rng = random.Random(seed)
    # Each word has 3 likely successors: the chain is easy to learn, hard to guess blind.
    succ = {w: rng.sample(WORDS, 3) for w in WORDS}
    lines = lines or {"train": 1500, "valid": 60, "test": 60}
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


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "ptb")


# A model and schedule small enough for seconds on one CPU core.
TINY = ["--preset", "quick", "--emsize", "16", "--nhid", "24", "--threads", "1",
        "--log-interval", "1000"]  # fmt: skip
