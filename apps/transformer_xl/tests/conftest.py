"""The corpus the tests write (adan_repro.testing's Markov-chain text: chance is perplexity ~40,
the chain allows about 3) and a model and schedule that train on it in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from adan_repro.testing import MARKOV_WORDS as WORDS  # noqa: F401 (tests import it from here)
from adan_repro.testing import write_markov_corpus


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: extra threads only contend for the shared cores (runs that take
    ``--threads`` set their own)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test encodes into its own cache and never sees a real $TXL_DATA."""
    monkeypatch.setenv("ADAN_TXL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TXL_DATA", raising=False)


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    return write_markov_corpus(tmp_path / "ptb", {"train": 600, "valid": 40, "test": 40})


# A one-layer 16-wide Transformer-XL with 8-token segments and memory: a second per 100 steps.
# CPU even where a GPU exists: the gloo and bitwise-resume tests need it (CUDA tests say so).
TINY = ["--preset", "quick", "--n-layer", "1", "--d-model", "16", "--n-head", "2",
        "--d-head", "8", "--d-inner", "32", "--tgt-len", "8", "--mem-len", "8",
        "--batch-size", "4", "--threads", "1", "--log-interval", "1000",
        "--device", "cpu"]  # fmt: skip
