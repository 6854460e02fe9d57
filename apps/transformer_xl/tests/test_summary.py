"""The grid summary on hand-made run folders whose expected numbers are known: files and plots,
steps to the baseline's final valid ppl, both protocols, the paper's logs, filters, errors."""

from __future__ import annotations

import csv
import math

import matplotlib.image
import numpy as np
import pytest
from adan_repro import rundir
from adan_txl import summary
from adan_txl.presets import RUNS, scale_settings
from adan_txl.train import EVAL_HEADER
from scipy import stats

STEPS = (100, 200, 300, 400)
PAPER_SETTINGS = {"tgt_len": 70, "mem_len": 70, "clamp_len": -1, "same_length": False}
STANDARD_SETTINGS = {"tgt_len": 64, "mem_len": 640, "clamp_len": 400, "same_length": True}
# adam's final valid ppl averages to exactly 100.0: the target of the adan seeds.
ADAM_VALID = {1: [200, 150, 120, 100], 2: [210, 160, 125, 104], 3: [190, 140, 118, 96]}
# First step at or below 100: 300, 200 and 300 (seed 3 lands on 100.0 exactly: "at or below").
ADAN_VALID = {1: [180, 120, 99.5, 90], 2: [170, 99, 95, 88], 3: [175, 115, 100.0, 92]}
ADAM_TEST = {"paper": [30.0, 31.0, 32.5], "standard": [29.0, 30.2, 31.1]}
ADAN_TEST = {"paper": [28.0, 28.4, 29.1], "standard": [27.5, 27.6, 28.3]}


def protocols(paper_test: float, standard_test: float, paper=PAPER_SETTINGS) -> dict:
    """done.json's protocols; each valid ppl is the test ppl - 1 so both are checkable."""
    out = {}
    for name, test, settings in (
        ("paper", paper_test, paper),
        ("standard", standard_test, STANDARD_SETTINGS),
    ):
        out[name] = {**settings, "valid_ppl": test - 1, "valid_loss": math.log(test - 1),
                     "test_ppl": test, "test_loss": math.log(test)}  # fmt: skip
    return out


def fake_run(out, task, opt, seed, valid, *, steps=STEPS, max_step=400, done=None,
             preset="ptb-scaled", run=None, speed=1000.0):  # fmt: skip
    """A run folder as train.py leaves it: config.json, eval.csv and (``done``) done.json."""
    d = out / "runs" / task / opt / f"seed{seed}"
    d.mkdir(parents=True)
    settings = scale_settings(preset, max_step=max_step, eval_interval=100).to_dict()
    kwargs = {"lr": 1e-3, "betas": [0.9, 0.92, 0.99], "eps": 1e-8, "weight_decay": 0.02}
    config = {"preset": preset, "run": run, "optimizer": opt, "seed": seed,
              "settings": settings, "warmup_step": 7, "model": {}, "optimizer_kwargs": kwargs,
              "data_md5": {}, "vocab": 10_000}  # fmt: skip
    rundir.check_or_write_config(d, config)
    rows = [
        {"step": s, "epoch": 1, "lr": 1e-3, "train_loss": math.log(v + 5), "train_ppl": v + 5,
         "valid_loss": math.log(v), "valid_ppl": v, "train_tokens_per_s": speed * (i + 1),
         "train_s": 1.0, "eval_s": 0.5}
        for i, (s, v) in enumerate(zip(steps, valid))
    ]  # fmt: skip
    rundir.write_eval(d / rundir.EVAL, EVAL_HEADER, rows)
    if done is not None:
        rundir.write_done(d, {"steps": max_step, "best_step": steps[-1], "protocols": done})
    return d


@pytest.fixture
def grid(tmp_path, monkeypatch):
    monkeypatch.setattr(summary, "PAPER_LOGS", tmp_path / "no-logs.csv")
    out = tmp_path / "grid"
    for seed in (1, 2, 3):
        i = seed - 1
        fake_run(
            out,
            "ptb-scaled",
            "adam",
            seed,
            ADAM_VALID[seed],
            done=protocols(ADAM_TEST["paper"][i], ADAM_TEST["standard"][i]),
        )
        fake_run(out, "ptb-scaled", "adan", seed, ADAN_VALID[seed],
                 done=protocols(ADAN_TEST["paper"][i], ADAN_TEST["standard"][i]))  # fmt: skip
    return out


def read_summary(out) -> list[dict]:
    with open(out / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def pick(rows: list[dict], **match) -> list[dict]:
    return [r for r in rows if all(r[k] == str(v) for k, v in match.items())]


def one(rows: list[dict], **match) -> dict:
    found = pick(rows, **match)
    assert len(found) == 1, (match, found)
    return found[0]


def welch_scipy(a, b) -> tuple[float, float, float]:
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    return float(ci.low), float(ci.high), float(res.pvalue)


@pytest.fixture
def drawn(monkeypatch):
    """Every draw_task call's (task, curves, references), the plot still drawn for real."""
    calls = {}
    real = summary.draw_task

    def record(task, curves, path, confidence, references, *args):
        calls[task] = (curves, list(references))
        real(task, curves, path, confidence, references, *args)

    monkeypatch.setattr(summary, "draw_task", record)
    return calls


def test_writes_every_file_with_valid_pngs(grid):
    summary.write(grid, "adam", "T")
    for name in ("summary.md", "summary.csv", "curves.csv"):
        assert (grid / name).stat().st_size > 0
    png = grid / "ptb-scaled_valid.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert not list(grid.glob(".*.tmp"))  # the atomic batch left no temp file behind
    with open(grid / "curves.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["task", "optimizer", "seed", *EVAL_HEADER, "finished"]
        rows = list(reader)
    assert len(rows) == 6 * len(STEPS)
    seed2 = [float(r["valid_ppl"]) for r in pick(rows, optimizer="adan", seed=2)]
    assert seed2 == ADAN_VALID[2]
    md = (grid / "summary.md").read_text()
    for heading in ("## Valid", "## Steps to reach", "## Test perplexity under both",
                    "## Training speed", "## Runs"):  # fmt: skip
        assert heading in md
    assert "## Against the paper" not in md  # ptb-scaled is not one of the paper's tasks
    assert "[ptb-scaled_valid.png](ptb-scaled_valid.png)" in md
    assert "adan_txl.throughput" in md
    # Speeds 1000, 2000, 3000, 4000 in every run: median 2500 over 12 windows.
    speed = one(read_summary(grid), optimizer="adan", metric="median_train_tokens_per_s")
    assert float(speed["value"]) == 2500 and "12 eval windows" in speed["detail"]
    assert "lr 0.001, betas [0.9, 0.92, 0.99], eps 1e-08, weight_decay 0.02" in md
    assert "warm-up 7" in md and "seeds [1, 2, 3]" in md


def test_valid_section_final_values_and_welch(grid):
    summary.write(grid, "adam", "T")
    rows = read_summary(grid)
    adam_final = np.array([v[-1] for v in ADAM_VALID.values()], dtype=float)
    adan_final = np.array([v[-1] for v in ADAN_VALID.values()], dtype=float)
    final = one(rows, section="valid", optimizer="adan", metric="final_valid_ppl")
    assert int(final["step"]) == 400 and int(final["n_seeds"]) == 3
    assert float(final["value"]) == pytest.approx(adan_final.mean())
    assert float(final["std"]) == pytest.approx(adan_final.std())  # population std
    low, high, p = welch_scipy(adan_final, adam_final)
    assert float(final["diff"]) == pytest.approx(adan_final.mean() - adam_final.mean())
    assert float(final["diff_ci_low"]) == pytest.approx(low, rel=1e-6)
    assert float(final["diff_ci_high"]) == pytest.approx(high, rel=1e-6)
    assert float(final["p"]) == pytest.approx(p, rel=1e-3)
    assert one(rows, section="valid", optimizer="adam", metric="final_valid_ppl")["diff"] == ""
    # adan's mean curve 175, 111.3, 98.2, 90 is first at or below adam's 100.0 at step 300.
    reach = one(rows, section="valid", optimizer="adan", metric="steps_to_baseline_final")
    assert reach["value"] == "300"
    assert "adan is better than adam" in (grid / "summary.md").read_text()


def test_steps_to_target_per_seed_mean_and_t_interval(grid):
    summary.write(grid, "adam", "T")
    rows = pick(read_summary(grid), section="reach", optimizer="adan")
    target = one(rows, metric="target_valid_ppl")
    assert float(target["value"]) == 100.0 and target["step"] == "400"
    assert target["baseline_task"] == "ptb-scaled"
    per_seed = {int(r["seed"]): int(r["value"]) for r in pick(rows, metric="steps_to_target")
                if r["seed"]}  # fmt: skip
    assert per_seed == {1: 300, 2: 200, 3: 300}
    steps = np.array([300.0, 200.0, 300.0])
    half = stats.t.ppf(0.975, 2) * steps.std(ddof=1) / math.sqrt(3)
    agg = one(rows, metric="steps_to_target", seed="")
    assert float(agg["value"]) == pytest.approx(800 / 3)
    assert float(agg["ci_low"]) == pytest.approx(800 / 3 - half, rel=1e-6)
    assert float(agg["ci_high"]) == pytest.approx(800 / 3 + half, rel=1e-6)
    assert "t-interval over n = 3 seeds" in agg["detail"]
    fraction = one(rows, metric="steps_to_target_fraction")
    assert float(fraction["value"]) == pytest.approx(800 / 3 / 400)
    md = (grid / "summary.md").read_text()
    assert "seed1: 300, seed2: 200, seed3: 300 | 267 |" in md
    assert f"[{800 / 3 - half:,.0f}, {800 / 3 + half:,.0f}] (n = 3)" in md
    assert "| 0.67 |" in md
    assert not pick(read_summary(grid), section="reach", optimizer="adam")


def test_not_reached_means_no_mean_and_no_interval(tmp_path, monkeypatch):
    monkeypatch.setattr(summary, "PAPER_LOGS", tmp_path / "none.csv")
    out = tmp_path / "g"
    done = protocols(30.0, 29.0)
    fake_run(out, "a", "adam", 1, [200, 150, 120, 99], done=done)  # target (99 + 101) / 2
    fake_run(out, "a", "adam", 2, [200, 150, 120, 101], done=done)
    fake_run(out, "a", "adan", 1, [180, 120, 99, 90], done=done)
    fake_run(out, "a", "adan", 2, [180, 150, 130, 110], done=done)  # never at or below 100
    fake_run(out, "b", "adam", 1, [200, 150, 120, 100])
    fake_run(out, "b", "adan", 1, [180, 100, 95, 90])  # one seed: a mean, no interval
    summary.write(out, "adam", "T")
    rows = pick(read_summary(out), section="reach", metric="steps_to_target")
    missed = one(rows, task="a", seed=2)
    assert missed["value"] == "" and missed["detail"] == "not reached"
    assert one(rows, task="a", seed=1)["value"] == "300"
    agg = one(rows, task="a", seed="")
    assert agg["value"] == agg["ci_low"] == agg["ci_high"] == ""
    assert "1 of 2 seeds did not reach it" in agg["detail"]
    assert one(read_summary(out), task="a", metric="steps_to_target_fraction")["value"] == ""
    single = one(rows, task="b", seed="")
    assert float(single["value"]) == 200
    assert single["ci_low"] == single["ci_high"] == ""
    md = (out / "summary.md").read_text()
    assert "seed1: 300, seed2: not reached | — | none (not every seed reached it) | — |" in md
    assert "| seed1: 200 | 200 | none (n = 1) | 0.50 |" in md


def test_protocol_means_std_and_welch_against_scipy(grid):
    summary.write(grid, "adam", "T")
    rows = read_summary(grid)
    for name in ("paper", "standard"):
        adam, adan = np.array(ADAM_TEST[name]), np.array(ADAN_TEST[name])
        for metric, shift in (("test_ppl", 0.0), ("valid_ppl", 1.0)):
            a, b = adan - shift, adam - shift
            row = one(rows, section=f"protocol_{name}", optimizer="adan", metric=metric)
            assert float(row["value"]) == pytest.approx(a.mean())
            assert float(row["std"]) == pytest.approx(a.std())
            base = one(rows, section=f"protocol_{name}", optimizer="adam", metric=metric)
            assert float(base["std"]) == pytest.approx(b.std()) and base["diff"] == ""
            low, high, p = welch_scipy(a, b)
            assert float(row["diff"]) == pytest.approx(a.mean() - b.mean())
            assert float(row["diff_ci_low"]) == pytest.approx(low, rel=1e-6)
            assert float(row["diff_ci_high"]) == pytest.approx(high, rel=1e-6)
            assert float(row["p"]) == pytest.approx(p, rel=1e-3)
            assert row["baseline"] == "adam" and row["baseline_task"] == "ptb-scaled"
    paper = one(rows, section="protocol_paper", optimizer="adan", metric="test_ppl")
    assert "tgt_len 70, mem_len 70, clamp_len -1, same_length False" in paper["detail"]
    md = (grid / "summary.md").read_text()
    assert "| ptb-scaled | adan | standard | tgt_len 64, mem_len 640, clamp_len 400, " in md
    assert "**what the Adan paper's table reports**" in md
    assert "The paper's numbers are the **paper** protocol's." in md
    assert f"| {np.mean(ADAN_TEST['paper']):.2f} ± {np.std(ADAN_TEST['paper']):.2f} |" in md


def test_unfinished_runs_in_curves_but_not_in_protocols(grid, drawn):
    fake_run(grid, "ptb-scaled", "adan", 4, [185, 130], steps=(100, 200))  # no done.json
    summary.write(grid, "adam", "T")
    rows = read_summary(grid)
    for name in ("paper", "standard"):
        row = one(rows, section=f"protocol_{name}", optimizer="adan", metric="test_ppl")
        assert row["n_seeds"] == "3"
        assert float(row["value"]) == pytest.approx(np.mean(ADAN_TEST[name]))
    with open(grid / "curves.csv", newline="") as f:
        curve = list(csv.DictReader(f))
    late = pick(curve, optimizer="adan", seed=4)
    assert [r["step"] for r in late] == ["100", "200"] and {r["finished"] for r in late} == {"0"}
    assert {r["finished"] for r in pick(curve, seed=1)} == {"1"}
    # The seeds' common steps end at 200 now; the unfinished seed is named.
    final = one(rows, section="valid", optimizer="adan", metric="final_valid_ppl")
    assert final["step"] == "200" and final["n_seeds"] == "4"
    assert "unfinished: seed4 at step 200/400" in final["detail"]
    seed4 = one(rows, section="reach", metric="steps_to_target", seed=4)
    assert seed4["detail"] == "not reached (unfinished, at step 200/400)"
    md = (grid / "summary.md").read_text()
    assert "Not finished (left out of this section): ptb-scaled/adan/seed4 (step 200/400)" in md
    curves, _ = drawn["ptb-scaled"]
    assert set(curves) == {("ptb-scaled", "adam"), ("ptb-scaled", "adan, 1 unfinished")}
    assert set(curves[("ptb-scaled", "adan, 1 unfinished")]) == {1, 2, 3, 4}


def test_wanted_filters_tasks_and_optimizers(grid):
    fake_run(grid, "other", "adam", 1, [300, 200, 150, 140])
    summary.write(grid, "adam", "T", {("ptb-scaled", "adan")})
    rows = read_summary(grid)
    assert {(r["task"], r["optimizer"]) for r in rows} == {("ptb-scaled", "adan")}
    assert all(r["diff"] == "" for r in rows)  # adam was filtered out: nothing to compare with
    assert not (grid / "other_valid.png").exists()
    with open(grid / "curves.csv", newline="") as f:
        assert {r["optimizer"] for r in csv.DictReader(f)} == {"adan"}
    # Only an unfinished baseline run: nothing to compare, no protocol table, and saying so.
    summary.write(grid, "adam", "T", {("other", "adam")})
    md = (grid / "summary.md").read_text()
    assert "No task has both the baseline and another optimizer." in md
    assert "No run has finished yet." in md and "| other | adam | 1 (1 unfinished) | 400 |" in md
    with pytest.raises(ValueError, match="no evaluated runs.*wanted"):
        summary.write(grid, "adam", "T", {("missing", "adan")})


def write_logs(path) -> None:
    lines = ["run,step,valid_ppl", "adam-200k,4000,70.0", "adam-200k,8000,50.0",
             "adan-200k,4000,60.0", "adan-200k,8000,45.0", "adan-100k,4000,61.0",
             "adan-100k,8000,46.0", "adan-50k,4000,62.0"]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def wt103_grid(out) -> None:
    """The paper's runs at one seed: 200k Adam and Adan, and Adan at 100k."""
    for task, run, valid, test in (
        ("wt103-base-200k", "adam-200k", [72.0, 51.0, 24.0], 25.0),
        ("wt103-base-200k", "adan-200k", [62.0, 44.0, 23.0], 24.0),
        ("wt103-base-100k", "adan-100k", [63.0, 47.0, 23.9], 24.5),
    ):
        steps, done = (4000, 8000, RUNS[run].max_step), protocols(test, test - 1.5)
        fake_run(out, task, RUNS[run].opt, 1111, valid, steps=steps, preset="wt103-base",
                 max_step=RUNS[run].max_step, run=run, done=done)  # fmt: skip


def test_paper_logs_as_references_and_the_against_the_paper_table(tmp_path, monkeypatch, drawn):
    logs = tmp_path / "paper_logs.csv"
    write_logs(logs)
    monkeypatch.setattr(summary, "PAPER_LOGS", logs)
    out = tmp_path / "wt"
    wt103_grid(out)
    summary.write(out, "adam", "T")
    _, refs = drawn["wt103-base-200k"]
    assert [r.label for r in refs] == ["paper's log: adam-200k (1 seed)",
                                       "paper's log: adan-200k (1 seed)"]  # fmt: skip
    assert refs[0].steps.tolist() == [4000, 8000] and refs[0].values.tolist() == [70.0, 50.0]
    assert refs[1].values.tolist() == [60.0, 45.0]
    _, refs = drawn["wt103-base-100k"]  # its own budget's Adan, and the Adam it is held to
    assert [r.label.split(": ")[1] for r in refs] == ["adan-100k (1 seed)", "adam-200k (1 seed)"]
    rows = pick(read_summary(out), section="paper_log")
    adam = one(rows, optimizer="adam", metric="test_ppl")
    assert float(adam["reference"]) == 24.241 and float(adam["diff"]) == pytest.approx(0.759)
    adan = one(rows, task="wt103-base-100k", metric="test_ppl")
    assert float(adan["reference"]) == 24.264 and float(adan["diff"]) == pytest.approx(0.236)
    # The last logged valid is the log's last row (step 8000), compared at our step 8000.
    valid = one(rows, task="wt103-base-200k", optimizer="adan", metric="last_valid_ppl")
    assert valid["step"] == "8000" and float(valid["reference"]) == 45.0
    assert float(valid["diff"]) == pytest.approx(-1.0)
    claim = one(rows, task="wt103-base-100k", metric="test_ppl_minus_baseline")
    assert float(claim["value"]) == pytest.approx(24.5 - 25.0)
    assert float(claim["reference"]) == pytest.approx(24.264 - 24.241)
    # The 100k task has no Adam: it is measured against the 200k task's.
    reach = pick(read_summary(out), task="wt103-base-100k", section="reach")
    target = one(reach, metric="target_valid_ppl")
    assert target["baseline_task"] == "wt103-base-200k" and float(target["value"]) == 24.0
    assert one(reach, metric="steps_to_target", seed=1111)["value"] == "100000"
    fraction = one(reach, metric="steps_to_target_fraction")
    assert float(fraction["value"]) == pytest.approx(0.5)
    test = one(read_summary(out), task="wt103-base-100k", section="protocol_paper",
               metric="test_ppl")  # fmt: skip
    assert test["baseline_task"] == "wt103-base-200k" and float(test["diff"]) == -0.5
    assert "too few seeds" in test["detail"] and test["p"] == ""  # one seed a side
    md = (out / "summary.md").read_text()
    assert "## Against the paper's logs" in md
    assert "| wt103-base-200k | adam | adam-200k | 1 | 25.00 ± 0.00 | 24.241 | +0.76 |" in md
    assert "| adan-100k − adam-200k | -0.50 | +0.023 |" in md


def test_absent_paper_logs_mean_no_references(tmp_path, monkeypatch, drawn):
    monkeypatch.setattr(summary, "PAPER_LOGS", tmp_path / "absent.csv")
    out = tmp_path / "wt"
    wt103_grid(out)
    summary.write(out, "adam", "T")
    assert drawn["wt103-base-200k"][1] == [] and drawn["wt103-base-100k"][1] == []
    # Without the log the last logged valid is the preset's, at the run's last step.
    valid = one(read_summary(out), optimizer="adam", metric="last_valid_ppl")
    assert valid["step"] == "200000" and float(valid["reference"]) == 23.396
    assert float(valid["diff"]) == pytest.approx(24.0 - 23.396)


def test_the_shipped_paper_logs_match_the_presets():
    if not summary.PAPER_LOGS.is_file():
        pytest.skip("paper_logs.csv is not written yet")
    logs = summary.load_paper_logs()
    assert set(logs) == {"adam-200k", "adan-50k", "adan-100k", "adan-200k"}
    for run, (steps, values) in logs.items():
        assert np.all(np.diff(steps) > 0) and steps[-1] <= RUNS[run].max_step
        if RUNS[run].valid_ppl is not None:  # the log's last valid is the preset's
            assert values[-1] == pytest.approx(RUNS[run].valid_ppl)


def test_a_malformed_log_file_is_an_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("run,step,ppl\nadam-200k,4000,70\n")
    with pytest.raises(ValueError, match="missing columns"):
        summary.load_paper_logs(bad)


def test_nothing_to_summarize_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no evaluated runs"):
        summary.write(tmp_path, "adam")
    # A started run without any evaluation yet counts as nothing too.
    d = fake_run(tmp_path, "t", "adam", 1, [])
    assert (d / rundir.EVAL).is_file()
    with pytest.raises(ValueError, match="no evaluated runs"):
        summary.write(tmp_path, "adam")
    assert not (tmp_path / "summary.md").exists()


def test_a_failed_write_leaves_the_old_summary(grid, monkeypatch):
    summary.write(grid, "adam", "first")
    before = (grid / "summary.md").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(summary, "draw_task", broken)
    with pytest.raises(RuntimeError, match="plot failed"):
        summary.write(grid, "adam", "second")
    assert (grid / "summary.md").read_text() == before
    assert not list(grid.glob(".*.tmp"))
