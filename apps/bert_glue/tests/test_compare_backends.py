"""compare_backends on made-up finished runs: one plot, every point in the CSV, the table's
gaps computed from the final rows."""

from __future__ import annotations

import csv

from adan_bert import compare_backends
from adan_repro import rundir


def fake_run(folder, losses):
    folder.mkdir(parents=True)
    rows = [{"step": 10 * (i + 1), "valid_loss": v} for i, v in enumerate(losses)]
    rundir.write_eval(folder / rundir.EVAL, ("step", "valid_loss"), rows)
    rundir.write_done(folder, {"steps": 10 * len(losses)})
    return folder


def test_curves_table_and_plot(tmp_path, capsys):
    runs = {
        ("transformers", "adam"): [7.0, 6.0],
        ("transformers", "adan"): [6.5, 5.5],
        ("fairseq", "adam"): [7.1, 6.25],
        ("fairseq", "adan"): [6.4, 5.0],
    }
    argv = ["--out", str(tmp_path / "out")]
    for (backend, recipe), losses in runs.items():
        argv += ["--run", backend, recipe, str(fake_run(tmp_path / backend / recipe, losses))]
    argv += ["--run", "fairseq", "adan", str(fake_run(tmp_path / "seed2", [6.0, 5.5]))]
    assert compare_backends.main(argv) == 0
    out = tmp_path / "out"
    assert (out / "backends.png").stat().st_size > 1000
    with open(out / "backends.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 10
    table = (out / "backends.md").read_text()
    assert "| transformers | 6.0000 | 5.5000 | -0.5000 |" in table
    # fairseq adan has two seeds (5.0 and 5.5): their mean, then each
    assert "| fairseq | 6.2500 | 5.2500 (5.0000, 5.5000) | -1.0000 |" in table
    assert "adam +0.2500, adan -0.2500" in table


def test_unfinished_run_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    argv = ["--out", str(tmp_path / "o"), "--run", "fairseq", "adan", str(tmp_path / "run")]
    assert compare_backends.main(argv) == 2
    assert "not a finished run" in capsys.readouterr().err
