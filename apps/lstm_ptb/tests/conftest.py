"""The corpus the tests write (adan_repro.testing's Markov-chain text, learnable in seconds) and
a model small enough for seconds on one core."""

from __future__ import annotations

from pathlib import Path

import pytest
from adan_repro.testing import MARKOV_WORDS as WORDS  # noqa: F401 (tests import it from here)
from adan_repro.testing import write_markov_corpus as write_corpus


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "ptb")


# A model and schedule small enough for seconds on one CPU core.
TINY = ["--preset", "quick", "--emsize", "16", "--nhid", "24", "--threads", "1",
        "--log-interval", "1000"]  # fmt: skip
