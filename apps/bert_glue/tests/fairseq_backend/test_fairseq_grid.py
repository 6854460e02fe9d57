"""``run.sh --backend fairseq``: the grid end to end on fairseq at the micro scale, with the
transformers backend's outputs (summary, plots, resume)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "fairseq",
    reason="fairseq is not installed: these tests run in the tox env bert-fairseq "
    "(tox -e bert-fairseq), see apps/bert_glue/README.md",
)

from adan_bert import grid  # noqa: E402
from adan_repro import rundir  # noqa: E402

APP = Path(__file__).resolve().parents[2]


def grid_args(data: dict, out: Path) -> list[str]:
    return [
        "--backend",
        "fairseq",
        "--scale",
        "micro",
        "--tasks",
        "CoLA",
        "--glue-dir",
        str(data["glue"]),
        "--bpe-dir",
        str(data["bpe"]),
        "--corpus",
        str(data["corpus"]),
        "--cache-dir",
        str(out / "cache"),
        "--out",
        str(out),
        "--jobs",
        "1",
        "--threads",
        "1",
        "--ft-opts",
        "adan",
        "--pretrain-args",
        "--seq-len 64 --max-steps 20 --eval-every 10 --adan-impl foreach",
        "--finetune-args",
        "--max-steps 8 --heldout-fraction 0.25 --adan-impl foreach",
    ]


def test_fairseq_grid_end_to_end_then_resumes(tiny_data, tmp_path, capsys):
    out = tmp_path / "grid"
    assert grid.main(grid_args(tiny_data, out)) == 0
    # The grid builds each data folder once, before the runs; the runs find it ready.
    lines = capsys.readouterr().out.splitlines()
    built = [x for x in lines if x.startswith("[fairseq-data]") and "up to date" not in x]
    assert len(built) == 2, built  # the corpus, then CoLA
    for opt in ("adam", "adan"):
        run = out / "runs" / "pretrain" / opt / "seed1"
        assert rundir.read_config(run)["backend"] == "fairseq"
        assert (run / rundir.FINAL / "checkpoint.pt").is_file()
        assert "is up to date" in (run / rundir.LOG).read_text()
    finetuned = sorted(out.glob("runs/CoLA.pre-*/adan/seed1/done.json"))
    assert len(finetuned) == 2
    for path in finetuned:
        assert "is up to date" in (path.parent / rundir.LOG).read_text()
        assert {"paper", "clean", "last"} <= set(json.loads(path.read_text()))
    summary = (out / "summary.md").read_text()
    assert "fairseq" in summary and "CoLA" in summary
    assert (out / "summary.csv").is_file() and list(out.glob("*.png"))
    assert grid.main(grid_args(tiny_data, out)) == 0  # everything finished: nothing reruns
    assert "0 trained" in capsys.readouterr().out


def test_run_sh_backend_fairseq_dry_run(tiny_data, tmp_path):
    cmd = ["bash", str(APP / "run.sh"), *grid_args(tiny_data, tmp_path / "dry"), "--dry-run"]
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "adan_bert.fairseq_train pretrain" in done.stdout
    assert "adan_bert.fairseq_train finetune" in done.stdout


def test_fairseq_grid_needs_the_bpe_files(tiny_data, tmp_path, capsys):
    argv = grid_args(tiny_data, tmp_path / "nobpe")
    argv[argv.index("--bpe-dir") + 1] = str(tmp_path / "missing")
    assert grid.main(argv) == 2
    assert "encoder.json" in capsys.readouterr().err
