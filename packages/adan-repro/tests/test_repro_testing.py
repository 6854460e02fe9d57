"""The test helpers the apps share."""

from __future__ import annotations

import collections
import sys

import pytest
from adan_repro import rundir
from adan_repro.testing import MARKOV_WORDS, kill_after_first_checkpoint, write_markov_corpus


def test_markov_corpus_layout_and_predictability(tmp_path):
    d = write_markov_corpus(tmp_path / "c", {"train": 200, "valid": 10, "test": 10})
    texts = {s: (d / f"ptb.{s}.txt").read_text().split() for s in ("train", "valid", "test")}
    assert set(texts["train"]) == set(MARKOV_WORDS)  # every word in train
    assert set(texts["valid"]) | set(texts["test"]) <= set(texts["train"])
    follow = collections.defaultdict(set)
    for line in (d / "ptb.train.txt").read_text().splitlines()[:-1]:  # the chain's sentences
        words = line.split()
        for a, b in zip(words, words[1:]):
            follow[a].add(b)
    assert max(len(v) for v in follow.values()) <= 3  # 3 successors: learnable
    again = write_markov_corpus(tmp_path / "d", {"train": 200, "valid": 10, "test": 10})
    assert (again / "ptb.train.txt").read_text() == (d / "ptb.train.txt").read_text()


SCRIPT = """
import sys, time
from adan_repro import rundir
run = rundir.prepare_dir(sys.argv[1])
for step in range(1, 1000):
    time.sleep(0.05)
    rundir.commit_checkpoint(run, step, lambda d: None)
rundir.write_done(run, {})
"""


def test_kill_after_first_checkpoint_stops_a_run(tmp_path):
    run = tmp_path / "run"
    step = kill_after_first_checkpoint([sys.executable, "-c", SCRIPT, str(run)], run)
    assert step >= 1 and not rundir.is_done(run)


def test_kill_reports_a_run_without_checkpoints(tmp_path):
    with pytest.raises(AssertionError, match="before its first checkpoint"):
        kill_after_first_checkpoint([sys.executable, "-c", "pass"], tmp_path / "none")
