"""Helpers for the apps' tests: a word corpus a language model can learn in seconds, and a
run killed the hard way after its first checkpoint.

Both are what a test of an app needs and no app's code: the corpus is plain text in the usual
``ptb.{train,valid,test}.txt`` layout, the kill works on any command that writes an adan-repro
run folder.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import rundir

MARKOV_WORDS = [f"w{i}" for i in range(39)] + ["<unk>"]


def write_markov_corpus(
    folder: Path, lines: Mapping[str, int] | None = None, seed: int = 0
) -> Path:
    """``ptb.{train,valid,test}.txt`` in ``folder``: sentences of 6 to 16 words from a fixed
    random Markov chain over :data:`MARKOV_WORDS`, where each word has 3 likely successors
    (chance is perplexity ~40, the chain allows about 3). Every word occurs in train."""
    rng = random.Random(seed)
    successors = {w: rng.sample(MARKOV_WORDS, 3) for w in MARKOV_WORDS}
    lines = lines or {"train": 1500, "valid": 60, "test": 60}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in lines.items():
        out = []
        for _ in range(n):
            w = rng.choice(MARKOV_WORDS)
            sentence = [w]
            for _ in range(rng.randint(5, 15)):
                w = rng.choice(successors[w])
                sentence.append(w)
            out.append(" " + " ".join(sentence) + " ")
        if split == "train":
            out.append(" " + " ".join(MARKOV_WORDS) + " ")
        (folder / f"ptb.{split}.txt").write_text("\n".join(out) + "\n")
    return folder


def kill_after_first_checkpoint(
    command: Sequence[str],
    run_dir: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> int:
    """Start ``command`` (which trains into ``run_dir``), SIGKILL it as soon as the run folder
    points at a checkpoint, and return that checkpoint's step. Raises AssertionError when the
    run ends before a checkpoint or finishes before the kill (make it longer then)."""
    proc = subprocess.Popen(list(command), env=dict(env) if env is not None else None,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + timeout
    try:
        while not (Path(run_dir) / rundir.POINTER).exists():
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.time() < deadline, f"no checkpoint within {timeout} s"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not rundir.is_done(run_dir), "killed too late to test a resume; make the run longer"
    return rundir.latest_checkpoint(run_dir).step
