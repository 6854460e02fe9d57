"""The grid end to end at the micro scale: pretraining, fine-tuning, summary; dry run; errors."""

from __future__ import annotations

import csv
import json

from adan_bert import grid
from adan_repro import rundir
from conftest import write_corpus, write_glue


def _argv(tmp_path, *extra):
    corpus = write_corpus(tmp_path / "corpus")
    glue = write_glue(tmp_path / "glue")
    return ["--scale", "micro", "--glue-dir", str(glue), "--corpus", str(corpus),
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
            "--tasks", "rte", "--pretrain-seeds", "1", "--seeds", "1", "--threads", "1",
            "--log-interval", "1000", *extra]  # fmt: skip


def test_grid_pretrains_fine_tunes_and_summarizes(tmp_path, capsys):
    assert grid.main(_argv(tmp_path, "--ft-opts", "adan", "--jobs", "2")) == 0
    out = tmp_path / "out"
    for opt in ("adam", "adan"):
        assert rundir.is_done(out / "runs" / "pretrain" / opt / "seed1")
        ft = out / "runs" / f"RTE.pre-{opt}-1" / "adan" / "seed1"
        assert rundir.is_done(ft)
        config = json.loads((ft / rundir.CONFIG).read_text())
        assert config["pretrain_optimizer"] == opt and config["glue_task"] == "RTE"
        assert config["checkpoint"] == str(out / "runs" / "pretrain" / opt / "seed1" / "final")
    with open(out / "glue.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["pipeline"] for r in rows} == {"adam→adan", "adan→adan"}
    assert {r["protocol"] for r in rows} == {"paper", "clean", "last"}
    assert "say nothing about the paper" in (out / "summary.md").read_text()
    assert (out / "pretrain" / "pretrain.png").stat().st_size > 1000
    # the same command again: everything is finished, nothing is retrained
    capsys.readouterr()
    assert grid.main(_argv(tmp_path, "--ft-opts", "adan", "--jobs", "2")) == 0
    assert "0 trained" in capsys.readouterr().out


def test_dry_run_lists_every_run_and_trains_nothing(tmp_path, capsys):
    assert grid.main(_argv(tmp_path, "--dry-run", "--seeds", "1-2", "--tasks", "CoLA", "RTE")) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if "python -m adan_bert" in x]
    # 2 pretraining runs; 2 checkpoints x 2 tasks x 2 recipes x 2 seeds fine-tuning runs
    assert sum("adan_bert.pretrain" in x for x in lines) == 2
    assert sum("adan_bert.finetune" in x for x in lines) == 16
    assert not (tmp_path / "out" / "runs").exists()


def test_grid_errors(tmp_path, capsys):
    argv = _argv(tmp_path)
    assert grid.main([*argv, "--glue-dir", str(tmp_path / "missing")]) == 2
    assert "GLUE folder" in capsys.readouterr().err
    assert grid.main([*argv, "--tasks", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert grid.main([*argv, "--shard", "3/2"]) == 2
    assert "shard" in capsys.readouterr().err.lower()
    i = argv.index("--corpus")
    no_corpus = argv[:i] + argv[i + 2 :]
    assert grid.main([*no_corpus, "--glue-dir", "hub"]) == 2
    assert "--corpus" in capsys.readouterr().err
