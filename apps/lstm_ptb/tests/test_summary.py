"""The grid summary on hand-made run folders: protocols, differences, references, files."""

from __future__ import annotations

import csv
import json

import pytest
from adan_lstm import summary
from adan_lstm.train import EVAL_HEADER
from adan_repro import rundir


def fake_run(out, task_n, opt, seed, valid, test, compat=False, done=True, epochs=None):
    d = out / "runs" / (f"L{task_n}" + ("-compat" if compat else "")) / opt / f"seed{seed}"
    d.mkdir(parents=True)
    settings = {"nlayers": task_n, "emsize": 400, "nhid": 1150, "epochs": epochs or len(valid),
                "when": [2], "train_tokens": None, "weight_drop_compat": compat}  # fmt: skip
    config = {"task": f"L{task_n}", "optimizer": opt, "seed": seed, "preset": "paper",
              "settings": settings, "optimizer_kwargs": {"lr": 0.01}}  # fmt: skip
    (d / rundir.CONFIG).write_text(json.dumps(config))
    rows = [
        {"step": i + 1, "lr": 0.01, "train_ppl": v + 10, "valid_ppl": v, "test_ppl": t,
         "train_tokens_per_s": 1000.0, "train_s": 1.0, "eval_s": 1.0}
        for i, (v, t) in enumerate(zip(valid, test))
    ]  # fmt: skip
    rundir.write_eval(d / rundir.EVAL, EVAL_HEADER, rows)
    if done:
        rundir.write_done(d, {})
    return d


@pytest.fixture
def grid(tmp_path):
    out = tmp_path / "grid"
    # adam: best test at epoch 3, best valid at epoch 2.
    fake_run(out, 1, "adam", 1, [120, 100, 101], [115, 99, 96])
    fake_run(out, 1, "adam", 2, [118, 102, 100], [114, 101, 98])
    fake_run(out, 1, "adan", 1, [110, 90, 91], [105, 89, 88])
    fake_run(out, 1, "adan", 2, [111, 92, 93], [106, 90, 87])
    return out


def test_protocol_table_and_welch_difference(grid):
    table = summary.protocol_rows(summary.load_runs(grid), "adam")
    by = {(r["optimizer"], r["protocol"]): r for r in table}
    # paper: best test per seed; clean: test at the best valid epoch.
    assert by[("adam", "paper")]["mean_test_ppl"] == pytest.approx((96 + 98) / 2)
    assert by[("adam", "clean")]["mean_test_ppl"] == pytest.approx((99 + 98) / 2)
    assert by[("adan", "paper")]["mean_test_ppl"] == pytest.approx((88 + 87) / 2)
    assert by[("adan", "clean")]["mean_test_ppl"] == pytest.approx((89 + 90) / 2)
    assert by[("adam", "clean")]["mean_epoch"] == pytest.approx(2.5)
    d = by[("adan", "paper")]
    assert d["diff"] == pytest.approx(87.5 - 97.0)
    assert d["diff_ci_low"] < d["diff"] < d["diff_ci_high"] < 0 and d["p"] < 0.05
    assert by[("adam", "paper")]["diff"] == ""  # the baseline is not compared with itself


def test_writes_every_file_with_references(grid, tmp_path):
    curves = tmp_path / "curves.json"
    curves.write_text(json.dumps({
        "adam_L1": {"test_ppl_per_epoch": [300.0, 200.0, 150.0, 120.0],
                    "train_ppl_per_epoch": [400.0, 250.0, 200.0, 150.0]},
        "adabelief_L1": {"test_ppl_per_epoch": [280.0, 190.0], "train_ppl_per_epoch": [1, 2]},
    }))  # fmt: skip
    summary.write(grid, "adam", "T", curves)
    for name in ("summary.md", "summary.csv", "curves.csv", "L1_valid.png", "L1_test.png"):
        assert (grid / name).stat().st_size > 0
    md = (grid / "summary.md").read_text()
    assert "| L1 | adan − adam | paper |" in md and "| L1 | adan − adam | clean |" in md
    assert "adan is better than adam" in md
    # Our adam seed mean at epoch 1 is (115 + 114) / 2 = 114.5 against 300 published.
    assert "| 1 | 114.50 | 300.00 | -61.8% |" in md
    assert "| L1 | adam | 1000 | 6 |" in md  # median tokens/s over 2 seeds x 3 epochs
    with open(grid / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["optimizer"], r["protocol"]) for r in rows} == {
        ("adam", "paper"),
        ("adam", "clean"),
        ("adan", "paper"),
        ("adan", "clean"),
    }
    with open(grid / "curves.csv") as f:
        assert len(list(csv.DictReader(f))) == 12  # 4 runs x 3 epochs


def test_unfinished_runs_are_named_and_cut_to_common_epochs(tmp_path):
    out = tmp_path / "g"
    fake_run(out, 1, "adam", 141, [120, 100, 101], [115, 99, 96], compat=True, done=False)
    fake_run(out, 1, "adam", 142, [121, 103], [116, 97], compat=True, done=False, epochs=3)
    summary.write(out, "adam", "T")
    md = (out / "summary.md").read_text()
    assert "L1-compat/adam/seed141 (3/3 epochs)" in md and "seed142 (2/3 epochs)" in md
    table = summary.protocol_rows(summary.load_runs(out), "adam")
    paper = next(r for r in table if r["protocol"] == "paper")
    assert paper["epochs"] == 2 and paper["mean_test_ppl"] == pytest.approx((99 + 97) / 2)
    assert "frozen raw W_hh" in md


def test_nothing_to_summarize_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no evaluated runs"):
        summary.write(tmp_path, "adam")
    with pytest.raises(ValueError, match="not found"):
        summary.load_adabelief(tmp_path / "missing.json")


def test_a_failed_write_leaves_the_old_summary(grid, monkeypatch):
    summary.write(grid, "adam", "first")
    before = (grid / "summary.md").read_text()

    def broken(*a, **k):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(summary, "draw_task", broken)
    with pytest.raises(RuntimeError):
        summary.write(grid, "adam", "second")
    assert (grid / "summary.md").read_text() == before


def test_throughput_measures_every_optimizer(tmp_path):
    from adan_lstm import throughput

    out = tmp_path / "tp.csv"
    argv = ["--preset", "quick", "--vocab", "200", "--steps", "1", "--rounds", "1",
            "--warmup", "1", "--threads", "1", "--out", str(out)]  # fmt: skip
    assert throughput.main(argv) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["optimizer"] for r in rows] == ["adam", "adan"]
    for r in rows:
        assert float(r["tokens_per_s"]) > 0 and 0 < float(r["optimizer_share"]) < 1
        assert float(r["eval_tokens_per_s_b1"]) > 0 and float(r["eval_tokens_per_s_b10"]) > 0
    assert float(rows[0]["step_vs_first"]) == 1.0
