"""The evaluation CLI on checkpoints of ours and in the original's format, and its errors."""

from __future__ import annotations

import json

import pytest
import torch
from adan_repro import rundir
from adan_txl import evaluate
from adan_txl.convert import load_checkpoint, to_original
from adan_txl.data import DataError
from adan_txl.train import build_parser, train
from conftest import TINY, WORDS

PAPER = ["--protocol", "paper", "--tgt-len", "8", "--mem-len", "8", "--device", "cpu"]


@pytest.fixture
def trained(corpus_dir, tmp_path):
    argv = ["--data", str(corpus_dir), "--out", str(tmp_path / "run"), *TINY]
    args = build_parser().parse_args([*argv, "--max-step", "30", "--eval-interval", "30"])
    train(args, log=print)
    return tmp_path / "run"


def test_our_checkpoint_gives_the_runs_own_numbers(trained, corpus_dir, tmp_path):
    done = json.loads((trained / rundir.DONE).read_text())["protocols"]
    ckpt = trained / "final" / "model.pt"
    argv = ["--checkpoint", str(ckpt), "--data", str(corpus_dir), "--split", "valid", *PAPER,
            "--json", str(tmp_path / "r.json")]  # fmt: skip
    assert evaluate.main(argv) == 0
    got = json.loads((tmp_path / "r.json").read_text())["paper"]
    assert got["ppl"] == pytest.approx(done["paper"]["valid_ppl"], rel=1e-9)
    argv = ["--checkpoint", str(ckpt), "--data", str(corpus_dir), "--protocol", "standard",
            "--mem-len", "140", "--clamp-len", "100", "--tgt-len", "32",
            "--device", "cpu"]  # fmt: skip
    std = evaluate.run(evaluate.build_parser().parse_args(argv), log=print)
    assert std["standard"]["ppl"] == pytest.approx(done["standard"]["test_ppl"], rel=1e-9)


def test_an_original_format_state_dict_gives_the_same_losses(trained, corpus_dir, tmp_path):
    ours = load_checkpoint(trained / "final" / "model.pt")
    original = tmp_path / "original.pt"
    torch.save(to_original(ours), original)
    results = []
    for path in (trained / "final" / "model.pt", original):
        argv = ["--checkpoint", str(path), "--data", str(corpus_dir), *PAPER,
                "--cutoffs", *map(str, ours.cfg.cutoffs)]  # fmt: skip
        results.append(evaluate.run(evaluate.build_parser().parse_args(argv), log=print))
    assert results[0]["paper"]["loss"] == results[1]["paper"]["loss"]


def test_a_vocabulary_that_does_not_match_the_checkpoint_is_an_error(trained, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    text = " ".join(WORDS + ["extra", "words"]) + "\n"
    for split in ("train", "valid", "test"):
        (other / f"ptb.{split}.txt").write_text(text)
    argv = ["--checkpoint", str(trained / "final" / "model.pt"), "--data", str(other)]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert "vocabulary" in err and "43" in err and "41" in err


def test_missing_checkpoint_and_data_are_errors(trained, tmp_path, capsys):
    assert evaluate.main(["--checkpoint", str(tmp_path / "none.pt"), "--data", str(tmp_path)]) == 2
    assert "none.pt" in capsys.readouterr().err
    argv = ["--checkpoint", str(trained / "final" / "model.pt"), "--data", str(tmp_path / "no")]
    assert evaluate.main(argv) == 2
    assert "--data" in capsys.readouterr().err


def test_a_text_file_scores_like_the_split_it_copies(trained, corpus_dir, tmp_path):
    ckpt = str(trained / "final" / "model.pt")
    common = ["--checkpoint", ckpt, "--data", str(corpus_dir), *PAPER]
    split = evaluate.run(evaluate.build_parser().parse_args([*common, "--split", "valid"]), print)
    copy = tmp_path / "mine.txt"
    copy.write_text((corpus_dir / "ptb.valid.txt").read_text())
    mine = evaluate.run(evaluate.build_parser().parse_args([*common, "--file", str(copy)]), print)
    assert mine["paper"]["loss"] == split["paper"]["loss"]
    copy.write_text("w1 w2 unseenword\n")
    with pytest.raises(DataError, match="unseenword"):
        evaluate.run(evaluate.build_parser().parse_args([*common, "--file", str(copy)]), print)
